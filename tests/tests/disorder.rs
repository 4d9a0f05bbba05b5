//! Invariant 3 under disorder: caps, the minimum gap and quiet hours hold for every arrival
//! order and every timestamp the API accepts (15 minutes behind to 24 hours ahead of the
//! host's clock), on every state store. Devices batch and retry, and the AWS queue is not
//! FIFO, so events arrive in any order; the caps count in the host's clock.
//!
//! The arrivals also resend earlier events, however late: a resend never pushes again, an
//! event that did more than move the presence track answers `duplicate` with its first
//! verdict, and a routine fix is answered as a duplicate or (on DynamoDB, once the
//! profile's memory of the last 32 events has forgotten it) decided again as a late fix
//! that moves no presence: it did nothing the first time and does nothing now. No event
//! has an effect twice, and caps hold over every push.
//!
//! Presence webhooks are on throughout, and a relay runs after every batch against a
//! receiver that fails one post in five: every event whose first answer changed presence
//! reaches the back end exactly once under its dedupe id, with the changes that answer
//! listed, and no other message is ever posted (a resend, however late, adds none).

use chrono::{DateTime, Duration, NaiveTime, Utc};
use nearcast_core::config::CapPolicy;
use nearcast_core::decision::{Push, Verdict};
use nearcast_core::event::{Batch, Event};
use nearcast_core::ports::{BoxFuture, Clock};
use nearcast_core::webhook::{
    RetryPolicy, WebhookRelay, WebhookRequest, WebhookSecret, WebhookSender, message_id,
};
use nearcast_tests::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

const STORES: usize = 4;

/// One arrival: a batch of fixes, each at a store with a device timestamp relative to the
/// host's clock, after the clock moved on by `advance_min` minutes.
#[derive(Debug, Clone)]
struct Arrival {
    advance_min: i64,
    /// (store, offset of the device time from the host's clock, in seconds)
    fixes: Vec<(usize, i64)>,
    /// Earlier events sent again in this batch (picked among all sent before it).
    resends: Vec<u64>,
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    let fix = (
        // The last two are places without a store: routine fixes.
        0..STORES + 2,
        prop_oneof![
            // Stale (refused to push), slightly behind, slightly ahead, far ahead.
            -1500i64..-900,
            -900i64..0,
            0i64..600,
            600i64..86_400,
        ],
    );
    let arrival = (
        prop_oneof![Just(0i64), 0i64..30, 30i64..180, 180i64..900],
        prop::collection::vec(fix, 1..6),
        prop::collection::vec(any::<u64>(), 0..3),
    )
        .prop_map(|(advance_min, fixes, resends)| Arrival {
            advance_min,
            fixes,
            resends,
        });
    // Up to 95 fixes and the resends: enough for the profile's memory of 32 events to forget some.
    prop::collection::vec(arrival, 1..20)
}

/// `raw` scaled to `0..n`, as `prop::sample::Index` does.
fn pick(raw: u64, n: usize) -> usize {
    ((u128::from(raw) * n as u128) >> 64) as usize
}

fn policies() -> impl Strategy<Value = CapPolicy> {
    (
        1u32..4,
        0u32..4,
        prop_oneof![Just(0u32), 1u32..120],
        any::<bool>(),
    )
        .prop_map(|(per_day, extra, gap, quiet)| CapPolicy {
            per_day,
            per_week: per_day + extra,
            min_gap_minutes: gap,
            quiet_start: NaiveTime::from_hms_opt(if quiet { 21 } else { 0 }, 0, 0).unwrap(),
            quiet_end: NaiveTime::from_hms_opt(if quiet { 8 } else { 0 }, 0, 0).unwrap(),
            global_control: 0.0,
        })
}

fn fix(user: &str, id: &str, store: usize, at: DateTime<Utc>, now: DateTime<Utc>) -> Event {
    let (lat, lon) = store_point(store);
    let v = json!({"event_id": id, "user_id": user, "type": "location", "at": at.to_rfc3339(),
        "lat": lat, "lon": lon, "accuracy_m": 8});
    Event::from_json(&v, None, now).expect("an accepted timestamp")
}

