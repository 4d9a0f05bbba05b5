//! Nearcast on one machine: the embedded SQLite state store, the outbox notifier, and the
//! `nearcast` command (demo, serve, replay).

pub mod console;
pub mod demo;
pub mod export;
pub mod model_store;
pub mod outbox;
pub mod store;
pub mod webhooks;

use nearcast_core::config::{Offer, Store, parse_json_str};
use nearcast_core::ranker::{self, Ranker};
use nearcast_core::weather::{TableWeather, WeatherSpan};
use std::path::Path;
use std::sync::Arc;

/// The model shipped in models/ranker.json, built into the binary so the demo and the
/// service run without any file; `--model` loads another.
pub const BUNDLED_MODEL: &str = include_str!("../../../models/ranker.json");

/// Errors of the command-line host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A file's content is invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// File.
        path: String,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] nearcast_core::engine::EngineError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] nearcast_core::ports::StoreError),
}

fn read(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map_err(|source| HostError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn parse_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HostError> {
    let text = read(path)?;
    parse_json_str(&text).map_err(|e| HostError::Invalid {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads stores.json.
///
/// # Errors
/// Unreadable or invalid file.
pub fn load_stores(path: &Path) -> Result<Vec<Store>, HostError> {
    parse_file(path)
}

/// Reads offers.json.
///
/// # Errors
/// Unreadable or invalid file.
pub fn load_offers(path: &Path) -> Result<Vec<Offer>, HostError> {
    parse_file(path)
}

/// Reads weather.json.
///
/// # Errors
/// Unreadable or invalid file.
pub fn load_weather(path: &Path) -> Result<TableWeather, HostError> {
    Ok(TableWeather::new(parse_file::<Vec<WeatherSpan>>(path)?))
}

/// Loads a model artifact of any kind (`logistic`, `tree`) from a file, or the bundled one,
/// through `ranker::load`.
///
/// # Errors
/// Unreadable file, or an artifact the serving code refuses (schema mismatch, unknown
/// kind, corrupt parameters...).
pub fn load_model(path: Option<&Path>) -> Result<Arc<dyn Ranker>, HostError> {
    let (text, name) = match path {
        Some(p) => (read(p)?, p.display().to_string()),
        None => (
            BUNDLED_MODEL.to_string(),
            "bundled models/ranker.json".to_string(),
        ),
    };
    ranker::load(&text).map_err(|e| HostError::Invalid {
        path: name,
        reason: e.to_string(),
    })
}

/// The champion loaded from a file each time: `POST /v1/admin/model/reload` after a new
/// artifact was written there (`nearcast model publish`) puts it in service, and a refused
/// artifact leaves the current model serving.
pub struct FileModelSource(pub std::path::PathBuf);

impl nearcast_core::engine::ModelSource for FileModelSource {
    fn load(
        &self,
    ) -> nearcast_core::ports::BoxFuture<
        '_,
        Result<std::sync::Arc<dyn nearcast_core::ranker::Ranker>, String>,
    > {
        let r = load_model(Some(&self.0)).map_err(|e| e.to_string());
        Box::pin(std::future::ready(r))
    }
}

/// How often `serve` runs the outbox relay.
pub const RELAY_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a committed push waits for its own sender before the relay sends it: far
/// longer than a send takes, so the relay only ever takes orphans (and the claim keeps it
/// to one push even when it does not).
pub const RELAY_GRACE: chrono::Duration = chrono::Duration::seconds(30);

/// Runs [`Engine::relay_pending`](nearcast_core::engine::Engine::relay_pending) every
/// [`RELAY_EVERY`] in the background, for as long as the process lives.
pub fn spawn_relay(engine: Arc<nearcast_core::engine::Engine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RELAY_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = engine.resume_erasures(RELAY_GRACE).await {
                tracing::warn!(error = %e, "resuming erasures failed; retried on the next tick");
            }
            match engine.relay_pending(RELAY_GRACE, 1000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(relayed = n, "outbox relay sent unclaimed pushes"),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retried on its next tick")
                }
            }
        }
    })
}

/// How often `serve` applies the retention on the embedded store.
pub const RETENTION_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Applies `retention` to the embedded store every `every`, in the clock's time, for as long
/// as the process lives (and once right away): idempotency keys and logs expire while the
/// service runs, not only when it starts. DynamoDB expires them itself (TTL).
pub fn spawn_retention(
    store: Arc<store::SqliteStore>,
    clock: Arc<dyn nearcast_core::ports::Clock>,
    retention: nearcast_core::ports::Retention,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match store.prune(clock.now(), &retention) {
                Ok((0, 0)) => {}
                Ok((keys, logs)) => {
                    tracing::info!(keys, logs, "retention: expired records removed")
                }
                Err(e) => tracing::warn!(error = %e, "retention failed; retried on its next tick"),
            }
        }
    })
}

