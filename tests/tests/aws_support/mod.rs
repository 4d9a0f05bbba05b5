//! Shared by the `aws_*` tests: a TCP proxy on loopback in front of moto that a test can
//! cut (the real SDK then sees connection failures) and that counts the requests passing
//! through it by operation, plus helpers to read moto's state.

#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// True under `scripts/moto.sh`; otherwise prints a loud skip message and returns false.
pub fn moto_or_skip(case: &str) -> bool {
    if std::env::var_os("NEARCAST_MOTO").is_some() {
        return true;
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !!! SKIPPED: AWS tests need moto; run via scripts/moto.sh ({case})\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
    false
}

/// moto's endpoint, `http://127.0.0.1:PORT`.
pub fn moto_url() -> String {
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (set by scripts/moto.sh)")
}

/// A unique name for a table or application.
pub fn unique(case: &str) -> String {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}-{}-{}",
        case.replace('_', "-"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    )
}

/// No request budget: every request passes.
const UNLIMITED: i64 = i64::MAX;

struct ProxyState {
    up: AtomicBool,
    /// Requests still allowed before the proxy cuts itself.
    budget: AtomicI64,
    counts: Mutex<BTreeMap<String, u64>>,
    /// Bumped on every cut: open connections close.
    cuts: watch::Sender<u64>,
}

/// A loopback TCP proxy to moto. Requests are recognised by their operation: DynamoDB's
/// `x-amz-target: DynamoDB_20120810.<Op>` header, SNS's `Action=<Op>` form field, the S3
/// SDK's `x-id=<Op>` query parameter (GetObject, PutObject).
pub struct Proxy {
    /// The proxy's endpoint, to give the SDK.
    pub url: String,
    state: Arc<ProxyState>,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Proxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let state = Arc::new(ProxyState {
            up: AtomicBool::new(true),
            budget: AtomicI64::new(UNLIMITED),
            counts: Mutex::new(BTreeMap::new()),
            cuts: watch::channel(0).0,
        });
        let s = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !s.up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let s = s.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        connection(s, client, server).await;
                    }
                });
            }
        });
        Proxy { url, state }
    }

    /// Cuts the proxy: open connections close, new ones are closed at once.
    pub fn cut(&self) {
        cut(&self.state);
    }

    /// Lets `n` more requests through, then cuts (the `n + 1`-th never reaches moto).
    pub fn fail_after(&self, n: i64) {
        self.state.budget.store(n, Ordering::SeqCst);
    }

    /// Back up, without a budget.
    pub fn restore(&self) {
        self.state.budget.store(UNLIMITED, Ordering::SeqCst);
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Requests seen since the last reset, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Requests seen since the last reset.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        self.state.counts.lock().unwrap().clear();
    }
}

fn cut(s: &ProxyState) {
    s.up.store(false, Ordering::SeqCst);
    s.cuts.send_modify(|n| *n += 1);
}

/// Operation names found in `buf` from `from` on; returns them and where scanning may
/// resume (a marker whose name is not complete yet is scanned again with more data).
fn operations(buf: &[u8], from: usize) -> (Vec<String>, usize) {
    const MARKERS: [(&[u8], &[u8]); 3] = [
        (b"x-amz-target: dynamodb_20120810.", b"\r"),
        (b"action=", b"&"),
        (b"x-id=", b" &"),
    ];
    let lower = buf.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut pos = from;
    loop {
        let next = MARKERS
            .iter()
            .filter_map(|(m, end)| {
                lower[pos.min(lower.len())..]
                    .windows(m.len())
                    .position(|w| w == *m)
                    .map(|i| (pos + i, m.len(), *end))
            })
            .min_by_key(|(at, _, _)| *at);
        let Some((at, len, end)) = next else {
            // No marker: only a marker's beginning at the very end can still grow into one.
            pos = pos.max(buf.len().saturating_sub(40));
            break;
        };
        let name_start = at + len;
        let Some(n) = buf[name_start..].iter().position(|b| end.contains(b)) else {
            // The name continues in the next read.
            pos = at;
            break;
        };
        found.push(String::from_utf8_lossy(&buf[name_start..name_start + n]).into_owned());
        pos = name_start + n;
    }
    (found, pos)
}

async fn connection(s: Arc<ProxyState>, client: TcpStream, server: TcpStream) {
    let mut cuts = s.cuts.subscribe();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending: Vec<u8> = Vec::new();
        let mut from = 0;
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            let (ops, next) = operations(&pending, from);
            for op in ops {
                let left = s.budget.fetch_sub(1, Ordering::SeqCst);
                if left <= 0 || !s.up.load(Ordering::SeqCst) {
                    cut(&s);
                    return;
                }
                *s.counts.lock().unwrap().entry(op).or_default() += 1;
            }
            // Keep a tail for markers split across reads.
            let keep_from = next.min(pending.len().saturating_sub(64));
            pending.drain(..keep_from);
            from = next - keep_from;
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cuts.changed() => {}
    }
}

/// APNs and FCM platform applications made on moto for `case` (names unique per run):
/// `(apns, fcm)` ARNs.
pub async fn platform_applications(
    client: &nearcast_aws::sns::aws_sdk_sns::Client,
    case: &str,
) -> (Option<String>, Option<String>) {
    let suffix = format!(
        "{case}-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let mut arns = Vec::new();
    for (platform, credential) in [("APNS", "dummy-p12-key"), ("GCM", "dummy-fcm-key")] {
        let out = client
            .create_platform_application()
            .name(format!("nearcast-{platform}-{suffix}"))
            .platform(platform)
            .attributes("PlatformCredential", credential)
            .attributes("PlatformPrincipal", "dummy-principal")
            .send()
            .await
            .expect("create platform application on moto");
        arns.push(out.platform_application_arn().expect("arn").to_string());
    }
    let fcm = arns.pop();
    (arns.pop(), fcm)
}

/// moto's recorded state (`/moto-api/data.json`), over plain HTTP/1.0.
pub fn moto_data() -> Value {
    use std::io::{Read, Write};
    let base = moto_url();
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut sock = std::net::TcpStream::connect(host).expect("connect to moto");
    write!(
        sock,
        "GET /moto-api/data.json HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).expect("utf-8");
    let body = &raw[raw.find("\r\n\r\n").expect("HTTP head") + 4..];
    serde_json::from_str(body).expect("data.json")
}

/// The messages moto recorded as published to `endpoint` (message id → message).
pub fn messages_to(endpoint: &str) -> Vec<String> {
    moto_data()["sns"]["PlatformEndpoint"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["arn"] == endpoint)
                .flat_map(|e| {
                    e["messages"]
                        .as_object()
                        .map(|m| {
                            m.values()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}
