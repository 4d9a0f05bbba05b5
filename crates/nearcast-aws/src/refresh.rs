//! Catalog refresh across instances: [`RefreshingStore`].
//!
//! Every Lambda instance keeps the catalog (stores, offers, cap policy) in memory. An admin
//! change on one instance bumps the catalog version item (`CONFIG / VERSION`) in the same
//! transaction as the change; every instance checks that item at most once per interval
//! (`NEARCAST_CATALOG_REFRESH_SECS`, default 10 s), on the first user read after the
//! interval, and rebuilds its catalog when the version moved.
//!
//! Cost: one eventually consistent GetItem per instance per interval, whatever the traffic:
//! an instance serving `r` events a second adds `1 / (r × interval)` round trips per event
//! (0.01 at 1 event/s and 10 s), plus a rebuild (two Scans and a GetItem) only after an
//! actual change. A location event that sends nothing stays at 2 round trips on average.

use crate::DynamoStateStore;
use nearcast_core::engine::Engine;
use nearcast_core::ids::Id;
use nearcast_core::ports::{BoxFuture, StateStore, StoreError, StoreLayer, UserRecord};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Check {
    last: Option<Instant>,
    version: u64,
}

/// A [`DynamoStateStore`] that keeps its engine's catalog current: see the
/// [module documentation](self).
///
/// Build it, [`prime`](Self::prime) it, build the engine on it, then
/// [`attach`](Self::attach) the engine.
pub struct RefreshingStore {
    inner: Arc<DynamoStateStore>,
    every: Duration,
    engine: OnceLock<Weak<Engine>>,
    check: tokio::sync::Mutex<Check>,
}

impl RefreshingStore {
    /// `inner`, checking the catalog version at most once per `every`.
    pub fn new(inner: Arc<DynamoStateStore>, every: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            every,
            engine: OnceLock::new(),
            check: tokio::sync::Mutex::new(Check::default()),
        })
    }

    /// Reads the current catalog version; call it before the engine loads the catalog, so
    /// that any change after the load shows as a new version.
    ///
    /// # Errors
    /// When DynamoDB fails.
    pub async fn prime(&self) -> Result<(), StoreError> {
        let v = self.inner.catalog_version().await?;
        let mut c = self.check.lock().await;
        c.version = v;
        c.last = Some(Instant::now());
        Ok(())
    }

    /// The engine whose catalog to rebuild.
    pub fn attach(&self, engine: &Arc<Engine>) {
        let _ = self.engine.set(Arc::downgrade(engine));
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<DynamoStateStore> {
        &self.inner
    }

    /// Checks the version if the interval has passed, and rebuilds the catalog when it
    /// moved. Never fails the caller: a failed check or rebuild is logged and tried again
    /// at the next interval. Concurrent callers do not wait for a check in progress.
    pub async fn refresh_if_due(&self) {
        let Ok(mut c) = self.check.try_lock() else {
            return;
        };
        if c.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        c.last = Some(Instant::now());
        let version = match self.inner.catalog_version().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "catalog version not read");
                return;
            }
        };
        if version == c.version {
            return;
        }
        let Some(engine) = self.engine.get().and_then(Weak::upgrade) else {
            return;
        };
        match engine.reload().await {
            Ok(()) => {
                tracing::info!(from = c.version, to = version, "catalog reloaded");
                c.version = version;
            }
            Err(e) => tracing::warn!(error = %e, "catalog not reloaded"),
        }
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
