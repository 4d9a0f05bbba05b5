//! What a million location fixes cost on AWS, measured from the requests the events-api
//! function actually makes.
//!
//! A seeded population of users walks past the stores of a small catalog. Their fixes are
//! replayed through the real events-api handler (API Gateway HTTP API payloads through
//! lambda_http, as Lambda runs it), on moto, in batches of 1, 10 and 50 fixes per request.
//! Every request to DynamoDB and SNS passes a recording proxy, and each DynamoDB request is
//! priced in request units by DynamoDB's rules ([`aws_support::cost`]) on a copy of the
//! table kept up to date from the requests themselves. The mix is designed so that about 5 %
//! of fixes enter or leave a fence, about 1 % reach a candidate offer and about 0.2 % send
//! a push; the shares realised are measured and printed, not assumed.
//!
//! Each user has a table and an events-api instance of their own: moto copies a whole
//! table for every transaction, so one shared table would make the replay slower with each
//! fix. What DynamoDB bills does not depend on the size of the table.
//!
//! Prices are us-east-1 list prices as of 2025 (after DynamoDB's on-demand price cut of
//! 2024-11-01); check the current pricing pages before budgeting. The Lambda duration is an
//! assumption built from the requests each invocation made ([`billed_ms`]); the handler's
//! wall time is printed too, but it is measured locally against moto, not on Lambda.
//!
//! The figures are in docs/aws.md ("Cost per million location events"), produced by
//! `cargo test --release --locked -p nearcast-tests --test aws_cost -- --nocapture`.

mod aws_support;

use aws_support::cost::{
    Item, Shadow, apply_update, item_size, number_size, read_units, value_size, write_units,
};
use aws_support::{Proxy, moto, moto_url, platform_applications, unique};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use nearcast_aws::DynamoStateStore;
use nearcast_aws::aws_sdk_dynamodb::Client;
use nearcast_core::config::CapPolicy;
use nearcast_core::engine::Engine;
use nearcast_core::memory::RecordingNotifier;
use nearcast_core::ports::ManualClock;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

// ---------------------------------------------------------------- prices

/// API Gateway HTTP API, per request (first 300 million a month).
const API_GATEWAY_PER_REQUEST: f64 = 1.00e-6;
/// Lambda, per request.
const LAMBDA_PER_REQUEST: f64 = 0.20e-6;
/// Lambda arm64, per GB-second.
const LAMBDA_PER_GB_S: f64 = 0.000_013_333_4;
/// events-api's memory (infra/template.yaml), GB.
const LAMBDA_MEMORY_GB: f64 = 0.25;
/// DynamoDB on-demand, per read request unit.
const DYNAMODB_PER_RRU: f64 = 0.125e-6;
/// DynamoDB on-demand, per write request unit.
const DYNAMODB_PER_WRU: f64 = 0.625e-6;
/// SNS mobile push, per notification delivered.
const SNS_PER_DELIVERY: f64 = 0.50e-6;
/// SNS, per Publish API request (beyond the first million a month), on top of the delivery.
const SNS_PER_PUBLISH: f64 = 0.50e-6;

// ---------------------------------------------------------------- assumed duration

/// Billed per invocation whatever it does: the runtime's hand-over, the rounding up to the
/// next millisecond.
const INVOCATION_MS: f64 = 1.0;
/// One single-item DynamoDB request within the region (GetItem, UpdateItem, ...).
const SINGLE_ITEM_MS: f64 = 5.0;
/// One TransactWriteItems (two phases).
const TRANSACTION_MS: f64 = 10.0;
/// One SNS Publish to a mobile endpoint.
const PUBLISH_MS: f64 = 20.0;
/// The engine's CPU per event on a 256 MB function, which gets about a sixth of a vCPU:
/// 37–54 µs of CPU per event measured in docs/performance.md, times six.
const CPU_PER_EVENT_MS: f64 = 0.3;

// ---------------------------------------------------------------- the mix

