//! Model rollout across instances: two engines on one DynamoDB table and one model bucket
//! (moto, through the real SDK; run via `bash scripts/moto.sh cargo test ...`, skipped
//! loudly otherwise), wired as `nearcast_functions::start` wires a function. A model
//! reloaded through one instance, or published or rolled back through the CLI's library
//! path, reaches the other within the refresh interval and not before; the check rides on
//! the catalog version's GetItem, so events cost no extra request; a refused artifact keeps
//! the models in service on both.

mod aws_support;

use aws_support::{Proxy, moto, moto_url, unique};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_aws::DynamoStateStore;
use nearcast_aws::model_store::{AnnounceError, ModelRollout, S3Blobs, announced};
use nearcast_aws::refresh::RefreshingStore;
use nearcast_core::engine::{Engine, scored_by_challenger};
use nearcast_core::memory::RecordingNotifier;
use nearcast_core::model_store::{Blobs, ModelStoreError, Slot, publish, rollback};
use nearcast_core::ports::ManualClock;
use nearcast_tests::{event, id, model, noon, weather};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tower::ServiceExt;

const CHAMPION: &str = "prod/ranker.json";
const CHALLENGER: &str = "prod/challenger.json";
const SHARE: f64 = 0.5;

/// The bundled model as version `v`.
fn artifact(v: &str) -> Vec<u8> {
    let mut a: Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    a["version"] = v.into();
    serde_json::to_vec(&a).unwrap()
}

/// One function instance: its own DynamoDB and S3 clients (through the proxy), its engine
/// on a [`RefreshingStore`], models loaded from S3 at start and followed afterwards.
async fn instance(
    proxy: &Proxy,
    table: &str,
    bucket: &str,
    every: Duration,
) -> (Arc<Engine>, Arc<RefreshingStore>) {
    let dynamo = DynamoStateStore::new(moto().dynamodb(Some(&proxy.url)).await, table);
    let store = RefreshingStore::new(Arc::new(dynamo), every);
    store.prime().await.expect("versions");
    let engine = Arc::new(
        Engine::new(
            store.clone(),
            Arc::new(RecordingNotifier::new()),
            Arc::new(weather()),
            Arc::new(ManualClock::new(noon())),
            model(),
        )
        .await
        .expect("engine"),
    );
    store.attach(&engine);
    let rollout = Arc::new(ModelRollout::new(
        S3Blobs::new(moto().s3(Some(&proxy.url)).await, bucket, CHAMPION),
        Some((CHALLENGER.into(), SHARE)),
    ));
    let models = rollout.load().await.expect("models at start");
    rollout.put_in_service(&engine, models).unwrap();
    store.serve_models(&engine, rollout);
    (engine, store)
}

/// A fix far from every store (a new event id each time); the version of the model that
/// decided it.
async fn fix(engine: &Engine, user: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    // Each fix a second after the one before: newer than every event accepted, so no
    // fix needs its key looked up (a fix at an earlier one's instant would).
    let n = N.fetch_add(1, Ordering::Relaxed);
    let at = noon() + chrono::Duration::seconds(n as i64 + 1);
    let e = event(
        user,
        json!({"event_id": format!("f{n}"), "type": "location",
            "at": at.to_rfc3339(), "lat": 60.25, "lon": 25.10, "accuracy_m": 8}),
    );
    let r = engine.process(&e).await.expect("processed");
    r.decision
        .expect("a location event is decided")
        .model_version
}

/// A user every challenger version of this test leaves to the champion (`false`) or gives
/// to the challenger (`true`).
fn user(challenger: bool) -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| {
            ["c1", "c2"]
                .iter()
                .all(|v| scored_by_challenger(&id(u), v, SHARE) == challenger)
        })
        .expect("a user")
}

