//! The OpenAPI document (`GET /v1/openapi.json`) against the router and the README: every
//! route the README lists is in the document with the same methods and no other; every
//! documented operation is routed (no fallback 404, no 405) and answers a status the
//! document lists for it. schemathesis then fuzzes the running server against the same
//! document (scripts/schemathesis.sh, in the test command).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::BTreeSet;
use tower::ServiceExt;

/// (method, path) of every route the README's route table lists: its first column holds
/// entries such as `` `GET/PUT /v1/users/{id}/consent` ``.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme.find("| route | what |").expect("the route table");
    let mut out = BTreeSet::new();
    for line in readme[start..].lines().skip(2) {
        let Some(cells) = line.strip_prefix("| ") else {
            break;
        };
        let first = cells.split(" | ").next().unwrap();
        for entry in first.split(", ") {
            let entry = entry.trim_matches('`');
            let (methods, path) = entry
                .split_once(' ')
                .unwrap_or_else(|| panic!("README route {entry:?}: METHODS /path"));
            for m in methods.split('/') {
                out.insert((m.to_string(), path.to_string()));
            }
        }
    }
    out
}

fn document() -> Value {
    serde_json::to_value(nearcast_api::openapi::document()).unwrap()
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in item.as_object().unwrap().keys() {
            out.insert((m.to_uppercase(), path.clone()));
        }
    }
    out
}

#[test]
fn the_readme_and_the_document_list_the_same_routes() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let (readme, documented) = (readme_routes(), documented(&doc));
    assert!(readme.len() >= 37, "{readme:?}");
    let only_readme: Vec<_> = readme.difference(&documented).collect();
    let only_doc: Vec<_> = documented.difference(&readme).collect();
    assert!(
        only_readme.is_empty() && only_doc.is_empty(),
        "in the README only: {only_readme:?}; in the document only: {only_doc:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_answers_a_documented_status() {
    let h = nearcast_tests::harness(
        nearcast_tests::Backend::Memory,
        2,
        nearcast_tests::policy(3),
    )
    .await;
    let doc = document();
    let mut checked = 0;
    for (method, path) in documented(&doc) {
        let uri = path.replace("{id}", "s0");
        let req = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let resp = nearcast_api::router(h.engine.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(!body.contains("route not found"), "{method} {uri}: {body}");
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert!(
            op["responses"][status.as_str()].is_object(),
            "{method} {uri} answered {status}, not documented: {body}"
        );
        if path.starts_with("/v1/admin") {
            assert_eq!(
                op["security"][0]["admin_key"],
                serde_json::json!([]),
                "{method} {path}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 37);
    // The server answers the document itself.
    let resp = nearcast_api::router(h.engine.clone())
        .oneshot(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), doc);
}
