//! Privacy you can audit (docs/privacy.md), on every store (memory, SQLite, DynamoDB on
//! moto's server):
//! - the subject access export returns everything held about one person and nothing of
//!   another;
//! - a late event for an erased person stores nothing without a new consent;
//! - DynamoDB items that expire carry a `ttl` from the configured retention, and TTL is on;
//! - the AWS path (DynamoDB and SNS) with every log on logs no user id, token, coordinate or
//!   product id.

mod aws_support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_core::engine::Engine;
use nearcast_core::ports::{ManualClock, Retention, UserData};
use nearcast_tests::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

async fn call(
    engine: &Arc<Engine>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = nearcast_api::router(engine.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Consents, a push token, a purchase and a fix in store `i` that is sent a push; then the
/// push opened and its coupon redeemed. Returns the delivery id.
async fn live(engine: &Arc<Engine>, user: &str, token: &str, product: &str, i: usize) -> String {
    let at = noon().to_rfc3339();
    let (lat, lon) = store_point(i);
    let mut events: Vec<Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| json!({"event_id": format!("c-{p}"), "type": "consent", "at": at, "purpose": p, "granted": true}))
        .collect();
    events.push(
        json!({"event_id": "t", "type": "push_token", "at": at, "platform": "fcm", "token": token}),
    );
    events.push(json!({"event_id": "b", "type": "purchase", "at": at, "product_id": product, "category": "books"}));
    events.push(json!({"event_id": "f", "type": "location", "at": at, "lat": lat, "lon": lon, "accuracy_m": 8}));
    let (s, v) = call(
        engine,
        "POST",
        "/v1/events",
        Some(json!({"user_id": user, "events": events})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][5]["decision"]["verdict"], "sent", "{v}");
    let delivery = v["results"][5]["decision"]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    let offer = format!("o{i}");
    let after = json!({"user_id": user, "events": [
        {"event_id": "o", "type": "notification_opened", "at": at, "offer_id": offer, "delivery_id": delivery},
        {"event_id": "r", "type": "coupon_redeemed", "at": at, "offer_id": offer, "delivery_id": delivery}]});
    let (s, v) = call(engine, "POST", "/v1/events", Some(after)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    delivery
}

async fn export_everything_and_nothing_else(backend: Backend) {
    let h = harness(backend, 2, policy(5)).await;
    let ann_delivery = live(&h.engine, "ann-x1", "token-ann-5f2e", "prod-ann-77", 0).await;
    live(&h.engine, "bob-y2", "token-bob-9c4d", "prod-bob-88", 1).await;

    let (s, v) = call(&h.engine, "GET", "/v1/admin/users/ann-x1/export", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], "ann-x1");
    let p = &v["profile"];
    assert_eq!(p["push"]["token"], "token-ann-5f2e", "{v}");
    assert_eq!(p["purchases"][0]["product_id"], "prod-ann-77");
    for purpose in ["push", "location", "personalisation"] {
        assert_eq!(p["consents"][purpose]["granted"], true, "{purpose}: {v}");
    }
    assert_eq!(
        p["fences"].as_object().unwrap().len(),
        1,
        "presence in store 0"
    );
    assert_eq!(p["sends"].as_array().unwrap().len(), 1);
    let mut events: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(
        events,
        [
            "b",
            "c-location",
            "c-personalisation",
            "c-push",
            "f",
            "o",
            "r",
            "t"
        ]
    );
    let decisions = v["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{v}");
    assert_eq!(decisions[0]["user_id"], "ann-x1");
    let deliveries = v["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{v}");
    assert_eq!(deliveries[0]["push"]["delivery_id"], ann_delivery.as_str());
    assert_eq!(deliveries[0]["status"], "sent");
    let outcomes = v["outcomes"].as_array().unwrap();
    let mut kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["opened", "purchased", "redeemed"], "{v}");
    assert!(outcomes.iter().all(|o| o["user_id"] == "ann-x1"));
    // Nothing of the other person.
    let text = v.to_string();
    for theirs in ["bob-y2", "token-bob-9c4d", "prod-bob-88", "\"o1\""] {
        assert!(!text.contains(theirs), "{theirs} in ann's export: {text}");
    }

    // A person Nearcast holds nothing about: an empty export, not an error.
    let (s, v) = call(&h.engine, "GET", "/v1/admin/users/nobody/export", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"user_id": "nobody", "profile": null, "events": [], "decisions": [], "deliveries": [], "outcomes": []})
    );
    // A bad id is a 400 naming the field.
    let (s, v) = call(&h.engine, "GET", "/v1/admin/users/a%20b/export", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "user_id", "{v}");

    // After the erasure the export is empty, and bob's is whole.
    let (s, _) = call(&h.engine, "DELETE", "/v1/users/ann-x1", None).await;
    assert_eq!(s, StatusCode::OK);
    let id = id("ann-x1");
    assert_eq!(h.store.user_data(&id).await.unwrap(), UserData::default());
    let bob = h
        .store
        .user_data(&nearcast_tests::id("bob-y2"))
        .await
        .unwrap();
    assert_eq!(
        (
            bob.events.len(),
            bob.decisions.len(),
            bob.deliveries.len(),
            bob.outcomes.len()
        ),
        (8, 1, 1, 3)
    );
}

