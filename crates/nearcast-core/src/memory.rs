//! In-memory port implementations: the reference the store contract suite runs against,
//! and fakes for tests (`InMemoryStateStore`, `RecordingNotifier`).

use crate::audit::{AuditEntry, ConfigChange};
use crate::campaign::Campaign;
use crate::config::{CapPolicy, Offer, Store};
use crate::coupon::{CouponCounts, Redemption, Upload, redemption_event_id};
use crate::decision::{Decision, Push};
use crate::ids::Id;
use crate::ports::{
    BoxFuture, Commit, CommitOutcome, DeliveryRecord, DeliveryStatus, Erasure, EventResult,
    KeptEvent, Notifier, NotifyError, OutcomeRecord, StateStore, StoreError, UserData, UserLogSink,
    UserRecord, erasure_pseudonym, group_by_user,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    users: HashMap<Id, UserRecord>,
    seen: HashMap<(Id, Id), EventResult>,
    deliveries: Vec<DeliveryRecord>,
    /// Delivery id -> the claim it is `sending` under.
    claims: HashMap<String, String>,
    decisions: Vec<Decision>,
    outcomes: Vec<OutcomeRecord>,
    stores: BTreeMap<Id, Store>,
    offers: BTreeMap<Id, Offer>,
    campaigns: BTreeMap<Id, Campaign>,
    /// Campaign id -> pushes sent, as budgets count them.
    campaign_sends: HashMap<Id, u64>,
    policy: Option<CapPolicy>,
    /// The audit log, by entry id.
    audit: BTreeMap<String, AuditEntry>,
    /// Coupon codes, by code.
    coupons: HashMap<String, CouponRow>,
    /// Codes uploaded so far (the order of a pool).
    coupon_seq: u64,
    /// Erasure pseudonyms, with when.
    erased: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// Presence webhook messages not yet delivered, in commit order.
    webhooks: Vec<crate::webhook::WebhookRecord>,
    /// Dead letters, in order of death.
    dead_webhooks: Vec<crate::webhook::WebhookRecord>,
    /// Campaigns' result cells.
    cells: BTreeMap<
        (
            Id,
            crate::campaign_results::CellLevel,
            crate::campaign_results::CellKey,
        ),
        crate::campaign_results::Cell,
    >,
}

struct CouponRow {
    campaign: Id,
    seq: u64,
    issued: bool,
    delivery_id: Option<String>,
    user_id: Option<Id>,
    offer_id: Option<Id>,
    redeemed_at: Option<chrono::DateTime<chrono::Utc>>,
    order_id: Option<String>,
}

/// A state store in memory, with the same atomicity as the durable ones (one lock).
#[derive(Default)]
pub struct InMemoryStateStore {
    inner: Mutex<Inner>,
}

