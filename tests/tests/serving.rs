//! Serving models: champion and challenger (a stable share of users, every decision and
//! delivery names the model that scored it), the results route, and reloading the model
//! (a refused artifact leaves the current one serving).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_core::decision::{Candidate, Decision, DecisionContext, Verdict};
use nearcast_core::engine::{Challenger, EngineError, scored_by_challenger};
use nearcast_core::features::Input;
use nearcast_core::ports::{Commit, OutcomeKind, OutcomeRecord};
use nearcast_core::ranker::Ranker;
use nearcast_tests::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

async fn call(h: &Harness, method: &str, uri: &str) -> (StatusCode, Value) {
    let app = nearcast_api::router(h.engine.clone());
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The bundled model under another version label.
struct Renamed(&'static str);

impl Ranker for Renamed {
    fn score(&self, x: &Input<'_>) -> f64 {
        model().score(x)
    }
    fn version(&self) -> &str {
        self.0
    }
}

#[tokio::test]
async fn a_stable_share_of_users_is_scored_by_the_challenger_and_every_push_says_which() {
    let h = harness(Backend::Memory, 2, policy(5)).await;
    let champion = h.engine.ranker().version().to_string();
    h.engine
        .set_challenger(Some(Challenger {
            ranker: Arc::new(Renamed("challenger-2")),
            share: 0.3,
        }))
        .unwrap();
    let users: Vec<String> = (0..300).map(|i| format!("user{i}")).collect();
    let mut opened_by: HashMap<String, u64> = HashMap::new();
    for (i, u) in users.iter().enumerate() {
        for e in onboarding(u, noon()) {
            h.engine.process(&e).await.unwrap();
        }
        // Two visits: store 0, then store 1 (200 m on).
        h.engine.process(&fix_at(u, "f0", 0, noon())).await.unwrap();
        let later = noon() + chrono::Duration::minutes(10);
        h.clock.set(later);
        h.engine.process(&fix_at(u, "f1", 1, later)).await.unwrap();
        h.clock.set(noon());
        // Every third user opens the first push.
        if i % 3 == 0 {
            let open = event(
                u,
                json!({"event_id": "open", "type": "notification_opened",
                    "at": (noon() + chrono::Duration::minutes(1)).to_rfc3339(), "offer_id": "o0"}),
            );
            h.engine.process(&open).await.unwrap();
        }
    }
    let decisions = h.store.decisions().await.unwrap();
    assert_eq!(decisions.len(), 600);
    let mut per_user: HashMap<&str, Vec<&str>> = HashMap::new();
    for d in &decisions {
        per_user
            .entry(d.user_id.as_str())
            .or_default()
            .push(&d.model_version);
    }
    let mut challenged = 0;
    for (u, versions) in &per_user {
        // Both of a user's decisions by the same model, the one their hash assigns.
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0], versions[1], "{u} switched models");
        let want = if scored_by_challenger(&id(u), "challenger-2", 0.3) {
            challenged += 1;
            "challenger-2"
        } else {
            champion.as_str()
        };
        assert_eq!(versions[0], want);
    }
    assert!(
        (60..=120).contains(&challenged),
        "{challenged} of 300 at 30 %"
    );
    for (i, u) in users.iter().enumerate() {
        if i % 3 == 0 {
            *opened_by
                .entry(per_user[u.as_str()][0].to_string())
                .or_default() += 1;
        }
    }
    // Every delivery records the model of its decision.
    let deliveries = h.store.deliveries().await.unwrap();
    assert_eq!(deliveries.len(), 600);
    let by_delivery: HashMap<&str, &str> = decisions
        .iter()
        .map(|d| (d.delivery_id.as_deref().unwrap(), d.model_version.as_str()))
        .collect();
    for r in &deliveries {
        assert_eq!(
            by_delivery[r.push.delivery_id.as_str()],
            r.push.model_version
        );
    }
    // The results route measures both models side by side.
    let (s, v) = call(&h, "GET", "/v1/admin/results").await;
    assert_eq!(s, StatusCode::OK);
    let by_model = v["by_model"].as_array().unwrap();
    assert_eq!(by_model.len(), 2);
    for m in by_model {
        let version = m["model_version"].as_str().unwrap();
        let sent = m["sent"].as_u64().unwrap();
        let n = per_user.values().filter(|v| v[0] == version).count() as u64;
        assert_eq!(sent, 2 * n, "{version}");
        assert_eq!(
            m["opened"].as_u64(),
            opened_by.get(version).copied().or(Some(0))
        );
    }
    let (s, v) = call(&h, "GET", "/v1/admin/model").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["champion"], json!(champion));
    assert_eq!(
        v["challenger"],
        json!({"version": "challenger-2", "share": 0.3})
    );
}

