//! The AWS backend end to end, through the real AWS SDK against moto's server (started by
//! the test process, see `nearcast_aws::moto`): requests through the
//! HTTP router on [`DynamoStateStore`] and [`SnsNotifier`], pushes observed in moto's
//! record of SNS, items read back from DynamoDB. DynamoDB and SNS are reached through
//! loopback proxies that the tests cut to inject real connection failures, and that count
//! the requests of each path (the numbers in docs/aws.md).

mod aws_support;

use aws_support::{Fault, Proxy, messages_to, moto, moto_url, platform_applications, unique};
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use nearcast_aws::DynamoStateStore;
use nearcast_aws::sns::{RetryPolicy, SnsNotifier, aws_sdk_sns};
use nearcast_core::engine::Engine;
use nearcast_core::ports::{DeliveryStatus, ManualClock, StateStore};
use nearcast_tests::{catalog, id, model, noon, policy, scan_table, store_point, weather};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// The AWS backend on a fresh table and fresh platform applications.
struct Aws {
    engine: Arc<Engine>,
    /// DynamoDB through its proxy.
    ddb: Proxy,
    /// SNS through its proxy.
    sns: Proxy,
    /// The store on a direct client, for inspection.
    direct: DynamoStateStore,
    /// SNS on a direct client, for inspection.
    sns_direct: aws_sdk_sns::Client,
}

async fn aws(case: &str, stores: usize, per_day: u32) -> Aws {
    let moto = moto();
    let ddb = Proxy::start(&moto_url()).await;
    let sns = Proxy::start(&moto_url()).await;
    let table = unique(case);
    let direct_client = moto.dynamodb(None).await;
    DynamoStateStore::create_table(&direct_client, &table)
        .await
        .expect("create table on moto");
    let sns_direct = moto.sns(None).await;
    let (apns, fcm) = platform_applications(&sns_direct, case).await;
    // The clients the functions use, pointed at the proxies.
    let store = DynamoStateStore::new(moto.dynamodb(Some(&ddb.url)).await, &table);
    let notifier =
        SnsNotifier::new(moto.sns(Some(&sns.url)).await, apns, fcm).with_retry(RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        });
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(notifier),
        Arc::new(weather()),
        Arc::new(ManualClock::new(noon())),
        model(),
    )
    .await
    .expect("engine on DynamoDB");
    let (stores, offers) = catalog(stores);
    engine
        .load_config(stores, offers, policy(per_day))
        .await
        .expect("catalog");
    Aws {
        engine: Arc::new(engine),
        ddb,
        sns,
        direct: DynamoStateStore::new(direct_client, table),
        sns_direct,
    }
}

macro_rules! aws {
    ($name:ident, $case:ident, $stores:expr, $per_day:expr) => {
        let $name = aws(stringify!($case), $stores, $per_day).await;
    };
}

