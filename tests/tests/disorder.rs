//! Invariant 3 under disorder: caps, the minimum gap and quiet hours hold for every arrival
//! order and every timestamp the API accepts (15 minutes behind to 24 hours ahead of the
//! host's clock), on every state store. Devices batch and retry, and the AWS queue is not
//! FIFO, so events arrive in any order; the caps count in the host's clock.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use nearcast_core::config::CapPolicy;
use nearcast_core::decision::{Push, Verdict};
use nearcast_core::event::{Batch, Event};
use nearcast_core::ports::Clock;
use nearcast_tests::*;
use proptest::prelude::*;

use serde_json::json;

const STORES: usize = 4;

/// One arrival: a batch of fixes, each at a store with a device timestamp relative to the
/// host's clock, after the clock moved on by `advance_min` minutes.
#[derive(Debug, Clone)]
struct Arrival {
    advance_min: i64,
    /// (store, offset of the device time from the host's clock, in seconds)
    fixes: Vec<(usize, i64)>,
}

fn arrivals() -> impl Strategy<Value = Vec<Arrival>> {
    let fix = (
        0..STORES,
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
        prop::collection::vec(fix, 1..4),
    )
        .prop_map(|(advance_min, fixes)| Arrival { advance_min, fixes });
    prop::collection::vec(arrival, 1..14)
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

async fn run(h: &Harness, policy: &CapPolicy, plan: &[Arrival]) -> Result<(), TestCaseError> {
    for e in onboarding("dis", noon()) {
        h.engine.process(&e).await.expect("onboarding");
    }
    let mut n = 0;
    for a in plan {
        h.clock
            .set(h.clock.now() + Duration::minutes(a.advance_min));
        let now = h.clock.now();
        let events: Vec<Event> = a
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
        let batch = Batch {
            user_id: id("dis"),
            events,
        };
        let reports = h.engine.process_batch(&batch).await.expect("processed");
        for r in &reports {
            let d = r.decision.as_ref().expect("a decision");
            if d.verdict == Verdict::Sent {
                prop_assert!(d.delivery_id.is_some());
            }
        }
    }
    let pushes = h.notifier.sent();
    assert_caps(policy, &pushes)?;
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
    check(Backend::Dynamo, 16);
}

/// The case the old rule let through: a fix stamped before a push that arrives after it, and
/// one stamped 20 hours ahead, are both capped.
async fn late_and_early_stamps_are_capped(backend: Backend) {
    let policy = CapPolicy {
        per_day: 1,
        per_week: 7,
        min_gap_minutes: 60,
        quiet_start: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        quiet_end: NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
        global_control: 0.0,
    };
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