/// Users, each with a table and an events-api instance of their own.
const USERS: usize = 32;
/// Fixes per user: every batch size divides it, so each request is a whole batch.
const FIXES_PER_USER: usize = 50;
/// Seconds between two fixes of a user.
const FIX_INTERVAL_S: i64 = 15;
/// Stores of the catalog (`nearcast_tests::catalog`: 200 m apart, fences of 50 m).
const STORES: usize = 10;
/// The batch sizes replayed: fixes per `POST /v1/events`.
const BATCHES: [usize; 3] = [1, 10, 50];
/// A webhook signing secret (the Standard Webhooks test vector's).
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver that takes every message (the relay's DynamoDB requests are what is priced).
struct Takes;

impl nearcast_core::webhook::WebhookSender for Takes {
    fn post<'a>(
        &'a self,
        _: &'a nearcast_core::webhook::WebhookRequest,
    ) -> nearcast_core::ports::BoxFuture<'a, Result<(), String>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The seed of the population.
const SEED: u64 = 0x6e65_6172_6361_7374;

/// The total per million fixes at B = 10 measured when this test was written, US dollars.
/// The test fails when a change makes it more than 10 % dearer. Lower it when the design
/// gets cheaper; never raise it without a note in docs/aws.md saying why the cost went up.
const B10_TOTAL_PER_MILLION_TODAY: f64 = 0.32;
/// The goal at B = 10 (issue "Serverless for real"), US dollars per million fixes.
const B10_GOAL_PER_MILLION: f64 = 0.50;

/// Whether store `i` has an (enter-triggered) offer: 4 of 10.
fn has_offer(i: usize) -> bool {
    matches!(i % 5, 0 | 2)
}

// ---------------------------------------------------------------- randomness

/// SplitMix64: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.unit();
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    /// A random UUID-shaped id (the length of a real one).
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

// ---------------------------------------------------------------- the walks

/// One location fix: seconds after the walk's start, position, reported accuracy.
#[derive(Debug, Clone)]
struct Fix {
    id: String,
    offset_s: i64,
    lat: f64,
    lon: f64,
    accuracy_m: f64,
}

/// A user and the walk replayed for them.
#[derive(Debug, Clone)]
struct Walker {
    id: String,
    /// Push consent and a token (`apns` or `fcm`); the others consent to location only.
    push: Option<&'static str>,
    /// The stores visited, in order.
    visits: Vec<usize>,
    fixes: Vec<Fix>,
}

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_320.0;
/// The street the users walk along: this far north of the stores' row, beyond every
/// fence's exit band (50 m fence, 40 m margin).
const STREET_M: f64 = 180.0;
/// Halfway between the street and a store.
const APPROACH_M: f64 = 90.0;

/// The population: deterministic from `seed`. A quarter of the users visit two stores,
/// the rest one, and 40 % of the visits are to a store with an offer: each visit enters and
/// leaves a fence (5 % of the fixes), each visit to a store with an offer enters with a
/// candidate (1 %). Between visits they walk along a street out of every fence's reach. A
/// quarter of the users allow pushes; a push goes to each of them who visits a store with
/// an offer (once: the cap's 60 minutes between pushes outlast the walk), and so many of
/// them do that it is 0.2 % of the fixes.
fn population(seed: u64) -> Vec<Walker> {
    let mut rng = Rng(seed);
    let mut two = vec![false; USERS];
    two[..USERS / 4].fill(true);
    rng.shuffle(&mut two);
    let visits_total = USERS + USERS / 4;
    let mut at_offer = vec![false; visits_total];
    at_offer[..visits_total * 2 / 5].fill(true);
    rng.shuffle(&mut at_offer);
    let offer_stores: Vec<usize> = (0..STORES).filter(|&i| has_offer(i)).collect();
    let plain_stores: Vec<usize> = (0..STORES).filter(|&i| !has_offer(i)).collect();
    let mut next_visit = 0;
    let mut walkers = Vec::new();
    for &both in &two {
        let id = rng.uuid();
        let mut visits: Vec<usize> = Vec::new();
        for _ in 0..if both { 2 } else { 1 } {
            let pool = if at_offer[next_visit] {
                &offer_stores
            } else {
                &plain_stores
            };
            next_visit += 1;
            let near: Vec<usize> = pool
                .iter()
                .copied()
                .filter(|&s| visits.last().is_none_or(|&p| s != p && s.abs_diff(p) <= 3))
                .collect();
            let pick = if near.is_empty() { pool } else { &near };
            visits.push(pick[rng.between(0, pick.len() - 1)]);
        }
        let plan = plan(&mut rng, &visits);
        let fixes = plan
            .into_iter()
            .enumerate()
            .map(|(k, (north_m, lon))| {
                let (row, _) = nearcast_tests::store_point(0);
                let m_per_deg_lon = M_PER_DEG * row.to_radians().cos();
                // GPS noise of about 4 m, and the accuracy the phone reports.
                let lat = row + (north_m + 4.0 * rng.normal()) / M_PER_DEG;
                let lon = lon + 4.0 * rng.normal() / m_per_deg_lon;
                Fix {
                    id: rng.uuid(),
                    offset_s: k as i64 * FIX_INTERVAL_S,
                    lat,
                    lon,
                    accuracy_m: (5.0 + 10.0 * rng.unit()).round(),
                }
            })
            .collect();
        walkers.push(Walker {
            id,
            push: None,
            visits,
            fixes,
        });
    }
    let pushes = USERS * FIXES_PER_USER / 500;
    let (mut reach, mut not): (Vec<usize>, Vec<usize>) =
        (0..USERS).partition(|&u| walkers[u].visits.iter().any(|&s| has_offer(s)));
    rng.shuffle(&mut reach);
    rng.shuffle(&mut not);
    let allow = reach.iter().take(pushes).chain(&not[..USERS / 4 - pushes]);
    for (k, &u) in allow.enumerate() {
        walkers[u].push = Some(if k % 2 == 0 { "fcm" } else { "apns" });
    }
    walkers
}

/// A walk of [`FIXES_PER_USER`] fixes past `visits`: each fix's metres north of the
/// stores' row and its longitude, before noise.
fn plan(rng: &mut Rng, visits: &[usize]) -> Vec<(f64, f64)> {
    let lon = |s: usize| nearcast_tests::store_point(s).1;
    let (row, _) = nearcast_tests::store_point(0);
    let m_per_deg_lon = M_PER_DEG * row.to_radians().cos();
    let mut out: Vec<(f64, f64)> = Vec::new();
    // Along the street from `from` to `to` (longitudes) in `n` fixes.
    let street = |out: &mut Vec<(f64, f64)>, from: f64, to: f64, n: usize| {
        for k in 1..=n {
            out.push((STREET_M, from + (to - from) * k as f64 / n as f64));
        }
    };
    let two = visits.len() == 2;
    let mut here = lon(visits[0]) + (rng.unit() - 0.5) * 0.003;
    let before = if two {
        rng.between(3, 8)
    } else {
        rng.between(4, 20)
    };
    street(&mut out, here, lon(visits[0]), before);
    for (v, &s) in visits.iter().enumerate() {
        if v > 0 {
            let gap = rng.between(6, 9);
            street(&mut out, here, lon(s), gap);
        }
        // Up from the street, a few minutes inside (within 12 m of the centre), back.
        out.push((APPROACH_M, lon(s)));
        let inside = if two {
            rng.between(5, 8)
        } else {
            rng.between(6, 12)
        };
        for _ in 0..inside {
            let (dn, de) = (24.0 * rng.unit() - 12.0, 24.0 * rng.unit() - 12.0);
            out.push((dn, lon(s) + de / m_per_deg_lon));
        }
        out.push((APPROACH_M, lon(s)));
        here = lon(s);
    }
    // On along the street at a walking pace, east or west.
    let rest = FIXES_PER_USER - out.len();
    let step = if rng.unit() < 0.5 { 20.0 } else { -20.0 } / m_per_deg_lon;
    street(&mut out, here, here + step * rest as f64, rest);
    assert_eq!(out.len(), FIXES_PER_USER);
    out
}

// ---------------------------------------------------------------- one instance per user

/// A user's events-api instance, cold-started on the user's table through the proxy.
struct Instance {
    walker: Walker,
    table: String,
    app: axum::Router,
    engine: Arc<Engine>,
}

/// The cap policy of the template's defaults (2 a day, 6 a week, 60 minutes apart), without
/// quiet hours so that the result does not depend on the hour the test runs at.
fn cap_policy() -> CapPolicy {
    CapPolicy {
        per_week: 6,
        min_gap_minutes: 60,
        ..nearcast_tests::policy(2)
    }
}

/// Sends a `POST /v1/events` to `app` as API Gateway's HTTP API (payload 2.0) hands it to
/// the function, with `user` as the subject its JWT authorizer verified.
async fn post_events(app: &axum::Router, user: &str, body: Value) -> (StatusCode, Value) {
    let payload = json!({
        "version": "2.0", "routeKey": "POST /v1/events", "rawPath": "/v1/events",
        "rawQueryString": "",
        "headers": {"content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com", "domainPrefix": "abc123",
            "http": {"method": "POST", "path": "/v1/events", "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7", "userAgent": "nearcast-test"},
            "requestId": "r", "routeKey": "POST /v1/events", "stage": "$default",
            "time": "20/Nov/2026:09:59:31 +0000", "timeEpoch": 1_795_168_771_000_u64,
            "authorizer": {"jwt": {"claims": {"sub": user}, "scopes": []}}
        },
        "isBase64Encoded": false,
        "body": body.to_string()
    });
    let request =
        lambda_http::request::from_str(&payload.to_string()).expect("an API Gateway request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The user's table with the catalog (saved by the engine's admin method on a direct
/// client), then events-api's cold start on it through `proxy`, then the user's
/// onboarding through the handler: consents, and a push token for those who allow pushes.
async fn instance(
    walker: Walker,
    direct: Client,
    proxy: String,
    apps: (Option<String>, Option<String>),
    webhooks: bool,
) -> Instance {
    let table = unique("cost");
    DynamoStateStore::create_table(&direct, &table)
        .await
        .expect("create table");
    let admin = Engine::new(
        Arc::new(DynamoStateStore::new(direct, &table)),
        Arc::new(RecordingNotifier::new()),
        Arc::new(nearcast_tests::weather()),
        Arc::new(ManualClock::new(nearcast_tests::noon())),
        nearcast_tests::model(),
    )
    .await
    .expect("admin engine");
    let (stores, offers) = nearcast_tests::catalog(STORES);
    let offers = offers
        .into_iter()
        .enumerate()
        .filter(|(i, _)| has_offer(*i))
        .map(|(_, o)| o)
        .collect();
    admin
        .load_config(stores, offers, cap_policy())
        .await
        .expect("catalog");
    // The function's environment as infra/template.yaml sets it, with its defaults.
    let mut env: BTreeMap<&str, String> = BTreeMap::from([
        ("NEARCAST_TABLE", table.clone()),
        ("NEARCAST_DEVICE_AUTH", "jwt".into()),
        ("NEARCAST_APNS_ARN", apps.0.unwrap_or_default()),
        ("NEARCAST_FCM_ARN", apps.1.unwrap_or_default()),
        ("NEARCAST_CATALOG_REFRESH_SECS", "10".into()),
        ("NEARCAST_CAP_PER_DAY", "2".into()),
        ("NEARCAST_CAP_PER_WEEK", "6".into()),
        ("NEARCAST_CAP_MIN_GAP_MINUTES", "60".into()),
        ("NEARCAST_KEEP_IDEMPOTENCY_DAYS", "7".into()),
        ("NEARCAST_KEEP_LOG_DAYS", "90".into()),
    ]);
    if webhooks {
        env.insert(
            "NEARCAST_WEBHOOK_URL",
            "https://hooks.example.com/nearcast".into(),
        );
        env.insert("NEARCAST_WEBHOOK_SECRET", WEBHOOK_SECRET.into());
    }
    let config = nearcast_functions::Config::from_lookup(|k| env.get(k).cloned())
        .expect("events-api's environment");
    let aws = moto().sdk_config(Some(&proxy)).await;
    let engine = nearcast_functions::start_with("events-api", &config, &aws)
        .await
        .expect("events-api cold start");
    let app = nearcast_events_api::app(engine.clone(), config.device_auth);
    // Onboarding, stamped before the first fix of the walk.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(14)).to_rfc3339();
    let user = walker.id.clone();
    let mut purposes = vec!["location", "personalisation"];
    let mut events = Vec::new();
    if let Some(platform) = walker.push {
        purposes.push("push");
        // Tokens of real lengths and as random as real ones (they do not compress): APNs
        // 64 hex digits, FCM 163 characters (an instance id, ":APA91b", 152 of base64url).
        let mut rng = Rng(user.bytes().fold(SEED, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }));
        let mut chars = |n: usize, alphabet: &[u8]| -> String {
            (0..n)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize] as char)
                .collect()
        };
        const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let token = match platform {
            "apns" => chars(64, b"0123456789abcdef"),
            _ => {
                let instance = chars(11, B64URL);
                format!("{instance}:APA91b{}", chars(152, B64URL))
            }
        };
        events.push(
            json!({"event_id": format!("{user}-tok"), "type": "push_token", "at": at,
            "platform": platform, "token": token}),
        );
    }
    for p in purposes {
        events.push(
            json!({"event_id": format!("{user}-c-{p}"), "type": "consent", "at": at,
            "purpose": p, "granted": true}),
        );
    }
    let (s, v) = post_events(&app, &user, json!({"user_id": user, "events": events})).await;
    assert_eq!(s, StatusCode::OK, "onboarding: {v}");
    Instance {
        walker,
        table,
        app,
        engine,
    }
}