#[tokio::test]
async fn the_export_holds_everything_of_one_person_and_nothing_of_another_in_memory() {
    export_everything_and_nothing_else(Backend::Memory).await;
}

#[tokio::test]
async fn the_export_holds_everything_of_one_person_and_nothing_of_another_on_sqlite() {
    export_everything_and_nothing_else(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_holds_everything_of_one_person_and_nothing_of_another_on_dynamodb() {
    export_everything_and_nothing_else(Backend::Dynamo).await;
}

/// What a device still sends after its user was erased: a token, a purchase, a fix in a
/// store, an open.
fn late_events(user: &str, tag: &str) -> Value {
    let at = noon().to_rfc3339();
    let (lat, lon) = store_point(0);
    json!({"user_id": user, "events": [
        {"event_id": format!("{tag}-t"), "type": "push_token", "at": at, "platform": "fcm", "token": "token-late-1a2b"},
        {"event_id": format!("{tag}-b"), "type": "purchase", "at": at, "product_id": "prod-late-3c4d", "category": "books"},
        {"event_id": format!("{tag}-f"), "type": "location", "at": at, "lat": lat, "lon": lon, "accuracy_m": 8},
        {"event_id": format!("{tag}-o"), "type": "notification_opened", "at": at, "offer_id": "o0"}]})
}

async fn late_events_bring_nothing_back(backend: Backend) {
    let h = harness(backend, 1, policy(5)).await;
    live(&h.engine, "cat-z3", "token-cat-1", "prod-cat-1", 0).await;
    let (s, _) = call(&h.engine, "DELETE", "/v1/users/cat-z3", None).await;
    assert_eq!(s, StatusCode::OK);
    let user = id("cat-z3");
    // Late events are answered, and nothing of them is kept: no profile, no token, no
    // purchase, no idempotency key, no log.
    let (s, v) = call(
        &h.engine,
        "POST",
        "/v1/events",
        Some(late_events("cat-z3", "late")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted")
    );
    assert_eq!(v["results"][2]["decision"]["verdict"], "suppressed", "{v}");
    assert_eq!(h.store.user_data(&user).await.unwrap(), UserData::default());
    assert_eq!(h.store.load_user(&user).await.unwrap().version, 0);
    if let Some(sqlite) = &h.sqlite {
        assert_eq!(sqlite.rows_about(&user).unwrap(), 0);
    }
    assert_eq!(
        h.notifier.sent().len(),
        1,
        "only the push before the erasure"
    );
    // A new consent starts a new record, with only what came with or after it.
    let at = noon().to_rfc3339();
    let again = json!({"user_id": "cat-z3", "events": [
        {"event_id": "again-c", "type": "consent", "at": at, "purpose": "push", "granted": true}]});
    let (s, v) = call(&h.engine, "POST", "/v1/events", Some(again)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = h.store.user_data(&user).await.unwrap();
    let profile = d.profile.expect("a new profile");
    assert!(
        profile
            .consents
            .granted(nearcast_core::consent::Purpose::Push)
    );
    assert!(profile.push.is_none() && profile.purchases.is_empty());
    assert_eq!(d.events.len(), 1);
    // A person never erased who sends a token before any consent keeps it (the rule is
    // about erased people only).
    let (s, v) = call(
        &h.engine,
        "POST",
        "/v1/events",
        Some(late_events("dan-w4", "new")),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let dan = h.store.user_data(&id("dan-w4")).await.unwrap();
    assert_eq!(dan.profile.unwrap().push.unwrap().token, "token-late-1a2b");
}

#[tokio::test]
async fn a_late_event_after_erasure_stores_nothing_without_a_new_consent_in_memory() {
    late_events_bring_nothing_back(Backend::Memory).await;
}

#[tokio::test]
async fn a_late_event_after_erasure_stores_nothing_without_a_new_consent_on_sqlite() {
    late_events_bring_nothing_back(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_after_erasure_stores_nothing_without_a_new_consent_on_dynamodb() {
    late_events_bring_nothing_back(Backend::Dynamo).await;
}

/// Every item of the table, as (pk, sk, ttl).
async fn items(
    client: &nearcast_aws::aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<(String, String, Option<i64>)> {
    let out = client.scan().table_name(table).send().await.unwrap();
    out.items()
        .iter()
        .map(|i| {
            let s = |k: &str| {
                i.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let ttl = i
                .get("ttl")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok());
            (s("pk"), s("sk"), ttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_items_expire_by_ttl_after_the_configured_retention() {
    let client = nearcast_aws::moto::shared().dynamodb(None).await;
    let table = aws_support::unique("ttl");
    nearcast_aws::DynamoStateStore::create_table(&client, &table)
        .await
        .unwrap();
    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let d = ttl.time_to_live_description().unwrap();
    assert_eq!(d.attribute_name(), Some("ttl"));
    assert_eq!(
        d.time_to_live_status(),
        Some(&nearcast_aws::aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled)
    );
    let store = nearcast_aws::DynamoStateStore::new(client.clone(), &table)
        .with_retention(Retention::days(2, 30).unwrap());
    let engine = Arc::new(
        Engine::new(
            Arc::new(store),
            Arc::new(nearcast_core::memory::RecordingNotifier::new()),
            Arc::new(weather()),
            Arc::new(ManualClock::new(noon())),
            model(),
        )
        .await
        .unwrap(),
    );
    let (stores, offers) = catalog(1);
    engine.load_config(stores, offers, policy(5)).await.unwrap();
    let before = chrono::Utc::now().timestamp();
    live(&engine, "eve-ttl-5", "token-eve", "prod-eve", 0).await;
    let after = chrono::Utc::now().timestamp();
    let day = 24 * 3600;
    let within = |t: Option<i64>, days: i64| {
        t.is_some_and(|t| (before + days * day..=after + days * day).contains(&t))
    };
    let mine = items(&client, &table).await;
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for (pk, sk, t) in &mine {
        let kind = sk.split('#').next().unwrap();
        let days = match (pk.as_str(), kind) {
            ("USER#eve-ttl-5", "PROFILE") => {
                assert_eq!(*t, None, "the profile lives until erased");
                continue;
            }
            ("USER#eve-ttl-5", "EVENT") => 2,
            ("USER#eve-ttl-5", "DECISION" | "DELIVERY" | "OUTCOME") => 30,
            _ => continue,
        };
        assert!(within(*t, days), "{pk} {sk}: ttl {t:?}, want {days} days");
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(
        kinds,
        [
            ("DECISION", 1),
            ("DELIVERY", 1),
            ("EVENT", 8),
            ("OUTCOME", 3)
        ]
        .into()
    );
    // The erasure leaves only its pseudonym, for 30 days, and no item holds the id.
    let (s, _) = call(&engine, "DELETE", "/v1/users/eve-ttl-5", None).await;
    assert_eq!(s, StatusCode::OK);
    let left = items(&client, &table).await;
    assert!(
        left.iter()
            .all(|(pk, sk, _)| !pk.contains("eve-ttl-5") && !sk.contains("eve-ttl-5")),
        "{left:?}"
    );
    let erased: Vec<_> = left
        .iter()
        .filter(|(pk, _, _)| pk.starts_with("ERASED#"))
        .collect();
    assert_eq!(erased.len(), 1, "{left:?}");
    let memory = nearcast_core::ports::ERASURE_MEMORY_DAYS * day;
    let t = erased[0].2.expect("the pseudonym expires");
    assert!((after + memory..=chrono::Utc::now().timestamp() + memory).contains(&t));
}

/// Everything logged in this test binary, at every level of every crate.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || Capture(writer.clone()))
            .with_ansi(false)
            .init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The AWS path end to end (DynamoDB and SNS mobile push on moto's server, through the real
/// SDK clients) with every log on: consents, token, purchase, a push published, the open and
/// the redemption, the export, the erasure with its endpoint deleted. What was logged holds
/// none of the person's id, token, coordinates or product id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_path_logs_no_user_id_token_coordinate_or_product_id() {
    let logs = captured();
    let moto = aws_support::moto();
    let table = aws_support::unique("logs");
    let ddb = moto.dynamodb(None).await;
    nearcast_aws::DynamoStateStore::create_table(&ddb, &table)
        .await
        .unwrap();
    let sns = moto.sns(None).await;
    let (apns, fcm) = aws_support::platform_applications(&sns, "logs").await;
    let engine = Arc::new(
        Engine::new(
            Arc::new(nearcast_aws::DynamoStateStore::new(ddb, &table)),
            Arc::new(nearcast_aws::sns::SnsNotifier::new(sns, apns, fcm)),
            Arc::new(weather()),
            Arc::new(ManualClock::new(noon())),
            model(),
        )
        .await
        .unwrap(),
    );
    let (stores, offers) = catalog(3);
    engine.load_config(stores, offers, policy(5)).await.unwrap();
    let user = "logged-user-7q";
    let token = "token-logged-8f3a9c";
    let product = "prod-logged-4k2";
    live(&engine, user, token, product, 2).await;
    let (s, _) = call(
        &engine,
        "GET",
        &format!("/v1/admin/users/{user}/export"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&engine, "DELETE", &format!("/v1/users/{user}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    // Something was logged: the SDK's requests, at least.
    assert!(text.lines().count() > 20, "{text}");
    let (lat, lon) = store_point(2);
    for needle in [
        user.to_string(),
        token.to_string(),
        product.to_string(),
        format!("{lat}"),
        format!("{lon}"),
    ] {
        assert!(!text.contains(&needle), "{needle} logged:\n{text}");
    }
}