#[tokio::test]
async fn challenger_shares_outside_0_to_1_are_refused_and_0_scores_nobody() {
    let h = harness(Backend::Memory, 1, policy(5)).await;
    let e = h
        .engine
        .set_challenger(Some(Challenger {
            ranker: Arc::new(Renamed("c")),
            share: 1.5,
        }))
        .unwrap_err();
    assert!(matches!(e, EngineError::Invalid(f) if f.field == "challenger_share"));
    assert!(h.engine.challenger().is_none());
    h.engine
        .set_challenger(Some(Challenger {
            ranker: Arc::new(Renamed("c")),
            share: 0.0,
        }))
        .unwrap();
    assert!((0..500).all(|i| h.engine.ranker_for(&id(&format!("u{i}"))).version() != "c"));
    h.engine
        .set_challenger(Some(Challenger {
            ranker: Arc::new(Renamed("c")),
            share: 1.0,
        }))
        .unwrap();
    assert!((0..500).all(|i| h.engine.ranker_for(&id(&format!("u{i}"))).version() == "c"));
}

fn logged(user: &str, event: &str, offer: &str, model: &str, verdict: Verdict) -> Decision {
    Decision {
        event_id: id(event),
        user_id: id(user),
        at: noon(),
        verdict,
        store_id: Some(id("s0")),
        offer_id: Some(id(offer)),
        score: Some(0.5),
        reason: None,
        context: Some(DecisionContext {
            local_time: "2026-11-20T12:00:00+02:00".into(),
            daypart: "midday".into(),
            weekday: "Fri".into(),
            weather: None,
            cell: "891126d3a47ffff".into(),
        }),
        candidates: vec![Candidate {
            store_id: id("s0"),
            offer_id: id(offer),
            category: "coffee".into(),
            distance_m: 10.0,
            score: Some(0.5),
            reason: None,
            affinity: None,
            bought_category: false,
        }],
        model_version: model.into(),
        delivery_id: Some(format!("d-{user}-{event}")),
        personalised: false,
        presence: Vec::new(),
        campaign_id: None,
        variant_id: None,
        catalog_version: None,
        deferred_until: None,
        next_fix_by: None,
    }
}

fn happened(user: &str, minutes: i64, kind: OutcomeKind, offer: &str) -> OutcomeRecord {
    OutcomeRecord {
        detail: Default::default(),
        event_id: id(&format!("x-{minutes}")),
        user_id: id(user),
        at: noon() + chrono::Duration::minutes(minutes),
        kind,
        offer_id: Some(id(offer)),
        category: Some("coffee".into()),
        delivery_id: None,
    }
}

