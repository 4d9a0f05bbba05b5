//! `nearcast export` on the demo day: from the SQLite file, and from DynamoDB on moto
//! (through the real AWS SDK; the test starts moto's server, see `nearcast_aws::moto`).

use nearcast::demo::{DemoOptions, load_config_dir, replay, run_demo};
use nearcast::{load_model, load_weather};
use nearcast_aws::DynamoStateStore;
use nearcast_core::engine::Engine;
use nearcast_core::export::TrainingRecord;
use nearcast_core::memory::RecordingNotifier;
use nearcast_core::ports::ManualClock;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

fn nearcast(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearcast"));
    // The AWS backend goes to moto's server (started on first use).
    if args.windows(2).any(|w| w == ["--backend", "aws"]) {
        cmd.envs(nearcast_aws::moto::shared().env());
    }
    let out = cmd.args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "nearcast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The demo day replayed into `work` (its SQLite file and outbox): the engine, the report.
async fn demo_day(work: &Path) -> (Arc<Engine>, nearcast::demo::Report) {
    let (engine, report, _) = run_demo(&DemoOptions {
        data: data(),
        work: work.to_path_buf(),
        model: None,
    })
    .await
    .unwrap();
    (engine, report)
}

fn records(path: &Path) -> Vec<TrainingRecord> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let r: TrainingRecord = serde_json::from_str(l).expect("a nearcast-training/1 line");
            r.validate().expect("valid");
            r
        })
        .collect()
}