impl InMemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("store lock"))
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl StateStore for InMemoryStateStore {
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        ready(Ok(
            self.with(|i| i.users.get(user).cloned().unwrap_or_default())
        ))
    }

    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut events: Vec<KeptEvent> = i
                .seen
                .iter()
                .filter(|((u, _), _)| u == user)
                .map(|((_, e), r)| KeptEvent {
                    event_id: e.clone(),
                    result: r.clone(),
                })
                .collect();
            events.sort_by(|a, b| a.event_id.cmp(&b.event_id));
            UserData {
                profile: i.users.get(user).map(|r| r.state.clone()),
                events,
                decisions: i
                    .decisions
                    .iter()
                    .filter(|d| &d.user_id == user)
                    .cloned()
                    .collect(),
                deliveries: i
                    .deliveries
                    .iter()
                    .filter(|d| &d.push.user_id == user)
                    .map(|d| DeliveryRecord {
                        push: Push {
                            token: String::new(),
                            ..d.push.clone()
                        },
                        status: d.status,
                    })
                    .collect(),
                outcomes: i
                    .outcomes
                    .iter()
                    .filter(|o| &o.user_id == user)
                    .cloned()
                    .collect(),
                webhooks: i
                    .webhooks
                    .iter()
                    .chain(&i.dead_webhooks)
                    .filter(|w| &w.message.user_id == user)
                    .cloned()
                    .collect(),
            }
        })))
    }

    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| {
            !i.users.contains_key(user) && i.erased.contains_key(&erasure_pseudonym(user))
        })))
    }

    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>> {
        ready(Ok(self.with(|i| {
            i.seen.get(&(user.clone(), event.clone())).cloned()
        })))
    }

    fn commit<'a>(&'a self, c: &'a Commit) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        ready(Ok(self.with(|i| {
            let dups: Vec<(Id, EventResult)> = c
                .events
                .iter()
                .filter_map(|(e, _)| {
                    i.seen
                        .get(&(c.user_id.clone(), e.clone()))
                        .map(|r| (e.clone(), r.clone()))
                })
                .collect();
            if !dups.is_empty() {
                return CommitOutcome::Duplicates(dups);
            }
            let current = i.users.get(&c.user_id).map_or(0, |r| r.version);
            if c.state.is_some() && current != c.expected_version {
                return CommitOutcome::Conflict;
            }
            let mut spend: HashMap<&Id, (u64, u64)> = HashMap::new();
            for (id, budget) in &c.budgets {
                let e = spend.entry(id).or_insert((0, *budget));
                e.0 += 1;
            }
            for (id, (n, budget)) in &spend {
                if i.campaign_sends.get(*id).copied().unwrap_or(0) + n > *budget {
                    return CommitOutcome::BudgetSpent((*id).clone());
                }
            }
            for c in &c.coupons {
                if i.coupons.get(&c.code).is_none_or(|r| r.issued) {
                    return CommitOutcome::CouponTaken(c.campaign_id.clone());
                }
            }
            for (id, (n, _)) in spend {
                *i.campaign_sends.entry(id.clone()).or_insert(0) += n;
            }
            for issue in &c.coupons {
                let row = i.coupons.get_mut(&issue.code).expect("checked above");
                row.issued = true;
                row.delivery_id = Some(issue.delivery_id.clone());
                row.user_id = Some(c.user_id.clone());
                row.offer_id = Some(issue.offer_id.clone());
            }
            if let Some(state) = &c.state {
                i.users.insert(
                    c.user_id.clone(),
                    UserRecord {
                        state: state.clone(),
                        version: current + 1,
                    },
                );
            }
            for (e, r) in &c.events {
                i.seen.insert((c.user_id.clone(), e.clone()), r.clone());
            }
            i.decisions.extend(c.decisions.iter().cloned());
            i.outcomes.extend(c.outcomes.iter().cloned());
            crate::campaign_results::apply(&mut i.cells, &c.cells);
            for p in &c.pushes {
                i.deliveries.push(DeliveryRecord {
                    push: p.clone(),
                    status: DeliveryStatus::Pending,
                });
            }
            for m in &c.webhooks {
                i.webhooks.push(crate::webhook::WebhookRecord::new(
                    m.clone(),
                    chrono::DateTime::UNIX_EPOCH,
                ));
            }
            CommitOutcome::Applied
        })))
    }

    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| {
            let Some(d) = i
                .deliveries
                .iter_mut()
                .find(|d| d.push.delivery_id == id && &d.push.user_id == user)
            else {
                return false;
            };
            match d.status {
                DeliveryStatus::Pending => {
                    d.status = DeliveryStatus::Sending;
                    i.claims.insert(id.to_string(), claim.to_string());
                    true
                }
                DeliveryStatus::Sending => i.claims.get(id).is_some_and(|c| c == claim),
                _ => false,
            }
        })))
    }

    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| {
            match i
                .deliveries
                .iter_mut()
                .find(|d| d.push.delivery_id == id && &d.push.user_id == user)
            {
                Some(d) if d.status == DeliveryStatus::Sending => {
                    d.status = to;
                    true
                }
                _ => false,
            }
        })))
    }

    fn unfinished_erasures(
        &self,
        _before: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>> {
        // Erasure is one transaction here: it never stops halfway.
        ready(Ok(Vec::new()))
    }

    fn settle_stale_claims(
        &self,
        _lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        // Senders live in the same process as this store: none vanishes and leaves it.
        ready(Ok(0))
    }

    fn pending_deliveries(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut v: Vec<Push> = i
                .deliveries
                .iter()
                .filter(|d| d.status == DeliveryStatus::Pending && d.push.at <= before)
                .map(|d| Push {
                    token: String::new(),
                    ..d.push.clone()
                })
                .collect();
            v.sort_by_key(|p| p.at);
            v.truncate(limit);
            v
        })))
    }

    fn due_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut v: Vec<_> = i
                .webhooks
                .iter()
                .filter(|w| w.next_at <= now)
                .cloned()
                .collect();
            v.sort_by_key(|w| w.next_at);
            v.truncate(limit);
            v
        })))
    }

    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| {
            match i
                .webhooks
                .iter_mut()
                .find(|w| w.message.id == id && &w.message.user_id == user)
            {
                Some(w) if w.attempts == attempts => {
                    w.attempts += 1;
                    w.next_at = until;
                    true
                }
                _ => false,
            }
        })))
    }

    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: crate::webhook::WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let _ = user;
        ready(Ok(self.with(|i| {
            let Inner {
                webhooks,
                dead_webhooks,
                ..
            } = i;
            crate::webhook::settle_in(webhooks, dead_webhooks, id, outcome, chrono::Utc::now());
        })))
    }

    fn dead_webhooks(
        &self,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<crate::webhook::WebhookRecord>, StoreError>> {
        ready(Ok(self.with(|i| {
            i.dead_webhooks.iter().take(limit).cloned().collect()
        })))
    }

    fn redrive_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        ready(Ok(self.with(|i| {
            let dead = std::mem::take(&mut i.dead_webhooks);
            let n = dead.len();
            i.webhooks.extend(
                dead.into_iter()
                    .map(|w| crate::webhook::WebhookRecord::new(w.message, now)),
            );
            n
        })))
    }

    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut n = 0u64;
            i.erased.insert(erasure_pseudonym(user), chrono::Utc::now());
            let endpoint = i.users.remove(user).and_then(|r| {
                n += 1;
                r.state.push.and_then(|p| p.endpoint)
            });
            let before = i.seen.len();
            i.seen.retain(|(u, _), _| u != user);
            n += (before - i.seen.len()) as u64;
            let before = i.deliveries.len();
            let claims = &mut i.claims;
            i.deliveries.retain(|d| {
                let keep = &d.push.user_id != user;
                if !keep {
                    claims.remove(&d.push.delivery_id);
                }
                keep
            });
            n += (before - i.deliveries.len()) as u64;
            let before = i.decisions.len();
            i.decisions.retain(|d| &d.user_id != user);
            n += (before - i.decisions.len()) as u64;
            let before = i.outcomes.len();
            i.outcomes.retain(|o| &o.user_id != user);
            n += (before - i.outcomes.len()) as u64;
            let before = i.webhooks.len() + i.dead_webhooks.len();
            i.webhooks.retain(|w| &w.message.user_id != user);
            i.dead_webhooks.retain(|w| &w.message.user_id != user);
            n += (before - i.webhooks.len() - i.dead_webhooks.len()) as u64;
            // The codes stay issued (never reused) but no longer lead to the person.
            for row in i.coupons.values_mut() {
                if row.user_id.as_ref() == Some(user) {
                    row.user_id = None;
                    row.delivery_id = None;
                    n += 1;
                }
            }
            Erasure {
                records: n,
                endpoint,
            }
        })))
    }

    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>> {
        ready(Ok(self.with(|i| i.stores.values().cloned().collect())))
    }

    fn put_store<'a>(&'a self, s: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|i| i.stores.insert(s.id.clone(), s.clone()));
        ready(Ok(()))
    }

    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| i.stores.remove(id).is_some())))
    }

    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>> {
        ready(Ok(self.with(|i| i.offers.values().cloned().collect())))
    }

    fn put_offer<'a>(&'a self, o: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|i| i.offers.insert(o.id.clone(), o.clone()));
        ready(Ok(()))
    }

    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| i.offers.remove(id).is_some())))
    }

    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>> {
        ready(Ok(self.with(|i| i.campaigns.values().cloned().collect())))
    }

    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>> {
        ready(Ok(
            self.with(|i| i.campaign_sends.get(id).copied().unwrap_or(0))
        ))
    }

    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Upload, StoreError>> {
        ready(Ok(self.with(|i| {
            let existing: Vec<String> = codes
                .iter()
                .filter(|c| i.coupons.contains_key(*c))
                .cloned()
                .collect();
            if !existing.is_empty() {
                return Upload::Existing(existing);
            }
            let Some(audit) = audit else {
                return Upload::Added(codes.len() as u64);
            };
            for code in codes {
                i.coupon_seq += 1;
                i.coupons.insert(
                    code.clone(),
                    CouponRow {
                        campaign: campaign.clone(),
                        seq: i.coupon_seq,
                        issued: false,
                        delivery_id: None,
                        user_id: None,
                        offer_id: None,
                        redeemed_at: None,
                        order_id: None,
                    },
                );
            }
            i.audit.insert(audit.id.clone(), audit.clone());
            Upload::Added(codes.len() as u64)
        })))
    }

    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut free: Vec<(u64, &String)> = i
                .coupons
                .iter()
                .filter(|(_, r)| &r.campaign == campaign && !r.issued)
                .map(|(c, r)| (r.seq, c))
                .collect();
            free.sort_unstable();
            free.into_iter()
                .take(limit)
                .map(|(_, c)| c.clone())
                .collect()
        })))
    }

    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<CouponCounts, StoreError>> {
        ready(Ok(self.with(|i| {
            let mut n = CouponCounts::default();
            for r in i.coupons.values().filter(|r| &r.campaign == campaign) {
                n.total += 1;
                n.issued += u64::from(r.issued);
                n.redeemed += u64::from(r.redeemed_at.is_some());
            }
            n
        })))
    }

    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: chrono::DateTime<chrono::Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Redemption, StoreError>> {
        ready(Ok(self.with(|i| {
            let Some(row) = i.coupons.get_mut(code) else {
                return Redemption::Unknown;
            };
            if let Some(t) = row.redeemed_at {
                return Redemption::AlreadyRedeemed {
                    redeemed_at: t,
                    order_id: row.order_id.clone(),
                    offer_id: row.offer_id.clone(),
                    delivery_id: row.delivery_id.clone(),
                    user_id: row.user_id.clone(),
                };
            }
            if !row.issued {
                return Redemption::NotIssued;
            }
            row.redeemed_at = Some(at);
            row.order_id = order_id.map(str::to_string);
            let r = Redemption::Redeemed {
                campaign_id: row.campaign.clone(),
                offer_id: row.offer_id.clone(),
                delivery_id: row.delivery_id.clone(),
                user_id: row.user_id.clone(),
            };
            if let Some(user) = row.user_id.clone() {
                i.outcomes.push(OutcomeRecord {
                    detail: Default::default(),
                    event_id: redemption_event_id(code),
                    user_id: user,
                    at,
                    kind: crate::ports::OutcomeKind::Redeemed,
                    offer_id: row.offer_id.clone(),
                    category: None,
                    delivery_id: row.delivery_id.clone(),
                });
            }
            r
        })))
    }

    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        ready(Ok(self.with(|i| i.policy.clone())))
    }

    fn put_policy<'a>(&'a self, p: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>> {
        self.with(|i| i.policy = Some(p.clone()));
        ready(Ok(()))
    }

    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(Ok(self.with(|i| {
            // Check every delete first: all or nothing, under the one lock.
            let (mut stores, mut offers) = (i.stores.clone(), i.offers.clone());
            let mut campaigns = i.campaigns.clone();
            for c in changes {
                let found = match c {
                    ConfigChange::DeleteStore(id) => stores.remove(id).is_some(),
                    ConfigChange::DeleteOffer(id) => offers.remove(id).is_some(),
                    ConfigChange::DeleteCampaign(id) => campaigns.remove(id).is_some(),
                    ConfigChange::PutCampaign(c) => {
                        campaigns.insert(c.id.clone(), c.clone());
                        true
                    }
                    ConfigChange::PutStore(s) => {
                        stores.insert(s.id.clone(), s.clone());
                        true
                    }
                    ConfigChange::PutOffer(o) => {
                        offers.insert(o.id.clone(), o.clone());
                        true
                    }
                    ConfigChange::PutPolicy(_) => true,
                };
                if !found {
                    return false;
                }
            }
            for c in changes {
                if let ConfigChange::PutPolicy(p) = c {
                    i.policy = Some(p.clone());
                }
            }
            // A deleted campaign's results go with it, and a campaign created (none under
            // its id) starts from none, whatever a late commit of a deleted namesake left.
            for c in changes {
                match c {
                    ConfigChange::DeleteCampaign(id) => i.cells.retain(|(c, _, _), _| c != id),
                    ConfigChange::PutCampaign(cp) if !i.campaigns.contains_key(&cp.id) => {
                        i.cells.retain(|(c, _, _), _| c != &cp.id);
                    }
                    _ => {}
                }
            }
            i.stores = stores;
            i.offers = offers;
            i.campaigns = campaigns;
            i.audit.insert(audit.id.clone(), audit.clone());
            true
        })))
    }

    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        ready(Ok(self.with(|i| {
            i.audit
                .values()
                .rev()
                .filter(|e| before.is_none_or(|b| e.id.as_str() < b))
                .take(limit)
                .cloned()
                .collect()
        })))
    }

    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>> {
        ready(Ok(self.with(|i| i.deliveries.clone())))
    }

    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>> {
        ready(Ok(self.with(|i| i.decisions.clone())))
    }

    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>> {
        ready(Ok(self.with(|i| i.outcomes.clone())))
    }

    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: crate::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<crate::campaign_results::Cells, StoreError>> {
        ready(Ok(self.with(|i| {
            i.cells
                .iter()
                .filter(|((c, l, k), _)| {
                    c == campaign && *l == level && crate::campaign_results::in_range(k, from, to)
                })
                .map(|((_, _, k), v)| (k.clone(), v.clone()))
                .collect()
        })))
    }

    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let (decisions, outcomes) = self.with(|i| (i.decisions.clone(), i.outcomes.clone()));
        ready(
            group_by_user(decisions, outcomes)
                .into_iter()
                .try_for_each(sink),
        )
    }

    fn max_commit_events(&self) -> usize {
        usize::MAX
    }

    fn keeps_every_event_key(&self) -> bool {
        true
    }
}

