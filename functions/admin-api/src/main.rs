//! The `admin-api` Lambda function: `/v1/admin/*` (stores, offers, policy, simulate) behind
//! an API Gateway HTTP API (payload format 2.0) with its own authorizer. It serves the same
//! router as `events-api` and `nearcast serve`; which routes reach it is decided by API
//! Gateway's route table (only `/v1/admin/{proxy+}` and `/healthz` are mapped to it), not
//! here. With `NEARCAST_ADMIN_AUTH=jwt` each route needs a role from the marketer's JWT
//! (see the library's docs).
//!
//! A configuration change is written to DynamoDB and rebuilds this instance's catalog at
//! once; `POST /v1/admin/model/reload` loads the models from S3 and puts them in service at
//! once. Both are announced on the table, and the other warm instances of the functions
//! follow within `NEARCAST_CATALOG_REFRESH_SECS` (`nearcast_aws::refresh`).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let auth = nearcast_functions::Config::from_env()?.admin_auth;
    let engine = nearcast_functions::start("admin-api").await?;
    lambda_http::run(nearcast_admin_api::app(engine, auth)).await
}

/// mimalloc rather than glibc's allocator, as `nearcast serve`: the cold start allocates the
/// whole catalog at once (docs/performance.md, "Cold start").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
