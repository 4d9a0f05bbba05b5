//! Nearcast on AWS: [`DynamoStateStore`], the [`StateStore`] port on one DynamoDB table.
//!
//! # Item layout
//!
//! One table, string keys `pk` (partition) and `sk` (sort), on-demand billing, TTL on the
//! numeric attribute `ttl` (epoch seconds). Everything about a user lives in the user's
//! partition, so one Query finds it all (erasure):
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | `USER#<user>` | `PROFILE` | `z` (B: the UserState JSON, raw DEFLATE), `recent` (B: [`nearcast_core::state::RecentEvents`], digests of the ids of the user's last 32 events with their times), `version` (N); `state` (UserState JSON text) in profiles written before |
//! | `USER#<user>` | `EVENT#<event>` | `result` (EventResult JSON), `at`, `ttl` (7 days): idempotency key of every event but a routine fix |
//! | `USER#<user>` | `DECISION#<rfc3339 at>#<event>` | `body` (Decision JSON), `seq`, `ttl` (90 days) |
//! | `USER#<user>` | `DELIVERY#<delivery id>` | `status`, `body` (Push JSON), `seq`, `ttl` (90 days) |
//! | `USER#<user>` | `OUTCOME#<rfc3339 at>#<event>` | `body` (OutcomeRecord JSON), `seq`, `ttl` (90 days) |
//! | `ERASED#<pseudonym>` | `ERASED` | `at`, `ttl` (30 days): an erasure, by an HMAC pseudonym of the user id (late events store nothing without a new consent) |
//! | `PENDING#<0-7>` | `<delivery id>` | `user`, `at` (decided, epoch µs), `claimed` (epoch µs, once claimed), `ttl` (90 days): a delivery not yet finished by a sender (the outbox relay's work list while unclaimed; a claim whose sender vanished while claimed) |
//! | `HOOK#<0-7>` | `<user>#<message id>` | `body` (WebhookMessage JSON), `attempts`, `next_at` (epoch µs, 0 = now), `last_error`, `ttl` (30 days): a presence webhook message not yet delivered, written in its event's commit; a person's messages share a partition by a hash of their id ([`webhooks`]) |
//! | `HOOKDEAD#<0-7>` | `<user>#<message id>` | the same, `next_at` = when it died, `ttl` (30 days): a dead letter |
//! | `STORE#<id>` / `OFFER#<id>` / `CAMPAIGN#<id>` | `META` | `body` (JSON) |
//! | `BUDGET#<campaign>` | `SENDS` | `sent` (N): the campaign's pushes, counted in each send's commit (`ADD`, conditioned on staying within the budget) |
//! | `CELLS#<campaign>` | `<day>#<shard 00-07>#<store>#<variant>` for a store's day, `*#<day>#<shard>#<variant>` for the day's roll-up over all stores, and `M#<month's first day>#<shard>#<store>#<variant>` for a store's month | counts (N) of one results cell ([`nearcast_core::campaign_results`]): `tr`, `el`, `s.<reason>`, and per arm (`t`, `h`, `g`) `.n`, `.op`, `.vi`, `.re`, `.pu`, `.rv.<currency>`, `.rq.<currency>`, each moved with `ADD` in the commit; a person's commits go to one of 8 shards by a hash of their id |
//! | `CONFIG` | `POLICY` | `body` (CapPolicy JSON) |
//! | `CONFIG` | `VERSION` | `version` (N): bumped with every configuration change; `model` (N): bumped by every model publish, rollback and reload |
//!
//! A routine location fix (it entered or left no fence, found no candidate offer and sent
//! nothing: [`EventResult::is_routine`], about 95 % of fixes) keeps no idempotency key: the
//! profile, which its commit writes anyway, remembers the ids of the user's last 32 events
//! ([`nearcast_core::state::RecentEvents`]), and the engine answers a resend found there
//! as a duplicate before deciding anything. Every other event keeps its key, with its
//! answer, for 7 days. A routine fix resent after 32 newer events of its person finds no
//! key, and is judged as a late fix that moves no presence (it did nothing the first time
//! and does nothing now: `disorder.rs`). This is
//! what takes a million fixes from about $1.56 to about $0.32 at 10 fixes per request
//! (docs/aws.md): a key in a transaction cost 2 WRU a fix.
//!
//! The idempotency key is kept as `USER#<user> / EVENT#<event>` rather than a partition of
//! its own (`EVENT#<user>#<event> / SEEN`) so that erasure finds it with the rest of the
//! user's items. A pending delivery also has a marker in one of eight `PENDING#` partitions
//! (by the delivery id's last hex digit, so no partition gets every push), written in the
//! commit, stamped `claimed` in the same transaction as the claim and deleted when the
//! sender finishes: the outbox relay finds unclaimed pushes, and claims whose sender died
//! (settled as `unconfirmed` after a lease), with eight Queries of a few items, never a
//! Scan. `seq` (commit time in microseconds × 1000 + position, monotonic per
//! process) orders `decisions()` and `deliveries()` oldest first, as the other stores do.
//!
//! # Requests per path
//!
//! - `load_user`: 1 GetItem (consistent read).
//! - `commit` of routine fixes only (the profile alone): 1 PutItem conditioned on
//!   `version = :expected` (or `attribute_not_exists(pk)` for version 0). A retry of one
//!   whose answer was lost fails the condition; the engine reads the profile again and
//!   answers the fixes as duplicates.
//! - `commit` otherwise: 1 TransactWriteItems: a Put per idempotency key conditioned on
//!   `attribute_not_exists(pk)` (returning the old item on failure, so a duplicate needs no
//!   extra read), the profile Put conditioned on `version = :expected` (or
//!   `attribute_not_exists(pk)` for version 0) when the state changed, a Put per decision
//!   and per outcome, two Puts per push (the delivery and its pending marker), and per
//!   campaign with a budget an Update of its `BUDGET#` count (`ADD sent :n` conditioned on
//!   `sent <= :budget - n`, so a commit that would pass the budget is refused), and per
//!   results cell the commit moves an Update of its `CELLS#` item (`ADD` only). At most
//!   100 items: a larger commit is refused with a [`StoreError`]. Each call carries a fresh
//!   `ClientRequestToken`, so the SDK's retry of a commit whose answer was lost is
//!   idempotent at DynamoDB (it answers success instead of applying it twice or failing).
//! - A routine location fix, or a batch of them: 2 round trips (GetItem + PutItem); its
//!   resend 1 (GetItem) and 1 GetItem more per resent event (its key, if any).
//! - `claim_delivery`: 1 TransactWriteItems (the conditional status Update and the
//!   marker's `claimed` Update); `finish_delivery`: 1 UpdateItem and the marker's
//!   DeleteItem.
//! - `settle_stale_claims`: 8 Queries on the marker partitions, and per claimed marker
//!   older than the lease 1 GetItem, at most 1 UpdateItem and 1 DeleteItem.
//! - `pending_deliveries`: 8 Queries on the marker partitions, then 1 GetItem per marker
//!   old enough (the relay runs them once a minute; markers live from commit to claim).
//! - `erase_user`: 1 PutItem (the `ERASURE / <user>` marker), 1 Query per page of the
//!   user's partition and 1 of each of their two webhook partitions (`HOOK#`, `HOOKDEAD#`),
//!   BatchWriteItem deletes in groups of 25 (the profile last), 1
//!   DeleteItem (the marker). Unlike SQLite this is not one transaction: an erasure that
//!   stopped halfway keeps its marker, and `unfinished_erasures` (1 Query) finds it for the
//!   relay's schedule to complete.
//! - Configuration changes (`put_*`, `delete_*`): 1 TransactWriteItems, the item and the
//!   catalog version bump together, so other instances see the change
//!   ([`refresh::RefreshingStore`]).
//! - Model announcements (`nearcast model publish | rollback`, `POST /v1/admin/model/reload`
//!   on the functions): 1 UpdateItem (`ADD model 1` on `CONFIG / VERSION`). The instances
//!   read the number with the catalog version, in the same GetItem.
//! - Configuration, `deliveries()`, `decisions()` and `outcomes()`: a Scan (small or
//!   export-only data).
//! - `campaign_cells` (`GET /v1/admin/campaigns/{id}/results`): 1 Query of the campaign's
//!   `CELLS#` partition between two days of one level (paged past 1 MB: about 2,000 items);
//!   a breakdown by store reads the whole months of its range with one and the days at
//!   either end with at most two more.

mod coupons;
pub mod model_store;
#[cfg(feature = "moto")]
pub mod moto;
pub mod refresh;
pub mod snapshots;
pub mod sns;
mod webhooks;

pub use aws_config::SdkConfig;
pub use aws_sdk_dynamodb;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, DeleteRequest, KeySchemaElement,
    KeyType, Put, PutRequest, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};
