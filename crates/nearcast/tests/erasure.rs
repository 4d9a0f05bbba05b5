//! "Erasure removes everything", tried as an auditor would on the embedded host: a person
//! with consents, a push token, a purchase, a push sent, an open and a redeemed coupon is
//! erased through `DELETE /v1/users/{id}`; then every byte of every file `nearcast serve`
//! wrote (the SQLite file, its WAL, the outbox, the debug log) is searched for the person's
//! id, token and product id, after a clean shutdown and after a SIGKILL right after the
//! erasure was answered. A second person, who was not erased, is found in the same files:
//! the search sees what is there.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::request;

const SUBJECT: &str = "subject-Q7X2K9W4";
const SUBJECT_TOKEN: &str = "tokenZ9W8V7U6T5S4R3Q2P1";
const SUBJECT_PRODUCT: &str = "prod-K4J8H2G6";
const KEEPER: &str = "keeper-P2L6M8N1";
const KEEPER_TOKEN: &str = "tokenKEEPER5A4B3C2D1E0";
const KEEPER_PRODUCT: &str = "prod-KEEP9Y8X7";
/// The offer's coupon code: configuration, but it travels with each push.
const COUPON: &str = "COUPON-M3N5B7V9";
/// Where the fixes are (inside the test store's fence); no location trail keeps them.
const FIX_LAT: &str = "61.497833";
const FIX_LON: &str = "23.760977";

fn start(dir: &Path) -> (Child, String) {
    let log = std::fs::File::create(dir.join("serve.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(dir.join("n.db"))
        .arg("--outbox")
        .arg(dir.join("outbox.jsonl"))
        .env("NEARCAST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start nearcast serve");
    let addr = support::banner(&mut child);
    (child, addr)
}

fn configure(addr: &str) {
    let (s, v) = request(
        addr,
        "PUT",
        "/v1/admin/policy",
        r#"{"per_day": 5, "per_week": 10, "min_gap_minutes": 0, "quiet_start": "00:00:00", "quiet_end": "00:00:00"}"#,
    );
    assert_eq!(s, 200, "{v}");
    let store = serde_json::json!({"id": "sto-erasure", "name": "Erasure Cafe", "category": "cafe",
        "time_zone": "Europe/Helsinki",
        "fence": {"type": "circle", "lat": 61.4978, "lon": 23.761, "radius_m": 120}});
    let (s, v) = request(addr, "POST", "/v1/admin/stores", &store.to_string());
    assert_eq!(s, 201, "{v}");
    let offer = serde_json::json!({"id": "off-erasure", "campaign_id": "cmp-erasure",
        "title": "Coffee", "body": "A coffee on us", "coupon": COUPON, "category": "coffee",
        "store_ids": ["sto-erasure"], "trigger": {"type": "enter"}, "threshold": 0.0});
    let (s, v) = request(addr, "POST", "/v1/admin/offers", &offer.to_string());
    assert_eq!(s, 201, "{v}");
}

/// Consents, a push token, a purchase and a fix that sends a push; then the push opened and
/// its coupon redeemed.
fn live_a_little(addr: &str, user: &str, token: &str, product: &str) {
    let now = chrono::Utc::now().to_rfc3339();
    let mut events: Vec<serde_json::Value> = ["push", "location", "personalisation"]
        .iter()
        .map(|p| serde_json::json!({"event_id": format!("c-{p}"), "type": "consent", "at": now, "purpose": p, "granted": true}))
        .collect();
    events.push(serde_json::json!({"event_id": "t", "type": "push_token", "at": now, "platform": "fcm", "token": token}));
    events.push(serde_json::json!({"event_id": "b", "type": "purchase", "at": now, "product_id": product, "category": "books"}));
    events.push(serde_json::json!({"event_id": "f", "type": "location", "at": now,
        "lat": FIX_LAT.parse::<f64>().unwrap(), "lon": FIX_LON.parse::<f64>().unwrap(), "accuracy_m": 10}));
    let (s, v) = request(
        addr,
        "POST",
        "/v1/events",
        &serde_json::json!({"user_id": user, "events": events}).to_string(),
    );
    assert_eq!(s, 200, "{v}");
    let decision = &v["results"][5]["decision"];
    assert_eq!(decision["verdict"], "sent", "{v}");
    let delivery = decision["delivery_id"].as_str().expect("a delivery id");
    let outcomes = serde_json::json!({"user_id": user, "events": [
        {"event_id": "o", "type": "notification_opened", "at": now, "offer_id": "off-erasure", "delivery_id": delivery},
        {"event_id": "r", "type": "coupon_redeemed", "at": now, "offer_id": "off-erasure", "delivery_id": delivery}]});
    let (s, v) = request(addr, "POST", "/v1/events", &outcomes.to_string());
    assert_eq!(s, 200, "{v}");
}

/// Every file under `dir` with how many times `needle` occurs in its bytes.
fn occurrences(dir: &Path, needle: &str) -> Vec<(PathBuf, usize)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let n = bytes
            .windows(needle.len())
            .filter(|w| *w == needle.as_bytes())
            .count();
        out.push((path, n));
    }
    out
}

