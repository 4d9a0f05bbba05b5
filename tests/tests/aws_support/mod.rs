//! Shared by the AWS tests: moto's server (started by the test process on first use, see
//! `nearcast_aws::moto`), a TCP proxy on loopback in front of it that a test can cut (the
//! real SDK then sees connection failures) and that records every request passing through
//! it, by operation and by the IAM actions AWS authorizes it by, plus helpers to read
//! moto's state.

#![allow(dead_code)]

use nearcast_aws::moto::Moto;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub mod cost;

/// The process's moto server (started on first use; the test fails, saying how to run it,
/// when it cannot be started).
pub fn moto() -> &'static Moto {
    nearcast_aws::moto::shared()
}

/// moto's endpoint, `http://127.0.0.1:PORT`.
pub fn moto_url() -> String {
    moto().endpoint().to_string()
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
    actions: Mutex<BTreeMap<String, u64>>,
    /// The bodies of the requests seen since the last reset, with their operation.
    bodies: Mutex<Vec<(String, Vec<u8>)>>,
    /// Bumped on every cut: open connections close.
    cuts: watch::Sender<u64>,
    /// Faults armed for particular operations, each fired once.
    faults: Mutex<Vec<Armed>>,
}

/// An HTTP answer as DynamoDB's JSON protocol gives it, closing the connection.
fn service_answer(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Fault\r\ncontent-type: application/x-amz-json-1.0\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the proxy does to one request instead of passing its answer on.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The request reaches moto and is applied; its answer is thrown away and the client's
    /// connection closed (a reset after the write: the client cannot know it was applied).
    LoseAnswer,
    /// The request never reaches moto; the client gets this answer (HTTP status, body) as if
    /// from the service.
    Answer(u16, String),
    /// A BatchWriteItem never reaches moto; the client is told that every one of its items
    /// was left unprocessed, as DynamoDB answers when it throttles (moto never does).
    Unprocessed,
}

struct Armed {
    op: String,
    /// Matching requests still to pass before the fault fires.
    skip: u64,
    fault: Fault,
}

/// A loopback TCP proxy to moto. It reads each HTTP request whole before passing it on, and
/// records its operation (DynamoDB's `x-amz-target: DynamoDB_20120810.<Op>`, the `Action`
/// of SNS's and SQS's query protocol, S3's method and path) and the IAM actions it needs
/// ([`iam_actions`]).
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
            actions: Mutex::new(BTreeMap::new()),
            bodies: Mutex::new(Vec::new()),
            cuts: watch::channel(0).0,
            faults: Mutex::new(Vec::new()),
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
                        connection(s, client, server, upstream).await;
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

    /// Arms `fault` for the `nth` request (1-based, counted from now) of operation `op`
    /// (as in [`Proxy::counts`]: `TransactWriteItems`, `Publish`, ...). It fires once.
    pub fn fault(&self, op: &str, nth: u64, fault: Fault) {
        assert!(nth >= 1, "nth counts from 1");
        self.state.faults.lock().unwrap().push(Armed {
            op: op.to_string(),
            skip: nth - 1,
            fault,
        });
    }

    /// Faults armed that have not fired.
    pub fn faults_left(&self) -> usize {
        self.state.faults.lock().unwrap().len()
    }

    /// Back up, without a budget or armed faults.
    pub fn restore(&self) {
        self.state.faults.lock().unwrap().clear();
        self.state.budget.store(UNLIMITED, Ordering::SeqCst);
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Requests seen since the last reset, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    /// IAM actions of the requests seen since the last reset (`dynamodb:PutItem`, ...), each
    /// with how many times it was authorized.
    pub fn actions(&self) -> BTreeMap<String, u64> {
        self.state.actions.lock().unwrap().clone()
    }

    /// The bodies of the `op` requests seen since the last reset, in order (SNS's and SQS's
    /// form-encoded parameters, DynamoDB's JSON), as text.
    pub fn bodies(&self, op: &str) -> Vec<String> {
        self.state
            .bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    /// Requests seen since the last reset.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }

    /// Forgets the counts, actions and bodies.
    pub fn reset_counts(&self) {
        self.state.counts.lock().unwrap().clear();
        self.state.actions.lock().unwrap().clear();
        self.state.bodies.lock().unwrap().clear();
    }
}

fn cut(s: &ProxyState) {
    s.up.store(false, Ordering::SeqCst);
    s.cuts.send_modify(|n| *n += 1);
}

/// One HTTP/1.1 request as read from the client.
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, chunked transfer coding removed.
    pub body: Vec<u8>,
    /// The request's bytes, to pass on unchanged.
    raw: Vec<u8>,
}