async fn reload(engine: &Arc<Engine>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/admin/model/reload")
        .body(Body::empty())
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

fn m(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn models_of(e: &Engine) -> (String, String) {
    (
        e.ranker().version().to_string(),
        e.challenger()
            .map(|c| c.ranker.version().to_string())
            .unwrap_or_default(),
    )
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_change_through_one_instance_reaches_the_other_within_the_interval() {
    let proxy = Proxy::start(&moto_url()).await;
    let table = unique("rollout");
    let bucket = unique("rollout-models");
    let direct = moto().dynamodb(None).await;
    DynamoStateStore::create_table(&direct, &table)
        .await
        .expect("create table");
    let cli_table = DynamoStateStore::new(direct, &table);
    let s3 = moto().s3(None).await;
    S3Blobs::create_bucket(&s3, &bucket).await.unwrap();
    let champion = S3Blobs::new(s3.clone(), &bucket, CHAMPION);
    let challenger = S3Blobs::new(s3, &bucket, CHALLENGER);
    publish(&champion, &artifact("m1"), noon()).await.unwrap();
    challenger
        .put(Slot::Current, &artifact("c1"))
        .await
        .unwrap();

    // Long enough for the steps between two checks (about 30 requests to moto, which
    // serves one at a time) on a loaded machine.
    let every = Duration::from_secs(3);
    let after_interval = || tokio::time::sleep(every + Duration::from_millis(100));
    let (a, _) = instance(&proxy, &table, &bucket, every).await;
    let (b, b_store) = instance(&proxy, &table, &bucket, every).await;
    assert_eq!(models_of(&a), pair("m1", "c1"));
    assert_eq!(models_of(&b), pair("m1", "c1"));
    let (uc, ux) = (user(false), user(true));
    // Each has a profile (a consent), as an app's users do before they send fixes: a user
    // with none costs one more GetItem per event (was the id erased lately?).
    for u in [&uc, &ux] {
        let e = event(
            u,
            json!({"event_id": format!("{u}-consent"), "type": "consent", "at": noon().to_rfc3339(),
                "purpose": "push", "granted": true}),
        );
        a.process(&e).await.expect("processed");
    }

    // Both check once (nothing changed), so each starts a fresh interval here.
    after_interval().await;
    proxy.reset_counts();
    assert_eq!(fix(&a, &uc).await, "m1");
    assert_eq!(fix(&b, &uc).await, "m1");
    assert_eq!(proxy.counts(), m(&[("GetItem", 4), ("PutItem", 2)]));

    // New champion and challenger land in S3, then `POST /v1/admin/model/reload` on A:
    // A loads both (2 GetObjects) and announces them (1 UpdateItem).
    publish(&champion, &artifact("m2"), noon()).await.unwrap();
    challenger
        .put(Slot::Current, &artifact("c2"))
        .await
        .unwrap();
    proxy.reset_counts();
    let (status, body) = reload(&a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"champion": "m2", "challenger": {"version": "c2", "share": SHARE}})
    );
    assert_eq!(proxy.counts(), m(&[("GetObject", 2), ("UpdateItem", 1)]));
    assert_eq!(b_store.inner().versions().await.unwrap().model, 1);

    // B within its interval: the old models, and nothing but the events' own requests.
    proxy.reset_counts();
    assert_eq!(fix(&b, &uc).await, "m1");
    assert_eq!(fix(&b, &ux).await, "c1");
    assert_eq!(proxy.counts(), m(&[("GetItem", 2), ("PutItem", 2)]));

    // After the interval, B's next event reads the versions item (the same GetItem as the
    // catalog check), sees the new model number and loads both models. That event was
    // decided before the swap; the next ones use the new models.
    after_interval().await;
    proxy.reset_counts();
    assert_eq!(fix(&b, &uc).await, "m1");
    assert_eq!(
        proxy.counts(),
        m(&[("GetItem", 2), ("GetObject", 2), ("PutItem", 1)])
    );
    assert_eq!(models_of(&b), pair("m2", "c2"));
    assert_eq!(fix(&b, &uc).await, "m2");
    assert_eq!(fix(&b, &ux).await, "c2");
    // A announced what it had loaded: its own check loads nothing again.
    proxy.reset_counts();
    assert_eq!(fix(&a, &uc).await, "m2");
    assert_eq!(proxy.counts(), m(&[("GetItem", 2), ("PutItem", 1)]));

    // Within the interval: 2 round trips per event, no check, no S3.
    proxy.reset_counts();
    for i in 0..10 {
        let u = if i % 2 == 0 { &uc } else { &ux };
        let v = fix(&b, u).await;
        assert_eq!(v, if i % 2 == 0 { "m2" } else { "c2" });
    }
    assert_eq!(proxy.counts(), m(&[("GetItem", 10), ("PutItem", 10)]));

    // A corrupt artifact through the CLI's path is refused before anything is written or
    // announced.
    let e = announced(&cli_table, publish(&champion, b"{broken", noon()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AnnounceError::Store(ModelStoreError::Refused(_))),
        "{e}"
    );
    assert_eq!(cli_table.versions().await.unwrap().model, 1);
    // An artifact of another feature schema (as a newer build would publish) put in S3
    // some other way: A's reload refuses it, keeps its models and announces nothing.
    let mut other: Value = serde_json::from_slice(&artifact("m3")).unwrap();
    other["schema_hash"] = "0123456789abcdef".into();
    champion
        .put(Slot::Current, other.to_string().as_bytes())
        .await
        .unwrap();
    let (status, body) = reload(&a).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["current_model_kept"], true, "{body}");
    assert_eq!(cli_table.versions().await.unwrap().model, 1);
    // Announced anyway (`nearcast model announce`): each instance fetches it once at its
    // next check, refuses it and keeps serving m2 and c2.
    assert_eq!(cli_table.bump_model_version().await.unwrap(), 2);
    after_interval().await;
    proxy.reset_counts();
    assert_eq!(fix(&a, &uc).await, "m2");
    assert_eq!(fix(&b, &uc).await, "m2");
    assert_eq!(
        proxy.counts(),
        m(&[("GetItem", 4), ("GetObject", 2), ("PutItem", 2)])
    );
    assert_eq!(models_of(&a), pair("m2", "c2"));
    assert_eq!(models_of(&b), pair("m2", "c2"));
    assert_eq!(fix(&b, &ux).await, "c2");
    // ... and does not fetch it again at the following checks.
    after_interval().await;
    proxy.reset_counts();
    assert_eq!(fix(&a, &uc).await, "m2");
    assert_eq!(fix(&b, &uc).await, "m2");
    assert_eq!(proxy.counts(), m(&[("GetItem", 4), ("PutItem", 2)]));

    // Rollback through the CLI's path: the previous version (m1) becomes current in S3 and
    // is announced. Not before the interval...
    let (v, n) = announced(&cli_table, rollback(&champion, noon()))
        .await
        .unwrap();
    assert_eq!((v.as_str(), n), ("m1", 3));
    assert_eq!(fix(&a, &uc).await, "m2");
    assert_eq!(fix(&b, &uc).await, "m2");
    // ... but within it, on both (the challenger object did not change: c2 stays).
    after_interval().await;
    proxy.reset_counts();
    fix(&a, &uc).await;
    fix(&b, &uc).await;
    assert_eq!(
        proxy.counts(),
        m(&[("GetItem", 4), ("GetObject", 4), ("PutItem", 2)])
    );
    assert_eq!(fix(&a, &uc).await, "m1");
    assert_eq!(fix(&b, &uc).await, "m1");
    assert_eq!(fix(&b, &ux).await, "c2");
    assert_eq!(models_of(&a), pair("m1", "c2"));
}
