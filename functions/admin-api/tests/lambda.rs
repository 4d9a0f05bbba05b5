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

/// Records every catalog published to it (the version it held).
struct Published(std::sync::Mutex<Vec<Option<String>>>);

impl nearcast_core::engine::CatalogSink for Published {
    fn publish(
        &self,
        catalog: std::sync::Arc<nearcast_core::catalog::Catalog>,
    ) -> nearcast_core::ports::BoxFuture<'_, Result<(), String>> {
        self.0.lock().unwrap().push(catalog.version.clone());
        Box::pin(async { Ok(()) })
    }
}

/// admin-api's app publishes the catalog after each change it answers with success, holding
/// that change, before the answer goes out; never after a read, a refused change, a
/// simulation or a model route.
#[tokio::test]
async fn the_catalog_is_published_after_each_successful_change_and_only_then() {
    use axum::body::Body;
    use axum::http::Request;
    let f = engine().await;
    let sink = std::sync::Arc::new(Published(std::sync::Mutex::new(Vec::new())));
    f.engine.set_catalog_sink(sink.clone());
    let app = nearcast_admin_api::app(f.engine.clone(), nearcast_admin_api::AdminAuth::None);
    let call = |method: &str, path: &str, body: Option<Value>| {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        let app = app.clone();
        async move { app.oneshot(req).await.unwrap().status() }
    };
    let store = serde_json::json!({"id": "s2", "name": "Two", "category": "cafe",
        "time_zone": "Europe/Helsinki",
        "fence": {"type": "circle", "lat": 60.17, "lon": 24.95, "radius_m": 50}});
    let published = || sink.0.lock().unwrap().clone();

    assert_eq!(call("GET", "/v1/admin/stores", None).await, StatusCode::OK);
    assert_eq!(
        call("PUT", "/v1/admin/stores/s2", Some(store.clone())).await,
        StatusCode::OK
    );
    assert_eq!(published(), vec![f.engine.catalog().version.clone()]);
    assert!(published()[0].is_some(), "the change's own version");
    // A refused change (bad input: a radius out of range) publishes nothing.
    let mut bad = store.clone();
    bad["fence"]["radius_m"] = serde_json::json!(-5);
    assert_eq!(
        call("PUT", "/v1/admin/stores/s2", Some(bad)).await,
        StatusCode::BAD_REQUEST
    );
    let sim = serde_json::json!({"events": [{"type": "location", "at": "2026-11-20T10:00:00Z",
        "lat": 60.17, "lon": 24.95, "accuracy_m": 8}]});
    assert_eq!(
        call("POST", "/v1/admin/simulate", Some(sim)).await,
        StatusCode::OK
    );
    assert_eq!(published().len(), 1);
    assert_eq!(
        call("DELETE", "/v1/admin/stores/s2", None).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(published().len(), 2);
    assert_eq!(published()[1], f.engine.catalog().version);
}
