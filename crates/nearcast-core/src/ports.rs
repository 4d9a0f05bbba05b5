//! The ports: small traits through which the core reaches storage, delivery, weather and
//! time. The embedded host implements them with SQLite and an outbox file, the AWS host with
//! DynamoDB and SNS. Futures are boxed so the traits stay object-safe (`Arc<dyn StateStore>`):
//! one allocation per call, negligible next to any real I/O.

use crate::audit::{AuditEntry, ConfigChange};
use crate::campaign::Campaign;
use crate::config::{CapPolicy, Offer, Store};
use crate::coupon::{CouponCounts, CouponIssue, Redemption, Upload};
use crate::decision::{Decision, Push};
use crate::ids::Id;
use crate::state::UserState;
use crate::weather::Weather;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// How long decisions and outcomes are kept by default (DynamoDB: a TTL from the commit;
/// SQLite: a prune by event time at start and every hour). Long enough for a quarter's
/// results and retraining.
pub const LOG_RETENTION_DAYS: i64 = 90;

/// How long idempotency keys (an event id with the answer given) are kept by default:
/// clients retry well within a week.
pub const IDEMPOTENCY_DAYS: i64 = 7;

/// How long what expires is kept: the hosts' configuration (`nearcast serve
/// --keep-idempotency-days --keep-log-days`; on AWS `NEARCAST_KEEP_IDEMPOTENCY_DAYS` and
/// `NEARCAST_KEEP_LOG_DAYS`), documented in docs/privacy.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Idempotency keys, from the time they were written.
    pub idempotency: chrono::Duration,
    /// Decisions, deliveries and outcomes, from the time they happened.
    pub logs: chrono::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            idempotency: chrono::Duration::days(IDEMPOTENCY_DAYS),
            logs: chrono::Duration::days(LOG_RETENTION_DAYS),
        }
    }
}

impl Retention {
    /// Retention of `idempotency_days` and `log_days` days.
    ///
    /// # Errors
    /// A period under 1 day or over 10 years, naming the setting.
    pub fn days(idempotency_days: i64, log_days: i64) -> Result<Self, crate::FieldError> {
        for (name, d) in [
            ("idempotency_days", idempotency_days),
            ("log_days", log_days),
        ] {
            if !(1..=3653).contains(&d) {
                return Err(crate::FieldError::new(
                    name,
                    format!("must be from 1 to 3653 days, got {d}"),
                ));
            }
        }
        Ok(Self {
            idempotency: chrono::Duration::days(idempotency_days),
            logs: chrono::Duration::days(log_days),
        })
    }
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A storage failure. All are worth retrying by the caller (the write did not happen).
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store unavailable: {0}")]
pub struct StoreError(pub String);

/// A user's state with its version, for optimistic concurrency.
#[derive(Debug, Clone, Default)]
pub struct UserRecord {
    /// The state.
    pub state: UserState,
    /// Version; 0 when the user has no record yet.
    pub version: u64,
}

/// What an accepted event answered, kept with its idempotency key so a retry gets the same
/// answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventResult {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The decision, for location events.
    pub decision: Option<Decision>,
}

impl EventResult {
    /// Whether this is a routine location fix's answer: it entered or left no fence, found
    /// no candidate offer and sent nothing. Such a fix only moved the presence track, and
    /// a store may let [`crate::state::UserState::recent`] alone tell its resends
    /// ([`StateStore::event_result`] then answers `None` for it).
    pub fn is_routine(&self) -> bool {
        self.kind == "location"
            && self.decision.as_ref().is_none_or(|d| {
                d.presence.is_empty()
                    && d.delivery_id.is_none()
                    && d.offer_id.is_none()
                    && d.store_id.is_none()
            })
    }

    /// The answer of a resent event found only in [`crate::state::UserState::recent`],
    /// whose first answer was not kept (a routine fix on a store that keeps no key for
    /// those): its type, without the decision.
    pub fn resent(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            decision: None,
        }
    }
}

