//! Fixtures shared by the cross-crate tests: a small catalog around real Helsinki
//! coordinates, engines on each state store, and helpers to build events.

use nearcast::outbox::OutboxNotifier;
use nearcast::store::{SqliteStore, Sync};
use nearcast_core::config::{CapPolicy, Offer, Store, parse_json};
use nearcast_core::engine::Engine;
use nearcast_core::event::Event;
use nearcast_core::ids::Id;
use nearcast_core::memory::{InMemoryStateStore, RecordingNotifier};
use nearcast_core::ports::{
    BoxFuture, ManualClock, StateStore, StoreError, StoreLayer, UserRecord,
};
use nearcast_core::ranker::Ranker;
use nearcast_core::weather::{Condition, TableWeather, Weather, WeatherSpan};
use serde_json::{Value, json};
use std::sync::Arc;

/// A fixed instant: Friday 2026-11-20 12:00 in Helsinki.
pub fn noon() -> chrono::DateTime<chrono::Utc> {
    "2026-11-20T10:00:00Z".parse().expect("valid time")
}

/// `n` circular stores 200 m apart along a line in central Helsinki, each with an
/// enter-triggered offer that always scores above its threshold (threshold 0).
pub fn catalog(n: usize) -> (Vec<Store>, Vec<Offer>) {
    let mut stores = Vec::new();
    let mut offers = Vec::new();
    for i in 0..n {
        let (lat, lon) = store_point(i);
        stores.push(
            parse_json::<Store>(&json!({"id": format!("s{i}"), "name": format!("Store {i}"), "category": "cafe",
                "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": lat, "lon": lon, "radius_m": 50}}))
            .expect("valid store"),
        );
        offers.push(
            parse_json::<Offer>(&json!({"id": format!("o{i}"), "campaign_id": "c1", "title": "Coffee", "body": "Half price",
                "category": "coffee", "store_ids": [format!("s{i}")], "trigger": {"type": "enter"}, "threshold": 0.0}))
            .expect("valid offer"),
        );
    }
    (stores, offers)
}

/// Where store `i` of [`catalog`] is.
pub fn store_point(i: usize) -> (f64, f64) {
    (
        60.1600 + 0.0018 * (i / 40) as f64,
        24.9000 + 0.0036 * (i % 40) as f64,
    )
}

/// A policy without gap or quiet hours, `per_day` pushes a day.
pub fn policy(per_day: u32) -> CapPolicy {
    CapPolicy {
        per_day,
        per_week: per_day.max(1) * 7,
        min_gap_minutes: 0,
        quiet_start: chrono::NaiveTime::from_hms_opt(0, 0, 0).expect("valid"),
        quiet_end: chrono::NaiveTime::from_hms_opt(0, 0, 0).expect("valid"),
        global_control: 0.0,
    }
}

/// Rainy weather all day.
pub fn weather() -> TableWeather {
    TableWeather::new(vec![WeatherSpan {
        from: "2026-11-01T00:00:00Z".parse().expect("valid"),
        to: "2026-12-01T00:00:00Z".parse().expect("valid"),
        weather: Weather {
            condition: Condition::Rain,
            temp_c: 4.0,
        },
    }])
}

/// The bundled model.
pub fn model() -> Arc<dyn Ranker> {
    nearcast::load_model(None).expect("bundled model loads")
}

/// A test engine: its store, its notifier's record, its clock.
pub struct Harness {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The store (for inspection).
    pub store: Arc<dyn StateStore>,
    /// The SQLite store, when that is the backend.
    pub sqlite: Option<Arc<SqliteStore>>,
    /// The DynamoDB table, when that is the backend.
    pub dynamo_table: Option<String>,
    /// Pushes delivered.
    pub notifier: Arc<RecordingNotifier>,
    /// The clock.
    pub clock: ManualClock,
    /// Keeps the temporary folder alive.
    pub dir: tempfile::TempDir,
}

