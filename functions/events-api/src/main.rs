//! The `events-api` Lambda function: `POST /v1/events` and the user routes (consent,
//! erasure) behind an API Gateway HTTP API (payload format 2.0). It serves the very router
//! of `nearcast serve` (`nearcast_api::router`) on DynamoDB, behind the device check chosen
//! by `NEARCAST_DEVICE_AUTH` (see the library's docs); API Gateway routes only the
//! device-facing paths here.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let engine = nearcast_functions::start("events-api").await?;
    let auth = nearcast_functions::Config::from_env()?.device_auth;
    lambda_http::run(nearcast_events_api::app(engine, auth)).await
}

/// mimalloc rather than glibc's allocator, as `nearcast serve`: the cold start allocates the
/// whole catalog at once (docs/performance.md, "Cold start").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