/// The promise, checked on the pushes that went out (their `at` is the host's clock).
fn assert_caps(p: &CapPolicy, pushes: &[Push]) -> Result<(), TestCaseError> {
    let tz = chrono_tz::Europe::Helsinki;
    let mut at: Vec<DateTime<Utc>> = pushes.iter().map(|p| p.at).collect();
    at.sort();
    for (i, a) in at.iter().enumerate() {
        let day = a.with_timezone(&tz).date_naive();
        let same_day = at
            .iter()
            .filter(|b| b.with_timezone(&tz).date_naive() == day)
            .count();
        prop_assert!(
            same_day as u32 <= p.per_day,
            "{same_day} pushes on {day}: {at:?}"
        );
        let week = at
            .iter()
            .filter(|b| *b <= a && *a - **b < Duration::days(7))
            .count();
        prop_assert!(week as u32 <= p.per_week, "{week} pushes in 7 days: {at:?}");
        if i > 0 {
            prop_assert!(
                *a - at[i - 1] >= Duration::minutes(i64::from(p.min_gap_minutes)),
                "gap {} < {} min: {at:?}",
                (*a - at[i - 1]).num_minutes(),
                p.min_gap_minutes
            );
        }
        let local = a.with_timezone(&tz).time();
        prop_assert!(
            !nearcast_core::caps::in_quiet_hours(local, p.quiet_start, p.quiet_end),
            "pushed at {local} local, in quiet hours"
        );
    }
    Ok(())
}

/// A back end that fails every fifth post and records the ones it took.
#[derive(Default)]
struct Receiver {
    posts: Mutex<u32>,
    took: Mutex<Vec<WebhookRequest>>,
}

impl WebhookSender for Receiver {
    fn post<'a>(&'a self, r: &'a WebhookRequest) -> BoxFuture<'a, Result<(), String>> {
        let mut n = self.posts.lock().unwrap();
        *n += 1;
        let res = if *n % 5 == 0 {
            Err("HTTP 503".to_string())
        } else {
            self.took.lock().unwrap().push(r.clone());
            Ok(())
        };
        Box::pin(std::future::ready(res))
    }
}

