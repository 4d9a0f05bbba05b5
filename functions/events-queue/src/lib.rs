//! The `events-queue` Lambda function's handler: event batches arriving through SQS
//! (devices or a gateway that buffer instead of calling `POST /v1/events`).
//!
//! Each record's body is one batch, exactly as posted to `/v1/events`:
//! `{"user_id": "...", "events": [...]}`. Records are processed in order, each as its own
//! all-or-nothing batch. The answer is a partial batch response (the event source mapping
//! needs `FunctionResponseTypes: [ReportBatchItemFailures]`):
//!
//! - processed: deleted from the queue;
//! - a retryable failure (the state store failed, or too much contention on one user):
//!   listed in `batchItemFailures`, so SQS redelivers that record alone. Nothing of it was
//!   written, and event ids are idempotency keys, so the retry is safe;
//! - poison (no body, not JSON, or a batch that fails validation): logged with the field
//!   at fault and dropped, never retried, since retrying cannot fix it and it must not
//!   block or take the others with it.
//!
//! Logs carry message ids and field names, never bodies, user ids or positions.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use nearcast_core::engine::{Engine, EngineError};
use nearcast_core::event::{Batch, BatchError};

/// What became of the records of one invocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Processed (including events answered as duplicates).
    pub processed: usize,
    /// Dropped as poison.
    pub poison: usize,
    /// Handed back to SQS for a retry.
    pub retry: usize,
}

/// One record's fate.
enum Fate {
    Processed {
        events: usize,
        /// The presence webhook messages its commits wrote (webhooks on).
        messages: Vec<nearcast_core::webhook::WebhookMessage>,
    },
    Poison {
        field: String,
        reason: String,
    },
    Retry(EngineError),
}

async fn process_record(engine: &Engine, record: &SqsMessage) -> Fate {
    let poison = |field: &str, reason: String| Fate::Poison {
        field: field.to_string(),
        reason,
    };
    let Some(body) = record.body.as_deref() else {
        return poison("body", "is missing".into());
    };
    let value: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        // serde_json's message names the line and column only, never the content.
        Err(e) => return poison("body", format!("is not valid JSON: {e}")),
    };
    let batch = match Batch::from_json(&value, engine.now()) {
        Ok(b) => b,
        Err(BatchError::Body(e)) => return poison(&e.field, e.reason),
        Err(BatchError::Events(rejected)) => {
            let fields: Vec<&str> = rejected.iter().map(|r| r.error.field.as_str()).collect();
            return poison(
                &fields.join(","),
                format!("{} invalid event(s)", rejected.len()),
            );
        }
    };
    match engine.process_batch(&batch).await {
        Ok(reports) => Fate::Processed {
            events: reports.len(),
            messages: if engine.webhooks() {
                reports
                    .iter()
                    .filter(|r| r.status == "accepted")
                    .filter_map(|r| r.decision.as_ref())
                    .filter_map(nearcast_core::webhook::WebhookMessage::of)
                    .collect()
            } else {
                Vec::new()
            },
        },
        Err(e @ (EngineError::Store(_) | EngineError::Contention)) => Fate::Retry(e),
        // Validation the engine does itself: as poison as a bad body.
        Err(EngineError::Invalid(e)) => poison(&e.field, e.reason),
        Err(e @ (EngineError::NotFound(_) | EngineError::Model(_))) => {
            poison("body", e.to_string())
        }
    }
}

/// Processes every record of `event`; returns the partial batch response and the tally.
pub async fn process(engine: &Engine, event: SqsEvent) -> (SqsBatchResponse, Tally) {
    let (response, tally, _) = process_collecting(engine, event).await;
    (response, tally)
}

