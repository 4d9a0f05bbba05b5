//! The presence webhook outbox on DynamoDB ([`nearcast_core::webhook`]).
//!
//! Items:
//! - `HOOK#<0-7> / <user>#<message id>`: a message not yet delivered: `body` (the message
//!   JSON), `attempts`, `next_at` (epoch µs; 0 = due at once), `last_error`, `ttl` (30
//!   days). Written in the commit of the event that changed presence (one Put in its
//!   transaction), deleted when the receiver takes it. A person's messages share one of
//!   the eight partitions (by a hash of their id), so erasure finds them with one Query.
//! - `HOOKDEAD#<0-7> / <user>#<message id>`: a dead letter, the same attributes with
//!   `next_at` the time it died; `ttl` 30 days from then.
//!
//! Requests: the relay reads due messages with 8 Queries (the partitions hold only
//! undelivered messages; a filter on `next_at` returns only the due ones, and at most the
//! `limit` first due are kept in memory), leases each with one conditional UpdateItem, and settles it with
//! a DeleteItem (delivered), an UpdateItem (retry) or a TransactWriteItems (dead: the
//! message moved to its dead-letter partition). A message costs about 2 WRU in its commit's
//! transaction, 1 for the lease and 1 for the delete.

use super::{DynamoStateStore, Item, body, err, get_n, get_s, json, key, moved, n, s, sdk_err};
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use nearcast_core::ids::Id;
use nearcast_core::ports::StoreError;
use nearcast_core::webhook::{WebhookMessage, WebhookOutcome, WebhookRecord};
use std::collections::BinaryHeap;

/// Partitions of each kind.
pub(crate) const SHARDS: u64 = 8;

/// How long a message or a dead letter is kept at most.
const TTL_SECS: i64 = nearcast_core::webhook::KEEP_DAYS * 24 * 3600;

fn shard(user: &Id) -> u64 {
    nearcast_core::holdout::stable_hash(&["hook", user.as_str()]) % SHARDS
}

/// The outbox partition of `user`'s messages.
pub(crate) fn live_pk(user: &Id) -> String {
    format!("HOOK#{}", shard(user))
}

/// The dead-letter partition of `user`'s messages.
pub(crate) fn dead_pk(user: &Id) -> String {
    format!("HOOKDEAD#{}", shard(user))
}

/// The sort key prefix of `user`'s messages.
pub(crate) fn user_prefix(user: &Id) -> String {
    format!("{user}#")
}

fn sk(user: &Id, id: &str) -> String {
    format!("{user}#{id}")
}

fn record(item: &Item, dead: bool) -> Result<WebhookRecord, StoreError> {
    Ok(WebhookRecord {
        message: body(item, "body")?,
        attempts: u32::try_from(get_n(item, "attempts").unwrap_or(0)).unwrap_or(0),
        next_at: DateTime::<Utc>::from_timestamp_micros(get_n(item, "next_at").unwrap_or(0))
            .unwrap_or(DateTime::UNIX_EPOCH),
        last_error: get_s(item, "last_error").map(str::to_owned),
        dead,
    })
}

/// A record ordered by when it is due, then by message id (the relay's order).
struct ByDue(WebhookRecord);

impl ByDue {
    fn key(&self) -> (DateTime<Utc>, &str) {
        (self.0.next_at, self.0.message.id.as_str())
    }
}

impl PartialEq for ByDue {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ByDue {}

impl PartialOrd for ByDue {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByDue {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl DynamoStateStore {
    /// The Put of a new message, for the commit's transaction.
    pub(crate) fn webhook_put(
        &self,
        m: &WebhookMessage,
        now: i64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(live_pk(&m.user_id), sk(&m.user_id, &m.id));
        item.insert("body".into(), s(json(m)?));
        item.insert("attempts".into(), n(0));
        item.insert("next_at".into(), n(0));
        item.insert("ttl".into(), n(now + TTL_SECS));
        self.put(item).build()
    }

    /// The first `limit` records by (`next_at`, id) of the partitions `prefix#0..7`, those
    /// due by `due_by` when given, read page by page and kept in a bounded heap: the memory
    /// of `limit` records and one page, however many the partitions hold (a receiver down
    /// for hours leaves thousands backing off, a month of dead letters more). The filter
    /// on `next_at` saves the transfer and the parsing of messages that are not due; the
    /// read itself is still paid per item, see docs/aws.md.
    async fn first_records(
        &self,
        prefix: &str,
        due_by: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        let dead = prefix == "HOOKDEAD";
        let mut heap: BinaryHeap<ByDue> = BinaryHeap::with_capacity(limit.min(4096) + 1);
        for k in 0..SHARDS {
            let mut start: Option<Item> = None;
            loop {
                let mut query = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(format!("{prefix}#{k}")));
                if let Some(t) = due_by {
                    query = query
                        .filter_expression("next_at <= :due")
                        .expression_attribute_values(":due", n(t.timestamp_micros()));
                }
                let out = query
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| sdk_err("Query", e))?;
                for item in out.items() {
                    let r = record(item, dead)?;
                    if due_by.is_some_and(|t| r.next_at > t) {
                        continue;
                    }
                    heap.push(ByDue(r));
                    if heap.len() > limit {
                        heap.pop();
                    }
                }
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => break,
                }
            }
        }
        Ok(heap.into_sorted_vec().into_iter().map(|b| b.0).collect())
    }

