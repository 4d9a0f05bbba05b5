//! IAM held against what the code calls. moto does not enforce IAM, so a role in
//! infra/template.yaml that lacks an action passes every other test and fails on AWS.
//!
//! Each Lambda function runs here as deployed, on moto: its cold start
//! ([`nearcast_functions::start_with`], on the environment the template gives it, with the
//! model bucket, a challenger and both push platforms configured), then its handler (the
//! events-api and admin-api routers through API Gateway v2 payloads converted by lambda_http,
//! the events-queue handler on SQS batches) on every route the template maps to it and every
//! branch that reaches AWS differently: pushes sent, duplicates, a disabled endpoint, consent,
//! erasure, catalog changes and their refresh, model reload. Each function reaches AWS
//! through a proxy of its own, which records the IAM action of every request
//! ([`aws_support::iam_actions`]: a transaction's items as the writes they are). The recorded
//! actions are then held against the function's role both ways: every action called is
//! allowed, and every action allowed is called or listed in [`NOT_CALLED_BY_THE_CODE`] with
//! the reason.

mod aws_support;
mod template;

use aws_support::{Proxy, Request, iam_actions, moto, moto_url, platform_applications, unique};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use nearcast_aws::DynamoStateStore;
use nearcast_aws::aws_sdk_dynamodb::types::AttributeValue;
use nearcast_aws::model_store::S3Blobs;
use nearcast_core::engine::Engine;
use nearcast_core::model_store::{Blobs, Slot, publish};
use nearcast_core::ports::{DeliveryStatus, StateStore};
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use template::{intrinsic, items, of_type, prop, statements};
use tower::ServiceExt;

/// The functions: binary (as `BuildProperties.Binary` names it) and function name.
const FUNCTIONS: [(&str, &str); 3] = [
    ("nearcast-events-api", "events-api"),
    ("nearcast-admin-api", "admin-api"),
    ("nearcast-events-queue", "events-queue"),
];

/// Actions a role allows that the function's code never calls: (function, or `*` for
/// every function whose role allows it; action; why the role needs it anyway).
const NOT_CALLED_BY_THE_CODE: &[(&str, &str, &str)] = &[
    (
        "*",
        "logs:CreateLogStream",
        "Lambda writes the function's output to its log group with the function's role; the \
         code makes no CloudWatch Logs call",
    ),
    (
        "*",
        "logs:PutLogEvents",
        "Lambda writes the function's output to its log group with the function's role; the \
         code makes no CloudWatch Logs call",
    ),
    (
        "events-queue",
        "sqs:ReceiveMessage",
        "the SQS event source mapping (the Lambda service, with the function's role) polls \
         the queue; the handler only receives the batch",
    ),
    (
        "events-queue",
        "sqs:DeleteMessage",
        "the event source mapping deletes the records the handler did not list in \
         batchItemFailures",
    ),
    (
        "events-queue",
        "sqs:GetQueueAttributes",
        "the event source mapping reads the queue's attributes when it starts polling",
    ),
    (
        "events-queue",
        "sqs:ChangeMessageVisibility",
        "the event source mapping hands failed records back to the queue",
    ),
    (
        "events-queue",
        "dynamodb:DescribeStream",
        "the table stream's event source mapping (the Lambda service, with the function's \
         role) finds the stream's shards; the handler only receives the records",
    ),
    (
        "events-queue",
        "dynamodb:GetShardIterator",
        "the table stream's event source mapping starts reading each shard",
    ),
    (
        "events-queue",
        "dynamodb:GetRecords",
        "the table stream's event source mapping reads the records it hands the function",
    ),
    (
        "events-queue",
        "dynamodb:ListStreams",
        "the table stream's event source mapping lists the table's streams",
    ),
];

// ---------------------------------------------------------------- the template

/// A function of the template: its resource, its role, the actions the role allows (every
/// branch of `!If`: push and the model bucket configured), its API routes, whether SQS
/// invokes it.
struct Function {
    resource: String,
    role: String,
    allowed: BTreeSet<String>,
    routes: Vec<(String, String)>,
    sqs: bool,
    /// Invoked by the table's DynamoDB stream.
    stream: bool,
    /// Invoked on an EventBridge schedule.
    scheduled: bool,
}

