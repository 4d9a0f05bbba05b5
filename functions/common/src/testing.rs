//! Fixtures for the functions' tests (feature `testing`): an engine on in-memory ports with
//! a one-store catalog, a failing store, and the sample payloads in `events/lambda/`.

use crate::build_engine;
use chrono::{DateTime, Utc};
use nearcast_core::config::{CapPolicy, Offer, Store, parse_json};
use nearcast_core::decision::Decision;
use nearcast_core::engine::Engine;
use nearcast_core::memory::{InMemoryStateStore, RecordingNotifier};
use nearcast_core::ports::{
    BoxFuture, Commit, CommitOutcome, ManualClock, StateStore, StoreError, StoreLayer,
};
use nearcast_core::weather::TableWeather;
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;

/// The fixtures' "now": Friday 2026-11-20, 12:00 in Helsinki. The sample payloads' events
/// happen a few minutes before it.
pub fn now() -> DateTime<Utc> {
    "2026-11-20T10:00:00Z".parse().expect("valid time")
}

/// One circular cafe `s1` (50 m) in central Helsinki, at (60.16, 24.90), and one offer `o1`
/// on entering it that always clears its threshold, no holdout; 5 pushes a day, no gap, no
/// quiet hours.
pub fn config() -> (Vec<Store>, Vec<Offer>, CapPolicy) {
    let store = parse_json::<Store>(&json!({"id": "s1", "name": "Cafe Esplanadi", "category": "cafe",
        "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": 60.16, "lon": 24.90, "radius_m": 50}}))
    .expect("valid store");
    let offer = parse_json::<Offer>(&json!({"id": "o1", "campaign_id": "c1", "title": "Coffee",
        "body": "Half price until two", "category": "coffee", "store_ids": ["s1"],
        "trigger": {"type": "enter"}, "threshold": 0.0, "holdout": 0.0}))
    .expect("valid offer");
    let midnight = chrono::NaiveTime::from_hms_opt(0, 0, 0).expect("valid");
    let policy = CapPolicy {
        per_day: 5,
        per_week: 35,
        min_gap_minutes: 0,
        quiet_start: midnight,
        quiet_end: midnight,
        global_control: 0.0,
    };
    (vec![store], vec![offer], policy)
}

/// An engine for tests, with what the tests inspect.
pub struct Fixture {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Its store.
    pub store: Arc<dyn StateStore>,
    /// Pushes it delivered.
    pub notifier: Arc<RecordingNotifier>,
}

impl Fixture {
    /// Decisions committed so far.
    pub async fn decisions(&self) -> Vec<Decision> {
        self.store.decisions().await.expect("decisions")
    }
}

/// An engine on `store` with [`config`] loaded, the bundled model, a recording notifier, no
/// weather, and the clock stopped at [`now`].
pub async fn engine_on(store: Arc<dyn StateStore>) -> Fixture {
    let notifier = Arc::new(RecordingNotifier::new());
    let engine = build_engine(
        store.clone(),
        notifier.clone(),
        Arc::new(TableWeather::default()),
        Arc::new(ManualClock::new(now())),
        None,
    )
    .await
    .expect("engine builds");
    let (stores, offers, policy) = config();
    engine
        .load_config(stores, offers, policy)
        .await
        .expect("config loads");
    Fixture {
        engine,
        store,
        notifier,
    }
}

/// An engine on a fresh [`InMemoryStateStore`].
pub async fn engine() -> Fixture {
    engine_on(Arc::new(InMemoryStateStore::new())).await
}

/// A sample payload from `events/lambda/`.
pub fn sample(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events/lambda")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A store whose commits fail (DynamoDB throttling or an outage on one partition) for the
/// users set with [`FailingCommits::fail_for`]: everything else goes to the inner store.
pub struct FailingCommits {
    inner: Arc<dyn StateStore>,
    failing: Mutex<HashSet<String>>,
}

impl FailingCommits {
    /// Wraps `inner`, not failing yet.
    pub fn new(inner: Arc<dyn StateStore>) -> Self {
        Self {
            inner,
            failing: Mutex::new(HashSet::new()),
        }
    }

    /// Makes later commits of these users fail (and only theirs; empty: none fails).
    pub fn fail_for(&self, users: &[&str]) {
        *self.failing.lock().expect("lock") = users.iter().map(|u| u.to_string()).collect();
    }
}

impl StoreLayer for FailingCommits {
    fn wrapped(&self) -> &dyn StateStore {
        self.inner.as_ref()
    }
    fn commit<'a>(&'a self, c: &'a Commit) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        if self
            .failing
            .lock()
            .expect("lock")
            .contains(c.user_id.as_str())
        {
            return Box::pin(std::future::ready(Err(StoreError(
                "DynamoDB TransactWriteItems: throttled (test)".into(),
            ))));
        }
        self.inner.commit(c)
    }
}
