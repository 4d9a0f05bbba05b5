//! Shared by the in-process tests: one API Gateway v2 payload through a router, converted
//! by lambda_http exactly as the runtime does.

use http_body_util::BodyExt;
use lambda_http::http::StatusCode;
use serde_json::Value;
use tower::ServiceExt;

/// Sends `payload` (an API Gateway HTTP API v2 event) through `router`; (status, JSON body).
pub async fn invoke(router: axum::Router, payload: &str) -> (StatusCode, Value) {
    let request = lambda_http::request::from_str(payload).expect("an API Gateway v2 request");
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}