/// A delivery's life: `pending` (committed with the decision) → `sending` (claimed by
/// exactly one sender: the engine right after the commit, or the outbox relay for a push
/// whose sender never came) → `sent`, `failed` or `unconfirmed`.
///
/// A claimed delivery is never sent again: push platforms cannot drop a repeat, so after a
/// claim Nearcast sends at most once, and before a claim the relay makes sure it is sent at
/// least once. A delivery left in `sending` (the process died between the claim and the
/// answer) counts like `unconfirmed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Recorded with the decision, not yet claimed by a sender.
    Pending,
    /// Claimed by one sender, which is sending it now.
    Sending,
    /// The notifier accepted it.
    Sent,
    /// The notifier refused it (or the user can no longer be sent it); the cap reservation
    /// was released.
    Failed,
    /// The request reached the platform but its answer did not come back (a timeout, a
    /// 5xx): it may have been delivered. The cap stays spent and it is never sent again.
    Unconfirmed,
}

impl DeliveryStatus {
    /// Its name in storage and in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Unconfirmed => "unconfirmed",
        }
    }

    /// The status named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "sending" => DeliveryStatus::Sending,
            "sent" => DeliveryStatus::Sent,
            "failed" => DeliveryStatus::Failed,
            "unconfirmed" => DeliveryStatus::Unconfirmed,
            _ => return None,
        })
    }
}

/// Everything a batch of one user's events changes, written atomically or not at all.
///
/// A batch costs one read (the user's record) and one atomic write, whatever its size.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The user.
    pub user_id: Id,
    /// Version read; with a new `state`, the commit fails with
    /// [`CommitOutcome::Conflict`] if it changed since.
    pub expected_version: u64,
    /// The user's next state; `None` when the events left it unchanged (then no version
    /// check is needed: the decisions were valid at the time of the read).
    pub state: Option<UserState>,
    /// Idempotency keys to record, each with the answer given; the commit fails with
    /// [`CommitOutcome::Duplicates`] if any was recorded before.
    pub events: Vec<(Id, EventResult)>,
    /// Decisions to log (results and training exports).
    pub decisions: Vec<Decision>,
    /// Pushes to record as pending deliveries.
    pub pushes: Vec<Push>,
    /// Outcomes to log (opens, redemptions, purchases), for results and training exports.
    pub outcomes: Vec<OutcomeRecord>,
    /// Budgets the pushes spend: (campaign, budget) once per push of a campaign with a
    /// budget. The store counts each campaign's sends in the same transaction and refuses
    /// the whole commit with [`CommitOutcome::BudgetSpent`] when a count would pass its
    /// budget.
    pub budgets: Vec<(Id, u64)>,
    /// Coupon codes the pushes carry, each assigned to its delivery in the same
    /// transaction on condition that it is still free; the whole commit is refused with
    /// [`CommitOutcome::CouponTaken`] when one is not.
    pub coupons: Vec<CouponIssue>,
    /// What the commit adds to campaigns' result cells ([`crate::campaign_results`]):
    /// (campaign, level, cell, counts to add), each cell once; added in the same
    /// transaction.
    pub cells: crate::campaign_results::LevelDeltas,
    /// Presence webhook messages to add to the outbox ([`crate::webhook`]): one per event
    /// that entered or left fences, when webhooks are on.
    pub webhooks: Vec<crate::webhook::WebhookMessage>,
}

/// What a logged outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A push was opened (`notification_opened`).
    Opened,
    /// An offer's coupon was redeemed (`coupon_redeemed`).
    Redeemed,
    /// Something was bought (`purchase`).
    Purchased,
}

/// One logged outcome of a user: what the join of [`crate::export`] attributes to decisions.
/// No product id and no place: only what attribution needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The event it came from.
    pub event_id: Id,
    /// User.
    pub user_id: Id,
    /// When it happened (device time, UTC).
    pub at: DateTime<Utc>,
    /// What happened.
    pub kind: OutcomeKind,
    /// Offer concerned (opened, redeemed).
    #[serde(default)]
    pub offer_id: Option<Id>,
    /// Category concerned (purchases; for opens and redemptions, the offer's).
    #[serde(default)]
    pub category: Option<String>,
    /// The delivery named by the app, if any.
    #[serde(default)]
    pub delivery_id: Option<String>,
    /// What a purchase or a redemption says about itself (all optional).
    #[serde(flatten)]
    pub detail: OutcomeDetail,
}

