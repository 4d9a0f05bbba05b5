//! The state store contract: one suite of cases, each run against the in-memory store (the
//! reference), the SQLite store and the DynamoDB store (through the real AWS SDK against
//! moto's server, started by the test process). Same cases, same results.

use nearcast::store::{SqliteStore, Sync};
use nearcast_aws::DynamoStateStore;
use nearcast_core::audit::{Actor, AuditEntry, ConfigChange, Role};
use nearcast_core::decision::{Decision, Push, Verdict};
use nearcast_core::event::Platform;
use nearcast_core::memory::InMemoryStateStore;
use nearcast_core::ports::{
    Commit, CommitOutcome, DeliveryRecord, DeliveryStatus, Erasure, EventResult, OutcomeKind,
    OutcomeRecord, StateStore, StoreError, UserLog, UserRecord, group_by_user,
};
use nearcast_core::state::{PushTarget, UserState};
use nearcast_tests::{catalog, id, noon, policy};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A store under test, with whatever must outlive it (the SQLite file's folder).
struct Subject {
    store: Arc<dyn StateStore>,
    _dir: Option<tempfile::TempDir>,
}

fn in_memory() -> Subject {
    Subject {
        store: Arc::new(InMemoryStateStore::new()),
        _dir: None,
    }
}

fn on_sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("contract.db"), Sync::Normal).expect("open db");
    Subject {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// A DynamoDB store on a fresh table on moto.
async fn on_dynamodb(case: &str) -> Subject {
    static N: AtomicUsize = AtomicUsize::new(0);
    let table = format!(
        "contract-{}-{}-{}-{}",
        case.replace('_', "-"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_micros()
    );
    let client = nearcast_aws::moto::shared().dynamodb(None).await;
    DynamoStateStore::create_table(&client, &table)
        .await
        .expect("create table on moto");
    Subject {
        store: Arc::new(DynamoStateStore::new(client, table)),
        _dir: None,
    }
}

/// `contract!(case)` runs `case(store)` on each of the three stores.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn in_memory() {
                super::$case(super::in_memory().store).await;
            }
            #[tokio::test]
            async fn on_sqlite() {
                let s = super::on_sqlite();
                super::$case(s.store.clone()).await;
            }
            #[tokio::test]
            async fn on_dynamodb() {
                let s = super::on_dynamodb(stringify!($case)).await;
                super::$case(s.store.clone()).await;
            }
        }
    )*};
}

contract!(
    unknown_user_loads_as_default_with_version_0,
    commit_applies_state_and_version_and_records_events,
    duplicate_event_answers_the_first_result_and_writes_nothing,
    stale_version_conflicts_and_writes_nothing,
    stateless_commit_records_events_without_version_check,
    concurrent_commits_at_one_version_apply_once,
    decisions_and_deliveries_are_recorded_and_statuses_move,
    erasure_removes_everything_about_the_user_only,
    configuration_round_trips,
    config_changes_and_their_audit_entry_apply_together,
    outcomes_are_logged_atomically_with_their_events_and_erased,
    user_logs_hand_over_each_user_once_with_their_logs,
    a_budget_is_counted_in_the_send_commit_and_never_passed_under_concurrency,
    campaigns_round_trip_with_their_audit_entries,
    coupon_codes_are_given_once_under_concurrency_redeemed_once_and_unlinked_by_erasure,
    results_by_store_read_from_months_and_end_days_equal_the_sum_of_the_days,
    a_profile_with_only_cells_or_only_a_webhook_message_writes_both,
);

// ---------------------------------------------------------------- fixtures

fn state(tag: &str) -> UserState {
    let mut s = UserState::default();
    s.affinities.insert(tag.to_string(), 0.5);
    s
}

fn state_with_endpoint(endpoint: &str) -> UserState {
    let mut s = state("coffee");
    s.push = Some(PushTarget {
        platform: Platform::Fcm,
        token: "tok-1".into(),
        endpoint: Some(endpoint.into()),
        disabled: false,
        locale: Some("fi-FI".into()),
    });
    s
}

fn result(kind: &str) -> EventResult {
    EventResult {
        kind: kind.into(),
        decision: None,
    }
}

fn decision(user: &str, event: &str, minute: i64) -> Decision {
    Decision {
        event_id: id(event),
        user_id: id(user),
        at: noon() + chrono::Duration::minutes(minute),
        verdict: Verdict::Sent,
        store_id: Some(id("s1")),
        offer_id: Some(id("o1")),
        score: Some(0.75),
        reason: None,
        context: None,
        // The fields training needs round-trip in every store.
        candidates: vec![nearcast_core::decision::Candidate {
            store_id: id("s1"),
            offer_id: id("o1"),
            category: "coffee".into(),
            distance_m: 12.5,
            score: Some(0.75),
            reason: None,
            affinity: Some(0.25),
            bought_category: true,
        }],
        model_version: "test".into(),
        delivery_id: Some(format!("d-{user}-{event}")),
        personalised: true,
        presence: Vec::new(),
        campaign_id: None,
        variant_id: None,
        catalog_version: None,
        deferred_until: None,
        next_fix_by: None,
    }
}

fn push(user: &str, event: &str, minute: i64) -> Push {
    Push {
        delivery_id: format!("d-{user}-{event}"),
        user_id: id(user),
        platform: Platform::Fcm,
        // Not stored (never written anywhere); empty so records compare equal everywhere.
        token: String::new(),
        endpoint: None,
        offer_id: id("o1"),
        campaign_id: id("c1"),
        store_id: id("s1"),
        title: "Coffee".into(),
        body: "Half price".into(),
        coupon: Some("HALF".into()),
        variant_id: None,
        locale: None,
        deep_link: None,
        image_url: None,
        priority: Default::default(),
        deferred: false,
        score: 0.75,
        model_version: "test".into(),
        at: noon() + chrono::Duration::minutes(minute),
    }
}

fn outcome(user: &str, event: &str, minute: i64, kind: OutcomeKind) -> OutcomeRecord {
    OutcomeRecord {
        detail: Default::default(),
        event_id: id(event),
        user_id: id(user),
        at: noon() + chrono::Duration::minutes(minute),
        kind,
        offer_id: (kind != OutcomeKind::Purchased).then(|| id("o1")),
        category: Some("coffee".into()),
        delivery_id: (kind == OutcomeKind::Opened).then(|| format!("d-{user}-e1")),
    }
}

/// A commit of one event that logs `kind` as an outcome.
fn outcome_commit(user: &str, event: &str, minute: i64, kind: OutcomeKind) -> Commit {
    let mut c = commit(user, 0, None, &[event]);
    c.outcomes.push(outcome(user, event, minute, kind));
    c
}

/// A commit of `state` at `expected` with the given events (each answering `kind`).
fn commit(user: &str, expected: u64, state: Option<UserState>, events: &[&str]) -> Commit {
    let mut c = Commit::new(id(user), expected);
    c.state = state;
    c.events = events.iter().map(|e| (id(e), result(e))).collect();
    c
}

/// A commit with a decision and a pending push per event, as a sent location fix makes.
fn sent(user: &str, expected: u64, state: Option<UserState>, events: &[&str]) -> Commit {
    let mut c = commit(user, expected, state, events);
    for (i, e) in events.iter().enumerate() {
        c.decisions.push(decision(user, e, i as i64));
        c.pushes.push(push(user, e, i as i64));
    }
    c
}

/// ann: a sent decision (`e1`) and its open (`o1`, minute 5); `buyer`: a purchase (`o1`,
/// minute 6). ann is at version 1 afterwards.
async fn sent_opened_and_bought(store: &dyn StateStore, buyer: &str) {
    apply(store, &sent("ann", 0, Some(state("a")), &["e1"])).await;
    apply(store, &outcome_commit("ann", "o1", 5, OutcomeKind::Opened)).await;
    apply(
        store,
        &outcome_commit(buyer, "o1", 6, OutcomeKind::Purchased),
    )
    .await;
}

