//! `nearcast serve --backend aws`: the HTTP API on DynamoDB at AWS_ENDPOINT_URL, started as
//! a process against moto's server (started by the tests, see `nearcast_aws::moto`).

mod support;

use nearcast_aws::DynamoStateStore;
use nearcast_core::ids::Id;
use nearcast_core::ports::StateStore;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use support::request;

/// Kills the server when the test ends, however it ends.
struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(table: &str, extra: &[&str], outbox: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .envs(nearcast_aws::moto::shared().env())
        .args([
            "serve",
            "--backend",
            "aws",
            "--addr",
            "127.0.0.1:0",
            "--table",
            table,
        ])
        .args(extra)
        .arg("--outbox")
        .arg(outbox)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nearcast serve");
    let stdout = child.stdout.take().unwrap();
    // Owned at once, so the process is killed and waited for however this ends.
    let mut server = Server(child, String::new());
    let mut out = BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "serve exited early");
        if let Some(addr) = line.trim().strip_prefix("nearcast listening on http://") {
            server.1 = addr.to_string();
            return server;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_dynamodb_accepts_events_and_keeps_state_in_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.jsonl");
    let table = format!(
        "serve-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
    let stores_in_file = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(config.join("stores.json")).unwrap(),
    )
    .unwrap()
    .as_array()
    .map(Vec::len)
    .unwrap();

    let server = serve(
        &table,
        &["--create-table", "--config", config.to_str().unwrap()],
        &outbox,
    );
    let (status, health) = request(&server.1, "GET", "/healthz", "");
    assert_eq!(status, 200);
    assert_eq!(health["stores"].as_u64(), Some(stores_in_file as u64));

    let now = chrono::Utc::now().to_rfc3339();
    let body = serde_json::json!({"user_id": "ada", "events": [
        {"event_id": "ada-c-location", "type": "consent", "at": now, "purpose": "location", "granted": true},
        {"event_id": "ada-f1", "type": "location", "at": now, "lat": 60.1699, "lon": 24.9384, "accuracy_m": 10}
    ]})
    .to_string();
    let (status, v) = request(&server.1, "POST", "/v1/events", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["status"], "accepted");
    assert_eq!(v["results"][1]["status"], "accepted");
    let (_, v) = request(&server.1, "POST", "/v1/events", &body);
    assert_eq!(v["results"][1]["status"], "duplicate");

    // The state is in DynamoDB: read it with the store directly.
    let store = DynamoStateStore::new(nearcast_aws::moto::shared().dynamodb(None).await, &table);
    let user = store.load_user(&Id::parse("ada").unwrap()).await.unwrap();
    assert!(user.version > 0);
    assert!(user.state.consents.location.is_some_and(|c| c.granted));
    assert_eq!(store.list_stores().await.unwrap().len(), stores_in_file);
    drop(server);

    // Another process on the same table, without --config, serves the same catalogue.
    let server = serve(&table, &[], &outbox);
    let (_, health) = request(&server.1, "GET", "/healthz", "");
    assert_eq!(health["stores"].as_u64(), Some(stores_in_file as u64));
}

#[test]
fn serve_without_the_table_fails_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .envs(nearcast_aws::moto::shared().env())
        .args(["serve", "--backend", "aws", "--addr", "127.0.0.1:0"])
        .args(["--table", "no-such-table-nearcast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DynamoDB"), "{err}");
}

#[test]
fn a_weather_url_that_is_not_http_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--weather-url",
            "api.open-meteo.com",
        ])
        .arg("--db")
        .arg(dir.path().join("n.db"))
        .arg("--outbox")
        .arg(dir.path().join("outbox.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--weather-url"), "{err}");
}
