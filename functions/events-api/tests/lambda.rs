//! The function in-process, without AWS: API Gateway HTTP API (v2) sample payloads from
//! `events/lambda/`, converted by lambda_http exactly as the runtime does, through the
//! shared router.

mod support;

use lambda_http::http::StatusCode;
use nearcast_functions::testing::{Fixture, engine, sample};
use serde_json::Value;

async fn invoke(f: &Fixture, payload: &str) -> (StatusCode, Value) {
    support::invoke(nearcast_api::router(f.engine.clone()), payload).await
}

#[tokio::test]
async fn a_batch_from_api_gateway_is_decided_event_by_event() {
    let f = engine().await;
    let (status, v) = invoke(&f, &sample("apigw-v2-post-events.json")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], "u-4711");
    let results = v["results"].as_array().expect("results");
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3", "e-4"]);
    assert!(results.iter().all(|r| r["status"] == "accepted"), "{v}");
    let fix = &results[3];
    assert_eq!(fix["type"], "location");
    assert_eq!(fix["decision"]["verdict"], "sent", "{v}");
    assert_eq!(fix["decision"]["store_id"], "s1");
    assert_eq!(fix["decision"]["offer_id"], "o1");
    assert_eq!(f.notifier.sent().len(), 1);

    // API Gateway retries (or a client resend) answer the first answer, without a second push.
    let (status, v) = invoke(&f, &sample("apigw-v2-post-events.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "duplicate")
    );
    assert_eq!(f.notifier.sent().len(), 1);
}

#[tokio::test]
async fn a_malformed_batch_gets_a_400_naming_the_field_and_changes_nothing() {
    let f = engine().await;
    let (status, v) = invoke(&f, &sample("apigw-v2-post-events-invalid.json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "invalid_events");
    assert_eq!(v["error"]["field"], "events[0].lat", "{v}");
    assert!(f.decisions().await.is_empty());

    // A body that is not JSON at all.
    let mut payload: Value = serde_json::from_str(&sample("apigw-v2-post-events.json")).unwrap();
    payload["body"] = Value::from("{\"user_id\": \"u-4711\", \"events\": [");
    let (status, v) = invoke(&f, &payload.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "body");

    // A base64-encoded body (API Gateway does this for binary content types) decodes first.
    let mut payload: Value = serde_json::from_str(&sample("apigw-v2-post-events.json")).unwrap();
    payload["body"] = Value::from("eyJ1c2VyX2lkIjogIiJ9");
    payload["isBase64Encoded"] = Value::from(true);
    let (status, v) = invoke(&f, &payload.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "user_id", "{v}");
}
