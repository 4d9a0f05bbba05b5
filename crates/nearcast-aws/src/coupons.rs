//! Coupon pools on DynamoDB.
//!
//! Items:
//! - `COUPON#<code> / CODE`: the code's campaign, whether it was issued and with which
//!   offer, and when and for which order it was redeemed. Kept for good, so a code is never accepted twice in an
//!   upload and never given twice.
//! - `POOL#<campaign> / FREE#<code>`: a code not given out yet. The engine Queries a few
//!   and picks one; the send's TransactWriteItems deletes it on condition it exists.
//! - `COUPON#<code> / LINK#<user>`: who it went to (user, delivery, offer), written in the
//!   send's transaction with the logs' `ttl`: it expires with the delivery it names, and an
//!   erasure of the user deletes it (found from the user's deliveries; keyed by the user, so
//!   a shared offer code that happens to equal a pool code touches no one else's link).
//! - `POOL#<campaign> / META`: `total` codes uploaded and `redeemed`.
//!
//! A send with a code adds 3 items to its transaction (1.5 KB each at most: 3 WRU × 2).

use super::{
    DynamoStateStore, Item, MAX_TRANSACTION_ITEMS, Slot, err, get_n, get_s, json, key, n, s,
    sdk_err,
};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, KeysAndAttributes, Put, Select, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use nearcast_core::audit::AuditEntry;
use nearcast_core::coupon::{CouponCounts, CouponIssue, Redemption, Upload, redemption_event_id};
use nearcast_core::ids::Id;
use nearcast_core::ports::{OutcomeKind, OutcomeRecord, StoreError};

fn code_pk(code: &str) -> String {
    format!("COUPON#{code}")
}

fn pool_pk(campaign: &Id) -> String {
    format!("POOL#{campaign}")
}