/// What one user's replay gave.
#[derive(Debug, Default, Clone)]
struct Tally {
    fixes: u64,
    invocations: u64,
    presence_changes: u64,
    candidates: u64,
    sent: u64,
    /// Fixes that did more than move the presence track (a fence entered or left, a
    /// candidate offer): those whose answer is kept under an idempotency key.
    eventful: u64,
    wall: Duration,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.fixes += o.fixes;
        self.invocations += o.invocations;
        self.presence_changes += o.presence_changes;
        self.candidates += o.candidates;
        self.sent += o.sent;
        self.eventful += o.eventful;
        self.wall += o.wall;
    }
}

/// Replays the user's walk in batches of `batch` fixes. The walk ends 30 s ago, so that
/// every fix is recent (the engine ignores fixes over 15 minutes old).
async fn replay(instance: Instance, batch: usize) -> Tally {
    let w = &instance.walker;
    let span = FIX_INTERVAL_S * (FIXES_PER_USER as i64 - 1) + 30;
    let start = chrono::Utc::now() - chrono::Duration::seconds(span);
    let mut t = Tally::default();
    for chunk in w.fixes.chunks(batch) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|f| {
                let at = start + chrono::Duration::seconds(f.offset_s);
                json!({"event_id": f.id, "type": "location", "at": at.to_rfc3339(),
                    "lat": f.lat, "lon": f.lon, "accuracy_m": f.accuracy_m})
            })
            .collect();
        let began = Instant::now();
        let (s, v) = post_events(
            &instance.app,
            &w.id,
            json!({"user_id": w.id, "events": events}),
        )
        .await;
        t.wall += began.elapsed();
        assert_eq!(s, StatusCode::OK, "{v}");
        let results = v["results"].as_array().expect("results");
        assert_eq!(results.len(), chunk.len(), "{v}");
        for r in results {
            assert_eq!(r["status"], "accepted", "{r}");
            let d = &r["decision"];
            t.presence_changes += d["presence"].as_array().map_or(0, |p| p.len() as u64);
            let verdict = d["verdict"].as_str().expect("a decision");
            if d["presence"].as_array().is_some_and(|p| !p.is_empty())
                || !d["store_id"].is_null()
                || !d["offer_id"].is_null()
                || !d["delivery_id"].is_null()
            {
                t.eventful += 1;
            }
            if verdict != "none" {
                t.candidates += 1;
            }
            if verdict == "sent" {
                t.sent += 1;
            }
        }
        t.fixes += chunk.len() as u64;
        t.invocations += 1;
    }
    t
}

