//! The marketer console's static files at `/console/` (`nearcast serve --console <dir>`).
//!
//! The console is a page and a script that call the admin API of the same origin; they
//! are built by `scripts/build-console.sh` into `crates/nearcast-console/dist` (Leaflet
//! from npm, pinned in that folder's lockfile; nothing is fetched from a CDN at run time).
//! Files are served as they are, with a Content-Security-Policy that lets the page talk
//! only to this server (map tiles excepted: their URL is the marketer's setting) and, when
//! the folder's `config.json` names an identity provider for single sign-on (OIDC with
//! PKCE; docs/console.md), to that provider's token endpoint.
//! Without a built folder, `/console/` says how to build it.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use std::path::{Path, PathBuf};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

/// Where the built console is looked for when `--console` is not given.
pub const DEFAULT_CONSOLE_DIR: &str = "crates/nearcast-console/dist";

/// The policy of every console response: scripts, styles and API calls of this origin
/// only (Leaflet positions its elements with inline styles), images from anywhere over
/// HTTPS (map tiles), no framing.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob: https: http:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The folder to serve: `dir` if given, else [`DEFAULT_CONSOLE_DIR`] if it holds an
/// `index.html`, else none.
pub fn console_dir(dir: Option<&Path>) -> Option<PathBuf> {
    match dir {
        Some(d) => Some(d.to_path_buf()),
        None => {
            let d = PathBuf::from(DEFAULT_CONSOLE_DIR);
            d.join("index.html").is_file().then_some(d)
        }
    }
}

/// `/console` and `/console/...`: the files of `dir`, or a page saying how to build them.
pub fn router(dir: Option<PathBuf>) -> Router {
    let csp = match dir.as_deref().and_then(token_origin) {
        Some(origin) => HeaderValue::from_str(&CONSOLE_CSP.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' {origin}"),
        ))
        .unwrap_or(HeaderValue::from_static(CONSOLE_CSP)),
        None => HeaderValue::from_static(CONSOLE_CSP),
    };
    let r = Router::new().route(
        "/console",
        get(|| async { Redirect::permanent("/console/") }),
    );
    let r = match dir {
        Some(dir) => {
            let files = ServeDir::new(&dir).append_index_html_on_directories(true);
            r.nest_service("/console/", files)
        }
        None => r
            .route("/console/", get(not_built))
            .route("/console/{*rest}", get(not_built)),
    };
    r.layer(SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        csp,
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    ))
    .layer(SetResponseHeaderLayer::overriding(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    ))
}

/// The origin (`https://host[:port]`) of the token endpoint that `dir/config.json` names for
/// single sign-on (`oidc.token_endpoint`), if any: the one place besides this server that
/// the console's script may call. Only `https`, or `http` on loopback (a test's provider).
fn token_origin(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v.get("oidc")?.get("token_endpoint")?.as_str()?;
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    let name = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let ok_chars = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
    let ok_scheme = scheme == "https"
        || (scheme == "http" && matches!(name, "127.0.0.1" | "localhost" | "[::1]"));
    (ok_chars && ok_scheme).then(|| format!("{scheme}://{host}"))
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The console is not built. Run `bash scripts/build-console.sh` in the repository, \
         then start `nearcast serve` there again (or pass --console <folder of index.html>).\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(r: &Router, uri: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let res = r
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    /// A `config.json` naming a sign-in provider opens the policy to its token endpoint's
    /// origin, and only to a well-formed https origin (or http on loopback).
    #[test]
    fn the_policy_admits_the_configured_token_endpoint_only() {
        let dir = tempfile::tempdir().unwrap();
        let with = |endpoint: &str| {
            std::fs::write(
                dir.path().join("config.json"),
                serde_json::json!({"oidc": {"token_endpoint": endpoint, "client_id": "c"}})
                    .to_string(),
            )
            .unwrap();
            token_origin(dir.path())
        };
        assert_eq!(token_origin(dir.path()), None, "no config.json");
        assert_eq!(
            with("https://nearcast.auth.eu-north-1.amazoncognito.com/oauth2/token").as_deref(),
            Some("https://nearcast.auth.eu-north-1.amazoncognito.com")
        );
        assert_eq!(
            with("http://127.0.0.1:4321/token").as_deref(),
            Some("http://127.0.0.1:4321")
        );
        for bad in [
            "http://idp.example.com/token",
            "https://idp.example.com; script-src *",
            "https:///token",
            "javascript:alert(1)",
        ] {
            assert_eq!(with(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_the_built_files_with_their_policy_and_nothing_outside_them() {
        let dir = tempfile::tempdir().unwrap();
        let dist = dir.path().join("dist");
        std::fs::create_dir_all(dist.join("vendor")).unwrap();
        std::fs::write(dist.join("index.html"), "<!doctype html><title>c</title>").unwrap();
        std::fs::write(dist.join("app.js"), "export {};").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        let r = router(Some(dist.clone()));

        let (status, headers, body) = get(&r, "/console/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("<title>c</title>"));
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONSOLE_CSP);
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let (status, headers, _) = get(&r, "/console/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .contains("javascript")
        );
        // /console goes to /console/ (relative asset paths need the slash).
        let (status, headers, _) = get(&r, "/console").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/console/");
        // Nothing outside the folder, however the path is spelt.
        for uri in [
            "/console/../secret.txt",
            "/console/%2e%2e/secret.txt",
            "/console/vendor/..%2f..%2fsecret.txt",
            "/console/missing.js",
        ] {
            let (status, _, body) = get(&r, uri).await;
            assert!(!body.contains("outside"), "{uri}");
            assert!(status.is_client_error(), "{uri}: {status}");
        }
    }

    #[tokio::test]
    async fn without_a_build_it_says_how_to_make_one() {
        let r = router(None);
        let (status, headers, body) = get(&r, "/console/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("scripts/build-console.sh"), "{body}");
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CONSOLE_CSP);
        let (status, _, _) = get(&r, "/console/app.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            console_dir(Some(Path::new("/x"))),
            Some(PathBuf::from("/x"))
        );
    }
}
