//! The engine: runs the pure [`decision`](crate::decision) over the ports. Load the user,
//! decide, commit atomically (idempotency key + version check + state + decision + pending
//! delivery), then deliver. A conflicting concurrent commit makes it re-read and decide
//! again, so caps hold however many events race for one user (invariant 3), and the
//! idempotency key makes a retried event answer "duplicate" without a second push
//! (invariant 4).

use crate::FieldError;
use crate::audit::{Actor, AuditEntry, ConfigChange};
use crate::campaign::Campaign;
use crate::catalog::Catalog;
use crate::config::{CapPolicy, Offer, Store};
use crate::consent::{ConsentRecord, Consents, Purpose};
use crate::decision::{self, Decision, Inputs, Outcome, Push, apply_consent_effects};
use crate::event::{Batch, Event, EventKind};
use crate::ids::Id;
use crate::ports::{
    BoxFuture, Clock, Commit, CommitOutcome, DeliveryStatus, Erasure, EventResult, Notifier,
    NotifyError, StateStore, StoreError, WeatherSource,
};
use crate::ranker::Ranker;
use crate::webhook::WebhookMessage;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Attempts before a contended user's event gives up with a retryable error.
const MAX_ATTEMPTS: u32 = 32;

/// Engine failures, mapped to HTTP statuses by the API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input (4xx).
    #[error("{0}")]
    Invalid(FieldError),
    /// Not found (404).
    #[error("{0} not found")]
    NotFound(String),
    /// Storage failed; nothing was half-written; retry (503).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too much contention on one user; retry (503).
    #[error("too many concurrent updates for one user; retry")]
    Contention,
    /// A model artifact was refused (unreadable, corrupt, other feature schema); the model
    /// in service is unchanged (422).
    #[error("model not loaded, the current one stays in service: {0}")]
    Model(String),
}

/// Where the serving model comes from, to load it again on request (after a publish or a
/// rollback) without a restart.
pub trait ModelSource: Send + Sync {
    /// Loads the current model. A refused artifact is an error naming the cause.
    fn load(&self) -> BoxFuture<'_, Result<Arc<dyn Ranker>, String>>;
}

/// Where a host publishes its catalog after a configuration change, so that other
/// instances can start from it ([`crate::snapshot`]; on AWS an S3 object).
pub trait CatalogSink: Send + Sync {
    /// Publishes `catalog`. A failure is the cause; the change itself stands.
    fn publish(&self, catalog: Arc<Catalog>) -> BoxFuture<'_, Result<(), String>>;
}

/// The challenger: a second model scoring a stable share of users.
#[derive(Clone)]
pub struct Challenger {
    /// The model.
    pub ranker: Arc<dyn Ranker>,
    /// Share of users it scores, in [0, 1].
    pub share: f64,
}

/// Whether `user` is scored by a challenger with version `version` and share `share`: a
/// stable hash of both, so a user stays with one model for the challenger's whole life, on
/// every host (like the holdout draw, with another salt).
pub fn scored_by_challenger(user: &Id, version: &str, share: f64) -> bool {
    let h = crate::holdout::stable_hash(&["challenger", version, user.as_str()]);
    share > 0.0 && ((h >> 11) as f64 / (1u64 << 53) as f64) < share
}

/// Waits before retrying after a version conflict: a random delay that grows with the
/// attempt (full jitter), so events racing for one user spread out instead of colliding
/// again in lockstep.
async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, RandomState};
    let cap_us: u64 = (50u64 << attempt.min(8)).min(10_000);
    let r = RandomState::new().hash_one((attempt, std::time::SystemTime::now()));
    tokio::time::sleep(std::time::Duration::from_micros(r % (cap_us + 1))).await;
}

/// What an import did, or would do (a dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Stores new to the catalog.
    pub created: usize,
    /// Stores that replaced a different saved one.
    pub updated: usize,
    /// Stores equal to the saved ones (not written).
    pub unchanged: usize,
    /// Stores in the catalog afterwards.
    pub stores: usize,
}

/// A claim token for one delivery attempt: random, so two senders never share one.
/// A number in `0..n` (n > 0), different on every call: enough to spread concurrent picks.
fn pick(n: usize) -> usize {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(std::time::SystemTime::now()) % n as u64) as usize
}

fn claim_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = RandomState::new().hash_one(a);
    format!("{a:016x}{b:016x}")
}

/// Attempts of a store call that is safe to repeat, before its error is returned.
const STORE_ATTEMPTS: u32 = 4;

/// How long a claimed delivery may stay `sending` before
/// [`Engine::settle_stale_claims`] takes its sender for dead: 15 minutes, Lambda's longest
/// function timeout, so no live sender is ever overtaken.
pub const CLAIM_LEASE: chrono::Duration = chrono::Duration::minutes(15);

/// Runs `op` until it succeeds or [`STORE_ATTEMPTS`] attempts failed, with backoff between
/// them. Only for calls that are safe to repeat: a claim under the same token, a final
/// delivery status.
async fn retry_store<T, F>(mut op: impl FnMut() -> F) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt + 1 >= STORE_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "store call failed; retrying");
                backoff(attempt + 4).await;
                attempt += 1;
            }
        }
    }
}

/// A visit in progress (see [`Engine::presence`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Visit {
    /// The store whose fence the user is in.
    pub store_id: Id,
    /// When the visit began.
    pub since: DateTime<Utc>,
    /// The last fix that confirmed it.
    pub last_seen: DateTime<Utc>,
    /// Its length so far, minutes, from `since` to `last_seen`.
    pub minutes: i64,
    /// Whether the latest fixes were beyond the fence (the exit waits for confirmation).
    pub leaving: bool,
    /// When the visit's next dwell offer falls due, if one is still to come: a fix by then
    /// lets it fire ([`crate::decision::Decision::next_fix_by`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_dwell_at: Option<DateTime<Utc>>,
}

/// One event's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventReport {
    /// Position in the batch.
    pub index: usize,
    /// Event id.
    pub event_id: Id,
    /// `accepted` or `duplicate`.
    pub status: &'static str,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Decision of a location event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// The engine and its ports.
pub struct Engine {
    store: Arc<dyn StateStore>,
    notifier: Arc<dyn Notifier>,
    weather: Arc<dyn WeatherSource>,
    clock: Arc<dyn Clock>,
    /// The catalog in service: swapped whole, so readers never wait for a change.
    catalog: Arc<arc_swap::ArcSwap<Catalog>>,
    ranker: RwLock<Arc<dyn Ranker>>,
    challenger: RwLock<Option<Challenger>>,
    model_source: RwLock<Option<Arc<dyn ModelSource>>>,
    catalog_sink: RwLock<Option<Arc<dyn CatalogSink>>>,
    /// Serialises configuration changes (read, validate, write, rebuild).
    admin: Arc<tokio::sync::Mutex<()>>,
    /// Whether a compaction of the catalog's store changes is under way.
    compacting: Arc<std::sync::atomic::AtomicBool>,
    /// Whether presence changes go to the webhook outbox ([`crate::webhook`]).
    webhooks: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// Builds an engine and loads the catalog from the store.
    ///
    /// # Errors
    /// When the store fails or holds an invalid configuration.
    pub async fn new(
        store: Arc<dyn StateStore>,
        notifier: Arc<dyn Notifier>,
        weather: Arc<dyn WeatherSource>,
        clock: Arc<dyn Clock>,
        ranker: Arc<dyn Ranker>,
    ) -> Result<Self, EngineError> {
        Self::starting_from(store, notifier, weather, clock, ranker, None).await
    }