async fn apply(store: &dyn StateStore, c: &Commit) {
    assert_eq!(store.commit(c).await.unwrap(), CommitOutcome::Applied);
}

async fn load(store: &dyn StateStore, user: &str) -> UserRecord {
    store.load_user(&id(user)).await.unwrap()
}

/// Whether `event` of `user` is recorded (probed with a commit that writes it if not).
async fn is_recorded(store: &dyn StateStore, user: &str, event: &str) -> bool {
    match store
        .commit(&commit(user, 0, None, &[event]))
        .await
        .unwrap()
    {
        CommitOutcome::Applied => false,
        CommitOutcome::Duplicates(d) => {
            assert_eq!(d.len(), 1);
            true
        }
        CommitOutcome::Conflict => panic!("a stateless commit cannot conflict"),
        CommitOutcome::BudgetSpent(c) => panic!("no budget was given, {c} spent"),
        CommitOutcome::CouponTaken(c) => panic!("no coupon was given, {c} taken"),
    }
}

fn status(records: &[DeliveryRecord], delivery: &str) -> Option<DeliveryStatus> {
    records
        .iter()
        .find(|r| r.push.delivery_id == delivery)
        .map(|r| r.status)
}

// ---------------------------------------------------------------- cases

async fn unknown_user_loads_as_default_with_version_0(store: Arc<dyn StateStore>) {
    let r = load(&*store, "nobody").await;
    assert_eq!(r.version, 0);
    assert_eq!(r.state, UserState::default());
    assert!(store.deliveries().await.unwrap().is_empty());
    assert!(store.decisions().await.unwrap().is_empty());
}

async fn commit_applies_state_and_version_and_records_events(store: Arc<dyn StateStore>) {
    apply(&*store, &commit("ann", 0, Some(state("a")), &["e1"])).await;
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (1, state("a")));
    apply(&*store, &commit("ann", 1, Some(state("b")), &["e2", "e3"])).await;
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (2, state("b")));
    // Events are keyed per user: another user's e1 is new.
    assert!(!is_recorded(&*store, "bob", "e1").await);
    for e in ["e1", "e2", "e3"] {
        assert!(is_recorded(&*store, "ann", e).await, "{e} recorded");
    }
}

async fn duplicate_event_answers_the_first_result_and_writes_nothing(store: Arc<dyn StateStore>) {
    apply(&*store, &commit("ann", 0, Some(state("a")), &["e1"])).await;
    // A retry of e1, with a new event e9, a new state, a decision and a push.
    let mut retry = sent("ann", 1, Some(state("b")), &["e1", "e9"]);
    retry.events[0].1 = result("something else");
    assert_eq!(
        store.commit(&retry).await.unwrap(),
        CommitOutcome::Duplicates(vec![(id("e1"), result("e1"))])
    );
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (1, state("a")));
    assert!(store.decisions().await.unwrap().is_empty());
    assert!(store.deliveries().await.unwrap().is_empty());
    assert!(!is_recorded(&*store, "ann", "e9").await);
    // A duplicate is found even when the state is unchanged and the version stale.
    assert_eq!(
        store
            .commit(&commit("ann", 0, None, &["e1"]))
            .await
            .unwrap(),
        CommitOutcome::Duplicates(vec![(id("e1"), result("e1"))])
    );
}

async fn stale_version_conflicts_and_writes_nothing(store: Arc<dyn StateStore>) {
    apply(&*store, &commit("ann", 0, Some(state("a")), &["e1"])).await;
    for expected in [0, 2, 7] {
        let stale = sent("ann", expected, Some(state("b")), &["e2"]);
        assert_eq!(
            store.commit(&stale).await.unwrap(),
            CommitOutcome::Conflict,
            "expected_version {expected}"
        );
    }
    // A user without a record is at version 0.
    assert_eq!(
        store
            .commit(&commit("bob", 1, Some(state("b")), &["e1"]))
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (1, state("a")));
    assert_eq!(load(&*store, "bob").await.version, 0);
    assert!(store.decisions().await.unwrap().is_empty());
    assert!(store.deliveries().await.unwrap().is_empty());
    assert!(!is_recorded(&*store, "ann", "e2").await);
    assert!(!is_recorded(&*store, "bob", "e1").await);
}

async fn stateless_commit_records_events_without_version_check(store: Arc<dyn StateStore>) {
    apply(&*store, &commit("ann", 0, Some(state("a")), &["e1"])).await;
    apply(&*store, &commit("ann", 1, Some(state("b")), &["e2"])).await;
    // Read at version 0, nothing changed in the state: applied, version untouched.
    apply(&*store, &sent("ann", 0, None, &["e3"])).await;
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (2, state("b")));
    assert!(is_recorded(&*store, "ann", "e3").await);
    assert_eq!(store.decisions().await.unwrap().len(), 1);
    assert_eq!(store.deliveries().await.unwrap().len(), 1);
    // Also for a user who has no record at all.
    apply(&*store, &commit("new", 0, None, &["e1"])).await;
    assert_eq!(load(&*store, "new").await.version, 0);
    // An empty commit is applied and changes nothing.
    apply(&*store, &Commit::new(id("ann"), 9)).await;
    assert_eq!(load(&*store, "ann").await.version, 2);
}

async fn concurrent_commits_at_one_version_apply_once(store: Arc<dyn StateStore>) {
    apply(&*store, &commit("ann", 0, Some(state("a")), &["e0"])).await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let e = format!("c{i}");
                let c = commit("ann", 1, Some(state(&e)), &[e.as_str()]);
                store.commit(&c).await.unwrap()
            })
        })
        .collect();
    let mut applied = 0;
    for t in tasks {
        match t.await.unwrap() {
            CommitOutcome::Applied => applied += 1,
            CommitOutcome::Conflict => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(load(&*store, "ann").await.version, 2);
}

async fn decisions_and_deliveries_are_recorded_and_statuses_move(store: Arc<dyn StateStore>) {
    apply(&*store, &sent("ann", 0, Some(state("a")), &["e1", "e2"])).await;
    apply(&*store, &sent("bob", 0, None, &["e1"])).await;
    // Logged later, though earlier in event time: logs are oldest-commit first.
    let mut late = sent("ann", 1, Some(state("b")), &["e0"]);
    late.decisions[0].at = noon() - chrono::Duration::hours(1);
    apply(&*store, &late).await;
    let want_decisions = vec![
        decision("ann", "e1", 0),
        decision("ann", "e2", 1),
        decision("bob", "e1", 0),
        late.decisions[0].clone(),
    ];
    assert_eq!(store.decisions().await.unwrap(), want_decisions);
    let want_pushes = vec![
        push("ann", "e1", 0),
        push("ann", "e2", 1),
        push("bob", "e1", 0),
        push("ann", "e0", 0),
    ];
    let got = store.deliveries().await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.push.clone()).collect::<Vec<_>>(),
        want_pushes
    );
    assert!(got.iter().all(|r| r.status == DeliveryStatus::Pending));

    // Pending, oldest decided first, up to a time and a limit; no token in them.
    let pending = |before: i64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .pending_deliveries(noon() + chrono::Duration::minutes(before), limit)
                .await
                .unwrap()
                .iter()
                .map(|p| p.delivery_id.clone())
                .collect::<Vec<_>>()
        }
    };
    let mut all = pending(10, 100).await;
    all.sort();
    assert_eq!(all, ["d-ann-e0", "d-ann-e1", "d-ann-e2", "d-bob-e1"]);
    assert_eq!(pending(0, 100).await.len(), 3, "decided at or before noon");
    assert_eq!(pending(10, 1).await.len(), 1);
    assert_eq!(pending(-1, 100).await, Vec::<String>::new());
    assert!(
        store
            .pending_deliveries(noon() + chrono::Duration::minutes(10), 100)
            .await
            .unwrap()
            .iter()
            .all(|p| p.token.is_empty())
    );

    use DeliveryStatus::{Failed, Pending, Sent, Unconfirmed};
    let claim = |user: &'static str, d: &'static str, token: &'static str| {
        let store = store.clone();
        async move { store.claim_delivery(&id(user), d, token).await.unwrap() }
    };
    let finish = |user: &'static str, d: &'static str, to| {
        let store = store.clone();
        async move { store.finish_delivery(&id(user), d, to).await.unwrap() }
    };
    // A claim succeeds once; a second claimant loses, the first one retrying wins again.
    assert!(claim("ann", "d-ann-e1", "k1").await);
    assert!(!claim("ann", "d-ann-e1", "k2").await);
    assert!(
        claim("ann", "d-ann-e1", "k1").await,
        "a retried claim is ours"
    );
    assert_eq!(
        status(&store.deliveries().await.unwrap(), "d-ann-e1"),
        Some(DeliveryStatus::Sending)
    );
    assert!(finish("ann", "d-ann-e1", Sent).await);
    assert!(!finish("ann", "d-ann-e1", Sent).await, "finished once");
    assert!(
        !claim("ann", "d-ann-e1", "k1").await,
        "a finished delivery is never claimed"
    );
    assert!(claim("bob", "d-bob-e1", "k3").await);
    assert!(finish("bob", "d-bob-e1", Failed).await);
    // The wrong user, an unknown delivery, an unclaimed one: no move, no error.
    assert!(!claim("bob", "d-ann-e2", "k4").await);
    assert!(!claim("ann", "d-nobody", "k4").await);
    assert!(!finish("ann", "d-ann-e2", Sent).await);
    let got = store.deliveries().await.unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(status(&got, "d-ann-e1"), Some(Sent));
    assert_eq!(status(&got, "d-ann-e2"), Some(Pending));
    assert_eq!(status(&got, "d-bob-e1"), Some(Failed));
    assert_eq!(status(&got, "d-ann-e0"), Some(Pending));
    // Claimed deliveries are no longer pending.
    let mut left = pending(10, 100).await;
    left.sort();
    assert_eq!(left, ["d-ann-e0", "d-ann-e2"]);
    assert!(claim("ann", "d-ann-e2", "k5").await);
    assert!(finish("ann", "d-ann-e2", Unconfirmed).await);
    let got = store.deliveries().await.unwrap();
    assert_eq!(status(&got, "d-ann-e2"), Some(Unconfirmed));
    assert_eq!(pending(10, 100).await, ["d-ann-e0"]);
    // Order is kept through status changes.
    assert_eq!(
        got.iter().map(|r| r.push.clone()).collect::<Vec<_>>(),
        want_pushes
    );
}