use nearcast_core::audit::{AuditEntry, ConfigChange};
use nearcast_core::campaign::Campaign;
use nearcast_core::config::{CapPolicy, Offer, Store};
use nearcast_core::decision::{Decision, Push};
use nearcast_core::ids::Id;
use nearcast_core::ports::{
    BoxFuture, Commit, CommitOutcome, DeliveryRecord, DeliveryStatus, Erasure, EventResult,
    KeptEvent, OutcomeRecord, StateStore, StoreError, UserData, UserLog, UserLogSink, UserRecord,
    erasure_pseudonym,
};
use nearcast_core::state::UserState;
use nearcast_core::webhook::{WebhookOutcome, WebhookRecord};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};

/// The standard AWS configuration (environment, profile, instance or function role;
/// `AWS_ENDPOINT_URL` is honoured), with `endpoint` overriding the endpoint if given. Every
/// client of this crate can be built from it, so a process loads it once.
pub async fn sdk_config(endpoint: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// DynamoDB's limit on the items of one TransactWriteItems.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Configuration changes per transaction: the rest of [`MAX_TRANSACTION_ITEMS`] is the
/// audit entry and the catalog version bump.
pub const CONFIG_CHANGES_PER_TRANSACTION: usize = MAX_TRANSACTION_ITEMS - 2;
/// How long an idempotency key is kept by default.
pub const SEEN_TTL_SECS: i64 = nearcast_core::ports::IDEMPOTENCY_DAYS * 24 * 3600;
/// Items each campaign cell is spread over on DynamoDB (see `cell_update`).
pub const CELL_SHARDS: u64 = 8;

/// How long decisions, deliveries and outcomes are kept by default.
pub const LOG_TTL_SECS: i64 = nearcast_core::ports::LOG_RETENTION_DAYS * 24 * 3600;

type Item = HashMap<String, AttributeValue>;

/// What `CONFIG / VERSION` holds: [`DynamoStateStore::versions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions {
    /// Bumped by every catalog change (stores, offers, policy).
    pub catalog: u64,
    /// Bumped by every model announcement (publish, rollback, reload).
    pub model: u64,
    /// The newest catalog snapshot published ([`snapshots`]): its object key and the
    /// configuration version (audit entry id) it holds.
    pub snapshot: Option<(String, String)>,
}

/// The DynamoDB single-table state store.
pub struct DynamoStateStore {
    client: Client,
    table: String,
    last_seq: AtomicI64,
    /// Seconds to the `ttl` of idempotency keys and of the logs.
    seen_ttl: i64,
    log_ttl: i64,
}

fn err(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("DynamoDB {op}: {e}"))
}

fn sdk_err<E, R>(op: &str, e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError(format!("DynamoDB {op}: {}", DisplayErrorContext(&e)))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn user_pk(user: &Id) -> String {
    format!("USER#{user}")
}

/// The first of `count` sequence numbers, none of them handed out before from `last` (one
/// past the last handed out), from `now` on (nanoseconds: the clock's microseconds times
/// 1000, so several calls in one microsecond still get numbers of their own).
fn seq_range(last: &AtomicI64, now: i64, count: usize) -> i64 {
    let count = count as i64;
    let mut prev = last.load(Ordering::Relaxed);
    loop {
        let start = now.max(prev + 1);
        match last.compare_exchange(prev, start + count, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return start,
            Err(p) => prev = p,
        }
    }
}

fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether `c` writes an idempotency key (`EVENT#`) for `event`: always, except for a
/// routine fix ([`EventResult::is_routine`]) that the profile written in the same commit
/// remembers ([`nearcast_core::state::UserState::recent`]): the profile alone then tells
/// its resends, and its answer is not kept.
fn keeps_key(c: &Commit, event: &Id, result: &EventResult) -> bool {
    !(result.is_routine() && c.state.as_ref().is_some_and(|s| s.recent.contains(event)))
}

/// The largest state a profile's `z` may inflate to (a corrupt item is refused, not
/// followed into memory).
const MAX_STATE_BYTES: usize = 1 << 20;

/// The profile item, written by every commit and billed per KB started: the state's JSON
/// deflated (raw DEFLATE, in the binary attribute `z`: about half the JSON's bytes, and
/// a typical profile stays under 1 KB), without its recent events, which go to the binary
/// attribute `recent` ([`nearcast_core::state::RecentEvents::to_bytes`]). Profiles written as JSON text (`state`) before
/// are read as they are.
fn profile_item(pk: &str, state: &UserState, version: u64) -> Result<Item, StoreError> {
    let mut item = key(pk, "PROFILE");
    let blob = |b: Vec<u8>| AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(b));
    let text = if state.recent.is_empty() {
        serde_json::to_vec(state)
    } else {
        let mut st = state.clone();
        let recent = std::mem::take(&mut st.recent);
        item.insert("recent".into(), blob(recent.to_bytes()));
        serde_json::to_vec(&st)
    }
    .map_err(|e| err("encode", e))?;
    item.insert(
        "z".into(),
        blob(miniz_oxide::deflate::compress_to_vec(&text, 6)),
    );
    item.insert("version".into(), n(version as i64));
    Ok(item)
}

/// The state of a profile item ([`profile_item`]).
fn profile_state(item: &Item) -> Result<UserState, StoreError> {
    let mut state: UserState = match item.get("z") {
        Some(AttributeValue::B(z)) => {
            let text =
                miniz_oxide::inflate::decompress_to_vec_with_limit(z.as_ref(), MAX_STATE_BYTES)
                    .map_err(|e| StoreError(format!("decode profile: {e}")))?;
            serde_json::from_slice(&text).map_err(|e| err("decode profile", e))?
        }
        _ => body(item, "state")?,
    };
    if let Some(AttributeValue::B(b)) = item.get("recent") {
        state.recent =
            nearcast_core::state::RecentEvents::from_bytes(b.as_ref()).ok_or_else(|| {
                StoreError("decode profile: recent is not the form of RecentEvents".into())
            })?;
    }
    Ok(state)
}

fn body<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    let text = get_s(item, name).ok_or_else(|| {
        StoreError(format!(
            "DynamoDB item {} / {} has no attribute {name}",
            get_s(item, "pk").unwrap_or("?"),
            get_s(item, "sk").unwrap_or("?")
        ))
    })?;
    serde_json::from_str(text).map_err(|e| err("decode", e))
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| err("encode", e))
}

/// The answer of a two-item transaction whose first item carries the condition: `true`
/// when applied, `false` when that condition failed (nothing written).
fn moved<T, R: std::fmt::Debug>(
    res: Result<T, SdkError<TransactWriteItemsError, R>>,
) -> Result<bool, StoreError> {
    match res {
        Ok(_) => Ok(true),
        Err(e) => match e.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(tc))
                if tc.cancellation_reasons().first().and_then(|r| r.code())
                    == Some("ConditionalCheckFailed") =>
            {
                Ok(false)
            }
            _ => Err(sdk_err("TransactWriteItems", e)),
        },
    }
}

fn status_of(s: &str) -> Result<DeliveryStatus, StoreError> {
    DeliveryStatus::parse(s).ok_or_else(|| StoreError(format!("unknown delivery status {s:?}")))
}

