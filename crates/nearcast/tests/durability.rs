//! Invariant 4, "no accepted event is lost": `nearcast serve` is killed with SIGKILL between
//! acknowledged batches; after a restart on the same file every acknowledged event is there
//! (resending it answers "duplicate") and the state is consistent: deliveries (one push per
//! sent decision), caps and presence.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn start(db: &Path, outbox: &Path) -> (Child, String) {
    start_with(
        db,
        outbox,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events"),
    )
}

/// `nearcast serve` on `db` and `outbox`, its catalog from `config`; (process, address).
fn start_with(db: &Path, outbox: &Path, config: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["serve", "--addr", "127.0.0.1:0", "--db"])
        .arg(db)
        .arg("--outbox")
        .arg(outbox)
        .arg("--config")
        .arg(config)
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

/// A request that may meet a dead server: `None` when the connection fails or closes
/// without an answer.
fn try_post(addr: &str, body: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    if resp.get(9..12)? != "200" {
        return None;
    }
    serde_json::from_str(resp.split("\r\n\r\n").nth(1)?).ok()
}

/// Three stores 250 m apart, one enter offer each that always scores above its threshold.
fn write_config(dir: &Path) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = (0..3)
        .map(|i| (60.1650 + 0.00225 * i as f64, 24.9300))
        .collect();
    let stores: Vec<serde_json::Value> = points.iter().enumerate().map(|(i, (lat, lon))| {
        serde_json::json!({"id": format!("s{i}"), "name": format!("Store {i}"), "category": "cafe",
            "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": lat, "lon": lon, "radius_m": 60}})
    }).collect();
    let offers: Vec<serde_json::Value> = (0..3).map(|i| {
        serde_json::json!({"id": format!("o{i}"), "campaign_id": "c1", "title": "Coffee", "body": "Half price",
            "category": "coffee", "store_ids": [format!("s{i}")], "trigger": {"type": "enter"}, "threshold": 0.0})
    }).collect();
    std::fs::write(
        dir.join("stores.json"),
        serde_json::to_string(&stores).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("offers.json"),
        serde_json::to_string(&offers).unwrap(),
    )
    .unwrap();
    points
}

/// One user's events, one batch each: consents and a token, then a walk through the three
/// stores (two minutes apart, a walker's pace) with a second fix in the first.
fn walk(user: &str, points: &[(f64, f64)], t0: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let at = |m: i64| (t0 + chrono::Duration::minutes(m)).to_rfc3339();
    let mut onboarding = vec![
        serde_json::json!({"event_id": format!("{user}-tok"), "type": "push_token",
        "at": at(0), "platform": "fcm", "token": format!("token-{user}")}),
    ];
    for p in ["push", "location", "personalisation"] {
        onboarding.push(
            serde_json::json!({"event_id": format!("{user}-c-{p}"), "type": "consent",
            "at": at(0), "purpose": p, "granted": true}),
        );
    }
    let mut batches = vec![serde_json::json!({"user_id": user, "events": onboarding})];
    for (k, (store, minute)) in [(0, 1), (0, 2), (1, 4), (2, 6)].into_iter().enumerate() {
        let (lat, lon) = points[store];
        batches.push(
            serde_json::json!({"user_id": user, "events": [{"event_id": format!("{user}-f{k}"),
            "type": "location", "at": at(minute), "lat": lat, "lon": lon, "accuracy_m": 8}]}),
        );
    }
    batches.iter().map(|b| b.to_string()).collect()
}

/// The delivery ids in the outbox, in order.
fn outbox_deliveries(outbox: &Path) -> Vec<String> {
    std::fs::read_to_string(outbox)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole outbox lines");
            v["delivery_id"]
                .as_str()
                .expect("a delivery id")
                .to_string()
        })
        .collect()
}

