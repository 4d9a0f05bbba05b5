//! Start-up shared by Nearcast's three Lambda functions (`events-api`, `admin-api`,
//! `events-queue`): configuration read once from the environment, JSON logs, and the engine
//! on the AWS adapters. Each function's `main` calls [`start`] once per cold start, then
//! serves invocations with the engine it returns.
//!
//! Environment:
//! - `NEARCAST_TABLE` (required): the DynamoDB table.
//! - `NEARCAST_MODEL_PATH` (optional): a ranker JSON file; the bundled model otherwise.
//! - `NEARCAST_LOG` (optional, default `info`): a `tracing` filter (`debug`, `nearcast=debug,info`).
//! - `NEARCAST_APNS_ARN`, `NEARCAST_FCM_ARN` (optional): SNS platform applications; pushes go
//!   through [`SnsNotifier`]. With neither set, pushes are only logged ([`LogNotifier`]), for
//!   stacks without push credentials.

use nearcast_aws::DynamoStateStore;
use nearcast_aws::sns::SnsNotifier;
use nearcast_core::decision::Push;
use nearcast_core::engine::{Engine, EngineError};
use nearcast_core::ports::{
    BoxFuture, Clock, Notifier, NotifyError, StateStore, SystemClock, WeatherSource,
};
use nearcast_core::weather::TableWeather;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(feature = "testing")]
pub mod testing;

/// Why a function could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A required variable is missing or empty.
    #[error("environment variable {0} must be set")]
    Missing(&'static str),
    /// The model file could not be loaded.
    #[error(transparent)]
    Model(#[from] nearcast::HostError),
    /// The engine could not load its configuration from the store.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The functions' configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// DynamoDB table (`NEARCAST_TABLE`).
    pub table: String,
    /// Model file (`NEARCAST_MODEL_PATH`); `None` means the bundled model.
    pub model_path: Option<PathBuf>,
    /// Log filter (`NEARCAST_LOG`).
    pub log: String,
    /// SNS platform application for APNs (`NEARCAST_APNS_ARN`).
    pub apns_arn: Option<String>,
    /// SNS platform application for FCM (`NEARCAST_FCM_ARN`).
    pub fcm_arn: Option<String>,
}

impl Config {
    /// Reads the process environment.
    ///
    /// # Errors
    /// [`InitError::Missing`] when `NEARCAST_TABLE` is unset or empty.
    pub fn from_env() -> Result<Self, InitError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests). Empty
    /// values count as unset.
    ///
    /// # Errors
    /// [`InitError::Missing`] when `NEARCAST_TABLE` is unset or empty.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, InitError> {
        let var = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        Ok(Self {
            table: var("NEARCAST_TABLE").ok_or(InitError::Missing("NEARCAST_TABLE"))?,
            model_path: var("NEARCAST_MODEL_PATH").map(PathBuf::from),
            log: var("NEARCAST_LOG").unwrap_or_else(|| "info".to_string()),
            apns_arn: var("NEARCAST_APNS_ARN"),
            fcm_arn: var("NEARCAST_FCM_ARN"),
        })
    }
}

/// Installs JSON logs on stdout (CloudWatch adds nothing to parse): one flat object per
/// event, filtered by `filter` (an invalid filter falls back to `info`). Calling it again
/// is harmless. Nearcast's own logs carry ids of deliveries, offers and stores, never
/// tokens, positions or user ids.
pub fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}

/// Builds the engine from its ports and the model (`None`: the bundled one), and loads the
/// catalog from the store.
///
/// # Errors
/// An unreadable model, a failing store or an invalid stored configuration.
pub async fn build_engine(
    store: Arc<dyn StateStore>,
    notifier: Arc<dyn Notifier>,
    weather: Arc<dyn WeatherSource>,
    clock: Arc<dyn Clock>,
    model_path: Option<&Path>,
) -> Result<Arc<Engine>, InitError> {
    let ranker = nearcast::load_model(model_path)?;
    let engine = Engine::new(store, notifier, weather, clock, ranker).await?;
    Ok(Arc::new(engine))
}