async fn erasure_removes_everything_about_the_user_only(store: Arc<dyn StateStore>) {
    let endpoint = "arn:aws:sns:us-east-1:000000000000:endpoint/GCM/app/ann";
    apply(
        &*store,
        &sent("ann", 0, Some(state_with_endpoint(endpoint)), &["e1"]),
    )
    .await;
    apply(&*store, &commit("ann", 1, None, &["e2"])).await;
    apply(&*store, &sent("bob", 0, Some(state("b")), &["e1"])).await;

    assert_eq!(
        store.erase_user(&id("ann")).await.unwrap(),
        Erasure {
            // profile, two idempotency keys, one decision, one delivery
            records: 5,
            endpoint: Some(endpoint.into()),
        }
    );
    let r = load(&*store, "ann").await;
    assert_eq!((r.version, r.state), (0, UserState::default()));
    assert_eq!(
        store.decisions().await.unwrap(),
        vec![decision("bob", "e1", 0)]
    );
    let deliveries = store.deliveries().await.unwrap();
    assert_eq!(
        deliveries
            .iter()
            .map(|r| r.push.clone())
            .collect::<Vec<_>>(),
        vec![push("bob", "e1", 0)]
    );
    // An erased delivery cannot be claimed, nor relayed, nor come back.
    assert!(
        !store
            .claim_delivery(&id("ann"), "d-ann-e1", "k")
            .await
            .unwrap()
    );
    let relayable: Vec<String> = store
        .pending_deliveries(noon() + chrono::Duration::days(1), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.delivery_id)
        .collect();
    assert_eq!(relayable, ["d-bob-e1"]);
    assert_eq!(store.deliveries().await.unwrap(), deliveries);
    // Bob is untouched.
    let b = load(&*store, "bob").await;
    assert_eq!((b.version, b.state), (1, state("b")));
    assert!(is_recorded(&*store, "bob", "e1").await);
    // Ann's events are no longer duplicates, and she starts again from version 0.
    assert!(!is_recorded(&*store, "ann", "e2").await);
    apply(&*store, &commit("ann", 0, Some(state("again")), &["e1"])).await;
    assert_eq!(load(&*store, "ann").await.version, 1);
    // Erasing someone unknown removes nothing.
    assert_eq!(
        store.erase_user(&id("nobody")).await.unwrap(),
        Erasure::default()
    );
    // Erasure without a push endpoint.
    let e = store.erase_user(&id("bob")).await.unwrap();
    assert_eq!((e.records, e.endpoint), (4, None));
    assert!(store.deliveries().await.unwrap().is_empty());
    assert!(
        store
            .pending_deliveries(noon() + chrono::Duration::days(1), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn configuration_round_trips(store: Arc<dyn StateStore>) {
    let (stores, offers) = catalog(3);
    assert!(store.list_stores().await.unwrap().is_empty());
    assert!(store.list_offers().await.unwrap().is_empty());
    assert_eq!(store.get_policy().await.unwrap(), None);

    for s in stores.iter().rev() {
        store.put_store(s).await.unwrap();
    }
    for o in offers.iter().rev() {
        store.put_offer(o).await.unwrap();
    }
    assert_eq!(store.list_stores().await.unwrap(), stores);
    assert_eq!(store.list_offers().await.unwrap(), offers);

    let mut renamed = stores[1].clone();
    renamed.name = "Renamed".into();
    store.put_store(&renamed).await.unwrap();
    let mut retitled = offers[2].clone();
    retitled.title = "Tea".into();
    store.put_offer(&retitled).await.unwrap();
    assert!(store.delete_store(&id("s0")).await.unwrap());
    assert!(!store.delete_store(&id("s0")).await.unwrap());
    assert!(!store.delete_store(&id("nope")).await.unwrap());
    assert!(store.delete_offer(&id("o1")).await.unwrap());
    assert!(!store.delete_offer(&id("o1")).await.unwrap());
    assert_eq!(
        store.list_stores().await.unwrap(),
        vec![renamed, stores[2].clone()]
    );
    assert_eq!(
        store.list_offers().await.unwrap(),
        vec![offers[0].clone(), retitled]
    );

    store.put_policy(&policy(3)).await.unwrap();
    assert_eq!(store.get_policy().await.unwrap(), Some(policy(3)));
    let mut p = policy(5);
    p.min_gap_minutes = 30;
    store.put_policy(&p).await.unwrap();
    assert_eq!(store.get_policy().await.unwrap(), Some(p));
    // Configuration is not mistaken for user data.
    assert!(store.deliveries().await.unwrap().is_empty());
    assert!(store.decisions().await.unwrap().is_empty());
    assert_eq!(load(&*store, "s1").await.version, 0);
}

async fn config_changes_and_their_audit_entry_apply_together(store: Arc<dyn StateStore>) {
    let (stores, offers) = catalog(3);
    let maria = Actor {
        name: "maria".into(),
        role: Role::Editor,
    };
    let entry = |minute: i64, action: &str| {
        AuditEntry::new(noon() + chrono::Duration::minutes(minute), &maria, action)
    };
    assert!(store.audit_log(None, 10).await.unwrap().is_empty());

    let e1 = entry(1, "catalog.load");
    let changes = vec![
        ConfigChange::PutStore(stores[0].clone()),
        ConfigChange::PutStore(stores[1].clone()),
        ConfigChange::PutOffer(offers[0].clone()),
    ];
    assert!(store.apply_config(&changes, &e1).await.unwrap());
    assert_eq!(store.list_stores().await.unwrap(), stores[..2]);
    assert_eq!(store.list_offers().await.unwrap(), offers[..1]);

    // A delete of nothing: no change of the list applied, and no entry.
    let e2 = entry(2, "store.delete");
    let changes = vec![
        ConfigChange::PutStore(stores[2].clone()),
        ConfigChange::DeleteStore(id("nope")),
    ];
    assert!(!store.apply_config(&changes, &e2).await.unwrap());
    assert_eq!(store.list_stores().await.unwrap(), stores[..2]);
    assert_eq!(store.audit_log(None, 10).await.unwrap(), [e1.clone()]);

    let e3 = entry(3, "offer.delete").change(Some(&offers[0]), None);
    let changes = vec![
        ConfigChange::DeleteOffer(offers[0].id.clone()),
        ConfigChange::DeleteStore(stores[0].id.clone()),
    ];
    assert!(store.apply_config(&changes, &e3).await.unwrap());
    assert_eq!(store.list_stores().await.unwrap(), stores[1..2]);
    assert!(store.list_offers().await.unwrap().is_empty());
    let e4 = entry(4, "policy.put");
    assert!(
        store
            .apply_config(&[ConfigChange::PutPolicy(policy(7))], &e4)
            .await
            .unwrap()
    );
    assert_eq!(store.get_policy().await.unwrap(), Some(policy(7)));

    // Newest first, in pages below an entry id.
    assert_eq!(
        store.audit_log(None, 10).await.unwrap(),
        [e4.clone(), e3.clone(), e1.clone()]
    );
    assert_eq!(
        store.audit_log(None, 2).await.unwrap(),
        [e4.clone(), e3.clone()]
    );
    assert_eq!(
        store.audit_log(Some(&e3.id), 10).await.unwrap(),
        [e1.clone()]
    );
    assert!(store.audit_log(Some(&e1.id), 10).await.unwrap().is_empty());
    // The log is not user data: an erasure leaves it.
    store.erase_user(&id("maria")).await.unwrap();
    assert_eq!(store.audit_log(None, 10).await.unwrap().len(), 3);
}

/// `n` result cells (with their roll-ups) of campaign `c` for one triggered decision each.
fn some_cells(c: &str, n: usize) -> nearcast_core::campaign_results::LevelDeltas {
    use nearcast_core::campaign_results::{Cell, CellDeltas, CellKey, with_rollups};
    let mut deltas = CellDeltas::new();
    for k in 0..n {
        let key = CellKey {
            day: "2026-11-20".parse().unwrap(),
            store: format!("s{k}"),
            variant: "a".into(),
        };
        deltas.entry((id(c), key)).or_default().add(&Cell {
            triggered: 1,
            ..Cell::default()
        });
    }
    with_rollups(deltas)
}

/// A presence webhook message of `user` for `event`.
fn hook_message(user: &str, event: &str) -> nearcast_core::webhook::WebhookMessage {
    nearcast_core::webhook::WebhookMessage {
        id: nearcast_core::webhook::message_id(&id(user), &id(event)),
        user_id: id(user),
        event_id: id(event),
        at: noon(),
        changes: Vec::new(),
    }
}

/// A commit of the profile and one kind of item alone (no idempotency key, decision or
/// delivery beside them) writes both: the profile alone is a store's cheapest write, and
/// nothing else may be taken for it.
async fn a_profile_with_only_cells_or_only_a_webhook_message_writes_both(
    store: Arc<dyn StateStore>,
) {
    use nearcast_core::campaign_results::CellLevel;
    let mut c = commit("cel", 0, Some(state("a")), &[]);
    c.cells = some_cells("c-alone", 1);
    apply(&*store, &c).await;
    assert_eq!(load(&*store, "cel").await.version, 1);
    let cells = store
        .campaign_cells(&id("c-alone"), CellLevel::StoreDays, None, None)
        .await
        .unwrap();
    assert_eq!(cells.len(), 1, "{cells:?}");

    // The profile alone, at a version that moved: a conflict, not an error, and nothing
    // written.
    let stale = commit("cel", 0, Some(state("b")), &[]);
    assert_eq!(store.commit(&stale).await.unwrap(), CommitOutcome::Conflict);
    assert_eq!(load(&*store, "cel").await.state, state("a"));
    apply(&*store, &commit("cel", 1, Some(state("b")), &[])).await;
    let stale = commit("cel", 1, Some(state("c")), &[]);
    assert_eq!(store.commit(&stale).await.unwrap(), CommitOutcome::Conflict);
    let now = load(&*store, "cel").await;
    assert_eq!((now.version, now.state), (2, state("b")));

    let mut c = commit("hoo", 0, Some(state("a")), &[]);
    c.webhooks.push(hook_message("hoo", "h1"));
    apply(&*store, &c).await;
    assert_eq!(load(&*store, "hoo").await.version, 1);
    let due = store
        .due_webhooks(noon() + chrono::Duration::days(1), 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].message, hook_message("hoo", "h1"));
}

// ---------------------------------------------------------------- DynamoDB only

/// DynamoDB takes at most 100 items per transaction; a larger commit is refused whole
/// (the engine will chunk batches later).
#[tokio::test]
async fn dynamodb_refuses_a_commit_over_100_items_and_writes_nothing() {
    let s = on_dynamodb("too_big").await;
    let events: Vec<String> = (0..40).map(|i| format!("e{i}")).collect();
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    // 40 idempotency keys + 40 decisions + 2 × 40 deliveries (item and pointer) + profile.
    let big = sent("ann", 0, Some(state("a")), &events);
    let e = s.store.commit(&big).await.unwrap_err();
    assert!(e.0.contains("161 items, the limit is 100"), "{e}");
    assert_eq!(load(&*s.store, "ann").await.version, 0);
    assert!(s.store.deliveries().await.unwrap().is_empty());
    // Exactly 100 is fine: 24 sent events (4 items each) + 3 more events + profile.
    let mut fits = sent("ann", 0, Some(state("a")), &events[..24]);
    fits.events
        .extend(events[24..27].iter().map(|e| (id(e), result(e))));
    assert_eq!(s.store.commit(&fits).await.unwrap(), CommitOutcome::Applied);
    assert_eq!(s.store.deliveries().await.unwrap().len(), 24);
    assert_eq!(s.store.decisions().await.unwrap().len(), 24);
    assert!(is_recorded(&*s.store, "ann", "e26").await);
}

/// Every kind of item counts against DynamoDB's 100 per transaction: a commit of a profile,
/// sent events (key, decision, delivery, pointer), a campaign's budget, a coupon (code,
/// free entry, link), result cells and a webhook message that makes exactly 100 is written
/// whole; one webhook message more is refused before it is sent, naming 101, and writes
/// nothing.
#[tokio::test]
async fn dynamodb_counts_every_kind_of_item_against_the_limit_of_100() {
    use nearcast_core::coupon::CouponIssue;
    let s = on_dynamodb("every_kind").await;
    let store = &*s.store;
    let camp = id("c-full");
    let upload = AuditEntry::new(noon(), &Actor::system("test"), "coupons.upload");
    store
        .add_coupons(&camp, &["FULL-1".to_string()], Some(&upload))
        .await
        .unwrap();
    let build = |user: &str, webhooks: usize| {
        let events: Vec<String> = (0..20).map(|i| format!("{user}-e{i}")).collect();
        let events: Vec<&str> = events.iter().map(String::as_str).collect();
        let mut c = sent(user, 0, Some(state("a")), &events);
        c.budgets.push((camp.clone(), 1000));
        c.coupons.push(CouponIssue {
            campaign_id: camp.clone(),
            code: "FULL-1".into(),
            delivery_id: c.pushes[0].delivery_id.clone(),
            offer_id: id("o1"),
        });
        c.cells = some_cells("c-full", 2);
        for k in 0..webhooks {
            c.webhooks.push(hook_message(user, &format!("{user}-e{k}")));
        }
        // Fill up with idempotency keys of events that decided nothing.
        let so_far = 1 + 20 * 4 + 1 + 3 + c.cells.len() + webhooks;
        assert!(so_far <= 100, "{so_far}");
        for k in 0..(100 - so_far) {
            let e = format!("{user}-quiet{k}");
            c.events.push((id(&e), result(&e)));
        }
        c
    };
    let mut over = build("over", 1);
    over.webhooks.push(hook_message("over", "over-e19"));
    let e = store.commit(&over).await.unwrap_err();
    assert!(e.0.contains("101 items, the limit is 100"), "{e}");
    assert_eq!(load(store, "over").await.version, 0);
    assert!(store.deliveries().await.unwrap().is_empty());
    assert_eq!(store.campaign_sends(&camp).await.unwrap(), 0);

    let fits = build("fits", 1);
    assert_eq!(store.commit(&fits).await.unwrap(), CommitOutcome::Applied);
    assert_eq!(load(store, "fits").await.version, 1);
    assert_eq!(store.deliveries().await.unwrap().len(), 20);
    assert_eq!(store.decisions().await.unwrap().len(), 20);
    assert_eq!(store.campaign_sends(&camp).await.unwrap(), 1);
    assert!(store.free_coupons(&camp, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .due_webhooks(noon() + chrono::Duration::days(1), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(is_recorded(store, "fits", fits.events.last().unwrap().0.as_str()).await);
}

/// DynamoDB caps a transaction at 100 items; the engine commits a batch of 100 events, most
/// of which log a decision and many of which send, in chunks that each fit.
#[tokio::test]
async fn the_engine_commits_a_full_batch_on_dynamodb_in_chunks_that_fit() {
    let subject = on_dynamodb("engine-chunks").await;
    use nearcast_core::engine::Engine;
    use nearcast_core::event::Batch;
    use nearcast_core::memory::RecordingNotifier;
    use nearcast_tests::{catalog, fix_at, model, noon, onboarding, policy, weather};
    let notifier = Arc::new(RecordingNotifier::new());
    let engine = Engine::new(
        subject.store.clone(),
        notifier.clone(),
        Arc::new(weather()),
        Arc::new(nearcast_core::ports::ManualClock::new(noon())),
        model(),
    )
    .await
    .unwrap();
    let (stores, offers) = catalog(100);
    engine
        .load_config(stores, offers, policy(28))
        .await
        .unwrap();
    let user = nearcast_tests::id("bulk");
    let mut events = onboarding("bulk", noon());
    // One store after the other, 3 minutes apart (a person is never at two at once).
    events.extend((0..96).map(|i| {
        fix_at(
            "bulk",
            &format!("b{i}"),
            i,
            noon() + chrono::Duration::minutes(3 * i as i64),
        )
    }));
    assert_eq!(events.len(), 100);
    let batch = Batch {
        user_id: user.clone(),
        events,
    };
    assert!(subject.store.max_commit_events() < 100);
    let reports = engine.process_batch(&batch).await.expect("fits in chunks");
    assert_eq!(reports.len(), 100);
    assert!(
        reports
            .iter()
            .enumerate()
            .all(|(i, r)| r.index == i && r.status == "accepted")
    );
    assert_eq!(notifier.sent().len(), 28, "the daily cap");
    // Resent whole: every event is a duplicate, nothing more is sent.
    let again = engine.process_batch(&batch).await.unwrap();
    assert!(again.iter().all(|r| r.status == "duplicate"));
    assert_eq!(notifier.sent().len(), 28);
}

async fn outcomes_are_logged_atomically_with_their_events_and_erased(store: Arc<dyn StateStore>) {
    sent_opened_and_bought(&*store, "bob").await;
    // Two outcomes in one commit, with a state change.
    let mut two = commit("ann", 1, Some(state("b")), &["o2", "o3"]);
    two.outcomes
        .push(outcome("ann", "o2", 9, OutcomeKind::Redeemed));
    two.outcomes
        .push(outcome("ann", "o3", 10, OutcomeKind::Purchased));
    apply(&*store, &two).await;
    let want = vec![
        outcome("ann", "o1", 5, OutcomeKind::Opened),
        outcome("bob", "o1", 6, OutcomeKind::Purchased),
        outcome("ann", "o2", 9, OutcomeKind::Redeemed),
        outcome("ann", "o3", 10, OutcomeKind::Purchased),
    ];
    assert_eq!(store.outcomes().await.unwrap(), want);

    // A retried event logs its outcome no second time, and takes the new one with it.
    let mut retry = outcome_commit("ann", "o1", 5, OutcomeKind::Opened);
    retry.events.push((id("o9"), result("o9")));
    retry
        .outcomes
        .push(outcome("ann", "o9", 11, OutcomeKind::Purchased));
    assert!(matches!(
        store.commit(&retry).await.unwrap(),
        CommitOutcome::Duplicates(_)
    ));
    // A stale version writes no outcome either.
    let mut stale = commit("ann", 0, Some(state("c")), &["o8"]);
    stale
        .outcomes
        .push(outcome("ann", "o8", 12, OutcomeKind::Opened));
    assert_eq!(store.commit(&stale).await.unwrap(), CommitOutcome::Conflict);
    assert_eq!(store.outcomes().await.unwrap(), want);

    // Erasure takes the outcomes with the rest: profile, 4 keys, 1 decision, 1 delivery,
    // 3 outcomes.
    let e = store.erase_user(&id("ann")).await.unwrap();
    assert_eq!(e.records, 10);
    assert_eq!(
        store.outcomes().await.unwrap(),
        vec![outcome("bob", "o1", 6, OutcomeKind::Purchased)]
    );
}

async fn walk(store: &dyn StateStore) -> Vec<UserLog> {
    let mut logs = Vec::new();
    store
        .user_logs(&mut |log| {
            logs.push(log);
            Ok(())
        })
        .await
        .unwrap();
    logs.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    logs
}

async fn user_logs_hand_over_each_user_once_with_their_logs(store: Arc<dyn StateStore>) {
    // cid: outcomes and no decision.
    sent_opened_and_bought(&*store, "cid").await;
    apply(&*store, &sent("bob", 0, None, &["e1"])).await;
    apply(&*store, &sent("ann", 1, Some(state("b")), &["e2"])).await;
    // Logged later, though earlier in event time: each list keeps commit order.
    let mut late = sent("ann", 2, Some(state("c")), &["e0"]);
    late.decisions[0].at = noon() - chrono::Duration::hours(1);
    apply(&*store, &late).await;
    // A user with state and no log is not walked.
    apply(&*store, &commit("dan", 0, Some(state("d")), &["x1"])).await;

    let logs = walk(&*store).await;
    let users: Vec<&str> = logs.iter().map(|l| l.user_id.as_str()).collect();
    assert_eq!(users, ["ann", "bob", "cid"]);
    assert_eq!(
        logs[0].decisions,
        vec![
            decision("ann", "e1", 0),
            decision("ann", "e2", 0),
            late.decisions[0].clone()
        ]
    );
    assert_eq!(
        logs[0].outcomes,
        vec![outcome("ann", "o1", 5, OutcomeKind::Opened)]
    );
    assert!(logs[2].decisions.is_empty());
    // The same as grouping the whole logs.
    let whole = group_by_user(
        store.decisions().await.unwrap(),
        store.outcomes().await.unwrap(),
    );
    assert_eq!(logs, whole);

    // An error from the sink stops the walk and comes back.
    let mut calls = 0;
    let stopped = store
        .user_logs(&mut |_| {
            calls += 1;
            Err(StoreError("disk full".into()))
        })
        .await;
    assert_eq!(stopped.unwrap_err().0, "disk full");
    assert_eq!(calls, 1);

    // Erased users are not walked.
    store.erase_user(&id("ann")).await.unwrap();
    let users: Vec<String> = walk(&*store)
        .await
        .iter()
        .map(|l| l.user_id.to_string())
        .collect();
    assert_eq!(users, ["bob", "cid"]);
}

// ---------------------------------------------------------------- SQLite only

/// The SQLite walk pages through user ids (500 at a time): every user comes once, with or
/// without decisions.
#[tokio::test]
async fn sqlite_walks_logs_of_more_users_than_a_page() {
    let s = on_sqlite();
    // Every 7th user has an outcome and no decision, some of them at the page edges.
    let outcome_only = |u: usize| u % 7 == 3 || u == 499 || u == 500 || u == 1_000;
    for u in 0..1_203 {
        let user = format!("u{u:05}");
        if outcome_only(u) {
            apply(
                &*s.store,
                &outcome_commit(&user, "o1", 1, OutcomeKind::Opened),
            )
            .await;
        } else {
            apply(&*s.store, &sent(&user, 0, None, &["e1"])).await;
        }
    }
    let logs = walk(&*s.store).await;
    assert_eq!(logs.len(), 1_203);
    assert!(logs.windows(2).all(|w| w[0].user_id < w[1].user_id));
    for (u, l) in logs.iter().enumerate() {
        let want = if outcome_only(u) { (0, 1) } else { (1, 0) };
        assert_eq!((l.decisions.len(), l.outcomes.len()), want, "{}", l.user_id);
    }
}

/// Decisions and outcomes older than the retention are pruned; newer ones and other tables
/// stay.
#[tokio::test]
async fn sqlite_prunes_decisions_and_outcomes_past_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("p.db"), Sync::Normal).unwrap();
    let mut c = sent("ann", 0, Some(state("a")), &["e1", "e2"]);
    c.decisions[0].at = noon() - chrono::Duration::days(100);
    c.outcomes
        .push(outcome("ann", "e1", -100 * 24 * 60, OutcomeKind::Opened));
    c.outcomes
        .push(outcome("ann", "e2", 0, OutcomeKind::Opened));
    apply(&store, &c).await;
    let retention = chrono::Duration::days(nearcast_core::ports::LOG_RETENTION_DAYS);
    assert_eq!(store.prune_logs(noon() - retention).unwrap(), 2);
    assert_eq!(
        store.decisions().await.unwrap(),
        vec![decision("ann", "e2", 1)]
    );
    assert_eq!(
        store.outcomes().await.unwrap(),
        vec![outcome("ann", "e2", 0, OutcomeKind::Opened)]
    );
    assert_eq!(store.deliveries().await.unwrap().len(), 2);
    assert_eq!(store.prune_logs(noon() - retention).unwrap(), 0);
}

/// A coupon code's link to its person expires with the logs (the code stays issued): the
/// retention cut leaves a code issued within the period linked, and unties one issued
/// before it.
#[tokio::test]
async fn sqlite_unties_coupon_codes_from_people_past_retention() {
    use nearcast_core::coupon::{CouponIssue, Redemption};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("p.db"), Sync::Normal).unwrap();
    let maria = Actor {
        name: "maria".into(),
        role: Role::Editor,
    };
    let entry = AuditEntry::new(noon(), &maria, "coupons.upload");
    let codes = vec!["OLD-1".to_string(), "NEW-1".to_string()];
    store
        .add_coupons(&id("rain"), &codes, Some(&entry))
        .await
        .unwrap();
    for (user, code) in [("ann", "OLD-1"), ("bob", "NEW-1")] {
        let mut c = sent(user, 0, Some(state("a")), &["e1"]);
        c.pushes[0].coupon = Some(code.into());
        c.coupons.push(CouponIssue {
            campaign_id: id("rain"),
            code: code.into(),
            delivery_id: c.pushes[0].delivery_id.clone(),
            offer_id: id("o1"),
        });
        apply(&store, &c).await;
    }
    // Both were issued now (the host's clock): a cut a day ago keeps both links.
    let now = chrono::Utc::now();
    store.prune_logs(now - chrono::Duration::days(1)).unwrap();
    let linked = |r: Redemption| {
        matches!(
            r,
            Redemption::Redeemed {
                user_id: Some(_),
                ..
            }
        )
    };
    assert!(linked(
        store.redeem_coupon("OLD-1", now, None).await.unwrap()
    ));
    // A cut after both: the remaining code is untied, still issued, still redeemable once.
    store
        .prune_logs(now + chrono::Duration::minutes(1))
        .unwrap();
    assert_eq!(
        store.redeem_coupon("NEW-1", now, None).await.unwrap(),
        Redemption::Redeemed {
            campaign_id: id("rain"),
            offer_id: Some(id("o1")),
            delivery_id: None,
            user_id: None,
        }
    );
    assert!(
        store
            .free_coupons(&id("rain"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count("coupons").unwrap(), 2);
}

// ---------------------------------------------------------------- campaigns

/// Fifty users' sends race for a budget of 20: exactly 20 commits apply (each with its
/// events, decision and delivery), 30 are refused whole, and the count is 20. A commit of
/// two sends that would pass the budget is refused whole too, and a campaign without a
/// budget count stays untouched.
async fn a_budget_is_counted_in_the_send_commit_and_never_passed_under_concurrency(
    store: Arc<dyn StateStore>,
) {
    let rainy = id("rainy");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let rainy = rainy.clone();
            tokio::spawn(async move {
                let user = format!("u{i}");
                let mut c = sent(&user, 0, Some(state("a")), &["e1"]);
                c.budgets.push((rainy, 20));
                (user, store.commit(&c).await.unwrap())
            })
        })
        .collect();
    let (mut applied, mut refused) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            (u, CommitOutcome::Applied) => applied.push(u),
            (u, CommitOutcome::BudgetSpent(c)) => {
                assert_eq!(c, rainy);
                refused.push(u)
            }
            (u, other) => panic!("{u}: unexpected {other:?}"),
        }
    }
    assert_eq!((applied.len(), refused.len()), (20, 30));
    assert_eq!(store.campaign_sends(&rainy).await.unwrap(), 20);
    for u in &refused {
        // Nothing of a refused commit stays: not its event, state, decision or delivery.
        assert_eq!(load(&*store, u).await.version, 0, "{u}");
        assert!(!is_recorded(&*store, u, "e1").await, "{u}");
    }
    let deliveries = store.deliveries().await.unwrap();
    assert_eq!(deliveries.len(), 20);
    assert_eq!(store.decisions().await.unwrap().len(), 20);

    // Two sends of one commit against a budget with one left: refused whole.
    let sunny = id("sunny");
    let mut c = sent("zoe", 0, Some(state("z")), &["z1", "z2"]);
    c.budgets.push((sunny.clone(), 1));
    c.budgets.push((sunny.clone(), 1));
    assert_eq!(
        store.commit(&c).await.unwrap(),
        CommitOutcome::BudgetSpent(sunny.clone())
    );
    assert_eq!(store.campaign_sends(&sunny).await.unwrap(), 0);
    c.budgets.truncate(1);
    c.pushes.truncate(1);
    apply(&*store, &c).await;
    assert_eq!(store.campaign_sends(&sunny).await.unwrap(), 1);
    assert_eq!(store.campaign_sends(&rainy).await.unwrap(), 20);
    assert_eq!(store.campaign_sends(&id("unknown")).await.unwrap(), 0);
}