/// SIGKILL while ten users post at once, three times. After a restart on the same file:
/// every acknowledged event answers `duplicate` with the decision first answered; resending
/// every planned event completes each walk; the outbox holds exactly one push per sent
/// decision (none twice, none missing: the relay at start sends what a kill orphaned); no
/// user got more than the daily cap; and presence survived (a fix in the store a walk ended
/// in is not a new visit).
#[test]
fn sigkill_mid_traffic_keeps_deliveries_caps_and_presence_consistent() {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let outbox = dir.path().join("outbox.jsonl");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let points = write_config(&config);
    let start_cfg = |db: &Path, outbox: &Path| start_with(db, outbox, &config);
    let t0 = chrono::Utc::now() - chrono::Duration::minutes(8);
    let per_day = 2;
    let mut plans: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let acked: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    for round in 0..3 {
        let (mut child, addr) = start_cfg(&db, &outbox);
        let policy = serde_json::json!({"per_day": per_day, "per_week": 14, "min_gap_minutes": 0,
            "quiet_start": "00:00:00", "quiet_end": "00:00:00"});
        let (s, v) = support::request(&addr, "PUT", "/v1/admin/policy", &policy.to_string());
        assert_eq!(s, 200, "{v}");
        let mut threads = Vec::new();
        for u in 0..10 {
            let user = format!("r{round}u{u}");
            let plan = walk(&user, &points, t0);
            plans.insert(user, plan.clone());
            let (addr, acked) = (addr.clone(), acked.clone());
            threads.push(std::thread::spawn(move || {
                for body in plan {
                    match try_post(&addr, &body) {
                        Some(v) => acked.lock().unwrap().push((body, v)),
                        None => return,
                    }
                }
            }));
        }
        // Kill once a third of this round's batches were answered, others in flight.
        let target = acked.lock().unwrap().len() + 17;
        while acked.lock().unwrap().len() < target {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        for t in threads {
            t.join().unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 51,
        "answers before the kills: {}",
        acked.len()
    );

    let (mut child, addr) = start_cfg(&db, &outbox);
    // Acknowledged events are kept, with their first answer.
    for (body, first) in &acked {
        let (s, v) = post(&addr, "/v1/events", body);
        assert_eq!(s, 200, "{v}");
        for (a, b) in v["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(first["results"].as_array().unwrap())
        {
            assert_eq!(
                a["status"], "duplicate",
                "an acknowledged event was lost: {v}"
            );
            assert_eq!(a["decision"], b["decision"], "the first answer is kept");
        }
    }
    // Every walk completed: sent decisions per user.
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    for (user, plan) in &plans {
        let mut n = 0;
        for body in plan {
            let (s, v) = post(&addr, "/v1/events", body);
            assert_eq!(s, 200, "{v}");
            for r in v["results"].as_array().unwrap() {
                if r["decision"]["verdict"] == "sent" {
                    let d = r["decision"]["delivery_id"]
                        .as_str()
                        .expect("a delivery id");
                    sent.insert(d.to_string(), user.clone());
                    n += 1;
                }
            }
        }
        assert!(n <= per_day, "{user}: {n} pushes for a cap of {per_day}");
        assert_eq!(
            n, per_day,
            "{user}: the walk passes three stores, the cap allows {per_day}"
        );
        // Presence survived: the walk ended inside store s2, so this is the same visit.
        let (lat, lon) = points[2];
        let again = serde_json::json!({"user_id": user, "events": [{"event_id": format!("{user}-again"),
            "type": "location", "at": (t0 + chrono::Duration::minutes(7)).to_rfc3339(), "lat": lat, "lon": lon, "accuracy_m": 8}]});
        let (s, v) = post(&addr, "/v1/events", &again.to_string());
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["results"][0]["decision"]["verdict"], "none",
            "{user}: no second enter after the restart: {v}"
        );
    }
    // The outbox: each sent decision exactly once, nothing else.
    let pushed = outbox_deliveries(&outbox);
    let unique: BTreeSet<&String> = pushed.iter().collect();
    assert_eq!(unique.len(), pushed.len(), "a push went out twice");
    assert_eq!(
        unique,
        sent.keys().collect::<BTreeSet<_>>(),
        "the outbox holds exactly the sent decisions"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
