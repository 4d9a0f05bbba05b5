//! Presence webhooks, on the in-memory, SQLite and DynamoDB (moto) stores: each visit begun
//! or ended reaches the back end signed, at least once, under a dedupe id that never
//! changes; failures are retried with backoff and dead-lettered; two relays do not post
//! one message twice while both live; a relay that dies mid-attempt leaves the message to
//! the next; erasure removes a person's messages, delivered or not.

use chrono::Duration;
use nearcast_core::engine::{Engine, EventReport};
use nearcast_core::ports::{BoxFuture, Clock};
use nearcast_core::webhook::{
    RetryPolicy, WebhookRelay, WebhookRequest, WebhookSecret, WebhookSender, message_id,
};
use nearcast_tests::{Backend, Harness, fix_at, harness, id, noon, onboarding, policy};
use serde_json::Value;
use std::sync::{Arc, Mutex};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A receiver that records every request and answers as told.
#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<WebhookRequest>>,
    /// Fail this many requests first (then succeed), or all of them with `u32::MAX`.
    fail_first: Mutex<u32>,
}

impl Receiver {
    fn failing(n: u32) -> Arc<Self> {
        let r = Self::default();
        *r.fail_first.lock().unwrap() = n;
        Arc::new(r)
    }
    fn got(&self) -> Vec<WebhookRequest> {
        self.got.lock().unwrap().clone()
    }
}

impl WebhookSender for Receiver {
    fn post<'a>(&'a self, r: &'a WebhookRequest) -> BoxFuture<'a, Result<(), String>> {
        self.got.lock().unwrap().push(r.clone());
        let mut fail = self.fail_first.lock().unwrap();
        let res = if *fail > 0 {
            *fail = fail.saturating_sub(u32::from(*fail != u32::MAX));
            Err("HTTP 503".to_string())
        } else {
            Ok(())
        };
        Box::pin(std::future::ready(res))
    }
}

fn relay(h: &Harness, to: Arc<Receiver>, policy: RetryPolicy) -> WebhookRelay {
    WebhookRelay::new(
        h.store.clone(),
        to,
        vec![WebhookSecret::parse(SECRET).unwrap()],
        policy,
        Arc::new(h.clock.clone()),
    )
}

async fn run(engine: &Engine, events: Vec<nearcast_core::event::Event>) -> Vec<EventReport> {
    let mut out = Vec::new();
    for e in events {
        out.push(engine.process(&e).await.expect("processed"));
    }
    out
}

/// `user` onboarded, then a walk: at store 0, away at store 5 twice (leaving 0), back.
/// Answers the reports of the fixes.
async fn walk(h: &Harness, user: &str) -> Vec<EventReport> {
    run(&h.engine, onboarding(user, noon())).await;
    let t = |m: i64| noon() + Duration::minutes(m);
    run(
        &h.engine,
        vec![
            fix_at(user, &format!("{user}-f1"), 0, t(0)),
            fix_at(user, &format!("{user}-f2"), 5, t(2)),
            fix_at(user, &format!("{user}-f3"), 5, t(4)),
            fix_at(user, &format!("{user}-f4"), 0, t(6)),
        ],
    )
    .await
}

/// The reports that changed presence.
fn changing(reports: &[EventReport]) -> Vec<&EventReport> {
    reports
        .iter()
        .filter(|r| r.decision.as_ref().is_some_and(|d| !d.presence.is_empty()))
        .collect()
}