fn a_campaign(id_: &str, status: &str) -> nearcast_core::campaign::Campaign {
    serde_json::from_value(serde_json::json!({
        "id": id_, "name": "Rainy days", "status": status, "holdout": 0.1, "budget": 100,
        "variants": [{"id": "a", "default_locale": "en",
            "content": {"en": {"title": "Rain", "body": "Umbrellas at {store}"}}}]
    }))
    .unwrap()
}

async fn campaigns_round_trip_with_their_audit_entries(store: Arc<dyn StateStore>) {
    let maria = Actor {
        name: "maria".into(),
        role: Role::Editor,
    };
    assert!(store.list_campaigns().await.unwrap().is_empty());
    let (a, b) = (a_campaign("a", "draft"), a_campaign("b", "active"));
    let e1 = AuditEntry::new(noon(), &maria, "campaign.put");
    let changes = [
        ConfigChange::PutCampaign(b.clone()),
        ConfigChange::PutCampaign(a.clone()),
    ];
    assert!(store.apply_config(&changes, &e1).await.unwrap());
    assert_eq!(
        store.list_campaigns().await.unwrap(),
        [a.clone(), b.clone()]
    );
    let paused = a_campaign("a", "paused");
    let e2 = AuditEntry::new(noon(), &maria, "campaign.status").change(Some(&a), Some(&paused));
    assert!(
        store
            .apply_config(&[ConfigChange::PutCampaign(paused.clone())], &e2)
            .await
            .unwrap()
    );
    // Results of both.
    use nearcast_core::campaign_results::{Cell, CellDeltas, CellKey, CellLevel, with_rollups};
    let mut deltas = CellDeltas::new();
    for c in [&a.id, &b.id] {
        let k = CellKey {
            day: "2026-11-20".parse().unwrap(),
            store: "s1".into(),
            variant: "-".into(),
        };
        deltas.insert(
            (c.clone(), k),
            Cell {
                triggered: 3,
                ..Cell::default()
            },
        );
    }
    let mut c = commit("cells-user", 0, None, &["cells-1"]);
    c.cells = with_rollups(deltas);
    apply(store.as_ref(), &c).await;
    let cells = |c: nearcast_core::ids::Id| {
        let store = store.clone();
        async move {
            let mut n = 0;
            for level in [
                CellLevel::Days,
                CellLevel::StoreDays,
                CellLevel::StoreMonths,
            ] {
                n += store
                    .campaign_cells(&c, level, None, None)
                    .await
                    .unwrap()
                    .len();
            }
            n
        }
    };
    assert_eq!(
        (cells(a.id.clone()).await, cells(b.id.clone()).await),
        (3, 3)
    );
    // A delete of nothing changes nothing and writes no entry.
    let e3 = AuditEntry::new(noon(), &maria, "campaign.delete");
    let changes = [
        ConfigChange::DeleteCampaign(b.id.clone()),
        ConfigChange::DeleteCampaign(id("nope")),
    ];
    assert!(!store.apply_config(&changes, &e3).await.unwrap());
    assert_eq!(
        store.list_campaigns().await.unwrap(),
        [paused.clone(), b.clone()]
    );
    assert_eq!(
        cells(b.id.clone()).await,
        3,
        "a refused delete keeps the results"
    );
    let e4 = AuditEntry::new(noon(), &maria, "campaign.delete");
    assert!(
        store
            .apply_config(&[ConfigChange::DeleteCampaign(b.id.clone())], &e4)
            .await
            .unwrap()
    );
    assert_eq!(store.list_campaigns().await.unwrap(), [paused]);
    assert_eq!(store.audit_log(None, 10).await.unwrap(), [e4, e2, e1]);
    // The deleted campaign's results went with it, at every level; the other's stay.
    assert_eq!(
        (cells(a.id.clone()).await, cells(b.id.clone()).await),
        (3, 0)
    );
    // Cells of the deleted campaign written after its delete (an instance that still knew
    // it; on DynamoDB also a sweep that failed after the commit) do not pass to a campaign
    // created again under its id: it starts from nothing.
    let mut deltas = CellDeltas::new();
    deltas.insert(
        (
            b.id.clone(),
            CellKey {
                day: "2026-11-21".parse().unwrap(),
                store: "s1".into(),
                variant: "-".into(),
            },
        ),
        Cell {
            triggered: 2,
            ..Cell::default()
        },
    );
    let mut c = commit("cells-user", 1, None, &["cells-2"]);
    c.cells = with_rollups(deltas);
    apply(store.as_ref(), &c).await;
    assert_eq!(cells(b.id.clone()).await, 3, "a late commit's cells");
    let e5 = AuditEntry::new(noon(), &maria, "campaign.create");
    assert!(
        store
            .apply_config(&[ConfigChange::PutCampaign(b.clone())], &e5)
            .await
            .unwrap()
    );
    assert_eq!(cells(b.id.clone()).await, 0, "created again, from nothing");
    // An update of an existing campaign keeps its results.
    let mut deltas = CellDeltas::new();
    deltas.insert(
        (
            b.id.clone(),
            CellKey {
                day: "2026-11-22".parse().unwrap(),
                store: "s1".into(),
                variant: "-".into(),
            },
        ),
        Cell {
            triggered: 1,
            ..Cell::default()
        },
    );
    let mut c = commit("cells-user", 2, None, &["cells-3"]);
    c.cells = with_rollups(deltas);
    apply(store.as_ref(), &c).await;
    let e6 = AuditEntry::new(noon(), &maria, "campaign.update");
    assert!(
        store
            .apply_config(&[ConfigChange::PutCampaign(b.clone())], &e6)
            .await
            .unwrap()
    );
    assert_eq!(cells(b.id.clone()).await, 3, "an update keeps them");
}

