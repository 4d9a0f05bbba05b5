//! The invariants of docs/architecture.md, end to end through the engine on both state
//! stores. (Invariant 1, geofence recall, is property-tested in nearcast-core's geofence
//! module against a brute-force oracle; invariant 6, feature parity, in nearcast-train.)

use nearcast_core::decision::Verdict;
use nearcast_core::ports::DeliveryStatus;
use nearcast_tests::*;
use serde_json::json;

/// Processes `e` as a client does: a retryable answer (contention, store) is sent again.
async fn process_until_answered(
    engine: std::sync::Arc<nearcast_core::engine::Engine>,
    e: nearcast_core::event::Event,
) -> nearcast_core::engine::EventReport {
    use nearcast_core::engine::EngineError;
    for _ in 0..20 {
        match engine.process(&e).await {
            Ok(r) => return r,
            Err(EngineError::Contention | EngineError::Store(_)) => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other}"),
        }
    }
    panic!("no answer after 20 tries")
}

async fn onboard(h: &Harness, user: &str) {
    for e in onboarding(user, noon()) {
        h.engine.process(&e).await.expect("onboarding");
    }
}

fn verdict(r: &nearcast_core::engine::EventReport) -> (Verdict, String) {
    let d = r
        .decision
        .as_ref()
        .expect("a location event has a decision");
    (
        d.verdict,
        d.reason
            .as_ref()
            .map_or(String::new(), |r| r.code().to_string()),
    )
}

// Invariant 2: no consent, no push; a withdrawal takes effect on the very next event.
async fn withdrawn_consent_blocks_the_next_push(b: Backend) {
    let h = harness(b, 3, policy(10)).await;
    onboard(&h, "ann").await;
    let r = h
        .engine
        .process(&fix_at("ann", "f1", 0, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r).0, Verdict::Sent);
    let withdraw = event(
        "ann",
        json!({"event_id": "w1", "type": "consent", "at": noon().to_rfc3339(), "purpose": "push", "granted": false}),
    );
    h.engine.process(&withdraw).await.unwrap();
    let r = h
        .engine
        .process(&fix_at("ann", "f2", 1, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r), (Verdict::Suppressed, "no_consent_push".into()));
    assert_eq!(h.notifier.sent().len(), 1);
    // The same through the consent API path, for location.
    h.engine
        .set_consents(
            &id("ann"),
            &[(nearcast_core::consent::Purpose::Push, true)],
            None,
        )
        .await
        .unwrap();
    h.engine
        .set_consents(
            &id("ann"),
            &[(nearcast_core::consent::Purpose::Location, false)],
            None,
        )
        .await
        .unwrap();
    let r = h
        .engine
        .process(&fix_at("ann", "f3", 2, noon()))
        .await
        .unwrap();
    assert_eq!(
        verdict(&r),
        (Verdict::Suppressed, "no_consent_location".into())
    );
    assert_eq!(h.notifier.sent().len(), 1);
    // Nothing about presence is kept without location consent.
    assert!(
        h.store
            .load_user(&id("ann"))
            .await
            .unwrap()
            .state
            .fences
            .is_empty()
    );
}

#[tokio::test]
async fn withdrawn_consent_blocks_the_next_push_in_memory() {
    withdrawn_consent_blocks_the_next_push(Backend::Memory).await;
}

#[tokio::test]
async fn withdrawn_consent_blocks_the_next_push_on_sqlite() {
    withdrawn_consent_blocks_the_next_push(Backend::Sqlite).await;
}

#[tokio::test]
async fn withdrawn_consent_blocks_the_next_push_on_dynamodb() {
    withdrawn_consent_blocks_the_next_push(Backend::Dynamo).await;
}

#[tokio::test]
async fn a_user_who_never_consented_gets_nothing() {
    let h = harness(Backend::Sqlite, 1, policy(10)).await;
    let r = h
        .engine
        .process(&fix_at("zed", "f1", 0, noon()))
        .await
        .unwrap();
    assert_eq!(
        verdict(&r),
        (Verdict::Suppressed, "no_consent_location".into())
    );
    assert!(h.notifier.sent().is_empty());
}