/// A notifier that records what it was asked to send, and can be told to fail, before
/// sending (a refusal) or after (a lost answer: the push went out, the caller hears `e`).
#[derive(Default)]
pub struct RecordingNotifier {
    sent: Mutex<Vec<Push>>,
    fail: Mutex<Option<NotifyError>>,
    fail_after: Mutex<Option<NotifyError>>,
}

impl RecordingNotifier {
    /// A notifier that succeeds.
    pub fn new() -> Self {
        Self::default()
    }
    /// Pushes sent so far.
    pub fn sent(&self) -> Vec<Push> {
        self.sent.lock().expect("lock").clone()
    }
    /// Makes every later send fail with `e` (or succeed again with `None`).
    pub fn fail_with(&self, e: Option<NotifyError>) {
        *self.fail.lock().expect("lock") = e;
    }
    /// Makes every later send deliver the push and then answer `e` (or answer normally
    /// again with `None`): the platform got it, the answer was lost.
    pub fn fail_after_sending_with(&self, e: Option<NotifyError>) {
        *self.fail_after.lock().expect("lock") = e;
    }
}

impl Notifier for RecordingNotifier {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Result<(), NotifyError>> {
        let r = match self.fail.lock().expect("lock").clone() {
            Some(e) => Err(e),
            None => {
                self.sent.lock().expect("lock").push(push.clone());
                match self.fail_after.lock().expect("lock").clone() {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
        };
        ready(r)
    }
}