/// Which state store backs a harness.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    /// In memory.
    Memory,
    /// SQLite file.
    Sqlite,
    /// In memory, with a pause between read and commit.
    InterleavedMemory,
    /// SQLite file, with a pause between read and commit.
    InterleavedSqlite,
    /// DynamoDB (moto's server), a fresh table.
    Dynamo,
    /// DynamoDB, with a pause between read and commit.
    InterleavedDynamo,
}

/// A fresh DynamoDB table on moto's server (started on first use, see
/// `nearcast_aws::moto`), through the real SDK.
pub async fn dynamo_store() -> nearcast_aws::DynamoStateStore {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let table = format!(
        "h-{}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let client = nearcast_aws::moto::shared().dynamodb(None).await;
    nearcast_aws::DynamoStateStore::create_table(&client, &table)
        .await
        .expect("create a table on the AWS-compatible server");
    nearcast_aws::DynamoStateStore::new(client, table)
}

/// A store wrapper that pauses between reading a user and returning it, so concurrent
/// events for one user reliably interleave between their read and their commit: the
/// window in which a missing version check would let caps be exceeded.
pub struct Interleaving(pub Arc<dyn StateStore>);

impl StoreLayer for Interleaving {
    fn wrapped(&self) -> &dyn StateStore {
        self.0.as_ref()
    }
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        Box::pin(async move {
            let r = self.0.load_user(user).await;
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            r
        })
    }
}

/// A harness with `n` stores and the given policy.
pub async fn harness(backend: Backend, n: usize, policy: CapPolicy) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dynamo_table = None;
    let (store, sqlite): (Arc<dyn StateStore>, Option<Arc<SqliteStore>>) = match backend {
        Backend::Memory => (Arc::new(InMemoryStateStore::new()), None),
        Backend::Sqlite => {
            let s = Arc::new(
                SqliteStore::open(&dir.path().join("t.db"), Sync::Normal).expect("open db"),
            );
            (s.clone(), Some(s))
        }
        Backend::InterleavedMemory => (
            Arc::new(Interleaving(Arc::new(InMemoryStateStore::new()))),
            None,
        ),
        Backend::InterleavedSqlite => {
            let s = Arc::new(
                SqliteStore::open(&dir.path().join("t.db"), Sync::Normal).expect("open db"),
            );
            (Arc::new(Interleaving(s.clone())), Some(s))
        }
        Backend::Dynamo => {
            let d = dynamo_store().await;
            dynamo_table = Some(d.table().to_string());
            (Arc::new(d), None)
        }
        Backend::InterleavedDynamo => {
            let d = dynamo_store().await;
            dynamo_table = Some(d.table().to_string());
            (Arc::new(Interleaving(Arc::new(d))), None)
        }
    };
    let notifier = Arc::new(RecordingNotifier::new());
    let clock = ManualClock::new(noon());
    let engine = Engine::new(
        store.clone(),
        notifier.clone(),
        Arc::new(weather()),
        Arc::new(clock.clone()),
        model(),
    )
    .await
    .expect("engine");
    let (stores, offers) = catalog(n);
    engine
        .load_config(stores, offers, policy)
        .await
        .expect("config");
    Harness {
        engine: Arc::new(engine),
        store,
        sqlite,
        dynamo_table,
        notifier,
        clock,
        dir,
    }
}

/// Every row of every table the harness's store holds (SQLite: each table of the file;
/// DynamoDB: every item of the table), one line each, sorted. `None` in memory.
pub async fn dump(h: &Harness) -> Option<Vec<String>> {
    let mut rows: Vec<String> = if let Some(db) = &h.sqlite {
        db.dump().expect("dump the database")
    } else if let Some(table) = &h.dynamo_table {
        scan_table(table)
            .await
            .into_values()
            .map(|attrs| format!("{attrs:?}"))
            .collect()
    } else {
        return None;
    };
    assert!(!rows.is_empty(), "the store has rows");
    rows.sort();
    Some(rows)
}