    /// As [`Engine::new`], starting from `catalog` when given (read from a snapshot the
    /// caller checked is current) instead of loading it from the store.
    ///
    /// # Errors
    /// Without a catalog, when the store fails or holds an invalid configuration.
    pub async fn starting_from(
        store: Arc<dyn StateStore>,
        notifier: Arc<dyn Notifier>,
        weather: Arc<dyn WeatherSource>,
        clock: Arc<dyn Clock>,
        ranker: Arc<dyn Ranker>,
        catalog: Option<Catalog>,
    ) -> Result<Self, EngineError> {
        let e = Engine {
            store,
            notifier,
            weather,
            clock,
            catalog: Arc::new(arc_swap::ArcSwap::from_pointee(Catalog::empty())),
            ranker: RwLock::new(ranker),
            challenger: RwLock::new(None),
            model_source: RwLock::new(None),
            catalog_sink: RwLock::new(None),
            admin: Arc::new(tokio::sync::Mutex::new(())),
            compacting: Arc::default(),
            webhooks: Default::default(),
        };
        match catalog {
            Some(c) => e.set_catalog(c),
            None => e.reload().await?,
        }
        Ok(e)
    }

    /// Turns presence webhooks on or off: while on, every event that enters or leaves
    /// fences adds one message to the webhook outbox in its commit ([`crate::webhook`]).
    pub fn set_webhooks(&self, on: bool) {
        self.webhooks
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether presence webhooks are on.
    pub fn webhooks(&self) -> bool {
        self.webhooks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Puts `catalog` in service whole (one read from a snapshot the caller checked is
    /// current).
    pub fn set_catalog(&self, catalog: Catalog) {
        self.catalog.store(Arc::new(catalog));
    }

    /// Applies the store changes made through another instance since the catalog in
    /// service, read from the head of the audit log (`newest_first`), in place: see
    /// [`Catalog::following`]. Returns whether it could (else the caller reads the whole
    /// catalog).
    pub fn follow_changes(&self, newest_first: &[crate::audit::AuditEntry]) -> bool {
        let Some(c) = self.catalog().following(newest_first) else {
            return false;
        };
        let version = c.version.clone().unwrap_or_default();
        self.swap_changed(c, &version);
        true
    }

    /// Sets where [`Engine::publish_catalog`] publishes.
    pub fn set_catalog_sink(&self, sink: Arc<dyn CatalogSink>) {
        *self.catalog_sink.write().expect("catalog sink lock") = Some(sink);
    }

    /// Publishes the catalog in service to the sink, if one is set (hosts call it after a
    /// configuration change is answered for).
    ///
    /// # Errors
    /// The sink's failure; the catalog in service is unchanged.
    pub async fn publish_catalog(&self) -> Result<bool, EngineError> {
        let sink = self.catalog_sink.read().expect("catalog sink lock").clone();
        let Some(sink) = sink else {
            return Ok(false);
        };
        let _g = self.admin.lock().await;
        sink.publish(self.catalog())
            .await
            .map_err(|e| EngineError::Store(crate::ports::StoreError(e)))?;
        Ok(true)
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    /// The current ranker.
    pub fn ranker(&self) -> Arc<dyn Ranker> {
        self.ranker.read().expect("ranker lock").clone()
    }

    /// Replaces the model (the previous one stays in service if the caller's load failed).
    pub fn set_ranker(&self, r: Arc<dyn Ranker>) {
        *self.ranker.write().expect("ranker lock") = r;
    }

    /// The challenger, if one is set.
    pub fn challenger(&self) -> Option<Challenger> {
        self.challenger.read().expect("challenger lock").clone()
    }

    /// Sets (or with `None` removes) the challenger.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] when the share is not in [0, 1]; nothing changes.
    pub fn set_challenger(&self, c: Option<Challenger>) -> Result<(), EngineError> {
        if let Some(c) = &c
            && !(0.0..=1.0).contains(&c.share)
        {
            return Err(EngineError::Invalid(FieldError::new(
                "challenger_share",
                format!("must be in [0, 1], got {}", c.share),
            )));
        }
        *self.challenger.write().expect("challenger lock") = c;
        Ok(())
    }

    /// The model that scores `user`'s decisions: the challenger for its share of users,
    /// the champion for everyone else.
    pub fn ranker_for(&self, user: &Id) -> Arc<dyn Ranker> {
        if let Some(c) = self.challenger.read().expect("challenger lock").as_ref()
            && scored_by_challenger(user, c.ranker.version(), c.share)
        {
            return c.ranker.clone();
        }
        self.ranker()
    }

    /// Sets where [`Engine::reload_model`] loads the champion from.
    pub fn set_model_source(&self, source: Arc<dyn ModelSource>) {
        *self.model_source.write().expect("model source lock") = Some(source);
    }

    /// Loads the champion again from its source and puts it in service. On any failure the
    /// model in service stays.
    ///
    /// # Errors
    /// [`EngineError::Model`] naming the cause, or when there is no source to load from.
    pub async fn reload_model(&self) -> Result<Arc<dyn Ranker>, EngineError> {
        let source = self
            .model_source
            .read()
            .expect("model source lock")
            .clone()
            .ok_or_else(|| EngineError::Model("no model source configured".into()))?;
        match source.load().await {
            Ok(r) => {
                tracing::info!(model = %r.version(), "model reloaded");
                self.set_ranker(r.clone());
                Ok(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, current = %self.ranker().version(), "model reload refused; keeping the current model");
                Err(EngineError::Model(e))
            }
        }
    }

    /// The clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The weather source.
    pub fn weather(&self) -> Arc<dyn WeatherSource> {
        self.weather.clone()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Rebuilds the catalog from the stored configuration.
    ///
    /// # Errors
    /// When the store fails or its configuration is invalid.
    pub async fn reload(&self) -> Result<(), EngineError> {
        let stores = self.store.list_stores().await?;
        let offers = self.store.list_offers().await?;
        let policy = self.store.get_policy().await?.unwrap_or_default();
        let campaigns = self.store.list_campaigns().await?;
        let version = self.store.audit_log(None, 1).await?.pop().map(|e| e.id);
        let c = Catalog::build(stores, offers, policy)
            .and_then(|c| c.with_campaigns(campaigns))
            .map_err(EngineError::Invalid)?
            .at_version(version);
        self.catalog.store(Arc::new(c));
        Ok(())
    }

    /// Makes `c` the catalog, as configuration version `version` (the audit entry id of
    /// the change it includes last), with the campaigns of the current catalog unless it
    /// has its own.
    fn swap_catalog(&self, c: Catalog, version: &str) -> Result<(), EngineError> {
        let c = if c.campaigns.is_empty() {
            c.with_campaigns(self.catalog().campaigns.to_vec())
                .map_err(EngineError::Invalid)?
        } else {
            c
        };
        self.catalog
            .store(Arc::new(c.at_version(Some(version.to_string()))));
        Ok(())
    }

    /// Processes a validated batch of one user's events, in order, with one read of the
    /// user and one atomic commit for the whole batch; then delivers its pushes.
    ///
    /// Events seen before answer "duplicate" with their first answer and are skipped. A
    /// concurrent change to the user (version conflict) makes the whole batch be decided
    /// again from the fresh state, so caps hold under any concurrency.
    ///
    /// A store with a transaction size limit ([`StateStore::max_commit_events`]) gets the
    /// batch in consecutive chunks, each committed atomically.
    ///
    /// # Errors
    /// A store failure or persistent contention: then nothing of the failing chunk was
    /// written (earlier chunks were, and answer "duplicate" when the client resends).
    pub async fn process_batch(&self, batch: &Batch) -> Result<Vec<EventReport>, EngineError> {
        let chunk = self.store.max_commit_events().max(1);
        let mut out = Vec::with_capacity(batch.events.len());
        for (k, events) in batch.events.chunks(chunk).enumerate() {
            for mut r in self.process_events(&batch.user_id, events).await? {
                r.index += k * chunk;
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Processes one validated event (a batch of one).
    ///
    /// # Errors
    /// As [`Engine::process_batch`].
    pub async fn process(&self, event: &Event) -> Result<EventReport, EngineError> {
        let mut r = self
            .process_events(&event.user_id, std::slice::from_ref(event))
            .await?;
        Ok(r.remove(0))
    }

    async fn process_events(
        &self,
        user: &Id,
        events: &[Event],
    ) -> Result<Vec<EventReport>, EngineError> {
        let catalog = self.catalog();
        let ranker = self.ranker_for(user);
        let mut known: HashMap<Id, EventResult> = HashMap::new();
        // A store that finds every resend at commit needs no memory of recent events.
        let remember = !self.store.keeps_every_event_key();
        let webhooks = self.webhooks();
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let rec = self.store.load_user(user).await?;
            let mut state = rec.state.clone();
            let mut reports = Vec::with_capacity(events.len());
            let mut commit = Commit::new(user.clone(), rec.version);
            // What the batch adds to campaigns' result cells, written in the same commit.
            let mut cells = crate::campaign_results::CellDeltas::new();
            for (i, event) in events.iter().enumerate() {
                // A resend: an event answered earlier in this call, or one of the user's
                // last events, answered from its key when the store kept one, otherwise (a
                // routine fix) by its type alone. An event not stamped after the profile's
                // horizon may be a resend the profile has forgotten: its key, if any,
                // answers it; a fix without one moves no presence. Asked of the state as
                // read: the events of one batch are distinct, so none is a resend of another.
                let mut possible_resend = false;
                let prev = if let Some(p) = known.get(&event.event_id) {
                    Some(p.clone())
                } else if !remember {
                    None
                } else if rec.state.recent.contains(&event.event_id) {
                    Some(
                        self.store
                            .event_result(user, &event.event_id)
                            .await?
                            .unwrap_or_else(|| EventResult::resent(event.kind.type_name())),
                    )
                } else if rec.state.recent.may_have_forgotten(event.at) {
                    let found = self.store.event_result(user, &event.event_id).await?;
                    // No key: a new event, or a routine fix resent after the profile
                    // forgot it, which must not do now what it did not do then.
                    possible_resend = found.is_none();
                    found
                } else {
                    None
                };
                if let Some(prev) = prev {
                    reports.push(EventReport {
                        index: i,
                        event_id: event.event_id.clone(),
                        status: "duplicate",
                        kind: prev.kind.clone(),
                        decision: prev.decision.clone(),
                    });
                    known.entry(event.event_id.clone()).or_insert(prev);
                    continue;
                }
                // Weather is fetched only when the fix is near a fence or the user is
                // inside one: most fixes need none.
                let weather = match &event.kind {
                    EventKind::Location(fix)
                        if !state.fences.is_empty()
                            || !catalog.lookup(fix.lat, fix.lon).is_empty() =>
                    {
                        self.weather.weather(fix.lat, fix.lon, event.at).await
                    }
                    _ => None,
                };
                let Outcome {
                    state: next,
                    decision,
                    push,
                } = {
                    let wf = move |_: f64, _: f64, _: chrono::DateTime<chrono::Utc>| weather;
                    let inputs = Inputs {
                        catalog: &catalog,
                        ranker: ranker.as_ref(),
                        weather: &wf,
                        now: self.clock.now(),
                    };
                    let state = std::mem::take(&mut state);
                    if possible_resend {
                        decision::decide_possible_resend(&inputs, state, event)
                    } else {
                        decision::decide_owned(&inputs, state, event)
                    }
                };
                state = next;
                if remember {
                    state.recent.remember(&event.event_id, event.at);
                }
                let outcome = decision::outcome_of(&catalog, event);
                crate::campaign_results::account(
                    &catalog,
                    &mut state,
                    event.at,
                    self.clock.now(),
                    decision.as_ref(),
                    outcome.as_ref(),
                    &mut cells,
                );
                let kind = event.kind.type_name().to_string();
                commit.events.push((
                    event.event_id.clone(),
                    EventResult {
                        kind: kind.clone(),
                        decision: decision.as_ref().map(Decision::without_candidates),
                    },
                ));
                if let Some(d) = &decision
                    && !d.candidates.is_empty()
                {
                    commit.decisions.push(d.clone());
                }
                if webhooks && let Some(m) = decision.as_ref().and_then(WebhookMessage::of) {
                    commit.webhooks.push(m);
                }
                // The push's defined campaign, looked up once.
                let campaign = push.as_ref().and_then(|p| catalog.campaign(&p.campaign_id));
                if let (Some(p), Some(c)) = (&push, campaign) {
                    if let Some(budget) = c.budget {
                        commit.budgets.push((p.campaign_id.clone(), budget));
                    }
                    // The send rate: a budget of its own for this minute.
                    if let Some(rate) = c.max_per_minute {
                        let key = crate::campaign::rate_key(&c.id, p.at);
                        commit.budgets.push((key, u64::from(rate)));
                    }
                }
                // A campaign with a coupon pool: pick one of its free codes at random (so
                // concurrent sends rarely pick the same one); the commit assigns it only
                // if it is still free. An empty pool takes the campaign out of the running
                // here, and the batch is decided again without it.
                let push = match push {
                    Some(p) if campaign.is_some_and(|c| c.coupon_pool) => {
                        let taken = commit.coupons.len();
                        let free: Vec<String> = self
                            .store
                            .free_coupons(&p.campaign_id, crate::coupon::PICK_FROM + taken)
                            .await?
                            .into_iter()
                            .filter(|c| !commit.coupons.iter().any(|t| &t.code == c))
                            .collect();
                        if free.is_empty() {
                            tracing::info!(campaign = %p.campaign_id, "coupon pool empty");
                            catalog.mark_coupons_out(&p.campaign_id);
                            continue 'attempt;
                        }
                        let code = &free[pick(free.len())];
                        commit.coupons.push(crate::coupon::CouponIssue {
                            campaign_id: p.campaign_id.clone(),
                            code: code.clone(),
                            delivery_id: p.delivery_id.clone(),
                            offer_id: p.offer_id.clone(),
                        });
                        Some(p.with_coupon(code))
                    }
                    other => other,
                };
                commit.pushes.extend(push);
                commit.outcomes.extend(outcome);
                reports.push(EventReport {
                    index: i,
                    event_id: event.event_id.clone(),
                    status: "accepted",
                    kind,
                    decision,
                });
            }
            if commit.events.is_empty() {
                return Ok(reports);
            }
            // A late event of a person erased lately (a device retrying, a queued message)
            // stores nothing, not even its idempotency key, unless it grants a consent
            // again: erasure is not undone by what was already on its way.
            if rec.version == 0
                && !Purpose::ALL.iter().any(|&p| state.consents.granted(p))
                && self.store.erased_recently(user).await?
            {
                tracing::info!(
                    events = commit.events.len(),
                    "events of an erased user without a new consent; nothing stored"
                );
                return Ok(reports);
            }
            if state != rec.state {
                commit.state = Some(state);
            }
            commit.cells = crate::campaign_results::with_rollups(cells);
            match self.store.commit(&commit).await? {
                CommitOutcome::Applied => {
                    if let Some(t) = commit.state.as_ref().and_then(|s| s.push.as_ref())
                        && t.endpoint.is_none()
                        && !t.disabled
                    {
                        self.register(user, t.platform, &t.token).await;
                    }
                    // A deferred push waits, pending, for the relay at its time.
                    let now = self.clock.now();
                    for p in commit.pushes.iter().filter(|p| p.at <= now) {
                        self.deliver(p).await?;
                    }
                    return Ok(reports);
                }
                CommitOutcome::Duplicates(d) => known.extend(d),
                CommitOutcome::Conflict => backoff(attempt).await,
                // Decide again: the campaign's offers are now out of the running here.
                CommitOutcome::BudgetSpent(c) => {
                    if crate::campaign::is_rate_key(&c) {
                        tracing::debug!(key = %c, "campaign send rate reached for this minute");
                    } else {
                        tracing::info!(campaign = %c, "campaign budget spent");
                    }
                    catalog.mark_spent(&c);
                }
                // Another send took a picked code first: pick again from a fresh read.
                CommitOutcome::CouponTaken(c) => {
                    tracing::debug!(campaign = %c, "coupon code taken; picking again");
                }
            }
        }
        Err(EngineError::Contention)
    }

    /// Registers a new push token with the notifier and keeps the endpoint it returns (if
    /// the token is still the user's). A failure only logs: the notifier creates the
    /// endpoint at the first send instead.
    async fn register(&self, user: &Id, platform: crate::event::Platform, token: &str) {
        match self.notifier.register(platform, token).await {
            Ok(Some(endpoint)) => {
                let r = self
                    .update_user(user, |s| {
                        if let Some(t) = s.push.as_mut().filter(|t| t.token == token) {
                            t.endpoint = Some(endpoint.clone());
                        }
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "push endpoint not saved; created again at send");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "push token not registered; registered at send"),
        }
    }

    /// Sends a recorded push, if this caller wins its claim (`pending` → `sending`): the
    /// engine right after its commit and the outbox relay may both try, and only one sends.
    /// On a refusal it releases the cap reservation (removes the send record) and marks
    /// the delivery failed, so a later event may send again; on an unconfirmed send (the
    /// platform may have it) the cap stays spent and the push is never sent again.
    ///
    /// The claim and the final status are each retried a few times on a store failure:
    /// the claim under the same token (so a claim that was applied but whose answer was
    /// lost is recognised as ours), the final status because it is idempotent.
    /// Answers whether this call sent it (sent or unconfirmed).
    async fn deliver(&self, push: &Push) -> Result<bool, EngineError> {
        let user = &push.user_id;
        let id = push.delivery_id.as_str();
        let claim = claim_token();
        let claimed = retry_store(|| self.store.claim_delivery(user, id, &claim)).await?;
        if !claimed {
            tracing::debug!(delivery = %id, "delivery already claimed");
            return Ok(false);
        }
        let status = match self.notifier.send(push).await {
            Ok(()) => DeliveryStatus::Sent,
            Err(NotifyError::Unconfirmed(e)) => {
                tracing::warn!(delivery = %id, error = %e, "push unconfirmed; it may have been delivered, so its cap stays spent and it is not sent again");
                DeliveryStatus::Unconfirmed
            }
            Err(e) => {
                tracing::warn!(delivery = %id, error = %e, "push not delivered; releasing cap");
                let disabled = e == NotifyError::EndpointDisabled;
                self.release(user, id, disabled).await?;
                DeliveryStatus::Failed
            }
        };
        retry_store(|| self.store.finish_delivery(user, id, status)).await?;
        Ok(status != DeliveryStatus::Failed)
    }

    /// Removes a delivery's send record (its cap reservation); with `disabled`, marks the
    /// push target as gone for good.
    async fn release(
        &self,
        user: &Id,
        delivery_id: &str,
        disabled: bool,
    ) -> Result<(), EngineError> {
        self.update_user(user, |s| {
            s.sends.retain(|r| r.delivery_id != delivery_id);
            if disabled && let Some(t) = s.push.as_mut() {
                t.disabled = true;
            }
        })
        .await
    }

    /// Completes erasures that stopped halfway at least `grace` ago (a store whose erasure
    /// is not one transaction, such as DynamoDB, keeps a marker until it is done). Answers
    /// how many it completed. Runs with the outbox relay.
    ///
    /// # Errors
    /// A store or push platform failure (the rest waits for the next run).
    pub async fn resume_erasures(&self, grace: chrono::Duration) -> Result<usize, EngineError> {
        let users = self
            .store
            .unfinished_erasures(self.clock.now() - grace)
            .await?;
        for user in &users {
            tracing::info!("completing an erasure that stopped halfway");
            self.erase(user).await?;
        }
        Ok(users.len())
    }

    /// The outbox relay: sends every push that was committed at least `grace` ago and was
    /// never claimed by a sender (the process died after its commit, or the commit's answer
    /// was lost and the retry answered "duplicate"). Each is sent to the user's current
    /// push target; a user who since withdrew push consent, lost their push target or was
    /// erased is not sent it (the delivery is marked failed and its cap released), and
    /// neither is a deferred push of a campaign with `defer_only_if_present` to someone
    /// whose visit to its store is no longer in progress. Runs at
    /// most `limit` deliveries; answers how many it sent.
    ///
    /// Safe to run anywhere at any time, as often as wanted: the claim makes every push go
    /// out at most once, whoever runs it.
    ///
    /// # Errors
    /// A store failure (the rest is left for the next run).
    pub async fn relay_pending(
        &self,
        grace: chrono::Duration,
        limit: usize,
    ) -> Result<usize, EngineError> {
        let now = self.clock.now();
        let before = now - grace;
        let mut sent = 0;
        for mut push in self.store.pending_deliveries(before, limit).await? {
            let state = self.store.load_user(&push.user_id).await?.state;
            // A deferred push of a campaign that wants the person still there: a visit to
            // its store in progress now.
            let present = !push.deferred
                || !self
                    .catalog()
                    .campaign(&push.campaign_id)
                    .is_some_and(|c| c.defer_only_if_present)
                || state.fences.get(&push.store_id).is_some_and(|f| {
                    now - f.last_seen <= crate::trigger::PRESENCE_TTL && f.out_since.is_none()
                });
            let target = state
                .push
                .as_ref()
                .filter(|t| !t.disabled)
                .filter(|_| state.consents.granted(Purpose::Push))
                .filter(|_| present)
                .filter(|_| {
                    state
                        .sends
                        .iter()
                        .any(|r| r.delivery_id == push.delivery_id)
                });
            match target {
                Some(t) => {
                    push.platform = t.platform;
                    push.token = t.token.clone();
                    push.endpoint = t.endpoint.clone();
                    tracing::info!(delivery = %push.delivery_id, "relaying an unclaimed push");
                    if self.deliver(&push).await? {
                        sent += 1;
                    }
                }
                None => {
                    let claim = claim_token();
                    let (user, id) = (&push.user_id, push.delivery_id.as_str());
                    if retry_store(|| self.store.claim_delivery(user, id, &claim)).await? {
                        tracing::info!(delivery = %id, present, "unclaimed push no longer allowed or no longer relevant; not sent");
                        self.release(user, id, false).await?;
                        retry_store(|| {
                            self.store.finish_delivery(user, id, DeliveryStatus::Failed)
                        })
                        .await?;
                    }
                }
            }
        }
        Ok(sent)
    }

    /// Settles deliveries whose sender vanished after its claim (a Lambda timed out or
    /// crashed between the claim and its final status): claimed more than `lease` ago and
    /// still `sending`, each becomes `unconfirmed`. The push may have gone out, and the
    /// platform cannot say, so it is never sent again and its cap stays spent: at most
    /// once, never twice. `lease` must exceed the longest a live sender can take
    /// ([`CLAIM_LEASE`] on AWS: Lambda's longest timeout). Answers how many it settled.
    ///
    /// # Errors
    /// A store failure (the rest waits for the next run).
    pub async fn settle_stale_claims(&self, lease: chrono::Duration) -> Result<usize, EngineError> {
        Ok(self.store.settle_stale_claims(lease).await?)
    }

    /// Read-modify-write of a user's state outside any device event.
    async fn update_user(
        &self,
        user: &Id,
        f: impl Fn(&mut crate::state::UserState),
    ) -> Result<(), EngineError> {
        for attempt in 0..MAX_ATTEMPTS {
            let rec = self.store.load_user(user).await?;
            let mut state = rec.state.clone();
            f(&mut state);
            let c = Commit {
                state: Some(state),
                ..Commit::new(user.clone(), rec.version)
            };
            match self.store.commit(&c).await? {
                CommitOutcome::Conflict => backoff(attempt).await,
                _ => return Ok(()),
            }
        }
        Err(EngineError::Contention)
    }

    /// The user's current visits, by store id: fences entered and not yet left, whose
    /// presence was confirmed within [`trigger::PRESENCE_TTL`] of now. A visit whose exit
    /// waits for confirmation (the last fixes were beyond the fence) is `leaving`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn presence(&self, user: &Id) -> Result<Vec<Visit>, EngineError> {
        let state = self.store.load_user(user).await?.state;
        let now = self.clock.now();
        let catalog = self.catalog();
        Ok(state
            .fences
            .iter()
            .filter(|(sid, f)| {
                catalog.has_store(*sid) && now - f.last_seen <= crate::trigger::PRESENCE_TTL
            })
            .map(|(sid, f)| Visit {
                store_id: sid.clone(),
                since: f.since,
                last_seen: f.last_seen,
                minutes: (f.last_seen - f.since).num_minutes().max(0),
                leaving: f.out_since.is_some(),
                next_dwell_at: catalog
                    .store_position(sid)
                    .and_then(|p| {
                        crate::decision::next_dwell_at(&catalog, p, f.since, f.dwelt, now)
                    })
                    .filter(|t| *t > f.last_seen),
            })
            .collect())
    }

    /// A user's consents.
    ///
    /// # Errors
    /// A store failure.
    pub async fn consents(&self, user: &Id) -> Result<Consents, EngineError> {
        Ok(self.store.load_user(user).await?.state.consents)
    }

    /// Records consent decisions from the consent API; effective from the next event.
    ///
    /// # Errors
    /// A store failure.
    pub async fn set_consents(
        &self,
        user: &Id,
        changes: &[(Purpose, bool)],
        policy_version: Option<String>,
    ) -> Result<Consents, EngineError> {
        let now = self.clock.now();
        self.update_user(user, |s| {
            for (p, g) in changes {
                s.consents.set(
                    *p,
                    ConsentRecord {
                        granted: *g,
                        at: now,
                        source: "api".into(),
                        policy_version: policy_version.clone(),
                    },
                );
            }
            apply_consent_effects(s);
        })
        .await?;
        self.consents(user).await
    }

    /// Everything held about a user (the subject access export): what the store holds,
    /// each push without its token (the profile's push target keeps it).
    ///
    /// # Errors
    /// A store failure.
    pub async fn user_data(&self, user: &Id) -> Result<crate::ports::UserData, EngineError> {
        Ok(self.store.user_data(user).await?)
    }

    /// Erases everything about a user.
    ///
    /// # Errors
    /// A store failure.
    pub async fn erase(&self, user: &Id) -> Result<Erasure, EngineError> {
        // The push endpoint goes first: if the platform cannot be reached, nothing is
        // erased yet and the caller retries; the other way round the endpoint would leak.
        let rec = self.store.load_user(user).await?;
        if let Some(endpoint) = rec.state.push.as_ref().and_then(|p| p.endpoint.as_ref()) {
            self.notifier.forget(endpoint).await.map_err(|e| {
                tracing::warn!(error = %e, "push endpoint not deleted; erasure not started");
                EngineError::Store(StoreError(format!("push platform unavailable: {e}")))
            })?;
        }
        let mut erased = self.store.erase_user(user).await?;
        // Then what the channel keeps (the outbox file): a failure answers 503 and the
        // retry, which finds the store already empty, tries the channel again.
        erased.records += self.notifier.erase_user(user).await.map_err(|e| {
            tracing::warn!(error = %e, "channel records not erased; the erasure must be retried");
            EngineError::Store(StoreError(format!("push channel unavailable: {e}")))
        })?;
        Ok(erased)
    }

    /// The catalog in service, when it holds the last configuration change saved (its
    /// version is the newest audit entry): then a change of one store can be applied to it
    /// rather than rebuilt from the saved configuration. Another instance's change, or a
    /// change this one has not loaded, makes it `None`.
    async fn current_catalog(&self) -> Result<Option<Arc<Catalog>>, EngineError> {
        let c = self.catalog();
        let newest = self.store.audit_log(None, 1).await?.pop().map(|e| e.id);
        Ok((newest == c.version).then_some(c))
    }

    /// The catalog rebuilt from `stores` and the saved offers, with the policy in service.
    async fn rebuilt_with(&self, stores: Vec<Store>) -> Result<Catalog, EngineError> {
        Catalog::build(
            stores,
            self.store.list_offers().await?,
            self.catalog().policy.clone(),
        )
        .map_err(EngineError::Invalid)
    }

    /// Makes `c` the catalog (a single store change applied to the one in service), and
    /// folds the changes gathered into a fresh build off the request path once there are
    /// [`COMPACT_AFTER`](crate::catalog::COMPACT_AFTER) of them.
    fn swap_changed(&self, c: Catalog, version: &str) {
        let due = c.changes() >= crate::catalog::COMPACT_AFTER;
        self.catalog
            .store(Arc::new(c.at_version(Some(version.to_string()))));
        if due {
            self.compact_catalog_soon();
        }
    }

    /// Starts folding the catalog's single store changes into a fresh build on a thread of
    /// its own (unless one is at work), then swaps it in under the configuration lock,
    /// with the changes made meanwhile carried over ([`Catalog::rebased`]); if the catalog
    /// was replaced whole meanwhile, the work is dropped.
    pub fn compact_catalog_soon(&self) {
        use std::sync::atomic::Ordering;
        if self.compacting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (slot, admin, flag) = (
            self.catalog.clone(),
            self.admin.clone(),
            self.compacting.clone(),
        );
        let work = move || {
            let snapshot = slot.load_full();
            let started = std::time::Instant::now();
            match snapshot.compacted() {
                Ok(compact) => {
                    let _g = admin.blocking_lock();
                    let current = slot.load_full();
                    if let Some(c) = current.rebased(compact, &snapshot) {
                        let prev = slot.compare_and_swap(&current, Arc::new(c));
                        tracing::info!(
                            stores = current.store_count(),
                            changes = snapshot.changes(),
                            swapped = Arc::ptr_eq(&prev, &current),
                            ms = started.elapsed().as_millis() as u64,
                            "catalog compacted"
                        );
                    }
                }
                Err(e) => tracing::error!(error = %e, "catalog compaction failed"),
            }
            flag.store(false, Ordering::SeqCst);
        };
        if std::thread::Builder::new()
            .name("catalog-compact".into())
            .spawn(work)
            .is_err()
        {
            self.compacting.store(false, Ordering::SeqCst);
        }
    }

    /// Whether a compaction started by [`Self::compact_catalog_soon`] is at work.
    pub fn compacting(&self) -> bool {
        self.compacting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Validates and saves a store with its audit entry, then applies it to the catalog
    /// (in place when the catalog in service is current, else by a rebuild from the saved
    /// configuration).
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field; the configuration is unchanged.
    pub async fn put_store(&self, store: Store, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        store.validate().map_err(EngineError::Invalid)?;
        // The would-be catalog first, in place when the one in service is current: nothing
        // is saved unless it compiles.
        let (before, c, in_place) = if let Some(cur) = self.current_catalog().await? {
            let before = cur.store_by_id(&store.id).cloned();
            let c = cur
                .with_store(store.clone())
                .map_err(EngineError::Invalid)?;
            (before, c, true)
        } else {
            let mut stores = self.store.list_stores().await?;
            let before = stores
                .iter()
                .position(|s| s.id == store.id)
                .map(|k| stores.remove(k));
            stores.push(store.clone());
            (before, self.rebuilt_with(stores).await?, false)
        };
        let entry = AuditEntry::new(self.now(), actor, "store.put")
            .target(&store.id)
            .change(before.as_ref(), Some(&store));
        self.store
            .apply_config(&[ConfigChange::PutStore(store)], &entry)
            .await?;
        if in_place {
            self.swap_changed(c, &entry.id);
            Ok(())
        } else {
            self.swap_catalog(c, &entry.id)
        }
    }

    /// Validates and saves an offer with its audit entry, then rebuilds the catalog.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field (e.g. an unknown store id); nothing saved.
    pub async fn put_offer(&self, offer: Offer, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        offer.validate().map_err(EngineError::Invalid)?;
        let mut offers = self.store.list_offers().await?;
        let before = offers
            .iter()
            .position(|o| o.id == offer.id)
            .map(|k| offers.remove(k));
        let at = offers.len();
        offers.push(offer.clone());
        let c = Catalog::build(
            self.store.list_stores().await?,
            offers,
            self.catalog().policy.clone(),
        )
        .map_err(|e| {
            let prefix = format!("offers[{at}].");
            EngineError::Invalid(FieldError::new(
                e.field.strip_prefix(&prefix).unwrap_or(&e.field),
                e.reason,
            ))
        })?;
        let entry = AuditEntry::new(self.now(), actor, "offer.put")
            .target(&offer.id)
            .change(before.as_ref(), Some(&offer));
        self.store
            .apply_config(&[ConfigChange::PutOffer(offer)], &entry)
            .await?;
        self.swap_catalog(c, &entry.id)
    }

    /// Deletes a store (offers naming it by id must be changed first), with its audit
    /// entry.
    ///
    /// # Errors
    /// Not found, or an offer still names it.
    pub async fn delete_store(&self, id: &Id, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        let missing = || EngineError::NotFound(format!("store {id}"));
        // The would-be catalog first, in place when the one in service is current.
        let (before, c, in_place) = if let Some(cur) = self.current_catalog().await? {
            let before = cur.store_by_id(id).cloned().ok_or_else(missing)?;
            let c = cur
                .without_store(id)
                .map_err(EngineError::Invalid)?
                .ok_or_else(missing)?;
            (before, c, true)
        } else {
            let mut stores = self.store.list_stores().await?;
            let k = stores
                .iter()
                .position(|s| &s.id == id)
                .ok_or_else(missing)?;
            let before = stores.remove(k);
            (before, self.rebuilt_with(stores).await?, false)
        };
        let entry = AuditEntry::new(self.now(), actor, "store.delete")
            .target(id)
            .change(Some(&before), None);
        if !self
            .store
            .apply_config(&[ConfigChange::DeleteStore(id.clone())], &entry)
            .await?
        {
            return Err(missing());
        }
        if in_place {
            self.swap_changed(c, &entry.id);
            Ok(())
        } else {
            self.swap_catalog(c, &entry.id)
        }
    }

    /// Deletes an offer, with its audit entry.
    ///
    /// # Errors
    /// Not found.
    pub async fn delete_offer(&self, id: &Id, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        let offers = self.store.list_offers().await?;
        let Some(before) = offers.iter().find(|o| &o.id == id) else {
            return Err(EngineError::NotFound(format!("offer {id}")));
        };
        let entry = AuditEntry::new(self.now(), actor, "offer.delete")
            .target(id)
            .change(Some(before), None);
        if !self
            .store
            .apply_config(&[ConfigChange::DeleteOffer(id.clone())], &entry)
            .await?
        {
            return Err(EngineError::NotFound(format!("offer {id}")));
        }
        drop(_g);
        self.reload().await
    }

    /// Validates and saves the cap policy, with its audit entry.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field.
    pub async fn put_policy(&self, policy: CapPolicy, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        policy.validate().map_err(EngineError::Invalid)?;
        let before = self.store.get_policy().await?;
        let entry =
            AuditEntry::new(self.now(), actor, "policy.put").change(before.as_ref(), Some(&policy));
        self.store
            .apply_config(&[ConfigChange::PutPolicy(policy)], &entry)
            .await?;
        drop(_g);
        self.reload().await
    }

    /// Imports stores, upserting by id: the whole list becomes one catalog, built once,
    /// and is written with one audit entry (`store.import`) in one transaction (on
    /// DynamoDB, in transactions of 98 in order; see `StateStore::apply_config`). Stores
    /// equal to the saved ones are not written. With `dry_run`, everything is checked and
    /// counted and nothing is written.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] when the catalog with these stores does not compile (the
    /// field names the store); nothing is written.
    pub async fn import_stores(
        &self,
        stores: Vec<Store>,
        actor: &Actor,
        dry_run: bool,
    ) -> Result<ImportSummary, EngineError> {
        let _g = self.admin.lock().await;
        let current = self.store.list_stores().await?;
        let mut by_id: std::collections::BTreeMap<Id, Store> =
            current.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut summary = ImportSummary::default();
        let mut changes = Vec::new();
        for s in stores {
            match by_id.get(&s.id) {
                Some(old) if crate::import::same_store(old, &s) => summary.unchanged += 1,
                Some(_) => {
                    summary.updated += 1;
                    changes.push(s);
                }
                None => {
                    summary.created += 1;
                    changes.push(s);
                }
            }
        }
        for s in &changes {
            by_id.insert(s.id.clone(), s.clone());
        }
        summary.stores = by_id.len();
        if changes.is_empty() {
            return Ok(summary);
        }
        let c = Catalog::build(
            by_id.into_values().collect(),
            self.store.list_offers().await?,
            self.catalog().policy.clone(),
        )
        .map_err(EngineError::Invalid)?;
        if dry_run {
            return Ok(summary);
        }
        const LISTED: usize = 50;
        let entry = AuditEntry {
            after: Some(serde_json::json!({
                "created": summary.created,
                "updated": summary.updated,
                "unchanged": summary.unchanged,
                "first_ids": changes.iter().take(LISTED).map(|s| s.id.as_str()).collect::<Vec<_>>(),
            })),
            ..AuditEntry::new(self.now(), actor, "store.import")
        };
        let changes: Vec<ConfigChange> = changes.into_iter().map(ConfigChange::PutStore).collect();
        self.store.apply_config(&changes, &entry).await?;
        self.swap_catalog(c, &entry.id)?;
        Ok(summary)
    }

    /// Moves every presence webhook dead letter back into the outbox, due now with its
    /// attempts reset, and answers how many. When any moved, the audit log records who did
    /// it and how many (`webhooks.redrive`, written after the moves: a failure there leaves
    /// them moved and answers the error). The entry is a new catalog version that changes
    /// nothing: instances following the log step over it.
    ///
    /// # Errors
    /// A store failure.
    pub async fn redrive_webhooks(&self, actor: &Actor) -> Result<usize, EngineError> {
        let _g = self.admin.lock().await;
        let now = self.now();
        let n = self.store.redrive_webhooks(now).await?;
        if n > 0 {
            let entry = AuditEntry {
                after: Some(serde_json::json!({ "redriven": n })),
                ..AuditEntry::new(now, actor, "webhooks.redrive")
            };
            self.store.apply_config(&[], &entry).await?;
            let c = (*self.catalog()).clone().at_version(Some(entry.id.clone()));
            self.catalog.store(Arc::new(c));
        }
        Ok(n)
    }

    /// The audit log, newest first: at most `limit` entries (capped at
    /// [`MAX_AUDIT_PAGE`](crate::audit::MAX_AUDIT_PAGE)), below the entry id `before`.
    ///
    /// # Errors
    /// A store failure.
    pub async fn audit_log(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, EngineError> {
        let limit = limit.min(crate::audit::MAX_AUDIT_PAGE);
        Ok(self.store.audit_log(before, limit).await?)
    }

    /// Replaces the whole configuration at once (demo and seeding): validated as a whole
    /// before anything is written. Campaigns already defined stay.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field.
    pub async fn load_config(
        &self,
        stores: Vec<Store>,
        offers: Vec<Offer>,
        policy: CapPolicy,
    ) -> Result<(), EngineError> {
        self.load_config_with(stores, offers, Vec::new(), policy)
            .await
    }

    /// [`Engine::load_config`] with campaigns.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field.
    pub async fn load_config_with(
        &self,
        stores: Vec<Store>,
        offers: Vec<Offer>,
        campaigns: Vec<Campaign>,
        policy: CapPolicy,
    ) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        let mut all = self.store.list_campaigns().await?;
        all.retain(|c| !campaigns.iter().any(|n| n.id == c.id));
        all.extend(campaigns.iter().cloned());
        let c = Catalog::build(stores.clone(), offers.clone(), policy.clone())
            .and_then(|c| c.with_campaigns(all))
            .map_err(EngineError::Invalid)?;
        let entry = AuditEntry {
            after: Some(
                serde_json::json!({"stores": stores.len(), "offers": offers.len(),
                "campaigns": campaigns.len()}),
            ),
            ..AuditEntry::new(
                self.now(),
                &Actor::system("configuration load"),
                "catalog.load",
            )
        };
        let changes: Vec<ConfigChange> = stores
            .into_iter()
            .map(ConfigChange::PutStore)
            .chain(offers.into_iter().map(ConfigChange::PutOffer))
            .chain(campaigns.into_iter().map(ConfigChange::PutCampaign))
            .chain(std::iter::once(ConfigChange::PutPolicy(policy)))
            .collect();
        self.store.apply_config(&changes, &entry).await?;
        self.swap_catalog(c, &entry.id)
    }

    /// The defined campaigns, each with the pushes it has sent (as its budget counts).
    ///
    /// # Errors
    /// A store failure.
    pub async fn campaigns(&self) -> Result<Vec<(Campaign, u64)>, EngineError> {
        let mut out = Vec::new();
        for c in self.store.list_campaigns().await? {
            let sent = self.store.campaign_sends(&c.id).await?;
            out.push((c, sent));
        }
        Ok(out)
    }

    /// One campaign with the pushes it has sent.
    ///
    /// # Errors
    /// Not found, or a store failure.
    pub async fn campaign(&self, id: &Id) -> Result<(Campaign, u64), EngineError> {
        let c = self
            .store
            .list_campaigns()
            .await?
            .into_iter()
            .find(|c| &c.id == id)
            .ok_or_else(|| EngineError::NotFound(format!("campaign {id}")))?;
        let sent = self.store.campaign_sends(id).await?;
        Ok((c, sent))
    }

    /// Validates and saves a campaign with its audit entry (`campaign.put`, or
    /// `campaign.status` when only the status changed). An ended campaign stays ended.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] naming the field; nothing saved.
    pub async fn put_campaign(&self, campaign: Campaign, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        campaign.validate().map_err(EngineError::Invalid)?;
        let mut campaigns = self.store.list_campaigns().await?;
        let before = campaigns
            .iter()
            .position(|c| c.id == campaign.id)
            .map(|k| campaigns.remove(k));
        if let Some(b) = &before
            && !b.status.may_become(campaign.status)
        {
            return Err(EngineError::Invalid(FieldError::new(
                "status",
                format!(
                    "campaign {} has ended and cannot become {}",
                    b.id,
                    campaign.status.as_str()
                ),
            )));
        }
        campaigns.push(campaign.clone());
        let c = (*self.catalog())
            .clone()
            .with_campaigns(campaigns)
            .map_err(EngineError::Invalid)?;
        let only_status = before.as_ref().is_some_and(|b| {
            Campaign {
                status: campaign.status,
                ..b.clone()
            } == campaign
                && b.status != campaign.status
        });
        let action = if only_status {
            "campaign.status"
        } else {
            "campaign.put"
        };
        let entry = AuditEntry::new(self.now(), actor, action)
            .target(&campaign.id)
            .change(before.as_ref(), Some(&campaign));
        self.store
            .apply_config(&[ConfigChange::PutCampaign(campaign)], &entry)
            .await?;
        self.swap_catalog(c, &entry.id)
    }

    /// Changes a campaign's status only.
    ///
    /// # Errors
    /// Not found, or [`EngineError::Invalid`] (an ended campaign cannot restart).
    pub async fn set_campaign_status(
        &self,
        id: &Id,
        status: crate::campaign::Status,
        actor: &Actor,
    ) -> Result<Campaign, EngineError> {
        let (mut c, _) = self.campaign(id).await?;
        c.status = status;
        self.put_campaign(c.clone(), actor).await?;
        Ok(c)
    }

    /// Deletes a campaign no offer names any more (an offer of an undefined campaign would
    /// run without the campaign's budget and caps), with its audit entry.
    ///
    /// # Errors
    /// Not found, or [`EngineError::Invalid`] naming the offers that still name it.
    pub async fn delete_campaign(&self, id: &Id, actor: &Actor) -> Result<(), EngineError> {
        let _g = self.admin.lock().await;
        let mut campaigns = self.store.list_campaigns().await?;
        let Some(k) = campaigns.iter().position(|c| &c.id == id) else {
            return Err(EngineError::NotFound(format!("campaign {id}")));
        };
        let naming: Vec<String> = self
            .store
            .list_offers()
            .await?
            .into_iter()
            .filter(|o| &o.campaign_id == id)
            .map(|o| o.id.to_string())
            .collect();
        if !naming.is_empty() {
            return Err(EngineError::Invalid(FieldError::new(
                "id",
                format!(
                    "offers {} still name campaign {id}; delete them first, or end the campaign",
                    naming.join(", ")
                ),
            )));
        }
        let before = campaigns.remove(k);
        let c = (*self.catalog())
            .clone()
            .with_campaigns(campaigns)
            .map_err(EngineError::Invalid)?;
        let entry = AuditEntry::new(self.now(), actor, "campaign.delete")
            .target(id)
            .change(Some(&before), None);
        if !self
            .store
            .apply_config(&[ConfigChange::DeleteCampaign(id.clone())], &entry)
            .await?
        {
            return Err(EngineError::NotFound(format!("campaign {id}")));
        }
        self.catalog
            .store(Arc::new(c.at_version(Some(entry.id.clone()))));
        Ok(())
    }

    /// Adds coupon codes (valid, distinct: [`crate::coupon::parse_codes`]) to the pool of
    /// campaign `id`, with an audit entry `coupons.upload` that counts them (codes are
    /// never written to the audit log); with `dry_run`, only checks. All or nothing.
    ///
    /// # Errors
    /// Not found (no such campaign), or a store failure.
    pub async fn upload_coupons(
        &self,
        id: &Id,
        codes: &[String],
        actor: &Actor,
        dry_run: bool,
    ) -> Result<crate::coupon::Upload, EngineError> {
        let _g = self.admin.lock().await;
        self.campaign(id).await?;
        if dry_run {
            return Ok(self.store.add_coupons(id, codes, None).await?);
        }
        let before = self.store.coupon_counts(id).await?;
        let entry = AuditEntry::new(self.now(), actor, "coupons.upload")
            .target(id)
            .change(
                Some(&before),
                Some(&crate::coupon::CouponCounts {
                    total: before.total + codes.len() as u64,
                    ..before
                }),
            );
        let up = self.store.add_coupons(id, codes, Some(&entry)).await?;
        if matches!(up, crate::coupon::Upload::Added(_)) {
            // A new catalog version, in which no pool is known to be empty.
            let mut c = (*self.catalog()).clone().at_version(Some(entry.id.clone()));
            c.coupons_out = Arc::default();
            self.catalog.store(Arc::new(c));
        }
        Ok(up)
    }

    /// The counts of campaign `id`'s coupon pool.
    ///
    /// # Errors
    /// A store failure.
    pub async fn coupon_counts(&self, id: &Id) -> Result<crate::coupon::CouponCounts, EngineError> {
        Ok(self.store.coupon_counts(id).await?)
    }

    /// Redeems a coupon code (see [`StateStore::redeem_coupon`]) at the host's time, for
    /// `order_id` if the till gives one. A store failure is retried; a retry whose first
    /// attempt was applied finds the code redeemed for the same order, which the caller
    /// can tell from a second use.
    ///
    /// # Errors
    /// A store failure.
    pub async fn redeem_coupon(
        &self,
        code: &str,
        order_id: Option<&str>,
    ) -> Result<crate::coupon::Redemption, EngineError> {
        use crate::coupon::Redemption;
        let at = self.now();
        let r = retry_store(|| self.store.redeem_coupon(code, at, order_id)).await?;
        // Counted in the results by a second commit, which counts once whenever it runs:
        // a redemption seen again (the till's retry after an answer lost, or a second use)
        // counts it too, so one whose first attempt stopped between the two commits is
        // still counted, at the time it was redeemed.
        match &r {
            Redemption::Redeemed {
                offer_id,
                delivery_id: Some(delivery),
                user_id: Some(user),
                ..
            } => {
                self.count_redemption(user, offer_id.as_ref(), delivery, code, at)
                    .await?;
            }
            Redemption::AlreadyRedeemed {
                redeemed_at,
                offer_id,
                delivery_id: Some(delivery),
                user_id: Some(user),
                ..
            } => {
                self.count_redemption(user, offer_id.as_ref(), delivery, code, *redeemed_at)
                    .await?;
            }
            _ => {}
        }
        Ok(r)
    }

    /// Counts a till's redemption in the campaign's result cells: the person's exposure
    /// for that delivery is marked redeemed and its cell moves, in one commit of the
    /// person's record under its own idempotency key (`redemption:<code>:cells`), so it
    /// counts once even if this runs again.
    async fn count_redemption(
        &self,
        user: &Id,
        offer: Option<&Id>,
        delivery: &str,
        code: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), EngineError> {
        let key =
            Id::parse(&format!("redemption:{code}:cells")).expect("codes use the id alphabet");
        let outcome = crate::ports::OutcomeRecord {
            event_id: crate::coupon::redemption_event_id(code),
            user_id: user.clone(),
            at,
            kind: crate::ports::OutcomeKind::Redeemed,
            offer_id: offer.cloned(),
            category: None,
            delivery_id: Some(delivery.to_string()),
            detail: Default::default(),
        };
        for attempt in 0..MAX_ATTEMPTS {
            let rec = self.store.load_user(user).await?;
            let mut state = rec.state.clone();
            let mut cells = crate::campaign_results::CellDeltas::new();
            let catalog = self.catalog();
            let category = |o: &Id| {
                catalog
                    .offer_pos
                    .get(o)
                    .map(|&k| catalog.offers[k as usize].category.clone())
            };
            crate::campaign_results::account_outcome(
                &mut state.exposures,
                &outcome,
                &category,
                &mut cells,
            );
            if cells.is_empty() {
                return Ok(());
            }
            let c = Commit {
                state: Some(state),
                events: vec![(
                    key.clone(),
                    EventResult {
                        kind: "redemption_counted".into(),
                        decision: None,
                    },
                )],
                cells: crate::campaign_results::with_rollups(cells),
                ..Commit::new(user.clone(), rec.version)
            };
            match self.store.commit(&c).await? {
                CommitOutcome::Conflict => backoff(attempt).await,
                _ => return Ok(()),
            }
        }
        Err(EngineError::Contention)
    }
}