/// One request through the router.
async fn call(
    engine: &Arc<Engine>,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
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
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

fn onboarding(user: &str) -> Value {
    let at = (noon() - chrono::Duration::minutes(5)).to_rfc3339();
    let mut events = vec![
        json!({"event_id": format!("{user}-tok"), "type": "push_token", "at": at,
        "platform": "fcm", "token": format!("fcm-token-{user}")}),
    ];
    for p in ["push", "location", "personalisation"] {
        events.push(
            json!({"event_id": format!("{user}-c-{p}"), "type": "consent", "at": at,
            "purpose": p, "granted": true}),
        );
    }
    json!({"user_id": user, "events": events})
}

fn fix(user: &str, event: &str, store: usize) -> Value {
    let (lat, lon) = store_point(store);
    json!({"user_id": user, "events": [{"event_id": event, "type": "location",
        "at": noon().to_rfc3339(), "lat": lat, "lon": lon, "accuracy_m": 8}]})
}

/// A fix far from every store.
fn far_fix(user: &str, event: &str) -> Value {
    json!({"user_id": user, "events": [{"event_id": event, "type": "location",
        "at": noon().to_rfc3339(), "lat": 60.25, "lon": 25.10, "accuracy_m": 8}]})
}

async fn post(a: &Aws, body: Value) -> (StatusCode, HeaderMap, Value) {
    call(&a.engine, "POST", "/v1/events", Some(body)).await
}

async fn onboard(a: &Aws, user: &str) -> String {
    let (s, _, v) = post(a, onboarding(user)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    endpoint(a, user)
        .await
        .expect("the endpoint is created at token registration")
}

async fn endpoint(a: &Aws, user: &str) -> Option<String> {
    a.direct
        .load_user(&id(user))
        .await
        .unwrap()
        .state
        .push
        .and_then(|p| p.endpoint)
}

/// Every item of the table, keyed `pk / sk`, attributes in order.
async fn table(a: &Aws) -> BTreeMap<String, BTreeMap<String, String>> {
    scan_table(a.direct.table()).await
}

/// The items of one user's partition.
async fn partition(a: &Aws, user: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let prefix = format!("USER#{user} / ");
    table(a)
        .await
        .into_iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .collect()
}

/// The client's retry of fix `f1`: 200, answered `(status, "sent")`, and `endpoint` has
/// exactly one push.
async fn retry_sends_once(a: &Aws, user: &str, endpoint: &str, status: &str, when: &str) {
    let (s, _, v) = post(a, fix(user, "f1", 0)).await;
    assert_eq!(s, StatusCode::OK, "{when}: {v}");
    assert_eq!(result(&v), (status, "sent"), "{when}");
    assert_eq!(messages_to(endpoint).len(), 1, "{when}: one push");
}

fn result(v: &Value) -> (&str, &str) {
    let r = &v["results"][0];
    (
        r["status"].as_str().unwrap_or("?"),
        r["decision"]["verdict"].as_str().unwrap_or("?"),
    )
}

fn assert_retryable(s: StatusCode, h: &HeaderMap, v: &Value) {
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(h.get("retry-after").is_some(), "Retry-After is set");
    assert_eq!(v["error"]["retryable"], true, "{v}");
}

/// Retries like a client does on 503, at most 20 times.
async fn post_until_answered(engine: Arc<Engine>, body: Value) -> Value {
    for _ in 0..20 {
        let (s, _, v) = call(&engine, "POST", "/v1/events", Some(body.clone())).await;
        if s == StatusCode::OK {
            return v;
        }
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no answer after 20 tries");
}

// ---------------------------------------------------------------- end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_through_the_router_push_via_sns_and_erasure_leaves_nothing() {
    aws!(
        a,
        events_through_the_router_push_via_sns_and_erasure_leaves_nothing,
        2,
        5
    );
    let user = "erin-e2e";
    let endpoint = onboard(&a, user).await;
    assert!(endpoint.contains(":endpoint/GCM/"), "{endpoint}");

    let (s, _, v) = post(&a, fix(user, "f1", 0)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(result(&v), ("accepted", "sent"));
    let delivery = v["results"][0]["decision"]["delivery_id"]
        .as_str()
        .expect("delivery id")
        .to_string();

    // The push reached SNS, addressed to the user's endpoint, with its ids.
    let messages = messages_to(&endpoint);
    assert_eq!(messages.len(), 1);
    let outer: Value = serde_json::from_str(&messages[0]).unwrap();
    let inner: Value = serde_json::from_str(outer["GCM"].as_str().unwrap()).unwrap();
    assert_eq!(inner["data"]["delivery_id"], delivery.as_str());
    assert_eq!(inner["data"]["offer_id"], "o0");
    assert_eq!(inner["notification"]["title"], "Coffee");

    // DynamoDB holds what DESIGN.md says, with TTLs on the transient items.
    let items = table(&a).await;
    let p = format!("USER#{user}");
    let sks: Vec<&str> = items
        .keys()
        .filter_map(|k| k.strip_prefix(&format!("{p} / ")))
        .collect();
    assert_eq!(sks.iter().filter(|s| s.starts_with("EVENT#")).count(), 5);
    assert_eq!(sks.iter().filter(|s| s.starts_with("DECISION#")).count(), 1);
    assert!(sks.contains(&"PROFILE"));
    let d = &items[&format!("{p} / DELIVERY#{delivery}")];
    assert!(d["status"].contains("\"sent\""), "{d:?}");
    // Claimed and sent: no pending marker is left for the relay.
    assert!(
        !items.keys().any(|k| k.starts_with("PENDING#")),
        "{:?}",
        items.keys().collect::<Vec<_>>()
    );
    for (k, attrs) in &items {
        if !k.ends_with("/ PROFILE") && k.starts_with("USER#") {
            assert!(attrs.contains_key("ttl"), "{k} has a TTL");
        }
    }
    let rec = a.direct.load_user(&id(user)).await.unwrap();
    assert_eq!(rec.state.sends.len(), 1);

    // Erasure: no item left about the user, and the endpoint is gone at SNS.
    let (s, _, v) = call(&a.engine, "DELETE", &format!("/v1/users/{user}"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let after = table(&a).await;
    let leftovers: Vec<_> = after
        .iter()
        .filter(|(k, attrs)| k.contains(user) || attrs.values().any(|v| v.contains(user)))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!after.keys().any(|k| k.contains(&delivery)));
    assert!(
        a.sns_direct
            .get_endpoint_attributes()
            .endpoint_arn(&endpoint)
            .send()
            .await
            .is_err(),
        "the endpoint was deleted at SNS"
    );
    // The store catalogue is untouched.
    assert!(after.contains_key("STORE#s0 / META"));
}

// ---------------------------------------------------------------- concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_fixes_for_one_user_never_exceed_the_cap() {
    aws!(
        a,
        fifty_concurrent_fixes_for_one_user_never_exceed_the_cap,
        50,
        2
    );
    let endpoint = onboard(&a, "cap").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let engine = a.engine.clone();
            tokio::spawn(post_until_answered(engine, fix("cap", &format!("c{i}"), i)))
        })
        .collect();
    let mut sent = 0;
    let mut answers = Vec::new();
    for t in tasks {
        let v = t.await.unwrap();
        if result(&v).1 == "sent" {
            sent += 1;
        }
        answers.push(v);
    }
    assert_eq!(sent, 2, "per_day cap is 2");
    assert_eq!(messages_to(&endpoint).len(), 2);
    let deliveries = a.direct.deliveries().await.unwrap();
    assert_eq!(deliveries.len(), 2);
    assert!(
        deliveries.iter().all(|d| d.status == DeliveryStatus::Sent),
        "{:?}",
        deliveries.iter().map(|d| d.status).collect::<Vec<_>>()
    );
    let rec = a.direct.load_user(&id("cap")).await.unwrap();
    assert_eq!(rec.state.sends.len(), 2);
    // Every one of the 50 events was recorded once: under its idempotency key when it
    // did more than move the presence track, otherwise (a routine fix: at one instant,
    // most are kilometres from the track and refused) in the profile's memory of the
    // user's last 32 events, where the newest are.
    let items = partition(&a, "cap").await;
    let mut missing = Vec::new();
    let mut routine = 0;
    for (i, v) in answers.iter().enumerate() {
        let r = &v["results"][0];
        assert_eq!(r["status"], "accepted", "c{i}: {v}");
        let d = &r["decision"];
        let eventful = d["presence"].as_array().is_some_and(|p| !p.is_empty())
            || !d["store_id"].is_null()
            || !d["delivery_id"].is_null();
        let keyed = items.contains_key(&format!("USER#cap / EVENT#c{i}"));
        if eventful && !keyed {
            missing.push(i);
        }
        if !eventful {
            assert!(!keyed, "c{i}: a routine fix keeps no key");
            routine += 1;
        }
    }
    assert!(missing.is_empty(), "events not recorded: {missing:?}");
    assert!(routine > 0, "the case has routine fixes");
    assert_eq!(rec.state.recent.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_id_sent_ten_times_at_once_pushes_once() {
    aws!(a, one_event_id_sent_ten_times_at_once_pushes_once, 1, 10);
    let endpoint = onboard(&a, "dup").await;
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let engine = a.engine.clone();
            tokio::spawn(post_until_answered(engine, fix("dup", "same-id", 0)))
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for t in tasks {
        let v = t.await.unwrap();
        let (status, verdict) = result(&v);
        // A duplicate answers with the original decision.
        assert_eq!(verdict, "sent", "{v}");
        *statuses.entry(status.to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        BTreeMap::from([("accepted".to_string(), 1), ("duplicate".to_string(), 9)])
    );
    assert_eq!(messages_to(&endpoint).len(), 1);
    assert_eq!(a.direct.deliveries().await.unwrap().len(), 1);
    // A later retry too.
    let (_, _, v) = post(&a, fix("dup", "same-id", 0)).await;
    assert_eq!(result(&v), ("duplicate", "sent"));
    assert_eq!(messages_to(&endpoint).len(), 1);
}

// ---------------------------------------------------------------- faults

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_down_gives_a_503_writes_nothing_and_a_retry_completes() {
    aws!(
        a,
        dynamodb_down_gives_a_503_writes_nothing_and_a_retry_completes,
        1,
        5
    );
    let endpoint = onboard(&a, "dora").await;
    let before = table(&a).await;
    a.ddb.cut();
    let (s, h, v) = post(&a, fix("dora", "f1", 0)).await;
    assert_retryable(s, &h, &v);
    // Consent and erasure fail the same way.
    let (s, h, v) = call(&a.engine, "DELETE", "/v1/users/dora", None).await;
    assert_retryable(s, &h, &v);
    a.ddb.restore();
    assert_eq!(table(&a).await, before, "nothing written");
    assert!(messages_to(&endpoint).is_empty(), "nothing sent");

    retry_sends_once(&a, "dora", &endpoint, "accepted", "after the outage").await;
}

/// DynamoDB fails at each request of a sending fix in turn (load, commit, claim, final
/// status); the client retries and the outbox relay runs. Whatever the point of failure:
/// nothing is half-written, the retry answers with the decision, and exactly one push goes
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failure_at_each_request_of_the_send_path_never_half_writes_or_sends_twice() {
    aws!(
        a,
        a_failure_at_each_request_of_the_send_path_never_half_writes_or_sends_twice,
        1,
        5
    );
    // GetItem (user), TransactWriteItems (commit), TransactWriteItems (claim), UpdateItem
    // (final status), DeleteItem (the claim's marker).
    let path = 5;
    for k in 0..=path {
        let user = format!("k{k}");
        let endpoint = onboard(&a, &user).await;
        let before = partition(&a, &user).await;
        a.ddb.fail_after(k);
        let (s, h, v) = post(&a, fix(&user, "f1", 0)).await;
        a.ddb.restore();
        match k {
            // Before the commit: nothing written, nothing sent.
            0 | 1 => {
                assert_retryable(s, &h, &v);
                assert_eq!(partition(&a, &user).await, before, "k={k}");
                assert!(messages_to(&endpoint).is_empty(), "k={k}");
            }
            // Committed, never claimed: nothing sent yet; the relay will.
            2 => {
                assert_retryable(s, &h, &v);
                assert!(messages_to(&endpoint).is_empty(), "k={k}");
            }
            // After the claim: the push went out, the status write (3) or the marker's
            // removal (4) failed.
            3 | 4 => {
                assert_retryable(s, &h, &v);
                assert_eq!(messages_to(&endpoint).len(), 1, "k={k}");
            }
            _ => assert_eq!(s, StatusCode::OK, "k={k}: {v}"),
        }
        let expected = if k < 2 { "accepted" } else { "duplicate" };
        let (s, _, v) = post(&a, fix(&user, "f1", 0)).await;
        assert_eq!(s, StatusCode::OK, "k={k}: {v}");
        assert_eq!(result(&v), (expected, "sent"), "k={k}");
        for _ in 0..2 {
            a.engine
                .relay_pending(chrono::Duration::zero(), 100)
                .await
                .unwrap();
        }
        assert_eq!(messages_to(&endpoint).len(), 1, "k={k}: one push");
        // A sender that never wrote its final status left its claim: settled (once the
        // lease is over; zero here) as unconfirmed, never sent again.
        let settled = a
            .engine
            .settle_stale_claims(chrono::Duration::zero())
            .await
            .unwrap();
        assert_eq!(settled, usize::from(k == 3), "k={k}: claims settled");
        assert_eq!(messages_to(&endpoint).len(), 1, "k={k}: still one push");
        let items = partition(&a, &user).await;
        let deliveries: Vec<_> = items
            .iter()
            .filter(|(k, _)| k.contains("/ DELIVERY#"))
            .collect();
        assert_eq!(deliveries.len(), 1, "k={k}: one delivery");
        let want = if k == 3 { "unconfirmed" } else { "sent" };
        assert!(
            deliveries[0].1["status"].contains(want),
            "k={k}: {:?}",
            deliveries[0].1
        );
        assert_eq!(
            a.direct
                .load_user(&id(&user))
                .await
                .unwrap()
                .state
                .sends
                .len(),
            1,
            "k={k}: one cap reservation"
        );
    }
    assert!(
        a.direct
            .pending_deliveries(noon() + chrono::Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing left for the relay"
    );
    assert!(
        !table(&a).await.keys().any(|k| k.starts_with("PENDING#")),
        "no delivery marker left"
    );
}

/// `user` onboarded and a fix of theirs committed with a push, then every later request
/// failed: the delivery waits, unclaimed, with its marker. Answers its id.
async fn committed_unclaimed(a: &Aws, user: &str) -> String {
    onboard(a, user).await;
    a.ddb.fail_after(2);
    let (s, h, v) = post(a, fix(user, "f1", 0)).await;
    a.ddb.restore();
    assert_retryable(s, &h, &v);
    let pending = a
        .direct
        .pending_deliveries(noon() + chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "committed, unclaimed");
    pending[0].delivery_id.clone()
}

/// A sender that claims a push and dies before it publishes (a Lambda timeout, a crash):
/// its delivery is not left `sending` for ever. Within the lease nothing touches it (a
/// live sender may still be at work); after it the claim is settled as `unconfirmed`,
/// the cap stays spent, and the push is never sent: at most once, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_sender_died_is_settled_once_and_never_sent() {
    aws!(
        a,
        a_claim_whose_sender_died_is_settled_once_and_never_sent,
        1,
        5
    );
    let user = "vanished";
    let endpoint = onboard(&a, user).await;
    // The commit is applied, then every later request fails: the engine claimed nothing.
    a.ddb.fail_after(2);
    let (s, h, v) = post(&a, fix(user, "f1", 0)).await;
    a.ddb.restore();
    assert_retryable(s, &h, &v);
    let pending = a
        .direct
        .pending_deliveries(noon() + chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "committed, unclaimed");
    // A sender claims it and dies before it publishes.
    let uid = id(user);
    let delivery = pending[0].delivery_id.clone();
    assert!(
        a.direct
            .claim_delivery(&uid, &delivery, "dead-sender")
            .await
            .unwrap()
    );
    // The relay does not take a claimed push; a claim younger than the lease stays.
    assert_eq!(
        a.engine
            .relay_pending(chrono::Duration::zero(), 100)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        a.engine
            .settle_stale_claims(nearcast_core::engine::CLAIM_LEASE)
            .await
            .unwrap(),
        0,
        "a live sender is never overtaken"
    );
    let status = |items: &BTreeMap<String, BTreeMap<String, String>>| {
        items
            .iter()
            .find(|(k, _)| k.contains("/ DELIVERY#"))
            .map(|(_, i)| i["status"].clone())
            .unwrap()
    };
    assert!(status(&partition(&a, user).await).contains("sending"));
    // After the lease: settled, once.
    let lease_over = chrono::Duration::zero();
    assert_eq!(a.engine.settle_stale_claims(lease_over).await.unwrap(), 1);
    assert_eq!(a.engine.settle_stale_claims(lease_over).await.unwrap(), 0);
    assert!(status(&partition(&a, user).await).contains("unconfirmed"));
    // Never sent, never sent later, and the cap stays spent.
    for _ in 0..2 {
        a.engine
            .relay_pending(chrono::Duration::zero(), 100)
            .await
            .unwrap();
    }
    assert!(messages_to(&endpoint).is_empty(), "never pushed");
    let state = a.direct.load_user(&uid).await.unwrap().state;
    assert_eq!(state.sends.len(), 1, "the cap stays spent");
    assert!(
        !table(&a).await.keys().any(|k| k.starts_with("PENDING#")),
        "no marker left"
    );
    // The dead sender's own claim cannot finish it any more.
    assert!(
        !a.direct
            .finish_delivery(&uid, &delivery, DeliveryStatus::Sent)
            .await
            .unwrap()
    );
}

/// Finishing a claimed delivery tells "already finished" (its condition failed) from a
/// failed request: an UpdateItem refused for another reason (here the table is gone) is an
/// error the sender retries, never taken for a finish someone else made (the delivery would
/// stay `sending` until the lease settles it as unconfirmed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finish_refused_for_another_reason_than_its_condition_is_an_error() {
    aws!(
        a,
        a_finish_refused_for_another_reason_than_its_condition_is_an_error,
        1,
        5
    );
    let user = "fin";
    let delivery = committed_unclaimed(&a, user).await;
    let uid = id(user);
    assert!(
        a.direct
            .claim_delivery(&uid, &delivery, "me")
            .await
            .unwrap()
    );
    let gone = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
    a.ddb
        .fault("UpdateItem", 1, Fault::Answer(400, gone.into()));
    let proxied = a.engine.store().clone();
    let err = proxied
        .finish_delivery(&uid, &delivery, DeliveryStatus::Sent)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("UpdateItem"), "{err}");
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    // The retry moves it, but the marker's delete is refused: an error too, not "done".
    a.ddb
        .fault("DeleteItem", 1, Fault::Answer(400, gone.into()));
    let err = proxied
        .finish_delivery(&uid, &delivery, DeliveryStatus::Sent)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DeleteItem"), "{err}");
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert!(
        table(&a).await.keys().any(|k| k.starts_with("PENDING#")),
        "the marker is still there"
    );
    // The caller's retry finds it finished and removes the marker.
    assert!(
        !proxied
            .finish_delivery(&uid, &delivery, DeliveryStatus::Sent)
            .await
            .unwrap()
    );
    assert!(!table(&a).await.keys().any(|k| k.starts_with("PENDING#")));
    let status = partition(&a, user)
        .await
        .into_iter()
        .find(|(k, _)| k.contains("/ DELIVERY#"))
        .map(|(_, i)| i["status"].clone())
        .unwrap();
    assert!(status.contains("sent"), "{status}");
}

/// Settling a stale claim tells "its sender finished meanwhile" (the UpdateItem's condition
/// failed: nothing to settle, no error) from a failed request (any other refusal: an error,
/// the marker kept for the next pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_a_claim_tells_a_finished_sender_from_a_failed_request() {
    aws!(
        a,
        settling_a_claim_tells_a_finished_sender_from_a_failed_request,
        1,
        5
    );
    let user = "stl";
    let delivery = committed_unclaimed(&a, user).await;
    let uid = id(user);
    assert!(
        a.direct
            .claim_delivery(&uid, &delivery, "gone")
            .await
            .unwrap()
    );
    let lease_over = chrono::Duration::zero();
    let gone = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
    a.ddb
        .fault("UpdateItem", 1, Fault::Answer(400, gone.into()));
    let err = a.engine.settle_stale_claims(lease_over).await.unwrap_err();
    assert!(err.to_string().contains("UpdateItem"), "{err}");
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert!(
        table(&a).await.keys().any(|k| k.starts_with("PENDING#")),
        "the marker stays for the next pass"
    );
    // The sender finished between the read and the update: the condition fails.
    let finished = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed"}"#;
    a.ddb
        .fault("UpdateItem", 1, Fault::Answer(400, finished.into()));
    assert_eq!(a.engine.settle_stale_claims(lease_over).await.unwrap(), 0);
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
}

/// A resent event whose transaction DynamoDB cancels on its idempotency key answers with the
/// first result from the key's item that the cancellation returns (one request, no read
/// after it). moto returns no item with a cancellation, so the test proxy answers as
/// DynamoDB does, with the key's item, and the result it carries is the one answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_is_answered_from_the_item_its_cancellation_returns() {
    use nearcast_core::ports::{Commit, CommitOutcome, EventResult};
    aws!(
        a,
        a_duplicate_is_answered_from_the_item_its_cancellation_returns,
        1,
        5
    );
    let store = a.engine.store().clone();
    let first = EventResult {
        kind: "consent".into(),
        decision: None,
    };
    let mut c = Commit::new(id("dup"), 0);
    c.events = vec![(id("d1"), first.clone())];
    assert_eq!(store.commit(&c).await.unwrap(), CommitOutcome::Applied);
    // What DynamoDB answers a resend: the Put's condition failed, with the item as it is.
    let stored = serde_json::to_string(&EventResult {
        kind: "from-the-item".into(),
        decision: None,
    })
    .unwrap();
    let cancelled = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "message": "Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed]",
        "CancellationReasons": [{
            "Code": "ConditionalCheckFailed",
            "Message": "The conditional request failed",
            "Item": {"pk": {"S": "USER#dup"}, "sk": {"S": "EVENT#d1"}, "result": {"S": stored}}
        }]
    });
    a.ddb.fault(
        "TransactWriteItems",
        1,
        Fault::Answer(400, cancelled.to_string()),
    );
    a.ddb.reset_counts();
    let mut again = c.clone();
    again.events.push((id("d2"), first.clone()));
    match store.commit(&again).await.unwrap() {
        CommitOutcome::Duplicates(d) => {
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!(d[0].0, id("d1"));
            assert_eq!(d[0].1.kind, "from-the-item", "answered from the item");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    let counts = a.ddb.counts();
    assert_eq!(counts.get("GetItem"), None, "no read after it: {counts:?}");
}

/// A delivery marker left behind by a delivery that finished (its delete failed, or a late
/// write put it back) is not relayed: the relay sends only deliveries still `pending`, and
/// removes the stale marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marker_left_by_a_finished_delivery_is_not_relayed_and_is_removed() {
    use nearcast_aws::aws_sdk_dynamodb::types::AttributeValue;
    aws!(
        a,
        a_marker_left_by_a_finished_delivery_is_not_relayed_and_is_removed,
        1,
        5
    );
    let user = "left";
    let endpoint = onboard(&a, user).await;
    // Committed, then every later request fails: the delivery waits, with its marker.
    a.ddb.fail_after(2);
    let (s, h, v) = post(&a, fix(user, "f1", 0)).await;
    a.ddb.restore();
    assert_retryable(s, &h, &v);
    let (marker_key, marker) = table(&a)
        .await
        .into_iter()
        .find(|(k, _)| k.starts_with("PENDING#"))
        .expect("the marker");
    // The relay sends it; the marker goes.
    a.engine
        .relay_pending(chrono::Duration::zero(), 100)
        .await
        .unwrap();
    assert_eq!(messages_to(&endpoint).len(), 1, "sent");
    assert!(!table(&a).await.contains_key(&marker_key));
    // The marker, back as the commit wrote it (unclaimed): a delete that failed, or a
    // late write.
    let (pk, sk) = marker_key.split_once(" / ").unwrap();
    let num = |v: &str| {
        v.trim_start_matches("N(\"")
            .trim_end_matches("\")")
            .to_string()
    };
    let user_attr = marker["user"]
        .trim_start_matches("S(\"")
        .trim_end_matches("\")")
        .to_string();
    nearcast_aws::moto::shared()
        .dynamodb(None)
        .await
        .put_item()
        .table_name(a.direct.table())
        .item("pk", AttributeValue::S(pk.into()))
        .item("sk", AttributeValue::S(sk.into()))
        .item("user", AttributeValue::S(user_attr))
        .item("at", AttributeValue::N(num(&marker["at"])))
        .send()
        .await
        .unwrap();
    let pending = a
        .direct
        .pending_deliveries(noon() + chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert!(pending.is_empty(), "{pending:?}");
    assert!(
        !table(&a).await.contains_key(&marker_key),
        "the stale marker is removed"
    );
    a.engine
        .relay_pending(chrono::Duration::zero(), 100)
        .await
        .unwrap();
    assert_eq!(messages_to(&endpoint).len(), 1, "never sent twice");
}

/// Invariant 4 on the wire: at each request of the send path, the request reaches moto and
/// is applied, then its answer is lost (the connection closes with no reply). The SDK's
/// retries, the engine's, the client's and the relay's together push exactly once, and
/// nothing is left pending or half-claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_lost_after_each_write_of_the_send_path_still_pushes_exactly_once() {
    aws!(
        a,
        an_answer_lost_after_each_write_of_the_send_path_still_pushes_exactly_once,
        1,
        5
    );
    // The requests of a fix that sends, in order (`requests_per_path`).
    let path = [
        ("ddb", "GetItem", 1),
        ("ddb", "TransactWriteItems", 1),
        ("ddb", "TransactWriteItems", 2),
        ("sns", "Publish", 1),
        ("ddb", "UpdateItem", 1),
        ("ddb", "DeleteItem", 1),
    ];
    for (k, (service, op, nth)) in path.into_iter().enumerate() {
        let user = format!("lost{k}");
        let endpoint = onboard(&a, &user).await;
        let proxy = if service == "ddb" { &a.ddb } else { &a.sns };
        proxy.fault(op, nth, Fault::LoseAnswer);
        let v = post_until_answered(a.engine.clone(), fix(&user, "f1", 0)).await;
        let case = format!("{op} #{nth}");
        assert_eq!(proxy.faults_left(), 0, "{case}: the fault fired");
        assert_eq!(result(&v).1, "sent", "{case}: {v}");
        for _ in 0..2 {
            a.engine
                .relay_pending(chrono::Duration::zero(), 100)
                .await
                .unwrap();
        }
        assert_eq!(messages_to(&endpoint).len(), 1, "{case}: exactly one push");
        let items = partition(&a, &user).await;
        let deliveries: Vec<_> = items
            .iter()
            .filter(|(k, _)| k.contains("/ DELIVERY#"))
            .collect();
        assert_eq!(deliveries.len(), 1, "{case}: one delivery");
        let status = &deliveries[0].1["status"];
        // A Publish whose answer was lost may or may not have been delivered: unconfirmed.
        let want = if op == "Publish" {
            "unconfirmed"
        } else {
            "sent"
        };
        assert!(status.contains(want), "{case}: delivery {status}");
        let state = a.direct.load_user(&id(&user)).await.unwrap().state;
        assert_eq!(state.sends.len(), 1, "{case}: one cap reservation");
    }
    assert!(
        a.direct
            .pending_deliveries(noon() + chrono::Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing left for the relay"
    );
}

/// DynamoDB cancels a transaction that meets another on the same item with the reason
/// `TransactionConflict` (nothing was written). The engine takes it as a conflict: it
/// re-reads and decides again, and the event is answered, not failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_conflict_on_the_commit_is_decided_again() {
    aws!(
        a,
        a_transaction_conflict_on_the_commit_is_decided_again,
        1,
        5
    );
    let endpoint = onboard(&a, "tc").await;
    let cancelled = json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons [None, TransactionConflict]",
        "CancellationReasons": [
            {"Code": "None"},
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
        ]
    });
    a.ddb.fault(
        "TransactWriteItems",
        1,
        Fault::Answer(400, cancelled.to_string()),
    );
    let (s, _, v) = post(&a, fix("tc", "f1", 0)).await;
    assert_eq!(a.ddb.faults_left(), 0, "the conflict was answered");
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(result(&v), ("accepted", "sent"));
    assert_eq!(messages_to(&endpoint).len(), 1, "one push");
    let state = a.direct.load_user(&id("tc")).await.unwrap().state;
    assert_eq!(state.sends.len(), 1, "one cap reservation");
}

