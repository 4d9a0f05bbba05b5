//! Catalog snapshots in S3: what a deciding function loads at cold start (and after a
//! catalog change) instead of scanning every store and offer and compiling the geofence
//! index again ([`nearcast_core::snapshot`] holds the format).
//!
//! - **Writing** (admin-api, after every configuration change it answers for): the catalog
//!   in service is encoded and put at `catalog/<configuration version>.ncsnap` in the
//!   bucket, then `CONFIG / VERSION` is pointed at it (`snapshot_key`, `snapshot_of`) unless
//!   it points at a newer one already; the object it pointed at before is deleted (a reader
//!   that was fetching it falls back to the table).
//! - **Reading**: the pointer comes with the version check every instance makes anyway. The
//!   snapshot is used only when it holds the newest configuration change (its version is the
//!   newest audit entry, the rule the engine applies to its own catalog before a change in
//!   place); otherwise, or when the object is missing or refused, the catalog is built from
//!   the table as before. So a snapshot can be late or absent, never wrong.
//!
//! Cost: one PutObject, one UpdateItem and one DeleteObject per configuration change; one
//! GetObject per cold start and per catalog change seen by an instance, instead of two Scans.

use crate::DynamoStateStore;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use nearcast_core::catalog::Catalog;
use nearcast_core::engine::CatalogSink;
use nearcast_core::ports::{BoxFuture, StateStore};
use std::sync::Arc;

/// The key prefix of catalog snapshots in their bucket.
pub const PREFIX: &str = "catalog/";

/// Catalog snapshots in one S3 bucket, pointed at from one table: see the
/// [module documentation](self).
pub struct CatalogSnapshots {
    client: Client,
    bucket: String,
    table: Arc<DynamoStateStore>,
    /// The version this instance published last (a request that changed nothing publishes
    /// nothing).
    last: tokio::sync::Mutex<Option<String>>,
}

/// Why a snapshot was not used (the catalog is then built from the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// None published yet.
    NonePublished,
    /// The newest published holds an older configuration than the newest change.
    Stale,
    /// The object is missing.
    Missing,
    /// S3 or DynamoDB failed, or the object did not read: the cause.
    Failed(String),
}

