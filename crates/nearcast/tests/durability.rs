//! Invariant 4, "no accepted event is lost": `nearcast serve` is killed with SIGKILL between
//! acknowledged batches; after a restart on the same file every acknowledged event is there
//! (resending it answers "duplicate") and the state is consistent.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn start(db: &Path, outbox: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--outbox")
        .arg(outbox)
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nearcast serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "unexpected banner {line:?}");
    (child, addr)
}

/// A POST of `body` to `path`; returns (status, body).
fn post(addr: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    support::request(addr, "POST", path, body)
}

fn batch(user: &str, k: usize) -> String {
    let now = chrono::Utc::now();
    let mut events = Vec::new();
    if k == 0 {
        for p in ["push", "location", "personalisation"] {
            events.push(serde_json::json!({"event_id": format!("{user}-c-{p}"), "type": "consent", "at": now.to_rfc3339(), "purpose": p, "granted": true}));
        }
    }
    for i in 0..20 {
        events.push(serde_json::json!({"event_id": format!("{user}-{k}-{i}"), "type": "location",
            "at": now.to_rfc3339(), "lat": 60.1699 + 0.0001 * i as f64, "lon": 24.9384, "accuracy_m": 10}));
    }
    serde_json::json!({"user_id": user, "events": events}).to_string()
}

#[test]
fn sigkill_between_acknowledged_batches_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let outbox = dir.path().join("outbox.jsonl");
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    for round in 0..3 {
        let (mut child, addr) = start(&db, &outbox);
        for k in 0..5 {
            let user = format!("r{round}u{k}");
            let body = batch(&user, if round == 0 { 0 } else { k });
            let (status, v) = post(&addr, "/v1/events", &body);
            assert_eq!(status, 200, "{v}");
            assert!(
                v["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r["status"] == "accepted")
            );
            acknowledged.push((user, body));
        }
        // No graceful shutdown: SIGKILL right after the last acknowledgement.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let (mut child, addr) = start(&db, &outbox);
    for (user, body) in &acknowledged {
        let (status, v) = post(&addr, "/v1/events", body);
        assert_eq!(status, 200);
        let results = v["results"].as_array().unwrap();
        assert!(
            results.iter().all(|r| r["status"] == "duplicate"),
            "{user}: an acknowledged event was lost: {v}"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