impl Request {
    /// A request as the proxy would read it (for tests of [`iam_actions`]).
    pub fn new(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Request {
        Request {
            method: method.into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.to_vec(),
            raw: Vec::new(),
        }
    }

    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more from `r` into `buf`; false at the end of the stream.
async fn fill(r: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match r.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The next whole request from `r` (bytes beyond it stay in `buf`); `None` when the
/// client closed the connection.
async fn read_request(r: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(r, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let (body, end) = if chunked {
        // size line, data, CRLF ... a zero-size chunk, trailers, CRLF.
        let mut body = Vec::new();
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                if !fill(r, buf).await {
                    return None;
                }
            };
            let size_text = String::from_utf8_lossy(&buf[pos..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            pos = line_end + 2;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    if let Some(i) = find(&buf[pos..], b"\r\n") {
                        let empty = i == 0;
                        pos += i + 2;
                        if empty {
                            break;
                        }
                    } else if !fill(r, buf).await {
                        return None;
                    }
                }
                break (body, pos);
            }
            while buf.len() < pos + size + 2 {
                if !fill(r, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            pos += size + 2;
        }
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            if !fill(r, buf).await {
                return None;
            }
        }
        (buf[head_end..head_end + len].to_vec(), head_end + len)
    };
    let raw: Vec<u8> = buf.drain(..end).collect();
    Some(Request {
        method,
        target,
        headers,
        body,
        raw,
    })
}

/// The service a request is signed for: the credential scope of its SigV4 `Authorization`
/// (`Credential=AKID/date/region/<service>/aws4_request`).
fn service(req: &Request) -> Option<String> {
    let auth = req.header("authorization")?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(3).map(str::to_string)
}

/// A form field of a query-protocol body (`Action=Publish&...`).
fn form_field(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body)
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
}

/// The S3 operation of a REST request (path-style addressing: `/bucket[/key]?query`).
fn s3_operation(req: &Request) -> String {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let param = |name: &str| {
        params
            .iter()
            .find_map(|p| p.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    // The SDK names ambiguous operations itself (`?x-id=GetObject`).
    if let Some(op) = param("x-id") {
        return op.to_string();
    }
    let has_key = path.trim_start_matches('/').contains('/');
    let bare = |name: &str| {
        params
            .iter()
            .any(|p| *p == name || p.starts_with(&format!("{name}=")))
    };
    match (req.method.as_str(), has_key) {
        ("GET", true) => "GetObject",
        ("HEAD", true) => "HeadObject",
        ("PUT", true) if req.header("x-amz-copy-source").is_some() => "CopyObject",
        ("PUT", true) => "PutObject",
        ("DELETE", true) => "DeleteObject",
        ("GET", false) if bare("list-type") => "ListObjectsV2",
        ("GET", false) if bare("versions") => "ListObjectVersions",
        ("GET", false) => "ListObjects",
        ("HEAD", false) => "HeadBucket",
        ("PUT", false) => "CreateBucket",
        ("DELETE", false) => "DeleteBucket",
        (m, _) => return format!("{m} {path}"),
    }
    .to_string()
}

/// The operation of a request and the IAM actions AWS authorizes it by.
///
/// - DynamoDB: the action of the operation, except for transactions, which have no action
///   of their own: each item of `TransactWriteItems` is authorized as the write it is (`Put`
///   as `dynamodb:PutItem`, `Update` as `UpdateItem`, `Delete` as `DeleteItem`,
///   `ConditionCheck` as `ConditionCheckItem`), each `Get` of `TransactGetItems` as
///   `GetItem` (DynamoDB developer guide, "Using IAM with DynamoDB transactions").
///   `BatchWriteItem` and `BatchGetItem` are authorized by their own actions.
/// - SNS and SQS: `sns:<Action>`, `sqs:<Action>`.
/// - S3: `GetObject` and `HeadObject` need `s3:GetObject` (`s3:GetObjectVersion` with a
///   `versionId`), listings and `HeadBucket` `s3:ListBucket`, `CopyObject` `s3:PutObject`
///   and `s3:GetObject`; others their own name.
pub fn iam_actions(req: &Request) -> (String, Vec<String>) {
    let service = service(req).unwrap_or_default();
    match service.as_str() {
        "dynamodb" => {
            let op = req
                .header("x-amz-target")
                .and_then(|t| t.strip_prefix("DynamoDB_20120810."))
                .unwrap_or("?")
                .to_string();
            let items = |field: &str| -> Vec<String> {
                let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                v[field]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .flat_map(|i| i.as_object().into_iter().flat_map(|o| o.keys()))
                            .map(|k| match k.as_str() {
                                "Put" => "dynamodb:PutItem".to_string(),
                                "Update" => "dynamodb:UpdateItem".to_string(),
                                "Delete" => "dynamodb:DeleteItem".to_string(),
                                "ConditionCheck" => "dynamodb:ConditionCheckItem".to_string(),
                                "Get" => "dynamodb:GetItem".to_string(),
                                other => format!("dynamodb:?{other}"),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let actions = match op.as_str() {
                "TransactWriteItems" | "TransactGetItems" => items("TransactItems"),
                _ => vec![format!("dynamodb:{op}")],
            };
            (op, actions)
        }
        "sns" | "sqs" => {
            let op = req
                .header("x-amz-target")
                .and_then(|t| t.rsplit('.').next().map(str::to_string))
                .or_else(|| form_field(&req.body, "Action"))
                .unwrap_or_else(|| "?".into());
            let action = format!("{service}:{op}");
            (op, vec![action])
        }
        "s3" => {
            let op = s3_operation(req);
            let versioned = req.target.contains("versionId=");
            let actions = match op.as_str() {
                "GetObject" | "HeadObject" if versioned => vec!["s3:GetObjectVersion".into()],
                "GetObject" | "HeadObject" => vec!["s3:GetObject".into()],
                "ListObjects" | "ListObjectsV2" | "HeadBucket" => vec!["s3:ListBucket".into()],
                "ListObjectVersions" => vec!["s3:ListBucketVersions".into()],
                "CopyObject" => vec!["s3:PutObject".into(), "s3:GetObject".into()],
                other => vec![format!("s3:{other}")],
            };
            (op, actions)
        }
        other => {
            let op = format!("{} {}", req.method, req.target);
            (op.clone(), vec![format!("{other}:?{op}")])
        }
    }
}

async fn connection(s: Arc<ProxyState>, client: TcpStream, server: TcpStream, upstream: String) {
    let mut cuts = s.cuts.subscribe();
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when a fault answers in moto's place: written once the copy below has stopped.
    let mut answer: Option<Vec<u8>> = None;
    let up = async {
        let mut buf = Vec::new();
        loop {
            let Some(req) = read_request(&mut cr, &mut buf).await else {
                return;
            };
            let left = s.budget.fetch_sub(1, Ordering::SeqCst);
            if left <= 0 || !s.up.load(Ordering::SeqCst) {
                cut(&s);
                return;
            }
            let (op, actions) = iam_actions(&req);
            *s.counts.lock().unwrap().entry(op.clone()).or_default() += 1;
            s.bodies
                .lock()
                .unwrap()
                .push((op.clone(), req.body.clone()));
            {
                let mut a = s.actions.lock().unwrap();
                for action in actions {
                    *a.entry(action).or_default() += 1;
                }
            }
            match fire(&s, &op) {
                None => {}
                Some(Fault::LoseAnswer) => {
                    // Applied on a connection of its own (clients send one request at a
                    // time, so this one is idle), its answer read whole and dropped.
                    if let Ok(side) = TcpStream::connect(&upstream).await {
                        let (mut r, mut w) = side.into_split();
                        if w.write_all(&req.raw).await.is_ok() {
                            let _ = read_request(&mut r, &mut Vec::new()).await;
                        }
                    }
                    return;
                }
                Some(Fault::Answer(status, body)) => {
                    answer = Some(service_answer(status, &body));
                    return;
                }
                Some(Fault::Unprocessed) => {
                    let items = serde_json::from_slice::<serde_json::Value>(&req.body)
                        .ok()
                        .and_then(|v| v.get("RequestItems").cloned())
                        .unwrap_or_default();
                    let body = serde_json::json!({"UnprocessedItems": items}).to_string();
                    answer = Some(service_answer(200, &body));
                    return;
                }
            }
            if sw.write_all(&req.raw).await.is_err() {
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
    if let Some(bytes) = answer {
        let _ = cw.write_all(&bytes).await;
        let _ = cw.shutdown().await;
    }
}

/// The fault armed for this request of `op`, if its turn has come (it is then disarmed).
fn fire(s: &ProxyState, op: &str) -> Option<Fault> {
    let mut faults = s.faults.lock().unwrap();
    let i = faults.iter().position(|f| f.op == op)?;
    if faults[i].skip > 0 {
        faults[i].skip -= 1;
        return None;
    }
    Some(faults.remove(i).fault)
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