/// A coupon pool: an upload is all or nothing (a code already in any pool refuses the whole
/// file; a dry run writes nothing); 50 users race for 30 codes, each picking one of the
/// free ones and committing its send with it as the engine does, so exactly 30 sends go
/// out with 30 different codes and the other 20 find the pool empty; a code is redeemed
/// once (the outcome logged against its delivery for its user), a second time answers
/// when and for which order; an erasure leaves the code issued and redeemable (for its
/// offer) but tied to no one.
async fn coupon_codes_are_given_once_under_concurrency_redeemed_once_and_unlinked_by_erasure(
    store: Arc<dyn StateStore>,
) {
    use nearcast_core::coupon::{CouponCounts, CouponIssue, Redemption, Upload};
    let maria = Actor {
        name: "maria".into(),
        role: Role::Editor,
    };
    let rainy = id("rainy");
    let codes: Vec<String> = (0..30).map(|i| format!("RAIN-{i:03}")).collect();
    let entry = AuditEntry::new(noon(), &maria, "coupons.upload").target(&rainy);
    assert_eq!(
        store
            .add_coupons(&rainy, &codes, Some(&entry))
            .await
            .unwrap(),
        Upload::Added(30)
    );
    assert_eq!(
        store.audit_log(None, 10).await.unwrap()[0].action,
        "coupons.upload"
    );
    let counts = |total, issued, redeemed| CouponCounts {
        total,
        issued,
        redeemed,
    };
    assert_eq!(store.coupon_counts(&rainy).await.unwrap(), counts(30, 0, 0));
    // A file with one code already in a pool adds nothing; a dry run writes nothing.
    let again = vec!["NEW-1".to_string(), "RAIN-005".to_string()];
    assert_eq!(
        store
            .add_coupons(&id("sunny"), &again, Some(&entry))
            .await
            .unwrap(),
        Upload::Existing(vec!["RAIN-005".into()])
    );
    assert_eq!(
        store
            .add_coupons(&id("sunny"), &again[..1], None)
            .await
            .unwrap(),
        Upload::Added(1)
    );
    assert_eq!(
        store.coupon_counts(&id("sunny")).await.unwrap(),
        counts(0, 0, 0)
    );
    assert_eq!(
        store.redeem_coupon("NEW-1", noon(), None).await.unwrap(),
        Redemption::Unknown
    );

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let rainy = rainy.clone();
            tokio::spawn(async move {
                let user = format!("u{i}");
                for attempt in 0..200u64 {
                    let free = store.free_coupons(&rainy, 16).await.unwrap();
                    if free.is_empty() {
                        return (user, None);
                    }
                    let code = free[(i as u64 * 7 + attempt) as usize % free.len()].clone();
                    let mut c = sent(&user, 0, Some(state("a")), &["e1"]);
                    c.pushes[0].coupon = Some(code.clone());
                    c.coupons.push(CouponIssue {
                        campaign_id: rainy.clone(),
                        code: code.clone(),
                        delivery_id: c.pushes[0].delivery_id.clone(),
                        offer_id: id("o1"),
                    });
                    match store.commit(&c).await.unwrap() {
                        CommitOutcome::Applied => return (user, Some(code)),
                        CommitOutcome::CouponTaken(c) => assert_eq!(c, rainy),
                        other => panic!("{user}: unexpected {other:?}"),
                    }
                }
                panic!("{user}: no code after 200 picks")
            })
        })
        .collect();
    let mut given = std::collections::BTreeMap::new();
    let mut empty = 0;
    for t in tasks {
        match t.await.unwrap() {
            (u, Some(code)) => {
                assert!(
                    given.insert(code.clone(), u).is_none(),
                    "{code} given twice"
                );
            }
            (u, None) => {
                empty += 1;
                // A send that found no code wrote nothing.
                assert_eq!(load(&*store, &u).await.version, 0, "{u}");
            }
        }
    }
    assert_eq!((given.len(), empty), (30, 20));
    assert_eq!(given.keys().cloned().collect::<Vec<_>>(), codes);
    assert!(store.free_coupons(&rainy, 16).await.unwrap().is_empty());
    assert_eq!(
        store.coupon_counts(&rainy).await.unwrap(),
        counts(30, 30, 0)
    );
    let deliveries = store.deliveries().await.unwrap();
    assert_eq!(deliveries.len(), 30);
    for d in &deliveries {
        let code = d.push.coupon.as_deref().unwrap();
        assert_eq!(given[code], d.push.user_id.as_str());
    }

    // Redeemed once; the outcome is logged for the user, against the delivery.
    let (code, user) = given
        .iter()
        .next()
        .map(|(c, u)| (c.clone(), u.clone()))
        .unwrap();
    let at = noon() + chrono::Duration::hours(2);
    assert_eq!(
        store
            .redeem_coupon(&code, at, Some("order-1"))
            .await
            .unwrap(),
        Redemption::Redeemed {
            campaign_id: rainy.clone(),
            offer_id: Some(id("o1")),
            delivery_id: Some(format!("d-{user}-e1")),
            user_id: Some(id(&user)),
        }
    );
    let outcomes = store.user_data(&id(&user)).await.unwrap().outcomes;
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].kind, OutcomeKind::Redeemed);
    assert_eq!(outcomes[0].delivery_id, Some(format!("d-{user}-e1")));
    assert_eq!(
        outcomes[0].event_id,
        nearcast_core::coupon::redemption_event_id(&code)
    );
    assert_eq!(
        store
            .redeem_coupon(&code, at, Some("order-2"))
            .await
            .unwrap(),
        Redemption::AlreadyRedeemed {
            redeemed_at: at,
            order_id: Some("order-1".into()),
            offer_id: Some(id("o1")),
            delivery_id: Some(format!("d-{user}-e1")),
            user_id: Some(id(&user)),
        }
    );
    assert_eq!(
        store.coupon_counts(&rainy).await.unwrap(),
        counts(30, 30, 1)
    );
    assert_eq!(store.user_data(&id(&user)).await.unwrap().outcomes.len(), 1);

    // A code in a pool but never sent.
    let sunny = id("sunny");
    let spare = vec!["SUN-1".to_string()];
    let entry = AuditEntry::new(
        noon() + chrono::Duration::minutes(1),
        &maria,
        "coupons.upload",
    );
    store
        .add_coupons(&sunny, &spare, Some(&entry))
        .await
        .unwrap();
    assert_eq!(
        store.redeem_coupon("SUN-1", at, None).await.unwrap(),
        Redemption::NotIssued
    );

    // Erased: the code stays issued (never given again) and redeemable, tied to no one.
    let (code, user) = given
        .iter()
        .nth(1)
        .map(|(c, u)| (c.clone(), u.clone()))
        .unwrap();
    store.erase_user(&id(&user)).await.unwrap();
    assert!(store.free_coupons(&rainy, 16).await.unwrap().is_empty());
    assert_eq!(
        store.redeem_coupon(&code, at, None).await.unwrap(),
        Redemption::Redeemed {
            campaign_id: rainy.clone(),
            offer_id: Some(id("o1")),
            delivery_id: None,
            user_id: None,
        }
    );
    assert_eq!(
        store.user_data(&id(&user)).await.unwrap(),
        Default::default()
    );
    assert!(
        store
            .outcomes()
            .await
            .unwrap()
            .iter()
            .all(|o| o.user_id.as_str() != user)
    );
}

