//! Catalog and model refresh across instances: [`RefreshingStore`].
//!
//! Every Lambda instance keeps the catalog (stores, offers, cap policy) and its models in
//! memory. An admin change on one instance bumps the catalog version (`version` on
//! `CONFIG / VERSION`) in the same transaction as the change; a model publish, rollback or
//! reload bumps the model number (`model` on the same item) once the artifacts are in S3
//! ([`crate::model_store::announced`], [`RefreshingStore::reload_models_and_announce`]).
//! Every instance reads that item at most once per interval
//! (`NEARCAST_CATALOG_REFRESH_SECS`, default 10 s), on the first user read after the
//! interval, follows the catalog when the catalog version moved (single store changes
//! applied in place from the audit log, one Query; anything else from the newest catalog
//! snapshot when one holds the change, [`crate::snapshots`], else rebuilt), and loads its champion
//! and challenger from S3 again when the model number moved. A refused artifact keeps the
//! models in service (logged at error level, not tried again until the next
//! announcement); an S3 failure is tried again at the next interval.
//!
//! Cost: one eventually consistent GetItem per instance per interval, whatever the traffic,
//! for both checks: an instance serving `r` events a second adds `1 / (r × interval)` round
//! trips per event (0.1 at 1 event/s and 10 s); only after a catalog change, one Query of
//! the audit log, and when that does not do, a snapshot (GetItem, Query, GetObject) or a
//! rebuild (two Scans and a GetItem); one GetObject per model only after an announcement. A
//! location event that sends nothing stays at 2 round trips on average.

use crate::DynamoStateStore;
use crate::model_store::{LoadError, ModelRollout};
use nearcast_core::engine::{Engine, ModelSource};
use nearcast_core::ids::Id;
use nearcast_core::ports::{BoxFuture, StateStore, StoreError, StoreLayer, UserRecord};
use nearcast_core::ranker::Ranker;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Audit entries read to follow a catalog change: more store changes than this since the
/// last check take the whole catalog.
pub const FOLLOW_AT_MOST: usize = 16;

#[derive(Default)]
struct Check {
    last: Option<Instant>,
    /// The catalog version the engine's catalog reflects.
    version: u64,
    /// The model number whose models are in service (or were refused).
    model: u64,
}

/// A [`DynamoStateStore`] that keeps its engine's catalog and models current: see the
/// [module documentation](self).
///
/// Build it, [`prime`](Self::prime) it, build the engine on it, then
/// [`attach`](Self::attach) the engine.
pub struct RefreshingStore {
    inner: Arc<DynamoStateStore>,
    every: Duration,
    engine: OnceLock<Weak<Engine>>,
    models: OnceLock<Arc<ModelRollout>>,
    snapshots: OnceLock<Arc<crate::snapshots::CatalogSnapshots>>,
    check: tokio::sync::Mutex<Check>,
}