/// Where a purchase was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// At a till in a store.
    InStore,
    /// In a web shop or the app.
    Online,
    /// Ordered online, collected at a store.
    ClickAndCollect,
}

impl Channel {
    /// Its name in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InStore => "in_store",
            Channel::Online => "online",
            Channel::ClickAndCollect => "click_and_collect",
        }
    }

    /// From its name in events.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "in_store" => Channel::InStore,
            "online" => Channel::Online,
            "click_and_collect" => Channel::ClickAndCollect,
            _ => return None,
        })
    }
}

/// The details of a purchase (amount, currency, order, channel, store) or of a redemption
/// (its code): what revenue results and a till's reconciliation read. Every field is
/// optional; an amount always comes with its currency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OutcomeDetail {
    /// Amount paid, in `currency` (a decimal number, e.g. 12.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// ISO 4217 code of `amount` (`EUR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The retailer's order id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// Where it was bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The store it was bought at or collected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<Id>,
    /// The coupon code redeemed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Commit {
    /// An empty commit for `user` read at `expected_version`.
    pub fn new(user_id: Id, expected_version: u64) -> Self {
        Commit {
            user_id,
            expected_version,
            state: None,
            events: Vec::new(),
            decisions: Vec::new(),
            pushes: Vec::new(),
            outcomes: Vec::new(),
            budgets: Vec::new(),
            coupons: Vec::new(),
            cells: Vec::new(),
            webhooks: Vec::new(),
        }
    }
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// Written.
    Applied,
    /// Some event ids were applied before; here is what each answered then. Nothing written.
    Duplicates(Vec<(Id, EventResult)>),
    /// Someone else changed the user since the read. Nothing written; re-read and retry.
    Conflict,
    /// This campaign's budget would be passed. Nothing written; decide again without it.
    BudgetSpent(Id),
    /// A coupon code of this campaign was given out since it was picked. Nothing written;
    /// pick again.
    CouponTaken(Id),
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Erasure {
    /// Records deleted.
    pub records: u64,
    /// Push endpoint to delete at the platform, if one existed.
    pub endpoint: Option<String>,
}

/// How long an erasure is remembered, as a pseudonym of the erased user (never the id):
/// a late event for that user (a device retrying, an SQS message in flight or redriven from
/// the dead-letter queue, at most 4 + 14 days) then stores nothing unless it grants a
/// consent again. Past this, such an event is a new user.
pub const ERASURE_MEMORY_DAYS: i64 = 30;

/// The pseudonym an erasure is remembered by: `u-` and 16 bytes of HMAC-SHA256 under a
/// fixed key. It lets a store answer "was this id erased lately?" for an id it is given,
/// and nothing else: it cannot be turned back into the id, though whoever holds an id can
/// test it (docs/privacy.md).
pub fn erasure_pseudonym(user: &Id) -> String {
    crate::export::pseudonym(b"nearcast-erasure/1", user)
}

/// One idempotency key of a user, for the subject access export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeptEvent {
    /// The event id.
    pub event_id: Id,
    /// The answer given to it.
    pub result: EventResult,
}

/// Everything a store holds about one user (the subject access export): the profile, the
/// idempotency keys, the decisions, the deliveries and the outcomes, each oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserData {
    /// The profile (consents with their history fields, push target, tastes, purchases,
    /// fence presence, recent sends); `None` when there is none.
    pub profile: Option<UserState>,
    /// Idempotency keys with the answers given.
    pub events: Vec<KeptEvent>,
    /// Logged decisions.
    pub decisions: Vec<Decision>,
    /// Deliveries with their status.
    pub deliveries: Vec<DeliveryRecord>,
    /// Logged outcomes.
    pub outcomes: Vec<OutcomeRecord>,
    /// Presence webhook messages not yet delivered, and dead letters.
    #[serde(default)]
    pub webhooks: Vec<crate::webhook::WebhookRecord>,
}

/// A logged delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The push.
    pub push: Push,
    /// Its status.
    pub status: DeliveryStatus,
}