impl CatalogSnapshots {
    /// Snapshots in `bucket` through `client`, pointed at from `table`.
    pub fn new(client: Client, bucket: impl Into<String>, table: Arc<DynamoStateStore>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            table,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The object key of the snapshot of configuration version `version`.
    pub fn key_of(version: &str) -> String {
        format!("{PREFIX}{version}.ncsnap")
    }

    /// Publishes `catalog` (see the [module documentation](self)). Returns whether the
    /// pointer now names it (`false`: a newer snapshot was published meanwhile, or the
    /// catalog has no version, as before any change).
    ///
    /// # Errors
    /// The S3 or DynamoDB failure; the pointer then names the previous snapshot.
    pub async fn publish(&self, catalog: &Catalog) -> Result<bool, String> {
        let Some(version) = catalog.version.clone() else {
            return Ok(false);
        };
        let mut last = self.last.lock().await;
        if last.as_deref() == Some(version.as_str()) {
            return Ok(true);
        }
        let bytes =
            nearcast_core::snapshot::encode(catalog).map_err(|e| format!("{version}: {e}"))?;
        let key = Self::key_of(&version);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "S3 PutObject s3://{}/{key}: {}",
                    self.bucket,
                    DisplayErrorContext(&e)
                )
            })?;
        let (pointed, before) = self
            .table
            .point_snapshot(&key, &version)
            .await
            .map_err(|e| e.0)?;
        // The object no pointer names: ours when a newer one won, else the one replaced.
        *last = Some(version.clone());
        let orphan = if pointed {
            before.filter(|b| *b != key)
        } else {
            Some(key.clone())
        };
        if let Some(old) = orphan {
            if let Err(e) = self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&old)
                .send()
                .await
            {
                tracing::warn!(key = %old, error = %DisplayErrorContext(&e), "old catalog snapshot not deleted");
            }
        }
        Ok(pointed)
    }

    /// The newest catalog, when a published snapshot holds it (see the
    /// [module documentation](self)).
    ///
    /// # Errors
    /// Why no snapshot is used.
    pub async fn load(&self) -> Result<Catalog, Skipped> {
        let pointer = self
            .table
            .versions()
            .await
            .map_err(|e| Skipped::Failed(e.0))?
            .snapshot;
        self.load_at(pointer, false).await
    }

    /// As [`Self::load`], from the snapshot pointer of a [`DynamoStateStore::versions`] just
    /// read. `early`: fetch the object while the newest change is checked, not after it:
    /// what a cold start does (it has nothing else to do meanwhile); a running function
    /// checks first, as right after a change the object is stale until admin-api publishes
    /// the next, and fetching it would be for nothing.
    ///
    /// # Errors
    /// As [`Self::load`].
    pub async fn load_at(
        &self,
        pointer: Option<(String, String)>,
        early: bool,
    ) -> Result<Catalog, Skipped> {
        let Some((key, of)) = pointer else {
            return Err(Skipped::NonePublished);
        };
        let newest = async {
            let newest = self
                .table
                .audit_log(None, 1)
                .await
                .map_err(|e| Skipped::Failed(e.0))?
                .pop()
                .map(|e| e.id);
            if newest.as_deref() == Some(of.as_str()) {
                Ok(())
            } else {
                Err(Skipped::Stale)
            }
        };
        let catalog = if early {
            let (newest, catalog) = tokio::join!(newest, self.fetch(&key));
            newest?;
            catalog?
        } else {
            newest.await?;
            self.fetch(&key).await?
        };
        if catalog.version.as_deref() != Some(of.as_str()) {
            return Err(Skipped::Failed(format!(
                "{key} holds version {:?}, the pointer says {of}",
                catalog.version
            )));
        }
        Ok(catalog)
    }

    /// The catalog in object `key`, read as it arrives.
    async fn fetch(&self, key: &str) -> Result<Catalog, Skipped> {
        let bytes = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            // Into one buffer of the object's size as it arrives: collecting the chunks and
            // joining them would touch twice the memory (tens of MB at 100,000 stores).
            Ok(mut out) => {
                let size = out.content_length().unwrap_or(0).clamp(0, 1 << 30) as usize;
                let mut bytes = Vec::with_capacity(size);
                while let Some(chunk) = out
                    .body
                    .try_next()
                    .await
                    .map_err(|e| Skipped::Failed(format!("S3 GetObject {key}: {e}")))?
                {
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Err(Skipped::Missing);
            }
            Err(e) => {
                return Err(Skipped::Failed(format!(
                    "S3 GetObject s3://{}/{key}: {}",
                    self.bucket,
                    DisplayErrorContext(&e)
                )));
            }
        };
        nearcast_core::snapshot::decode(bytes).map_err(|e| Skipped::Failed(e.to_string()))
    }

    /// [`Self::load_at`], logged: the catalog, or `None` (the reason at info level, a
    /// failure at warn level) so the caller builds it from the table.
    pub async fn load_logged_at(
        &self,
        pointer: Option<(String, String)>,
        early: bool,
    ) -> Option<Catalog> {
        let started = std::time::Instant::now();
        match self.load_at(pointer, early).await {
            Ok(c) => {
                tracing::info!(
                    stores = c.store_count(),
                    version = c.version.as_deref().unwrap_or_default(),
                    ms = started.elapsed().as_millis() as u64,
                    "catalog read from its snapshot"
                );
                Some(c)
            }
            Err(Skipped::Failed(e)) => {
                tracing::warn!(error = %e, "catalog snapshot not used; building from the table");
                None
            }
            Err(why) => {
                tracing::info!(reason = ?why, "no current catalog snapshot; building from the table");
                None
            }
        }
    }
}

impl CatalogSink for CatalogSnapshots {
    fn publish(&self, catalog: Arc<Catalog>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { CatalogSnapshots::publish(self, &catalog).await.map(|_| ()) })
    }
}