/// As [`process`], also answering the presence webhook messages the batch's commits wrote.
async fn process_collecting(
    engine: &Engine,
    event: SqsEvent,
) -> (
    SqsBatchResponse,
    Tally,
    Vec<nearcast_core::webhook::WebhookMessage>,
) {
    let mut response = SqsBatchResponse::default();
    let mut tally = Tally::default();
    let mut written = Vec::new();
    for record in &event.records {
        let message_id = record.message_id.as_deref().unwrap_or("");
        match process_record(engine, record).await {
            Fate::Processed { events, messages } => {
                tracing::debug!(message_id, events, "record processed");
                tally.processed += 1;
                written.extend(messages);
            }
            Fate::Poison { field, reason } => {
                tracing::warn!(message_id, field = %field, reason = %reason, "poison record dropped");
                tally.poison += 1;
            }
            Fate::Retry(e) => {
                tracing::warn!(message_id, error = %e, "record failed, SQS will retry it");
                tally.retry += 1;
                response.add_failure(message_id);
            }
        }
    }
    tracing::info!(
        records = event.records.len(),
        processed = tally.processed,
        poison = tally.poison,
        retry = tally.retry,
        "sqs batch handled"
    );
    (response, tally, written)
}

/// The handler: processes every record of `event` and lists the ones to retry.
pub async fn handle(engine: &Engine, event: SqsEvent) -> SqsBatchResponse {
    process(engine, event).await.0
}

/// [`handle`], then the presence webhook messages the batch wrote posted by `hooks` at once,
/// without reading the outbox (a failure waits there for the schedule's pass, and a relay
/// failure never fails the batch).
pub async fn handle_delivering(
    engine: &Engine,
    event: SqsEvent,
    hooks: Option<&nearcast_core::webhook::WebhookRelay>,
) -> SqsBatchResponse {
    let (response, _, written) = process_collecting(engine, event).await;
    if let Some(h) = hooks
        && !written.is_empty()
    {
        match h.deliver_fresh(&written).await {
            Ok(r) => tracing::info!(
                delivered = r.delivered,
                retried = r.retried,
                skipped = r.skipped,
                "webhooks of the batch posted"
            ),
            Err(e) => tracing::warn!(error = %e, "webhooks of the batch wait for the schedule"),
        }
    }
    response
}

/// What invoked the function: SQS with records, the table's stream with new presence
/// webhook messages, or the outbox relay's schedule.
#[derive(Debug)]
pub enum Invocation {
    /// An SQS batch.
    Sqs(SqsEvent),
    /// Records of the table's DynamoDB stream (`eventSource: aws:dynamodb`): the presence
    /// webhook messages just inserted in the outbox (by events-api's and events-queue's
    /// commits, or a redrive), posted at once by [`deliver_inserted`]. The event source
    /// mapping filters the stream to those inserts; `skipped` counts records that are not
    /// one anyway.
    Outbox {
        /// The messages, in stream order.
        messages: Vec<nearcast_core::webhook::WebhookMessage>,
        /// Records that were not the insert of a readable outbox message.
        skipped: usize,
    },
    /// The EventBridge schedule (`detail-type: Scheduled Event`): run the outbox relay.
    Relay,
}

/// Reads an invocation payload: an object with `Records` is an SQS batch or, when its
/// records come from `aws:dynamodb`, the table's stream; an EventBridge scheduled event runs
/// the relay.
///
/// # Errors
/// Anything else, naming what is wrong.
pub fn invocation(payload: serde_json::Value) -> Result<Invocation, String> {
    if let Some(records) = payload.get("Records") {
        let from_stream = records
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r.get("eventSource"))
            .and_then(serde_json::Value::as_str)
            == Some("aws:dynamodb");
        if from_stream {
            let (messages, skipped) = outbox_inserts(records);
            return Ok(Invocation::Outbox { messages, skipped });
        }
        return serde_json::from_value(payload)
            .map(Invocation::Sqs)
            .map_err(|e| format!("not an SQS event: {e}"));
    }
    match payload
        .get("detail-type")
        .and_then(serde_json::Value::as_str)
    {
        Some("Scheduled Event") => Ok(Invocation::Relay),
        _ => Err("neither an SQS event (Records) nor a scheduled event (detail-type)".into()),
    }
}

