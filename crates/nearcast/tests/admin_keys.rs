//! `nearcast serve`'s admin keys, through the binary: `nearcast admin-key` writes only a
//! key's digest; without keys the server starts only on loopback (open to every caller as
//! an admin, as the demo and local tools need); on any other address it refuses to start,
//! and with keys a request without one is refused while devices' routes need none.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn nearcast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nearcast"))
}

/// `nearcast admin-key` for `name`; (exit success, stdout, stderr).
fn admin_key(keys: &Path, name: &str, role: &str) -> (bool, String, String) {
    let out = nearcast()
        .args(["admin-key", "--name", name, "--role", role, "--keys"])
        .arg(keys)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn serve(dir: &Path, addr: &str, keys: Option<&Path>) -> Command {
    let mut c = nearcast();
    c.args(["serve", "--addr", addr, "--db"])
        .arg(dir.join("n.db"))
        .arg("--outbox")
        .arg(dir.join("outbox.jsonl"))
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events"))
        .env_remove("NEARCAST_ADMIN_KEYS");
    if let Some(k) = keys {
        c.arg("--admin-keys").arg(k);
    }
    c
}

#[test]
fn admin_key_writes_the_digest_only_and_refuses_a_name_twice() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let (ok, key, err) = admin_key(&keys, "ada", "admin");
    assert!(ok, "{err}");
    let key = key.trim();
    assert!(key.starts_with("nck_") && key.len() == 52, "{key}");
    let text = std::fs::read_to_string(&keys).unwrap();
    assert!(!text.contains(key), "the file holds no key");
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["keys"][0]["name"], "ada");
    assert_eq!(file["keys"][0]["role"], "admin");
    assert_eq!(file["keys"][0]["sha256"].as_str().unwrap().len(), 64);

    let (ok, _, err) = admin_key(&keys, "ada", "viewer");
    assert!(!ok);
    assert!(err.contains("keys[1].name"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        text,
        "file unchanged"
    );
    let (ok, other, err) = admin_key(&keys, "vic", "viewer");
    assert!(ok, "{err}");
    assert_ne!(other.trim(), key);
}

/// Runs `cmd`, which must stop by itself with an error within a minute; its stderr.
fn refused(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("nearcast serve started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn without_keys_serve_refuses_an_address_other_machines_reach() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(serve(dir.path(), "0.0.0.0:0", None));
    assert!(err.contains("--admin-keys"), "{err}");
}

#[test]
fn a_bad_keys_file_stops_serve_before_it_touches_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        r#"{"keys": [{"name": "ada", "role": "boss", "sha256": "00"}]}"#,
    )
    .unwrap();
    let err = refused(serve(dir.path(), "127.0.0.1:0", Some(&keys)));
    assert!(err.contains("keys[0].role"), "{err}");
    assert!(
        !dir.path().join("n.db").exists(),
        "the database was not opened"
    );
}

#[test]
fn with_keys_admin_routes_need_one_and_device_routes_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let (_, vic, _) = admin_key(&keys, "vic", "viewer");
    let (_, eddie, _) = admin_key(&keys, "eddie", "editor");
    let (vic, eddie) = (vic.trim().to_string(), eddie.trim().to_string());
    let mut child = serve(dir.path(), "0.0.0.0:0", Some(&keys))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    assert!(line.contains("http://0.0.0.0:"), "{line:?}");
    let addr = format!("127.0.0.1:{port}");
    let call = |key: Option<&str>, method: &str, path: &str, body: &str| {
        support::request_as(&addr, key, method, path, body)
    };

    let (status, v) = call(None, "GET", "/v1/admin/stores", "");
    assert_eq!(status, 401, "{v}");
    let (status, v) = call(Some("nck_guess"), "GET", "/v1/admin/stores", "");
    assert_eq!(status, 401, "{v}");
    let (status, v) = call(Some(&vic), "GET", "/v1/admin/stores", "");
    assert_eq!(status, 200, "{v}");
    let stores = v["stores"].as_array().unwrap().len();
    let store = r#"{"id": "k1", "name": "Kiosk", "category": "kiosk", "time_zone": "Europe/Helsinki",
        "fence": {"type": "circle", "lat": 60.17, "lon": 24.94, "radius_m": 40}}"#;
    let (status, v) = call(Some(&vic), "PUT", "/v1/admin/stores/k1", store);
    assert_eq!(status, 403, "{v}");
    let (status, v) = call(Some(&eddie), "PUT", "/v1/admin/stores/k1", store);
    assert_eq!(status, 200, "{v}");
    let (_, v) = call(Some(&vic), "GET", "/v1/admin/stores", "");
    assert_eq!(v["stores"].as_array().unwrap().len(), stores + 1);
    let (_, v) = call(Some(&vic), "GET", "/v1/admin/audit?limit=1", "");
    assert_eq!(v["entries"][0]["actor"]["name"], "eddie");
    let (status, v) = call(None, "GET", "/healthz", "");
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(None, "GET", "/v1/users/u1/consent", "");
    assert_eq!(status, 200, "{v}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn on_loopback_without_keys_every_caller_is_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(dir.path(), "127.0.0.1:0", None)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = support::banner(&mut child);
    let (status, v) = support::request(
        &addr,
        "PUT",
        "/v1/admin/policy",
        r#"{"per_day": 2, "per_week": 5, "min_gap_minutes": 60, "quiet_start": "21:00", "quiet_end": "08:00"}"#,
    );
    assert_eq!(status, 200, "{v}");
    let (_, v) = support::request(&addr, "GET", "/v1/admin/audit?limit=1", "");
    assert_eq!(
        v["entries"][0]["actor"],
        serde_json::json!({"name": "local", "role": "admin"})
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