/// Runs `f` on every item, at most `limit` at a time; the answers in the items' order.
async fn each<T, R, F, Fut>(items: Vec<T>, limit: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut set = tokio::task::JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let (f, permits) = (f.clone(), permits.clone());
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore");
            (i, f(item).await)
        });
    }
    let mut out: Vec<(usize, R)> = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

// ---------------------------------------------------------------- the bill

/// DynamoDB's data operations.
const DYNAMODB_OPS: &[&str] = &[
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "Scan",
    "BatchGetItem",
    "BatchWriteItem",
    "TransactGetItems",
    "TransactWriteItems",
];

/// What a table item is, from its key (docs/aws.md, "The table").
fn kind(pk: &str, sk: &str) -> &'static str {
    if pk.starts_with("USER#") {
        return match sk.split('#').next().unwrap_or("") {
            "PROFILE" => "profile",
            "EVENT" => "idempotency key",
            "DECISION" => "decision",
            "DELIVERY" => "delivery",
            "OUTCOME" => "outcome",
            _ => "user, other",
        };
    }
    match pk.split('#').next().unwrap_or("") {
        "PENDING" => "pending marker",
        "CONFIG" => "configuration",
        "BUDGET" | "COUPON" | "POOL" => "campaign",
        "HOOK" | "HOOKDEAD" => "webhook",
        "ERASED" => "erasure",
        _ => "other",
    }
}

/// Whether an item of this kind exists only because a push was sent.
fn push_kind(kind: &str) -> bool {
    matches!(kind, "delivery" | "pending marker")
}

/// What the items of one kind cost.
#[derive(Debug, Default, Clone, Copy)]
struct KindUse {
    rru: f64,
    wru: f64,
    /// Writes of items of the kind, and their bytes (as billed: the larger of before and
    /// after).
    writes: u64,
    bytes_written: u64,
}

/// The requests of one batch size, priced.
#[derive(Debug, Default)]
struct Bill {
    batch: usize,
    tally: Tally,
    /// Requests by operation (DynamoDB and SNS), without the catalog checks.
    ops: BTreeMap<String, u64>,
    /// The catalog and model checks: eventually consistent GetItems of `CONFIG / VERSION`.
    checks: u64,
    rru: f64,
    wru: f64,
    /// By kind of item.
    by_kind: BTreeMap<&'static str, KindUse>,
    /// Idempotency keys written.
    keys_written: u64,
    publishes: u64,
    /// Requests that only move a push along (the claim, the final status, the marker's
    /// delete).
    push_requests: BTreeMap<String, u64>,
    /// Operations this test has no price for.
    unpriced: BTreeMap<String, u64>,
}

/// Latency assumed for one request of `op`.
fn latency_ms(op: &str) -> f64 {
    match op {
        "TransactWriteItems" | "TransactGetItems" => TRANSACTION_MS,
        "Publish" => PUBLISH_MS,
        _ => SINGLE_ITEM_MS,
    }
}

/// The billed Lambda milliseconds assumed for the recorded work: per invocation
/// [`INVOCATION_MS`], per request its latency, per event [`CPU_PER_EVENT_MS`].
fn billed_ms(invocations: u64, ops: &BTreeMap<String, u64>, events: u64) -> f64 {
    invocations as f64 * INVOCATION_MS
        + ops
            .iter()
            .map(|(op, n)| *n as f64 * latency_ms(op))
            .sum::<f64>()
        + events as f64 * CPU_PER_EVENT_MS
}

fn compute_cost(ms: f64) -> f64 {
    ms / 1000.0 * LAMBDA_MEMORY_GB * LAMBDA_PER_GB_S
}

impl Bill {
    /// Prices `requests` (as the proxy recorded them) against `shadow`, the tables as they
    /// were before.
    fn new(
        batch: usize,
        tally: Tally,
        requests: &[(String, Vec<u8>)],
        shadow: &mut Shadow,
    ) -> Bill {
        let mut b = Bill {
            batch,
            tally,
            ..Bill::default()
        };
        for (op, body) in requests {
            if op == "Publish" {
                b.publishes += 1;
                *b.ops.entry(op.clone()).or_default() += 1;
                *b.push_requests.entry(op.clone()).or_default() += 1;
                continue;
            }
            let uses = DYNAMODB_OPS
                .contains(&op.as_str())
                .then(|| serde_json::from_slice::<Value>(body).ok())
                .flatten()
                .and_then(|body| shadow.apply(op, &body));
            let Some(uses) = uses else {
                *b.unpriced.entry(op.clone()).or_default() += 1;
                continue;
            };
            let check = op == "GetItem"
                && uses
                    .iter()
                    .all(|u| u.pk == "CONFIG" && u.sk == "VERSION" && !u.consistent);
            if check {
                b.checks += 1;
                continue;
            }
            *b.ops.entry(op.clone()).or_default() += 1;
            if uses.iter().all(|u| push_kind(kind(&u.pk, &u.sk))) {
                *b.push_requests.entry(op.clone()).or_default() += 1;
            }
            for u in uses {
                let k = kind(&u.pk, &u.sk);
                let e = b.by_kind.entry(k).or_default();
                e.rru += u.rru;
                e.wru += u.wru;
                if u.wru > 0.0 {
                    e.writes += 1;
                    e.bytes_written += u.size;
                }
                b.rru += u.rru;
                b.wru += u.wru;
                if k == "idempotency key" && u.wru > 0.0 {
                    b.keys_written += 1;
                }
            }
        }
        b
    }

    fn fixes(&self) -> f64 {
        self.tally.fixes as f64
    }