#[tokio::test]
async fn results_count_sends_holdouts_opens_redemptions_and_lift_from_the_logs() {
    let h = harness(Backend::Sqlite, 1, policy(5)).await;
    // Offer o0 under model m1: 4 users sent (2 open, 2 redeem), 2 held out (1 redeems
    // anyway). Model m2: 2 sent, 1 opens, none redeems. One redemption is 2 days late.
    let mut rows: Vec<(Decision, Vec<OutcomeRecord>)> = Vec::new();
    for i in 0..4 {
        let u = format!("s{i}");
        let mut os = Vec::new();
        if i < 2 {
            os.push(happened(&u, 5, OutcomeKind::Opened, "o0"));
            os.push(happened(&u, 30, OutcomeKind::Redeemed, "o0"));
        }
        if i == 3 {
            os.push(happened(&u, 2 * 24 * 60, OutcomeKind::Redeemed, "o0"));
        }
        rows.push((logged(&u, "e1", "o0", "m1", Verdict::Sent), os));
    }
    for i in 0..2 {
        let u = format!("h{i}");
        let os = if i == 0 {
            vec![happened(&u, 60, OutcomeKind::Redeemed, "o0")]
        } else {
            vec![]
        };
        rows.push((logged(&u, "e1", "o0", "m1", Verdict::HeldOut), os));
    }
    for i in 0..2 {
        let u = format!("c{i}");
        let os = if i == 0 {
            vec![happened(&u, 1, OutcomeKind::Opened, "o0")]
        } else {
            vec![]
        };
        rows.push((logged(&u, "e1", "o0", "m2", Verdict::Sent), os));
    }
    for (d, os) in rows {
        let mut c = Commit::new(d.user_id.clone(), 0);
        c.events.push((
            d.event_id.clone(),
            nearcast_core::ports::EventResult {
                kind: "location".into(),
                decision: None,
            },
        ));
        c.decisions.push(d.clone());
        let mut c2 = Commit::new(d.user_id.clone(), 0);
        for o in &os {
            c2.events.push((
                o.event_id.clone(),
                nearcast_core::ports::EventResult {
                    kind: "x".into(),
                    decision: None,
                },
            ));
        }
        c2.outcomes = os;
        h.store.commit(&c).await.unwrap();
        h.store.commit(&c2).await.unwrap();
    }
    let (s, v) = call(&h, "GET", "/v1/admin/results").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["window_hours"], json!(24));
    let m1 = v["by_offer"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["offer_id"] == "o0" && r["model_version"] == "m1")
        .unwrap();
    assert_eq!(
        [
            &m1["decisions"],
            &m1["sent"],
            &m1["held_out"],
            &m1["opened"],
            &m1["redeemed_sent"],
            &m1["redeemed_held_out"]
        ],
        [
            &json!(6),
            &json!(4),
            &json!(2),
            &json!(2),
            &json!(2),
            &json!(1)
        ]
    );
    assert_eq!(m1["open_rate"], json!(0.5));
    assert_eq!(m1["conversion_sent"], json!(0.5));
    assert_eq!(m1["conversion_held_out"], json!(0.5));
    assert_eq!(m1["lift"], json!(0.0));
    let m2 = &v["by_model"].as_array().unwrap()[1];
    assert_eq!(m2["model_version"], "m2");
    assert_eq!((&m2["sent"], &m2["opened"]), (&json!(2), &json!(1)));
    assert_eq!(m2["lift"], Value::Null);
    // A 3-day window takes in the late redemption.
    let (_, v) = call(&h, "GET", "/v1/admin/results?window_hours=72").await;
    assert_eq!(v["by_offer"][0]["redeemed_sent"], json!(3));
    assert_eq!(v["by_offer"][0]["conversion_sent"], json!(0.75));
    // Bad parameters name themselves.
    for (q, field) in [
        ("window_hours=0", "window_hours"),
        ("window_hours=x", "window_hours"),
        ("since=1", "since"),
    ] {
        let (s, v) = call(&h, "GET", &format!("/v1/admin/results?{q}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(v["error"]["field"], json!(field));
    }
}

#[tokio::test]
async fn a_refused_model_on_reload_leaves_the_current_one_serving() {
    let h = harness(Backend::Memory, 1, policy(5)).await;
    let before = h.engine.ranker().version().to_string();
    // No source configured: a clear refusal.
    let (s, v) = call(&h, "POST", "/v1/admin/model/reload").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["code"], "model_refused");

    let path = h.dir.path().join("ranker.json");
    h.engine
        .set_model_source(Arc::new(nearcast::FileModelSource(path.clone())));
    let mut artifact: Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    // Corrupt, then trained on other features: refused, the model stays.
    std::fs::write(&path, "{not json").unwrap();
    let (s, v) = call(&h, "POST", "/v1/admin/model/reload").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["reason"].as_str().unwrap().contains("not valid"),
        "{v}"
    );
    artifact["schema_hash"] = json!("0000000000000000");
    std::fs::write(&path, artifact.to_string()).unwrap();
    let (s, v) = call(&h, "POST", "/v1/admin/model/reload").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]["reason"].as_str().unwrap().contains("schema"),
        "{v}"
    );
    assert_eq!(h.engine.ranker().version(), before);
    // Still deciding with it.
    for e in onboarding("u1", noon()) {
        h.engine.process(&e).await.unwrap();
    }
    let r = h
        .engine
        .process(&fix_at("u1", "f", 0, noon()))
        .await
        .unwrap();
    assert_eq!(r.decision.unwrap().model_version, before);

    // A good artifact goes into service.
    let mut good: Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    good["version"] = json!("2026-12-01.1");
    std::fs::write(&path, good.to_string()).unwrap();
    let (s, v) = call(&h, "POST", "/v1/admin/model/reload").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["champion"], "2026-12-01.1");
    assert_eq!(h.engine.ranker().version(), "2026-12-01.1");
}