fn function(t: &Yaml, binary: &str) -> Function {
    let (resource, f) = of_type(t, "AWS::Serverless::Function")
        .into_iter()
        .find(|(_, f)| {
            f.get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Yaml::as_str)
                == Some(binary)
        })
        .unwrap_or_else(|| panic!("no function resource builds {binary}"));
    let role = prop(f, &["Role"])
        .and_then(intrinsic)
        .filter(|(tag, _)| tag == "GetAtt")
        .and_then(|(_, args)| match args {
            Yaml::String(s) => s.split('.').next().map(str::to_string),
            Yaml::Sequence(s) => s.first().and_then(Yaml::as_str).map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{resource}: Role is not !GetAtt <Role>.Arn"));
    let allowed = statements(t)
        .into_iter()
        .filter(|(at, _)| at.starts_with(&format!("{role}.")))
        .filter(|(_, s)| s.get("Effect").and_then(Yaml::as_str) == Some("Allow"))
        .flat_map(|(_, s)| s.get("Action").map(items).unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let mut routes = Vec::new();
    let mut sqs = false;
    let mut stream = false;
    let mut scheduled = false;
    if let Some(events) = prop(f, &["Events"]).and_then(Yaml::as_mapping) {
        for e in events.values() {
            match e.get("Type").and_then(Yaml::as_str) {
                Some("HttpApi") => {
                    let p = |k: &str| {
                        e.get("Properties")
                            .and_then(|p| p.get(k))
                            .and_then(Yaml::as_str)
                            .unwrap_or("")
                            .to_string()
                    };
                    routes.push((p("Method"), p("Path")));
                }
                Some("SQS") => sqs = true,
                Some("DynamoDB") => stream = true,
                Some("Schedule" | "ScheduleV2") => scheduled = true,
                _ => {}
            }
        }
    }
    Function {
        resource,
        role,
        allowed,
        routes,
        sqs,
        stream,
        scheduled,
    }
}

/// Whether API Gateway routes `method path` to a function with these routes (`ANY`,
/// `{param}` for one segment, `{proxy+}` for the rest).
fn routed(routes: &[(String, String)], method: &str, path: &str) -> bool {
    routes.iter().any(|(m, pattern)| {
        let method_ok = m.eq_ignore_ascii_case("ANY") || m.eq_ignore_ascii_case(method);
        let mut want = pattern.trim_start_matches('/').split('/');
        let mut got = path.trim_start_matches('/').split('/');
        let path_ok = loop {
            match (want.next(), got.next()) {
                (None, None) => break true,
                (Some(w), Some(_)) if w.starts_with('{') && w.ends_with("+}") => break true,
                (Some(w), Some(g)) if w == g || (w.starts_with('{') && w.ends_with('}')) => {}
                _ => break false,
            }
        };
        method_ok && path_ok
    })
}

/// What is wrong between the actions `function` called and those its role allows.
fn iam_gaps(
    function: &str,
    role: &str,
    called: &BTreeSet<String>,
    allowed: &BTreeSet<String>,
    not_called: &[(&str, &str, &str)],
) -> Vec<String> {
    // IAM action names are case-insensitive.
    let lower = |s: &BTreeSet<String>| -> BTreeSet<String> {
        s.iter().map(|a| a.to_ascii_lowercase()).collect()
    };
    let (called_l, allowed_l) = (lower(called), lower(allowed));
    let listed = |a: &str| {
        not_called
            .iter()
            .any(|(f, x, _)| (*f == function || *f == "*") && x.eq_ignore_ascii_case(a))
    };
    let mut gaps = Vec::new();
    for a in called {
        if !allowed_l.contains(&a.to_ascii_lowercase()) {
            gaps.push(format!(
                "{function} calls {a}, which its role {role} does not allow: AWS denies it"
            ));
        }
    }
    for a in allowed {
        let a_l = a.to_ascii_lowercase();
        if called_l.contains(&a_l) {
            if listed(a) {
                gaps.push(format!(
                    "{function} calls {a}, listed in NOT_CALLED_BY_THE_CODE: drop the entry"
                ));
            }
        } else if !listed(a) {
            gaps.push(format!(
                "{role} allows {a}, which {function} never called: remove it from the role, \
                 or list it in NOT_CALLED_BY_THE_CODE with the reason"
            ));
        }
    }
    for (f, a, _) in not_called {
        if *f == function && !allowed_l.contains(&a.to_ascii_lowercase()) {
            gaps.push(format!(
                "NOT_CALLED_BY_THE_CODE lists {a} for {function}, whose role {role} does not \
                 allow it: drop the entry"
            ));
        }
    }
    gaps
}

// ---------------------------------------------------------------- without moto

fn signed(service: &str) -> (&'static str, String) {
    (
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential=test/20261120/us-east-1/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        ),
    )
}

fn actions_of(
    method: &str,
    target: &str,
    service: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> (String, Vec<String>) {
    let (k, v) = signed(service);
    let mut headers = vec![(k, v.as_str())];
    headers.extend_from_slice(extra);
    iam_actions(&Request::new(method, target, &headers, body.as_bytes()))
}

#[test]
fn requests_map_to_the_iam_actions_aws_authorizes_them_by() {
    let ddb = |op: &str, body: &str| {
        let target = format!("DynamoDB_20120810.{op}");
        actions_of("POST", "/", "dynamodb", &[("x-amz-target", &target)], body)
    };
    assert_eq!(
        ddb("GetItem", r#"{"TableName":"t","ConsistentRead":true}"#),
        ("GetItem".into(), vec!["dynamodb:GetItem".into()])
    );
    // A transaction is authorized item by item, as the write each item is.
    let (op, actions) = ddb(
        "TransactWriteItems",
        r#"{"TransactItems":[{"Put":{}},{"Update":{}},{"Delete":{}},{"ConditionCheck":{}},{"Put":{}}]}"#,
    );
    assert_eq!(op, "TransactWriteItems");
    assert_eq!(
        actions,
        [
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:ConditionCheckItem",
            "dynamodb:PutItem"
        ]
    );
    assert_eq!(
        ddb("TransactGetItems", r#"{"TransactItems":[{"Get":{}}]}"#).1,
        ["dynamodb:GetItem"]
    );
    // Batches have actions of their own.
    assert_eq!(
        ddb(
            "BatchWriteItem",
            r#"{"RequestItems":{"t":[{"DeleteRequest":{}}]}}"#
        )
        .1,
        ["dynamodb:BatchWriteItem"]
    );
    // SNS and SQS: the query protocol's Action, or SQS's JSON target.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        actions_of(
            "POST",
            "/",
            "sns",
            &form,
            "Action=Publish&Version=2010-03-31&TargetArn=x"
        ),
        ("Publish".into(), vec!["sns:Publish".into()])
    );
    assert_eq!(
        actions_of(
            "POST",
            "/",
            "sqs",
            &[("x-amz-target", "AmazonSQS.ReceiveMessage")],
            "{}"
        )
        .1,
        ["sqs:ReceiveMessage"]
    );
    // S3 is REST.
    let s3 = |method: &str, target: &str| actions_of(method, target, "s3", &[], "").1;
    assert_eq!(
        s3("GET", "/models/prod/ranker.json?x-id=GetObject"),
        ["s3:GetObject"]
    );
    assert_eq!(s3("GET", "/models/prod/ranker.json"), ["s3:GetObject"]);
    assert_eq!(s3("HEAD", "/models/prod/ranker.json"), ["s3:GetObject"]);
    assert_eq!(s3("GET", "/models/k?versionId=3"), ["s3:GetObjectVersion"]);
    assert_eq!(
        s3("PUT", "/models/prod/ranker.json?x-id=PutObject"),
        ["s3:PutObject"]
    );
    assert_eq!(s3("GET", "/models?list-type=2&prefix=p"), ["s3:ListBucket"]);
    assert_eq!(s3("PUT", "/models"), ["s3:CreateBucket"]);
    // Anything unknown gets an action no role allows.
    assert!(actions_of("GET", "/x", "lambda", &[], "").1[0].contains('?'));
}

#[test]
fn the_checker_reports_both_directions_and_stale_entries() {
    let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    let not_called = [
        ("*", "logs:PutLogEvents", "Lambda"),
        ("f", "sqs:ReceiveMessage", "the event source mapping"),
        ("f", "sqs:DeleteMessage", "the event source mapping"),
    ];
    let allowed = set(&[
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "logs:PutLogEvents",
        "sqs:ReceiveMessage",
    ]);
    let called = set(&[
        "dynamodb:getitem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    ]);
    let gaps = iam_gaps("f", "FRole", &called, &allowed, &not_called);
    assert_eq!(gaps.len(), 3, "{gaps:#?}");
    assert!(gaps[0].contains("f calls dynamodb:UpdateItem") && gaps[0].contains("FRole"));
    assert!(gaps[1].contains("allows dynamodb:Query"));
    assert!(gaps[2].contains("sqs:DeleteMessage") && gaps[2].contains("drop the entry"));
    // An entry for an action the code does call is stale too.
    let called = set(&[
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:Query",
        "sqs:ReceiveMessage",
    ]);
    let gaps = iam_gaps("f", "FRole", &called, &allowed, &not_called[..2]);
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert!(gaps[0].contains("listed in NOT_CALLED_BY_THE_CODE"));
    // Another function's entries do not apply to it, `*` entries do.
    let gaps = iam_gaps("g", "GRole", &called, &allowed, &not_called);
    assert_eq!(gaps.len(), 0, "{gaps:#?}");
}

#[test]
fn routes_match_as_api_gateway_matches_them() {
    let routes = vec![
        ("POST".to_string(), "/v1/events".to_string()),
        ("DELETE".into(), "/v1/users/{id}".into()),
        ("ANY".into(), "/v1/admin/{proxy+}".into()),
    ];
    assert!(routed(&routes, "POST", "/v1/events"));
    assert!(!routed(&routes, "GET", "/v1/events"));
    assert!(routed(&routes, "DELETE", "/v1/users/ana"));
    assert!(!routed(&routes, "DELETE", "/v1/users/ana/consent"));
    assert!(routed(&routes, "PUT", "/v1/admin/stores/s1"));
    assert!(routed(&routes, "POST", "/v1/admin/model/reload"));
    assert!(!routed(&routes, "GET", "/v1/admin"));
}

// ---------------------------------------------------------------- on moto

/// One function started as deployed, behind its own proxy.
struct Running {
    name: &'static str,
    template: Function,
    config: nearcast_functions::Config,
    engine: Arc<Engine>,
    proxy: Proxy,
}

impl Running {
    /// Sends an API Gateway HTTP API (v2) request through `router`, as the Lambda runtime
    /// hands it over, after checking that the template routes it to this function.
    async fn invoke(
        &self,
        router: &axum::Router,
        method: &str,
        path: &str,
        sub: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
        assert!(
            routed(&self.template.routes, method, raw_path),
            "the template does not route {method} {raw_path} to {}",
            self.name
        );
        let mut context = json!({
            "accountId": "123456789012", "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7", "userAgent": "nearcast-test"},
            "requestId": "r", "routeKey": "$default", "stage": "$default",
            "time": "20/Nov/2026:09:59:31 +0000", "timeEpoch": 1795168771000_u64
        });
        if let Some(sub) = sub {
            context["authorizer"] = json!({"jwt": {"claims": {"sub": sub}, "scopes": []}});
        }
        let mut payload = json!({
            "version": "2.0", "routeKey": "$default", "rawPath": raw_path,
            "rawQueryString": query,
            "headers": {"content-type": "application/json", "host": "abc123.execute-api.us-east-1.amazonaws.com"},
            "requestContext": context, "isBase64Encoded": false
        });
        match body {
            // A string is the raw body (a CSV file).
            Some(Value::String(raw)) => payload["body"] = Value::from(raw),
            Some(b) => payload["body"] = Value::from(b.to_string()),
            None => {}
        }
        let request =
            lambda_http::request::from_str(&payload.to_string()).expect("an API Gateway request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The IAM actions recorded so far.
    fn called(&self) -> BTreeSet<String> {
        self.proxy.actions().into_keys().collect()
    }
}

/// Starts `name` as the template deploys it (its environment with `params`), on moto
/// through a fresh proxy; `resources` replaces the template's references (`<Table>`, ...).
async fn start(
    t: &Yaml,
    binary: &str,
    name: &'static str,
    params: &[(&str, &str)],
    resources: &BTreeMap<&str, String>,
) -> Running {
    let template = function(t, binary);
    let env: Vec<(String, String)> = template::environments(t, params)
        .into_iter()
        .find(|(r, _)| *r == template.resource)
        .expect("the function's environment")
        .1
        .into_iter()
        .map(|(k, v)| {
            let v = match v.strip_prefix('<').and_then(|r| r.strip_suffix('>')) {
                Some(reference) => resources
                    .get(reference)
                    .unwrap_or_else(|| panic!("{k}: no test resource for <{reference}>"))
                    .clone(),
                None => v,
            };
            (k, v)
        })
        .collect();
    let config = nearcast_functions::Config::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("{name} refuses the template's environment: {e}"));
    let proxy = Proxy::start(&moto_url()).await;
    let aws = moto().sdk_config(Some(&proxy.url)).await;
    let engine = nearcast_functions::start_with(name, &config, &aws)
        .await
        .unwrap_or_else(|e| panic!("{name} cold start: {e}"));
    Running {
        name,
        template,
        config,
        engine,
        proxy,
    }
}

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A webhook receiver on loopback answering 200 to every POST: its URL and how many it got.
async fn receiver() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body's declared length.
                loop {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, got)
}

fn events(user: &str, events: Vec<Value>) -> Value {
    json!({"user_id": user, "events": events})
}

/// Consents and a push token, minutes ago.
fn onboarding(user: &str, platform: &str) -> Value {
    let at = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let mut v = vec![
        json!({"event_id": format!("{user}-tok"), "type": "push_token", "at": at,
        "platform": platform, "token": format!("{platform}-token-{user}")}),
    ];
    for p in ["push", "location", "personalisation"] {
        v.push(
            json!({"event_id": format!("{user}-c-{p}"), "type": "consent", "at": at,
            "purpose": p, "granted": true}),
        );
    }
    events(user, v)
}

/// A fix at store `i` of `nearcast_tests::catalog`, now.
fn fix(user: &str, id: &str, i: usize) -> Value {
    let (lat, lon) = nearcast_tests::store_point(i);
    events(
        user,
        vec![
            json!({"event_id": id, "type": "location", "at": chrono::Utc::now().to_rfc3339(),
        "lat": lat, "lon": lon, "accuracy_m": 8}),
        ],
    )
}

fn store(i: usize) -> Value {
    let (lat, lon) = nearcast_tests::store_point(i);
    json!({"id": format!("s{i}"), "name": format!("Store {i}"), "category": "cafe",
        "time_zone": "Europe/Helsinki", "fence": {"type": "circle", "lat": lat, "lon": lon, "radius_m": 50}})
}

fn offer(i: usize) -> Value {
    json!({"id": format!("o{i}"), "campaign_id": "c1", "title": "Coffee", "body": "Half price",
        "category": "coffee", "store_ids": [format!("s{i}")], "trigger": {"type": "enter"},
        "threshold": 0.0, "holdout": 0.0})
}

fn sent(v: &Value) -> bool {
    v["results"]
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["decision"]["verdict"] == "sent"))
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({"messageId": id, "receiptHandle": format!("rh-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1795168790000",
            "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1795168790100"},
        "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:nearcast-events", "awsRegion": "us-east-1"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_functions_role_allows_exactly_what_its_code_calls() {
    let t = template::template();
    let moto = moto();
    // The stack's resources on moto: table, platform applications, model bucket with a
    // champion and a challenger.
    let table = unique("iam");
    DynamoStateStore::create_table(&moto.dynamodb(None).await, &table)
        .await
        .expect("create table");
    let sns_direct = moto.sns(None).await;
    let (apns, fcm) = platform_applications(&sns_direct, "iam").await;
    let bucket = format!("iam-models-{}", std::process::id());
    let s3 = moto.s3(None).await;
    S3Blobs::create_bucket(&s3, &bucket).await.unwrap();
    let mut artifact: Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
    artifact["version"] = "iam-champion".into();
    let champion = S3Blobs::new(s3.clone(), &bucket, "models/ranker.json");
    publish(
        &champion,
        &serde_json::to_vec(&artifact).unwrap(),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    artifact["version"] = "iam-challenger".into();
    S3Blobs::new(s3.clone(), &bucket, "models/challenger.json")
        .put(Slot::Current, &serde_json::to_vec(&artifact).unwrap())
        .await
        .unwrap();
    // For the test's own reads, so that they are not counted as a function's.
    let direct = DynamoStateStore::new(moto.dynamodb(None).await, &table);
    let endpoint_of = |user: &'static str| {
        let direct = &direct;
        async move {
            let rec = direct.load_user(&nearcast_tests::id(user)).await.unwrap();
            rec.state.push.expect("a push target")
        }
    };
    let resources = BTreeMap::from([
        ("Table", table.clone()),
        ("ModelBucket", bucket.clone()),
        ("ApnsApplication", apns.clone().unwrap()),
        ("FcmApplication", fcm.clone().unwrap()),
        // The environment's one `!Sub`: the webhook secret, which CloudFormation resolves
        // from Secrets Manager (`{{resolve:secretsmanager:...}}`).
        ("Sub", WEBHOOK_SECRET.to_string()),
    ]);
    // Every optional part of the stack on.
    let params = [
        ("ModelKey", "models/ranker.json"),
        ("ChallengerKey", "models/challenger.json"),
        ("ChallengerShare", "0.5"),
        ("ApnsSecretName", "nearcast/apns"),
        ("FcmSecretName", "nearcast/fcm"),
        ("CatalogRefreshSecs", "1"),
        ("PresenceWebhookUrl", "https://hooks.example.com/nearcast"),
        ("PresenceWebhookSecretName", "nearcast/webhooks"),
    ];
    let [
        (events_bin, events_name),
        (admin_bin, admin_name),
        (queue_bin, queue_name),
    ] = FUNCTIONS;

    // ---- admin-api: the catalog, the policy, the models.
    let admin = start(&t, admin_bin, admin_name, &params, &resources).await;
    let api = nearcast_api::router(admin.engine.clone());
    let call = |m: &'static str, p: &'static str, b: Option<Value>| {
        let (admin, api) = (&admin, &api);
        async move {
            let (s, v) = admin.invoke(api, m, p, None, b).await;
            (s.as_u16(), v)
        }
    };
    assert_eq!(call("GET", "/healthz", None).await.0, 200);
    assert_eq!(
        call("POST", "/v1/admin/stores", Some(store(0))).await.0,
        201
    );
    assert_eq!(
        call("PUT", "/v1/admin/stores/s1", Some(store(1))).await.0,
        200
    );
    assert_eq!(
        call("PUT", "/v1/admin/stores/s2", Some(store(2))).await.0,
        200
    );
    assert_eq!(
        call("POST", "/v1/admin/offers", Some(offer(0))).await.0,
        201
    );
    assert_eq!(
        call("PUT", "/v1/admin/offers/o1", Some(offer(1))).await.0,
        200
    );
    assert_eq!(
        call("PUT", "/v1/admin/offers/o2", Some(offer(2))).await.0,
        200
    );
    // What admin-api's app does after each change (`nearcast_admin_api::app`): publish the
    // catalog snapshot; the second replaces (deletes) the first.
    assert!(admin.engine.publish_catalog().await.unwrap());
    let policy = json!({"per_day": 10, "per_week": 50, "min_gap_minutes": 0,
        "quiet_start": "00:00:00", "quiet_end": "00:00:00"});
    assert_eq!(call("PUT", "/v1/admin/policy", Some(policy)).await.0, 200);
    assert!(admin.engine.publish_catalog().await.unwrap());
    // The offers' campaign, with a budget: every send below counts it in its commit.
    let campaign = json!({"id": "c1", "name": "Coffee", "status": "active", "budget": 1000,
        "coupon_pool": true,
        "variants": [{"id": "a", "default_locale": "en",
            "content": {"en": {"title": "Coffee at {store}", "body": "Half price"}}}]});
    assert_eq!(
        call("PUT", "/v1/admin/campaigns/c1", Some(campaign))
            .await
            .0,
        200
    );
    let (s, v) = call("POST", "/v1/admin/campaigns/c1/preview", None).await;
    assert_eq!(s, 200, "{v}");
    // Its coupon pool: each send below takes a code in its commit.
    let codes: String = (0..60).map(|i| format!("IAM-{i:03}\n")).collect();
    let (s, v) = call(
        "POST",
        "/v1/admin/campaigns/c1/coupons",
        Some(Value::from(codes)),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    for p in [
        "/v1/admin/stores",
        "/v1/admin/stores/s0",
        "/v1/admin/offers",
        "/v1/admin/offers/o0",
        "/v1/admin/policy",
        "/v1/admin/model",
        "/v1/admin/campaigns",
        "/v1/admin/campaigns/c1",
        "/v1/admin/campaigns/c1/coupons",
    ] {
        assert_eq!(call("GET", p, None).await.0, 200, "{p}");
    }
    let (s, v) = call(
        "POST",
        "/v1/admin/simulate",
        Some(
            json!({"events": [{"type": "location", "at": chrono::Utc::now().to_rfc3339(),
            "lat": nearcast_tests::store_point(0).0, "lon": nearcast_tests::store_point(0).1,
            "accuracy_m": 8}]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(call("DELETE", "/v1/admin/offers/o2", None).await.0, 204);
    // Deleting what is not there: the transaction is cancelled, still authorized as a write.
    assert_eq!(call("DELETE", "/v1/admin/offers/o2", None).await.0, 404);
    let (s, v) = call("POST", "/v1/admin/model/reload", None).await;
    assert_eq!((s, &v["champion"]), (200, &json!("iam-champion")), "{v}");

    // ---- events-api: device requests, JWT subject checked as deployed.
    let device = start(&t, events_bin, events_name, &params, &resources).await;
    assert_eq!(
        device.config.device_auth,
        nearcast_functions::DeviceAuth::Jwt
    );
    let app = nearcast_events_api::app(device.engine.clone(), device.config.device_auth);
    let post = |user: &'static str, body: Value| {
        let (device, app) = (&device, &app);
        async move {
            let (s, v) = device
                .invoke(app, "POST", "/v1/events", Some(user), Some(body))
                .await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v
        }
    };
    // Onboarding registers the token at SNS; a fix at a store sends; its retry is a
    // duplicate.
    post("ana", onboarding("ana", "fcm")).await;
    assert!(sent(&post("ana", fix("ana", "ana-f1", 0)).await));
    let v = post("ana", fix("ana", "ana-f1", 0)).await;
    assert_eq!(v["results"][0]["status"], "duplicate", "{v}");
    // A push to an endpoint SNS disabled: the endpoint is marked, the delivery failed.
    post("ben", onboarding("ben", "apns")).await;
    let endpoint = endpoint_of("ben").await.endpoint.expect("ben's endpoint");
    sns_direct
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    post("ben", fix("ben", "ben-f1", 1)).await;
    assert!(
        endpoint_of("ben").await.disabled,
        "ben's endpoint marked disabled"
    );
    // Consent read and changed.
    let (s, _) = device
        .invoke(&app, "GET", "/v1/users/ana/consent", Some("ana"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = device
        .invoke(
            &app,
            "PUT",
            "/v1/users/ana/consent",
            Some("ana"),
            Some(json!({"personalisation": false, "policy_version": "2026-11"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A catalog change through admin-api reaches events-api at its next refresh.
    assert_eq!(call("DELETE", "/v1/admin/stores/s2", None).await.0, 204);
    tokio::time::sleep(device.config.catalog_refresh + std::time::Duration::from_millis(200)).await;
    post("cai", fix("cai", "cai-f1", 2)).await;
    assert_eq!(device.engine.catalog().store_count(), 2, "refreshed");
    // Erasure: the endpoint at SNS, then the user's items.
    let (s, v) = device
        .invoke(&app, "DELETE", "/v1/users/ana", Some("ana"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // An admin's erasure on a data-protection request (ben's endpoint at SNS, then his
    // items), and the audit log of the changes above.
    let (s, v) = call("DELETE", "/v1/admin/users/ben", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["erased_records"].as_u64().unwrap() > 0, "{v}");
    let (s, v) = call("GET", "/v1/admin/audit", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["entries"].as_array().unwrap().len() >= 9, "{v}");
    // The events-api's sends counted the campaign's budget in their commits.
    let (s, v) = call("GET", "/v1/admin/campaigns/c1", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["sent"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["coupons"]["issued"].as_u64().unwrap() >= 1, "{v}");

    // ---- events-queue: batches from SQS.
    let queue = start(&t, queue_bin, queue_name, &params, &resources).await;
    assert!(queue.template.sqs, "events-queue has an SQS event source");
    // Presence webhooks: the relay as events-queue's main builds it, posting to a receiver
    // on loopback instead of the stack's https URL.
    let (hook_url, posted) = receiver().await;
    let mut hook_config = queue.config.clone();
    hook_config.webhooks.as_mut().expect("webhooks on").url = hook_url;
    let hooks = nearcast_functions::webhook_relay(&queue.engine, &hook_config)
        .unwrap()
        .expect("a webhook relay");
    let batch = |records: Vec<Value>| {
        let (queue, hooks) = (&queue, &hooks);
        async move {
            let event = serde_json::from_value(json!({"Records": records})).expect("SQS event");
            serde_json::to_value(
                nearcast_events_queue::handle_delivering(&queue.engine, event, Some(hooks)).await,
            )
            .unwrap()
        }
    };
    let r = batch(vec![
        sqs_record("m1", &onboarding("dan", "fcm").to_string()),
        sqs_record("m2", &fix("dan", "dan-f1", 0).to_string()),
        sqs_record("m3", "{\"user_id\": \"dan\", \"events\": ["),
        sqs_record("m4", &fix("dan", "dan-f1", 0).to_string()),
    ])
    .await;
    assert_eq!(r["batchItemFailures"], json!([]), "{r}");
    assert!(
        direct
            .deliveries()
            .await
            .unwrap()
            .iter()
            .any(|d| d.push.user_id.as_str() == "dan" && d.status == DeliveryStatus::Sent),
        "the queue sent dan's push"
    );
    // A till redeems the code the queue's send took from the pool.
    let code = direct
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .find_map(|d| d.push.coupon.filter(|c| c.starts_with("IAM-")))
        .expect("a push with a pool code");
    let (s, v) = admin
        .invoke(
            &api,
            "POST",
            "/v1/admin/redemptions",
            None,
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // A push to an endpoint SNS disabled, through the queue.
    let r = batch(vec![sqs_record(
        "m5",
        &onboarding("eli", "apns").to_string(),
    )])
    .await;
    assert_eq!(r["batchItemFailures"], json!([]), "{r}");
    let endpoint = endpoint_of("eli").await.endpoint.expect("eli's endpoint");
    sns_direct
        .set_endpoint_attributes()
        .endpoint_arn(&endpoint)
        .attributes("Enabled", "false")
        .send()
        .await
        .unwrap();
    let r = batch(vec![sqs_record("m6", &fix("eli", "eli-f1", 1).to_string())]).await;
    assert_eq!(r["batchItemFailures"], json!([]), "{r}");
    assert!(
        endpoint_of("eli").await.disabled,
        "eli's endpoint marked disabled"
    );

    // ---- events-queue on the table's stream: the webhook messages events-api's commits
    // left in the outbox (the queue's batches posted theirs), each as the INSERT record the
    // stream hands over, one of them twice (a stream delivers at least once), beside records
    // the mapping's filter keeps out (a lease's MODIFY, a dead letter's INSERT).
    assert!(
        queue.template.stream,
        "events-queue reads the table's stream"
    );
    // A visit through events-api (its messages so far were erased with ana and ben).
    post("hal", onboarding("hal", "fcm")).await;
    let v = post("hal", fix("hal", "hal-f1", 0)).await;
    assert!(
        v["results"][0]["decision"]["presence"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "hal entered store 0: {v}"
    );
    let dynamodb = moto.dynamodb(None).await;
    let mut outbox = Vec::new();
    for k in 0..8 {
        let out = dynamodb
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("HOOK#{k}")))
            .send()
            .await
            .unwrap();
        outbox.extend(out.items().iter().cloned());
    }
    assert!(
        !outbox.is_empty(),
        "events-api's presence changes wait in the outbox"
    );
    let stream_record = |name: &str, item: &std::collections::HashMap<String, AttributeValue>| {
        let image: serde_json::Map<String, Value> = item
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    AttributeValue::S(s) => json!({"S": s}),
                    AttributeValue::N(n) => json!({"N": n}),
                    other => panic!("{k}: {other:?} in an outbox item"),
                };
                (k.clone(), v)
            })
            .collect();
        json!({"eventID": unique("ev"), "eventName": name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": {"Keys": {"pk": image["pk"], "sk": image["sk"]}, "NewImage": image,
                "SequenceNumber": "1", "SizeBytes": 200, "StreamViewType": "NEW_IMAGE"},
            "eventSourceARN": format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}/stream/2026-12-05T00:00:00.000")})
    };
    let mut records: Vec<Value> = outbox.iter().map(|i| stream_record("INSERT", i)).collect();
    records.push(stream_record("INSERT", &outbox[0]));
    records.push(stream_record("MODIFY", &outbox[0]));
    let mut dead = outbox[0].clone();
    dead.insert("pk".into(), AttributeValue::S("HOOKDEAD#0".into()));
    records.push(stream_record("INSERT", &dead));
    let nearcast_events_queue::Invocation::Outbox { messages, skipped } =
        nearcast_events_queue::invocation(json!({"Records": records})).expect("a stream event")
    else {
        panic!("stream records are the outbox's")
    };
    assert_eq!((messages.len(), skipped), (outbox.len() + 1, 2));
    let before = posted.load(std::sync::atomic::Ordering::SeqCst);
    let r = nearcast_events_queue::deliver_inserted(Some(&hooks), &messages, skipped).await;
    assert_eq!(
        (r.delivered, r.skipped, r.retried),
        (outbox.len(), 1, 0),
        "each message posted once, the repeated record skipped"
    );
    assert_eq!(
        posted.load(std::sync::atomic::Ordering::SeqCst) - before,
        outbox.len()
    );
    assert!(
        direct
            .due_webhooks(chrono::Utc::now() + chrono::Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty(),
        "nothing left for the schedule"
    );

    // ---- events-queue on its schedule: the outbox relay, with a push nobody claimed and
    // an erasure that stopped halfway (both made directly, as a dead instance leaves them).
    assert!(queue.template.scheduled, "events-queue has a schedule");
    let r = batch(vec![sqs_record(
        "m7",
        &onboarding("fay", "fcm").to_string(),
    )])
    .await;
    assert_eq!(r["batchItemFailures"], json!([]), "{r}");
    let r = batch(vec![sqs_record(
        "m8",
        &onboarding("gus", "fcm").to_string(),
    )])
    .await;
    assert_eq!(r["batchItemFailures"], json!([]), "{r}");
    let earlier = chrono::Utc::now() - chrono::Duration::minutes(5);
    let rec = direct.load_user(&nearcast_tests::id("fay")).await.unwrap();
    let mut state = rec.state.clone();
    state.sends.push(nearcast_core::state::SendRecord {
        at: earlier,
        offer_id: nearcast_tests::id("o0"),
        delivery_id: "d-orphan".into(),
        held_out: false,
        campaign_id: None,
        store_id: None,
    });
    let target = state.push.clone().expect("fay's push target");
    let mut commit = nearcast_core::ports::Commit::new(nearcast_tests::id("fay"), rec.version);
    commit.state = Some(state);
    commit.pushes.push(nearcast_core::decision::Push {
        delivery_id: "d-orphan".into(),
        user_id: nearcast_tests::id("fay"),
        platform: target.platform,
        token: String::new(),
        endpoint: None,
        offer_id: nearcast_tests::id("o0"),
        campaign_id: nearcast_tests::id("c1"),
        store_id: nearcast_tests::id("s0"),
        title: "Coffee".into(),
        body: "Half price".into(),
        coupon: None,
        variant_id: None,
        locale: None,
        deep_link: None,
        image_url: None,
        priority: Default::default(),
        deferred: false,
        score: 0.5,
        model_version: "iam".into(),
        at: earlier,
    });
    assert_eq!(
        direct.commit(&commit).await.unwrap(),
        nearcast_core::ports::CommitOutcome::Applied
    );
    moto.dynamodb(None)
        .await
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("ERASURE".into()))
        .item("sk", AttributeValue::S("gus".into()))
        .item(
            "at",
            AttributeValue::N(earlier.timestamp_micros().to_string()),
        )
        .send()
        .await
        .unwrap();
    let scheduled = json!({"version": "0", "id": "e", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-20T10:00:00Z",
        "region": "us-east-1", "resources": [], "detail": {}});
    let nearcast_events_queue::Invocation::Relay =
        nearcast_events_queue::invocation(scheduled).expect("a scheduled event")
    else {
        panic!("a scheduled event runs the relay");
    };
    // Presence webhooks: the queue's batches and the stream posted every message at once;
    // the scheduled pass takes whatever is left (retries; none here).
    assert!(
        posted.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the batches' presence changes were posted"
    );
    assert_eq!(
        nearcast_events_queue::relay(&queue.engine, Some(&hooks))
            .await
            .unwrap(),
        1
    );
    assert!(posted.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(
        direct
            .due_webhooks(chrono::Utc::now() + chrono::Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty(),
        "every message delivered"
    );
    assert_eq!(
        direct
            .deliveries()
            .await
            .unwrap()
            .iter()
            .find(|d| d.push.delivery_id == "d-orphan")
            .map(|d| d.status),
        Some(DeliveryStatus::Sent)
    );
    assert!(
        direct
            .load_user(&nearcast_tests::id("gus"))
            .await
            .unwrap()
            .state
            .push
            .is_none(),
        "gus's erasure was completed"
    );

    // ---- admin-api again: the webhooks' dead letters (none) and their redrive.
    let (s, v) = call("GET", "/v1/admin/webhooks/dead-letters", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], true);
    let (s, v) = call("POST", "/v1/admin/webhooks/dead-letters/redrive", None).await;
    assert_eq!(s, 200, "{v}");

    // ---- admin-api again: results over what was decided.
    let (s, v) = call("GET", "/v1/admin/results?window_hours=24", None).await;
    assert_eq!(s, 200, "{v}");
    // The subject access export: one Query of the user's partition.
    let (s, v) = call("GET", "/v1/admin/users/gus/export", None).await;
    assert_eq!(s, 200, "{v}");

    // ---- the roles against what each function called.
    let mut gaps = Vec::new();
    let mut report = String::new();
    for f in [&device, &admin, &queue] {
        let called = f.called();
        report.push_str(&format!("{} ({}):\n", f.name, f.template.role));
        for (a, n) in f.proxy.actions() {
            report.push_str(&format!("  {a} x{n}\n"));
        }
        gaps.extend(iam_gaps(
            f.name,
            &f.template.role,
            &called,
            &f.template.allowed,
            NOT_CALLED_BY_THE_CODE,
        ));
    }
    eprintln!("AWS actions called, by function:\n{report}");
    assert!(gaps.is_empty(), "{}\n\ncalled:\n{report}", gaps.join("\n"));

    // The check would have caught admin-api's role without UpdateItem (every catalog
    // write is a transaction that bumps the catalog version with an Update).
    let text = std::fs::read_to_string(template::template_path()).unwrap();
    let at = text.find("  AdminApiRole:").expect("AdminApiRole");
    let item = at
        + text[at..]
            .find("- dynamodb:UpdateItem")
            .expect("admin-api's UpdateItem");
    let line = text[..item].rfind('\n').unwrap() + 1;
    let end = item + text[item..].find('\n').unwrap();
    let without = format!("{}{}", &text[..line], &text[end + 1..]);
    let broken = function(&template::parse(&without), admin_bin);
    let gaps = iam_gaps(
        admin_name,
        &broken.role,
        &admin.called(),
        &broken.allowed,
        NOT_CALLED_BY_THE_CODE,
    );
    assert!(
        gaps.iter()
            .any(|g| g.contains("admin-api calls dynamodb:UpdateItem")),
        "{gaps:?}"
    );
}