/// A campaign's cells, committed over five months by many commits (each cell also added to
/// its day's roll-up and its store's month), read back for any range: the breakdown by
/// store (months from the month cells, days added or taken away from the day cells)
/// equals the same breakdown of the day cells themselves, revenue included, and the day
/// roll-ups equal the day cells summed per day; across month and year ends, and with open
/// ends.
async fn results_by_store_read_from_months_and_end_days_equal_the_sum_of_the_days(
    store: Arc<dyn StateStore>,
) {
    use nearcast_core::campaign_results::{
        By, Cell, CellDeltas, CellKey, CellLevel, Cells, store_cells, summarise, with_rollups,
    };
    let campaign = id("c-results");
    let day0: chrono::NaiveDate = "2026-10-20".parse().unwrap();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut days = Cells::new();
    for k in 0..40 {
        let mut deltas = CellDeltas::new();
        for _ in 0..8 {
            let key = CellKey {
                day: day0 + chrono::Duration::days(next(130) as i64),
                store: format!("s{}", next(4)),
                variant: if next(2) == 0 { "a" } else { "b" }.into(),
            };
            let mut cell = Cell {
                triggered: 1,
                ..Cell::default()
            };
            if next(3) == 0 {
                cell.treated.n = 1;
                cell.treated.purchased = next(2);
                if cell.treated.purchased == 1 {
                    // Quarters: sums exact in binary, so any order adds up the same.
                    let x = (1 + next(40)) as f64 * 0.25;
                    let m = cell.treated.revenue.entry("EUR".into()).or_default();
                    m.sum = x;
                    m.sum_sq = x * x;
                }
            } else {
                *cell.suppressed.entry("capped".into()).or_default() += 1;
            }
            days.entry(key.clone()).or_default().add(&cell);
            deltas
                .entry((campaign.clone(), key))
                .or_default()
                .add(&cell);
        }
        let mut c = commit("results-user", 0, None, &[&format!("r{k}")]);
        c.cells = with_rollups(deltas);
        apply(store.as_ref(), &c).await;
    }
    let kept = store
        .campaign_cells(&campaign, CellLevel::StoreDays, None, None)
        .await
        .unwrap();
    assert_eq!(kept, days, "the day cells are what was added");
    let d = |n: i64| Some(day0 + chrono::Duration::days(n));
    let ranges = [
        (None, None),
        (d(0), d(129)),
        (d(12), d(41)), // 2026-11-01..30: one whole month
        (d(13), d(40)), // inside November: days only
        (d(5), d(100)), // ragged ends: October less days, November to January
        (d(13), d(42)), // November less its first day, and December's first
        (d(28), d(40)), // the end of November: its days
        (d(60), None),
        (None, d(75)),
        (d(72), d(73)), // across the year's end
        (d(200), d(300)),
    ];
    for (from, to) in ranges {
        let by_store = store_cells(store.as_ref(), &campaign, from, to)
            .await
            .unwrap();
        let got = summarise(&by_store, from, to, Some(By::Store));
        let want = summarise(&days, from, to, Some(By::Store));
        assert_eq!(got.rows, want.rows, "by store, {from:?}..{to:?}");
        assert_eq!(got.all, want.all, "all, {from:?}..{to:?}");
        let rollups = store
            .campaign_cells(&campaign, CellLevel::Days, from, to)
            .await
            .unwrap();
        assert!(rollups.keys().all(|k| k.store == "*"));
        assert_eq!(
            summarise(&rollups, from, to, Some(By::Day)).rows,
            summarise(&days, from, to, Some(By::Day)).rows,
            "by day, {from:?}..{to:?}"
        );
    }
    // Month cells are keyed by their months' first days, one per store, month and variant.
    let months = store
        .campaign_cells(&campaign, CellLevel::StoreMonths, None, None)
        .await
        .unwrap();
    assert!(months.keys().all(|k| chrono::Datelike::day(&k.day) == 1));
    assert!(months.len() <= 4 * 6 * 2 && months.len() >= 4 * 5);
}