impl RefreshingStore {
    /// `inner`, checking the catalog version at most once per `every`.
    pub fn new(inner: Arc<DynamoStateStore>, every: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            every,
            engine: OnceLock::new(),
            models: OnceLock::new(),
            snapshots: OnceLock::new(),
            check: tokio::sync::Mutex::new(Check::default()),
        })
    }

    /// Reads the current catalog version and model number; call it before the engine loads
    /// the catalog and the models, so that any change after the load shows as new. Answers
    /// what it read (its snapshot pointer is the one to load from).
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn prime(&self) -> Result<crate::Versions, StoreError> {
        let v = self.inner.versions().await?;
        let mut c = self.check.lock().await;
        c.version = v.catalog;
        c.model = v.model;
        c.last = Some(Instant::now());
        Ok(v)
    }

    /// Keeps the attached engine's models current from `rollout` (call it once the engine
    /// serves `rollout`'s models), and makes the engine's model reload
    /// (`POST /v1/admin/model/reload`) [`reload_models_and_announce`](Self::reload_models_and_announce).
    pub fn serve_models(self: &Arc<Self>, engine: &Engine, rollout: Arc<ModelRollout>) {
        let _ = self.models.set(rollout);
        engine.set_model_source(Arc::new(AnnouncingReload(self.clone())));
    }

    /// Takes the catalog from `snapshots` after a change when a current one is published
    /// (else it is built from the table, as without).
    pub fn use_snapshots(&self, snapshots: Arc<crate::snapshots::CatalogSnapshots>) {
        let _ = self.snapshots.set(snapshots);
    }

    /// The engine whose catalog to rebuild.
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<DynamoStateStore> {
        &self.inner
    }

    /// Checks both versions if the interval has passed: rebuilds the catalog when its
    /// version moved, loads the models when the model number moved. Never fails the
    /// caller: a failed check, rebuild or S3 read is logged and tried again at the next
    /// interval; a refused artifact is logged and keeps the models in service. Concurrent
    /// callers do not wait for a check in progress.
    pub async fn refresh_if_due(&self) {
        let Ok(mut c) = self.check.try_lock() else {
            return;
        };
        if c.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        c.last = Some(Instant::now());
        let versions = match self.inner.versions().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "catalog and model versions not read");
                return;
            }
        };
        if versions.catalog == c.version && versions.model == c.model {
            return;
        }
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            return;
        };
        if versions.catalog != c.version {
            // Single store changes are applied from the audit log, in place; anything else
            // (or more changes than are read) takes the whole catalog.
            let followed = match self.inner.audit_log(None, FOLLOW_AT_MOST).await {
                Ok(entries) => engine.follow_changes(&entries),
                Err(e) => {
                    tracing::warn!(error = %e, "audit log not read; reading the whole catalog");
                    false
                }
            };
            let from_snapshot = match self.snapshots.get() {
                Some(s) if !followed => s.load_logged_at(versions.snapshot.clone(), false).await,
                _ => None,
            };
            let loaded = match from_snapshot {
                _ if followed => Ok(()),
                Some(catalog) => {
                    engine.set_catalog(catalog);
                    Ok(())
                }
                None => engine.reload().await,
            };
            match loaded {
                Ok(()) => {
                    tracing::info!(from = c.version, to = versions.catalog, "catalog reloaded");
                    c.version = versions.catalog;
                }
                Err(e) => tracing::warn!(error = %e, "catalog not reloaded"),
            }
        }
        if versions.model != c.model {
            let Some(rollout) = self.models.get() else {
                // Models from a file or the bundle: nothing to load.
                c.model = versions.model;
                return;
            };
            let loaded = rollout.load().await.and_then(|m| {
                rollout
                    .put_in_service(&engine, m)
                    .map_err(|e| LoadError::Refused(e.to_string()))
            });
            match loaded {
                Ok(()) => {
                    tracing::info!(
                        announcement = versions.model,
                        model = %engine.ranker().version(),
                        challenger = %engine.challenger().map(|c| c.ranker.version().to_string()).unwrap_or_default(),
                        "models reloaded"
                    );
                    c.model = versions.model;
                }
                Err(LoadError::Refused(e)) => {
                    tracing::error!(
                        error = %e,
                        announcement = versions.model,
                        current = %engine.ranker().version(),
                        "announced model refused; keeping the models in service"
                    );
                    c.model = versions.model;
                }
                Err(LoadError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "models not read; trying again next interval");
                }
            }
        }
    }

    /// `POST /v1/admin/model/reload` on a function: loads the champion and the challenger
    /// from S3, then announces the change ([`DynamoStateStore::bump_model_version`]) so
    /// every other instance loads them within its interval, then puts the challenger in
    /// service here and returns the champion (the engine puts it in service). A refused
    /// artifact or a failed announcement changes nothing, here or elsewhere.
    ///
    /// # Errors
    /// The cause, naming the object or the request.
    pub async fn reload_models_and_announce(&self) -> Result<Arc<dyn Ranker>, String> {
        let rollout = self
            .models
            .get()
            .ok_or_else(|| "no model bucket configured".to_string())?;
        let models = rollout.load().await.map_err(|e| e.to_string())?;
        let announced =
            self.inner.bump_model_version().await.map_err(|e| {
                format!("models loaded but not announced, so not put in service: {e}")
            })?;
        let mut c = self.check.lock().await;
        // What was just loaded is at least as new as every change announced before this
        // one. If no other announcement came since this instance's last check, it is the
        // newest: no need to load it again at the next check.
        if announced == c.model + 1 {
            c.model = announced;
        }
        if let Some(engine) = self.engine.get().and_then(Weak::upgrade) {
            engine
                .set_challenger(models.challenger)
                .map_err(|e| e.to_string())?;
        }
        tracing::info!(announcement = announced, model = %models.champion.version(), "models reloaded and announced");
        Ok(models.champion)
    }
}

/// The functions' [`ModelSource`]: [`RefreshingStore::reload_models_and_announce`].
struct AnnouncingReload(Arc<RefreshingStore>);

impl ModelSource for AnnouncingReload {
    fn load(&self) -> BoxFuture<'_, Result<Arc<dyn Ranker>, String>> {
        Box::pin(self.0.reload_models_and_announce())
    }
}

impl StoreLayer for RefreshingStore {
    fn wrapped(&self) -> &dyn StateStore {
        self.inner.as_ref()
    }
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        Box::pin(async move {
            self.refresh_if_due().await;
            self.inner.load_user(user).await
        })
    }
}