    /// Dollars per million fixes, by component.
    fn components(&self) -> Vec<(&'static str, f64)> {
        let per_million = 1e6 / self.fixes();
        let calls = self.tally.invocations as f64;
        let ms = billed_ms(self.tally.invocations, &self.ops, self.tally.fixes);
        vec![
            (
                "API Gateway requests",
                calls * API_GATEWAY_PER_REQUEST * per_million,
            ),
            ("Lambda requests", calls * LAMBDA_PER_REQUEST * per_million),
            ("Lambda compute", compute_cost(ms) * per_million),
            ("DynamoDB reads", self.rru * DYNAMODB_PER_RRU * per_million),
            ("DynamoDB writes", self.wru * DYNAMODB_PER_WRU * per_million),
            (
                "SNS (Publish + delivery)",
                self.publishes as f64 * (SNS_PER_PUBLISH + SNS_PER_DELIVERY) * per_million,
            ),
        ]
    }

    fn total(&self) -> f64 {
        self.components().iter().map(|(_, c)| c).sum()
    }

    /// A push's own cost: SNS, the writes of its delivery and pending marker (in the commit,
    /// the claim, the final status, the marker's delete), and the Lambda time of its own
    /// requests.
    fn per_push(&self) -> Option<(f64, f64, f64, f64)> {
        if self.publishes == 0 {
            return None;
        }
        let pushes = self.publishes as f64;
        let wru: f64 = self
            .by_kind
            .iter()
            .filter(|(k, _)| push_kind(k))
            .map(|(_, u)| u.wru)
            .sum();
        let ms: f64 = self
            .push_requests
            .iter()
            .map(|(op, n)| *n as f64 * latency_ms(op))
            .sum();
        let sns = SNS_PER_PUBLISH + SNS_PER_DELIVERY;
        let dynamodb = wru / pushes * DYNAMODB_PER_WRU;
        let lambda = compute_cost(ms / pushes);
        Some((wru / pushes, sns, dynamodb, lambda))
    }
}

fn share(n: u64, of: u64) -> f64 {
    n as f64 / of as f64
}

fn print_bills(bills: &[Bill]) {
    let head = |title: &str| {
        let mut s = format!("{title:<40}");
        for b in bills {
            s.push_str(&format!("{:>12}", format!("B = {}", b.batch)));
        }
        s
    };
    let row = |label: &str, f: &dyn Fn(&Bill) -> String| {
        let mut s = format!("{label:<40}");
        for b in bills {
            s.push_str(&format!("{:>12}", f(b)));
        }
        s
    };
    let mut out = vec![String::new(), head("the mix")];
    out.push(row("fixes", &|b| b.tally.fixes.to_string()));
    out.push(row("requests (API Gateway, Lambda)", &|b| {
        b.tally.invocations.to_string()
    }));
    out.push(row("fixes that enter or leave a fence", &|b| {
        format!(
            "{:.2} %",
            100.0 * share(b.tally.presence_changes, b.tally.fixes)
        )
    }));
    out.push(row("fixes that reach a candidate offer", &|b| {
        format!("{:.2} %", 100.0 * share(b.tally.candidates, b.tally.fixes))
    }));
    out.push(row("fixes that send a push", &|b| {
        format!("{:.2} %", 100.0 * share(b.tally.sent, b.tally.fixes))
    }));
    out.push(String::new());
    out.push(head("requests per million fixes"));
    out.push(row("API Gateway + Lambda invocations", &|b| {
        format!("{:.0}", b.tally.invocations as f64 * 1e6 / b.fixes())
    }));
    let mut ops: Vec<&String> = bills.iter().flat_map(|b| b.ops.keys()).collect();
    ops.sort();
    ops.dedup();
    for op in ops {
        out.push(row(op, &|b| {
            format!(
                "{:.0}",
                b.ops.get(op).copied().unwrap_or(0) as f64 * 1e6 / b.fixes()
            )
        }));
    }
    out.push(row("(catalog checks, not counted)", &|b| {
        b.checks.to_string()
    }));
    out.push(String::new());
    out.push(head("request units per fix"));
    out.push(row("RRU", &|b| format!("{:.3}", b.rru / b.fixes())));
    out.push(row("WRU", &|b| format!("{:.3}", b.wru / b.fixes())));
    let mut kinds: Vec<&str> = bills
        .iter()
        .flat_map(|b| b.by_kind.keys().copied())
        .collect();
    kinds.sort();
    kinds.dedup();
    let of = |b: &Bill, k: &str| b.by_kind.get(k).copied().unwrap_or_default();
    for &k in &kinds {
        out.push(row(&format!("  WRU: {k}"), &|b| {
            format!("{:.3}", of(b, k).wru / b.fixes())
        }));
    }
    for &k in &kinds {
        if bills.iter().any(|b| of(b, k).rru > 0.0) {
            out.push(row(&format!("  RRU: {k}"), &|b| {
                format!("{:.3}", of(b, k).rru / b.fixes())
            }));
        }
    }
    out.push(String::new());
    out.push(head("items written per fix"));
    for &k in &kinds {
        out.push(row(k, &|b| {
            format!("{:.4}", of(b, k).writes as f64 / b.fixes())
        }));
    }
    out.push(String::new());
    out.push(head("bytes per item written (as billed)"));
    for &k in &kinds {
        out.push(row(k, &|b| {
            let u = of(b, k);
            if u.writes == 0 {
                "-".into()
            } else {
                format!("{:.0}", u.bytes_written as f64 / u.writes as f64)
            }
        }));
    }
    out.push(String::new());
    out.push(head("US$ per million fixes"));
    for (i, (name, _)) in bills[0].components().iter().enumerate() {
        out.push(row(name, &|b| format!("{:.3}", b.components()[i].1)));
    }
    out.push(row("total", &|b| format!("{:.2}", b.total())));
    out.push(String::new());
    out.push(head("each push, on top (US$)"));
    out.push(row("WRU per push", &|b| {
        b.per_push().map_or("-".into(), |p| format!("{:.1}", p.0))
    }));
    out.push(row("SNS", &|b| {
        b.per_push().map_or("-".into(), |p| format!("{:.7}", p.1))
    }));
    out.push(row("DynamoDB writes", &|b| {
        b.per_push().map_or("-".into(), |p| format!("{:.7}", p.2))
    }));
    out.push(row("Lambda compute", &|b| {
        b.per_push().map_or("-".into(), |p| format!("{:.7}", p.3))
    }));
    out.push(row("total per push", &|b| {
        b.per_push()
            .map_or("-".into(), |p| format!("{:.7}", p.1 + p.2 + p.3))
    }));
    out.push(String::new());
    out.push(head("Lambda duration, ms per invocation"));
    out.push(row("assumed (billed)", &|b| {
        format!(
            "{:.1}",
            billed_ms(b.tally.invocations, &b.ops, b.tally.fixes) / b.tally.invocations as f64
        )
    }));
    out.push(row("measured locally, on moto", &|b| {
        format!(
            "{:.1}",
            b.tally.wall.as_secs_f64() * 1000.0 / b.tally.invocations as f64
        )
    }));
    eprintln!("{}", out.join("\n"));
}

