//! Invariant 4 under faults after the write: at each request of the send path (the commit,
//! the claim, the push, the final status) the write is applied and then its answer is
//! lost. Whatever the client retries and however often the outbox relay runs, exactly one
//! push goes out: never two, never zero. On the in-memory, SQLite and DynamoDB stores (the
//! last through moto's server); `aws_e2e.rs` also cuts real connections to DynamoDB.

use chrono::Duration;
use nearcast_core::decision::Verdict;
use nearcast_core::engine::{Engine, EngineError};
use nearcast_core::event::Event;
use nearcast_core::ids::Id;
use nearcast_core::memory::{InMemoryStateStore, RecordingNotifier};
use nearcast_core::ports::{
    BoxFuture, Commit, CommitOutcome, DeliveryStatus, ManualClock, NotifyError, StateStore,
    StoreError, StoreLayer,
};
use nearcast_tests::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which request loses its answer (once), after it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The commit that records a push.
    Commit,
    /// The claim of the delivery.
    Claim,
    /// The final status of the delivery.
    Finish,
}

/// A store whose chosen request is applied and then answers an error, once.
struct LoseReply {
    inner: Arc<dyn StateStore>,
    fault: Fault,
    armed: AtomicBool,
}

impl LoseReply {
    fn fire(&self, fault: Fault) -> bool {
        self.fault == fault && self.armed.swap(false, Ordering::SeqCst)
    }
}

fn lost() -> StoreError {
    StoreError("connection reset after the request was sent".into())
}

impl StoreLayer for LoseReply {
    fn wrapped(&self) -> &dyn StateStore {
        self.inner.as_ref()
    }
    fn commit<'a>(&'a self, c: &'a Commit) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        Box::pin(async move {
            let r = self.inner.commit(c).await?;
            if r == CommitOutcome::Applied && !c.pushes.is_empty() && self.fire(Fault::Commit) {
                return Err(lost());
            }
            Ok(r)
        })
    }
    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let r = self.inner.claim_delivery(user, delivery_id, claim).await?;
            if r && self.fire(Fault::Claim) {
                return Err(lost());
            }
            Ok(r)
        })
    }
    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let r = self.inner.finish_delivery(user, delivery_id, to).await?;
            if r && self.fire(Fault::Finish) {
                return Err(lost());
            }
            Ok(r)
        })
    }
}

struct Rig {
    engine: Arc<Engine>,
    store: Arc<dyn StateStore>,
    notifier: Arc<RecordingNotifier>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn rig(backend: Backend, fault: Option<Fault>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let base: Arc<dyn StateStore> = match backend {
        Backend::Sqlite => Arc::new(
            nearcast::store::SqliteStore::open(
                &dir.path().join("f.db"),
                nearcast::store::Sync::Normal,
            )
            .unwrap(),
        ),
        Backend::Dynamo => Arc::new(dynamo_store().await),
        _ => Arc::new(InMemoryStateStore::new()),
    };
    let store: Arc<dyn StateStore> = match fault {
        Some(fault) => Arc::new(LoseReply {
            inner: base.clone(),
            fault,
            armed: AtomicBool::new(true),
        }),
        None => base.clone(),
    };
    let notifier = Arc::new(RecordingNotifier::new());
    let clock = ManualClock::new(noon());
    let engine = Engine::new(
        store,
        notifier.clone(),
        Arc::new(weather()),
        Arc::new(clock.clone()),
        model(),
    )
    .await
    .unwrap();
    let (stores, offers) = catalog(3);
    engine.load_config(stores, offers, policy(1)).await.unwrap();
    let engine = Arc::new(engine);
    for e in onboarding("pat", noon()) {
        engine.process(&e).await.unwrap();
    }
    Rig {
        engine,
        store: base,
        notifier,
        clock,
        _dir: dir,
    }
}

/// A client that resends the event until it is answered (as apps and the queue do).
async fn post_until_answered(engine: &Engine, e: &Event) -> (String, Verdict) {
    for _ in 0..5 {
        match engine.process(e).await {
            Ok(r) => return (r.status.to_string(), r.decision.unwrap().verdict),
            Err(EngineError::Store(_) | EngineError::Contention) => continue,
            Err(other) => panic!("{other}"),
        }
    }
    panic!("no answer after 5 tries")
}

/// The relay, twice, once its grace has passed.
async fn relay(r: &Rig) {
    r.clock.set(r.clock.now() + Duration::minutes(2));
    for _ in 0..2 {
        r.engine
            .relay_pending(Duration::seconds(30), 100)
            .await
            .unwrap();
    }
}

async fn delivery_status(r: &Rig) -> Vec<DeliveryStatus> {
    r.store
        .deliveries()
        .await
        .unwrap()
        .iter()
        .map(|d| d.status)
        .collect()
}

use nearcast_core::ports::Clock;

/// pat's fix f1 sends (retried by the client until answered), the relay runs, the client
/// retries once more later (a duplicate), and the relay runs again.
async fn send_retry_and_relay(r: &Rig) {
    let e = fix_at("pat", "f1", 0, noon());
    let (_, verdict) = post_until_answered(&r.engine, &e).await;
    assert_eq!(verdict, Verdict::Sent);
    relay(r).await;
    let (status, _) = post_until_answered(&r.engine, &e).await;
    assert_eq!(status, "duplicate", "a later retry is a duplicate");
    relay(r).await;
}

async fn exactly_one_push_when_an_answer_is_lost(backend: Backend, fault: Fault) {
    let r = rig(backend, Some(fault)).await;
    send_retry_and_relay(&r).await;
    assert_eq!(r.notifier.sent().len(), 1, "{fault:?}: exactly one push");
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Sent]);
    // The cap (1 a day) is spent by that one push.
    let (_, v) = post_until_answered(&r.engine, &fix_at("pat", "f2", 1, r.clock.now())).await;
    assert_eq!(v, Verdict::Suppressed);
    assert_eq!(r.notifier.sent().len(), 1);
}