async fn every_change_reaches_the_back_end_signed_and_once(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    let reports = walk(&h, "ana").await;
    let changed = changing(&reports);
    assert!(
        changed.len() >= 3,
        "the walk enters and leaves: {:?}",
        reports.iter().map(|r| &r.decision).collect::<Vec<_>>()
    );
    // A resend changes nothing and adds no message.
    let again = run(
        &h.engine,
        vec![fix_at("ana", "ana-f1", 0, noon() + Duration::minutes(0))],
    )
    .await;
    assert_eq!(again[0].status, "duplicate");
    let due = h.store.due_webhooks(h.clock.now(), 100).await.unwrap();
    assert_eq!(due.len(), changed.len(), "one message per changing event");

    let to = Receiver::failing(0);
    let r = relay(&h, to.clone(), RetryPolicy::DEFAULT);
    let report = r.run_once(100).await.unwrap();
    assert_eq!(report.delivered, changed.len());
    let got = to.got();
    assert_eq!(got.len(), changed.len(), "each posted once");
    let secret = WebhookSecret::parse(SECRET).unwrap();
    for (req, rep) in got.iter().zip(&changed) {
        let d = rep.decision.as_ref().unwrap();
        // In commit order here (all due at once, ordered by id then): match by id.
        let req = got
            .iter()
            .find(|g| g.id == message_id(&id("ana"), &d.event_id))
            .unwrap_or(req);
        assert_eq!(req.id, message_id(&id("ana"), &d.event_id));
        assert_eq!(req.timestamp, h.clock.now().timestamp());
        assert_eq!(
            req.signature,
            secret.sign(&req.id, req.timestamp, &req.body),
            "signed over id, timestamp and the exact body"
        );
        let body: Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["type"], "presence.changed");
        assert_eq!(body["data"]["user_id"], "ana");
        assert_eq!(body["data"]["event_id"], d.event_id.as_str());
        assert_eq!(
            body["data"]["changes"],
            serde_json::to_value(&d.presence).unwrap(),
            "the changes the event's answer listed"
        );
    }
    // Nothing is left, and a second pass posts nothing.
    assert!(
        h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(r.run_once(100).await.unwrap().delivered, 0);
    assert_eq!(to.got().len(), changed.len());
}

