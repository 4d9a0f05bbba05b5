//! The `events-queue` Lambda function: SQS event batches, partial batch failures. See
//! [`nearcast_events_queue`].

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let engine = nearcast_functions::start("events-queue").await?;
    let engine = &engine;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<SqsBatchResponse, Error>(nearcast_events_queue::handle(engine, event.payload).await)
    }))
    .await
}