// ---------------------------------------------------------------- the test

/// One replay of the population at `batch` fixes a request, on fresh tables behind a fresh
/// recording proxy: its bill, and with `webhooks` the bill of the relay's pass that posts
/// the messages (its reads and writes, priced the same way) with the number it delivered.
async fn run(
    walkers: &[Walker],
    direct: &Client,
    sns: &nearcast_aws::sns::aws_sdk_sns::Client,
    batch: usize,
    webhooks: bool,
) -> (Bill, Option<(Bill, usize, u64)>) {
    let proxy = Proxy::start(&moto_url()).await;
    let apps = platform_applications(sns, &format!("cost-b{batch}-{webhooks}")).await;
    let (url, d) = (proxy.url.clone(), direct.clone());
    let instances = each(walkers.to_vec(), 4, move |w| {
        instance(w, d.clone(), url.clone(), apps.clone(), webhooks)
    })
    .await;
    let engines: Vec<Arc<Engine>> = instances.iter().map(|i| i.engine.clone()).collect();
    // The tables as the replay finds them, then only the replay's requests.
    let mut shadow = Shadow::new();
    for i in &instances {
        shadow.load(direct, &i.table).await;
    }
    proxy.reset_counts();
    let tallies = each(instances, 4, move |i| replay(i, batch)).await;
    let mut tally = Tally::default();
    for t in tallies {
        tally += t;
    }
    let bill = Bill::new(batch, tally.clone(), &proxy.requests(), &mut shadow);
    if !webhooks {
        return (bill, None);
    }
    // The relay (events-queue, after each batch and once a minute): one pass over each
    // table. Its 8 Queries a pass are paid per pass, not per message (one pass serves every
    // person of a deployment): counted apart, the rest priced.
    proxy.reset_counts();
    let mut delivered = 0;
    for e in engines {
        let relay = nearcast_core::webhook::WebhookRelay::new(
            e.store().clone(),
            Arc::new(Takes),
            vec![nearcast_core::webhook::WebhookSecret::parse(WEBHOOK_SECRET).unwrap()],
            nearcast_core::webhook::RetryPolicy::DEFAULT,
            Arc::new(nearcast_core::ports::SystemClock),
        );
        delivered += relay.run_once(10_000).await.expect("relay").delivered;
        assert!(
            e.store()
                .due_webhooks(chrono::Utc::now() + chrono::Duration::days(1), 10)
                .await
                .unwrap()
                .is_empty(),
            "every message delivered"
        );
    }
    let requests = proxy.requests();
    let queries = requests.iter().filter(|(op, _)| op == "Query").count() as u64;
    let per_message: Vec<(String, Vec<u8>)> = requests
        .into_iter()
        .filter(|(op, _)| op != "Query")
        .collect();
    let relay = Bill::new(
        batch,
        Tally {
            fixes: tally.fixes,
            ..Tally::default()
        },
        &per_message,
        &mut shadow,
    );
    (bill, Some((relay, delivered, queries)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_per_million_location_fixes() {
    let began = Instant::now();
    let walkers = population(SEED);
    let direct = moto().dynamodb(None).await;
    let sns = moto().sns(None).await;
    let mut bills = Vec::new();
    for batch in BATCHES {
        let (bill, _) = run(&walkers, &direct, &sns, batch, false).await;
        eprintln!(
            "B = {batch}: {} requests, {} fixes, {:.1} s so far",
            bill.tally.invocations,
            bill.tally.fixes,
            began.elapsed().as_secs_f64()
        );
        bills.push(bill);
    }
    print_bills(&bills);

    for b in &bills {
        let fixes = b.tally.fixes;
        let case = format!("B = {}", b.batch);
        assert_eq!(fixes as usize, USERS * FIXES_PER_USER, "{case}");
        assert!(
            b.unpriced.is_empty(),
            "{case}: no price for {:?}",
            b.unpriced
        );
        // The mix is the one intended.
        let (presence, candidates, sent) = (
            share(b.tally.presence_changes, fixes),
            share(b.tally.candidates, fixes),
            share(b.tally.sent, fixes),
        );
        assert!((0.04..=0.06).contains(&presence), "{case}: {presence}");
        assert!(
            (0.007..=0.013).contains(&candidates),
            "{case}: {candidates}"
        );
        assert!((0.001..=0.004).contains(&sent), "{case}: {sent}");
        // Every push decided went out once.
        assert_eq!(b.publishes, b.tally.sent, "{case}");
        // Nothing is silently not written: every eventful fix's idempotency key, and a
        // profile (with the ids of its last events) per request at least.
        assert_eq!(b.keys_written, b.tally.eventful, "{case}: idempotency keys");
        assert!(
            b.tally.eventful >= b.tally.presence_changes.max(b.tally.candidates),
            "{case}"
        );
        let profiles = b.by_kind.get("profile").map_or(0, |k| k.writes);
        assert!(
            profiles >= b.tally.invocations,
            "{case}: {profiles} profiles written"
        );
        assert!(b.rru > 0.0, "{case}");
    }
    // Batching changes what is paid, not what is decided.
    for b in &bills[1..] {
        assert_eq!(
            (b.tally.presence_changes, b.tally.candidates, b.tally.sent),
            (
                bills[0].tally.presence_changes,
                bills[0].tally.candidates,
                bills[0].tally.sent
            ),
            "B = {}",
            b.batch
        );
    }
    let (b1, b10) = (bills[0].total(), bills[1].total());
    assert!(b10 < b1, "B = 10 ({b10}) is cheaper than B = 1 ({b1})");
    assert!(
        b10 <= B10_TOTAL_PER_MILLION_TODAY * 1.10,
        "B = 10 costs ${b10:.2} per million fixes, over 110 % of the ${B10_TOTAL_PER_MILLION_TODAY} \
         measured when the test was written: see docs/aws.md"
    );
    assert!(
        b10 <= B10_GOAL_PER_MILLION,
        "B = 10 costs ${b10:.2} per million fixes, over the goal of ${B10_GOAL_PER_MILLION}"
    );
    // Presence webhooks on, at B = 10: the same decisions, one message per fix that
    // entered or left fences, written in its commit; the relay's lease and delete per
    // message. What they add per million fixes (docs/aws.md).
    let (hooks, relay) = run(&walkers, &direct, &sns, 10, true).await;
    let (relay, delivered, queries) = relay.expect("the relay's bill");
    let b10 = &bills[1];
    assert_eq!(
        (
            hooks.tally.presence_changes,
            hooks.tally.candidates,
            hooks.tally.sent
        ),
        (
            b10.tally.presence_changes,
            b10.tally.candidates,
            b10.tally.sent
        ),
        "webhooks change what is paid, not what is decided"
    );
    assert!(
        hooks.unpriced.is_empty() && relay.unpriced.is_empty(),
        "no price for {:?} {:?}",
        hooks.unpriced,
        relay.unpriced
    );
    let messages = hooks.by_kind.get("webhook").map_or(0, |k| k.writes);
    assert!(
        messages > 0 && messages as usize == delivered,
        "{messages} written, {delivered} posted"
    );
    assert!(
        messages <= hooks.tally.presence_changes,
        "one message per event at most"
    );
    let in_commits = hooks.total() - b10.total();
    let per_million = 1e6 / relay.fixes();
    let by_relay = (relay.rru * DYNAMODB_PER_RRU + relay.wru * DYNAMODB_PER_WRU) * per_million;
    eprintln!(
        "webhooks at B = 10: {messages} messages for {} fixes; +${in_commits:.3} per million fixes in the commits, +${by_relay:.3} for the relay's leases and deletes ({:.1} WRU a message), and {queries} Queries for {} passes (8 a pass, paid per pass)",
        hooks.tally.fixes,
        relay.wru / messages as f64,
        USERS,
    );
    assert!(
        in_commits + by_relay <= 0.20,
        "webhooks add ${:.3} per million fixes",
        in_commits + by_relay
    );
    eprintln!("took {:.1} s", began.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------- the units, alone

fn item(v: Value) -> Item {
    v.as_object().cloned().expect("an object")
}

#[test]
fn numbers_take_a_byte_per_two_significant_digits_plus_one() {
    assert_eq!(number_size("0"), 1);
    assert_eq!(number_size("7"), 2);
    assert_eq!(number_size("12"), 2);
    assert_eq!(number_size("123"), 3);
    assert_eq!(number_size("1000"), 2, "trailing zeros trimmed");
    assert_eq!(number_size("-0.00120"), 2, "sign, point and zeros trimmed");
    assert_eq!(number_size("1784221163"), 6);
    assert_eq!(number_size(&"9".repeat(38)), 20);
}

#[test]
fn values_and_items_are_sized_as_dynamodb_sizes_them() {
    assert_eq!(value_size(&json!({"S": "héllo"})), 6, "UTF-8 bytes");
    assert_eq!(value_size(&json!({"B": "AAEC"})), 3, "decoded bytes");
    assert_eq!(value_size(&json!({"BOOL": true})), 1);
    assert_eq!(value_size(&json!({"NULL": true})), 1);
    assert_eq!(value_size(&json!({"SS": ["ab", "c"]})), 3);
    assert_eq!(value_size(&json!({"NS": ["1", "123"]})), 5);
    // Maps and lists: 3 bytes, their contents, 1 byte per element.
    assert_eq!(value_size(&json!({"M": {}})), 3);
    assert_eq!(value_size(&json!({"M": {"a": {"S": "xy"}}})), 3 + 1 + 2 + 1);
    assert_eq!(
        value_size(&json!({"L": [{"N": "1"}, {"BOOL": false}]})),
        3 + 2 + 1 + 1 + 1
    );
    // A profile-like item: names count as much as values.
    let profile = item(json!({
        "pk": {"S": "USER#ana"}, "sk": {"S": "PROFILE"}, "version": {"N": "12"},
        "state": {"S": "x".repeat(1000)}
    }));
    assert_eq!(
        item_size(&profile),
        (2 + 8) + (2 + 7) + (7 + 2) + (5 + 1000)
    );
}

#[test]
fn units_round_up_per_kilobyte_written_and_four_read() {
    assert_eq!(write_units(0), 1.0);
    assert_eq!(write_units(1024), 1.0);
    assert_eq!(write_units(1025), 2.0);
    assert_eq!(write_units(3 * 1024 + 1), 4.0);
    assert_eq!(read_units(1), 1.0);
    assert_eq!(read_units(4096), 1.0);
    assert_eq!(read_units(4097), 2.0);
}

#[test]
fn requests_cost_what_dynamodb_bills_for_them() {
    let mut t = Shadow::new();
    let cost = |t: &mut Shadow, op: &str, body: Value| -> (f64, f64) {
        let uses = t.apply(op, &body).expect("a data operation");
        (
            uses.iter().map(|u| u.rru).sum(),
            uses.iter().map(|u| u.wru).sum(),
        )
    };
    let key = |sk: &str| json!({"pk": {"S": "USER#a"}, "sk": {"S": sk}});
    let big =
        json!({"pk": {"S": "USER#a"}, "sk": {"S": "PROFILE"}, "state": {"S": "x".repeat(1500)}});
    // A 1.5 KB put: 2 WRU; reading it back: 1 RRU, half eventually consistent.
    assert_eq!(
        cost(&mut t, "PutItem", json!({"TableName": "t", "Item": big})),
        (0.0, 2.0)
    );
    assert_eq!(
        cost(
            &mut t,
            "GetItem",
            json!({"TableName": "t", "Key": key("PROFILE"), "ConsistentRead": true})
        ),
        (1.0, 0.0)
    );
    assert_eq!(
        cost(
            &mut t,
            "GetItem",
            json!({"TableName": "t", "Key": key("PROFILE")})
        ),
        (0.5, 0.0)
    );
    // A missing item still costs the minimum read.
    assert_eq!(
        cost(
            &mut t,
            "GetItem",
            json!({"TableName": "t", "Key": key("NONE"), "ConsistentRead": true})
        ),
        (1.0, 0.0)
    );
    // An update that shrinks the item is billed at the larger size, before it.
    let shrink = json!({"TableName": "t", "Key": key("PROFILE"),
        "UpdateExpression": "SET #s = :v", "ExpressionAttributeNames": {"#s": "state"},
        "ExpressionAttributeValues": {":v": {"S": "small"}}});
    assert_eq!(cost(&mut t, "UpdateItem", shrink), (0.0, 2.0));
    let small = item_size(t.get("t", &item(key("PROFILE"))).unwrap());
    assert_eq!(small, (2 + 6) + (2 + 7) + (5 + 5));
    // In a transaction every item costs twice, a condition check included.
    let tx = json!({"TransactItems": [
        {"Put": {"TableName": "t", "Item": {"pk": {"S": "USER#a"}, "sk": {"S": "EVENT#1"},
            "result": {"S": "y".repeat(1100)}}, "ConditionExpression": "attribute_not_exists(pk)"}},
        {"Update": {"TableName": "t", "Key": key("PROFILE"), "UpdateExpression": "ADD #v :one",
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        {"ConditionCheck": {"TableName": "t", "Key": key("PROFILE"),
            "ConditionExpression": "attribute_exists(pk)"}},
        {"Delete": {"TableName": "t", "Key": key("NONE")}}
    ]});
    assert_eq!(
        cost(&mut t, "TransactWriteItems", tx),
        (0.0, 4.0 + 2.0 + 2.0 + 2.0)
    );
    assert_eq!(
        t.get("t", &item(key("PROFILE"))).unwrap()["version"],
        json!({"N": "1"})
    );
    // A delete is billed at the size of what it deletes.
    assert_eq!(
        cost(
            &mut t,
            "DeleteItem",
            json!({"TableName": "t", "Key": key("EVENT#1")})
        ),
        (0.0, 2.0)
    );
    assert!(t.get("t", &item(key("EVENT#1"))).is_none());
    // TransactGetItems: twice a strongly consistent read.
    assert_eq!(
        cost(
            &mut t,
            "TransactGetItems",
            json!({"TransactItems": [{"Get": {"TableName": "t", "Key": key("PROFILE")}}]})
        ),
        (2.0, 0.0)
    );
    // A Query is billed on the total size of what it reads, rounded up once.
    for i in 0..3 {
        let it = json!({"pk": {"S": "USER#a"}, "sk": {"S": format!("DECISION#{i}")},
            "body": {"S": "z".repeat(1500)}});
        t.insert("t", item(it));
    }
    let q = |cond: &str, extra: Value| {
        let mut body = json!({"TableName": "t", "KeyConditionExpression": cond,
            "ExpressionAttributeValues": {":pk": {"S": "USER#a"}, ":p": {"S": "DECISION#"},
                ":lo": {"S": "DECISION#1"}, ":hi": {"S": "DECISION#2"}},
            "ConsistentRead": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        body
    };
    assert_eq!(
        cost(
            &mut t,
            "Query",
            q("pk = :pk AND begins_with(sk, :p)", json!({}))
        ),
        (2.0, 0.0),
        "3 × 1.5 KB: 2 units of 4 KB"
    );
    assert_eq!(
        cost(
            &mut t,
            "Query",
            q("pk = :pk AND sk BETWEEN :lo AND :hi", json!({}))
        ),
        (1.0, 0.0)
    );
    assert_eq!(
        cost(
            &mut t,
            "Query",
            q("pk = :pk AND sk < :lo", json!({"Limit": 1}))
        ),
        (1.0, 0.0)
    );
    // Operations that touch no item are not priced here.
    assert!(
        t.apply("DescribeTable", &json!({"TableName": "t"}))
            .is_none()
    );
}

#[test]
fn update_expressions_apply_to_the_copy() {
    let mut it = item(
        json!({"pk": {"S": "P"}, "sk": {"S": "S"}, "claim": {"S": "c1"},
        "n": {"N": "5"}, "tags": {"SS": ["a"]}}),
    );
    let names = item(json!({"#s": "status", "#c": "claim", "#t": "ttl"}));
    let values = item(
        json!({":to": {"S": "sent"}, ":ttl": {"N": "99"}, ":one": {"N": "1"},
        ":b": {"SS": ["b"]}, ":a": {"SS": ["a"]}}),
    );
    apply_update(
        &mut it,
        "SET #s = :to, #t = if_not_exists(#t, :ttl) REMOVE #c",
        &names,
        &values,
    );
    assert_eq!(it["status"], json!({"S": "sent"}));
    assert_eq!(it["ttl"], json!({"N": "99"}));
    assert!(!it.contains_key("claim"));
    apply_update(
        &mut it,
        "SET #t = if_not_exists(#t, :one), n = n + :one",
        &names,
        &values,
    );
    assert_eq!(it["ttl"], json!({"N": "99"}), "kept");
    assert_eq!(it["n"], json!({"N": "6"}));
    apply_update(&mut it, "ADD n :one, tags :b, fresh :one", &names, &values);
    assert_eq!(it["n"], json!({"N": "7"}));
    assert_eq!(it["tags"], json!({"SS": ["a", "b"]}));
    assert_eq!(it["fresh"], json!({"N": "1"}));
    apply_update(&mut it, "DELETE tags :a", &names, &values);
    assert_eq!(it["tags"], json!({"SS": ["b"]}));
}

#[test]
fn the_population_is_the_intended_mix() {
    let walkers = population(SEED);
    assert_eq!(walkers.len(), USERS);
    assert!(walkers.iter().all(|w| w.fixes.len() == FIXES_PER_USER));
    let visits: usize = walkers.iter().map(|w| w.visits.len()).sum();
    let at_offers = walkers
        .iter()
        .flat_map(|w| &w.visits)
        .filter(|&&s| has_offer(s))
        .count();
    assert_eq!(visits, USERS + USERS / 4);
    assert_eq!(at_offers, visits * 2 / 5);
    assert_eq!(
        walkers.iter().filter(|w| w.push.is_some()).count(),
        USERS / 4
    );
    let reached = walkers
        .iter()
        .filter(|w| w.push.is_some() && w.visits.iter().any(|&s| has_offer(s)))
        .count();
    assert_eq!(reached, USERS * FIXES_PER_USER / 500, "0.2 % of the fixes");
    // Seeded: the same population every time.
    assert_eq!(population(SEED)[7].fixes[13].lat, walkers[7].fixes[13].lat);
    // No step is faster than the engine's speed gate allows (50 m/s).
    for w in &walkers {
        for pair in w.fixes.windows(2) {
            let d = nearcast_core::geofence::haversine_m(
                pair[0].lat,
                pair[0].lon,
                pair[1].lat,
                pair[1].lon,
            );
            assert!(d < 20.0 * FIX_INTERVAL_S as f64, "{d} m in one step");
        }
    }
}
