//! Invariant 6: training and serving compute features through one code path. A decision
//! made by the serving engine is turned into a `nearcast-training/1` record, read back by
//! the trainer's reader, and the trainer's feature path, scored by the same model loaded
//! through `ranker::load`, gives the very scores serving logged.

use nearcast_core::decision::Verdict;
use nearcast_core::export::{TrainingCandidate, TrainingRecord};
use nearcast_tests::*;
use nearcast_train::{data, eval};
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
    // The served decision as a `nearcast-training/1` record (what `nearcast export` writes).
    let record = TrainingRecord {
        format: nearcast_core::export::FORMAT.into(),
        decision_id: d.event_id.to_string(),
        user: "u-pseudonym".into(),
        at: d.at,
        local_time: ctx.local_time.clone(),
        daypart: serde_json::from_value(json!(ctx.daypart)).unwrap(),
        weekday: ctx.weekday.clone(),
        weekend: ctx.weekday == "Sat" || ctx.weekday == "Sun",
        cell: ctx.cell.clone(),
        weather: ctx.weather,
        personalised: true,
        model_version: d.model_version.clone(),
        verdict: "sent".into(),
        reason: None,
        candidates: d
            .candidates
            .iter()
            .map(|c| TrainingCandidate {
                offer_id: c.offer_id.to_string(),
                category: c.category.clone(),
                store_id: c.store_id.to_string(),
                distance_m: c.distance_m,
                affinity: state.affinities.get(&c.category).copied(),
                bought_category: state.bought_category(&c.category),
                score: c.score,
                reason: None,
                sent: d.offer_id.as_ref() == Some(&c.offer_id),
                held_out: false,
                opened: false,
                redeemed: false,
                purchased: false,
            })
            .collect(),
    };
    record.validate().unwrap();
    assert!(
        record.weather.is_some() && record.candidates[0].affinity.is_some(),
        "context and tastes are exercised"
    );
    // Through the trainer's reader, as a data file would be read.
    let mut line = Vec::new();
    data::write(&mut line, std::slice::from_ref(&record)).unwrap();
    let read = data::parse(&line, |_| {}).unwrap().remove(0);
    assert_eq!(read, record);
    // Rows for `purchased` are every scored candidate, pushed or not.
    let rows = data::rows(std::slice::from_ref(&read), data::Label::Purchased);
    let ranker = model();
    let trained = eval::score(ranker.as_ref(), &rows).remove(0);
    let served: Vec<f64> = d.candidates.iter().map(|c| c.score.unwrap()).collect();
    assert_eq!(
        served, trained,
        "the trainer rescores every served candidate exactly"
    );
    assert_eq!(d.model_version, ranker.version());
}
