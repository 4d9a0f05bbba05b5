//! Who may call the admin routes (`/v1/admin/*`), and as what.
//!
//! Every admin request is made by an [`Actor`] with a [`Role`]; the route decides the role
//! it needs ([`required_role`]). How the actor is known depends on the host ([`Access`]):
//!
//! - [`Access::Open`]: everyone is an admin named `local`. `nearcast serve` uses it only
//!   when it listens on loopback and no key is configured, so the demo and local tools keep
//!   working; on any other address it refuses to start without keys.
//! - [`Access::Keys`]: API keys (`Authorization: Bearer <key>`), each with a name and a
//!   role. Only the keys' SHA-256 digests are configured, never the keys themselves.
//! - [`Access::Host`]: the host authenticated the caller and put an [`Actor`] in the
//!   request's extensions before the router saw it (admin-api, from the claims of the JWT
//!   that API Gateway verified). A request without one is refused.
//!
//! Refusals: 401 (`unauthorized`, field `authorization`) when the caller is not known, 403
//! (`forbidden`, field `role`) when their role is below the route's. Neither changes any
//! state: the check runs before the handler.

use crate::ApiError;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nearcast_core::FieldError;
pub use nearcast_core::audit::{Actor, Role};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// How the admin routes know their caller.
#[derive(Clone)]
pub enum Access {
    /// Every caller is an admin named `local` (loopback without keys, tests).
    Open,
    /// API keys.
    Keys(Arc<ApiKeys>),
    /// An [`Actor`] the host put in the request's extensions; none: 401.
    Host,
}

/// The role a request needs: `None` for the routes that are not admin routes (devices'
/// routes have their own check, `/healthz` none).
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let rest = path.strip_prefix("/v1/admin")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let read = method == Method::GET || method == Method::HEAD;
    Some(match rest {
        // One person's data, the policy that caps everyone, the model in service.
        r if r.starts_with("/users/") => Role::Admin,
        // Webhook dead letters name people.
        r if r.starts_with("/webhooks") => Role::Admin,
        "/policy" | "/model/reload" if !read => Role::Admin,
        // Simulation and payload previews read the catalog and write nothing.
        "/simulate" => Role::Viewer,
        r if r.starts_with("/campaigns/") && r.ends_with("/preview") => Role::Viewer,
        r if read && !r.is_empty() => Role::Viewer,
        // Coupon uploads and redemptions (a till or a web shop holds an editor key).
        r if r.starts_with("/stores")
            || r.starts_with("/offers")
            || r.starts_with("/campaigns")
            || r == "/redemptions" =>
        {
            Role::Editor
        }
        // Anything else that writes (and routes that do not exist yet): the highest role.
        _ => Role::Admin,
    })
}

/// A configured API key: its name, role and SHA-256 digest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Who holds it (shown in the audit log).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The SHA-256 of the key, lower-case hex (64 characters).
    pub sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

/// The API keys of the embedded host, looked up by digest.
#[derive(Debug, Default)]
pub struct ApiKeys {
    by_digest: HashMap<[u8; 32], Actor>,
}

/// The lower-case hex SHA-256 of `key`: what a keys file holds for it.
pub fn key_digest(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (k, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).ok()?;
    }
    Some(out)
}

impl ApiKeys {
    /// Keys from their entries.
    ///
    /// # Errors
    /// The field of the first bad entry: an empty or repeated name, a digest that is not
    /// 64 hex characters, a digest given twice.
    pub fn new(entries: Vec<KeyEntry>) -> Result<Self, FieldError> {
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, e) in entries.into_iter().enumerate() {
            let at = |f: &str| format!("keys[{i}].{f}");
            let name = e.name.trim();
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err(FieldError::new(
                    at("name"),
                    "must be 1-64 characters, no control characters",
                ));
            }
            if !names.insert(name.to_string()) {
                return Err(FieldError::new(
                    at("name"),
                    format!("{name} is given twice"),
                ));
            }
            let Some(d) = parse_digest(&e.sha256.to_ascii_lowercase()) else {
                return Err(FieldError::new(
                    at("sha256"),
                    "must be the key's SHA-256 as 64 hex characters",
                ));
            };
            let actor = Actor {
                name: name.to_string(),
                role: e.role,
            };
            if by_digest.insert(d, actor).is_some() {
                return Err(FieldError::new(at("sha256"), "the same key is given twice"));
            }
        }
        Ok(Self { by_digest })
    }

    /// Keys from a keys file's text: `{"keys": [{"name", "role", "sha256"}]}`.
    ///
    /// # Errors
    /// The field that is wrong (JSON paths as in `keys[0].role`).
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: KeysFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(
                if path == "." { "keys".into() } else { path },
                e.inner().to_string(),
            )
        })?;
        Self::new(file.keys)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The holder of `key`, if it is one of these.
    pub fn actor(&self, key: &str) -> Option<&Actor> {
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_digest.get(&d)
    }
}