/// The partition of the markers of erasures under way (sort key: the user id).
const ERASURE_PK: &str = "ERASURE";

/// The key of an erasure remembered by its pseudonym, never the id
/// ([`nearcast_core::ports::ERASURE_MEMORY_DAYS`], then TTL).
fn erased_key(user: &Id) -> Item {
    key(format!("ERASED#{}", erasure_pseudonym(user)), "ERASED")
}

/// Pending-marker partitions.
const PENDING_SHARDS: u32 = 8;

/// The partition of a delivery's pending marker: by the id's last hex digit.
fn pending_pk(delivery_id: &str) -> String {
    let shard = delivery_id
        .chars()
        .last()
        .and_then(|c| c.to_digit(16))
        .unwrap_or(0)
        % PENDING_SHARDS;
    format!("PENDING#{shard}")
}

/// What each item of a commit's transaction is, to read its cancellation reason.
enum Slot {
    Event(usize),
    Profile,
    Budget(usize),
    Coupon(usize),
    Other,
}

impl DynamoStateStore {
    /// A store on `table` through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            last_seq: AtomicI64::new(0),
            seen_ttl: SEEN_TTL_SECS,
            log_ttl: LOG_TTL_SECS,
        }
    }

    /// The same store writing `ttl` for `retention` instead of the defaults (DynamoDB's TTL
    /// then deletes the items, usually within a few days of their `ttl`).
    #[must_use]
    pub fn with_retention(mut self, retention: nearcast_core::ports::Retention) -> Self {
        self.seen_ttl = retention.idempotency.num_seconds();
        self.log_ttl = retention.logs.num_seconds();
        self
    }

    /// A client from the standard AWS configuration (environment, profile, instance role;
    /// `AWS_ENDPOINT_URL` is honoured), with `endpoint` overriding the endpoint if given.
    pub async fn client(endpoint: Option<&str>) -> Client {
        Self::client_from(&sdk_config(endpoint).await)
    }

    /// A client from `config`.
    pub fn client_from(config: &SdkConfig) -> Client {
        Client::new(config)
    }

    /// A store on `table` with a client from the standard AWS configuration.
    pub async fn from_env(table: impl Into<String>) -> Self {
        Self::new(Self::client(None).await, table)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (pk/sk strings, on-demand), waits until it is active, and enables
    /// TTL on `ttl` (a failure to enable TTL is ignored: local emulators may lack it).
    ///
    /// # Errors
    /// When the table cannot be created or does not become active within a minute.
    pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| err("CreateTable", e))
        };
        let key = |n: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .map_err(|e| err("CreateTable", e))
        };
        client
            .create_table()
            .table_name(name)
            .attribute_definitions(attr("pk")?)
            .attribute_definitions(attr("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .map_err(|e| sdk_err("CreateTable", e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let d = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(|e| sdk_err("DescribeTable", e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(StoreError(format!(
                    "DynamoDB table {name} not active after 60 s"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        if let Ok(spec) = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("ttl")
            .build()
        {
            let _ = client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send()
                .await;
        }
        Ok(())
    }

    /// Creates the table as [`create_table`](Self::create_table) does unless it exists;
    /// true when it was created (local use: `nearcast serve --backend aws --create-table`).
    ///
    /// # Errors
    /// When the table can be neither described nor created.
    pub async fn ensure_table(client: &Client, name: &str) -> Result<bool, StoreError> {
        match client.describe_table().table_name(name).send().await {
            Ok(_) => Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Self::create_table(client, name).await.map(|()| true)
            }
            Err(e) => Err(sdk_err("DescribeTable", e)),
        }
    }

    /// A sequence number later than any this store handed out before.
    fn next_seq(&self, count: usize) -> i64 {
        let now = chrono::Utc::now().timestamp_micros().saturating_mul(1000);
        seq_range(&self.last_seq, now, count)
    }

    fn put(&self, item: Item) -> PutBuilderExt {
        PutBuilderExt(Put::builder().table_name(&self.table).set_item(Some(item)))
    }

    async fn load(&self, user: &Id) -> Result<UserRecord, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), "PROFILE")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        match out.item() {
            None => Ok(UserRecord::default()),
            Some(item) => Ok(UserRecord {
                state: profile_state(item)?,
                version: get_n(item, "version").unwrap_or(0) as u64,
            }),
        }
    }

    async fn commit_async(&self, c: &Commit) -> Result<CommitOutcome, StoreError> {
        // Sends per campaign with a budget, in first-seen order.
        let mut budgets: Vec<(&Id, u64, u64)> = Vec::new();
        for (id, budget) in &c.budgets {
            match budgets.iter_mut().find(|b| b.0 == id) {
                Some(b) => b.1 += 1,
                None => budgets.push((id, 1, *budget)),
            }
        }
        if let Some(b) = budgets.iter().find(|b| b.1 > b.2) {
            return Ok(CommitOutcome::BudgetSpent(b.0.clone()));
        }
        let count = c.events.iter().filter(|(e, r)| keeps_key(c, e, r)).count()
            + usize::from(c.state.is_some())
            + c.decisions.len()
            + c.outcomes.len()
            + 2 * c.pushes.len()
            + budgets.len()
            + 3 * c.coupons.len()
            + c.cells.len()
            + c.webhooks.len();
        if count == 0 {
            return Ok(CommitOutcome::Applied);
        }
        if count > MAX_TRANSACTION_ITEMS {
            return Err(StoreError(format!(
                "DynamoDB TransactWriteItems: commit needs {count} items, the limit is {MAX_TRANSACTION_ITEMS}"
            )));
        }
        let now = chrono::Utc::now().timestamp();
        let pk = user_pk(&c.user_id);
        let mut items = Vec::with_capacity(count);
        let mut slots = Vec::with_capacity(count);
        for (i, (event, result)) in c.events.iter().enumerate() {
            if !keeps_key(c, event, result) {
                continue;
            }
            let mut item = key(&pk, format!("EVENT#{event}"));
            item.insert("result".into(), s(json(result)?));
            item.insert("at".into(), n(now));
            item.insert("ttl".into(), n(now + self.seen_ttl));
            let put = self
                .put(item)
                .0
                .condition_expression("attribute_not_exists(pk)")
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            items.push(PutBuilderExt(put).build()?);
            slots.push(Slot::Event(i));
        }
        if let Some(state) = &c.state {
            let item = profile_item(&pk, state, c.expected_version + 1)?;
            if count == 1 {
                // The profile alone (routine fixes): one conditional PutItem, at half the
                // write units of the same Put in a transaction.
                return self.put_profile(item, c.expected_version).await;
            }
            let put = self.put(item).0;
            let put = if c.expected_version == 0 {
                put.condition_expression("attribute_not_exists(pk)")
            } else {
                put.condition_expression("version = :expected")
                    .expression_attribute_values(":expected", n(c.expected_version as i64))
            };
            items.push(PutBuilderExt(put).build()?);
            slots.push(Slot::Profile);
        }
        let seq = self.next_seq(c.decisions.len() + c.pushes.len() + c.outcomes.len());
        let mut k = 0;
        for d in &c.decisions {
            let sk = format!(
                "DECISION#{}#{}",
                d.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                d.event_id
            );
            let mut item = key(&pk, sk);
            item.insert("body".into(), s(json(d)?));
            item.insert("seq".into(), n(seq + k));
            item.insert("ttl".into(), n(now + self.log_ttl));
            k += 1;
            items.push(self.put(item).build()?);
            slots.push(Slot::Other);
        }
        for o in &c.outcomes {
            items.push(self.outcome_put(o, seq + k, now)?);
            k += 1;
            slots.push(Slot::Other);
        }
        for p in &c.pushes {
            let mut item = key(&pk, format!("DELIVERY#{}", p.delivery_id));
            item.insert("status".into(), s(DeliveryStatus::Pending.as_str()));
            item.insert("body".into(), s(json(p)?));
            item.insert("seq".into(), n(seq + k));
            item.insert("ttl".into(), n(now + self.log_ttl));
            k += 1;
            items.push(self.put(item).build()?);
            let mut marker = key(pending_pk(&p.delivery_id), &p.delivery_id);
            marker.insert("user".into(), s(c.user_id.as_str()));
            marker.insert("at".into(), n(p.at.timestamp_micros()));
            marker.insert("ttl".into(), n(now + self.log_ttl));
            items.push(self.put(marker).build()?);
            slots.push(Slot::Other);
            slots.push(Slot::Other);
        }
        for (i, (campaign, sends, budget)) in budgets.iter().enumerate() {
            // A send-rate count matters for its minute: it expires a day later.
            let rate = nearcast_core::campaign::is_rate_key(campaign);
            let update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(format!("BUDGET#{campaign}"), "SENDS")))
                .update_expression(if rate {
                    "ADD #s :n SET #ttl = :ttl"
                } else {
                    "ADD #s :n"
                })
                .condition_expression("attribute_not_exists(#s) OR #s <= :max")
                .expression_attribute_names("#s", "sent")
                .expression_attribute_values(":n", n(*sends as i64))
                .expression_attribute_values(":max", n((budget - sends) as i64));
            let update = if rate {
                update
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_values(":ttl", n(now + 24 * 3600))
            } else {
                update
            };
            let update = update.build().map_err(|e| err("TransactWriteItems", e))?;
            items.push(TransactWriteItem::builder().update(update).build());
            slots.push(Slot::Budget(i));
        }
        for (i, issue) in c.coupons.iter().enumerate() {
            self.coupon_items(&c.user_id, issue, i, now, &mut items, &mut slots)?;
        }
        for m in &c.webhooks {
            items.push(self.webhook_put(m, now)?);
            slots.push(Slot::Other);
        }
        for (campaign, level, k, add) in &c.cells {
            items.push(self.cell_update(campaign, *level, k, add, &c.user_id)?);
            slots.push(Slot::Other);
        }
        // One token per call, kept by the SDK across its retries: a retry of a commit that
        // was applied but whose answer was lost succeeds at DynamoDB without applying twice.
        let token = format!("{:032x}", rand::random::<u128>());
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .client_request_token(token)
            .send()
            .await;
        let e = match res {
            Ok(_) => return Ok(CommitOutcome::Applied),
            Err(e) => e,
        };
        let Some(TransactWriteItemsError::TransactionCanceledException(tc)) = e.as_service_error()
        else {
            return Err(sdk_err("TransactWriteItems", e));
        };
        let reasons = tc.cancellation_reasons();
        let mut dups = Vec::new();
        let mut conflict = false;
        let mut spent = None;
        let mut taken = None;
        for (slot, reason) in slots.iter().zip(reasons) {
            let code = reason.code().unwrap_or("None");
            match (slot, code) {
                (_, "None") => {}
                (Slot::Event(i), "ConditionalCheckFailed") => {
                    let event = &c.events[*i].0;
                    let result = match reason.item() {
                        Some(item) if item.contains_key("result") => body(item, "result")?,
                        _ => match self.seen(&c.user_id, event).await? {
                            Some(r) => r,
                            // Erased since: the caller re-reads and retries.
                            None => {
                                conflict = true;
                                continue;
                            }
                        },
                    };
                    dups.push((event.clone(), result));
                }
                (Slot::Profile, "ConditionalCheckFailed") => conflict = true,
                (Slot::Budget(i), "ConditionalCheckFailed") => spent = Some(budgets[*i].0.clone()),
                (Slot::Coupon(i), "ConditionalCheckFailed") => {
                    taken = Some(c.coupons[*i].campaign_id.clone());
                }
                // A concurrent transaction on the same items: nothing was written; retry.
                (_, "TransactionConflict") => conflict = true,
                (_, other) => {
                    return Err(StoreError(format!(
                        "DynamoDB TransactWriteItems: transaction cancelled ({other})"
                    )));
                }
            }
        }
        if !dups.is_empty() {
            Ok(CommitOutcome::Duplicates(dups))
        } else if conflict {
            Ok(CommitOutcome::Conflict)
        } else if let Some(c) = spent {
            Ok(CommitOutcome::BudgetSpent(c))
        } else if let Some(c) = taken {
            Ok(CommitOutcome::CouponTaken(c))
        } else {
            Err(sdk_err("TransactWriteItems", e))
        }
    }

    /// The Put of an outcome in its user's partition (`OUTCOME#<time>#<event id>`).
    fn outcome_put(
        &self,
        o: &OutcomeRecord,
        seq: i64,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let sk = format!(
            "OUTCOME#{}#{}",
            o.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            o.event_id
        );
        let mut item = key(user_pk(&o.user_id), sk);
        item.insert("body".into(), s(json(o)?));
        item.insert("seq".into(), n(seq));
        item.insert("ttl".into(), n(now + self.log_ttl));
        self.put(item).build()
    }

    /// [`Self::outcome_put`] with a fresh sequence number, for a write of its own.
    fn outcome_item(&self, o: &OutcomeRecord) -> Result<TransactWriteItem, StoreError> {
        self.outcome_put(o, self.next_seq(1), chrono::Utc::now().timestamp())
    }

    /// Writes a profile alone, on condition that its version is still `expected` (or that
    /// there is none for version 0). A retry of a write whose answer was lost finds the
    /// version moved and answers a conflict: the engine reads the profile again, and its
    /// recent events answer the batch as duplicates.
    async fn put_profile(&self, item: Item, expected: u64) -> Result<CommitOutcome, StoreError> {
        let req = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let req = if expected == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(expected as i64))
        };
        match req.send().await {
            Ok(_) => Ok(CommitOutcome::Applied),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => {
                    Ok(CommitOutcome::Conflict)
                }
                _ => Err(sdk_err("PutItem", e)),
            },
        }
    }

    async fn seen(&self, user: &Id, event: &Id) -> Result<Option<EventResult>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), format!("EVENT#{event}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item().map(|i| body(i, "result")).transpose()
    }

    async fn claim(&self, user: &Id, delivery_id: &str, claim: &str) -> Result<bool, StoreError> {
        // The status moves and the pending marker goes, together. A retry of our own claim
        // (its answer lost) finds it `sending` under the same claim and succeeds again.
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), format!("DELIVERY#{delivery_id}"))))
            .update_expression("SET #s = :sending, #c = :claim")
            .condition_expression("#s = :pending OR (#s = :sending AND #c = :claim)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#c", "claim")
            .expression_attribute_values(":sending", s(DeliveryStatus::Sending.as_str()))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":claim", s(claim))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        // The marker stays, stamped with the claim's time, until the sender finishes: a
        // sender that dies in between (a Lambda timeout, a crash) leaves it for
        // `settle_stale_claims`, so no delivery stays `sending` for ever.
        let now = chrono::Utc::now();
        let marker = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pending_pk(delivery_id), delivery_id)))
            .update_expression("SET #cl = :now, #u = :user, #t = if_not_exists(#t, :ttl)")
            .expression_attribute_names("#cl", "claimed")
            .expression_attribute_names("#u", "user")
            .expression_attribute_names("#t", "ttl")
            .expression_attribute_values(":now", n(now.timestamp_micros()))
            .expression_attribute_values(":user", s(user.as_str()))
            .expression_attribute_values(":ttl", n(now.timestamp() + self.log_ttl))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        let token = format!("{:032x}", rand::random::<u128>());
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().update(marker).build())
            .client_request_token(token)
            .send()
            .await;
        moved(res)
    }

    async fn finish(
        &self,
        user: &Id,
        delivery_id: &str,
        to: DeliveryStatus,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(user_pk(user), format!("DELIVERY#{delivery_id}"))))
            .update_expression("SET #s = :to REMOVE #c")
            .condition_expression("#s = :sending")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#c", "claim")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":sending", s(DeliveryStatus::Sending.as_str()))
            .send()
            .await;
        let moved = match res {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                false
            }
            Err(e) => return Err(sdk_err("UpdateItem", e)),
        };
        // Then the claim's marker. If this fails, the caller's retry finds the status moved
        // and deletes it again; a marker left anyway is removed by the next settle. A
        // delivery that did not move may be one nobody claimed: its marker (unclaimed) is
        // the relay's and stays.
        self.delete_marker(delivery_id, !moved).await?;
        Ok(moved)
    }

    /// Deletes a delivery's marker; with `only_claimed`, only if it was claimed.
    async fn delete_marker(&self, delivery_id: &str, only_claimed: bool) -> Result<(), StoreError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(pending_pk(delivery_id), delivery_id)));
        if only_claimed {
            delete = delete
                .condition_expression("attribute_exists(#cl)")
                .expression_attribute_names("#cl", "claimed");
        }
        match delete.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_err("DeleteItem", e)),
        }
    }

    /// One delivery's item (consistent read), if it exists.
    async fn delivery_item(&self, user: &str, id: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("USER#{user}"), format!("DELIVERY#{id}"))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        Ok(out.item)
    }

    /// See [`StateStore::settle_stale_claims`]: 8 Queries on the marker partitions, then
    /// per claimed marker older than `lease` 1 GetItem, 1 conditional UpdateItem (`sending`
    /// under that claim → `unconfirmed`) and 1 DeleteItem.
    async fn settle(&self, lease: chrono::Duration) -> Result<usize, StoreError> {
        let cutoff = (chrono::Utc::now() - lease).timestamp_micros();
        let mut settled = 0;
        for shard in 0..PENDING_SHARDS {
            for item in self.partition(&format!("PENDING#{shard}"), None).await? {
                let (Some(id), Some(user), Some(claimed)) = (
                    get_s(&item, "sk"),
                    get_s(&item, "user"),
                    get_n(&item, "claimed"),
                ) else {
                    continue;
                };
                if claimed > cutoff {
                    continue;
                }
                let delivery = self.delivery_item(user, id).await?;
                if let Some(d) = &delivery
                    && get_s(d, "status") == Some(DeliveryStatus::Sending.as_str())
                    && let Some(claim) = get_s(d, "claim")
                {
                    let res = self
                        .client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key(format!("USER#{user}"), format!("DELIVERY#{id}"))))
                        .update_expression("SET #s = :to REMOVE #c")
                        .condition_expression("#s = :sending AND #c = :claim")
                        .expression_attribute_names("#s", "status")
                        .expression_attribute_names("#c", "claim")
                        .expression_attribute_values(":to", s(DeliveryStatus::Unconfirmed.as_str()))
                        .expression_attribute_values(
                            ":sending",
                            s(DeliveryStatus::Sending.as_str()),
                        )
                        .expression_attribute_values(":claim", s(claim))
                        .send()
                        .await;
                    match res {
                        Ok(_) => {
                            tracing::warn!(delivery = %id, "a sender vanished after its claim; the push may have gone out, so it is marked unconfirmed and not sent again");
                            settled += 1;
                        }
                        // Its sender finished meanwhile.
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                        Err(e) => return Err(sdk_err("UpdateItem", e)),
                    }
                }
                // Settled, finished, or gone (erased, expired): the marker has no more use.
                self.delete_marker(id, false).await?;
            }
        }
        Ok(settled)
    }

    async fn pending(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Push>, StoreError> {
        let mut markers: Vec<(i64, String, String)> = Vec::new();
        for shard in 0..PENDING_SHARDS {
            for item in self.partition(&format!("PENDING#{shard}"), None).await? {
                let (Some(id), Some(user), Some(at)) =
                    (get_s(&item, "sk"), get_s(&item, "user"), get_n(&item, "at"))
                else {
                    continue;
                };
                // Claimed: its sender has it, or `settle_stale_claims` will.
                if get_n(&item, "claimed").is_some() {
                    continue;
                }
                if at <= before.timestamp_micros() {
                    markers.push((at, user.to_string(), id.to_string()));
                }
            }
        }
        markers.sort();
        let mut out = Vec::new();
        for (_, user, id) in markers {
            if out.len() >= limit {
                break;
            }
            match self.delivery_item(&user, &id).await?.as_ref() {
                Some(i) if get_s(i, "status") == Some(DeliveryStatus::Pending.as_str()) => {
                    out.push(body::<Push>(i, "body")?);
                }
                // Gone (erased, expired) or claimed: the marker is stale.
                _ => {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(Some(key(pending_pk(&id), &id)))
                        .send()
                        .await
                        .map_err(|e| sdk_err("DeleteItem", e))?;
                }
            }
        }
        Ok(out)
    }

    /// The items of one partition (with `sk` starting with `sk_prefix`, when given: a key
    /// condition, so only those are read), by Query (paged, consistent), in `sk` order.
    /// The Update that adds `add` to a campaign's cell: one item per cell and shard
    /// (`CELLS#<campaign>` / `<day>#<shard>#<store>#<variant>`), every count an attribute
    /// moved with `ADD`, so concurrent commits add up without reading. A person's commits go
    /// to one of [`CELL_SHARDS`] items by a hash of their id: a popular store's cell is
    /// written by many people at once, and TransactWriteItems refuses two transactions on
    /// one item at the same moment (TransactionConflict), so the writes are spread.
    fn cell_update(
        &self,
        campaign: &Id,
        level: nearcast_core::campaign_results::CellLevel,
        k: &nearcast_core::campaign_results::CellKey,
        add: &nearcast_core::campaign_results::Cell,
        user: &Id,
    ) -> Result<TransactWriteItem, StoreError> {
        use nearcast_core::campaign_results::CellLevel;
        let shard = nearcast_core::holdout::stable_hash(&["cells", user.as_str()]) % CELL_SHARDS;
        // Each level is one range of the partition: roll-ups over all stores start with
        // `*` (before the digits of a day), stores' months with `M` (after them), and the
        // stores' days with their day.
        let sk = match level {
            CellLevel::Days => format!("*#{}#{shard:02}#{}", k.day, k.variant),
            CellLevel::StoreDays => format!("{}#{shard:02}#{}#{}", k.day, k.store, k.variant),
            CellLevel::StoreMonths => {
                format!("M#{}#{shard:02}#{}#{}", k.day, k.store, k.variant)
            }
        };
        let adds: Vec<(String, AttributeValue)> = add
            .counters()
            .into_iter()
            .map(|(name, x)| (name, AttributeValue::N(format!("{x}"))))
            .collect();
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(format!("CELLS#{campaign}"), sk)));
        let mut expr = Vec::with_capacity(adds.len());
        for (i, (name, v)) in adds.into_iter().enumerate() {
            expr.push(format!("#a{i} :v{i}"));
            update = update
                .expression_attribute_names(format!("#a{i}"), name)
                .expression_attribute_values(format!(":v{i}"), v);
        }
        if expr.is_empty() {
            // Nothing to add (never made by the engine): touch the item's key only.
            expr.push("#a0 :v0".into());
            update = update
                .expression_attribute_names("#a0", "tr")
                .expression_attribute_values(":v0", n(0));
        }
        let update = update
            .update_expression(format!("ADD {}", expr.join(", ")))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A campaign's cells between two days: one Query (paged) of its partition, the shards
    /// of each cell added up.
    async fn cells(
        &self,
        campaign: &Id,
        level: nearcast_core::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> Result<nearcast_core::campaign_results::Cells, StoreError> {
        use nearcast_core::campaign_results::{ALL_STORES, Cell, CellKey, CellLevel};
        let p = match level {
            CellLevel::Days => "*#",
            CellLevel::StoreDays => "",
            CellLevel::StoreMonths => "M#",
        };
        let lo = from.map_or_else(|| format!("{p}0"), |d| format!("{p}{d}"));
        let hi = to.map_or_else(|| format!("{p}9"), |d| format!("{p}{d}#~"));
        let mut start: Option<Item> = None;
        let mut out = nearcast_core::campaign_results::Cells::new();
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", s(format!("CELLS#{campaign}")))
                .expression_attribute_values(":lo", s(lo.clone()))
                .expression_attribute_values(":hi", s(hi.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for item in page.items() {
                let sk = get_s(item, "sk").unwrap_or_default();
                let rest = sk.strip_prefix(p).unwrap_or(sk);
                let parsed = if level == CellLevel::Days {
                    let mut parts = rest.splitn(3, '#');
                    (parts.next(), parts.next(), Some(ALL_STORES), parts.next())
                } else {
                    let mut parts = rest.splitn(4, '#');
                    (parts.next(), parts.next(), parts.next(), parts.next())
                };
                let (Some(day), Some(_shard), Some(store), Some(variant)) = parsed else {
                    return Err(StoreError(format!("DynamoDB cell with a bad key {sk:?}")));
                };
                let key = CellKey {
                    day: day
                        .parse()
                        .map_err(|e| StoreError(format!("DynamoDB cell {sk:?}: {e}")))?,
                    store: store.to_string(),
                    variant: variant.to_string(),
                };
                let mut cell = Cell::default();
                for (name, v) in item {
                    if let Ok(x) = v.as_n()
                        && name != "pk"
                        && name != "sk"
                    {
                        cell.add_counter(name, x.parse().unwrap_or(0.0));
                    }
                }
                out.entry(key).or_default().add(&cell);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn partition(&self, pk: &str, sk_prefix: Option<&str>) -> Result<Vec<Item>, StoreError> {
        let mut start: Option<Item> = None;
        let mut items = Vec::new();
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk));
            if let Some(prefix) = sk_prefix {
                query = query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
                    .expression_attribute_values(":sk", s(prefix));
            }
            let out = query
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    async fn erase(&self, user: &Id) -> Result<Erasure, StoreError> {
        let pk = user_pk(user);
        // An erasure is a Query and batched deletes, not one transaction: a marker says it
        // is under way until the last delete, so one that stopped halfway is found and
        // completed ([`StateStore::unfinished_erasures`]). The profile goes last, so as long
        // as anything is left the profile (and its push endpoint) is too.
        let mut marker = key(ERASURE_PK, user.as_str());
        marker.insert("at".into(), n(chrono::Utc::now().timestamp_micros()));
        marker.insert(
            "ttl".into(),
            n(chrono::Utc::now().timestamp() + self.log_ttl),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(marker))
            .send()
            .await
            .map_err(|e| sdk_err("PutItem", e))?;
        let mut keys: Vec<Item> = Vec::new();
        let mut profile: Option<Item> = None;
        let mut records = 0u64;
        let mut endpoint = None;
        for item in self.partition(&pk, None).await? {
            let Some(sk) = get_s(&item, "sk") else {
                continue;
            };
            records += 1;
            if sk == "PROFILE" {
                endpoint = profile_state(&item)
                    .ok()
                    .and_then(|s| s.push.and_then(|p| p.endpoint));
            } else if let Some(id) = sk.strip_prefix("DELIVERY#") {
                keys.push(key(pending_pk(id), id));
                // The link of a coupon code sent with it: the code stays issued.
                if let Ok(p) = body::<Push>(&item, "body") {
                    for k in Self::coupon_link_keys(&p) {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
            if sk == "PROFILE" {
                profile = Some(key(&pk, sk));
            } else {
                keys.push(key(&pk, sk));
            }
        }
        // Presence webhook messages, delivered or not (one Query of each partition).
        for k in self.user_webhook_keys(user).await? {
            records += 1;
            keys.push(k);
        }
        keys.extend(profile);
        // The erasure is remembered by its pseudonym (a late event then stores nothing
        // without a new consent), written with the first batch of deletes.
        let mut tombstone = erased_key(user);
        tombstone.insert("at".into(), n(chrono::Utc::now().timestamp()));
        tombstone.insert(
            "ttl".into(),
            n(chrono::Utc::now().timestamp()
                + nearcast_core::ports::ERASURE_MEMORY_DAYS * 24 * 3600),
        );
        let mut writes = vec![
            PutRequest::builder()
                .set_item(Some(tombstone))
                .build()
                .map(|p| WriteRequest::builder().put_request(p).build())
                .map_err(|e| err("BatchWriteItem", e))?,
        ];
        for k in keys {
            writes.push(
                DeleteRequest::builder()
                    .set_key(Some(k))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(|e| err("BatchWriteItem", e))?,
            );
        }
        self.batch_write(writes).await?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(ERASURE_PK, user.as_str())))
            .send()
            .await
            .map_err(|e| sdk_err("DeleteItem", e))?;
        Ok(Erasure { records, endpoint })
    }

    /// Writes `writes` by BatchWriteItem, 25 at a time, retrying what comes back
    /// unprocessed (with backoff, at most 8 times per batch).
    async fn batch_write(&self, writes: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in writes.chunks(25) {
            let mut requests = chunk.to_vec();
            let mut attempt = 0u32;
            while !requests.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| sdk_err("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError(
                            "DynamoDB BatchWriteItem: items left unprocessed after 8 retries"
                                .into(),
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Ok(())
    }

    /// Deletes every item of partition `pk` (a deleted campaign's results cells).
    async fn clear_partition(&self, pk: &str) -> Result<(), StoreError> {
        let writes = self
            .partition(pk, None)
            .await?
            .into_iter()
            .filter_map(|item| {
                let sk = item.get("sk")?.clone();
                let mut k = Item::new();
                k.insert("pk".into(), s(pk));
                k.insert("sk".into(), sk);
                Some(
                    DeleteRequest::builder()
                        .set_key(Some(k))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(|e| err("BatchWriteItem", e)),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.batch_write(writes).await
    }

    /// Every item whose `pk` starts with `pk_prefix` and `sk` with `sk_prefix`.
    async fn scan(&self, pk_prefix: &str, sk_prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut start: Option<Item> = None;
        let mut items = Vec::new();
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :pk) AND begins_with(sk, :sk)")
                .expression_attribute_values(":pk", s(pk_prefix))
                .expression_attribute_values(":sk", s(sk_prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Scan", e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(items)
    }

    /// Configuration bodies under `prefix` (`STORE#`, `OFFER#`), by id.
    async fn list_config<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut items = self.scan(prefix, "META").await?;
        items.sort_by(|a, b| get_s(a, "pk").cmp(&get_s(b, "pk")));
        items.iter().map(|i| body(i, "body")).collect()
    }

    /// One user's log: two Queries on the user's partition (`sk` starting with `DECISION#`,
    /// then `OUTCOME#`), each kind oldest first.
    async fn user_log(&self, pk: &str) -> Result<UserLog, StoreError> {
        let user = pk.strip_prefix("USER#").unwrap_or(pk);
        let user_id = Id::parse(user).map_err(|e| StoreError(format!("{pk}: {e}")))?;
        let mut decisions = self.partition(pk, Some("DECISION#")).await?;
        let mut outcomes = self.partition(pk, Some("OUTCOME#")).await?;
        decisions.sort_by_key(|i| get_n(i, "seq").unwrap_or(0));
        outcomes.sort_by_key(|i| get_n(i, "seq").unwrap_or(0));
        Ok(UserLog {
            user_id,
            decisions: decisions
                .iter()
                .map(|i| body::<Decision>(i, "body"))
                .collect::<Result<_, _>>()?,
            outcomes: outcomes
                .iter()
                .map(|i| body::<OutcomeRecord>(i, "body"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Items under the users' partitions with `sk` starting with `prefix`, oldest first.
    async fn log(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = self.scan("USER#", prefix).await?;
        items.sort_by_key(|i| get_n(i, "seq").unwrap_or(0));
        Ok(items)
    }

    /// The catalog version bump that goes with every configuration change, in the same
    /// transaction: `ADD version 1` on `CONFIG / VERSION`.
    fn bump_version(&self) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key("CONFIG", "VERSION")))
            .update_expression("ADD #v :one")
            .expression_attribute_names("#v", "version")
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The catalog version: bumped by every change of stores, offers or policy (0 before
    /// the first). One eventually consistent GetItem (half a read unit).
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn catalog_version(&self) -> Result<u64, StoreError> {
        Ok(self.versions().await?.catalog)
    }

    /// The catalog version and the model announcement number, both on `CONFIG / VERSION`:
    /// one eventually consistent GetItem (half a read unit) tells an instance whether
    /// either moved.
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn versions(&self) -> Result<Versions, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key("CONFIG", "VERSION")))
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        let n = |name| out.item().and_then(|i| get_n(i, name)).unwrap_or(0).max(0) as u64;
        let snapshot = out.item().and_then(|i| {
            Some((
                get_s(i, "snapshot_key")?.to_string(),
                get_s(i, "snapshot_of")?.to_string(),
            ))
        });
        Ok(Versions {
            catalog: n("version"),
            model: n("model"),
            snapshot,
        })
    }

    /// Points `CONFIG / VERSION` at the catalog snapshot `key` holding configuration version
    /// `of`, unless it points at a newer one already (one conditional UpdateItem; the same version
    /// again points at it again). Returns
    /// whether it now points at `key`, and the key it pointed at before.
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn point_snapshot(
        &self,
        key_: &str,
        of: &str,
    ) -> Result<(bool, Option<String>), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key("CONFIG", "VERSION")))
            .update_expression("SET #k = :k, #o = :o")
            .condition_expression("attribute_not_exists(#o) OR #o <= :o")
            .expression_attribute_names("#k", "snapshot_key")
            .expression_attribute_names("#o", "snapshot_of")
            .expression_attribute_values(":k", s(key_))
            .expression_attribute_values(":o", s(of))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedOld)
            .send()
            .await;
        match out {
            Ok(o) => Ok((
                true,
                o.attributes()
                    .and_then(|a| get_s(a, "snapshot_key"))
                    .map(str::to_string),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok((false, None))
            }
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    /// Announces a model change (publish, rollback, reload) to every instance: `ADD model 1`
    /// on `CONFIG / VERSION`, one UpdateItem. Call it after the artifacts are in S3, so an
    /// instance that sees the new number loads them. Returns the new number.
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn bump_model_version(&self) -> Result<u64, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key("CONFIG", "VERSION")))
            .update_expression("ADD #m :one")
            .expression_attribute_names("#m", "model")
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_err("UpdateItem", e))?;
        Ok(out
            .attributes()
            .and_then(|a| get_n(a, "model"))
            .unwrap_or(0)
            .max(0) as u64)
    }

    async fn put_body<T: serde::Serialize>(
        &self,
        pk: String,
        sk: &str,
        v: &T,
    ) -> Result<(), StoreError> {
        let mut item = key(pk, sk);
        item.insert("body".into(), s(json(v)?));
        self.client
            .transact_write_items()
            .transact_items(self.put(item).build()?)
            .transact_items(self.bump_version()?)
            .send()
            .await
            .map_err(|e| sdk_err("TransactWriteItems", e))?;
        Ok(())
    }

    async fn delete(&self, pk: String, sk: &str) -> Result<bool, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(self.bump_version()?)
            .send()
            .await;
        // Nothing to delete: nothing written, the version unchanged.
        moved(res)
    }

    /// Configuration changes with their audit entry: one TransactWriteItems of the changes,
    /// the entry (`AUDIT / <entry id>`) and the catalog version bump, for up to
    /// [`CONFIG_CHANGES_PER_TRANSACTION`] changes. A longer list (a whole catalog loaded at
    /// once) goes in several transactions, in order, each with its version bump and the
    /// entry with the last: a failure part-way leaves the earlier ones applied, and the
    /// caller's error says to retry (puts are idempotent).
    async fn apply_config_async(
        &self,
        changes: &[ConfigChange],
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        let chunks: Vec<&[ConfigChange]> = if changes.is_empty() {
            vec![&[]]
        } else {
            changes.chunks(CONFIG_CHANGES_PER_TRANSACTION).collect()
        };
        // A campaign created (none under its id) starts from no results: cells a deleted
        // namesake left (its partition is cleared after its delete commits, so a failure
        // there, or a late commit of an instance that still knew it, can leave some) are
        // cleared before the campaign exists, so no commit of the new one can be among them.
        for c in changes {
            if let ConfigChange::PutCampaign(cp) = c
                && self
                    .partition(&format!("CAMPAIGN#{}", cp.id), None)
                    .await?
                    .is_empty()
            {
                self.clear_partition(&format!("CELLS#{}", cp.id)).await?;
            }
        }
        let last = chunks.len() - 1;
        for (k, chunk) in chunks.into_iter().enumerate() {
            let mut tx = self.client.transact_write_items();
            for c in chunk {
                tx = tx.transact_items(match c {
                    ConfigChange::PutStore(st) => {
                        let mut item = key(format!("STORE#{}", st.id), "META");
                        item.insert("body".into(), s(json(st)?));
                        self.put(item).build()?
                    }
                    ConfigChange::PutOffer(o) => {
                        let mut item = key(format!("OFFER#{}", o.id), "META");
                        item.insert("body".into(), s(json(o)?));
                        self.put(item).build()?
                    }
                    ConfigChange::PutPolicy(p) => {
                        let mut item = key("CONFIG", "POLICY");
                        item.insert("body".into(), s(json(p)?));
                        self.put(item).build()?
                    }
                    ConfigChange::DeleteStore(id) => self.delete_existing(format!("STORE#{id}"))?,
                    ConfigChange::DeleteOffer(id) => self.delete_existing(format!("OFFER#{id}"))?,
                    ConfigChange::PutCampaign(cp) => {
                        let mut item = key(format!("CAMPAIGN#{}", cp.id), "META");
                        item.insert("body".into(), s(json(cp)?));
                        self.put(item).build()?
                    }
                    ConfigChange::DeleteCampaign(id) => {
                        self.delete_existing(format!("CAMPAIGN#{id}"))?
                    }
                });
            }
            if k == last {
                let mut item = key("AUDIT", audit.id.as_str());
                item.insert("body".into(), s(json(audit)?));
                tx = tx.transact_items(self.put(item).build()?);
            }
            let res = tx.transact_items(self.bump_version()?).send().await;
            if let Err(e) = res {
                return match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(tc))
                        if tc
                            .cancellation_reasons()
                            .iter()
                            .any(|r| r.code() == Some("ConditionalCheckFailed")) =>
                    {
                        Ok(false)
                    }
                    _ => Err(sdk_err("TransactWriteItems", e)),
                };
            }
        }
        // A deleted campaign's results go with it (a campaign made again under its id
        // starts from nothing): its cells' partition, after the delete is committed.
        for c in changes {
            if let ConfigChange::DeleteCampaign(id) = c {
                self.clear_partition(&format!("CELLS#{id}")).await?;
            }
        }
        Ok(true)
    }

    /// A Delete of `pk / META` that cancels the transaction when there is nothing to delete.
    fn delete_existing(&self, pk: String) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, "META")))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// The audit log, newest first: Queries on the `AUDIT` partition, backwards from
    /// `before`, until `limit` entries.
    async fn audit_log_async(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut start: Option<Item> = None;
        let mut entries = Vec::new();
        while entries.len() < limit {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s("AUDIT"));
            if let Some(b) = before {
                query = query
                    .key_condition_expression("pk = :pk AND sk < :before")
                    .expression_attribute_values(":before", s(b));
            }
            let want = i32::try_from(limit - entries.len()).unwrap_or(i32::MAX);
            let out = query
                .scan_index_forward(false)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            for i in out.items() {
                entries.push(body::<AuditEntry>(i, "body")?);
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(entries)
    }

    async fn policy(&self) -> Result<Option<CapPolicy>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key("CONFIG", "POLICY")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        out.item().map(|i| body(i, "body")).transpose()
    }
}

