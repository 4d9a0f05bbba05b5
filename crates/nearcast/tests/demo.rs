//! The demo, run inside the tests: its stories must come out as told in events/README.md.

use nearcast::demo::{DemoOptions, run_demo};
use nearcast_core::decision::{Decision, Verdict};
use std::collections::HashSet;
use std::path::PathBuf;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn of<'a>(ds: &'a [Decision], user: &str) -> Vec<&'a Decision> {
    ds.iter().filter(|d| d.user_id.as_str() == user).collect()
}

fn sent(ds: &[&Decision]) -> usize {
    ds.iter().filter(|d| d.verdict == Verdict::Sent).count()
}

fn code(d: &Decision) -> &str {
    d.reason.as_ref().map_or("", |r| r.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_tells_its_stories() {
    let work = tempfile::tempdir().unwrap();
    let (_engine, report, outbox) = run_demo(&DemoOptions {
        data: data(),
        work: work.path().to_path_buf(),
        model: None,
    })
    .await
    .unwrap();
    let ds = &report.decisions;
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert!(report.events >= 400);
    assert!(report.sent >= 5, "pushes: {}", report.sent);

    // Ben never gave location consent: every fix suppressed, nothing kept, nothing sent.
    let ben = of(ds, "ben");
    assert!(ben.len() >= 50);
    assert!(
        ben.iter()
            .all(|d| code(d) == "no_consent_location" && d.candidates.is_empty())
    );
    assert_eq!(report.suppressed["no_consent_location"] as usize, ben.len());

    // Carla withdrew push consent at 13:00 local (11:00Z): nothing after, and the
    // suppressions say why.
    let withdrawn: chrono::DateTime<chrono::Utc> = "2026-11-20T11:00:00Z".parse().unwrap();
    let carla = of(ds, "carla");
    assert!(
        carla
            .iter()
            .filter(|d| d.at > withdrawn)
            .all(|d| d.verdict != Verdict::Sent)
    );
    assert!(
        carla
            .iter()
            .any(|d| d.at > withdrawn && code(d) == "no_consent_push")
    );
    assert_eq!(sent(&carla), 1, "her lunch push before the withdrawal");

    // Dmitri bought the rain jacket: never offered it again.
    let dmitri = of(ds, "dmitri");
    assert!(dmitri.iter().any(|d| code(d) == "already_bought"));
    assert!(!dmitri.iter().any(|d| {
        d.verdict == Verdict::Sent
            && d.offer_id
                .as_ref()
                .is_some_and(|o| o.as_str() == "off-rain-jacket")
    }));

    // Eeva lingers at a fence edge for 20 minutes: one decision there, not a second enter.
    let eeva = of(ds, "eeva");
    let kaisaniemi: Vec<_> = eeva
        .iter()
        .filter(|d| {
            d.store_id
                .as_ref()
                .is_some_and(|s| s.as_str() == "osm-node-59631978")
        })
        .collect();
    assert_eq!(kaisaniemi.len(), 1, "{kaisaniemi:?}");

    // Anna walks past many cafés: caps hold (2 a day, an hour apart), and quiet hours are kept.
    let anna = of(ds, "anna");
    assert!(sent(&anna) <= 2);
    assert!(anna.iter().any(|d| code(d) == "capped"));
    assert!(anna.iter().any(|d| code(d) == "quiet_hours"));

    // No push in quiet hours (21:00-08:00 local) for anyone; caps per user per day hold.
    for d in ds.iter().filter(|d| d.verdict == Verdict::Sent) {
        let local =
            chrono::DateTime::parse_from_rfc3339(&d.context.as_ref().unwrap().local_time).unwrap();
        let h = chrono::Timelike::hour(&local);
        assert!((8..21).contains(&h), "push at {local}");
    }
    for u in ["anna", "carla", "dmitri", "eeva", "farid"] {
        assert!(sent(&of(ds, u)) <= 2, "{u}");
    }

    // Every push is in the outbox exactly once, without its token.
    let lines: Vec<String> = std::fs::read_to_string(&outbox)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len() as u64, report.sent);
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["delivery_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), lines.len());
    assert!(lines.iter().all(|l| !l.contains("token")));

    // The rainy-day campaign's pushes each carry their own code from its pool, in the text
    // too; the till redeems one once and is refused the second time.
    let pool: HashSet<String> = std::fs::read_to_string(data().join("coupons/cmp-rainy-day.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect();
    let rainy: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|p| p["campaign_id"] == "cmp-rainy-day")
        .collect();
    assert!(!rainy.is_empty());
    let mut codes = HashSet::new();
    for p in &rainy {
        let code = p["coupon"].as_str().unwrap();
        assert!(pool.contains(code), "{code} from the pool");
        assert!(codes.insert(code.to_string()), "{code} given twice");
        assert!(p["body"].as_str().unwrap().contains(code), "{p}");
    }
    assert!(
        report.coupons[0].contains("200 codes"),
        "{:?}",
        report.coupons
    );
    assert!(
        report.coupons[1].contains("(first): redeemed"),
        "{:?}",
        report.coupons
    );
    assert!(
        report.coupons[2].contains("(again): refused"),
        "{:?}",
        report.coupons
    );
}

#[test]
fn the_demo_command_exits_zero_and_prints_the_table_and_summary() {
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(["demo", "--data"])
        .arg(data())
        .arg("--work")
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "SENT",
        "SUPPRESSED",
        "no consent: location",
        "no consent: push",
        "already bought",
        "Summary",
        "decision time",
        "p99",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(work.path().join("outbox.jsonl").exists());
}
