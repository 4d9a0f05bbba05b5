//! The SNS notifier: the payload builder, the error classification and the retry policy
//! (pure, always run), the SDK's error handling against a scripted local HTTP server
//! (always run), and pushes through the real AWS SDK against moto's server (started by the
//! test process, see `nearcast_aws::moto`).

mod aws_support;

use nearcast_aws::sns::aws_sdk_sns;
use nearcast_aws::sns::{MAX_PAYLOAD_BYTES, RetryPolicy, SnsNotifier, build_message, classify};
use nearcast_core::decision::Push;
use nearcast_core::event::Platform;
use nearcast_core::ports::{Notifier, NotifyError};
use nearcast_tests::{id, noon};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------- fixtures

fn push(platform: Platform, token: &str) -> Push {
    Push {
        delivery_id: "d-u1-e1".into(),
        user_id: id("u1"),
        platform,
        token: token.into(),
        endpoint: None,
        offer_id: id("o1"),
        campaign_id: id("c1"),
        store_id: id("s1"),
        title: "Coffee".into(),
        body: "Half price \"today\"".into(),
        coupon: Some("HALF".into()),
        variant_id: None,
        locale: None,
        deep_link: None,
        image_url: None,
        priority: Default::default(),
        deferred: false,
        score: 0.75,
        model_version: "test".into(),
        at: noon(),
    }
}

/// Short delays, so retry tests take milliseconds.
fn fast() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_millis(2),
        max_delay: Duration::from_millis(10),
    }
}

/// The message's outer object and its platform payload (the string under `key`), parsed.
fn parse(message: &str, key: &str) -> (Value, Value) {
    let outer: Value = serde_json::from_str(message).expect("message is JSON");
    let inner = outer[key].as_str().expect("platform payload is a string");
    let inner: Value = serde_json::from_str(inner).expect("platform payload is JSON");
    (outer, inner)
}