/// Cold start of a function named `function`: reads [`Config::from_env`], installs the logs,
/// and builds the engine on [`DynamoStateStore`] (client from the standard AWS
/// configuration), [`SnsNotifier`] (or [`LogNotifier`] when no platform application is
/// configured), an empty [`TableWeather`] (offers with weather rules do
/// not run until a forecast source is wired in) and the system clock.
///
/// # Errors
/// As [`Config::from_env`] and [`build_engine`]; the function then fails its init phase.
pub async fn start(function: &'static str) -> Result<Arc<Engine>, InitError> {
    let config = Config::from_env()?;
    init_tracing(&config.log);
    let store = DynamoStateStore::from_env(config.table.clone()).await;
    let notifier: Arc<dyn Notifier> = if config.apns_arn.is_none() && config.fcm_arn.is_none() {
        tracing::warn!("NEARCAST_APNS_ARN and NEARCAST_FCM_ARN unset: pushes are logged, not sent");
        Arc::new(LogNotifier)
    } else {
        Arc::new(SnsNotifier::new(
            SnsNotifier::client(None).await,
            config.apns_arn.clone(),
            config.fcm_arn.clone(),
        ))
    };
    let engine = build_engine(
        Arc::new(store),
        notifier,
        Arc::new(TableWeather::default()),
        Arc::new(SystemClock),
        config.model_path.as_deref(),
    )
    .await?;
    let catalog = engine.catalog();
    tracing::info!(
        function,
        table = %config.table,
        stores = catalog.stores.len(),
        offers = catalog.offers.len(),
        model = %engine.ranker().version(),
        push_platforms_configured = config.apns_arn.is_some() as u8 + config.fcm_arn.is_some() as u8,
        "nearcast function started"
    );
    Ok(engine)
}

/// A notifier that only logs the push (delivery, offer and store ids; never the token or
/// the user) and reports success: the notifier of stacks without push credentials.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Result<(), NotifyError>> {
        tracing::info!(
            delivery_id = %push.delivery_id,
            offer_id = %push.offer_id,
            campaign_id = %push.campaign_id,
            store_id = %push.store_id,
            "push logged, not sent (no SNS platform application configured)"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn config_needs_a_table_and_defaults_the_rest() {
        assert!(matches!(
            Config::from_lookup(lookup(&[])),
            Err(InitError::Missing("NEARCAST_TABLE"))
        ));
        assert!(matches!(
            Config::from_lookup(lookup(&[("NEARCAST_TABLE", " ")])),
            Err(InitError::Missing("NEARCAST_TABLE"))
        ));
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "nearcast"),
            ("NEARCAST_MODEL_PATH", ""),
        ]))
        .unwrap();
        assert_eq!(c.table, "nearcast");
        assert_eq!(c.model_path, None);
        assert_eq!(c.log, "info");
        assert_eq!(c.apns_arn, None);
    }

    #[test]
    fn config_reads_every_variable() {
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            ("NEARCAST_MODEL_PATH", "/opt/ranker.json"),
            ("NEARCAST_LOG", "debug"),
            ("NEARCAST_APNS_ARN", "arn:aws:sns:eu-north-1:1:app/APNS/x"),
            ("NEARCAST_FCM_ARN", "arn:aws:sns:eu-north-1:1:app/GCM/y"),
        ]))
        .unwrap();
        assert_eq!(c.model_path.as_deref(), Some(Path::new("/opt/ranker.json")));
        assert_eq!(c.log, "debug");
        assert!(c.apns_arn.is_some() && c.fcm_arn.is_some());
    }

    #[tokio::test]
    async fn the_bundled_model_builds_an_engine() {
        let e = build_engine(
            Arc::new(nearcast_core::memory::InMemoryStateStore::new()),
            Arc::new(LogNotifier),
            Arc::new(TableWeather::default()),
            Arc::new(SystemClock),
            None,
        )
        .await
        .unwrap();
        assert!(e.catalog().stores.is_empty());
    }
}