/// SNS cut mid-connection: the Publish may have reached SNS, so it is never sent again,
/// the delivery is `unconfirmed` and its cap stays spent (under-sending rather than
/// over-sending). A refused connection, which SNS never saw, releases the cap instead
/// (`sns.rs::sdk_connection_refused_is_retryable`, `invariants.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sns_cut_marks_the_push_unconfirmed_keeps_the_cap_and_never_resends() {
    aws!(
        a,
        sns_cut_marks_the_push_unconfirmed_keeps_the_cap_and_never_resends,
        2,
        1
    );
    let endpoint = onboard(&a, "sia").await;
    a.sns.cut();
    let (s, _, v) = post(&a, fix("sia", "f1", 0)).await;
    a.sns.restore();
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(result(&v), ("accepted", "sent"));
    assert!(messages_to(&endpoint).is_empty());
    let d = a.direct.deliveries().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].status, DeliveryStatus::Unconfirmed);
    let rec = a.direct.load_user(&id("sia")).await.unwrap();
    assert_eq!(rec.state.sends.len(), 1, "cap reservation kept");
    assert!(
        !rec.state.push.unwrap().disabled,
        "a network failure does not disable the endpoint"
    );
    a.engine
        .relay_pending(chrono::Duration::zero(), 100)
        .await
        .unwrap();
    assert!(
        messages_to(&endpoint).is_empty(),
        "the relay does not resend"
    );

    // A retry of the same event is a duplicate: never a second push for it.
    let (_, _, v) = post(&a, fix("sia", "f1", 0)).await;
    assert_eq!(result(&v).0, "duplicate");
    assert!(messages_to(&endpoint).is_empty());
    // The cap (1 a day) stays spent: the next store's offer is capped.
    let (_, _, v) = post(&a, fix("sia", "f2", 1)).await;
    assert_eq!(result(&v), ("accepted", "suppressed"));
    assert!(messages_to(&endpoint).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sns_down_during_erasure_erases_nothing_until_retried() {
    aws!(
        a,
        sns_down_during_erasure_erases_nothing_until_retried,
        1,
        5
    );
    let endpoint = onboard(&a, "eve").await;
    let before = table(&a).await;
    a.sns.cut();
    let (s, h, v) = call(&a.engine, "DELETE", "/v1/users/eve", None).await;
    a.sns.restore();
    assert_retryable(s, &h, &v);
    assert_eq!(table(&a).await, before, "nothing erased yet");
    let (s, _, v) = call(&a.engine, "DELETE", "/v1/users/eve", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(partition(&a, "eve").await.is_empty());
    assert!(
        a.sns_direct
            .get_endpoint_attributes()
            .endpoint_arn(&endpoint)
            .send()
            .await
            .is_err()
    );
}

// ---------------------------------------------------------------- request counts

/// The DynamoDB and SNS requests of each path, as docs/aws.md lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_path() {
    aws!(a, requests_per_path, 1, 5);
    let counts = |p: &Proxy| {
        let c = p.counts();
        p.reset_counts();
        c
    };
    let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    a.ddb.reset_counts();
    a.sns.reset_counts();
    // Onboarding: one batch (load + commit), then the endpoint saved (load + commit).
    onboard(&a, "rc").await;
    assert_eq!(
        counts(&a.ddb),
        m(&[("GetItem", 2), ("PutItem", 1), ("TransactWriteItems", 1)])
    );
    assert_eq!(counts(&a.sns), m(&[("CreatePlatformEndpoint", 1)]));

    // A routine fix (no fence entered or left, no candidate): 2 round trips, the commit
    // a PutItem of the profile alone.
    let (_, _, v) = post(&a, far_fix("rc", "n1")).await;
    assert_eq!(result(&v).0, "accepted");
    assert_eq!(counts(&a.ddb), m(&[("GetItem", 1), ("PutItem", 1)]));
    assert!(counts(&a.sns).is_empty());

    // A batch of 10 such fixes, each newer than every event before: still 2.
    let events: Vec<Value> = (0..10)
        .map(|i| {
            let at = (noon() + chrono::Duration::seconds(i64::from(i) + 1)).to_rfc3339();
            json!({"event_id": format!("b{i}"), "type": "location", "at": at,
            "lat": 60.25, "lon": 25.10 + 0.001 * f64::from(i), "accuracy_m": 8})
        })
        .collect();
    let (s, _, _) = post(&a, json!({"user_id": "rc", "events": events})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(counts(&a.ddb), m(&[("GetItem", 1), ("PutItem", 1)]));

    // A retried (duplicate) event among the user's last 32: 2. The profile remembers it;
    // its key is looked up for its first answer (a routine fix has none), and nothing is
    // written.
    let (_, _, v) = post(&a, far_fix("rc", "n1")).await;
    assert_eq!(result(&v).0, "duplicate");
    assert_eq!(counts(&a.ddb), m(&[("GetItem", 2)]));

    // Retried events the profile no longer remembers (the onboarding's four, after 32
    // newer fixes): stamped before the newest accepted event, each is looked up by its
    // key, which answers it. 1 GetItem for the profile and 1 per event; nothing written.
    let later: Vec<Value> = (0..32)
        .map(|i| {
            let at = (noon() + chrono::Duration::seconds(20 + i)).to_rfc3339();
            json!({"event_id": format!("r{i}"), "type": "location", "at": at,
            "lat": 60.25, "lon": 25.10, "accuracy_m": 8})
        })
        .collect();
    let (s, _, _) = post(&a, json!({"user_id": "rc", "events": later})).await;
    assert_eq!(s, StatusCode::OK);
    counts(&a.ddb);
    let (s, _, v) = post(&a, onboarding("rc")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "duplicate"),
        "{v}"
    );
    assert_eq!(counts(&a.ddb), m(&[("GetItem", 5)]));

    // A fix that sends: 5 (load, commit, claim, final status, the claim's marker gone),
    // and one Publish. Ten
    // minutes after the far fixes: at their instant, 15 km away, the speed gate refuses it.
    let mut s1 = fix("rc", "s1", 0);
    s1["events"][0]["at"] = json!((noon() + chrono::Duration::minutes(10)).to_rfc3339());
    let (_, _, v) = post(&a, s1).await;
    assert_eq!(result(&v), ("accepted", "sent"));
    assert_eq!(
        counts(&a.ddb),
        m(&[
            ("DeleteItem", 1),
            ("GetItem", 1),
            ("TransactWriteItems", 2),
            ("UpdateItem", 1)
        ])
    );
    assert_eq!(counts(&a.sns), m(&[("Publish", 1)]));

    // No claim left behind: settling finds nothing, in one Query per marker partition.
    let settled = a
        .engine
        .settle_stale_claims(chrono::Duration::zero())
        .await
        .unwrap();
    assert_eq!(settled, 0);
    assert_eq!(counts(&a.ddb), m(&[("Query", 8)]));

    // The outbox relay with nothing to do: one Query per pending-marker partition.
    a.ddb.reset_counts();
    let sent = a
        .engine
        .relay_pending(chrono::Duration::zero(), 100)
        .await
        .unwrap();
    assert_eq!(sent, 0);
    assert_eq!(counts(&a.ddb), m(&[("Query", 8)]));
    a.ddb.reset_counts();

    // Erasure: load, marker, Query of the user's partition and of their two webhook
    // partitions, BatchWriteItem, marker gone; DeleteEndpoint at SNS.
    let (s, _, _) = call(&a.engine, "DELETE", "/v1/users/rc", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        counts(&a.ddb),
        m(&[
            ("BatchWriteItem", 1),
            ("DeleteItem", 1),
            ("GetItem", 1),
            ("PutItem", 1),
            ("Query", 3)
        ])
    );
    assert_eq!(counts(&a.sns), m(&[("DeleteEndpoint", 1)]));
}

/// An erasure on DynamoDB is a Query and batched deletes, not one transaction. Cut after
/// the first batch of deletes: the caller gets a 503, the marker stays, and the relay's
/// schedule completes it with nothing left, marker included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_cut_halfway_is_completed_by_the_relay() {
    aws!(a, an_erasure_cut_halfway_is_completed_by_the_relay, 1, 5);
    let user = "half";
    onboard(&a, user).await;
    // More items than one batch of 25 deletes: events that keep their idempotency keys
    // (a routine fix keeps none).
    let events: Vec<Value> = (0..30)
        .map(|i| {
            json!({"event_id": format!("h{i}"), "type": "consent", "at": noon().to_rfc3339(),
            "purpose": "location", "granted": true})
        })
        .collect();
    let (s, _, v) = post(&a, json!({"user_id": user, "events": events})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(partition(&a, user).await.len() > 25);
    // load, marker, Query, first BatchWriteItem; then the connection is cut.
    a.ddb.fail_after(4);
    let (s, h, v) = call(&a.engine, "DELETE", &format!("/v1/users/{user}"), None).await;
    a.ddb.restore();
    assert_retryable(s, &h, &v);
    let left = partition(&a, user).await;
    assert!(!left.is_empty(), "stopped halfway");
    assert!(
        left.keys().any(|k| k.ends_with("/ PROFILE")),
        "the profile goes last"
    );
    let marker = table(&a).await[&format!("ERASURE / {user}")].clone();
    // The marker expires with the logs, should nothing ever complete it.
    let ttl: i64 = marker["ttl"]
        .trim_start_matches("N(\"")
        .trim_end_matches("\")")
        .parse()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(
        (ttl - now - nearcast_aws::LOG_TTL_SECS).abs() < 600,
        "{ttl} against {now}"
    );
    // The engine's clock stands at the test's noon, DynamoDB stamps the marker with the
    // wall clock: a grace reaching back past both takes it.
    let any_age = -chrono::Duration::days(3650);
    assert_eq!(a.engine.resume_erasures(any_age).await.unwrap(), 1);
    assert!(partition(&a, user).await.is_empty());
    let after = table(&a).await;
    assert!(
        !after.keys().any(|k| k.contains(user)),
        "{:?}",
        after.keys()
    );
    assert_eq!(a.engine.resume_erasures(any_age).await.unwrap(), 0);
}

/// An erasure's writes that DynamoDB leaves unprocessed (it throttles; moto never does) are
/// written again with backoff, at most 8 times: left unprocessed 8 times, the ninth write
/// takes them; 9 times, the erasure fails as retryable, having deleted nothing, and its
/// marker stays until the relay completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_writes_again_what_dynamodb_left_unprocessed_up_to_eight_times() {
    aws!(
        a,
        an_erasure_writes_again_what_dynamodb_left_unprocessed_up_to_eight_times,
        1,
        5
    );
    for (user, throttled) in [("thr-8", 8), ("thr-9", 9)] {
        onboard(&a, user).await;
        let before = partition(&a, user).await.len();
        assert!(before > 1, "a profile and its events' keys");
        a.ddb.reset_counts();
        for _ in 0..throttled {
            a.ddb.fault("BatchWriteItem", 1, Fault::Unprocessed);
        }
        let (s, h, v) = call(&a.engine, "DELETE", &format!("/v1/users/{user}"), None).await;
        assert_eq!(a.ddb.faults_left(), 0, "every unprocessed answer given");
        let writes = a.ddb.counts().get("BatchWriteItem").copied();
        let marker = format!("ERASURE / {user}");
        if throttled == 8 {
            assert_eq!(s, StatusCode::OK, "{v}");
            assert_eq!(writes, Some(9), "written 8 times again");
            assert!(partition(&a, user).await.is_empty());
            assert!(!table(&a).await.contains_key(&marker));
        } else {
            assert_retryable(s, &h, &v);
            assert_eq!(
                writes,
                Some(9),
                "the first write and 8 again, then it gives up"
            );
            assert_eq!(partition(&a, user).await.len(), before, "nothing deleted");
            assert!(table(&a).await.contains_key(&marker), "the marker stays");
            let any_age = -chrono::Duration::days(3650);
            assert_eq!(a.engine.resume_erasures(any_age).await.unwrap(), 1);
            assert!(partition(&a, user).await.is_empty());
            assert!(!table(&a).await.contains_key(&marker));
        }
    }
}

