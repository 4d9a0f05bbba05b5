//! Presence webhooks from `nearcast serve` to a real HTTP receiver: the visit begun by a
//! fix is posted, signed the Standard Webhooks way; a receiver that fails is tried again
//! after the backoff, and a server killed (SIGKILL) between the failure and the retry posts
//! the message after its restart, with the same dedupe id: at least once, from the file.

mod support;

use nearcast_core::webhook::WebhookSecret;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver got: headers (lower-case names) and body of each request.
type Got = Arc<Mutex<Vec<(Vec<(String, String)>, String)>>>;

/// A receiver on loopback: answers 503 to the first `fail` requests, then 200.
fn receiver(fail: usize) -> (String, Got) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let got: Got = Arc::default();
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let n = {
                let mut g = seen.lock().unwrap();
                g.push((headers, String::from_utf8(body).unwrap()));
                g.len()
            };
            let status = if n <= fail {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (addr, got)
}

fn start(db: &Path, config: &Path, hook: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--outbox")
        .arg(db.with_extension("outbox.jsonl"))
        .arg("--config")
        .arg(config)
        .env("NEARCAST_WEBHOOK_URL", format!("http://{hook}/hooks"))
        .env("NEARCAST_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nearcast serve");
    let addr = support::banner(&mut child);
    (child, addr)
}

fn wait_for(got: &Got, n: usize, within: Duration) {
    let start = Instant::now();
    while got.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < within,
            "the receiver got {} requests, expected {n}",
            got.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[test]
fn a_visit_is_posted_signed_and_survives_a_kill_between_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let store = serde_json::json!([{"id": "s0", "name": "Store 0", "category": "cafe",
        "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": 60.1650, "lon": 24.93, "radius_m": 60}}]);
    std::fs::write(config.join("stores.json"), store.to_string()).unwrap();
    std::fs::write(config.join("offers.json"), "[]").unwrap();
    let db = dir.path().join("n.db");
    let (hook, got) = receiver(1);

    let (mut child, addr) = start(&db, &config, &hook);
    let now = chrono::Utc::now().to_rfc3339();
    let mut events: Vec<serde_json::Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| serde_json::json!({"event_id": format!("c-{p}"), "type": "consent", "at": now, "purpose": p, "granted": true}))
        .collect();
    events.push(
        serde_json::json!({"event_id": "f1", "type": "location", "at": now,
        "lat": 60.1650, "lon": 24.93, "accuracy_m": 8}),
    );
    let (status, v) = support::request(
        &addr,
        "POST",
        "/v1/events",
        &serde_json::json!({"user_id": "wen", "events": events}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let presence = v["results"][3]["decision"]["presence"].clone();
    assert_eq!(presence[0]["transition"], "enter", "{v}");

    // The first attempt fails (503); the server dies before its retry.
    wait_for(&got, 1, Duration::from_secs(10));
    // Usually after the failure was recorded; if the kill comes first, the attempt's lease
    // (60 s) holds the message instead of the backoff: both end in a second attempt.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut child, _) = start(&db, &config, &hook);
    // After the backoff (10 s ± 20 %), or the lease, the restarted server posts it again.
    wait_for(&got, 2, Duration::from_secs(90));
    child.kill().unwrap();
    child.wait().unwrap();

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "delivered once the receiver took it");
    let secret = WebhookSecret::parse(SECRET).unwrap();
    for (h, body) in &got {
        let id = header(h, "webhook-id");
        let ts: i64 = header(h, "webhook-timestamp").parse().unwrap();
        assert!((chrono::Utc::now().timestamp() - ts).abs() < 120);
        assert_eq!(header(h, "webhook-signature"), secret.sign(id, ts, body));
        assert_eq!(header(h, "content-type"), "application/json");
        let b: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(b["type"], "presence.changed");
        assert_eq!(b["data"]["user_id"], "wen");
        assert_eq!(b["data"]["event_id"], "f1");
        assert_eq!(b["data"]["changes"], presence);
    }
    assert_eq!(
        header(&got[0].0, "webhook-id"),
        header(&got[1].0, "webhook-id"),
        "one dedupe id across attempts and restarts"
    );
}

#[test]
fn serve_refuses_a_webhook_url_it_cannot_use() {
    for (url, secret) in [
        ("http://hooks.example.com/h", SECRET),
        ("http://127.0.0.1:9/h", "not-a-secret"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_nearcast"))
            .args(["serve", "--addr", "127.0.0.1:0", "--db"])
            .arg(tempfile::tempdir().unwrap().path().join("n.db"))
            .env("NEARCAST_WEBHOOK_URL", url)
            .env("NEARCAST_WEBHOOK_SECRET", secret)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("webhook") || err.contains("WEBHOOK"),
            "names the setting: {err}"
        );
        assert!(!err.contains("MfKQ9r8"), "never prints the secret: {err}");
    }
}