fn unauthorized(reason: &str) -> Response {
    let mut r = ApiError::Unauthorized(reason.to_string()).into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The bearer token of a request, if it has one.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The middleware: finds the caller of an admin route, checks their role and hands the
/// [`Actor`] to the handler (as a request extension).
pub(crate) async fn check(access: Access, mut req: Request, next: Next) -> Response {
    let Some(needed) = required_role(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let actor = match &access {
        Access::Open => Actor {
            name: "local".into(),
            role: Role::Admin,
        },
        Access::Keys(keys) => match bearer(&req).map(|k| keys.actor(k)) {
            None => return unauthorized("needs an API key: Authorization: Bearer <key>"),
            Some(None) => return unauthorized("the API key is not one of this server's keys"),
            Some(Some(a)) => a.clone(),
        },
        Access::Host => match req.extensions().get::<Actor>() {
            Some(a) => a.clone(),
            None => return unauthorized("no verified caller with a role"),
        },
    };
    if actor.role < needed {
        return ApiError::Forbidden(FieldError::new(
            "role",
            format!(
                "needs the {} role; {} is {}",
                needed.as_str(),
                actor.name,
                actor.role.as_str()
            ),
        ))
        .into_response();
    }
    req.extensions_mut().insert(actor);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_the_docs_give() {
        let cases = [
            (Method::GET, "/v1/admin/stores", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/stores/s1", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/results", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/me", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/audit", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/policy", Some(Role::Viewer)),
            (Method::GET, "/v1/admin/model", Some(Role::Viewer)),
            (Method::POST, "/v1/admin/simulate", Some(Role::Viewer)),
            (Method::POST, "/v1/admin/stores", Some(Role::Editor)),
            (Method::PUT, "/v1/admin/stores/s1", Some(Role::Editor)),
            (Method::DELETE, "/v1/admin/offers/o1", Some(Role::Editor)),
            (Method::PUT, "/v1/admin/policy", Some(Role::Admin)),
            (Method::POST, "/v1/admin/model/reload", Some(Role::Admin)),
            (
                Method::GET,
                "/v1/admin/users/anna/export",
                Some(Role::Admin),
            ),
            (Method::DELETE, "/v1/admin/users/anna", Some(Role::Admin)),
            (
                Method::GET,
                "/v1/admin/webhooks/dead-letters",
                Some(Role::Admin),
            ),
            (Method::POST, "/v1/admin/anything-new", Some(Role::Admin)),
            (Method::GET, "/v1/admin", Some(Role::Admin)),
            (Method::POST, "/v1/events", None),
            (Method::GET, "/v1/administrator", None),
            (Method::GET, "/healthz", None),
            (Method::DELETE, "/v1/users/anna", None),
        ];
        for (m, p, want) in cases {
            assert_eq!(required_role(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn keys_are_found_by_digest_and_bad_entries_name_their_field() {
        let file = format!(
            r#"{{"keys": [{{"name": "maria", "role": "editor", "sha256": "{}"}},
                         {{"name": "vic", "role": "viewer", "sha256": "{}"}}]}}"#,
            key_digest("k-maria"),
            key_digest("k-vic").to_uppercase()
        );
        let keys = ApiKeys::parse(&file).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.actor("k-maria").unwrap().role, Role::Editor);
        assert_eq!(keys.actor("k-vic").unwrap().name, "vic");
        assert!(keys.actor("k-maria ").is_none());
        assert!(keys.actor("").is_none());

        let bad = |text: &str| ApiKeys::parse(text).unwrap_err().field;
        let d = key_digest("x");
        assert_eq!(
            bad(r#"{"keys": [{"name": "a", "role": "boss", "sha256": "00"}]}"#),
            "keys[0].role"
        );
        assert_eq!(
            bad(&format!(
                r#"{{"keys": [{{"name": "a", "role": "admin", "sha256": "{d}", "key": "x"}}]}}"#
            )),
            "keys[0].key"
        );
        assert_eq!(
            bad(r#"{"keys": [{"name": "a", "role": "admin", "sha256": "abc"}]}"#),
            "keys[0].sha256"
        );
        assert_eq!(
            bad(&format!(
                r#"{{"keys": [{{"name": " ", "role": "admin", "sha256": "{d}"}}]}}"#
            )),
            "keys[0].name"
        );
        assert_eq!(
            bad(&format!(
                r#"{{"keys": [{{"name": "a", "role": "admin", "sha256": "{d}"}}, {{"name": "a", "role": "viewer", "sha256": "{}"}}]}}"#,
                key_digest("y")
            )),
            "keys[1].name"
        );
        assert_eq!(
            bad(&format!(
                r#"{{"keys": [{{"name": "a", "role": "admin", "sha256": "{d}"}}, {{"name": "b", "role": "viewer", "sha256": "{d}"}}]}}"#
            )),
            "keys[1].sha256"
        );
        assert_eq!(bad("[]"), "keys");
    }
}
