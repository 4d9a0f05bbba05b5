//! The `events-api` Lambda function: `POST /v1/events` and the user routes (consent,
//! erasure) behind an API Gateway HTTP API (payload format 2.0). It serves the very router
//! of `nearcast serve` (`nearcast_api::router`) on DynamoDB; API Gateway routes only the
//! device-facing paths here.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let engine = nearcast_functions::start("events-api").await?;
    lambda_http::run(nearcast_api::router(engine)).await
}
