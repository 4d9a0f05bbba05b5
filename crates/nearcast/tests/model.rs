//! `nearcast model publish | rollback | status` to a folder and to S3 (on moto, through the
//! real AWS SDK; to S3 each change is announced on the functions' table), `nearcast model
//! announce`, and `nearcast serve --challenger`.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn nearcast(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearcast"));
    cmd.env_remove("NEARCAST_TABLE");
    // Commands on S3 (and the table that announces models) go to moto's server (started
    // on first use).
    if args
        .iter()
        .any(|a| a.starts_with("s3://") || *a == "--table")
    {
        cmd.envs(nearcast_aws::moto::shared().env());
    }
    cmd.args(args).output().expect("runs")
}

fn ok(args: &[&str]) -> String {
    let out = nearcast(args);
    assert!(
        out.status.success(),
        "nearcast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(args: &[&str]) -> String {
    let out = nearcast(args);
    assert!(!out.status.success(), "nearcast {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The bundled artifact as version `v`, written to `dir/<v>.json`.
fn artifact(dir: &Path, v: &str) -> String {
    let mut a: serde_json::Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    a["version"] = v.into();
    let p = dir.join(format!("{v}.json"));
    std::fs::write(&p, serde_json::to_vec(&a).unwrap()).unwrap();
    p.to_str().unwrap().to_string()
}

/// Publish, refuse bad artifacts, roll back: the same story on any model store. `extra`
/// goes with every publish and rollback; `current` reads the current artifact's version.
fn story(to: &str, extra: &[&str], current: &dyn Fn() -> Option<String>) {
    let work = tempfile::tempdir().unwrap();
    let v1 = artifact(work.path(), "2026-11-01.1");
    let v2 = artifact(work.path(), "2026-11-20.1");
    let ok = |args: &[&str]| ok(&[args, extra].concat());
    let refused = |args: &[&str]| refused(&[args, extra].concat());
    assert!(ok(&["model", "publish", &v1, "--to", to]).contains("published 2026-11-01.1"));
    assert_eq!(current().as_deref(), Some("2026-11-01.1"));

    // Corrupt, and trained on other features: refused with the reason, nothing changes.
    let corrupt = work.path().join("corrupt.json");
    std::fs::write(&corrupt, "{\"format\": \"nearcast-ranker/1\", \"weig").unwrap();
    let e = refused(&["model", "publish", corrupt.to_str().unwrap(), "--to", to]);
    assert!(e.contains("not valid"), "{e}");
    let mut other: serde_json::Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    other["schema_hash"] = "0123456789abcdef".into();
    other["version"] = "2026-11-21.1".into();
    let mismatched = work.path().join("mismatched.json");
    std::fs::write(&mismatched, other.to_string()).unwrap();
    let e = refused(&["model", "publish", mismatched.to_str().unwrap(), "--to", to]);
    assert!(
        e.contains("schema") && e.contains("nothing published"),
        "{e}"
    );
    assert_eq!(current().as_deref(), Some("2026-11-01.1"));

    ok(&["model", "publish", &v2, "--to", to]);
    assert_eq!(current().as_deref(), Some("2026-11-20.1"));
    let status: serde_json::Value =
        serde_json::from_str(&crate::ok(&["model", "status", "--to", to])).unwrap();
    assert_eq!(status["current"], "2026-11-20.1");
    assert_eq!(
        status["history"]["stack"],
        serde_json::json!(["2026-11-01.1", "2026-11-20.1"])
    );

    assert!(ok(&["model", "rollback", "--to", to]).contains("rolled back to 2026-11-01.1"));
    assert_eq!(current().as_deref(), Some("2026-11-01.1"));
    let e = refused(&["model", "rollback", "--to", to]);
    assert!(e.contains("no previous model"), "{e}");
    assert_eq!(current().as_deref(), Some("2026-11-01.1"));
}

/// Runs `f` to completion from synchronous code inside a multi-threaded test runtime.
fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn version_of(bytes: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v["version"].as_str().unwrap().to_string()
}

#[test]
fn publish_and_rollback_in_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("models");
    let current = to.join("ranker.json");
    story(to.to_str().unwrap(), &[], &|| {
        std::fs::read(&current).ok().map(|b| version_of(&b))
    });
    // Every version is kept.
    assert!(to.join("versions/2026-11-01.1.json").exists());
    assert!(to.join("versions/2026-11-20.1.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_rollback_in_s3() {
    use nearcast_aws::DynamoStateStore;
    use nearcast_aws::model_store::S3Blobs;
    let bucket = format!("publish-{}", std::process::id());
    let client = nearcast_aws::moto::shared().s3(None).await;
    S3Blobs::create_bucket(&client, &bucket).await.unwrap();
    let blobs = S3Blobs::new(client, &bucket, "prod/ranker.json");
    let table = format!("publish-{}", std::process::id());
    let dynamo = nearcast_aws::moto::shared().dynamodb(None).await;
    DynamoStateStore::ensure_table(&dynamo, &table)
        .await
        .unwrap();
    let store = DynamoStateStore::new(dynamo, &table);
    let to = format!("s3://{bucket}/prod/ranker.json");
    let current = || {
        block(blobs.get_object("prod/ranker.json"))
            .unwrap()
            .map(|b| version_of(&b))
    };
    let announcements = || block(store.versions()).unwrap().model;

    // To S3, the functions' table is required, so that running functions learn of the
    // change; a table that cannot be read stops the publish before anything is written.
    let work = tempfile::tempdir().unwrap();
    let v0 = artifact(work.path(), "2026-10-01.1");
    let e = refused(&["model", "publish", &v0, "--to", &to]);
    assert!(e.contains("--table") && e.contains("required"), "{e}");
    let e = refused(&[
        "model",
        "publish",
        &v0,
        "--to",
        &to,
        "--table",
        "no-such-table",
    ]);
    assert!(e.contains("nothing published"), "{e}");
    assert_eq!(current(), None);

    // The story: 2 publishes and 1 rollback succeed, each announced once; the refused
    // ones announce nothing.
    tokio::task::block_in_place(|| story(&to, &["--table", &table], &current));
    assert_eq!(announcements(), 3);
    let kept = block(blobs.get_object("prod/ranker.json.versions/2026-11-20.1.json")).unwrap();
    assert!(kept.is_some());
    let e = refused(&["model", "status", "--to", "s3://no-key"]);
    assert!(e.contains("expected s3://bucket/key"), "{e}");

    // `announce` alone, after the objects were changed some other way.
    assert!(ok(&["model", "announce", "--table", &table]).contains("model change 4"));
    assert_eq!(announcements(), 4);
}

#[test]
fn serve_runs_a_challenger_and_refuses_a_bad_share() {
    let dir = tempfile::tempdir().unwrap();
    let ch = artifact(dir.path(), "challenger-1");
    let db = dir.path().join("n.db");
    let outbox = dir.path().join("o.jsonl");
    let common = [
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--outbox",
        outbox.to_str().unwrap(),
        "--challenger",
        &ch,
    ];
    let mut args = common.to_vec();
    args.extend(["--challenger-share", "1.5"]);
    let e = refused(&args);
    assert!(e.contains("challenger_share"), "{e}");

    let mut args = common.to_vec();
    args.extend(["--challenger-share", "0.2"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearcast"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .expect("listening line")
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /v1/admin/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains(r#""challenger":{"share":0.2,"version":"challenger-1"}"#),
        "{resp}"
    );
}