/// The sort of an outbox item's partition key: `HOOK#<0-7>` (dead letters are `HOOKDEAD#`).
const OUTBOX_PK_PREFIX: &str = "HOOK#";

/// The webhook messages of the stream records that insert an outbox item, and how many
/// records were something else. Only the item's `body` is read (the message as the commit
/// wrote it); the record's keys, times and sizes are not needed.
fn outbox_inserts(
    records: &serde_json::Value,
) -> (Vec<nearcast_core::webhook::WebhookMessage>, usize) {
    let mut messages = Vec::new();
    let mut skipped = 0;
    for r in records.as_array().into_iter().flatten() {
        let image = r.pointer("/dynamodb/NewImage");
        let string = |attr: &str| {
            image
                .and_then(|i| i.get(attr))
                .and_then(|a| a.get("S"))
                .and_then(serde_json::Value::as_str)
        };
        let message = (r.get("eventName").and_then(serde_json::Value::as_str) == Some("INSERT"))
            .then_some(())
            .filter(|()| string("pk").is_some_and(|pk| pk.starts_with(OUTBOX_PK_PREFIX)))
            .and_then(|()| string("body"))
            .and_then(|b| serde_json::from_str(b).ok());
        match message {
            Some(m) => messages.push(m),
            None => skipped += 1,
        }
    }
    (messages, skipped)
}

/// Posts the presence webhook messages the table's stream announced, at once (a message
/// written by events-api, whose sender answers the device first, waits no longer than the
/// stream's delivery, about a second, instead of the schedule's minute). Each is leased as
/// a first attempt, so one that events-queue's own batch or another invocation already
/// took is skipped. Never fails: what is not delivered waits in the outbox for the
/// schedule's pass (failing would make Lambda retry the stream's batch, and hold its shard).
pub async fn deliver_inserted(
    hooks: Option<&nearcast_core::webhook::WebhookRelay>,
    messages: &[nearcast_core::webhook::WebhookMessage],
    skipped: usize,
) -> nearcast_core::webhook::RelayReport {
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "stream records that are not a new outbox message (check the event source mapping's filter)"
        );
    }
    let Some(hooks) = hooks.filter(|_| !messages.is_empty()) else {
        return nearcast_core::webhook::RelayReport::default();
    };
    match hooks.deliver_fresh(messages).await {
        Ok(r) => {
            tracing::info!(
                delivered = r.delivered,
                retried = r.retried,
                skipped = r.skipped,
                "webhooks from the stream posted"
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhooks from the stream wait for the schedule");
            nearcast_core::webhook::RelayReport::default()
        }
    }
}

/// Presence webhook messages one run posts at most.
pub const WEBHOOKS_PER_RUN: usize = 500;

/// Posts the presence webhook messages due: the relay's scheduled pass, which takes
/// retries and what events-api wrote (a batch's own messages are posted by
/// [`handle_delivering`]).
///
/// # Errors
/// A store failure (the rest waits for the next run).
pub async fn deliver_webhooks(
    hooks: &nearcast_core::webhook::WebhookRelay,
) -> Result<(), EngineError> {
    let r = hooks.run_once(WEBHOOKS_PER_RUN).await?;
    if r.delivered + r.retried + r.dead > 0 {
        tracing::info!(
            delivered = r.delivered,
            retried = r.retried,
            dead = r.dead,
            "webhook relay ran"
        );
    }
    Ok(())
}

/// How long a committed push waits for its own sender before the relay takes it.
pub const RELAY_GRACE_SECS: i64 = 60;

