//! The `events-queue` Lambda function: SQS event batches with partial batch failures, new
//! presence webhook messages from the table's stream, and the outbox relay on an
//! EventBridge schedule. See [`nearcast_events_queue`].

use lambda_runtime::{Error, LambdaEvent, service_fn};
use nearcast_events_queue::Invocation;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let (engine, config) = nearcast_functions::start_configured("events-queue").await?;
    let hooks = nearcast_functions::webhook_relay(&engine, &config)?;
    let (engine, hooks) = (&engine, hooks.as_ref());
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            match nearcast_events_queue::invocation(event.payload)? {
                Invocation::Sqs(batch) => Ok::<serde_json::Value, Error>(serde_json::to_value(
                    nearcast_events_queue::handle_delivering(engine, batch, hooks).await,
                )?),
                Invocation::Outbox { messages, skipped } => {
                    let r =
                        nearcast_events_queue::deliver_inserted(hooks, &messages, skipped).await;
                    Ok(serde_json::json!({
                        "delivered": r.delivered, "retried": r.retried, "skipped": r.skipped
                    }))
                }
                Invocation::Relay => {
                    let sent = nearcast_events_queue::relay(engine, hooks).await?;
                    Ok(serde_json::json!({ "relayed": sent }))
                }
            }
        },
    ))
    .await
}

/// mimalloc rather than glibc's allocator, as `nearcast serve`: the cold start allocates the
/// whole catalog at once (docs/performance.md, "Cold start").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
