//! Retention that runs: the task `serve` starts (`nearcast::spawn_retention`) expires
//! idempotency keys after 7 days and decisions, deliveries and outcomes after 90 days while
//! the service runs, in the engine's clock (a manual clock here, moved forward by days).

use nearcast::demo::embedded_engine;
use nearcast::store::{SqliteStore, Sync};
use nearcast_core::config::{CapPolicy, Offer, Store, parse_json};
use nearcast_core::event::Batch;
use nearcast_core::ports::{Clock, ManualClock, Retention};
use nearcast_core::weather::TableWeather;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A user with consents and a push token enters the only store and is sent its offer, then
/// opens the push: 6 idempotency keys, 1 decision, 1 delivery, 1 outcome.
async fn one_day(dir: &std::path::Path, clock: &ManualClock) -> Arc<SqliteStore> {
    let (engine, store) = embedded_engine(
        &dir.join("r.db"),
        Sync::Normal,
        &dir.join("outbox.jsonl"),
        None,
        Arc::new(TableWeather::default()),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    )
    .await
    .unwrap();
    let store_cfg: Store = parse_json(&json!({"id": "s1", "name": "Cafe", "category": "cafe",
        "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 100}}))
    .unwrap();
    let offer: Offer = parse_json(
        &json!({"id": "o1", "campaign_id": "c1", "title": "t", "body": "b",
        "category": "coffee", "store_ids": ["s1"], "trigger": {"type": "enter"}, "threshold": 0.0}),
    )
    .unwrap();
    let policy = CapPolicy {
        quiet_start: chrono::NaiveTime::MIN,
        quiet_end: chrono::NaiveTime::MIN,
        global_control: 0.0,
        ..CapPolicy::default()
    };
    engine
        .load_config(vec![store_cfg], vec![offer], policy)
        .await
        .unwrap();
    let at = clock.now().to_rfc3339();
    let mut events: Vec<serde_json::Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| json!({"event_id": format!("c-{p}"), "type": "consent", "at": at, "purpose": p, "granted": true}))
        .collect();
    events.push(
        json!({"event_id": "t", "type": "push_token", "at": at, "platform": "fcm", "token": "tk"}),
    );
    events.push(json!({"event_id": "f", "type": "location", "at": at, "lat": 60.17, "lon": 24.94, "accuracy_m": 10}));
    let batch = Batch::from_json(&json!({"user_id": "u1", "events": events}), clock.now()).unwrap();
    let reports = engine.process_batch(&batch).await.unwrap();
    let delivery = reports[4].decision.as_ref().unwrap().delivery_id.clone();
    assert!(delivery.is_some(), "{reports:?}");
    let opened = json!({"user_id": "u1", "events": [{"event_id": "o", "type": "notification_opened",
        "at": at, "offer_id": "o1", "delivery_id": delivery}]});
    engine
        .process_batch(&Batch::from_json(&opened, clock.now()).unwrap())
        .await
        .unwrap();
    store
}

fn counts(store: &SqliteStore) -> [u64; 5] {
    ["users", "seen", "decisions", "deliveries", "outcomes"].map(|t| store.count(t).unwrap())
}

/// Waits (at most 10 s) until the store holds `want` rows per table.
async fn until(store: &SqliteStore, want: [u64; 5]) {
    for _ in 0..500 {
        if counts(store) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counts(store),
        want,
        "users, seen, decisions, deliveries, outcomes"
    );
}

#[tokio::test]
async fn the_running_service_expires_keys_after_7_days_and_logs_after_90() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let t0 = clock.now();
    let store = one_day(dir.path(), &clock).await;
    assert_eq!(counts(&store), [1, 6, 1, 1, 1]);
    let task = nearcast::spawn_retention(
        store.clone(),
        Arc::new(clock.clone()),
        Retention::default(),
        Duration::from_millis(10),
    );
    // Six days on, nothing has expired yet.
    clock.set(t0 + chrono::Duration::days(6));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts(&store), [1, 6, 1, 1, 1]);
    clock.set(t0 + chrono::Duration::days(8));
    until(&store, [1, 0, 1, 1, 1]).await;
    clock.set(t0 + chrono::Duration::days(89));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(counts(&store), [1, 0, 1, 1, 1]);
    clock.set(t0 + chrono::Duration::days(91));
    // The profile (consents, token) stays: it is erased on request, not expired.
    until(&store, [1, 0, 0, 0, 0]).await;
    task.abort();
}

#[tokio::test]
async fn shorter_configured_periods_expire_sooner() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let t0 = clock.now();
    let store = one_day(dir.path(), &clock).await;
    let retention = Retention::days(1, 2).unwrap();
    let task = nearcast::spawn_retention(
        store.clone(),
        Arc::new(clock.clone()),
        retention,
        Duration::from_millis(10),
    );
    clock.set(t0 + chrono::Duration::hours(25));
    until(&store, [1, 0, 1, 1, 1]).await;
    clock.set(t0 + chrono::Duration::hours(49));
    until(&store, [1, 0, 0, 0, 0]).await;
    task.abort();
}

#[test]
fn retention_periods_outside_1_day_to_10_years_are_refused_naming_the_setting() {
    assert_eq!(
        Retention::days(0, 90).unwrap_err().field,
        "idempotency_days"
    );
    assert_eq!(Retention::days(7, 4000).unwrap_err().field, "log_days");
    assert_eq!(Retention::days(7, 90).unwrap(), Retention::default());
}