/// Durable state: users, idempotency keys, deliveries, decisions and configuration.
pub trait StateStore: Send + Sync {
    /// The user's state, or a default record with version 0.
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>>;
    /// Applies a commit atomically: idempotency keys, version check, state, decisions,
    /// deliveries, outcomes.
    fn commit<'a>(&'a self, commit: &'a Commit)
    -> BoxFuture<'a, Result<CommitOutcome, StoreError>>;
    /// The answer recorded with `user`'s event `event`'s idempotency key, if the store
    /// keeps one (a store may keep none for a routine fix: [`EventResult::is_routine`]).
    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>>;
    /// Claims `user`'s delivery `delivery_id` for one sender: moves it from `pending` to
    /// `sending` under `claim` (a token the sender made up), atomically. Answers `true` if
    /// it moved, or if it was already `sending` under the same `claim` (the sender retrying
    /// a claim whose answer was lost); `false` if another sender has it, it is finished, or
    /// it does not exist (erased). This is how exactly one sender gets each push.
    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Moves `user`'s claimed delivery from `sending` to `to` (`sent`, `failed`,
    /// `unconfirmed`), atomically; `false` if it was not `sending` (already finished: a
    /// retried move whose answer was lost).
    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Everything held about `user` ([`UserData`]): the subject access export.
    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>>;
    /// Whether `user` was erased within [`ERASURE_MEMORY_DAYS`] (looked up by
    /// [`erasure_pseudonym`]). Asked only about a user who has no profile.
    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Users whose erasure started at or before `before` and did not finish (a store whose
    /// erasure is not one transaction keeps a marker until it is done); empty for a store
    /// that erases atomically.
    fn unfinished_erasures(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>>;
    /// Deliveries still `pending` that were decided at or before `before`, oldest first, at
    /// most `limit` (the outbox relay). The pushes carry no token: the relay takes the
    /// user's current push target.
    fn pending_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>>;
    /// Settles claims whose sender vanished: every delivery still `sending` under a claim
    /// made more than `lease` ago (by the store's own clock) becomes `unconfirmed` (its cap
    /// stays spent and it is never sent again: the sender may or may not have pushed it
    /// before it died, and the push platform cannot be asked). Answers how many it
    /// settled. A store whose host settles claims otherwise (the embedded host, against
    /// its outbox at start) or never loses a sender (in memory) answers 0.
    fn settle_stale_claims(
        &self,
        lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Webhook messages due at `now` (not dead, `next_at <= now`), earliest first, at
    /// most `limit`.
    fn due_webhooks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>>;
    /// Leases `user`'s message `id` for one attempt: if it is still in the outbox with
    /// `attempts` attempts, counts one more and makes it due again at `until`, atomically;
    /// `false` if another relay took it first, or it was delivered, dead-lettered or
    /// erased.
    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Records what an attempt at `user`'s message `id` came to: delivered (it leaves the
    /// outbox), retry later, or dead. Nothing if it is no longer in the outbox (erased).
    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: crate::webhook::WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`StateStore::lease_webhook`] for several messages at once (a relay's pass), each
    /// `(user, id, attempts)`; answers whether each was leased, in order. A store may do
    /// them in one transaction; the default leases one by one.
    fn lease_webhooks<'a>(
        &'a self,
        leases: &'a [(Id, String, u32)],
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(leases.len());
            for (user, id, attempts) in leases {
                out.push(self.lease_webhook(user, id, *attempts, until).await?);
            }
            Ok(out)
        })
    }
    /// [`StateStore::settle_webhook`] for several messages at once, each `(user, id,
    /// outcome)`. A store may do them in one transaction; the default settles one by one.
    fn settle_webhooks<'a>(
        &'a self,
        settles: &'a [(Id, String, crate::webhook::WebhookOutcome)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            for (user, id, outcome) in settles {
                self.settle_webhook(user, id, outcome.clone()).await?;
            }
            Ok(())
        })
    }
    /// Dead letters, oldest death first, at most `limit`.
    fn dead_webhooks(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>>;
    /// Moves every dead letter back into the outbox with no attempts, due at `now`;
    /// answers how many.
    fn redrive_webhooks(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, StoreError>>;
    /// Deletes everything about a user: state, idempotency keys, decisions, deliveries,
    /// outcomes.
    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>>;
    /// All stores.
    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>>;
    /// Creates or replaces a store.
    fn put_store<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Deletes a store; false if it did not exist.
    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// All offers.
    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>>;
    /// Creates or replaces an offer.
    fn put_offer<'a>(&'a self, offer: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Deletes an offer; false if it did not exist.
    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// The defined campaigns, by id.
    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>>;
    /// How many pushes campaign `id` has sent, as its budget counts them.
    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Adds `codes` (valid, distinct) to campaign `campaign`'s coupon pool with the audit
    /// entry of the upload: all of them, or none when any code is in a pool already
    /// (answered). Without an entry (a dry run) it only checks. A store whose transactions are bounded (DynamoDB) checks first and
    /// writes in several transactions, the entry last; it says so in its documentation.
    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Upload, StoreError>>;
    /// Up to `limit` codes of the pool of `campaign` not given out yet, in upload order as
    /// far as the store keeps one.
    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;
    /// The counts of the pool of `campaign` (zero when it has none).
    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<CouponCounts, StoreError>>;
    /// Redeems `code` at `at`, atomically: only an issued code not redeemed before is
    /// redeemed, and then, when the code still names its user, a `redeemed` outcome is
    /// logged for them in the same write (event id [`crate::coupon::redemption_event_id`]).
    /// The redemption keeps `order_id`, so a retry whose first answer was lost can be told
    /// from a second use ([`Redemption::AlreadyRedeemed`] carries it).
    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: DateTime<Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Redemption, StoreError>>;
    /// The cap policy, if one was saved.
    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>>;
    /// Saves the cap policy.
    fn put_policy<'a>(&'a self, policy: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Applies configuration changes, in order, together with their audit entry: all of
    /// them and the entry, or nothing. Answers `false`, having applied nothing, when a
    /// delete names a store or offer that does not exist. A store whose transactions are
    /// bounded (DynamoDB: 100 items) applies a longer list in several transactions, in
    /// order, the entry with the last; it says so in its documentation.
    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// The audit log, newest first: at most `limit` entries, those with an id below
    /// `before` when given (the next page).
    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>>;
    /// Deliveries, oldest first (results, tests and the outbox relay).
    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>>;
    /// Logged decisions, oldest first (exports).
    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>>;
    /// Logged outcomes, oldest first (results and exports).
    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>>;
    /// A campaign's result cells of one `level` whose key's day is from `from` to `to`
    /// (inclusive; none: unbounded; a month's cell is keyed by the month's first day), as
    /// the commits added them up ([`crate::campaign_results`]): one range of the store's
    /// keys.
    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: crate::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<crate::campaign_results::Cells, StoreError>>;
    /// Walks the logs one user at a time (exports): `sink` gets every user with a logged
    /// decision or outcome exactly once, with both lists oldest first; users come in no
    /// particular order. A store reads a page of users at a time and never holds the whole
    /// log. An error from `sink` stops the walk and is returned.
    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Most events one commit may carry. A store with a transaction size limit (DynamoDB:
    /// 100 items) says so, and the engine commits a larger batch in several chunks; a store
    /// without one answers `usize::MAX`.
    fn max_commit_events(&self) -> usize;
    /// Whether the store keeps an idempotency key for every event, and so finds every
    /// resend at commit (memory, SQLite). A store that keeps none for routine fixes
    /// (DynamoDB, where a key is most of the cost of a fix) answers `false`, and the engine
    /// then keeps the user's last events in the profile ([`crate::state::RecentEvents`])
    /// and answers resends from there before deciding.
    fn keeps_every_event_key(&self) -> bool;
}

/// One user's logged decisions and outcomes, each oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct UserLog {
    /// The user.
    pub user_id: Id,
    /// Logged decisions.
    pub decisions: Vec<Decision>,
    /// Logged outcomes.
    pub outcomes: Vec<OutcomeRecord>,
}

/// What [`StateStore::user_logs`] hands each user's log to.
pub type UserLogSink<'s> = dyn FnMut(UserLog) -> Result<(), StoreError> + Send + 's;

/// Groups logs by user, each user's lists keeping their order (oldest first), users in
/// id order: the in-memory walk, and a reference for tests of the others.
pub fn group_by_user(decisions: Vec<Decision>, outcomes: Vec<OutcomeRecord>) -> Vec<UserLog> {
    use std::collections::BTreeMap;
    fn log_of<'m>(logs: &'m mut BTreeMap<Id, UserLog>, user: &Id) -> &'m mut UserLog {
        logs.entry(user.clone()).or_insert_with(|| UserLog {
            user_id: user.clone(),
            decisions: Vec::new(),
            outcomes: Vec::new(),
        })
    }
    let mut logs = BTreeMap::new();
    for d in decisions {
        log_of(&mut logs, &d.user_id).decisions.push(d);
    }
    for o in outcomes {
        log_of(&mut logs, &o.user_id).outcomes.push(o);
    }
    logs.into_values().collect()
}

