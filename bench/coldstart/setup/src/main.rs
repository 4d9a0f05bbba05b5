//! `nearcast-coldstart-setup CONFIG_DIR TABLE BUCKET`: builds the catalog of CONFIG_DIR
//! (stores.json, offers.json as `nearcast-loadgen gen-config` writes them), creates TABLE and
//! BUCKET at AWS_ENDPOINT_URL if missing, commits one configuration change (the policy, with
//! its audit entry: the newest change) and publishes the catalog's snapshot for it, as
//! admin-api does after a change. The stores themselves are not written to the table: a
//! function that starts from the snapshot never reads them (moto cannot hold a 10,000-store
//! import through transactions in memory), so a function that fell back to the table would
//! start with an empty catalog, and its log would say so.

use nearcast_aws::DynamoStateStore;
use nearcast_aws::snapshots::CatalogSnapshots;
use nearcast_core::audit::{Actor, AuditEntry, ConfigChange};
use nearcast_core::catalog::Catalog;
use nearcast_core::config::CapPolicy;
use nearcast_core::ports::StateStore;
use std::path::PathBuf;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, table, bucket] = args.as_slice() else {
        return Err("usage: nearcast-coldstart-setup CONFIG_DIR TABLE BUCKET".into());
    };
    let dir = PathBuf::from(dir);
    let stores = nearcast::load_stores(&dir.join("stores.json")).map_err(|e| e.to_string())?;
    let offers = nearcast::load_offers(&dir.join("offers.json")).map_err(|e| e.to_string())?;
    let policy = CapPolicy::default();
    let catalog = Catalog::build(stores, offers, policy.clone()).map_err(|e| e.to_string())?;
    let aws = nearcast_aws::sdk_config(None).await;
    let client = DynamoStateStore::client_from(&aws);
    DynamoStateStore::create_table(&client, table)
        .await
        .map_err(|e| e.to_string())?;
    let s3 = nearcast_aws::model_store::S3Blobs::client_from(&aws);
    nearcast_aws::model_store::S3Blobs::create_bucket(&s3, bucket).await?;
    let dynamo = Arc::new(DynamoStateStore::new(client, table.clone()));
    let entry = AuditEntry::new(
        chrono::Utc::now(),
        &Actor::system("cold start bench"),
        "policy.put",
    );
    dynamo
        .apply_config(&[ConfigChange::PutPolicy(policy)], &entry)
        .await
        .map_err(|e| e.to_string())?;
    let catalog = catalog.at_version(Some(entry.id.clone()));
    let snapshots = CatalogSnapshots::new(s3, bucket.clone(), dynamo);
    if !snapshots.publish(&catalog).await? {
        return Err("snapshot not pointed at".into());
    }
    println!(
        "{} stores, {} offers: s3://{bucket}/{}",
        catalog.store_count(),
        catalog.offers.len(),
        CatalogSnapshots::key_of(&entry.id)
    );
    Ok(())
}