    pub(crate) async fn due_webhooks_async(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        self.first_records("HOOK", Some(now), limit).await
    }

    pub(crate) async fn dead_webhooks_async(
        &self,
        limit: usize,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        self.first_records("HOOKDEAD", None, limit).await
    }

    /// `user`'s messages, live then dead (subject access).
    pub(crate) async fn user_webhooks(&self, user: &Id) -> Result<Vec<WebhookRecord>, StoreError> {
        let mut v = Vec::new();
        for (pk, dead) in [(live_pk(user), false), (dead_pk(user), true)] {
            for item in self.partition(&pk, Some(&user_prefix(user))).await? {
                v.push(record(&item, dead)?);
            }
        }
        Ok(v)
    }

    /// The keys of `user`'s messages, live and dead (erasure).
    pub(crate) async fn user_webhook_keys(&self, user: &Id) -> Result<Vec<Item>, StoreError> {
        let mut v = Vec::new();
        for pk in [live_pk(user), dead_pk(user)] {
            for item in self.partition(&pk, Some(&user_prefix(user))).await? {
                if let Some(sk) = get_s(&item, "sk") {
                    v.push(key(&pk, sk));
                }
            }
        }
        Ok(v)
    }

    pub(crate) async fn lease_webhook_async(
        &self,
        user: &Id,
        id: &str,
        attempts: u32,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(live_pk(user), sk(user, id))))
            .update_expression("SET attempts = :next, next_at = :until")
            .condition_expression("attempts = :seen")
            .expression_attribute_values(":seen", n(i64::from(attempts)))
            .expression_attribute_values(":next", n(i64::from(attempts) + 1))
            .expression_attribute_values(":until", n(until.timestamp_micros()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_err("UpdateItem", e)),
        }
    }

    pub(crate) async fn settle_webhook_async(
        &self,
        user: &Id,
        id: &str,
        outcome: WebhookOutcome,
    ) -> Result<(), StoreError> {
        let k = key(live_pk(user), sk(user, id));
        match outcome {
            WebhookOutcome::Delivered => {
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(k))
                    .send()
                    .await
                    .map_err(|e| sdk_err("DeleteItem", e))?;
                Ok(())
            }
            WebhookOutcome::Retry { at, error } => {
                let res = self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(k))
                    .update_expression("SET next_at = :at, last_error = :e")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(":at", n(at.timestamp_micros()))
                    .expression_attribute_values(":e", s(error))
                    .send()
                    .await;
                match res {
                    Ok(_) => Ok(()),
                    // Erased meanwhile: nothing to retry.
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(sdk_err("UpdateItem", e)),
                }
            }
            WebhookOutcome::Dead { error } => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(k.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| sdk_err("GetItem", e))?;
                let Some(mut item) = out.item().cloned() else {
                    return Ok(());
                };
                let now = Utc::now();
                item.insert("pk".into(), s(dead_pk(user)));
                item.insert("next_at".into(), n(now.timestamp_micros()));
                item.insert("last_error".into(), s(error));
                item.insert("ttl".into(), n(now.timestamp() + TTL_SECS));
                self.move_item(k, item).await.map(|_| ())
            }
        }
    }

    /// Deletes `from` (on condition it exists) and puts `to`, in one transaction; `false`
    /// when `from` was gone.
    async fn move_item(&self, from: Item, to: Item) -> Result<bool, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(from))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().delete(delete).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            // An SDK retry of a move whose answer was lost is then applied once.
            .client_request_token(format!("{:032x}", rand::random::<u128>()))
            .send()
            .await;
        moved(res)
    }

    pub(crate) async fn redrive_webhooks_async(
        &self,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut moved = 0;
        for k in 0..SHARDS {
            let pk = format!("HOOKDEAD#{k}");
            for item in self.partition(&pk, None).await? {
                let Some(sk) = get_s(&item, "sk").map(str::to_owned) else {
                    continue;
                };
                let mut live = item.clone();
                live.insert("pk".into(), s(format!("HOOK#{k}")));
                live.insert("attempts".into(), n(0));
                live.insert("next_at".into(), n(now.timestamp_micros()));
                live.insert("ttl".into(), n(now.timestamp() + TTL_SECS));
                live.remove("last_error");
                if self.move_item(key(&pk, sk), live).await? {
                    moved += 1;
                }
            }
        }
        Ok(moved)
    }
}