/// The per-user walk gives exactly the records of one join over the whole log (sorted:
/// the walk groups by user), also with time bounds; a writer that fails stops the export
/// with an I/O error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_export_equals_a_join_of_the_whole_log() {
    use nearcast_core::export::{JoinOptions, join};
    let work = tempfile::tempdir().unwrap();
    let (engine, _) = demo_day(work.path()).await;
    let store = engine.store();
    let (decisions, outcomes) = (
        store.decisions().await.unwrap(),
        store.outcomes().await.unwrap(),
    );
    assert!(!outcomes.is_empty());
    let sorted = |mut rs: Vec<TrainingRecord>| {
        rs.sort_by_cached_key(|r| serde_json::to_string(r).unwrap());
        rs
    };
    let mut bounded = JoinOptions::new(b"k".to_vec());
    let mid = decisions[decisions.len() / 2].at;
    bounded.since = Some(mid - chrono::Duration::hours(2));
    bounded.until = Some(mid + chrono::Duration::hours(2));
    for opts in [JoinOptions::new(b"k".to_vec()), bounded] {
        let mut out = Vec::new();
        let n = nearcast::export::export_to(&**store, &opts, &mut out)
            .await
            .unwrap();
        let walked: Vec<TrainingRecord> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(n, walked.len());
        let whole = join(&decisions, &outcomes, &opts);
        assert!(!whole.is_empty());
        assert_eq!(sorted(walked), sorted(whole));
    }

    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let failed = nearcast::export::export_to(&**store, &JoinOptions::new(b"k".to_vec()), &mut Full)
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("disk full"), "{failed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_day_exports_as_training_records_with_outcomes_joined() {
    let work = tempfile::tempdir().unwrap();
    let (engine, report) = demo_day(work.path()).await;
    let logged = engine.store().decisions().await.unwrap();
    drop(engine);
    let db = work.path().join("nearcast.db");
    let out = work.path().join("export.jsonl");
    let stderr = nearcast(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .stderr;
    let rs = records(&out);
    assert_eq!(rs.len(), logged.len());
    assert!(String::from_utf8_lossy(&stderr).contains(&format!("exported {} records", rs.len())));
    let sent = rs.iter().filter(|r| r.verdict == "sent").count() as u64;
    assert_eq!(sent, report.sent);

    // Anna is sent the morning coffee at 06:49:52, opens it at 06:52:40 and redeems it at
    // 06:56:15 (events/demo-day.jsonl): the sent candidate carries both outcomes.
    let anna = rs
        .iter()
        .find(|r| r.decision_id == "u-anna-0018")
        .expect("anna's coffee decision");
    assert_eq!(anna.verdict, "sent");
    let chosen = anna
        .candidates
        .iter()
        .find(|c| c.sent)
        .expect("a sent candidate");
    assert_eq!(chosen.offer_id, "off-morning-coffee");
    assert!(chosen.opened && chosen.redeemed);
    // Candidates that were not sent are never opened.
    assert!(
        rs.iter()
            .flat_map(|r| &r.candidates)
            .all(|c| !c.opened || c.sent)
    );
    // No user id anywhere in the file.
    let text = std::fs::read_to_string(&out).unwrap();
    for user in ["anna", "ben", "carla", "dmitri", "eeva", "farid"] {
        assert!(!text.contains(&format!("\"{user}\"")), "{user} leaked");
    }

    // A narrower window, and time bounds.
    let narrow = work.path().join("narrow.jsonl");
    nearcast(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--out",
        narrow.to_str().unwrap(),
        "--since",
        "2026-11-20T06:00:00Z",
        "--until",
        "2026-11-20T07:00:00Z",
    ]);
    let rs = records(&narrow);
    assert!(!rs.is_empty() && rs.len() < logged.len());
    let bound = |t: &str| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert!(
        rs.iter()
            .all(|r| r.at >= bound("2026-11-20T06:00:00Z") && r.at < bound("2026-11-20T07:00:00Z"))
    );

    // Bad arguments: a clear error, no file.
    let bad = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args([
            "export",
            "--db",
            db.to_str().unwrap(),
            "--window-hours",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--window-hours"));
}

/// The same day on DynamoDB exports the same records as on SQLite (same pseudonym key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_exports_the_same_records_as_sqlite() {
    let moto = nearcast_aws::moto::shared();
    let work = tempfile::tempdir().unwrap();
    demo_day(work.path()).await;
    let table = format!(
        "export-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let client = moto.dynamodb(None).await;
    DynamoStateStore::create_table(&client, &table)
        .await
        .unwrap();
    let clock = ManualClock::new(chrono::Utc::now());
    let engine = Engine::new(
        Arc::new(DynamoStateStore::new(client, table.clone())),
        Arc::new(RecordingNotifier::new()),
        Arc::new(load_weather(&data().join("weather.json")).unwrap()),
        Arc::new(clock.clone()),
        load_model(None).unwrap(),
    )
    .await
    .unwrap();
    load_config_dir(&engine, &data()).await.unwrap();
    replay(&engine, &clock, &data().join("demo-day.jsonl"))
        .await
        .unwrap();
    // The demo's till redeems a coupon after the day: the same here.
    nearcast::demo::till(&engine).await.unwrap();

    let key = work.path().join("key");
    std::fs::write(&key, b"a shared secret").unwrap();
    let from_sqlite = work.path().join("sqlite.jsonl");
    let from_dynamo = work.path().join("dynamo.jsonl");
    let db = work.path().join("nearcast.db");
    let k = key.to_str().unwrap();
    nearcast(&[
        "export",
        "--db",
        db.to_str().unwrap(),
        "--key-file",
        k,
        "--out",
        from_sqlite.to_str().unwrap(),
    ]);
    nearcast(&[
        "export",
        "--backend",
        "aws",
        "--table",
        &table,
        "--key-file",
        k,
        "--out",
        from_dynamo.to_str().unwrap(),
    ]);
    // Users come in each store's own order; each user's records oldest first.
    let sorted = |mut rs: Vec<TrainingRecord>| {
        rs.sort_by_cached_key(|r| serde_json::to_string(r).unwrap());
        rs
    };
    let a = sorted(records(&from_sqlite));
    assert!(a.iter().any(|r| r.candidates.iter().any(|c| c.opened)));
    assert_eq!(a, sorted(records(&from_dynamo)));
}