/// A store that wraps another and changes some of its methods (a catalog refresh before
/// reads, a default policy, injected failures in tests). Every method passes through to
/// [`StoreLayer::wrapped`] unless the layer overrides it, and every `StoreLayer` is a
/// [`StateStore`], so a method added to the port reaches every wrapper without a line
/// in it.
pub trait StoreLayer: Send + Sync {
    /// The store underneath.
    fn wrapped(&self) -> &dyn StateStore;
    /// See [`StateStore::load_user`].
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        self.wrapped().load_user(user)
    }
    /// See [`StateStore::user_data`].
    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>> {
        self.wrapped().user_data(user)
    }
    /// See [`StateStore::erased_recently`].
    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().erased_recently(user)
    }
    /// See [`StateStore::event_result`].
    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>> {
        self.wrapped().event_result(user, event)
    }
    /// See [`StateStore::commit`].
    fn commit<'a>(
        &'a self,
        commit: &'a Commit,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        self.wrapped().commit(commit)
    }
    /// See [`StateStore::claim_delivery`].
    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().claim_delivery(user, delivery_id, claim)
    }
    /// See [`StateStore::finish_delivery`].
    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().finish_delivery(user, delivery_id, to)
    }
    /// See [`StateStore::unfinished_erasures`].
    fn unfinished_erasures(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>> {
        self.wrapped().unfinished_erasures(before)
    }
    /// See [`StateStore::pending_deliveries`].
    fn pending_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>> {
        self.wrapped().pending_deliveries(before, limit)
    }
    /// See [`StateStore::settle_stale_claims`].
    fn settle_stale_claims(
        &self,
        lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.wrapped().settle_stale_claims(lease)
    }
    /// See [`StateStore::due_webhooks`].
    fn due_webhooks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        self.wrapped().due_webhooks(now, limit)
    }
    /// See [`StateStore::lease_webhook`].
    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().lease_webhook(user, id, attempts, until)
    }
    /// See [`StateStore::settle_webhook`].
    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: crate::webhook::WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().settle_webhook(user, id, outcome)
    }
    /// See [`StateStore::dead_webhooks`].
    fn dead_webhooks(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        self.wrapped().dead_webhooks(limit)
    }
    /// See [`StateStore::redrive_webhooks`].
    fn redrive_webhooks(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.wrapped().redrive_webhooks(now)
    }
    /// See [`StateStore::erase_user`].
    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>> {
        self.wrapped().erase_user(user)
    }
    /// See [`StateStore::list_stores`].
    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>> {
        self.wrapped().list_stores()
    }
    /// See [`StateStore::put_store`].
    fn put_store<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().put_store(store)
    }
    /// See [`StateStore::delete_store`].
    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().delete_store(id)
    }
    /// See [`StateStore::list_offers`].
    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>> {
        self.wrapped().list_offers()
    }
    /// See [`StateStore::put_offer`].
    fn put_offer<'a>(&'a self, offer: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().put_offer(offer)
    }
    /// See [`StateStore::delete_offer`].
    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().delete_offer(id)
    }
    /// See [`StateStore::list_campaigns`].
    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>> {
        self.wrapped().list_campaigns()
    }
    /// See [`StateStore::campaign_sends`].
    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.wrapped().campaign_sends(id)
    }
    /// See [`StateStore::add_coupons`].
    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Upload, StoreError>> {
        self.wrapped().add_coupons(campaign, codes, audit)
    }
    /// See [`StateStore::free_coupons`].
    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        self.wrapped().free_coupons(campaign, limit)
    }
    /// See [`StateStore::coupon_counts`].
    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<CouponCounts, StoreError>> {
        self.wrapped().coupon_counts(campaign)
    }
    /// See [`StateStore::redeem_coupon`].
    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: DateTime<Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Redemption, StoreError>> {
        self.wrapped().redeem_coupon(code, at, order_id)
    }
    /// See [`StateStore::get_policy`].
    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        self.wrapped().get_policy()
    }
    /// See [`StateStore::put_policy`].
    fn put_policy<'a>(&'a self, policy: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().put_policy(policy)
    }
    /// See [`StateStore::apply_config`].
    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.wrapped().apply_config(changes, audit)
    }
    /// See [`StateStore::audit_log`].
    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        self.wrapped().audit_log(before, limit)
    }
    /// See [`StateStore::deliveries`].
    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>> {
        self.wrapped().deliveries()
    }
    /// See [`StateStore::decisions`].
    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>> {
        self.wrapped().decisions()
    }
    /// See [`StateStore::outcomes`].
    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>> {
        self.wrapped().outcomes()
    }
    /// See [`StateStore::campaign_cells`].
    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: crate::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<crate::campaign_results::Cells, StoreError>> {
        self.wrapped().campaign_cells(campaign, level, from, to)
    }
    /// See [`StateStore::user_logs`].
    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().user_logs(sink)
    }
    /// See [`StateStore::max_commit_events`].
    fn max_commit_events(&self) -> usize {
        self.wrapped().max_commit_events()
    }
    /// See [`StateStore::keeps_every_event_key`].
    fn keeps_every_event_key(&self) -> bool {
        self.wrapped().keeps_every_event_key()
    }
}