fn found(dir: &Path, needle: &str) -> Vec<(PathBuf, usize)> {
    occurrences(dir, needle)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

enum End {
    Clean,
    Crash,
}

fn erase_and_search(end: End) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path());
    configure(&addr);
    live_a_little(&addr, SUBJECT, SUBJECT_TOKEN, SUBJECT_PRODUCT);
    live_a_little(&addr, KEEPER, KEEPER_TOKEN, KEEPER_PRODUCT);
    // Before the erasure the search finds the subject: in the database (or its WAL) and
    // in the outbox.
    for needle in [SUBJECT, SUBJECT_TOKEN, SUBJECT_PRODUCT] {
        assert!(
            !found(dir.path(), needle).is_empty(),
            "{needle} not written at all"
        );
    }
    let (s, v) = request(&addr, "DELETE", &format!("/v1/users/{SUBJECT}"), "");
    assert_eq!(s, 200, "{v}");
    assert!(v["erased_records"].as_u64().unwrap() >= 8, "{v}");
    match end {
        End::Crash => child.kill().unwrap(),
        End::Clean => {
            let ok = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    let status = child.wait().unwrap();
    if matches!(end, End::Clean) {
        assert!(
            status.success(),
            "serve did not shut down cleanly: {status}"
        );
    }
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(files.contains(&"n.db".to_string()), "{files:?}");
    for needle in [SUBJECT, SUBJECT_TOKEN, SUBJECT_PRODUCT] {
        assert_eq!(
            found(dir.path(), needle),
            vec![],
            "{needle} still readable after the erasure (files {files:?})"
        );
    }
    // The coupon is the offer's, so the offer keeps it once and so does the audit entry
    // of the change that saved it (configuration, not anyone's data); the subject's push
    // that carried it is gone from the deliveries and the outbox, the keeper's is not.
    let coupon = occurrences(dir.path(), COUPON);
    let db = coupon
        .iter()
        .find(|(p, _)| p.ends_with("n.db"))
        .map_or(0, |(_, n)| *n);
    let outbox = coupon
        .iter()
        .find(|(p, _)| p.ends_with("outbox.jsonl"))
        .map_or(0, |(_, n)| *n);
    assert_eq!(
        outbox, 1,
        "the outbox keeps the keeper's push only: {coupon:?}"
    );
    assert_eq!(
        db, 3,
        "the offer, its audit entry and the keeper's delivery: {coupon:?}"
    );
    // The person who was not erased is all there, except any position: no location trail.
    for needle in [KEEPER, KEEPER_TOKEN, KEEPER_PRODUCT] {
        assert!(
            found(dir.path(), needle)
                .iter()
                .any(|(p, _)| p.ends_with("n.db")),
            "{needle} lost"
        );
    }
    for needle in [FIX_LAT, FIX_LON] {
        assert_eq!(found(dir.path(), needle), vec![], "a position was kept");
    }
}

#[test]
fn an_erased_person_cannot_be_read_back_from_any_file_after_a_clean_shutdown() {
    erase_and_search(End::Clean);
}

#[test]
fn an_erased_person_cannot_be_read_back_from_any_file_after_a_sigkill() {
    erase_and_search(End::Crash);
}