/// A campaign's results on DynamoDB are one Query of its cells' partition per answer (the
/// days' roll-ups, or the cells for a breakdown by store), never a Scan of the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn campaign_results_are_one_query_of_the_cells() {
    aws!(a, campaign_results_are_one_query_of_the_cells, 3, 5);
    let campaign = json!({"id": "c1", "name": "Coffee week", "status": "active", "holdout": 0.2});
    let (s, _, v) = call(&a.engine, "PUT", "/v1/admin/campaigns/c1", Some(campaign)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    for i in 0..6 {
        let user = format!("res-{i}");
        onboard(&a, &user).await;
        let (s, _, v) = post(&a, fix(&user, &format!("{user}-f"), i % 3)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    for by in ["day", "store", "variant"] {
        let before = a.ddb.counts();
        let (s, _, v) = call(
            &a.engine,
            "GET",
            &format!("/v1/admin/campaigns/c1/results?by={by}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let f = &v["results"]["funnel"];
        assert_eq!(
            f["sent"].as_u64().unwrap() + f["held_out"].as_u64().unwrap(),
            6,
            "{v}"
        );
        let after = a.ddb.counts();
        let used: BTreeMap<_, _> = after
            .iter()
            .filter_map(|(op, n)| {
                let d = n - before.get(op).copied().unwrap_or(0);
                (d > 0).then(|| (op.clone(), d))
            })
            .collect();
        // One Query of the cells' partition; the campaign comes from the catalog.
        assert_eq!(used, BTreeMap::from([("Query".to_string(), 1)]), "by {by}");
    }
    // By store over ranges with ragged ends (the events are on 2026-11-20): whole months
    // in one Query, and each end's days (read as days, or as their month less the days
    // outside) in at most one more; the same answer as the whole campaign's.
    let (_, _, whole) = call(
        &a.engine,
        "GET",
        "/v1/admin/campaigns/c1/results?by=store",
        None,
    )
    .await;
    assert_eq!(
        whole["results"]["rows"].as_array().map(Vec::len),
        Some(3),
        "a row per store: {whole}"
    );
    for range in [
        "from=2026-10-20&to=2026-11-25",
        "from=2026-10-05&to=2026-11-21",
        "from=2026-11-10&to=2026-11-22",
        "from=2026-09-17&to=2026-12-03",
        "to=2026-11-25",
        "from=2026-10-20",
        "from=2026-11-01&to=2026-11-30",
    ] {
        let before = a.ddb.counts();
        let (s, _, v) = call(
            &a.engine,
            "GET",
            &format!("/v1/admin/campaigns/c1/results?by=store&{range}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let after = a.ddb.counts();
        let used: BTreeMap<_, _> = after
            .iter()
            .filter_map(|(op, n)| {
                let d = n - before.get(op).copied().unwrap_or(0);
                (d > 0).then(|| (op.clone(), d))
            })
            .collect();
        assert_eq!(
            used.keys().collect::<Vec<_>>(),
            ["Query"],
            "{range}: {used:?}"
        );
        assert!(used["Query"] <= 3, "{range}: {used:?}");
        assert_eq!(
            v["results"]["funnel"], whole["results"]["funnel"],
            "{range}"
        );
        assert_eq!(v["results"]["rows"], whole["results"]["rows"], "{range}");
    }
    // A ragged range that misses the day of the events: nothing, in as few Queries.
    let before = a.ddb.counts().get("Query").copied().unwrap_or(0);
    let (s, _, v) = call(
        &a.engine,
        "GET",
        "/v1/admin/campaigns/c1/results?by=store&from=2026-11-21&to=2027-01-12",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(a.ddb.counts()["Query"] - before <= 3);
    assert_eq!(v["results"]["funnel"]["sent"], 0, "{v}");
    assert_eq!(v["results"]["funnel"]["held_out"], 0, "{v}");
}

/// A routine fix (no fence entered or left, no candidate) keeps no idempotency key on
/// DynamoDB: the profile, written by the same commit anyway, remembers the ids of the
/// person's last 32 events, and that alone answers their resends. An eventful fix keeps
/// its key, and its resend answers with its first decision however late it comes. A
/// routine fix resent after 32 newer events is decided again as the late fix it is then:
/// here (behind the track within its lifetime) it moves nothing and sends nothing. (One
/// older than the track's lifetime is judged alone, as any fix that late:
/// `disorder.rs` covers every order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routine_fixes_keep_no_key_and_their_resends_are_still_duplicates() {
    aws!(
        a,
        routine_fixes_keep_no_key_and_their_resends_are_still_duplicates,
        1,
        5
    );
    let endpoint = onboard(&a, "rr").await;
    let keys = |items: &BTreeMap<String, BTreeMap<String, String>>| -> Vec<String> {
        items
            .keys()
            .filter_map(|k| k.split(" / EVENT#").nth(1).map(str::to_string))
            .collect()
    };

    // An eventful fix: an enter, a push, and a key.
    let (_, _, v) = post(&a, fix("rr", "e1", 0)).await;
    assert_eq!(result(&v), ("accepted", "sent"), "{v}");
    assert!(keys(&partition(&a, "rr").await).contains(&"e1".to_string()));

    // A routine one: still inside, 20 s later.
    let at = |s: i64| (noon() + chrono::Duration::seconds(s)).to_rfc3339();
    let (lat, lon) = store_point(0);
    let inside = |event: &str, s: i64| {
        json!({"user_id": "rr", "events": [{"event_id": event, "type": "location",
            "at": at(s), "lat": lat, "lon": lon, "accuracy_m": 8}]})
    };
    let (_, _, v) = post(&a, inside("n1", 20)).await;
    assert_eq!(result(&v), ("accepted", "none"), "{v}");
    assert!(
        !keys(&partition(&a, "rr").await).contains(&"n1".to_string()),
        "a routine fix keeps no key"
    );
    let before = a.direct.load_user(&id("rr")).await.unwrap();
    assert!(
        before.state.recent.contains(&id("n1")),
        "the profile remembers it"
    );
    let (_, _, v) = post(&a, inside("n1", 20)).await;
    assert_eq!(v["results"][0]["status"], "duplicate", "{v}");
    assert!(v["results"][0]["decision"].is_null(), "{v}");
    assert_eq!(
        a.direct.load_user(&id("rr")).await.unwrap().version,
        before.version,
        "a resend writes nothing"
    );

    // 40 fixes later, both have left the profile's memory.
    for i in 0..40 {
        let (s, _, v) = post(&a, inside(&format!("later{i}"), 30 + 10 * i)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    }
    let after = a.direct.load_user(&id("rr")).await.unwrap();
    assert!(!after.state.recent.contains(&id("e1")));
    assert!(!after.state.recent.contains(&id("n1")));
    assert_eq!(after.state.recent.len(), 32);

    // The eventful fix still answers from its key, with its first decision.
    let (_, _, v) = post(&a, fix("rr", "e1", 0)).await;
    assert_eq!(result(&v), ("duplicate", "sent"), "{v}");
    // The routine one is decided again: late behind the track, here it moves nothing.
    let (_, _, v) = post(&a, inside("n1", 20)).await;
    assert_eq!(v["results"][0]["status"], "accepted", "{v}");
    assert!(
        v["results"][0]["decision"]["presence"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{v}"
    );
    let last = a.direct.load_user(&id("rr")).await.unwrap();
    assert_eq!(last.state.fences, after.state.fences, "no fence moved");
    assert_eq!(last.state.track, after.state.track, "the track stayed");
    assert_eq!(last.state.sends, after.state.sends, "no send");
    assert_eq!(messages_to(&endpoint).len(), 1, "one push in all");
}

/// A routine commit is one conditional PutItem of the profile. When DynamoDB applies it
/// and the answer is lost, the SDK's retry finds the version moved: the engine reads the
/// profile again, finds the fix remembered and answers it as a duplicate. Written once,
/// never lost, never twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_routine_commit_whose_answer_is_lost_is_answered_once() {
    aws!(
        a,
        a_routine_commit_whose_answer_is_lost_is_answered_once,
        1,
        5
    );
    onboard(&a, "lr").await;
    let before = a.direct.load_user(&id("lr")).await.unwrap();
    a.ddb.fault("PutItem", 1, Fault::LoseAnswer);
    let v = post_until_answered(a.engine.clone(), far_fix("lr", "n1")).await;
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    let status = v["results"][0]["status"].as_str().unwrap_or("?");
    assert!(matches!(status, "accepted" | "duplicate"), "{v}");
    let after = a.direct.load_user(&id("lr")).await.unwrap();
    assert_eq!(after.version, before.version + 1, "applied exactly once");
    assert!(after.state.recent.contains(&id("n1")));
    let (_, _, v) = post(&a, far_fix("lr", "n1")).await;
    assert_eq!(v["results"][0]["status"], "duplicate", "{v}");
}

/// A webhook receiver that records what reaches it and fails as told.
struct Hook {
    got: std::sync::Mutex<u32>,
    fail: bool,
}

impl nearcast_core::webhook::WebhookSender for Hook {
    fn post<'a>(
        &'a self,
        _: &'a nearcast_core::webhook::WebhookRequest,
    ) -> nearcast_core::ports::BoxFuture<'a, Result<(), String>> {
        *self.got.lock().unwrap() += 1;
        let res = if self.fail {
            Err("HTTP 503".to_string())
        } else {
            Ok(())
        };
        Box::pin(std::future::ready(res))
    }
}

/// Webhooks on, and `user` onboarded and inside store 0: one message in the outbox.
async fn one_webhook_message(a: &Aws, user: &str) {
    a.engine.set_webhooks(true);
    onboard(a, user).await;
    let (s, _, v) = post(a, fix(user, &format!("{user}-f1"), 0)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A relay over `a`'s store (through the DynamoDB proxy) posting to `hook`, its clock at `at`.
fn hook_relay(
    a: &Aws,
    hook: &Arc<Hook>,
    at: chrono::DateTime<chrono::Utc>,
) -> nearcast_core::webhook::WebhookRelay {
    hook_relay_with(a, hook, at, nearcast_core::webhook::RetryPolicy::DEFAULT)
}

fn hook_relay_with(
    a: &Aws,
    hook: &Arc<Hook>,
    at: chrono::DateTime<chrono::Utc>,
    policy: nearcast_core::webhook::RetryPolicy,
) -> nearcast_core::webhook::WebhookRelay {
    use nearcast_core::webhook::{WebhookRelay, WebhookSecret};
    WebhookRelay::new(
        a.engine.store().clone(),
        hook.clone(),
        vec![WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
        policy,
        Arc::new(ManualClock::new(at)),
    )
}

/// A webhook attempt on DynamoDB tells a lost race (its condition failed: another relay
/// took the message, or it was erased) from a failed request: the lease's or the retry's
/// UpdateItem refused for any other reason (here the table is gone) is an error of the
/// relay's pass, never taken for "someone else has it" (the message would wait, unposted
/// and unreported, until its lease ran out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_refused_for_another_reason_than_their_condition_are_errors() {
    aws!(
        a,
        webhook_requests_refused_for_another_reason_than_their_condition_are_errors,
        1,
        5
    );
    one_webhook_message(&a, "wh").await;
    let relay = |fail: bool, at: chrono::DateTime<chrono::Utc>| {
        let hook = Arc::new(Hook {
            got: std::sync::Mutex::new(0),
            fail,
        });
        (hook_relay(&a, &hook, at), hook)
    };
    let gone = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
    // The lease.
    let soon = noon() + chrono::Duration::minutes(1);
    let (r, hook) = relay(false, soon);
    a.ddb
        .fault("UpdateItem", 1, Fault::Answer(400, gone.into()));
    assert!(r.run_once(10).await.is_err(), "a refused lease is an error");
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert_eq!(
        *hook.got.lock().unwrap(),
        0,
        "nothing posted without a lease"
    );
    // The retry of a failed attempt: leased (UpdateItem 1), posted and refused, its next
    // attempt written (UpdateItem 2, refused here).
    let (r, hook) = relay(true, soon);
    a.ddb
        .fault("UpdateItem", 2, Fault::Answer(400, gone.into()));
    assert!(r.run_once(10).await.is_err(), "a refused retry is an error");
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert_eq!(*hook.got.lock().unwrap(), 1, "posted once");
    // With DynamoDB answering again, once the lease has run out, the message is there
    // to deliver, once.
    let (r, hook) = relay(false, noon() + chrono::Duration::hours(2));
    let report = r.run_once(10).await.unwrap();
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(*hook.got.lock().unwrap(), 1);
    assert_eq!(r.run_once(10).await.unwrap().delivered, 0);
}

/// A webhook lease whose answer is lost (DynamoDB applied it, the connection dropped): the
/// SDK's retry finds the attempt counted and fails its condition, so the relay takes the
/// message for another relay's and posts nothing; once the lease has run out the next pass
/// posts it, once. At least once, and never twice while a lease holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_lease_whose_answer_is_lost_posts_the_message_once_after_the_lease() {
    aws!(
        a,
        a_webhook_lease_whose_answer_is_lost_posts_the_message_once_after_the_lease,
        1,
        5
    );
    one_webhook_message(&a, "wl").await;
    let hook = Arc::new(Hook {
        got: std::sync::Mutex::new(0),
        fail: false,
    });
    let relay_at = |at: chrono::DateTime<chrono::Utc>| hook_relay(&a, &hook, at);
    a.ddb.fault("UpdateItem", 1, Fault::LoseAnswer);
    let report = relay_at(noon() + chrono::Duration::minutes(1))
        .run_once(10)
        .await
        .unwrap();
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert_eq!((report.delivered, report.skipped), (0, 1), "{report:?}");
    assert_eq!(*hook.got.lock().unwrap(), 0, "nothing posted");
    let later = relay_at(noon() + chrono::Duration::hours(2));
    assert_eq!(later.run_once(10).await.unwrap().delivered, 1);
    assert_eq!(*hook.got.lock().unwrap(), 1, "posted once");
    assert_eq!(later.run_once(10).await.unwrap().delivered, 0);
}

/// A dead-letter move and a redrive whose answers are lost (DynamoDB applied the move, the
/// connection dropped, the SDK retried): the message is dead exactly once, then back in the
/// outbox exactly once with its attempts reset, and posted once. Each move is one
/// transaction (delete on condition, put) carrying a ClientRequestToken, so DynamoDB applies
/// a retried move once and answers it as applied; moto ignores the token and fails the
/// retry's condition, which the store takes as "moved by someone else": either way nothing
/// is copied twice or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_moves_whose_answers_are_lost_are_applied_once() {
    aws!(
        a,
        webhook_moves_whose_answers_are_lost_are_applied_once,
        1,
        5
    );
    one_webhook_message(&a, "wm").await;
    let store = a.engine.store().clone();
    let once = nearcast_core::webhook::RetryPolicy {
        max_attempts: 1,
        ..nearcast_core::webhook::RetryPolicy::DEFAULT
    };
    let failing = Arc::new(Hook {
        got: std::sync::Mutex::new(0),
        fail: true,
    });
    let soon = noon() + chrono::Duration::minutes(1);
    a.ddb.fault("TransactWriteItems", 1, Fault::LoseAnswer);
    let report = hook_relay_with(&a, &failing, soon, once)
        .run_once(10)
        .await
        .unwrap();
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    assert_eq!(report.dead, 1, "{report:?}");
    assert_eq!(*failing.got.lock().unwrap(), 1);
    let far = noon() + chrono::Duration::days(2);
    let dead = store.dead_webhooks(10).await.unwrap();
    assert_eq!(dead.len(), 1, "dead once: {dead:?}");
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 503"));
    assert!(store.due_webhooks(far, 10).await.unwrap().is_empty());

    a.ddb.fault("TransactWriteItems", 1, Fault::LoseAnswer);
    let back = store.redrive_webhooks(soon).await.unwrap();
    assert_eq!(a.ddb.faults_left(), 0, "the fault fired");
    // 1 on DynamoDB (the token), 0 on moto (the retry found the move made).
    assert!(back <= 1, "{back}");
    assert!(store.dead_webhooks(10).await.unwrap().is_empty());
    let due = store.due_webhooks(far, 10).await.unwrap();
    assert_eq!(due.len(), 1, "back once: {due:?}");
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].message.id, dead[0].message.id, "the same dedupe id");

    let hook = Arc::new(Hook {
        got: std::sync::Mutex::new(0),
        fail: false,
    });
    let relay = hook_relay(&a, &hook, soon + chrono::Duration::minutes(1));
    assert_eq!(relay.run_once(10).await.unwrap().delivered, 1);
    assert_eq!(relay.run_once(10).await.unwrap().delivered, 0);
    assert_eq!(*hook.got.lock().unwrap(), 1, "posted once");
}

/// Creating the table waits while DynamoDB describes it as CREATING (moto makes a table
/// ACTIVE at once, so only the test proxy shows the wait), then turns on its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_the_table_waits_until_dynamodb_describes_it_active() {
    let moto = moto();
    let proxy = Proxy::start(&moto_url()).await;
    let table = unique("creating");
    let creating = json!({"Table": {"TableName": table, "TableStatus": "CREATING"}}).to_string();
    for _ in 0..2 {
        proxy.fault("DescribeTable", 1, Fault::Answer(200, creating.clone()));
    }
    DynamoStateStore::create_table(&moto.dynamodb(Some(&proxy.url)).await, &table)
        .await
        .expect("created, once active");
    assert_eq!(proxy.faults_left(), 0, "described as creating twice");
    let counts = proxy.counts();
    assert_eq!(counts.get("DescribeTable"), Some(&3), "{counts:?}");
    assert_eq!(counts.get("UpdateTimeToLive"), Some(&1), "{counts:?}");
}

/// DynamoDB's answer to a BatchGetItem of `codes` that read none of them and left every
/// key unprocessed (what DynamoDB does under throttling; moto never does).
fn all_unprocessed(table: &str, codes: &[&str]) -> String {
    let keys: Vec<Value> = codes
        .iter()
        .map(|c| json!({"pk": {"S": format!("COUPON#{c}")}, "sk": {"S": "CODE"}}))
        .collect();
    json!({
        "Responses": {table: []},
        "UnprocessedKeys": {table: {"Keys": keys, "ProjectionExpression": "pk", "ConsistentRead": true}},
    })
    .to_string()
}

/// Coupon pools on DynamoDB: each campaign's free codes in its own partition (a pool never
/// gives out another campaign's code), an upload in transactions of 48 codes (each code and
/// its free marker, with the count, the audit entry and the version bump in the last), and
/// the existence check's keys that DynamoDB leaves unprocessed read again with backoff, up
/// to 8 times, then an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_coupon_pools_are_their_campaigns_own_and_uploads_retry_unprocessed_keys() {
    use nearcast_core::audit::{Actor, AuditEntry};
    use nearcast_core::coupon::Upload;
    let moto = moto();
    let proxy = Proxy::start(&moto_url()).await;
    let table = unique("coupon-pools");
    DynamoStateStore::create_table(&moto.dynamodb(None).await, &table)
        .await
        .expect("create table");
    let store = DynamoStateStore::new(moto.dynamodb(Some(&proxy.url)).await, &table);
    let audit = |k: i64| {
        AuditEntry::new(
            noon() + chrono::Duration::seconds(k),
            &Actor::system("test"),
            "coupons.upload",
        )
    };
    let (a, b) = (id("camp-a"), id("camp-b"));
    // b's codes sort before a's: were the pools one partition, a's would answer b's first.
    let a_codes: Vec<String> = (0..100).map(|i| format!("Z-A-{i:03}")).collect();
    let b_codes: Vec<String> = (0..3).map(|i| format!("A-B-{i}")).collect();
    proxy.reset_counts();
    assert_eq!(
        store
            .add_coupons(&a, &a_codes, Some(&audit(1)))
            .await
            .unwrap(),
        Upload::Added(100)
    );
    let counts = proxy.counts();
    assert_eq!(counts.get("BatchGetItem"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("TransactWriteItems"),
        Some(&3),
        "100 codes in transactions of 48: {counts:?}"
    );
    assert_eq!(
        store
            .add_coupons(&b, &b_codes, Some(&audit(2)))
            .await
            .unwrap(),
        Upload::Added(3)
    );
    let free_a = store.free_coupons(&a, 1000).await.unwrap();
    assert_eq!(free_a.len(), 100);
    assert!(free_a.iter().all(|c| c.starts_with("Z-A-")), "{free_a:?}");
    let free_b = store.free_coupons(&b, 1000).await.unwrap();
    assert_eq!(free_b, b_codes);
    assert_eq!(store.coupon_counts(&a).await.unwrap().total, 100);
    assert_eq!(store.coupon_counts(&b).await.unwrap().total, 3);

    // Every key left unprocessed once: read again, and the existing code is found.
    let again = ["Z-A-000", "NEW-1"];
    proxy.fault(
        "BatchGetItem",
        1,
        Fault::Answer(200, all_unprocessed(&table, &again)),
    );
    let codes: Vec<String> = again.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        store
            .add_coupons(&a, &codes, Some(&audit(3)))
            .await
            .unwrap(),
        Upload::Existing(vec!["Z-A-000".into()])
    );
    assert_eq!(proxy.faults_left(), 0);
    // Unprocessed 8 times: the ninth read answers. Unprocessed 9 times: an error, and
    // nothing written.
    for _ in 0..8 {
        proxy.fault(
            "BatchGetItem",
            1,
            Fault::Answer(200, all_unprocessed(&table, &again)),
        );
    }
    assert_eq!(
        store
            .add_coupons(&a, &codes, Some(&audit(4)))
            .await
            .unwrap(),
        Upload::Existing(vec!["Z-A-000".into()])
    );
    assert_eq!(proxy.faults_left(), 0);
    let fresh = ["NEW-2"];
    for _ in 0..9 {
        proxy.fault(
            "BatchGetItem",
            1,
            Fault::Answer(200, all_unprocessed(&table, &fresh)),
        );
    }
    let err = store
        .add_coupons(&a, &["NEW-2".to_string()], Some(&audit(5)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unprocessed"), "{err}");
    assert_eq!(proxy.faults_left(), 0);
    assert_eq!(store.coupon_counts(&a).await.unwrap().total, 100);
}

/// A redemption whose transaction DynamoDB cancels (another redemption or an erasure won
/// the race between its read and its write) reads the code again and answers from what it
/// finds; a transaction refused for any other reason is an error at once, not retried as if
/// it had lost a race, and writes nothing. moto never cancels a transaction between a read
/// and a write, so the test proxy answers for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redemption_reads_again_and_other_refusals_are_errors() {
    use nearcast_aws::aws_sdk_dynamodb::types::AttributeValue;
    use nearcast_core::coupon::{Redemption, Upload};
    let moto = moto();
    let proxy = Proxy::start(&moto_url()).await;
    let table = unique("coupon-redeem");
    let direct = moto.dynamodb(None).await;
    DynamoStateStore::create_table(&direct, &table)
        .await
        .expect("create table");
    let store = DynamoStateStore::new(moto.dynamodb(Some(&proxy.url)).await, &table);
    let camp = id("camp-r");
    let codes = vec!["R-1".to_string(), "R-2".to_string()];
    let upload = nearcast_core::audit::AuditEntry::new(
        noon(),
        &nearcast_core::audit::Actor::system("test"),
        "coupons.upload",
    );
    assert_eq!(
        store
            .add_coupons(&camp, &codes, Some(&upload))
            .await
            .unwrap(),
        Upload::Added(2)
    );
    // Issued, as a send's commit issues them (no link: sent to someone since erased).
    for c in &codes {
        direct
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S(format!("COUPON#{c}")))
            .key("sk", AttributeValue::S("CODE".into()))
            .update_expression("SET issued = :one, offer_id = :o")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":o", AttributeValue::S("o1".into()))
            .send()
            .await
            .expect("issue");
    }
    let at = noon() + chrono::Duration::hours(1);
    let redeemed = Redemption::Redeemed {
        campaign_id: camp.clone(),
        offer_id: Some(id("o1")),
        delivery_id: None,
        user_id: None,
    };
    let cancelled = r#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ConditionalCheckFailed, None]","CancellationReasons":[{"Code":"ConditionalCheckFailed","Message":"The conditional request failed"},{"Code":"None"}]}"#;
    proxy.fault(
        "TransactWriteItems",
        1,
        Fault::Answer(400, cancelled.into()),
    );
    proxy.reset_counts();
    assert_eq!(
        store
            .redeem_coupon("R-1", at, Some("order-1"))
            .await
            .unwrap(),
        redeemed,
        "cancelled once, read again, redeemed"
    );
    assert_eq!(proxy.faults_left(), 0, "the fault fired");
    assert_eq!(proxy.counts().get("TransactWriteItems"), Some(&2));

    let gone = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#;
    proxy.fault("TransactWriteItems", 1, Fault::Answer(400, gone.into()));
    proxy.reset_counts();
    let err = store.redeem_coupon("R-2", at, None).await.unwrap_err();
    assert!(err.to_string().contains("TransactWriteItems"), "{err}");
    assert_eq!(proxy.faults_left(), 0, "the fault fired");
    assert_eq!(
        proxy.counts().get("TransactWriteItems"),
        Some(&1),
        "not retried as a lost race"
    );
    let counts = store.coupon_counts(&camp).await.unwrap();
    assert_eq!(counts.redeemed, 1, "{counts:?}");
    // Nothing was written: the code is still there to redeem, once.
    assert_eq!(
        store.redeem_coupon("R-2", at, None).await.unwrap(),
        redeemed
    );
    assert!(matches!(
        store.redeem_coupon("R-2", at, None).await.unwrap(),
        Redemption::AlreadyRedeemed { .. }
    ));
    assert_eq!(store.coupon_counts(&camp).await.unwrap().redeemed, 2);
}
