//! Marketers' roles on admin-api (`NEARCAST_ADMIN_AUTH=jwt`): the JWT claims API Gateway's
//! authorizer verified, in an API Gateway HTTP API (v2) sample payload converted by
//! lambda_http as the runtime does, decide what each caller may do; refusals change nothing
//! and every change is audited under the caller's name.

use http_body_util::BodyExt;
use lambda_http::http::StatusCode;
use nearcast_admin_api::{AdminAuth, app};
use nearcast_functions::DEFAULT_ROLE_CLAIM;
use nearcast_functions::testing::{engine, sample};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The sample request (`PUT /v1/admin/stores/s9` by maria@shop.example), changed by `edit`.
fn request(edit: impl FnOnce(&mut Value)) -> lambda_http::Request {
    let mut v: Value = serde_json::from_str(&sample("apigw-v2-admin-put-store-jwt.json")).unwrap();
    edit(&mut v);
    lambda_http::request::from_str(&v.to_string()).expect("an API Gateway v2 request")
}

fn route(v: &mut Value, method: &str, path: &str) {
    v["rawPath"] = json!(path);
    v["requestContext"]["http"]["method"] = json!(method);
    v["requestContext"]["http"]["path"] = json!(path);
    if method == "GET" {
        v["body"] = Value::Null;
    }
}

async fn call(router: &axum::Router, req: lambda_http::Request) -> (StatusCode, Value) {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The request as it comes on a route without the JWT authorizer: no verified claims.
fn unverified(v: &mut Value) {
    v["requestContext"]
        .as_object_mut()
        .unwrap()
        .remove("authorizer");
}

fn jwt() -> AdminAuth {
    AdminAuth::Jwt {
        role_claim: DEFAULT_ROLE_CLAIM.into(),
    }
}

#[tokio::test]
async fn an_editor_changes_stores_and_is_audited_by_name() {
    let f = engine().await;
    let router = app(f.engine.clone(), jwt());
    let (status, v) = call(&router, request(|_| {})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(
        f.engine
            .catalog()
            .has_store(&nearcast_core::ids::Id::parse("s9").unwrap())
    );

    let (status, v) = call(&router, request(|v| route(v, "GET", "/v1/admin/audit"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let last = &v["entries"][0];
    assert_eq!(last["action"], "store.put");
    assert_eq!(last["target"], "s9");
    assert_eq!(
        last["actor"],
        json!({"name": "maria@shop.example", "role": "editor"})
    );
    assert!(last.get("before").is_none());
    assert_eq!(last["after"]["name"], "Kamppi kiosk");
}

#[tokio::test]
async fn a_viewer_or_a_caller_without_a_role_changes_nothing() {
    let f = engine().await;
    let router = app(f.engine.clone(), jwt());
    let before = f.engine.store().list_stores().await.unwrap();
    let claims = "/requestContext/authorizer/jwt/claims";
    for (claim, field_reason) in [
        (json!("viewer"), "needs the editor role"),
        (json!("marketing"), "has no Nearcast role"),
        (Value::Null, "has no Nearcast role"),
    ] {
        let (status, v) = call(
            &router,
            request(|v| {
                let c = v.pointer_mut(claims).unwrap().as_object_mut().unwrap();
                match &claim {
                    Value::Null => c.remove(DEFAULT_ROLE_CLAIM),
                    other => c.insert(DEFAULT_ROLE_CLAIM.into(), other.clone()),
                };
            }),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{claim}: {v}");
        assert_eq!(v["error"]["field"], "role");
        let reason = v["error"]["reason"].as_str().unwrap();
        assert!(reason.contains(field_reason), "{reason}");
    }
    // No verified JWT at all (a route without the authorizer): 401.
    let (status, v) = call(&router, request(unverified)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["field"], "authorization");
    assert_eq!(f.engine.store().list_stores().await.unwrap(), before);
    assert!(
        f.engine
            .audit_log(None, 10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.action == "catalog.load")
    );

    // A viewer reads; Cognito groups work as the role claim, the highest group counting.
    let router = app(
        f.engine.clone(),
        AdminAuth::Jwt {
            role_claim: "cognito:groups".into(),
        },
    );
    let (status, v) = call(&router, request(|v| route(v, "GET", "/v1/admin/stores"))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // [editor marketing] is an editor: the policy needs admin.
    let (status, v) = call(
        &router,
        request(|v| {
            route(v, "PUT", "/v1/admin/policy");
            v["body"] = json!(json!({"max_per_day": 2, "min_gap_minutes": 60}).to_string());
        }),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("needs the admin role")
    );
}

#[tokio::test]
async fn without_admin_auth_every_caller_is_an_admin() {
    let f = engine().await;
    let router = app(f.engine.clone(), AdminAuth::None);
    let (status, v) = call(&router, request(unverified)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let audit = f.engine.audit_log(None, 1).await.unwrap();
    assert_eq!(audit[0].actor.name, "local");
}