/// The same faults on a push that takes its code from a coupon pool: the code is assigned
/// in the commit, so whichever answer is lost and whoever sends (the engine or the relay),
/// exactly one push goes out, it carries the code, and exactly one code is issued.
async fn one_push_one_code_when_an_answer_is_lost(backend: Backend, fault: Fault) {
    use nearcast_core::audit::{Actor, Role};
    let r = rig(backend, Some(fault)).await;
    let eddie = Actor {
        name: "eddie".into(),
        role: Role::Editor,
    };
    let campaign = nearcast_core::config::parse_json(&json!({
        "id": "c1", "name": "Rainy day", "status": "active", "coupon_pool": true,
        "variants": [{"id": "a", "default_locale": "en",
            "content": {"en": {"title": "Rain", "body": "Your code {coupon}"}}}]}))
    .unwrap();
    r.engine.put_campaign(campaign, &eddie).await.unwrap();
    let codes: Vec<String> = (1..=4).map(|i| format!("RAIN-{i}")).collect();
    r.engine
        .upload_coupons(&id("c1"), &codes, &eddie, false)
        .await
        .unwrap();
    send_retry_and_relay(&r).await;
    let sent = r.notifier.sent();
    assert_eq!(sent.len(), 1, "{fault:?}: exactly one push");
    let code = sent[0].coupon.clone().expect("the push carries its code");
    assert!(codes.contains(&code), "{code}");
    assert_eq!(sent[0].body, format!("Your code {code}"));
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Sent]);
    let counts = r.store.coupon_counts(&id("c1")).await.unwrap();
    assert_eq!(
        (counts.total, counts.issued),
        (4, 1),
        "{fault:?}: one code issued"
    );
}

/// One module per case, with a test per store: `name: scenario(fault)`.
macro_rules! fault_cases {
    ($($name:ident: $scenario:ident($fault:expr)),* $(,)?) => {$(
        mod $name {
            use nearcast_tests::Backend;
            #[tokio::test]
            async fn in_memory() {
                super::$scenario(Backend::Memory, $fault).await;
            }
            #[tokio::test]
            async fn on_sqlite() {
                super::$scenario(Backend::Sqlite, $fault).await;
            }
            #[tokio::test]
            async fn on_dynamodb() {
                super::$scenario(Backend::Dynamo, $fault).await;
            }
        }
    )*};
}

fault_cases!(
    coupon_commit_answer_lost: one_push_one_code_when_an_answer_is_lost(super::Fault::Commit),
    coupon_claim_answer_lost: one_push_one_code_when_an_answer_is_lost(super::Fault::Claim),
    coupon_final_status_answer_lost: one_push_one_code_when_an_answer_is_lost(super::Fault::Finish),
    commit_answer_lost: exactly_one_push_when_an_answer_is_lost(super::Fault::Commit),
    claim_answer_lost: exactly_one_push_when_an_answer_is_lost(super::Fault::Claim),
    final_status_answer_lost: exactly_one_push_when_an_answer_is_lost(super::Fault::Finish),
);

/// The process dies after its commit, before it sends (no client retry at all): the relay
/// sends it, after its grace and not before.
async fn a_push_orphaned_by_its_sender_is_relayed_once(backend: Backend) {
    let r = rig(backend, Some(Fault::Commit)).await;
    assert!(
        r.engine
            .process(&fix_at("pat", "f1", 0, noon()))
            .await
            .is_err()
    );
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Pending]);
    assert_eq!(
        r.engine
            .relay_pending(Duration::seconds(30), 100)
            .await
            .unwrap(),
        0,
        "within its grace the sender may still come"
    );
    relay(&r).await;
    assert_eq!(r.notifier.sent().len(), 1);
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Sent]);
}