impl<L: StoreLayer> StateStore for L {
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        StoreLayer::load_user(self, user)
    }
    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>> {
        StoreLayer::user_data(self, user)
    }
    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::erased_recently(self, user)
    }
    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>> {
        StoreLayer::event_result(self, user, event)
    }
    fn commit<'a>(
        &'a self,
        commit: &'a Commit,
    ) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        StoreLayer::commit(self, commit)
    }
    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::claim_delivery(self, user, delivery_id, claim)
    }
    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::finish_delivery(self, user, delivery_id, to)
    }
    fn settle_stale_claims(
        &self,
        lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        StoreLayer::settle_stale_claims(self, lease)
    }
    fn pending_deliveries(
        &self,
        before: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>> {
        StoreLayer::pending_deliveries(self, before, limit)
    }
    fn unfinished_erasures(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>> {
        StoreLayer::unfinished_erasures(self, before)
    }
    fn due_webhooks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        StoreLayer::due_webhooks(self, now, limit)
    }
    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::lease_webhook(self, user, id, attempts, until)
    }
    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: crate::webhook::WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        StoreLayer::settle_webhook(self, user, id, outcome)
    }
    fn lease_webhooks<'a>(
        &'a self,
        leases: &'a [(Id, String, u32)],
        until: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        self.wrapped().lease_webhooks(leases, until)
    }
    fn settle_webhooks<'a>(
        &'a self,
        settles: &'a [(Id, String, crate::webhook::WebhookOutcome)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.wrapped().settle_webhooks(settles)
    }
    fn dead_webhooks(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        StoreLayer::dead_webhooks(self, limit)
    }
    fn redrive_webhooks(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<usize, StoreError>> {
        StoreLayer::redrive_webhooks(self, now)
    }
    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>> {
        StoreLayer::erase_user(self, user)
    }
    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>> {
        StoreLayer::list_stores(self)
    }
    fn put_store<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
        StoreLayer::put_store(self, store)
    }
    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::delete_store(self, id)
    }
    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>> {
        StoreLayer::list_offers(self)
    }
    fn put_offer<'a>(&'a self, offer: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>> {
        StoreLayer::put_offer(self, offer)
    }
    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::delete_offer(self, id)
    }
    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>> {
        StoreLayer::list_campaigns(self)
    }
    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>> {
        StoreLayer::campaign_sends(self, id)
    }
    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Upload, StoreError>> {
        StoreLayer::add_coupons(self, campaign, codes, audit)
    }
    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        StoreLayer::free_coupons(self, campaign, limit)
    }
    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<CouponCounts, StoreError>> {
        StoreLayer::coupon_counts(self, campaign)
    }
    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: DateTime<Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Redemption, StoreError>> {
        StoreLayer::redeem_coupon(self, code, at, order_id)
    }
    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        StoreLayer::get_policy(self)
    }
    fn put_policy<'a>(&'a self, policy: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>> {
        StoreLayer::put_policy(self, policy)
    }
    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        StoreLayer::apply_config(self, changes, audit)
    }
    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        StoreLayer::audit_log(self, before, limit)
    }
    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>> {
        StoreLayer::deliveries(self)
    }
    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>> {
        StoreLayer::decisions(self)
    }
    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>> {
        StoreLayer::outcomes(self)
    }
    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: crate::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<crate::campaign_results::Cells, StoreError>> {
        StoreLayer::campaign_cells(self, campaign, level, from, to)
    }
    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        StoreLayer::user_logs(self, sink)
    }
    fn max_commit_events(&self) -> usize {
        StoreLayer::max_commit_events(self)
    }
    fn keeps_every_event_key(&self) -> bool {
        StoreLayer::keeps_every_event_key(self)
    }
}

