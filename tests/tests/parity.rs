//! Invariant 6: training and serving compute features through one code path. A decision
//! made by the serving engine is turned into the trainer's record format, and the trainer's
//! feature path, scored by the same model, gives the very score serving logged.

use nearcast_core::decision::Verdict;
use nearcast_core::features::N_FEATURES;
use nearcast_core::ranker::Ranker;
use nearcast_tests::*;
use nearcast_train::data;
use serde_json::json;

#[tokio::test]
async fn the_trainer_scores_a_served_candidate_exactly_as_serving_did() {
    let h = harness(Backend::Sqlite, 3, policy(10)).await;
    for e in onboarding("pia", noon()) {
        h.engine.process(&e).await.unwrap();
    }
    // Some taste, so the user features are not all zero.
    let view = event(
        "pia",
        json!({"event_id": "v1", "type": "view", "at": noon().to_rfc3339(), "category": "coffee", "product_id": "p1"}),
    );
    h.engine.process(&view).await.unwrap();
    let r = h
        .engine
        .process(&fix_at("pia", "f1", 1, noon()))
        .await
        .unwrap();
    let d = r.decision.unwrap();
    assert_eq!(d.verdict, Verdict::Sent);
    let state = h.store.load_user(&id("pia")).await.unwrap().state;
    let ctx = d.context.as_ref().unwrap();
    let record = data::Decision {
        at: d.at,
        daypart: serde_json::from_value(json!(ctx.daypart)).unwrap(),
        weekend: ctx.weekday == "Sat" || ctx.weekday == "Sun",
        weather: ctx.weather,
        personalised: true,
        candidates: d
            .candidates
            .iter()
            .map(|c| data::Candidate {
                category: c.category.clone(),
                distance_m: c.distance_m,
                affinity: state.affinities.get(&c.category).copied(),
                bought_category: state.bought_category(&c.category),
                opened: false,
            })
            .collect(),
    };
    assert!(
        record.weather.is_some() && record.candidates[0].affinity.is_some(),
        "context and tastes are exercised"
    );
    let ranker = model();
    for (served, c) in d.candidates.iter().zip(&record.candidates) {
        let mut x = [0.0; N_FEATURES];
        record.encode(c, &mut x);
        let trained = ranker.score(&x);
        assert_eq!(
            served.score.unwrap(),
            trained,
            "candidate {}",
            served.offer_id
        );
    }
}