async fn failures_back_off_then_dead_letter_then_redrive(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    run(&h.engine, onboarding("bo", noon())).await;
    run(&h.engine, vec![fix_at("bo", "bo-f1", 0, noon())]).await;
    let to = Receiver::failing(u32::MAX);
    let p = RetryPolicy::DEFAULT;
    let r = relay(&h, to.clone(), p);
    let mut waited = Vec::new();
    for attempt in 1..=p.max_attempts {
        let report = r.run_once(100).await.unwrap();
        let before = h.clock.now();
        if attempt < p.max_attempts {
            assert_eq!(report.retried, 1, "attempt {attempt}");
            // Not due again until its backoff has passed.
            assert!(h.store.due_webhooks(before, 10).await.unwrap().is_empty());
            let rec = h
                .store
                .due_webhooks(before + Duration::hours(2), 10)
                .await
                .unwrap()
                .remove(0);
            assert_eq!(rec.attempts, attempt);
            assert_eq!(rec.last_error.as_deref(), Some("HTTP 503"));
            waited.push(rec.next_at - before);
            h.clock.set(rec.next_at);
        } else {
            assert_eq!(report.dead, 1, "the last attempt dead-letters");
        }
    }
    assert_eq!(to.got().len() as u32, p.max_attempts);
    assert!(
        to.got().iter().all(|g| g.id == to.got()[0].id),
        "one dedupe id across attempts"
    );
    // Doubling waits, within the jitter, up to the cap.
    for (k, w) in waited.iter().enumerate() {
        let base = (10_000i64 << k).min(3_600_000);
        let ms = w.num_milliseconds();
        assert!(
            ms >= base * 8 / 10 && ms <= base * 12 / 10 + 1,
            "wait {k}: {ms} ms against {base}"
        );
    }
    assert!(
        h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty(),
        "a dead letter is never due"
    );
    let dead = h.store.dead_webhooks(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].dead);
    assert_eq!(dead[0].attempts, p.max_attempts);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 503"));
    // Redriven, it is due now with no attempts, and a receiver that is back takes it. The
    // audit log says who redrove it.
    let ops = nearcast_core::audit::Actor {
        name: "ops".into(),
        role: nearcast_core::audit::Role::Admin,
    };
    assert_eq!(h.engine.redrive_webhooks(&ops).await.unwrap(), 1);
    let log = h.store.audit_log(None, 1).await.unwrap();
    assert_eq!(
        (log[0].action.as_str(), &log[0].actor, &log[0].after),
        (
            "webhooks.redrive",
            &ops,
            &Some(serde_json::json!({"redriven": 1}))
        )
    );
    assert!(h.store.dead_webhooks(10).await.unwrap().is_empty());
    let due = h.store.due_webhooks(h.clock.now(), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].attempts, 0);
    *to.fail_first.lock().unwrap() = 0;
    assert_eq!(r.run_once(10).await.unwrap().delivered, 1);
    assert!(h.store.dead_webhooks(10).await.unwrap().is_empty());
    assert!(
        h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn two_live_relays_post_each_message_once(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    let mut expected = 0;
    for u in ["c1", "c2", "c3"] {
        expected += changing(&walk(&h, u).await).len();
    }
    let to = Receiver::failing(0);
    let (a, b) = (
        relay(&h, to.clone(), RetryPolicy::DEFAULT),
        relay(&h, to.clone(), RetryPolicy::DEFAULT),
    );
    let (ra, rb) = tokio::join!(a.run_once(100), b.run_once(100));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.delivered + rb.delivered, expected);
    let mut ids: Vec<String> = to.got().into_iter().map(|g| g.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(n, expected, "no message posted twice");
    assert_eq!(ids.len(), expected);
}

async fn a_relay_that_dies_mid_attempt_leaves_the_message_to_the_next(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    run(&h.engine, onboarding("di", noon())).await;
    run(&h.engine, vec![fix_at("di", "di-f1", 0, noon())]).await;
    let m = h
        .store
        .due_webhooks(h.clock.now(), 10)
        .await
        .unwrap()
        .remove(0);
    // A relay leases it (and perhaps posts it) and dies before settling.
    let lease = RetryPolicy::DEFAULT.lease;
    assert!(
        h.store
            .lease_webhook(&id("di"), &m.message.id, 0, h.clock.now() + lease)
            .await
            .unwrap()
    );
    // The same lease cannot be taken twice.
    assert!(
        !h.store
            .lease_webhook(&id("di"), &m.message.id, 0, h.clock.now() + lease)
            .await
            .unwrap()
    );
    let to = Receiver::failing(0);
    let r = relay(&h, to.clone(), RetryPolicy::DEFAULT);
    assert_eq!(
        r.run_once(10).await.unwrap().delivered,
        0,
        "held by the lease"
    );
    h.clock.set(h.clock.now() + lease + Duration::seconds(1));
    assert_eq!(
        r.run_once(10).await.unwrap().delivered,
        1,
        "then taken over"
    );
    assert_eq!(to.got().len(), 1);
    assert_eq!(to.got()[0].id, m.message.id);
}

async fn erasure_removes_a_persons_messages_live_and_dead(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    walk(&h, "er").await;
    walk(&h, "ok").await;
    // Some of "er"'s messages die (one attempt allowed), others stay due.
    let one = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::DEFAULT
    };
    let r = relay(&h, Receiver::failing(u32::MAX), one);
    r.run_once(2).await.unwrap();
    let data = h.store.user_data(&id("er")).await.unwrap();
    assert!(!data.webhooks.is_empty(), "subject access lists them");
    let others_before = h.store.user_data(&id("ok")).await.unwrap().webhooks.len();
    // On DynamoDB the erasure counts what it deletes: the person's partition and their
    // messages in the shared ones.
    let expected = match &h.dynamo_table {
        Some(table) => {
            let items = nearcast_tests::scan_table(table).await;
            let own = items.keys().filter(|k| k.starts_with("USER#er / ")).count();
            let hooks = items
                .keys()
                .filter(|k| k.starts_with("HOOK") && k.contains(" / er#"))
                .count();
            assert_eq!(hooks, data.webhooks.len(), "{:?}", items.keys());
            Some((own + hooks) as u64)
        }
        None => None,
    };
    let erased = h.engine.erase(&id("er")).await.expect("erased");
    if let Some(n) = expected {
        assert_eq!(erased.records, n);
    }
    assert!(
        h.store
            .user_data(&id("er"))
            .await
            .unwrap()
            .webhooks
            .is_empty()
    );
    let later = h.clock.now() + Duration::days(1);
    for rec in h.store.due_webhooks(later, 100).await.unwrap() {
        assert_ne!(rec.message.user_id, id("er"));
    }
    for rec in h.store.dead_webhooks(100).await.unwrap() {
        assert_ne!(rec.message.user_id, id("er"));
    }
    assert_eq!(
        h.store.user_data(&id("ok")).await.unwrap().webhooks.len(),
        others_before,
        "nobody else's"
    );
}

