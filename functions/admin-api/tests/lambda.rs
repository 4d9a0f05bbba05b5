//! The function in-process, without AWS: an API Gateway HTTP API (v2) sample payload from
//! `events/lambda/`, converted by lambda_http exactly as the runtime does, through the
//! shared router.

use http_body_util::BodyExt;
use lambda_http::http::StatusCode;
use nearcast_functions::testing::{engine, sample};
use serde_json::Value;
use tower::ServiceExt;

#[tokio::test]
async fn admin_routes_answer_through_api_gateway() {
    let f = engine().await;
    let request = lambda_http::request::from_str(&sample("apigw-v2-admin-list-stores.json"))
        .expect("an API Gateway v2 request");
    assert_eq!(request.uri().path(), "/v1/admin/stores");
    let response = nearcast_api::router(f.engine.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let ids: Vec<&str> = v["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s1"]);
}