/// A client that talks to `url` with test credentials and no SDK retries.
fn client_at(url: &str) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_sns::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sns::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .endpoint_url(url)
        .retry_config(aws_sdk_sns::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

// ---------------------------------------------------------------- payload

#[test]
fn apns_payload_has_alert_and_ids() {
    let p = push(Platform::Apns, "t");
    let message = build_message(&p, "APNS").unwrap();
    let (outer, inner) = parse(&message, "APNS");
    assert_eq!(outer["default"], "Half price \"today\"");
    assert!(outer.get("GCM").is_none(), "only the endpoint's platform");
    assert_eq!(inner["aps"]["alert"]["title"], "Coffee");
    assert_eq!(inner["aps"]["alert"]["body"], "Half price \"today\"");
    assert_eq!(inner["delivery_id"], "d-u1-e1");
    assert_eq!(inner["offer_id"], "o1");
}

#[test]
fn fcm_payload_has_notification_and_data() {
    let p = push(Platform::Fcm, "t");
    let message = build_message(&p, "GCM").unwrap();
    let (outer, inner) = parse(&message, "GCM");
    assert_eq!(outer["default"], "Half price \"today\"");
    assert!(outer.get("APNS").is_none(), "only the endpoint's platform");
    assert_eq!(inner["notification"]["title"], "Coffee");
    assert_eq!(inner["notification"]["body"], "Half price \"today\"");
    assert_eq!(inner["data"]["delivery_id"], "d-u1-e1");
    assert_eq!(inner["data"]["offer_id"], "o1");
    assert_eq!(inner["data"]["coupon"], "HALF");

    let mut p = p;
    p.coupon = None;
    let (_, inner) = parse(&build_message(&p, "GCM").unwrap(), "GCM");
    assert!(
        inner["data"].get("coupon").is_none(),
        "FCM data values are strings"
    );
}

#[test]
fn a_10kb_body_is_cut_to_4kb_keeping_ids_and_json() {
    for (key, body) in [
        ("APNS", "a".repeat(10 * 1024)),
        ("GCM", "a".repeat(10 * 1024)),
        // Multi-byte chars: cut on a char boundary.
        ("APNS", "kahvi ☕ ja pulla 🥐 ".repeat(500)),
        ("GCM", "äö€😀".repeat(1000)),
        // Quotes and backslashes double (and more) when escaped twice.
        ("APNS", "\"\\".repeat(5 * 1024)),
        ("GCM", "\n\"x\\".repeat(3000)),
    ] {
        let mut p = push(Platform::Apns, "t");
        p.body = body.clone();
        let message = build_message(&p, key).unwrap();
        assert!(
            message.len() <= MAX_PAYLOAD_BYTES,
            "{key}: {} bytes",
            message.len()
        );
        // Not cut away to nothing: the budget is used.
        assert!(
            message.len() > MAX_PAYLOAD_BYTES - 64,
            "{key}: {}",
            message.len()
        );
        let (outer, inner) = parse(&message, key);
        let sent = outer["default"].as_str().unwrap();
        let kept = sent
            .strip_suffix('…')
            .expect("cut body ends with an ellipsis");
        assert!(body.starts_with(kept), "{key}: a prefix of the body");
        let (ids, alert_body) = if key == "APNS" {
            (&inner, &inner["aps"]["alert"]["body"])
        } else {
            (&inner["data"], &inner["notification"]["body"])
        };
        assert_eq!(alert_body.as_str(), Some(sent));
        assert_eq!(ids["delivery_id"], "d-u1-e1");
        assert_eq!(ids["offer_id"], "o1");
    }
}

#[test]
fn a_huge_title_is_cut_too() {
    let mut p = push(Platform::Fcm, "t");
    p.title = "T".repeat(8 * 1024);
    p.body = "B".repeat(8 * 1024);
    let message = build_message(&p, "GCM").unwrap();
    assert!(message.len() <= MAX_PAYLOAD_BYTES);
    let (_, inner) = parse(&message, "GCM");
    assert!(
        inner["notification"]["title"]
            .as_str()
            .unwrap()
            .ends_with('…')
    );
    assert_eq!(inner["data"]["delivery_id"], "d-u1-e1");
    assert_eq!(inner["data"]["coupon"], "HALF");
}

#[test]
fn a_small_payload_is_not_cut() {
    let mut p = push(Platform::Apns, "t");
    p.body = "é".repeat(100);
    let (outer, _) = parse(&build_message(&p, "APNS").unwrap(), "APNS");
    assert_eq!(outer["default"].as_str(), Some(p.body.as_str()));
}

#[test]
fn platform_keys_follow_the_applications() {
    let client = client_at("http://127.0.0.1:1");
    let n = SnsNotifier::new(
        client.clone(),
        Some("arn:aws:sns:us-east-1:123456789012:app/APNS/nearcast".into()),
        Some("arn:aws:sns:us-east-1:123456789012:app/GCM/nearcast".into()),
    );
    assert_eq!(n.platform_key(Platform::Apns), "APNS");
    assert_eq!(n.platform_key(Platform::Fcm), "GCM");
    let n = SnsNotifier::new(
        client,
        Some("arn:aws:sns:us-east-1:123456789012:app/APNS_SANDBOX/nearcast".into()),
        None,
    );
    assert_eq!(n.platform_key(Platform::Apns), "APNS_SANDBOX");
}

// ---------------------------------------------------------------- classification

#[test]
fn errors_are_classified() {
    let retryable = |c: Option<&str>, s: Option<u16>| {
        matches!(classify("Publish", c, s), NotifyError::Retryable(_))
    };
    let permanent = |c: Option<&str>, s: Option<u16>| {
        matches!(classify("Publish", c, s), NotifyError::Permanent(_))
    };
    assert_eq!(
        classify("Publish", Some("EndpointDisabled"), Some(400)),
        NotifyError::EndpointDisabled
    );
    assert!(retryable(Some("Throttled"), Some(400)));
    assert!(retryable(Some("Throttling"), Some(400)));
    assert!(retryable(Some("KMSThrottling"), Some(400)));
    assert!(retryable(Some("InternalError"), Some(500)));
    assert!(retryable(None, Some(429)));
    assert!(retryable(None, Some(503)));
    assert!(retryable(Some("Whatever"), Some(502)));
    assert!(permanent(Some("InvalidParameter"), Some(400)));
    assert!(permanent(Some("ParameterValueInvalid"), Some(400)));
    assert!(permanent(Some("AuthorizationError"), Some(403)));
    assert!(permanent(Some("PlatformApplicationDisabled"), Some(400)));
    // The error text names the code, never a token or a body.
    assert_eq!(
        classify("Publish", Some("InvalidParameter"), Some(400)),
        NotifyError::Permanent("SNS Publish: InvalidParameter (HTTP 400)".into())
    );
}

// ---------------------------------------------------------------- retry policy

/// Runs the policy over a scripted sequence of outcomes; returns the result and attempts.
async fn scripted(script: Vec<Result<u32, NotifyError>>) -> (Result<u32, NotifyError>, u32) {
    let calls = AtomicU32::new(0);
    let result = fast()
        .run("d-test", "Publish", || {
            let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
            let outcome = script[n].clone();
            async move { outcome }
        })
        .await;
    (result, calls.load(Ordering::SeqCst))
}

fn throttled() -> NotifyError {
    classify("Publish", Some("Throttled"), Some(400))
}

#[tokio::test]
async fn throttled_twice_then_ok_succeeds_on_the_third_attempt() {
    let (result, attempts) = scripted(vec![Err(throttled()), Err(throttled()), Ok(7)]).await;
    assert_eq!(result, Ok(7));
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn throttled_three_times_is_retryable_after_three_attempts() {
    let (result, attempts) = scripted(vec![
        Err(throttled()),
        Err(throttled()),
        Err(throttled()),
        Ok(7),
    ])
    .await;
    assert!(
        matches!(result, Err(NotifyError::Retryable(_))),
        "{result:?}"
    );
    assert_eq!(attempts, 3);
}

#[tokio::test]
async fn disabled_and_permanent_are_not_retried() {
    let (result, attempts) = scripted(vec![Err(NotifyError::EndpointDisabled), Ok(1)]).await;
    assert_eq!(result, Err(NotifyError::EndpointDisabled));
    assert_eq!(attempts, 1);
    let invalid = classify("Publish", Some("InvalidParameter"), Some(400));
    let (result, attempts) = scripted(vec![Err(throttled()), Err(invalid.clone()), Ok(1)]).await;
    assert_eq!(result, Err(invalid));
    assert_eq!(attempts, 2);
}

#[test]
fn backoff_is_exponential_with_full_jitter_and_capped() {
    let p = RetryPolicy::default();
    assert_eq!(p.attempts, 3);
    assert_eq!(p.ceiling(1), p.base_delay);
    assert_eq!(p.ceiling(2), p.base_delay * 2);
    assert!(p.ceiling(2) <= Duration::from_millis(100), "tens of ms");
    assert_eq!(p.ceiling(30), p.max_delay);
    let delays: Vec<Duration> = (0..200).map(|_| p.delay(2)).collect();
    assert!(delays.iter().all(|d| *d <= p.ceiling(2)));
    assert!(
        delays.iter().any(|d| *d < p.ceiling(2) / 2),
        "jitter spans the range"
    );
}

// ---------------------------------------------------------------- scripted SNS server

/// A local HTTP server answering each request with the next scripted (status, body), and
/// counting requests. Tests how the real SDK's errors are classified.
async fn scripted_server(responses: Vec<(u16, String)>) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = responses.get(n).cloned().unwrap_or((500, String::new()));
            tokio::spawn(async move {
                // Read the head, then the body by Content-Length.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let Ok(k) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, count)
}

fn sns_error(code: &str) -> String {
    format!(
        "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type>\
         <Code>{code}</Code><Message>scripted</Message></Error><RequestId>r1</RequestId></ErrorResponse>"
    )
}

fn published(message_id: &str) -> String {
    format!(
        "<PublishResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><PublishResult>\
         <MessageId>{message_id}</MessageId></PublishResult><ResponseMetadata><RequestId>r1</RequestId>\
         </ResponseMetadata></PublishResponse>"
    )
}

fn with_endpoint(mut p: Push) -> Push {
    p.endpoint = Some("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/nearcast/x".into());
    p
}

async fn scripted_send(responses: Vec<(u16, String)>) -> (Result<String, NotifyError>, usize) {
    let (url, count) = scripted_server(responses).await;
    let notifier = SnsNotifier::new(client_at(&url), None, None).with_retry(fast());
    let result = notifier
        .publish(&with_endpoint(push(Platform::Fcm, "t")))
        .await;
    (result, count.load(Ordering::SeqCst))
}

#[tokio::test]
async fn sdk_throttling_twice_then_ok_is_sent() {
    let (result, requests) = scripted_send(vec![
        (400, sns_error("Throttling")),
        (400, sns_error("KMSThrottling")),
        (200, published("m-1")),
    ])
    .await;
    assert_eq!(result, Ok("m-1".into()));
    assert_eq!(requests, 3);
}

#[tokio::test]
async fn sdk_429_three_times_is_retryable() {
    let (result, requests) = scripted_send(vec![
        (429, String::new()),
        (429, String::new()),
        (400, sns_error("Throttling")),
        (200, published("m-1")),
    ])
    .await;
    assert!(
        matches!(result, Err(NotifyError::Retryable(_))),
        "{result:?}"
    );
    assert_eq!(requests, 3);
}

/// A 5xx after Publish is ambiguous (SNS may have accepted the message): it is reported
/// as unconfirmed to the engine, which keeps the cap spent and never sends it again, and
/// it is never re-published here, so one delivery can never reach the device twice.
#[tokio::test]
async fn sdk_5xx_on_publish_is_unconfirmed_and_not_republished() {
    for (status, body) in [(503, String::new()), (500, sns_error("InternalError"))] {
        let (result, requests) = scripted_send(vec![(status, body), (200, published("m-1"))]).await;
        assert!(
            matches!(result, Err(NotifyError::Unconfirmed(_))),
            "{result:?}"
        );
        assert_eq!(requests, 1, "HTTP {status}");
    }
}

#[tokio::test]
async fn sdk_endpoint_disabled_and_invalid_parameter_are_final() {
    let (result, requests) = scripted_send(vec![
        (400, sns_error("EndpointDisabled")),
        (200, published("m-1")),
    ])
    .await;
    assert_eq!(result, Err(NotifyError::EndpointDisabled));
    assert_eq!(requests, 1);
    let (result, requests) = scripted_send(vec![
        (400, sns_error("InvalidParameter")),
        (200, published("m-1")),
    ])
    .await;
    assert_eq!(
        result,
        Err(NotifyError::Permanent(
            "SNS Publish: InvalidParameter (HTTP 400)".into()
        ))
    );
    assert_eq!(requests, 1);
}

/// The clients the functions use ([`SnsNotifier::from_sdk_config`]) have the SDK's own
/// retries off: an ambiguous 5xx on Publish is one request, never a second push.
#[tokio::test]
async fn the_production_client_never_retries_an_ambiguous_publish() {
    let (url, count) = scripted_server(vec![(503, String::new()), (200, published("m-1"))]).await;
    let conf = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sns::config::SharedCredentialsProvider::new(
            aws_sdk_sns::config::Credentials::new("test", "test", None, None, "test"),
        ))
        .endpoint_url(&url)
        .build();
    let notifier = SnsNotifier::from_sdk_config(&conf, None, None).with_retry(fast());
    let result = notifier
        .send(&with_endpoint(push(Platform::Fcm, "t")))
        .await;
    assert!(
        matches!(result, Err(NotifyError::Unconfirmed(_))),
        "{result:?}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "one request, never retried"
    );
}

/// A refused connection never reached SNS: retried, and in the end retryable (the engine
/// releases the cap), never unconfirmed.
#[tokio::test]
async fn sdk_connection_refused_is_retryable() {
    // A port nobody listens on: a dispatch failure on every attempt.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let notifier = SnsNotifier::new(client_at(&format!("http://127.0.0.1:{port}")), None, None)
        .with_retry(fast());
    let result = notifier
        .send(&with_endpoint(push(Platform::Fcm, "t")))
        .await;
    assert!(
        matches!(result, Err(NotifyError::Retryable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn missing_application_or_token_is_permanent_without_a_request() {
    let (url, count) = scripted_server(vec![]).await;
    let notifier = SnsNotifier::new(client_at(&url), None, None).with_retry(fast());
    let r = notifier.send(&push(Platform::Apns, "tok")).await;
    assert!(matches!(r, Err(NotifyError::Permanent(_))), "{r:?}");
    let notifier = SnsNotifier::new(
        client_at(&url),
        None,
        Some("arn:aws:sns:us-east-1:123456789012:app/GCM/x".into()),
    );
    let r = notifier.send(&push(Platform::Fcm, "")).await;
    assert!(matches!(r, Err(NotifyError::Permanent(_))), "{r:?}");
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------- moto

/// A notifier with APNs and FCM platform applications on moto.
async fn on_moto(case: &str) -> SnsNotifier {
    let client = aws_support::moto().sns(None).await;
    let (apns, fcm) = aws_support::platform_applications(&client, case).await;
    SnsNotifier::new(client, apns, fcm).with_retry(fast())
}

macro_rules! moto {
    ($name:ident, $case:ident) => {
        let $name = on_moto(stringify!($case)).await;
    };
}

/// The messages moto recorded for `endpoint`, by MessageId.
fn moto_messages(endpoint: &str) -> serde_json::Map<String, Value> {
    aws_support::moto_data()["sns"]["PlatformEndpoint"]
        .as_array()
        .expect("moto lists platform endpoints")
        .iter()
        .find(|e| e["arn"] == endpoint)
        .and_then(|e| e["messages"].as_object())
        .cloned()
        .expect("endpoint with messages in data.json")
}

#[tokio::test]
async fn fcm_push_without_endpoint_is_published_with_its_payload() {
    moto!(
        notifier,
        fcm_push_without_endpoint_is_published_with_its_payload
    );
    let p = push(Platform::Fcm, "fcm-token-1");
    let message_id = notifier.publish(&p).await.expect("published");
    assert!(!message_id.is_empty());
    // The same token gives the same endpoint (SNS's CreatePlatformEndpoint is idempotent).
    let endpoint = notifier
        .ensure_endpoint(Platform::Fcm, "fcm-token-1")
        .await
        .unwrap();
    assert_eq!(
        notifier
            .ensure_endpoint(Platform::Fcm, "fcm-token-1")
            .await
            .unwrap(),
        endpoint
    );
    let messages = moto_messages(&endpoint);
    let message = messages[&message_id].as_str().expect("message recorded");
    let (outer, inner) = parse(message, "GCM");
    assert_eq!(outer["default"], p.body);
    assert_eq!(inner["notification"]["title"], "Coffee");
    assert_eq!(inner["data"]["delivery_id"], "d-u1-e1");
    assert_eq!(inner["data"]["coupon"], "HALF");
}

#[tokio::test]
async fn apns_push_to_a_known_endpoint_is_published() {
    moto!(notifier, apns_push_to_a_known_endpoint_is_published);
    let endpoint = notifier
        .ensure_endpoint(Platform::Apns, "apns-token-1")
        .await
        .unwrap();
    let mut p = push(Platform::Apns, "");
    p.endpoint = Some(endpoint.clone());
    p.body = "x".repeat(10 * 1024);
    let message_id = notifier.publish(&p).await.expect("published");
    let messages = moto_messages(&endpoint);
    let message = messages[&message_id].as_str().expect("message recorded");
    assert!(message.len() <= MAX_PAYLOAD_BYTES);
    let (_, inner) = parse(message, "APNS");
    assert_eq!(inner["aps"]["alert"]["title"], "Coffee");
    assert_eq!(inner["delivery_id"], "d-u1-e1");
    assert_eq!(inner["offer_id"], "o1");
    // Through the port as well.
    notifier.send(&p).await.expect("sent");
    assert_eq!(moto_messages(&endpoint).len(), 2);
}

#[tokio::test]
async fn a_disabled_endpoint_is_reported_disabled() {
    moto!(notifier, a_disabled_endpoint_is_reported_disabled);
    let endpoint = notifier
        .ensure_endpoint(Platform::Fcm, "fcm-token-disabled")
        .await
        .unwrap();
    notifier
        .sns()
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .expect("disable endpoint");
    let mut p = push(Platform::Fcm, "fcm-token-disabled");
    p.endpoint = Some(endpoint);
    assert_eq!(notifier.send(&p).await, Err(NotifyError::EndpointDisabled));
}

#[tokio::test]
async fn a_deleted_endpoint_is_reported_disabled() {
    moto!(notifier, a_deleted_endpoint_is_reported_disabled);
    let endpoint = notifier
        .ensure_endpoint(Platform::Fcm, "fcm-token-deleted")
        .await
        .unwrap();
    notifier
        .sns()
        .delete_endpoint()
        .endpoint_arn(&endpoint)
        .send()
        .await
        .expect("delete endpoint");
    let mut p = push(Platform::Fcm, "fcm-token-deleted");
    p.endpoint = Some(endpoint);
    assert_eq!(notifier.send(&p).await, Err(NotifyError::EndpointDisabled));
}

#[tokio::test]
async fn an_unknown_platform_application_is_permanent() {
    moto!(notifier, an_unknown_platform_application_is_permanent);
    let wrong = SnsNotifier::new(
        notifier.sns().clone(),
        None,
        Some("arn:aws:sns:us-east-1:123456789012:app/GCM/does-not-exist".into()),
    )
    .with_retry(fast());
    let r = wrong.send(&push(Platform::Fcm, "fcm-token-2")).await;
    assert!(matches!(r, Err(NotifyError::Permanent(_))), "{r:?}");
}

/// The engine on SNS: a registered token gets its platform endpoint at once, a push is
/// published to it, and erasing the user deletes the endpoint at SNS.
#[tokio::test]
async fn the_engine_registers_publishes_and_erases_the_endpoint() {
    moto!(
        notifier,
        the_engine_registers_publishes_and_erases_the_endpoint
    );
    use nearcast_core::engine::Engine;
    use nearcast_core::memory::InMemoryStateStore;
    use nearcast_core::ports::StateStore;
    use nearcast_tests::{catalog, fix_at, id, model, noon, onboarding, policy, weather};
    let sns = notifier.sns().clone();
    let store = Arc::new(InMemoryStateStore::new());
    let engine = Engine::new(
        store.clone(),
        Arc::new(notifier),
        Arc::new(weather()),
        Arc::new(nearcast_core::ports::ManualClock::new(noon())),
        model(),
    )
    .await
    .unwrap();
    let (stores, offers) = catalog(1);
    engine.load_config(stores, offers, policy(5)).await.unwrap();
    for e in onboarding("sam", noon()) {
        engine.process(&e).await.unwrap();
    }
    let endpoint = store
        .load_user(&id("sam"))
        .await
        .unwrap()
        .state
        .push
        .unwrap()
        .endpoint;
    let endpoint = endpoint.expect("the endpoint is saved at registration");
    let r = engine
        .process(&fix_at("sam", "f1", 0, noon()))
        .await
        .unwrap();
    assert_eq!(
        r.decision.unwrap().verdict,
        nearcast_core::decision::Verdict::Sent
    );
    assert_eq!(moto_messages(&endpoint).len(), 1);
    engine.erase(&id("sam")).await.unwrap();
    let gone = sns
        .get_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .send()
        .await;
    assert!(gone.is_err(), "the endpoint was deleted at SNS");
    assert!(
        store
            .load_user(&id("sam"))
            .await
            .unwrap()
            .state
            .push
            .is_none()
    );
}

/// A variant's priority reaches each platform the way it reads it: APNs through SNS's
/// `AWS.SNS.MOBILE.APNS.PRIORITY` attribute (the `apns-priority` header: 10 or 5), FCM in
/// its payload (`high` or `normal`). Seen on the wire by a proxy in front of moto.
#[tokio::test]
async fn priority_reaches_apns_as_the_header_attribute_and_fcm_in_the_payload() {
    use nearcast_core::campaign::Priority;
    let proxy = aws_support::Proxy::start(&aws_support::moto_url()).await;
    let client = client_at(&proxy.url);
    let case = "priority_reaches_apns_as_the_header_attribute";
    let (apns, fcm) = aws_support::platform_applications(&client, case).await;
    let notifier = SnsNotifier::new(client, apns, fcm).with_retry(fast());
    let form = |body: &str| -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    };
    let attribute = |params: &[(String, String)]| -> Option<String> {
        let name = params
            .iter()
            .find(|(_, v)| v == "AWS.SNS.MOBILE.APNS.PRIORITY")?;
        let prefix = name.0.trim_end_matches(".Name");
        params
            .iter()
            .find(|(k, _)| *k == format!("{prefix}.Value.StringValue"))
            .map(|(_, v)| v.clone())
    };
    for (priority, apns_header, fcm_value) in [
        (Priority::High, "10", "high"),
        (Priority::Normal, "5", "normal"),
    ] {
        for platform in [Platform::Apns, Platform::Fcm] {
            proxy.reset_counts();
            let mut p = push(platform, &format!("token-{platform:?}-{priority:?}"));
            p.priority = priority;
            notifier.publish(&p).await.expect("published");
            let bodies = proxy.bodies("Publish");
            assert_eq!(bodies.len(), 1);
            let params = form(&bodies[0]);
            let message = &params.iter().find(|(k, _)| k == "Message").unwrap().1;
            match platform {
                Platform::Apns => {
                    assert_eq!(attribute(&params).as_deref(), Some(apns_header));
                    let (_, inner) = parse(message, "APNS");
                    assert!(inner.get("priority").is_none(), "{inner}");
                }
                Platform::Fcm => {
                    assert_eq!(attribute(&params), None, "FCM takes no APNs header");
                    let (_, inner) = parse(message, "GCM");
                    assert_eq!(inner["priority"], fcm_value);
                }
            }
        }
    }
}
