//! The `events-api` function's application: the shared router (`nearcast_api::router`)
//! behind the device check of [`DeviceAuth::Jwt`].
//!
//! Devices hold a JWT from the retailer's identity provider whose `sub` claim is their
//! Nearcast user id; API Gateway's JWT authorizer verifies it and passes its claims in the
//! request context. With `NEARCAST_DEVICE_AUTH=jwt` a request is served only when every
//! user it is about is that `sub`:
//!
//! - `POST /v1/events`: the batch's `user_id` and every event's own `user_id`; one other
//!   user refuses the whole batch (403, `field` naming it) before anything is decided;
//! - `GET`/`PUT /v1/users/{id}/consent`, `GET /v1/users/{id}/presence`,
//!   `DELETE /v1/users/{id}`: the `{id}` of the path
//!   (refused naming `user_id`, as the router names it);
//! - any other path but `/healthz` (the admin routes belong to admin-api): 403.
//!
//! A request without a `sub` claim (no JWT authorizer on the route) is refused with 401.
//! Bodies that are not JSON go on to the router, which answers its usual 400.

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use nearcast_core::engine::Engine;
pub use nearcast_functions::DeviceAuth;
use serde_json::{Value, json};
use std::sync::Arc;

/// Where the verified subject is in the API Gateway (HTTP API, payload 2.0) request.
pub const SUB_FIELD: &str = "requestContext.authorizer.jwt.claims.sub";

/// The router of events-api: [`nearcast_api::router`], checked by `auth`.
pub fn app(engine: Arc<Engine>, auth: DeviceAuth) -> axum::Router {
    let router = nearcast_api::router(engine);
    match auth {
        DeviceAuth::None => router,
        DeviceAuth::Jwt => router.layer(from_fn_with_state((), check_subject)),
    }
}

fn refuse(status: StatusCode, code: &str, field: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "field": field, "reason": reason}})),
    )
        .into_response()
}

fn forbidden(field: &str) -> Response {
    refuse(
        StatusCode::FORBIDDEN,
        "forbidden",
        field,
        "names another user than the signed-in one (the JWT's sub claim)",
    )
}

/// The `sub` claim verified by API Gateway's JWT authorizer, if any.
fn subject(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let sub = ctx.authorizer.as_ref()?.jwt.as_ref()?.claims.get("sub")?;
            (!sub.is_empty()).then(|| sub.clone())
        }
        _ => None,
    }
}

/// The user a `/v1/users/{id}[/consent|/presence]` path is about.
fn path_user(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/users/")?;
    match rest.split_once('/') {
        None => Some(rest),
        Some((id, "consent" | "presence")) => Some(id),
        Some(_) => None,
    }
}

/// The first field of an events batch that names another user than `sub`.
fn other_user_in_batch(body: &Value, sub: &str) -> Option<String> {
    let differs = |v: &Value| v.as_str().is_some_and(|u| u != sub);
    if body.get("user_id").is_some_and(differs) {
        return Some("user_id".into());
    }
    body.get("events")?
        .as_array()?
        .iter()
        .position(|e| e.get("user_id").is_some_and(differs))
        .map(|i| format!("events[{i}].user_id"))
}

async fn check_subject(State(()): State<()>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return next.run(req).await;
    }
    let Some(sub) = subject(&req) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            SUB_FIELD,
            "no verified JWT subject: the route needs the devices' JWT authorizer",
        );
    };
    if path == "/v1/events" && req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, nearcast_api::MAX_BODY).await else {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "body",
                &format!("must be at most {} bytes", nearcast_api::MAX_BODY),
            );
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes)
            && let Some(field) = other_user_in_batch(&v, &sub)
        {
            return forbidden(&field);
        }
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    }
    match path_user(&path) {
        Some(user) if user == sub => next.run(req).await,
        Some(_) => forbidden("user_id"),
        None if path == "/v1/events" => next.run(req).await, // other methods: the router's 405
        None => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "path",
            "not a device route",
        ),
    }
}
