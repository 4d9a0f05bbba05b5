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

/// What invoked the function: SQS with records, or the outbox relay's schedule.
#[derive(Debug)]
pub enum Invocation {
    /// An SQS batch.
    Sqs(SqsEvent),
    /// The EventBridge schedule (`detail-type: Scheduled Event`): run the outbox relay.
    Relay,
}

/// Reads an invocation payload: an object with `Records` is an SQS batch, an EventBridge
/// scheduled event runs the relay.
///
/// # Errors
/// Anything else, naming what is wrong.
pub fn invocation(payload: serde_json::Value) -> Result<Invocation, String> {
    if payload.get("Records").is_some() {
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