/// Why a push was not delivered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotifyError {
    /// Not delivered, worth retrying later: the platform refused the request (throttling)
    /// or it never reached the platform.
    #[error("delivery failed, retryable: {0}")]
    Retryable(String),
    /// The request may have reached the platform, but its answer was lost (a timeout, a
    /// 5xx, a connection reset after sending): it may have been delivered, so it must not
    /// be sent again and its cap stays spent.
    #[error("delivery unconfirmed: {0}")]
    Unconfirmed(String),
    /// The platform says the endpoint is gone; never use it again.
    #[error("push endpoint disabled")]
    EndpointDisabled,
    /// Refused for good (payload, configuration).
    #[error("delivery refused: {0}")]
    Permanent(String),
}

/// Delivers pushes.
pub trait Notifier: Send + Sync {
    /// Sends one push. Must be idempotent on `push.delivery_id` where the channel allows.
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Result<(), NotifyError>>;

    /// Registers a device token with the channel, returning its endpoint id where the
    /// channel has one (an SNS platform endpoint ARN). The default has none.
    fn register<'a>(
        &'a self,
        _platform: crate::event::Platform,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, NotifyError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Deletes an endpoint at the channel (erasure). The default has nothing to delete.
    fn forget<'a>(&'a self, _endpoint: &'a str) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Removes what the channel itself keeps about a user (erasure, after the store): the
    /// embedded outbox file drops the user's lines. Returns how many records went. The
    /// default (a platform such as SNS, which keeps nothing once the endpoint is deleted)
    /// has nothing to remove.
    fn erase_user<'a>(&'a self, _user: &'a Id) -> BoxFuture<'a, Result<u64, NotifyError>> {
        Box::pin(std::future::ready(Ok(0)))
    }
}

/// Weather at a place and time.
pub trait WeatherSource: Send + Sync {
    /// The weather, or `None` when unknown (offers with weather rules then do not run).
    fn weather(&self, lat: f64, lon: f64, at: DateTime<Utc>) -> BoxFuture<'_, Option<Weather>>;
}

/// The time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock set by hand (replays, tests). Cloning shares the time.
#[derive(Debug, Clone)]
pub struct ManualClock(std::sync::Arc<std::sync::Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock at `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        Self(std::sync::Arc::new(std::sync::Mutex::new(t)))
    }
    /// Sets the time.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

impl WeatherSource for crate::weather::TableWeather {
    fn weather(&self, _lat: f64, _lon: f64, at: DateTime<Utc>) -> BoxFuture<'_, Option<Weather>> {
        let w = self.at(at);
        Box::pin(async move { w })
    }
}
