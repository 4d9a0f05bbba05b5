//! Admin routes with API keys (the embedded host's `--admin-keys`): each role may do what
//! `nearcast_api::auth::required_role` gives it and nothing more, a refusal (401 or 403,
//! naming the field) changes no state, device routes need no key, and every configuration
//! change is in the audit log with who made it, before and after.

use axum::http::StatusCode;
use nearcast_api::auth::{Access, Role};
use nearcast_tests::*;
use serde_json::{Value, json};

fn keys() -> Access {
    api_keys(&[
        ("vic", Role::Viewer),
        ("eddie", Role::Editor),
        ("ada", Role::Admin),
    ])
}

/// One request as `who` (`None`: no Authorization header).
async fn call(
    h: &Harness,
    who: Option<&str>,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value, Option<String>) {
    admin_call(h.engine.clone(), keys(), who, method, uri, body).await
}

fn store_body(id: &str, name: &str) -> Value {
    json!({"id": id, "name": name, "category": "cafe", "time_zone": "Europe/Helsinki",
           "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 60}})
}

async fn roles_decide_and_refusals_change_nothing(backend: Backend) {
    let h = harness(backend, 3, policy(3)).await;
    let rows = dump(&h).await;
    let stores = h.engine.store().list_stores().await.unwrap();

    // Unknown callers: 401 with a Bearer challenge, on reads and writes alike.
    for who in [None, Some("mallory")] {
        for (method, uri) in [("GET", "/v1/admin/stores"), ("PUT", "/v1/admin/stores/n1")] {
            let (status, v, challenge) = call(&h, who, method, uri, store_body("n1", "New")).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{who:?} {method} {uri}: {v}"
            );
            assert_eq!(v["error"]["field"], "authorization");
            assert_eq!(challenge.as_deref(), Some("Bearer"));
        }
    }
    // Known callers below the route's role: 403 naming the role.
    for (who, method, uri, body) in [
        ("vic", "PUT", "/v1/admin/stores/n1", store_body("n1", "New")),
        ("vic", "POST", "/v1/admin/stores", store_body("n1", "New")),
        ("vic", "DELETE", "/v1/admin/stores/s0", Value::Null),
        ("eddie", "PUT", "/v1/admin/policy", json!(policy(9))),
        ("eddie", "POST", "/v1/admin/model/reload", Value::Null),
        ("eddie", "GET", "/v1/admin/users/u1/export", Value::Null),
        ("eddie", "DELETE", "/v1/admin/users/u1", Value::Null),
    ] {
        let (status, v, _) = call(&h, Some(who), method, uri, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who} {method} {uri}: {v}");
        assert_eq!(v["error"]["field"], "role");
        assert!(v["error"]["reason"].as_str().unwrap().contains(who), "{v}");
    }
    assert_eq!(dump(&h).await, rows, "refusals wrote nothing");
    assert_eq!(h.engine.store().list_stores().await.unwrap(), stores);

    // What each role may do.
    for (who, method, uri, body) in [
        ("vic", "GET", "/v1/admin/stores", Value::Null),
        ("vic", "GET", "/v1/admin/policy", Value::Null),
        ("vic", "GET", "/v1/admin/audit", Value::Null),
        ("eddie", "GET", "/v1/admin/offers", Value::Null),
        ("ada", "GET", "/v1/admin/users/u1/export", Value::Null),
    ] {
        let (status, v, _) = call(&h, Some(who), method, uri, body).await;
        assert_eq!(status, StatusCode::OK, "{who} {method} {uri}: {v}");
    }
    // Each caller can ask who they are and what they may do (the console does, first).
    for (who, role, edit, admin) in [
        ("vic", "viewer", false, false),
        ("eddie", "editor", true, false),
        ("ada", "admin", true, true),
    ] {
        let (status, v, _) = call(&h, Some(who), "GET", "/v1/admin/me", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{who}: {v}");
        assert_eq!(
            v,
            json!({"name": who, "role": role, "can": {"edit": edit, "admin": admin}})
        );
    }
    let (status, _, _) = call(&h, None, "GET", "/v1/admin/me", Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A viewer simulates (it writes nothing): not refused for its role.
    let (status, v, _) = call(&h, Some("vic"), "POST", "/v1/admin/simulate", json!({})).await;
    assert!(
        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
        "{status} {v}"
    );
    // Devices need no admin key.
    let (status, v, _) = call(
        &h,
        None,
        "POST",
        "/v1/events",
        json!({"user_id": "u1", "events": [{"event_id": "e1", "type": "push_token",
            "at": noon().to_rfc3339(), "platform": "fcm", "token": "tok-u1"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");

    // Changes, each audited under its author's name, newest first.
    let (status, v, _) = call(
        &h,
        Some("eddie"),
        "PUT",
        "/v1/admin/stores/s1",
        store_body("s1", "Renamed"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v, _) = call(&h, Some("ada"), "PUT", "/v1/admin/policy", json!(policy(4))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v, _) = call(&h, Some("vic"), "GET", "/v1/admin/audit", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["name"].as_str().unwrap(),
                e["actor"]["role"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("policy.put", "ada", "admin"),
            ("store.put", "eddie", "editor"),
            ("catalog.load", "nearcast (configuration load)", "admin"),
        ]
    );
    assert_eq!(entries[0]["before"]["per_day"], 3);
    assert_eq!(entries[0]["after"]["per_day"], 4);
    assert_eq!(entries[1]["target"], "s1");
    assert_eq!(entries[1]["before"]["name"], stores[1].name);
    assert_eq!(entries[1]["after"]["name"], "Renamed");
    assert!(v["next_before"].is_null(), "one page holds them all");

    // Pages: one entry at a time, following next_before, give the same list.
    let mut paged = Vec::new();
    let mut uri = "/v1/admin/audit?limit=1".to_string();
    loop {
        let (status, v, _) = call(&h, Some("vic"), "GET", &uri, Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        paged.extend(v["entries"].as_array().unwrap().iter().cloned());
        match v["next_before"].as_str() {
            Some(next) => uri = format!("/v1/admin/audit?limit=1&before={next}"),
            None => break,
        }
    }
    assert_eq!(&paged, entries);
    for (uri, field) in [
        ("/v1/admin/audit?limit=0", "limit"),
        ("/v1/admin/audit?limit=501", "limit"),
        ("/v1/admin/audit?since=1", "since"),
    ] {
        let (status, v, _) = call(&h, Some("vic"), "GET", uri, Value::Null).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error"]["field"], field);
    }
}

#[tokio::test]
async fn roles_decide_and_refusals_change_nothing_on_sqlite() {
    roles_decide_and_refusals_change_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn roles_decide_and_refusals_change_nothing_on_dynamodb() {
    roles_decide_and_refusals_change_nothing(Backend::Dynamo).await;
}

/// A change the catalog refuses (an offer naming a store that does not exist) writes no
/// audit entry either; a delete of nothing is a 404 and no entry.
#[tokio::test]
async fn a_refused_change_leaves_no_audit_entry() {
    let h = harness(Backend::Sqlite, 2, policy(3)).await;
    let before = h.engine.audit_log(None, 100).await.unwrap();
    let (_, offers) = catalog(1);
    let mut offer = serde_json::to_value(&offers[0]).unwrap();
    offer["id"] = json!("o9");
    offer["store_ids"] = json!(["nope"]);
    let (status, v, _) = call(&h, Some("eddie"), "PUT", "/v1/admin/offers/o9", offer).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v, _) = call(
        &h,
        Some("eddie"),
        "DELETE",
        "/v1/admin/stores/nope",
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(h.engine.audit_log(None, 100).await.unwrap(), before);
}
