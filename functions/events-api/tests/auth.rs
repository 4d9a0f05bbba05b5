//! `NEARCAST_DEVICE_AUTH=jwt` in-process: API Gateway v2 sample payloads from `events/lambda/`
//! carrying the claims of the devices' JWT authorizer (`requestContext.authorizer.jwt`),
//! converted by lambda_http as the runtime does, through [`nearcast_events_api::app`].
//! A request about another user than the JWT's `sub` is refused with 403 naming the field,
//! before anything is decided or written.

mod support;

use lambda_http::http::StatusCode;
use nearcast_core::ids::Id;
use nearcast_events_api::{DeviceAuth, SUB_FIELD, app};
use nearcast_functions::testing::{Fixture, engine, sample};
use serde_json::Value;

async fn invoke(f: &Fixture, auth: DeviceAuth, payload: &str) -> (StatusCode, Value) {
    support::invoke(app(f.engine.clone(), auth), payload).await
}

fn edit(name: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&sample(name)).unwrap();
    f(&mut v);
    v.to_string()
}

fn edit_body(name: &str, f: impl FnOnce(&mut Value)) -> String {
    edit(name, |v| {
        let mut body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        f(&mut body);
        v["body"] = Value::from(body.to_string());
    })
}

fn user(id: &str) -> Id {
    Id::parse(id).unwrap()
}

/// Nothing about either user was decided, delivered or recorded.
async fn nothing_changed(f: &Fixture) {
    assert!(f.decisions().await.is_empty());
    assert!(f.notifier.sent().is_empty());
    for u in ["u-4711", "u-0815"] {
        let rec = f.store.load_user(&user(u)).await.unwrap();
        assert_eq!(rec.version, 0, "{u} was written");
    }
}

#[tokio::test]
async fn the_signed_in_user_posts_their_own_events() {
    let f = engine().await;
    let (status, v) = invoke(
        &f,
        DeviceAuth::Jwt,
        &sample("apigw-v2-post-events-jwt.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], "u-4711");
    assert_eq!(v["results"][3]["decision"]["verdict"], "sent", "{v}");
    assert_eq!(f.notifier.sent().len(), 1);
}

#[tokio::test]
async fn a_batch_with_another_users_event_is_refused_whole_and_changes_nothing() {
    let f = engine().await;
    let (status, v) = invoke(
        &f,
        DeviceAuth::Jwt,
        &sample("apigw-v2-post-events-jwt-other-user.json"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["code"], "forbidden");
    assert_eq!(v["error"]["field"], "events[3].user_id", "{v}");
    nothing_changed(&f).await;

    // The batch itself about another user.
    let other = edit_body("apigw-v2-post-events-jwt.json", |b| {
        b["user_id"] = Value::from("u-0815")
    });
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &other).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "user_id");
    nothing_changed(&f).await;

    // Without the check (NEARCAST_DEVICE_AUTH=none) the same batch is the router's
    // business: its own validation refuses an event of another user than the batch's.
    let (status, v) = invoke(
        &f,
        DeviceAuth::None,
        &sample("apigw-v2-post-events-jwt-other-user.json"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    nothing_changed(&f).await;
}

#[tokio::test]
async fn consent_and_erasure_only_for_the_signed_in_user() {
    let f = engine().await;
    // u-0815 has data: their own batch, posted without the check.
    let theirs = edit_body("apigw-v2-post-events.json", |b| {
        b["user_id"] = Value::from("u-0815")
    });
    let (status, _) = invoke(&f, DeviceAuth::None, &theirs).await;
    assert_eq!(status, StatusCode::OK);
    let before = f.store.load_user(&user("u-0815")).await.unwrap();
    assert!(before.version > 0);

    // u-4711 changing u-0815's consent: refused, unchanged.
    let (status, v) = invoke(
        &f,
        DeviceAuth::Jwt,
        &sample("apigw-v2-put-consent-jwt-other-user.json"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "user_id");
    // Reading it: refused too.
    let get = edit("apigw-v2-put-consent-jwt-other-user.json", |v| {
        v["requestContext"]["http"]["method"] = Value::from("GET");
        v.as_object_mut().unwrap().remove("body");
    });
    let (status, _) = invoke(&f, DeviceAuth::Jwt, &get).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Where they are: refused; their own presence is served.
    let presence = |user: &str| {
        let path = format!("/v1/users/{user}/presence");
        edit("apigw-v2-put-consent-jwt-other-user.json", |v| {
            v["requestContext"]["http"]["method"] = Value::from("GET");
            v["rawPath"] = Value::from(path.as_str());
            v["requestContext"]["http"]["path"] = Value::from(path.as_str());
            v.as_object_mut().unwrap().remove("body");
        })
    };
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &presence("u-0815")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "user_id");
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &presence("u-4711")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], "u-4711", "{v}");
    // u-4711 erasing u-0815: refused, nothing erased.
    let erase_other = edit("apigw-v2-delete-user-jwt.json", |v| {
        v["rawPath"] = Value::from("/v1/users/u-0815");
        v["requestContext"]["http"]["path"] = Value::from("/v1/users/u-0815");
    });
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &erase_other).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "user_id");
    let after = f.store.load_user(&user("u-0815")).await.unwrap();
    assert_eq!(after.version, before.version);
    assert_eq!(after.state, before.state);
    assert_eq!(f.notifier.sent().len(), 1, "u-0815's one push");

    // Their own consent and erasure are served.
    let own = edit("apigw-v2-put-consent-jwt-other-user.json", |v| {
        v["rawPath"] = Value::from("/v1/users/u-4711/consent");
        v["requestContext"]["http"]["path"] = Value::from("/v1/users/u-4711/consent");
    });
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &own).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], "u-4711");
    let (status, v) = invoke(
        &f,
        DeviceAuth::Jwt,
        &sample("apigw-v2-delete-user-jwt.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(f.store.load_user(&user("u-4711")).await.unwrap().version, 0);
}

#[tokio::test]
async fn no_verified_subject_is_a_401_and_admin_routes_are_not_served() {
    let f = engine().await;
    // No authorizer on the route: the plain sample has no claims.
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &sample("apigw-v2-post-events.json")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["error"]["field"], SUB_FIELD);
    nothing_changed(&f).await;
    // A device token on an admin route reaching this function by a misconfigured route.
    let admin = edit("apigw-v2-admin-list-stores.json", |v| {
        v["requestContext"]["authorizer"] =
            serde_json::json!({"jwt": {"claims": {"sub": "u-4711"}, "scopes": null}});
    });
    let (status, v) = invoke(&f, DeviceAuth::Jwt, &admin).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"]["field"], "path");
    // The same request without the check reaches the router (what admin-api serves).
    let (status, _) = invoke(&f, DeviceAuth::None, &admin).await;
    assert_eq!(status, StatusCode::OK);
}