async fn with_webhooks_off_nothing_is_written(backend: Backend) {
    let h = harness(backend, 10, policy(3)).await;
    let reports = walk(&h, "of").await;
    assert!(!changing(&reports).is_empty());
    assert!(
        h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Messages just written are posted from the decisions that wrote them, without reading
/// the outbox (events-queue after each batch); a pass racing with it posts none twice.
async fn fresh_messages_are_posted_without_reading_the_outbox(backend: Backend) {
    use nearcast_core::webhook::WebhookMessage;
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    let reports = walk(&h, "fr").await;
    let fresh: Vec<WebhookMessage> = reports
        .iter()
        .filter_map(|r| r.decision.as_ref())
        .filter_map(WebhookMessage::of)
        .collect();
    assert!(fresh.len() >= 3);
    let to = Receiver::failing(0);
    let (a, b) = (
        relay(&h, to.clone(), RetryPolicy::DEFAULT),
        relay(&h, to.clone(), RetryPolicy::DEFAULT),
    );
    let (fa, pb) = tokio::join!(a.deliver_fresh(&fresh), b.run_once(100));
    let (fa, pb) = (fa.unwrap(), pb.unwrap());
    assert_eq!(fa.delivered + pb.delivered, fresh.len());
    let mut ids: Vec<String> = to.got().into_iter().map(|g| g.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), fresh.len(), "each once");
    assert_eq!(to.got().len(), fresh.len(), "none twice");
    // Posting them again finds them gone.
    let again = a.deliver_fresh(&fresh).await.unwrap();
    assert_eq!((again.delivered, again.skipped), (0, fresh.len()));
    // A failure waits in the outbox for the next pass.
    walk(&h, "fs").await;
    let more: Vec<WebhookMessage> = h
        .store
        .due_webhooks(h.clock.now(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.message)
        .collect();
    let failing = relay(&h, Receiver::failing(u32::MAX), RetryPolicy::DEFAULT);
    assert_eq!(
        failing.deliver_fresh(&more).await.unwrap().retried,
        more.len()
    );
    h.clock.set(h.clock.now() + Duration::minutes(1));
    assert_eq!(a.run_once(100).await.unwrap().delivered, more.len());
}

/// The outbox answers the first `limit` due messages by (due time, id) and the first dead
/// letters by when they died, whatever else it holds: messages of eight people across the
/// partitions, backing off to times spread over a day, some dead; each asked for at several
/// moments and limits and held against the same records sorted by hand.
async fn the_outbox_answers_the_first_due_messages_however_many_wait(backend: Backend) {
    use nearcast_core::webhook::WebhookOutcome;
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    for k in 0..8 {
        walk(&h, &format!("q{k}")).await;
    }
    let all = h.store.due_webhooks(h.clock.now(), 10_000).await.unwrap();
    assert!(all.len() >= 24, "{}", all.len());
    // Every third dead, the others retried at a spread of times (two at one instant).
    let base = h.clock.now();
    let mut live: Vec<(chrono::DateTime<chrono::Utc>, String)> = Vec::new();
    let mut dead = 0;
    for (i, r) in all.iter().enumerate() {
        let m = &r.message;
        if i % 3 == 0 {
            h.store
                .settle_webhook(
                    &m.user_id,
                    &m.id,
                    WebhookOutcome::Dead {
                        error: "HTTP 500".into(),
                    },
                )
                .await
                .unwrap();
            dead += 1;
        } else {
            let at = base + Duration::minutes(((i * 37) % 1440) as i64 / 2 * 2);
            h.store
                .settle_webhook(
                    &m.user_id,
                    &m.id,
                    WebhookOutcome::Retry {
                        at,
                        error: "HTTP 503".into(),
                    },
                )
                .await
                .unwrap();
            live.push((at, m.id.clone()));
        }
    }
    live.sort();
    for minutes in [-1i64, 0, 30, 200, 719, 720, 1500] {
        let now = base + Duration::minutes(minutes);
        let due: Vec<&(chrono::DateTime<chrono::Utc>, String)> =
            live.iter().filter(|(at, _)| *at <= now).collect();
        for limit in [0usize, 1, 2, 5, due.len(), 10_000] {
            let got: Vec<(chrono::DateTime<chrono::Utc>, String)> = h
                .store
                .due_webhooks(now, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.next_at, r.message.id))
                .collect();
            let want: Vec<(chrono::DateTime<chrono::Utc>, String)> =
                due.iter().take(limit).map(|x| (*x).clone()).collect();
            assert_eq!(got, want, "due by {minutes} min, limit {limit}");
        }
    }
    let dead_all = h.store.dead_webhooks(10_000).await.unwrap();
    assert_eq!(dead_all.len(), dead);
    let order: Vec<_> = dead_all
        .iter()
        .map(|r| (r.next_at, r.message.id.clone()))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "dead letters oldest first");
    for limit in [0usize, 1, 3] {
        let got = h.store.dead_webhooks(limit).await.unwrap();
        assert_eq!(got, dead_all[..limit.min(dead)].to_vec(), "limit {limit}");
    }
}