// Invariant 3: caps hold with many concurrent events for one user.
async fn caps_hold_under_concurrency(b: Backend) {
    let h = harness(b, 50, policy(2)).await;
    onboard(&h, "cap").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let engine = h.engine.clone();
        let e = fix_at("cap", &format!("c{i}"), i, noon());
        tasks.push(tokio::spawn(process_until_answered(engine, e)));
    }
    let mut sent = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if verdict(&r).0 == Verdict::Sent {
            sent += 1;
        }
    }
    assert_eq!(sent, 2, "per_day cap is 2");
    assert_eq!(h.notifier.sent().len(), 2);
    assert_eq!(h.store.deliveries().await.unwrap().len(), 2);
    assert_eq!(
        h.store
            .load_user(&id("cap"))
            .await
            .unwrap()
            .state
            .sends
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_under_concurrency_in_memory() {
    caps_hold_under_concurrency(Backend::InterleavedMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_under_concurrency_on_sqlite() {
    caps_hold_under_concurrency(Backend::InterleavedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_under_concurrency_on_dynamodb() {
    caps_hold_under_concurrency(Backend::InterleavedDynamo).await;
}

// Invariant 3 when push answers are lost: a send that may have reached the platform keeps
// its cap spent. (Releasing it, as a refusal does, let 50 concurrent fixes push far past
// the cap whenever the platform's answers timed out.)
async fn caps_hold_when_push_answers_are_lost(b: Backend) {
    for round in 0..3 {
        let h = harness(b, 50, policy(2)).await;
        onboard(&h, "lost").await;
        h.notifier
            .fail_after_sending_with(Some(nearcast_core::ports::NotifyError::Unconfirmed(
                "timed out".into(),
            )));
        let mut tasks = Vec::new();
        for i in 0..50 {
            let engine = h.engine.clone();
            let e = fix_at("lost", &format!("l{round}-{i}"), i, noon());
            tasks.push(tokio::spawn(process_until_answered(engine, e)));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            h.notifier.sent().len(),
            2,
            "round {round}: per_day cap is 2"
        );
        let d = h.store.deliveries().await.unwrap();
        assert!(
            d.iter().all(|d| d.status == DeliveryStatus::Unconfirmed),
            "{d:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_when_push_answers_are_lost_in_memory() {
    caps_hold_when_push_answers_are_lost(Backend::InterleavedMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_when_push_answers_are_lost_on_sqlite() {
    caps_hold_when_push_answers_are_lost(Backend::InterleavedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caps_hold_when_push_answers_are_lost_on_dynamodb() {
    caps_hold_when_push_answers_are_lost(Backend::InterleavedDynamo).await;
}

// Invariant 4: one event, at most one push, however often it is retried.
async fn one_event_pushes_once(b: Backend) {
    let h = harness(b, 1, policy(10)).await;
    onboard(&h, "dup").await;
    let e = fix_at("dup", "same-id", 0, noon());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let engine = h.engine.clone();
        let e = e.clone();
        tasks.push(tokio::spawn(process_until_answered(engine, e)));
    }
    let mut accepted = 0;
    let mut duplicates = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            "accepted" => accepted += 1,
            "duplicate" => {
                duplicates += 1;
                // A duplicate answers with the original decision.
                assert_eq!(verdict(&r).0, Verdict::Sent);
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((accepted, duplicates), (1, 9));
    assert_eq!(h.notifier.sent().len(), 1);
    // And sequential retries later too.
    let r = h.engine.process(&e).await.unwrap();
    assert_eq!(r.status, "duplicate");
    assert_eq!(h.notifier.sent().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_pushes_once_in_memory() {
    one_event_pushes_once(Backend::InterleavedMemory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_pushes_once_on_sqlite() {
    one_event_pushes_once(Backend::InterleavedSqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_pushes_once_on_dynamodb() {
    one_event_pushes_once(Backend::InterleavedDynamo).await;
}

#[tokio::test]
async fn a_failed_delivery_releases_the_cap_and_never_sends_twice() {
    let h = harness(Backend::Sqlite, 3, policy(1)).await;
    onboard(&h, "fay").await;
    h.notifier
        .fail_with(Some(nearcast_core::ports::NotifyError::Retryable(
            "throttled".into(),
        )));
    let r = h
        .engine
        .process(&fix_at("fay", "f1", 0, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r).0, Verdict::Sent, "decided to send");
    assert!(h.notifier.sent().is_empty());
    let d = h.store.deliveries().await.unwrap();
    assert_eq!(d[0].status, DeliveryStatus::Failed);
    // The cap (1 a day) was released: the next store's offer goes out.
    h.notifier.fail_with(None);
    let r = h
        .engine
        .process(&fix_at("fay", "f2", 1, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r).0, Verdict::Sent);
    assert_eq!(h.notifier.sent().len(), 1);
    // Retrying the first event is a duplicate: no second push for it.
    let r = h
        .engine
        .process(&fix_at("fay", "f1", 0, noon()))
        .await
        .unwrap();
    assert_eq!(r.status, "duplicate");
    assert_eq!(h.notifier.sent().len(), 1);
}

#[tokio::test]
async fn jitter_at_the_fence_edge_never_enters_twice() {
    let h = harness(Backend::Sqlite, 1, policy(10)).await;
    onboard(&h, "eve").await;
    let (lat, lon) = store_point(0);
    let mut sent = 0;
    for k in 0..40 {
        // Alternate 45 m (inside the 50 m fence) and 65 m (outside, within the exit band).
        let d = if k % 2 == 0 { 45.0 } else { 65.0 };
        let dlat = d / 111_195.0;
        let at = noon() + chrono::Duration::seconds(30 * k);
        h.clock.set(at);
        let e = event(
            "eve",
            json!({"event_id": format!("j{k}"), "type": "location", "at": at.to_rfc3339(),
            "lat": lat + dlat, "lon": lon, "accuracy_m": 12}),
        );
        let r = h.engine.process(&e).await.unwrap();
        if verdict(&r).0 == Verdict::Sent {
            sent += 1;
        }
    }
    assert_eq!(sent, 1);
}

#[tokio::test]
async fn erasure_removes_everything_about_the_user() {
    let h = harness(Backend::Sqlite, 2, policy(10)).await;
    onboard(&h, "era").await;
    onboard(&h, "other").await;
    h.engine
        .process(&fix_at("era", "f1", 0, noon()))
        .await
        .unwrap();
    h.engine
        .process(&fix_at("other", "o1", 0, noon()))
        .await
        .unwrap();
    let db = h.sqlite.as_ref().unwrap();
    assert!(db.rows_about(&id("era")).unwrap() > 0);
    let before_other = db.rows_about(&id("other")).unwrap();
    let e = h.engine.erase(&id("era")).await.unwrap();
    assert!(e.records > 0);
    assert_eq!(db.rows_about(&id("era")).unwrap(), 0);
    assert_eq!(
        db.rows_about(&id("other")).unwrap(),
        before_other,
        "other users untouched"
    );
    // A deleted user starts from nothing: no consent, so no push.
    let r = h
        .engine
        .process(&fix_at("era", "f2", 1, noon()))
        .await
        .unwrap();
    assert_eq!(
        verdict(&r),
        (Verdict::Suppressed, "no_consent_location".into())
    );
}

#[tokio::test]
async fn a_stale_fix_moves_presence_but_sends_nothing() {
    let h = harness(Backend::Sqlite, 2, policy(10)).await;
    onboard(&h, "old").await;
    // The fix happened 20 minutes before it arrives (the clock is at noon).
    let r = h
        .engine
        .process(&fix_at(
            "old",
            "s1",
            0,
            noon() - chrono::Duration::minutes(20),
        ))
        .await
        .unwrap();
    assert_eq!(verdict(&r), (Verdict::Suppressed, "stale_fix".into()));
    assert!(h.notifier.sent().is_empty());
    let state = h.store.load_user(&id("old")).await.unwrap().state;
    assert!(
        state.fences.contains_key(&id("s0")),
        "presence still follows the user"
    );
    // A fresh fix at another store sends as usual.
    let r = h
        .engine
        .process(&fix_at("old", "s2", 1, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r).0, Verdict::Sent);
}

#[tokio::test]
async fn held_out_users_are_recorded_not_pushed_and_the_draw_is_stable() {
    let h = harness(Backend::Sqlite, 1, policy(10)).await;
    // Half of the campaign's users are held out.
    let (stores, mut offers) = catalog(1);
    offers[0].holdout = 0.5;
    h.engine
        .load_config(stores, offers, policy(10))
        .await
        .unwrap();
    let mut held = Vec::new();
    for u in 0..40 {
        let user = format!("h{u}");
        onboard(&h, &user).await;
        let r = h
            .engine
            .process(&fix_at(&user, "f1", 0, noon()))
            .await
            .unwrap();
        let (v, code) = verdict(&r);
        match v {
            Verdict::HeldOut => {
                assert_eq!(code, "held_out");
                held.push(user.clone());
            }
            Verdict::Sent => {}
            other => panic!("{user}: {other:?}"),
        }
        // Holdout is per (user, campaign): the same answer as the pure draw.
        let campaign = id("c1");
        assert_eq!(
            v == Verdict::HeldOut,
            nearcast_core::holdout::held_out(&id(&user), &campaign, 0.5)
        );
    }
    assert!(
        (8..=32).contains(&held.len()),
        "{} of 40 held out",
        held.len()
    );
    assert_eq!(h.notifier.sent().len(), 40 - held.len());
    assert!(
        h.notifier
            .sent()
            .iter()
            .all(|p| !held.contains(&p.user_id.to_string()))
    );
}

/// An endpoint the platform reports disabled is never used again: marked in the state,
/// its cap given back, and the next offer suppressed for want of a push target.
async fn a_disabled_endpoint_is_marked_and_never_used_again(b: Backend) {
    let h = harness(b, 3, policy(10)).await;
    onboard(&h, "dis").await;
    h.notifier
        .fail_with(Some(nearcast_core::ports::NotifyError::EndpointDisabled));
    h.engine
        .process(&fix_at("dis", "f1", 0, noon()))
        .await
        .unwrap();
    h.notifier.fail_with(None);
    let state = h.store.load_user(&id("dis")).await.unwrap().state;
    assert!(state.push.as_ref().unwrap().disabled);
    assert!(state.sends.is_empty());
    let r = h
        .engine
        .process(&fix_at("dis", "f2", 1, noon()))
        .await
        .unwrap();
    assert_eq!(verdict(&r), (Verdict::Suppressed, "no_push_target".into()));
    assert!(h.notifier.sent().is_empty());
    assert_eq!(
        h.store.deliveries().await.unwrap()[0].status,
        DeliveryStatus::Failed
    );
}

#[tokio::test]
async fn a_disabled_endpoint_is_marked_and_never_used_again_in_memory() {
    a_disabled_endpoint_is_marked_and_never_used_again(Backend::Memory).await;
}

#[tokio::test]
async fn a_disabled_endpoint_is_marked_and_never_used_again_on_sqlite() {
    a_disabled_endpoint_is_marked_and_never_used_again(Backend::Sqlite).await;
}

/// Withdrawing personalisation consent forgets the learnt tastes at once, by event and by
/// the consent API alike.
async fn withdrawing_personalisation_forgets_tastes(b: Backend) {
    let h = harness(b, 1, policy(10)).await;
    onboard(&h, "tas").await;
    let view = event(
        "tas",
        json!({"event_id": "v1", "type": "purchase", "at": noon().to_rfc3339(), "category": "coffee"}),
    );
    h.engine.process(&view).await.unwrap();
    let learnt = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .load_user(&id("tas"))
                .await
                .unwrap()
                .state
                .affinities
                .len()
        }
    };
    assert_eq!(learnt(&h).await, 1, "a purchase teaches a taste");
    let withdraw = event(
        "tas",
        json!({"event_id": "w1", "type": "consent", "at": noon().to_rfc3339(), "purpose": "personalisation", "granted": false}),
    );
    h.engine.process(&withdraw).await.unwrap();
    assert_eq!(learnt(&h).await, 0, "withdrawn by event");
    // Granted again, taught again, withdrawn through the API.
    h.engine
        .set_consents(
            &id("tas"),
            &[(nearcast_core::consent::Purpose::Personalisation, true)],
            None,
        )
        .await
        .unwrap();
    let again = event(
        "tas",
        json!({"event_id": "v2", "type": "purchase", "at": noon().to_rfc3339(), "category": "tea"}),
    );
    h.engine.process(&again).await.unwrap();
    assert_eq!(learnt(&h).await, 1);
    h.engine
        .set_consents(
            &id("tas"),
            &[(nearcast_core::consent::Purpose::Personalisation, false)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(learnt(&h).await, 0, "withdrawn through the API");
}

#[tokio::test]
async fn withdrawing_personalisation_forgets_tastes_in_memory() {
    withdrawing_personalisation_forgets_tastes(Backend::Memory).await;
}

#[tokio::test]
async fn withdrawing_personalisation_forgets_tastes_on_sqlite() {
    withdrawing_personalisation_forgets_tastes(Backend::Sqlite).await;
}