async fn run(h: &Harness, policy: &CapPolicy, plan: &[Arrival]) -> Result<(), TestCaseError> {
    h.engine.set_webhooks(true);
    let receiver = Arc::new(Receiver::default());
    let relay = WebhookRelay::new(
        h.store.clone(),
        receiver.clone(),
        vec![WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()],
        RetryPolicy::DEFAULT,
        Arc::new(h.clock.clone()),
    );
    for e in onboarding("dis", noon()) {
        h.engine.process(&e).await.expect("onboarding");
    }
    let mut n = 0;
    // Every event sent once, with its first answer's decision.
    let mut sent: Vec<(Event, nearcast_core::decision::Decision)> = Vec::new();
    let mut first_sends = 0;
    for a in plan {
        h.clock
            .set(h.clock.now() + Duration::minutes(a.advance_min));
        let now = h.clock.now();
        let mut events: Vec<Event> = a
            .fixes
            .iter()
            .map(|&(store, offset)| {
                n += 1;
                fix(
                    "dis",
                    &format!("f{n}"),
                    store,
                    now + Duration::seconds(offset),
                    now,
                )
            })
            .collect();
        let fresh = events.len();
        let mut resent: Vec<usize> = Vec::new();
        if !sent.is_empty() {
            for i in &a.resends {
                // Half the resends among the first 8 events: the ones a profile's memory
                // of the last 32 has forgotten in a long plan.
                let k = if pick(*i, 2) == 0 {
                    pick(*i, sent.len().min(8))
                } else {
                    pick(*i, sent.len())
                };
                if !resent.contains(&k) {
                    resent.push(k);
                    events.push(sent[k].0.clone());
                }
            }
        }
        let batch = Batch {
            user_id: id("dis"),
            events,
        };
        let reports = h.engine.process_batch(&batch).await.expect("processed");
        for (j, r) in reports.iter().enumerate() {
            if j >= fresh {
                let (e, first) = &sent[resent[j - fresh]];
                let eventful = !first.presence.is_empty()
                    || first.store_id.is_some()
                    || first.delivery_id.is_some();
                if eventful || r.status == "duplicate" {
                    prop_assert_eq!(r.status, "duplicate", "resent {}", e.event_id);
                    if let Some(d) = &r.decision {
                        prop_assert_eq!(&d.verdict, &first.verdict);
                        prop_assert_eq!(&d.delivery_id, &first.delivery_id);
                    } else {
                        prop_assert!(!eventful, "{} lost its first answer", e.event_id);
                    }
                } else {
                    // A routine fix the profile forgot, decided again as a late fix: it
                    // does now what it did then, nothing.
                    let d = r.decision.as_ref().expect("a decision");
                    prop_assert!(
                        d.presence.is_empty()
                            && d.store_id.is_none()
                            && d.delivery_id.is_none()
                            && d.verdict != Verdict::Sent,
                        "{} had an effect when resent: {:?}",
                        e.event_id,
                        d
                    );
                }
                continue;
            }
            prop_assert_eq!(r.status, "accepted");
            let d = r.decision.as_ref().expect("a decision");
            if d.verdict == Verdict::Sent {
                prop_assert!(d.delivery_id.is_some());
                first_sends += 1;
            }
            sent.push((batch.events[j].clone(), d.clone()));
        }
        relay.run_once(1000).await.expect("relay");
    }
    // The retries come due: the clock moves on until nothing is left.
    for _ in 0..20 {
        if h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 10)
            .await
            .expect("due")
            .is_empty()
        {
            break;
        }
        h.clock.set(h.clock.now() + Duration::hours(1));
        relay.run_once(1000).await.expect("relay");
    }
    prop_assert!(
        h.store
            .due_webhooks(h.clock.now() + Duration::days(1), 10)
            .await
            .expect("due")
            .is_empty(),
        "messages left in the outbox"
    );
    prop_assert!(
        h.store.dead_webhooks(10).await.expect("dead").is_empty(),
        "dead letters"
    );
    // Exactly one message per event whose first answer changed presence, taken once.
    let expected: BTreeMap<String, &nearcast_core::decision::Decision> = sent
        .iter()
        .filter(|(_, d)| !d.presence.is_empty())
        .map(|(e, d)| (message_id(&id("dis"), &e.event_id), d))
        .collect();
    let took = receiver.took.lock().unwrap().clone();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    for r in &took {
        *taken.entry(r.id.clone()).or_default() += 1;
        let d = expected.get(&r.id);
        prop_assert!(d.is_some(), "a message no answer announced: {}", r.body);
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        prop_assert_eq!(
            &body["data"]["changes"],
            &serde_json::to_value(&d.unwrap().presence).unwrap(),
            "the changes the first answer listed"
        );
    }
    prop_assert!(taken.values().all(|&n| n == 1), "taken twice: {taken:?}");
    prop_assert_eq!(
        taken.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let pushes = h.notifier.sent();
    assert_caps(policy, &pushes)?;
    // One push per answer that sent: no event pushed twice.
    prop_assert_eq!(pushes.len(), first_sends);
    // The state remembers exactly the pushes that went out.
    let state = h.store.load_user(&id("dis")).await.expect("load").state;
    let remembered = state.sends.iter().filter(|s| !s.held_out).count();
    prop_assert_eq!(remembered, pushes.len());
    Ok(())
}

fn check(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(policy in policies(), plan in arrivals())| {
        rt.block_on(async {
            let h = harness(backend, STORES, policy.clone()).await;
            run(&h, &policy, &plan).await
        })?;
    });
}

#[test]
fn caps_hold_for_any_arrival_order_and_timestamp_in_memory() {
    check(Backend::Memory, 256);
}

#[test]
fn caps_hold_for_any_arrival_order_and_timestamp_on_sqlite() {
    check(Backend::Sqlite, 64);
}

#[test]
fn caps_hold_for_any_arrival_order_and_timestamp_on_dynamodb() {
    check(Backend::Dynamo, 64);
}

