//! No personal data in logs: the demo day runs with every log on (`NEARCAST_LOG=debug`, every
//! crate), and nothing it logged holds a user id, a push token, a coordinate or a product id
//! of the day's events. Logs carry delivery, offer and store ids only.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

/// The personal values of the demo day: user ids, tokens, product ids, and every
/// coordinate as written in the file (6 decimals: about 0.1 m).
fn personal_values() -> BTreeSet<String> {
    let text = std::fs::read_to_string(data().join("demo-day.jsonl")).unwrap();
    let mut out = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for k in ["user_id", "token", "product_id"] {
            if let Some(s) = v[k].as_str() {
                out.insert(s.to_string());
            }
        }
        for k in ["lat", "lon"] {
            if let Some(x) = v[k].as_f64() {
                out.insert(format!("{x}"));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `hay` as a whole token (not inside a longer word or number).
fn occurs(hay: &str, needle: &str) -> bool {
    let boundary = |c: Option<char>| {
        c.is_none_or(|c| !(c.is_alphanumeric() || c == '.' || c == '-' || c == '_'))
    };
    hay.match_indices(needle).any(|(i, _)| {
        boundary(hay[..i].chars().next_back()) && boundary(hay[i + needle.len()..].chars().next())
    })
}

#[test]
fn the_demo_day_logs_no_user_id_token_coordinate_or_product_id() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .arg("demo")
        .arg("--data")
        .arg(data())
        .arg("--work")
        .arg(work.path())
        .env("NEARCAST_LOG", "debug")
        .output()
        .expect("run the demo");
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    // The demo logged something at all: one line per push written to the outbox.
    assert!(
        logs.matches("push written to outbox").count() >= 5,
        "too few log lines: {logs}"
    );
    let values = personal_values();
    assert!(values.len() > 100, "{}", values.len());
    let leaked: Vec<&String> = values.iter().filter(|v| occurs(&logs, v)).collect();
    assert!(leaked.is_empty(), "logged: {leaked:?}");
    // The check itself finds what is there: the report on stdout names the users.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(occurs(&report, "anna"), "{report}");
}