macro_rules! on_every_store {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use nearcast_tests::Backend;
            #[tokio::test]
            async fn in_memory() {
                super::$case(Backend::Memory).await;
            }
            #[tokio::test]
            async fn on_sqlite() {
                super::$case(Backend::Sqlite).await;
            }
            #[tokio::test]
            async fn on_dynamodb() {
                super::$case(Backend::Dynamo).await;
            }
        }
    )*};
}

on_every_store!(
    every_change_reaches_the_back_end_signed_and_once,
    failures_back_off_then_dead_letter_then_redrive,
    two_live_relays_post_each_message_once,
    a_relay_that_dies_mid_attempt_leaves_the_message_to_the_next,
    erasure_removes_a_persons_messages_live_and_dead,
    with_webhooks_off_nothing_is_written,
    an_attempt_settled_after_erasure_writes_nothing_back,
    fresh_messages_are_posted_without_reading_the_outbox,
    the_outbox_answers_the_first_due_messages_however_many_wait,
);

/// The admin routes: dead letters listed and redriven by an admin only, bad parameters
/// named, on both hosts' router.
#[tokio::test]
async fn dead_letters_are_listed_and_redriven_by_admins_only() {
    use nearcast_api::auth::Role;
    use nearcast_tests::{admin_call, api_keys};
    let h = harness(Backend::Sqlite, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    walk(&h, "dl").await;
    let one = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::DEFAULT
    };
    let dead = relay(&h, Receiver::failing(u32::MAX), one)
        .run_once(100)
        .await
        .unwrap()
        .dead;
    assert!(dead >= 3);
    let access = || {
        api_keys(&[
            ("ada", Role::Admin),
            ("ed", Role::Editor),
            ("vi", Role::Viewer),
        ])
    };
    let call = |who: &'static str, method: &'static str, uri: &'static str| {
        admin_call(
            h.engine.clone(),
            access(),
            Some(who),
            method,
            uri,
            Value::Null,
        )
    };
    let list = "/v1/admin/webhooks/dead-letters";
    let redrive = "/v1/admin/webhooks/dead-letters/redrive";
    for who in ["ed", "vi"] {
        assert_eq!(
            call(who, "GET", list).await.0,
            403,
            "{who} may not read them"
        );
        assert_eq!(call(who, "POST", redrive).await.0, 403);
    }
    let (status, v, _) = call("ada", "GET", list).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), dead);
    assert_eq!(v["dead_letters"][0]["last_error"], "HTTP 503");
    assert_eq!(v["dead_letters"][0]["message"]["user_id"], "dl");
    let (status, v, _) = call("ada", "GET", "/v1/admin/webhooks/dead-letters?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(v["dead_letters"].as_array().unwrap().len(), 1);
    for bad in [
        "/v1/admin/webhooks/dead-letters?limit=0",
        "/v1/admin/webhooks/dead-letters?limit=x",
        "/v1/admin/webhooks/dead-letters?limit=1001",
    ] {
        let (status, v, _) = call("ada", "GET", bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(v.to_string().contains("limit"), "names the field: {v}");
    }
    let (status, v, _) = call("ada", "GET", "/v1/admin/webhooks/dead-letters?page=2").await;
    assert_eq!(status, 400);
    assert!(v.to_string().contains("page"), "{v}");
    let version = h.engine.catalog().version.clone();
    let (status, v, _) = call("ada", "POST", redrive).await;
    assert_eq!(status, 200);
    assert_eq!(v["redriven"], dead);
    let (_, v, _) = call("ada", "GET", list).await;
    assert!(v["dead_letters"].as_array().unwrap().is_empty());
    // The audit log says who redrove how many; the catalog moved to that entry's version,
    // with nothing else changed.
    let (status, v, _) = call("ada", "GET", "/v1/admin/audit?limit=1").await;
    assert_eq!(status, 200, "{v}");
    let e = &v["entries"][0];
    assert_eq!(e["action"], "webhooks.redrive", "{v}");
    assert_eq!(e["actor"]["name"], "ada", "{v}");
    assert_eq!(e["after"]["redriven"], dead, "{v}");
    assert_eq!(
        h.engine.catalog().version.as_deref(),
        e["id"].as_str(),
        "the entry is the catalog's version (was {version:?})"
    );
    // Nothing left to redrive: no entry.
    let (status, v, _) = call("ada", "POST", redrive).await;
    assert_eq!(status, 200);
    assert_eq!(v["redriven"], 0);
    let (_, v2, _) = call("ada", "GET", "/v1/admin/audit?limit=1").await;
    assert_eq!(v2["entries"][0]["id"], e["id"]);
    assert_eq!(
        relay(&h, Receiver::failing(0), RetryPolicy::DEFAULT)
            .run_once(100)
            .await
            .unwrap()
            .delivered,
        dead
    );
}

/// An attempt that settles after its person was erased writes nothing back: a retry, a
/// dead letter or a delivery of a message that is gone leaves no trace of them.
async fn an_attempt_settled_after_erasure_writes_nothing_back(backend: Backend) {
    use nearcast_core::webhook::WebhookOutcome;
    let h = harness(backend, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    walk(&h, "ga").await;
    let due = h.store.due_webhooks(h.clock.now(), 100).await.unwrap();
    assert!(due.len() >= 3);
    for r in &due {
        let lease = h.clock.now() + RetryPolicy::DEFAULT.lease;
        assert!(
            h.store
                .lease_webhook(&id("ga"), &r.message.id, 0, lease)
                .await
                .unwrap()
        );
    }
    h.engine.erase(&id("ga")).await.expect("erased");
    let outcomes = [
        WebhookOutcome::Retry {
            at: h.clock.now(),
            error: "HTTP 503".into(),
        },
        WebhookOutcome::Dead {
            error: "HTTP 503".into(),
        },
        WebhookOutcome::Delivered,
    ];
    for (r, o) in due.iter().zip(outcomes.iter().cycle()) {
        h.store
            .settle_webhook(&id("ga"), &r.message.id, o.clone())
            .await
            .unwrap();
        assert!(
            !h.store
                .lease_webhook(&id("ga"), &r.message.id, 1, h.clock.now())
                .await
                .unwrap(),
            "nothing to lease"
        );
    }
    let later = h.clock.now() + Duration::days(1);
    assert!(h.store.due_webhooks(later, 100).await.unwrap().is_empty());
    assert!(h.store.dead_webhooks(100).await.unwrap().is_empty());
    assert!(
        h.store
            .user_data(&id("ga"))
            .await
            .unwrap()
            .webhooks
            .is_empty()
    );
    if let Some(rows) = nearcast_tests::dump(&h).await {
        assert!(
            !rows.iter().any(|r| r.contains("msg_")),
            "no webhook row left: {rows:?}"
        );
    }
}

/// The TTL attribute of a scanned item, in seconds.
fn ttl_of(attrs: &std::collections::BTreeMap<String, String>) -> i64 {
    attrs["ttl"]
        .trim_start_matches("N(\"")
        .trim_end_matches("\")")
        .parse()
        .unwrap()
}

/// On DynamoDB, messages, dead letters and redriven messages expire (TTL) 30 days after
/// they were written, each person's in one partition of the eight, and the persons spread
/// over several.
#[tokio::test]
async fn dynamodb_messages_expire_and_share_their_persons_partition() {
    let h = harness(Backend::Dynamo, 10, policy(3)).await;
    h.engine.set_webhooks(true);
    let people = ["tt", "uu", "vv", "ww", "xx", "yy"];
    for p in people {
        walk(&h, p).await;
    }
    let table = h.dynamo_table.clone().unwrap();
    let month = 30 * 24 * 3600;
    let hooks =
        |items: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
         prefix: &str| {
            items
                .iter()
                .filter_map(|(k, a)| {
                    let (pk, sk) = k.split_once(" / ")?;
                    pk.starts_with(prefix)
                        .then(|| (pk.to_string(), sk.to_string(), ttl_of(a)))
                })
                .collect::<Vec<_>>()
        };
    let items = nearcast_tests::scan_table(&table).await;
    let now = chrono::Utc::now().timestamp();
    let live = hooks(&items, "HOOK#");
    assert!(
        live.len() >= 3 * people.len(),
        "{:?}",
        items.keys().collect::<Vec<_>>()
    );
    for p in people {
        let pks: std::collections::BTreeSet<_> = live
            .iter()
            .filter(|(_, sk, _)| sk.starts_with(&format!("{p}#msg_")))
            .map(|(pk, _, _)| pk.clone())
            .collect();
        assert_eq!(pks.len(), 1, "one partition per person: {p} {pks:?}");
    }
    let all: std::collections::BTreeSet<_> = live.iter().map(|(pk, _, _)| pk.clone()).collect();
    assert!(all.len() >= 2, "persons spread over partitions: {all:?}");
    assert!(
        all.iter()
            .all(|pk| pk["HOOK#".len()..].parse::<u64>().is_ok_and(|k| k < 8)),
        "{all:?}"
    );
    for (_, sk, ttl) in &live {
        assert!(sk.contains("#msg_"), "{sk}");
        assert!(
            (ttl - now - month).abs() < 600,
            "expires in 30 days: {ttl} against {now}"
        );
    }
    // Dead-lettered at the first failure: kept 30 days from then.
    let once = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::DEFAULT
    };
    let report = relay(&h, Receiver::failing(u32::MAX), once)
        .run_once(1000)
        .await
        .unwrap();
    assert_eq!(report.dead, live.len());
    let items = nearcast_tests::scan_table(&table).await;
    let now = chrono::Utc::now().timestamp();
    let dead = hooks(&items, "HOOKDEAD#");
    assert_eq!(dead.len(), live.len());
    assert!(hooks(&items, "HOOK#").is_empty());
    for (_, _, ttl) in &dead {
        assert!(
            (ttl - now - month).abs() < 600,
            "a dead letter expires in 30 days: {ttl} against {now}"
        );
    }
    // Redriven: 30 days from the redrive.
    let at = chrono::Utc::now() + Duration::days(3);
    assert_eq!(h.store.redrive_webhooks(at).await.unwrap(), dead.len());
    let items = nearcast_tests::scan_table(&table).await;
    let back = hooks(&items, "HOOK#");
    assert_eq!(back.len(), dead.len());
    for (_, _, ttl) in &back {
        assert!(
            (ttl - at.timestamp() - month).abs() < 600,
            "a redriven message expires 30 days after the redrive: {ttl} against {}",
            at.timestamp()
        );
    }
}
