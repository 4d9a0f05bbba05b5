//! The smallest `lambda_runtime` function, built with the workspace's release profile like the
//! real functions: it answers every invocation with `{"ok": true}`. `bench/coldstart/run.sh`
//! measures its init beside the functions' so that what the runtime itself costs is known.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({ "ok": true }))
    }))
    .await
}
