//! The `admin-api` function's application: the shared router (`nearcast_api::router_with`)
//! with each marketer's role taken from the JWT that API Gateway's marketers' authorizer
//! verified ([`AdminAuth::Jwt`]).
//!
//! The role is the claim named by `NEARCAST_ADMIN_ROLE_CLAIM` (default
//! `custom:nearcast_role`): one of `viewer`, `editor`, `admin`, or a list of groups as
//! Cognito writes `cognito:groups` in an HTTP API's claims (`[editor marketing]`), of which
//! the highest role counts. The audit log names the caller by the `email` claim, else
//! `sub`. A request with no recognised role gets 403 (field `role`); one with no verified
//! JWT, 401. The role each route needs is `nearcast_api::auth::required_role`.

use axum::extract::Request;
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use nearcast_api::auth::{Access, Actor, Role};
use nearcast_core::engine::Engine;
pub use nearcast_functions::AdminAuth;
use std::collections::HashMap;
use std::sync::Arc;

/// The router of admin-api, with callers known by `auth`.
pub fn app(engine: Arc<Engine>, auth: AdminAuth) -> axum::Router {
    let publisher = engine.clone();
    let router = match auth {
        AdminAuth::None => nearcast_api::router(engine),
        AdminAuth::Jwt { role_claim } => {
            let claim: Arc<str> = role_claim.into();
            nearcast_api::router_with(engine, Access::Host).layer(from_fn(
                move |req: Request, next: Next| {
                    let claim = claim.clone();
                    async move { with_actor(&claim, req, next).await }
                },
            ))
        }
    };
    router.layer(from_fn(move |req: Request, next: Next| {
        let engine = publisher.clone();
        async move { publishing(&engine, req, next).await }
    }))
}

/// Runs the request; after a change answered with success, publishes the catalog in
/// service ([`Engine::publish_catalog`]: a snapshot when `NEARCAST_CATALOG_BUCKET` is set),
/// before the answer goes out, so that a function starting after it starts from it. A
/// failed publish is logged; the change stands, and instances build the catalog from the
/// table until the next publish.
async fn publishing(engine: &Engine, req: Request, next: Next) -> Response {
    let changes = req.method() != axum::http::Method::GET
        && req.method() != axum::http::Method::HEAD
        && req.uri().path().starts_with("/v1/admin/")
        && !req.uri().path().starts_with("/v1/admin/simulate")
        && !req.uri().path().starts_with("/v1/admin/model");
    let res = next.run(req).await;
    if changes
        && res.status().is_success()
        && let Err(e) = engine.publish_catalog().await
    {
        tracing::warn!(error = %e, "catalog snapshot not published");
    }
    res
}

/// The highest role named by a claim's value: a role, or a list of groups (`[a b]`,
/// `a,b`, `a b`).
pub fn role_of(value: &str) -> Option<Role> {
    value
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split([' ', ','])
        .filter_map(|g| Role::parse(g.trim().trim_matches('"')))
        .max()
}

/// The caller named by verified claims: their role from `role_claim`, their name from
/// `email` or `sub`. `None` when there is no name; a caller with a name and no role is a
/// viewer-less actor the router refuses (403 naming `role`).
pub fn actor_of(
    claims: &HashMap<String, String>,
    role_claim: &str,
) -> Option<Result<Actor, String>> {
    let name = claims
        .get("email")
        .or_else(|| claims.get("sub"))
        .filter(|n| !n.is_empty())?
        .clone();
    Some(match claims.get(role_claim).and_then(|v| role_of(v)) {
        Some(role) => Ok(Actor { name, role }),
        None => Err(name),
    })
}

async fn with_actor(role_claim: &str, mut req: Request, next: Next) -> Response {
    let claims = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| j.claims.clone()),
        _ => None,
    };
    match claims.as_ref().and_then(|c| actor_of(c, role_claim)) {
        Some(Ok(actor)) => {
            req.extensions_mut().insert(actor);
        }
        Some(Err(name)) => {
            use axum::response::IntoResponse;
            return nearcast_api::ApiError::Forbidden(nearcast_core::FieldError::new(
                "role",
                format!("{name} has no Nearcast role in the JWT claim {role_claim} (viewer, editor or admin)"),
            ))
            .into_response();
        }
        // No verified caller: the router answers 401 on admin routes, and serves /healthz.
        None => {}
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_claim_is_a_role_or_groups_of_which_the_highest_counts() {
        assert_eq!(role_of("editor"), Some(Role::Editor));
        assert_eq!(role_of("[marketing editor viewer]"), Some(Role::Editor));
        assert_eq!(role_of("viewer,admin"), Some(Role::Admin));
        assert_eq!(role_of("[marketing]"), None);
        assert_eq!(role_of("Admin"), None);
        assert_eq!(role_of(""), None);
    }

    #[test]
    fn the_actor_is_named_by_email_or_sub() {
        let claims = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let a = actor_of(
            &claims(&[
                ("sub", "u-1"),
                ("email", "maria@shop.example"),
                ("r", "admin"),
            ]),
            "r",
        );
        assert_eq!(
            a,
            Some(Ok(Actor {
                name: "maria@shop.example".into(),
                role: Role::Admin
            }))
        );
        assert_eq!(
            actor_of(&claims(&[("sub", "u-1"), ("r", "viewer")]), "r"),
            Some(Ok(Actor {
                name: "u-1".into(),
                role: Role::Viewer
            }))
        );
        assert_eq!(
            actor_of(&claims(&[("sub", "u-1")]), "r"),
            Some(Err("u-1".into()))
        );
        assert_eq!(actor_of(&claims(&[("r", "admin")]), "r"), None);
    }
}