/// The API keys of `keys_file`, read when `serve` starts, before anything else (a bad file
/// stops it at once).
///
/// # Errors
/// An unreadable or invalid keys file (naming the field), or a file with no keys.
pub fn load_admin_keys(
    keys_file: Option<&Path>,
) -> Result<Option<Arc<nearcast_api::auth::ApiKeys>>, HostError> {
    let Some(path) = keys_file else {
        return Ok(None);
    };
    let keys =
        nearcast_api::auth::ApiKeys::parse(&read(path)?).map_err(|e| HostError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if keys.is_empty() {
        return Err(HostError::Invalid {
            path: path.display().to_string(),
            reason: "keys: must hold at least one key".into(),
        });
    }
    Ok(Some(Arc::new(keys)))
}

/// The admin routes' access for `nearcast serve` listening on `local`: the keys when there
/// are some; with none, open to everyone as an admin, but only on a loopback address (the
/// demo and local tools), and refused on any other.
///
/// # Errors
/// No keys on an address other machines can reach.
pub fn admin_access(
    local: std::net::SocketAddr,
    keys: Option<Arc<nearcast_api::auth::ApiKeys>>,
) -> Result<nearcast_api::auth::Access, HostError> {
    use nearcast_api::auth::Access;
    match keys {
        Some(k) => Ok(Access::Keys(k)),
        None if local.ip().is_loopback() => Ok(Access::Open),
        None => Err(HostError::Invalid {
            path: "--admin-keys".into(),
            reason: format!(
                "is required to serve on {local}, which is not a loopback address: without \
                 keys anyone who can reach it could change the catalog (make one with \
                 `nearcast admin-key --name <who> --role admin --keys <file>`)"
            ),
        }),
    }
}

/// A new API key for `name` with `role`: the key (shown once; only its digest is kept)
/// and the keys file with its entry added. `existing` is the current file's text, if any.
///
/// # Errors
/// An existing file that is not a valid keys file, or a name it already has.
pub fn new_admin_key(
    name: &str,
    role: nearcast_api::auth::Role,
    existing: Option<&str>,
) -> Result<(String, String), HostError> {
    use nearcast_api::auth::{ApiKeys, key_digest};
    let invalid = |reason: String| HostError::Invalid {
        path: "--keys".into(),
        reason,
    };
    let mut file: serde_json::Value = match existing {
        Some(text) => {
            ApiKeys::parse(text).map_err(|e| invalid(e.to_string()))?;
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?
        }
        None => serde_json::json!({"keys": []}),
    };
    let bytes: [u8; 24] = rand::random();
    let key: String = std::iter::once("nck_".to_string())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let entries = file["keys"]
        .as_array_mut()
        .ok_or_else(|| invalid("keys: must be a list".into()))?;
    entries.push(serde_json::json!({"name": name, "role": role, "sha256": key_digest(&key)}));
    let text = serde_json::to_string_pretty(&file).map_err(|e| invalid(e.to_string()))?;
    // The whole file must still load: this catches a name given twice.
    ApiKeys::parse(&text).map_err(|e| invalid(e.to_string()))?;
    Ok((key, text + "\n"))
}