/// An outbox notifier in the harness folder (for tests that read the file).
pub fn outbox(h: &Harness) -> OutboxNotifier {
    OutboxNotifier::open(&h.dir.path().join("outbox.jsonl")).expect("outbox")
}

/// Parses an event for `user`.
pub fn event(user: &str, v: Value) -> Event {
    let mut v = v;
    v["user_id"] = json!(user);
    Event::from_json(&v, None, noon() + chrono::Duration::hours(1)).expect("valid test event")
}

/// The events that set a user up: push token and all three consents.
pub fn onboarding(user: &str, at: chrono::DateTime<chrono::Utc>) -> Vec<Event> {
    let t = (at - chrono::Duration::minutes(5)).to_rfc3339();
    let mut v = vec![event(
        user,
        json!({"event_id": format!("{user}-tok"), "type": "push_token", "at": t, "platform": "fcm", "token": "tok-123"}),
    )];
    for p in ["push", "location", "personalisation"] {
        v.push(event(user, json!({"event_id": format!("{user}-c-{p}"), "type": "consent", "at": t, "purpose": p, "granted": true})));
    }
    v
}

/// A location fix at store `i` of [`catalog`].
pub fn fix_at(user: &str, id: &str, i: usize, at: chrono::DateTime<chrono::Utc>) -> Event {
    let (lat, lon) = store_point(i);
    event(
        user,
        json!({"event_id": id, "type": "location", "at": at.to_rfc3339(), "lat": lat, "lon": lon, "accuracy_m": 8}),
    )
}

/// An id.
pub fn id(s: &str) -> Id {
    Id::parse(s).expect("valid id")
}

/// Every item of a DynamoDB table on moto, keyed `pk / sk`, each attribute written with
/// `Debug` (type and value).
pub async fn scan_table(
    table: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let client = nearcast_aws::moto::shared().dynamodb(None).await;
    let mut out = std::collections::BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            let k = |n: &str| item[n].as_s().expect("string keys").clone();
            let attrs = item
                .iter()
                .map(|(n, v)| (n.clone(), format!("{v:?}")))
                .collect();
            out.insert(format!("{} / {}", k("pk"), k("sk")), attrs);
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out
}

/// Admin API keys for tests: each holder's key is `key-of-<name>` (see [`key_of`]).
pub fn api_keys(holders: &[(&str, nearcast_api::auth::Role)]) -> nearcast_api::auth::Access {
    use nearcast_api::auth::{Access, ApiKeys, KeyEntry, key_digest};
    let entries = holders
        .iter()
        .map(|&(name, role)| KeyEntry {
            name: name.into(),
            role,
            sha256: key_digest(&key_of(name)),
        })
        .collect();
    Access::Keys(Arc::new(ApiKeys::new(entries).expect("valid test keys")))
}

/// The key [`api_keys`] gives `name`.
pub fn key_of(name: &str) -> String {
    format!("key-of-{name}")
}

/// One admin request through the router with `access`, as `who` (an API key's holder from
/// [`api_keys`]; `None`: no Authorization header). Answers the status, the JSON body (null
/// when there is none) and the `WWW-Authenticate` challenge, if any.
pub async fn admin_call(
    engine: Arc<Engine>,
    access: nearcast_api::auth::Access,
    who: Option<&str>,
    method: &str,
    uri: &str,
    body: Value,
) -> (axum::http::StatusCode, Value, Option<String>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let app = nearcast_api::router_with(engine, access);
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(who) = who {
        req = req.header(
            axum::http::header::AUTHORIZATION,
            format!("Bearer {}", key_of(who)),
        );
    }
    let body = if body.is_null() {
        axum::body::Body::empty()
    } else {
        axum::body::Body::from(body.to_string())
    };
    let resp = app.oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let challenge = resp
        .headers()
        .get(axum::http::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        challenge,
    )
}