impl DynamoStateStore {
    /// The send transaction's items for one code: the code marked issued (on condition it
    /// was not), its free marker deleted (on condition it is there) and the link to the
    /// user written with the logs' expiry.
    pub(crate) fn coupon_items(
        &self,
        user: &Id,
        issue: &CouponIssue,
        i: usize,
        now: i64,
        items: &mut Vec<TransactWriteItem>,
        slots: &mut Vec<Slot>,
    ) -> Result<(), StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(code_pk(&issue.code), "CODE")))
            .update_expression("SET issued = :one, offer_id = :offer")
            .condition_expression("attribute_exists(pk) AND issued = :zero")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":offer", s(issue.offer_id.as_str()))
            .expression_attribute_values(":zero", n(0))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        items.push(TransactWriteItem::builder().update(update).build());
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(
                pool_pk(&issue.campaign_id),
                format!("FREE#{}", issue.code),
            )))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        items.push(TransactWriteItem::builder().delete(delete).build());
        let mut link = key(code_pk(&issue.code), format!("LINK#{user}"));
        link.insert("user".into(), s(user.as_str()));
        link.insert("delivery_id".into(), s(&issue.delivery_id));
        link.insert("offer_id".into(), s(issue.offer_id.as_str()));
        link.insert("ttl".into(), n(now + self.log_ttl));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(link))
            .build()
            .map_err(|e| err("TransactWriteItems", e))?;
        items.push(TransactWriteItem::builder().put(put).build());
        slots.extend([Slot::Coupon(i), Slot::Coupon(i), Slot::Other]);
        Ok(())
    }

    /// The codes among `codes` that exist already: BatchGetItem, 100 keys at a time.
    async fn existing_codes(&self, codes: &[String]) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for chunk in codes.chunks(100) {
            let mut keys: Vec<Item> = chunk.iter().map(|c| key(code_pk(c), "CODE")).collect();
            let mut attempt = 0u32;
            while !keys.is_empty() {
                let ka = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("pk")
                    .consistent_read(true)
                    .build()
                    .map_err(|e| err("BatchGetItem", e))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, ka)
                    .send()
                    .await
                    .map_err(|e| sdk_err("BatchGetItem", e))?;
                for item in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(code) = get_s(item, "pk").and_then(|p| p.strip_prefix("COUPON#")) {
                        found.push(code.to_string());
                    }
                }
                keys = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                    .unwrap_or_default();
                if !keys.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError(
                            "DynamoDB BatchGetItem: keys left unprocessed after 8 retries".into(),
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Ok(found)
    }

    /// See [`nearcast_core::ports::StateStore::add_coupons`]. The codes are checked with
    /// BatchGetItem first, then written in transactions of 49 codes (each code's item on
    /// condition it does not exist, and its free marker), the count, the audit entry and
    /// the catalog version bump with the last. A code uploaded concurrently by someone
    /// else fails its transaction; the ones before it stay written, and the error says so.
    pub(crate) async fn add_coupons_async(
        &self,
        campaign: &Id,
        codes: &[String],
        audit: Option<&AuditEntry>,
    ) -> Result<Upload, StoreError> {
        let existing = self.existing_codes(codes).await?;
        if !existing.is_empty() {
            // In the upload's order.
            let set: std::collections::HashSet<&String> = existing.iter().collect();
            return Ok(Upload::Existing(
                codes.iter().filter(|c| set.contains(c)).cloned().collect(),
            ));
        }
        let Some(audit) = audit else {
            return Ok(Upload::Added(codes.len() as u64));
        };
        let per_tx = (MAX_TRANSACTION_ITEMS - 3) / 2;
        let chunks: Vec<&[String]> = codes.chunks(per_tx).collect();
        let last = chunks.len().saturating_sub(1);
        let mut written = 0usize;
        for (k, chunk) in chunks.into_iter().enumerate() {
            let mut tx = self.client.transact_write_items();
            for code in chunk {
                let mut item = key(code_pk(code), "CODE");
                item.insert("campaign".into(), s(campaign.as_str()));
                item.insert("issued".into(), n(0));
                let put = self
                    .put(item)
                    .0
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(|e| err("TransactWriteItems", e))?;
                tx = tx.transact_items(TransactWriteItem::builder().put(put).build());
                let mut free = key(pool_pk(campaign), format!("FREE#{code}"));
                free.insert("code".into(), s(code));
                tx = tx.transact_items(self.put(free).build()?);
            }
            let count = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pool_pk(campaign), "META")))
                .update_expression("ADD #t :n")
                .expression_attribute_names("#t", "total")
                .expression_attribute_values(":n", n(chunk.len() as i64))
                .build()
                .map_err(|e| err("TransactWriteItems", e))?;
            tx = tx.transact_items(TransactWriteItem::builder().update(count).build());
            if k == last {
                let mut item = key("AUDIT", audit.id.as_str());
                item.insert("body".into(), s(json(audit)?));
                tx = tx
                    .transact_items(self.put(item).build()?)
                    .transact_items(self.bump_version()?);
            }
            if let Err(e) = tx.send().await {
                return Err(StoreError(format!(
                    "DynamoDB TransactWriteItems: coupon upload stopped after {written} of {} codes (a code was added by someone else meanwhile?): {}",
                    codes.len(),
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )));
            }
            written += chunk.len();
        }
        Ok(Upload::Added(codes.len() as u64))
    }

    /// See [`nearcast_core::ports::StateStore::free_coupons`]: one Query (strongly
    /// consistent) of the pool's free markers, in code order.
    pub(crate) async fn free_coupons_async(
        &self,
        campaign: &Id,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :free)")
            .expression_attribute_values(":pk", s(pool_pk(campaign)))
            .expression_attribute_values(":free", s("FREE#"))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("Query", e))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| get_s(i, "code").map(str::to_string))
            .collect())
    }

    /// See [`nearcast_core::ports::StateStore::coupon_counts`]: the pool's `META` and a
    /// count of its free markers (a Query with `Select COUNT`, paged).
    pub(crate) async fn coupon_counts_async(
        &self,
        campaign: &Id,
    ) -> Result<CouponCounts, StoreError> {
        let meta = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pool_pk(campaign), "META")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("GetItem", e))?;
        let get = |name: &str| meta.item().and_then(|i| get_n(i, name)).unwrap_or(0).max(0) as u64;
        let (total, redeemed) = (get("total"), get("redeemed"));
        let mut free = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :free)")
                .expression_attribute_values(":pk", s(pool_pk(campaign)))
                .expression_attribute_values(":free", s("FREE#"))
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_err("Query", e))?;
            free += out.count().max(0) as u64;
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        Ok(CouponCounts {
            total,
            issued: total.saturating_sub(free),
            redeemed,
        })
    }

    /// See [`nearcast_core::ports::StateStore::redeem_coupon`]: a read of the code and its
    /// link, then one transaction: the code marked redeemed (on condition it was issued
    /// and not redeemed), the pool's count, and the outcome in the user's partition.
    pub(crate) async fn redeem_coupon_async(
        &self,
        code: &str,
        at: DateTime<Utc>,
        order_id: Option<&str>,
    ) -> Result<Redemption, StoreError> {
        for _ in 0..4 {
            let items = self.partition(&code_pk(code), None).await?;
            let find = |sk: &str| items.iter().find(|i| get_s(i, "sk") == Some(sk));
            let Some(item) = find("CODE") else {
                return Ok(Redemption::Unknown);
            };
            let link = items
                .iter()
                .find(|i| get_s(i, "sk").is_some_and(|k| k.starts_with("LINK#")));
            let id = |name: &str| {
                link.and_then(|l| get_s(l, name))
                    .and_then(|v| Id::parse(v).ok())
            };
            let user = id("user");
            let offer = get_s(item, "offer_id").and_then(|v| Id::parse(v).ok());
            let delivery = link
                .and_then(|l| get_s(l, "delivery_id"))
                .map(str::to_string);
            if let Some(t) = get_n(item, "redeemed_at") {
                return Ok(Redemption::AlreadyRedeemed {
                    redeemed_at: DateTime::from_timestamp_micros(t).unwrap_or_default(),
                    order_id: get_s(item, "order_id").map(str::to_string),
                    offer_id: offer,
                    delivery_id: delivery,
                    user_id: user,
                });
            }
            if get_n(item, "issued") != Some(1) {
                return Ok(Redemption::NotIssued);
            }
            let campaign = get_s(item, "campaign")
                .and_then(|c| Id::parse(c).ok())
                .ok_or_else(|| StoreError(format!("coupon {code} has no campaign")))?;
            let mut set = "SET redeemed_at = :at".to_string();
            if order_id.is_some() {
                set.push_str(", order_id = :order");
            }
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(code_pk(code), "CODE")))
                .update_expression(set)
                .condition_expression("issued = :one AND attribute_not_exists(redeemed_at)")
                .expression_attribute_values(":at", n(at.timestamp_micros()))
                .expression_attribute_values(":one", n(1));
            if let Some(o) = order_id {
                update = update.expression_attribute_values(":order", s(o));
            }
            let update = update.build().map_err(|e| err("TransactWriteItems", e))?;
            let count = Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(pool_pk(&campaign), "META")))
                .update_expression("ADD redeemed :one")
                .expression_attribute_values(":one", n(1))
                .build()
                .map_err(|e| err("TransactWriteItems", e))?;
            let mut tx = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().update(update).build())
                .transact_items(TransactWriteItem::builder().update(count).build());
            if let Some(u) = &user {
                let o = OutcomeRecord {
                    detail: Default::default(),
                    event_id: redemption_event_id(code),
                    user_id: u.clone(),
                    at,
                    kind: OutcomeKind::Redeemed,
                    offer_id: offer.clone(),
                    category: None,
                    delivery_id: delivery.clone(),
                };
                tx = tx.transact_items(self.outcome_item(&o)?);
            }
            match tx.send().await {
                Ok(_) => {
                    return Ok(Redemption::Redeemed {
                        campaign_id: campaign,
                        offer_id: offer,
                        delivery_id: delivery,
                        user_id: user,
                    });
                }
                // Redeemed (or erased) meanwhile: read again.
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(TransactWriteItemsError::TransactionCanceledException(_))
                    ) => {}
                Err(e) => return Err(sdk_err("TransactWriteItems", e)),
            }
        }
        Err(StoreError(format!(
            "DynamoDB: coupon {code} changed under every attempt"
        )))
    }

    /// The keys of the links of the codes sent with `push` (an erasure deletes them): the
    /// codes stay issued, never to be given again, but lead to no one.
    pub(crate) fn coupon_link_keys(push: &nearcast_core::decision::Push) -> Vec<Item> {
        push.coupon
            .iter()
            .map(|c| key(code_pk(c), format!("LINK#{}", push.user_id)))
            .collect()
    }
}