#[tokio::test]
async fn a_push_orphaned_by_its_sender_is_relayed_once_in_memory() {
    a_push_orphaned_by_its_sender_is_relayed_once(Backend::Memory).await;
}

#[tokio::test]
async fn a_push_orphaned_by_its_sender_is_relayed_once_on_sqlite() {
    a_push_orphaned_by_its_sender_is_relayed_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_push_orphaned_by_its_sender_is_relayed_once_on_dynamodb() {
    a_push_orphaned_by_its_sender_is_relayed_once(Backend::Dynamo).await;
}

/// The platform got the push but its answer was lost: never sent again, the cap stays
/// spent, the delivery says so.
async fn an_unconfirmed_push_is_never_resent_and_keeps_its_cap(backend: Backend) {
    let r = rig(backend, None).await;
    r.notifier
        .fail_after_sending_with(Some(NotifyError::Unconfirmed("timed out".into())));
    let e = fix_at("pat", "f1", 0, noon());
    let (_, v) = post_until_answered(&r.engine, &e).await;
    assert_eq!(v, Verdict::Sent);
    r.notifier.fail_after_sending_with(None);
    post_until_answered(&r.engine, &e).await;
    relay(&r).await;
    assert_eq!(r.notifier.sent().len(), 1);
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Unconfirmed]);
    let (_, v) = post_until_answered(&r.engine, &fix_at("pat", "f2", 1, noon())).await;
    assert_eq!(v, Verdict::Suppressed, "the cap stays spent");
    assert_eq!(r.notifier.sent().len(), 1);
}

#[tokio::test]
async fn an_unconfirmed_push_is_never_resent_and_keeps_its_cap_in_memory() {
    an_unconfirmed_push_is_never_resent_and_keeps_its_cap(Backend::Memory).await;
}

#[tokio::test]
async fn an_unconfirmed_push_is_never_resent_and_keeps_its_cap_on_sqlite() {
    an_unconfirmed_push_is_never_resent_and_keeps_its_cap(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_unconfirmed_push_is_never_resent_and_keeps_its_cap_on_dynamodb() {
    an_unconfirmed_push_is_never_resent_and_keeps_its_cap(Backend::Dynamo).await;
}

/// An orphaned push whose user withdrew push consent before the relay came is not sent;
/// its cap is given back.
#[tokio::test]
async fn the_relay_honours_a_withdrawal_made_after_the_commit() {
    let r = rig(Backend::Sqlite, Some(Fault::Commit)).await;
    assert!(
        r.engine
            .process(&fix_at("pat", "f1", 0, noon()))
            .await
            .is_err()
    );
    let withdraw = event(
        "pat",
        json!({"event_id": "w", "type": "consent", "at": noon().to_rfc3339(), "purpose": "push", "granted": false}),
    );
    r.engine.process(&withdraw).await.unwrap();
    relay(&r).await;
    assert!(r.notifier.sent().is_empty());
    assert_eq!(delivery_status(&r).await, [DeliveryStatus::Failed]);
    let state = r.store.load_user(&id("pat")).await.unwrap().state;
    assert!(state.sends.is_empty(), "the cap reservation was released");
}

/// Many relays and the engine racing for the same orphaned pushes: each goes out once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_relays_send_each_orphan_once() {
    let r = rig(Backend::Sqlite, None).await;
    // Ten users, each with a committed push that nobody sent.
    let store = r.store.clone();
    let mut users = Vec::new();
    for u in 0..10 {
        let user = format!("u{u}");
        let lossy = LoseReply {
            inner: store.clone(),
            fault: Fault::Commit,
            armed: AtomicBool::new(true),
        };
        let engine = Engine::new(
            Arc::new(lossy),
            r.notifier.clone(),
            Arc::new(weather()),
            Arc::new(r.clock.clone()),
            model(),
        )
        .await
        .unwrap();
        for e in onboarding(&user, noon()) {
            engine.process(&e).await.unwrap();
        }
        assert!(
            engine
                .process(&fix_at(&user, "f", 0, noon()))
                .await
                .is_err()
        );
        users.push(user);
    }
    r.clock.set(noon() + Duration::minutes(5));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let engine = r.engine.clone();
            tokio::spawn(async move { engine.relay_pending(Duration::seconds(30), 100).await })
        })
        .collect();
    let mut relayed = 0;
    for t in tasks {
        relayed += t.await.unwrap().unwrap();
    }
    assert_eq!(relayed, 10);
    let mut to: Vec<String> = r
        .notifier
        .sent()
        .iter()
        .map(|p| p.user_id.to_string())
        .collect();
    to.sort();
    users.sort();
    assert_eq!(to, users);
}