/// The outbox relay on AWS: sends the pushes committed at least [`RELAY_GRACE_SECS`] ago
/// that no sender ever claimed (an events-api or events-queue instance that died or timed
/// out between its commit and its send, or whose commit answer was lost). Answers how many
/// it sent. First it completes erasures that stopped halfway
/// ([`Engine::resume_erasures`]); last it settles claims whose sender died after claiming
/// ([`Engine::settle_stale_claims`]: `unconfirmed`, never sent twice).
///
/// # Errors
/// A store failure (the rest waits for the next schedule).
pub async fn relay(
    engine: &Engine,
    webhooks: Option<&nearcast_core::webhook::WebhookRelay>,
) -> Result<usize, EngineError> {
    let erased = engine
        .resume_erasures(chrono::Duration::seconds(RELAY_GRACE_SECS))
        .await?;
    if erased > 0 {
        tracing::info!(erased, "completed erasures that had stopped halfway");
    }
    let sent = engine
        .relay_pending(chrono::Duration::seconds(RELAY_GRACE_SECS), 500)
        .await?;
    let settled = engine
        .settle_stale_claims(nearcast_core::engine::CLAIM_LEASE)
        .await?;
    tracing::info!(relayed = sent, settled, "outbox relay ran");
    if let Some(hooks) = webhooks {
        deliver_webhooks(hooks).await?;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stream record as Lambda delivers it from a DynamoDB stream (NEW_IMAGE view).
    fn record(name: &str, pk: &str, body: &str) -> serde_json::Value {
        json!({
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-north-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_795_168_790,
                "Keys": {"pk": {"S": pk}, "sk": {"S": "ana#msg_0123456789abcdef"}},
                "NewImage": {
                    "pk": {"S": pk}, "sk": {"S": "ana#msg_0123456789abcdef"},
                    "body": {"S": body}, "attempts": {"N": "0"}, "next_at": {"N": "0"},
                    "ttl": {"N": "1797760790"}
                },
                "SequenceNumber": "111",
                "SizeBytes": 260,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:eu-north-1:123456789012:table/nearcast-prod/stream/2026-12-05T00:00:00.000"
        })
    }

    fn message(event: &str) -> String {
        json!({"id": "msg_0123456789abcdef", "user_id": "ana", "event_id": event,
            "at": "2026-12-05T10:00:00Z",
            "changes": [{"store_id": "s1", "transition": "enter", "since": "2026-12-05T10:00:00Z"}]})
        .to_string()
    }

    #[test]
    fn the_streams_new_outbox_messages_are_read_and_everything_else_is_counted() {
        let good = message("e1");
        assert!(
            serde_json::from_str::<nearcast_core::webhook::WebhookMessage>(&good).is_ok(),
            "the test's message is one the commit writes"
        );
        let payload = json!({"Records": [
            record("INSERT", "HOOK#3", &good),
            record("MODIFY", "HOOK#3", &good),       // a lease or a retry
            record("REMOVE", "HOOK#3", &good),       // delivered
            record("INSERT", "HOOKDEAD#3", &good),   // dead-lettered
            record("INSERT", "USER#ana", &good),     // not the outbox
            record("INSERT", "HOOK#5", "{\"id\": "), // not a message
            record("INSERT", "HOOK#5", &message("e2")),
        ]});
        let Ok(Invocation::Outbox { messages, skipped }) = invocation(payload) else {
            panic!("a stream event")
        };
        let events: Vec<&str> = messages.iter().map(|m| m.event_id.as_str()).collect();
        assert_eq!(events, ["e1", "e2"]);
        assert_eq!(skipped, 5);
    }

    #[test]
    fn sqs_batches_and_schedules_are_told_from_the_stream() {
        let sqs = json!({"Records": [{"messageId": "m1", "body": "{}", "eventSource": "aws:sqs"}]});
        assert!(matches!(invocation(sqs), Ok(Invocation::Sqs(e)) if e.records.len() == 1));
        assert!(matches!(
            invocation(json!({"Records": []})),
            Ok(Invocation::Sqs(e)) if e.records.is_empty()
        ));
        assert!(matches!(
            invocation(json!({"detail-type": "Scheduled Event"})),
            Ok(Invocation::Relay)
        ));
        assert!(invocation(json!({"hello": 1})).is_err());
    }

    #[tokio::test]
    async fn without_webhooks_or_messages_nothing_is_posted() {
        let r = deliver_inserted(None, &[], 3).await;
        assert_eq!(r, nearcast_core::webhook::RelayReport::default());
    }
}