/// Caps without quiet hours or a global control group.
fn without_quiet_hours(per_day: u32, per_week: u32, min_gap_minutes: u32) -> CapPolicy {
    let midnight = NaiveTime::from_hms_opt(0, 0, 0).unwrap();
    CapPolicy {
        per_day,
        per_week,
        min_gap_minutes,
        quiet_start: midnight,
        quiet_end: midnight,
        global_control: 0.0,
    }
}

/// The case the old rule let through: a fix stamped before a push that arrives after it, and
/// one stamped 20 hours ahead, are both capped.
async fn late_and_early_stamps_are_capped(backend: Backend) {
    let policy = without_quiet_hours(1, 7, 60);
    let h = harness(backend, STORES, policy).await;
    for e in onboarding("late", noon()) {
        h.engine.process(&e).await.unwrap();
    }
    let now = noon();
    let first = h
        .engine
        .process(&fix("late", "a", 0, now, now))
        .await
        .unwrap();
    assert_eq!(first.decision.unwrap().verdict, Verdict::Sent);
    // Stamped 5 minutes before the track (its lifetime): a late fix, which moves no
    // presence at all, so nothing triggers.
    let late = h
        .engine
        .process(&fix("late", "b", 1, now - Duration::minutes(5), now))
        .await
        .unwrap();
    let d = late.decision.unwrap();
    assert_eq!(
        d.reason.as_ref().map(|r| r.code()),
        Some("no_trigger"),
        "{d:?}"
    );
    // Stamped 6 minutes before: older than the track's lifetime, it stands alone and
    // enters store b, and the cap (counted in the server's clock) holds it.
    let earlier = h
        .engine
        .process(&fix("late", "b2", 1, now - Duration::minutes(6), now))
        .await
        .unwrap();
    let d = earlier.decision.unwrap();
    assert_eq!(d.verdict, Verdict::Suppressed, "{d:?}");
    assert_eq!(d.reason.unwrap().code(), "capped");
    let ahead = h
        .engine
        .process(&fix("late", "c", 2, now + Duration::hours(20), now))
        .await
        .unwrap();
    let d = ahead.decision.unwrap();
    assert_eq!(d.verdict, Verdict::Suppressed, "{d:?}");
    assert_eq!(h.notifier.sent().len(), 1);
}

#[tokio::test]
async fn late_and_early_stamps_are_capped_in_memory() {
    late_and_early_stamps_are_capped(Backend::Memory).await;
}

#[tokio::test]
async fn late_and_early_stamps_are_capped_on_sqlite() {
    late_and_early_stamps_are_capped(Backend::Sqlite).await;
}

#[tokio::test]
async fn late_and_early_stamps_are_capped_on_dynamodb() {
    late_and_early_stamps_are_capped(Backend::Dynamo).await;
}

/// The case that found the rule: a fix that did nothing (stamped with the visit's enter),
/// forgotten after 32 newer events, is resent once a fix stamped 10 minutes ahead has
/// ended the visit. Judged alone, as a new fix that late would have been, it entered the
/// store again; as a possible resend it moves nothing, and its next resend answers as
/// its first answer did.
async fn a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing(backend: Backend) {
    let policy = without_quiet_hours(1, 1, 0);
    let at = |fixes: Vec<(usize, i64)>, resends: usize| Arrival {
        advance_min: 0,
        fixes,
        // The third event sent (`f3`).
        resends: vec![1u64 << 62; resends],
    };
    let stale = |n: usize| vec![(0, -902); n];
    let mut plan = vec![
        at(stale(1), 0),
        at(vec![(3, -2), (3, -2), (0, -902), (0, -902), (0, -902)], 0),
    ];
    plan.extend([4, 4, 4, 2, 4, 4, 2, 2, 3].map(|n| at(stale(n), 0)));
    plan.push(at(vec![(0, 600)], 1));
    plan.push(at(stale(1), 1));
    let h = harness(backend, STORES, policy.clone()).await;
    run(&h, &policy, &plan)
        .await
        .expect("no resend has an effect");
}

#[tokio::test]
async fn a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing_in_memory() {
    a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing(Backend::Memory).await;
}

#[tokio::test]
async fn a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing_on_sqlite() {
    a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing_on_dynamodb() {
    a_forgotten_fix_resent_behind_a_track_ahead_moves_nothing(Backend::Dynamo).await;
}