/// A Put under construction, finished into a transaction item.
struct PutBuilderExt(aws_sdk_dynamodb::types::builders::PutBuilder);

impl PutBuilderExt {
    fn build(self) -> Result<TransactWriteItem, StoreError> {
        let put = self.0.build().map_err(|e| err("TransactWriteItems", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}

impl StateStore for DynamoStateStore {
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        Box::pin(self.load(user))
    }

    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>> {
        Box::pin(async move {
            let mut data = UserData::default();
            // One Query of the user's partition, in sort key order: decisions and outcomes
            // by time, deliveries by id.
            for item in self.partition(&user_pk(user), None).await? {
                let Some(sk) = get_s(&item, "sk") else {
                    continue;
                };
                if sk == "PROFILE" {
                    data.profile = Some(profile_state(&item)?);
                } else if let Some(e) = sk.strip_prefix("EVENT#") {
                    data.events.push(KeptEvent {
                        event_id: Id::parse(e).map_err(|e| err("decode", e))?,
                        result: body(&item, "result")?,
                    });
                } else if sk.starts_with("DECISION#") {
                    data.decisions.push(body(&item, "body")?);
                } else if sk.starts_with("DELIVERY#") {
                    data.deliveries.push(DeliveryRecord {
                        push: body(&item, "body")?,
                        status: status_of(get_s(&item, "status").unwrap_or("?"))?,
                    });
                } else if sk.starts_with("OUTCOME#") {
                    data.outcomes.push(body(&item, "body")?);
                }
            }
            data.webhooks = self.user_webhooks(user).await?;
            Ok(data)
        })
    }

    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(erased_key(user)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_err("GetItem", e))?;
            Ok(out.item().is_some())
        })
    }

    fn max_commit_events(&self) -> usize {
        // Worst case per event: its idempotency key, a decision, a delivery and its
        // pending marker, a campaign's budget count, a coupon code (3 items: the code,
        // its free marker, its link) and a presence webhook message: 9 items; plus the
        // user's profile once.
        (MAX_TRANSACTION_ITEMS - 1) / 9
    }

    fn keeps_every_event_key(&self) -> bool {
        // None for routine fixes: see the module's documentation.
        false
    }

    fn commit<'a>(&'a self, c: &'a Commit) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        Box::pin(self.commit_async(c))
    }

    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>> {
        Box::pin(self.seen(user, event))
    }

    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.claim(user, delivery_id, claim))
    }

    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        delivery_id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.finish(user, delivery_id, to))
    }

    fn pending_deliveries(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>> {
        Box::pin(self.pending(before, limit))
    }

    fn settle_stale_claims(
        &self,
        lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.settle(lease))
    }

    fn unfinished_erasures(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>> {
        Box::pin(async move {
            let mut users = Vec::new();
            for item in self.partition(ERASURE_PK, None).await? {
                let (Some(user), Some(at)) = (get_s(&item, "sk"), get_n(&item, "at")) else {
                    continue;
                };
                if at <= before.timestamp_micros() {
                    users.push(Id::parse(user).map_err(|e| StoreError(format!("{user}: {e}")))?);
                }
            }
            Ok(users)
        })
    }

    fn due_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<WebhookRecord>, StoreError>> {
        Box::pin(self.due_webhooks_async(now, limit))
    }

    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.lease_webhook_async(user, id, attempts, until))
    }

    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.settle_webhook_async(user, id, outcome))
    }

    fn dead_webhooks(&self, limit: usize) -> BoxFuture<'_, Result<Vec<WebhookRecord>, StoreError>> {
        Box::pin(self.dead_webhooks_async(limit))
    }

    fn redrive_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.redrive_webhooks_async(now))
    }

    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>> {
        Box::pin(self.erase(user))
    }

    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>> {
        Box::pin(self.list_config("STORE#"))
    }

    fn put_store<'a>(&'a self, store: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put_body(format!("STORE#{}", store.id), "META", store))
    }

    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.delete(format!("STORE#{id}"), "META"))
    }

    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>> {
        Box::pin(self.list_config("OFFER#"))
    }

    fn put_offer<'a>(&'a self, offer: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put_body(format!("OFFER#{}", offer.id), "META", offer))
    }

    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.delete(format!("OFFER#{id}"), "META"))
    }

    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>> {
        Box::pin(self.list_config("CAMPAIGN#"))
    }

    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(format!("BUDGET#{id}"), "SENDS")))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| sdk_err("GetItem", e))?;
            Ok(out
                .item()
                .and_then(|i| get_n(i, "sent"))
                .unwrap_or(0)
                .max(0) as u64)
        })
    }

    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<nearcast_core::coupon::Upload, StoreError>> {
        Box::pin(self.add_coupons_async(campaign, codes, audit))
    }

    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(self.free_coupons_async(campaign, limit))
    }

    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<nearcast_core::coupon::CouponCounts, StoreError>> {
        Box::pin(self.coupon_counts_async(campaign))
    }

    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: chrono::DateTime<chrono::Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<nearcast_core::coupon::Redemption, StoreError>> {
        Box::pin(self.redeem_coupon_async(code, at, order_id))
    }

    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        Box::pin(self.policy())
    }

    fn put_policy<'a>(&'a self, policy: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.put_body("CONFIG".into(), "POLICY", policy))
    }

    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.apply_config_async(changes, audit))
    }

    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(self.audit_log_async(before, limit))
    }

    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>> {
        Box::pin(async move {
            self.log("DELIVERY#")
                .await?
                .iter()
                .map(|i| {
                    Ok(DeliveryRecord {
                        push: body::<Push>(i, "body")?,
                        status: status_of(get_s(i, "status").unwrap_or("pending"))?,
                    })
                })
                .collect()
        })
    }

    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>> {
        Box::pin(async move {
            self.log("DECISION#")
                .await?
                .iter()
                .map(|i| body::<Decision>(i, "body"))
                .collect()
        })
    }

    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: nearcast_core::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<nearcast_core::campaign_results::Cells, StoreError>> {
        Box::pin(self.cells(campaign, level, from, to))
    }

    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>> {
        Box::pin(async move {
            self.log("OUTCOME#")
                .await?
                .iter()
                .map(|i| body::<OutcomeRecord>(i, "body"))
                .collect()
        })
    }

    /// A Scan page at a time for the partition keys of log items (projected, so only keys
    /// reach memory), then two Queries per user not seen before. Memory: one page of keys,
    /// the set of user ids seen (ids only), one user's log.
    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut seen: HashSet<String> = HashSet::new();
            let mut start: Option<Item> = None;
            loop {
                let out = self
                    .client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression(
                        "begins_with(pk, :pk) AND (begins_with(sk, :d) OR begins_with(sk, :o))",
                    )
                    .projection_expression("pk")
                    .expression_attribute_values(":pk", s("USER#"))
                    .expression_attribute_values(":d", s("DECISION#"))
                    .expression_attribute_values(":o", s("OUTCOME#"))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("Scan", e))?;
                for item in out.items() {
                    let Some(pk) = get_s(item, "pk") else {
                        continue;
                    };
                    if seen.insert(pk.to_string()) {
                        let log = self.user_log(pk).await?;
                        sink(log)?;
                    }
                }
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => break,
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ranges handed out at one instant, from several threads, never overlap, and each
    /// starts at the clock or after the last.
    #[test]
    fn sequence_ranges_never_overlap() {
        let last = AtomicI64::new(0);
        assert_eq!(seq_range(&last, 5_000, 3), 5_000);
        assert_eq!(seq_range(&last, 5_000, 2), 5_004);
        assert_eq!(seq_range(&last, 5_000, 0), 5_007);
        assert_eq!(seq_range(&last, 9_000, 1), 9_000, "the clock moved on");
        assert_eq!(seq_range(&last, 8_000, 1), 9_002, "and never back");
        let last = std::sync::Arc::new(AtomicI64::new(0));
        let ranges: Vec<(i64, i64)> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let last = last.clone();
                    s.spawn(move || {
                        (0..2_000)
                            .map(|i| {
                                let n = 1 + (i + t) % 5;
                                let start = seq_range(&last, 1_000_000, n);
                                (start, start + n as i64)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut sorted = ranges.clone();
        sorted.sort();
        for w in sorted.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
        }
    }
}
