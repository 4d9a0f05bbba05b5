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
//! - `NEARCAST_DEVICE_AUTH` (optional, `jwt` or `none`, default `none`): with `jwt`,
//!   events-api serves a device request only for the user named by the `sub` claim of the
//!   JWT that API Gateway's authorizer verified ([`DeviceAuth`]).
//! - `NEARCAST_CAP_PER_DAY`, `NEARCAST_CAP_PER_WEEK`, `NEARCAST_CAP_MIN_GAP_MINUTES`
//!   (optional): the cap policy in force until a marketer saves one ([`cap_defaults`]);
//!   unset ones keep [`CapPolicy::default`]'s values.
//! - `NEARCAST_WEATHER_URL` (optional): an Open-Meteo-compatible forecast endpoint
//!   (`https://api.open-meteo.com/v1/forecast`); unset, the weather is unknown and offers
//!   with weather rules do not run. See [`weather_source`].
//! - `NEARCAST_CATALOG_REFRESH_SECS` (optional, default 10): how often an instance checks
//!   the catalog version and the model number for changes made through other instances
//!   or the CLI ([`RefreshingStore`]); 0 checks on every event.
//! - `NEARCAST_MODEL_BUCKET` + `NEARCAST_MODEL_KEY` (optional, together, instead of
//!   `NEARCAST_MODEL_PATH`): the champion is loaded from that S3 object at init (where
//!   `nearcast model publish --to s3://bucket/key` puts it), and again, with the
//!   challenger, whenever a change is announced on the table (`nearcast model publish |
//!   rollback --table`, or `POST /v1/admin/model/reload` on any instance, which announces
//!   it).
//! - `NEARCAST_CHALLENGER_KEY` (optional): a challenger artifact, an S3 key in the model
//!   bucket, or a file path without one; `NEARCAST_CHALLENGER_SHARE` (0 to 1, default 0.1):
//!   the share of users it scores. See [`ModelConfig`].

use nearcast_aws::model_store::ModelRollout;
use nearcast_aws::refresh::RefreshingStore;
use nearcast_aws::snapshots::CatalogSnapshots;
use nearcast_aws::sns::SnsNotifier;
use nearcast_aws::{DynamoStateStore, SdkConfig};
use nearcast_core::decision::Push;
use nearcast_core::engine::{Engine, EngineError};
use nearcast_core::ports::{
    BoxFuture, Clock, Notifier, NotifyError, StateStore, SystemClock, WeatherSource,
};
use nearcast_core::weather::TableWeather;
use nearcast_weather::OpenMeteo;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod caps;
pub use caps::{DefaultPolicy, cap_defaults};
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
    /// A variable is set to a value the function cannot use.
    #[error("environment variable {var}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// `NEARCAST_CATALOG_REFRESH_SECS` is not a whole number of seconds.
    #[error("NEARCAST_CATALOG_REFRESH_SECS must be a whole number of seconds, got {0:?}")]
    CatalogRefresh(String),
    /// `NEARCAST_WEATHER_URL` is not a usable URL.
    #[error("NEARCAST_WEATHER_URL: {0}")]
    Weather(#[from] nearcast_weather::WeatherError),
    /// A model could not be loaded from S3 or refused.
    #[error("model: {0}")]
    ModelLoad(String),
}

/// Where the functions' models come from (`NEARCAST_MODEL_BUCKET`, `NEARCAST_MODEL_KEY`,
/// `NEARCAST_CHALLENGER_KEY`, `NEARCAST_CHALLENGER_SHARE`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// The champion's S3 bucket and key, when loaded from S3.
    pub s3: Option<(String, String)>,
    /// The challenger: an S3 key in the model bucket (with `s3`), else a file path.
    pub challenger: Option<String>,
    /// Share of users the challenger scores.
    pub challenger_share: f64,
}

impl ModelConfig {
    /// Reads the model variables through `var` (trimmed, empty counts as unset).
    ///
    /// # Errors
    /// [`InitError::Invalid`] naming the variable: a bucket without a key or the other way
    /// round, S3 together with `NEARCAST_MODEL_PATH`, a share outside [0, 1] or without a
    /// challenger.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, InitError> {
        let invalid = |var: &'static str, reason: &str| InitError::Invalid {
            var,
            reason: reason.into(),
        };
        let s3 = match (var("NEARCAST_MODEL_BUCKET"), var("NEARCAST_MODEL_KEY")) {
            (Some(b), Some(k)) => Some((b, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "NEARCAST_MODEL_KEY",
                    "must be set with NEARCAST_MODEL_BUCKET",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "NEARCAST_MODEL_BUCKET",
                    "must be set with NEARCAST_MODEL_KEY",
                ));
            }
        };
        if s3.is_some() && var("NEARCAST_MODEL_PATH").is_some() {
            return Err(invalid(
                "NEARCAST_MODEL_PATH",
                "set either NEARCAST_MODEL_PATH or NEARCAST_MODEL_BUCKET/NEARCAST_MODEL_KEY",
            ));
        }
        let challenger = var("NEARCAST_CHALLENGER_KEY");
        let challenger_share = match var("NEARCAST_CHALLENGER_SHARE") {
            None => 0.1,
            Some(_) if challenger.is_none() => {
                return Err(invalid(
                    "NEARCAST_CHALLENGER_SHARE",
                    "is set but NEARCAST_CHALLENGER_KEY is not",
                ));
            }
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    invalid(
                        "NEARCAST_CHALLENGER_SHARE",
                        &format!("must be a number from 0 to 1, got {v:?}"),
                    )
                })?,
        };
        Ok(Self {
            s3,
            challenger,
            challenger_share,
        })
    }
}

/// Puts the configured models in service on `engine`: the champion and the challenger
/// from S3 (client from `aws`; the champion also as the reload source of this instance), or
/// the challenger from a file. Returns the S3 rollout, for [`RefreshingStore::serve_models`].
///
/// # Errors
/// [`InitError::ModelLoad`] naming the object and the cause; the cold start then fails
/// rather than serve with an unintended model.
pub async fn apply_models(
    engine: &Engine,
    models: &ModelConfig,
    aws: &SdkConfig,
) -> Result<Option<Arc<ModelRollout>>, InitError> {
    use nearcast_aws::model_store::{S3Blobs, S3ModelSource};
    match &models.s3 {
        Some((bucket, key)) => {
            let blobs = S3Blobs::new(S3Blobs::client_from(aws), bucket, key);
            let rollout = Arc::new(ModelRollout::new(
                blobs.clone(),
                models
                    .challenger
                    .clone()
                    .map(|c| (c, models.challenger_share)),
            ));
            let loaded = rollout
                .load()
                .await
                .map_err(|e| InitError::ModelLoad(e.to_string()))?;
            rollout.put_in_service(engine, loaded)?;
            engine.set_model_source(Arc::new(S3ModelSource {
                blobs,
                key: key.clone(),
            }));
            Ok(Some(rollout))
        }
        None => {
            if let Some(c) = &models.challenger {
                engine.set_challenger(Some(nearcast_core::engine::Challenger {
                    ranker: nearcast::load_model(Some(Path::new(c)))?,
                    share: models.challenger_share,
                }))?;
            }
            Ok(None)
        }
    }
}

/// The functions' configuration.
#[derive(Debug, Clone, PartialEq)]
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
    /// Device authentication of events-api (`NEARCAST_DEVICE_AUTH`).
    pub device_auth: DeviceAuth,
    /// Marketers' roles on admin-api (`NEARCAST_ADMIN_AUTH`, `NEARCAST_ADMIN_ROLE_CLAIM`).
    pub admin_auth: AdminAuth,
    /// Cap policy used until one is saved (`NEARCAST_CAP_*`); `None`: none of them set.
    pub cap_defaults: Option<nearcast_core::config::CapPolicy>,
    /// Open-Meteo-compatible forecast endpoint (`NEARCAST_WEATHER_URL`); `None`: no weather.
    pub weather_url: Option<String>,
    /// How often the catalog version is checked (`NEARCAST_CATALOG_REFRESH_SECS`).
    pub catalog_refresh: std::time::Duration,
    /// Bucket of the catalog snapshots (`NEARCAST_CATALOG_BUCKET`): admin-api publishes one
    /// after every configuration change, and every function starts from the newest one when
    /// it is current ([`nearcast_aws::snapshots`]). `None`: every start reads the table.
    pub catalog_bucket: Option<String>,
    /// Champion from S3 and challenger.
    pub models: ModelConfig,
    /// How long idempotency keys and logs are kept (`NEARCAST_KEEP_IDEMPOTENCY_DAYS`,
    /// `NEARCAST_KEEP_LOG_DAYS`; default 7 and 90 days): the `ttl` written on them.
    pub retention: nearcast_core::ports::Retention,
    /// Presence webhooks (`NEARCAST_WEBHOOK_URL`, `NEARCAST_WEBHOOK_SECRET`): the receiver
    /// and the signing secrets. `None`: off.
    pub webhooks: Option<WebhookConfig>,
}

/// Where presence webhooks go and what signs them.
#[derive(Clone, PartialEq)]
pub struct WebhookConfig {
    /// The receiver.
    pub url: String,
    /// The signing secrets (several during a rotation).
    pub secrets: Vec<nearcast_core::webhook::WebhookSecret>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the secrets nor the URL (it may carry a token).
        write!(f, "WebhookConfig({} secrets)", self.secrets.len())
    }
}

fn webhooks(var: &impl Fn(&str) -> Option<String>) -> Result<Option<WebhookConfig>, InitError> {
    match (var("NEARCAST_WEBHOOK_URL"), var("NEARCAST_WEBHOOK_SECRET")) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(InitError::Invalid {
            var: "NEARCAST_WEBHOOK_SECRET",
            reason: "must be set with NEARCAST_WEBHOOK_URL".into(),
        }),
        (None, Some(_)) => Err(InitError::Invalid {
            var: "NEARCAST_WEBHOOK_URL",
            reason: "must be set with NEARCAST_WEBHOOK_SECRET".into(),
        }),
        (Some(url), Some(secret)) => {
            nearcast::webhooks::check_url(&url).map_err(|reason| InitError::Invalid {
                var: "NEARCAST_WEBHOOK_URL",
                reason,
            })?;
            let secrets =
                nearcast_core::webhook::WebhookSecret::parse_list(&secret).map_err(|reason| {
                    InitError::Invalid {
                        var: "NEARCAST_WEBHOOK_SECRET",
                        reason,
                    }
                })?;
            Ok(Some(WebhookConfig { url, secrets }))
        }
    }
}

/// The presence webhook relay of `config` on `engine`'s store (events-queue runs it after
/// every batch and on its schedule); `None` when webhooks are off.
///
/// # Errors
/// [`InitError::Invalid`] when the HTTP client cannot be built.
pub fn webhook_relay(
    engine: &Engine,
    config: &Config,
) -> Result<Option<nearcast_core::webhook::WebhookRelay>, InitError> {
    let Some(w) = &config.webhooks else {
        return Ok(None);
    };
    let sender = nearcast::webhooks::HttpWebhookSender::new(&w.url).map_err(|reason| {
        InitError::Invalid {
            var: "NEARCAST_WEBHOOK_URL",
            reason,
        }
    })?;
    Ok(Some(nearcast_core::webhook::WebhookRelay::new(
        engine.store().clone(),
        Arc::new(sender),
        w.secrets.clone(),
        nearcast_core::webhook::RetryPolicy::DEFAULT,
        Arc::new(SystemClock),
    )))
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
            device_auth: DeviceAuth::parse(var("NEARCAST_DEVICE_AUTH").as_deref())?,
            admin_auth: AdminAuth::parse(
                var("NEARCAST_ADMIN_AUTH").as_deref(),
                var("NEARCAST_ADMIN_ROLE_CLAIM"),
            )?,
            cap_defaults: cap_defaults(&var)?,
            weather_url: var("NEARCAST_WEATHER_URL"),
            catalog_refresh: catalog_refresh(var("NEARCAST_CATALOG_REFRESH_SECS"))?,
            catalog_bucket: var("NEARCAST_CATALOG_BUCKET"),
            models: ModelConfig::from_lookup(&var)?,
            retention: retention(&var)?,
            webhooks: webhooks(&var)?,
        })
    }
}

fn retention(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<nearcast_core::ports::Retention, InitError> {
    let days = |k: &'static str, default: i64| -> Result<i64, InitError> {
        var(k).map_or(Ok(default), |v| {
            v.parse().map_err(|_| InitError::Invalid {
                var: k,
                reason: format!("must be a whole number of days, got {v:?}"),
            })
        })
    };
    let seen = days(
        "NEARCAST_KEEP_IDEMPOTENCY_DAYS",
        nearcast_core::ports::IDEMPOTENCY_DAYS,
    )?;
    let logs = days(
        "NEARCAST_KEEP_LOG_DAYS",
        nearcast_core::ports::LOG_RETENTION_DAYS,
    )?;
    nearcast_core::ports::Retention::days(seen, logs).map_err(|e| InitError::Invalid {
        var: if e.field == "log_days" {
            "NEARCAST_KEEP_LOG_DAYS"
        } else {
            "NEARCAST_KEEP_IDEMPOTENCY_DAYS"
        },
        reason: e.reason,
    })
}

/// How events-api authenticates devices (`NEARCAST_DEVICE_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceAuth {
    /// `none` (the default): no check; for stacks whose API authenticates devices otherwise.
    #[default]
    None,
    /// `jwt`: a request about a user (events, consent, erasure) is served only when that user
    /// is the `sub` claim of the JWT verified by API Gateway's JWT authorizer.
    Jwt,
}

impl DeviceAuth {
    /// Parses `NEARCAST_DEVICE_AUTH` (`None`: unset).
    ///
    /// # Errors
    /// [`InitError::Invalid`] for anything but `jwt` or `none`.
    pub fn parse(value: Option<&str>) -> Result<Self, InitError> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") => Ok(Self::None),
            Some("jwt") => Ok(Self::Jwt),
            Some(other) => Err(InitError::Invalid {
                var: "NEARCAST_DEVICE_AUTH",
                reason: format!("must be jwt or none, got {other:?}"),
            }),
        }
    }
}

/// How admin-api knows a marketer's role (`NEARCAST_ADMIN_AUTH`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdminAuth {
    /// `none` (the default): every caller API Gateway lets through is an admin.
    #[default]
    None,
    /// `jwt`: the role is the claim `role_claim` (`NEARCAST_ADMIN_ROLE_CLAIM`, default
    /// `custom:nearcast_role`) of the JWT verified by API Gateway's marketers' authorizer:
    /// `viewer`, `editor` or `admin`, or a list of groups such as Cognito's `cognito:groups`
    /// (`[editor marketing]`), of which the highest role counts. No role: 403.
    Jwt {
        /// The claim holding the role.
        role_claim: String,
    },
}

/// The role claim read when `NEARCAST_ADMIN_ROLE_CLAIM` is unset.
pub const DEFAULT_ROLE_CLAIM: &str = "custom:nearcast_role";

impl AdminAuth {
    /// Parses `NEARCAST_ADMIN_AUTH` and `NEARCAST_ADMIN_ROLE_CLAIM` (`None`: unset).
    ///
    /// # Errors
    /// [`InitError::Invalid`] for anything but `jwt` or `none`.
    pub fn parse(value: Option<&str>, role_claim: Option<String>) -> Result<Self, InitError> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("none") => Ok(Self::None),
            Some("jwt") => Ok(Self::Jwt {
                role_claim: role_claim.unwrap_or_else(|| DEFAULT_ROLE_CLAIM.to_string()),
            }),
            Some(other) => Err(InitError::Invalid {
                var: "NEARCAST_ADMIN_AUTH",
                reason: format!("must be jwt or none, got {other:?}"),
            }),
        }
    }
}

/// Installs JSON logs on stdout (CloudWatch adds nothing to parse): one flat object per
/// event, filtered by `filter` (an invalid filter falls back to `info`). Calling it again
/// is harmless. Nearcast's own logs carry ids of deliveries, offers and stores, never
/// tokens, positions or user ids.
pub fn init_tracing(filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            nearcast_core::QUIET_GEOMETRY_LOGS
                .parse()
                .expect("directive"),
        );
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
}

/// `NEARCAST_CATALOG_REFRESH_SECS`: whole seconds, 10 when unset.
fn catalog_refresh(v: Option<String>) -> Result<std::time::Duration, InitError> {
    match v {
        None => Ok(std::time::Duration::from_secs(10)),
        Some(v) => v
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| InitError::CatalogRefresh(v)),
    }
}

/// The weather source for `url` ([`Config::weather_url`]): forecasts over HTTP, cached per
/// coarse H3 cell and hour ([`OpenMeteo`]); without a URL, an empty table (weather unknown).
///
/// # Errors
/// [`InitError::Weather`] for a URL that is not http(s).
pub fn weather_source(url: Option<&str>) -> Result<Arc<dyn WeatherSource>, InitError> {
    Ok(match url {
        Some(url) => Arc::new(OpenMeteo::new(url, nearcast_weather::Options::default())?),
        None => Arc::new(TableWeather::default()),
    })
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
    build_engine_from(store, notifier, weather, clock, model_path, None).await
}

/// As [`build_engine`], starting from `catalog` when given (a current snapshot) instead of
/// loading it from the store.
///
/// # Errors
/// As [`build_engine`].
pub async fn build_engine_from(
    store: Arc<dyn StateStore>,
    notifier: Arc<dyn Notifier>,
    weather: Arc<dyn WeatherSource>,
    clock: Arc<dyn Clock>,
    model_path: Option<&Path>,
    catalog: Option<nearcast_core::catalog::Catalog>,
) -> Result<Arc<Engine>, InitError> {
    let ranker = nearcast::load_model(model_path)?;
    let engine = Engine::starting_from(store, notifier, weather, clock, ranker, catalog).await?;
    Ok(Arc::new(engine))
}

/// Cold start of a function named `function`: reads [`Config::from_env`], installs the logs,
/// loads the standard AWS configuration once, and runs [`start_with`].
///
/// # Errors
/// As [`Config::from_env`] and [`start_with`]; the function then fails its init phase.
pub async fn start(function: &'static str) -> Result<Arc<Engine>, InitError> {
    Ok(start_configured(function).await?.0)
}

/// As [`start`], answering the configuration read too.
///
/// # Errors
/// As [`start`].
pub async fn start_configured(function: &'static str) -> Result<(Arc<Engine>, Config), InitError> {
    let config = Config::from_env()?;
    init_tracing(&config.log);
    let engine = start_with(function, &config, &nearcast_aws::sdk_config(None).await).await?;
    Ok((engine, config))
}

/// The cold start after the configuration is read: the engine on [`DynamoStateStore`] (behind
/// [`RefreshingStore`], and [`DefaultPolicy`] when cap defaults are set), [`SnsNotifier`] (or
/// [`LogNotifier`] when no platform application is configured), the [`weather_source`] of
/// `NEARCAST_WEATHER_URL` and the system clock, every AWS client built from `aws`; the catalog
/// loaded and the models of [`apply_models`] in service. Tests run it on moto.
///
/// # Errors
/// As [`build_engine`] and [`apply_models`], and when DynamoDB cannot be read.
pub async fn start_with(
    function: &'static str,
    config: &Config,
    aws: &SdkConfig,
) -> Result<Arc<Engine>, InitError> {
    let dynamo = Arc::new(
        DynamoStateStore::new(DynamoStateStore::client_from(aws), config.table.clone())
            .with_retention(config.retention),
    );
    let refreshing = RefreshingStore::new(dynamo.clone(), config.catalog_refresh);
    // The version before the catalog is loaded: a change in between shows as new. The same
    // read points at the newest snapshot.
    let versions = refreshing
        .prime()
        .await
        .map_err(|e| InitError::Engine(EngineError::Store(e)))?;
    let snapshots = config.catalog_bucket.as_ref().map(|bucket| {
        Arc::new(CatalogSnapshots::new(
            nearcast_aws::model_store::S3Blobs::client_from(aws),
            bucket.clone(),
            dynamo.clone(),
        ))
    });
    let initial = match &snapshots {
        Some(s) => {
            refreshing.use_snapshots(s.clone());
            s.load_logged_at(versions.snapshot, true).await
        }
        None => None,
    };
    let store: Arc<dyn StateStore> = match &config.cap_defaults {
        Some(p) => Arc::new(DefaultPolicy::new(refreshing.clone(), p.clone())),
        None => refreshing.clone(),
    };
    if config.admin_auth == AdminAuth::None && function == "admin-api" {
        tracing::warn!("NEARCAST_ADMIN_AUTH is none: every caller of admin-api has the admin role");
    }
    if config.device_auth == DeviceAuth::None && function == "events-api" {
        tracing::warn!(
            "NEARCAST_DEVICE_AUTH is none: events-api does not check who a request is about"
        );
    }
    let notifier: Arc<dyn Notifier> = if config.apns_arn.is_none() && config.fcm_arn.is_none() {
        tracing::warn!("NEARCAST_APNS_ARN and NEARCAST_FCM_ARN unset: pushes are logged, not sent");
        Arc::new(LogNotifier)
    } else {
        Arc::new(SnsNotifier::from_sdk_config(
            aws,
            config.apns_arn.clone(),
            config.fcm_arn.clone(),
        ))
    };
    let engine = build_engine_from(
        store,
        notifier,
        weather_source(config.weather_url.as_deref())?,
        Arc::new(SystemClock),
        config.model_path.as_deref(),
        initial,
    )
    .await?;
    refreshing.attach(&engine);
    // Every event that changes presence adds its message to the outbox in its commit.
    engine.set_webhooks(config.webhooks.is_some());
    // admin-api publishes the catalog after every change it answers for.
    if let Some(s) = snapshots
        && function == "admin-api"
    {
        engine.set_catalog_sink(s);
    }
    // Models from S3 follow every announced publish, rollback and reload.
    if let Some(rollout) = apply_models(&engine, &config.models, aws).await? {
        refreshing.serve_models(&engine, rollout);
    }
    let catalog = engine.catalog();
    tracing::info!(
        function,
        table = %config.table,
        stores = catalog.store_count(),
        offers = catalog.offers.len(),
        model = %engine.ranker().version(),
        challenger = %engine.challenger().map(|c| c.ranker.version().to_string()).unwrap_or_default(),
        push_platforms_configured = config.apns_arn.is_some() as u8 + config.fcm_arn.is_some() as u8,
        weather = config.weather_url.is_some(),
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
    fn webhook_settings_come_together_and_are_named_when_wrong() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let with = |pairs: &[(&str, &str)]| {
            let mut v = vec![("NEARCAST_TABLE", "t")];
            v.extend_from_slice(pairs);
            Config::from_lookup(lookup(&v))
        };
        assert_eq!(with(&[]).unwrap().webhooks, None);
        let on = with(&[
            ("NEARCAST_WEBHOOK_URL", "https://hooks.example.com/n"),
            ("NEARCAST_WEBHOOK_SECRET", secret),
        ])
        .unwrap();
        let w = on.webhooks.clone().expect("on");
        assert_eq!(w.secrets.len(), 1);
        assert!(!format!("{on:?}").contains("MfKQ9r8"), "never printed");
        assert!(!format!("{on:?}").contains("hooks.example.com"));
        for (pairs, var) in [
            (
                vec![("NEARCAST_WEBHOOK_URL", "https://hooks.example.com/n")],
                "NEARCAST_WEBHOOK_SECRET",
            ),
            (
                vec![("NEARCAST_WEBHOOK_SECRET", secret)],
                "NEARCAST_WEBHOOK_URL",
            ),
            (
                vec![
                    ("NEARCAST_WEBHOOK_URL", "http://hooks.example.com/n"),
                    ("NEARCAST_WEBHOOK_SECRET", secret),
                ],
                "NEARCAST_WEBHOOK_URL",
            ),
            (
                vec![
                    ("NEARCAST_WEBHOOK_URL", "https://hooks.example.com/n"),
                    ("NEARCAST_WEBHOOK_SECRET", "not-a-secret"),
                ],
                "NEARCAST_WEBHOOK_SECRET",
            ),
        ] {
            match with(&pairs) {
                Err(InitError::Invalid { var: v, reason }) => {
                    assert_eq!(v, var, "{reason}");
                    assert!(!reason.contains("not-a-secret"), "{reason}");
                }
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
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
            ("NEARCAST_CATALOG_BUCKET", "artifacts"),
        ]))
        .unwrap();
        assert_eq!(c.catalog_bucket.as_deref(), Some("artifacts"));
        assert_eq!(c.model_path.as_deref(), Some(Path::new("/opt/ranker.json")));
        assert_eq!(c.log, "debug");
        assert!(c.apns_arn.is_some() && c.fcm_arn.is_some());
    }

    #[test]
    fn admin_auth_is_jwt_with_a_role_claim_or_none() {
        let auth = |v: &[(&str, &str)]| {
            let mut vars = vec![("NEARCAST_TABLE", "t")];
            vars.extend_from_slice(v);
            Config::from_lookup(lookup(&vars)).map(|c| c.admin_auth)
        };
        assert_eq!(auth(&[]).unwrap(), AdminAuth::None);
        assert_eq!(
            auth(&[("NEARCAST_ADMIN_AUTH", "jwt")]).unwrap(),
            AdminAuth::Jwt {
                role_claim: DEFAULT_ROLE_CLAIM.into()
            }
        );
        assert_eq!(
            auth(&[
                ("NEARCAST_ADMIN_AUTH", "jwt"),
                ("NEARCAST_ADMIN_ROLE_CLAIM", "cognito:groups")
            ])
            .unwrap(),
            AdminAuth::Jwt {
                role_claim: "cognito:groups".into()
            }
        );
        assert!(matches!(
            auth(&[("NEARCAST_ADMIN_AUTH", "keys")]),
            Err(InitError::Invalid {
                var: "NEARCAST_ADMIN_AUTH",
                ..
            })
        ));
    }

    #[test]
    fn device_auth_is_jwt_or_none() {
        let auth = |v: &str| {
            Config::from_lookup(lookup(&[
                ("NEARCAST_TABLE", "t"),
                ("NEARCAST_DEVICE_AUTH", v),
            ]))
        };
        assert_eq!(auth("jwt").unwrap().device_auth, DeviceAuth::Jwt);
        assert_eq!(auth("JWT").unwrap().device_auth, DeviceAuth::Jwt);
        assert_eq!(auth("none").unwrap().device_auth, DeviceAuth::None);
        assert_eq!(auth("").unwrap().device_auth, DeviceAuth::None);
        match auth("cognito") {
            Err(
                e @ InitError::Invalid {
                    var: "NEARCAST_DEVICE_AUTH",
                    ..
                },
            ) => {
                assert!(e.to_string().contains("NEARCAST_DEVICE_AUTH"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cap_defaults_are_read_with_the_rest() {
        let c = Config::from_lookup(lookup(&[("NEARCAST_TABLE", "t")])).unwrap();
        assert_eq!(c.cap_defaults, None);
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            ("NEARCAST_CAP_PER_WEEK", "10"),
        ]))
        .unwrap();
        assert_eq!(c.cap_defaults.map(|p| p.per_week), Some(10));
        assert!(matches!(
            Config::from_lookup(lookup(&[
                ("NEARCAST_TABLE", "t"),
                ("NEARCAST_CAP_PER_WEEK", "x")
            ])),
            Err(InitError::Invalid {
                var: "NEARCAST_CAP_PER_WEEK",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn an_engine_on_the_default_policy_has_it_in_force() {
        let store = Arc::new(DefaultPolicy::new(
            Arc::new(nearcast_core::memory::InMemoryStateStore::new()),
            nearcast_core::config::CapPolicy {
                per_day: 3,
                per_week: 9,
                min_gap_minutes: 15,
                ..Default::default()
            },
        ));
        let e = build_engine(
            store,
            Arc::new(LogNotifier),
            Arc::new(TableWeather::default()),
            Arc::new(SystemClock),
            None,
        )
        .await
        .unwrap();
        let p = &e.catalog().policy;
        assert_eq!((p.per_day, p.per_week, p.min_gap_minutes), (3, 9, 15));
    }

    #[test]
    fn weather_url_is_read_and_checked() {
        let c = Config::from_lookup(lookup(&[("NEARCAST_TABLE", "t")])).unwrap();
        assert_eq!(c.weather_url, None);
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            (
                "NEARCAST_WEATHER_URL",
                " https://api.open-meteo.com/v1/forecast ",
            ),
        ]))
        .unwrap();
        assert_eq!(
            c.weather_url.as_deref(),
            Some("https://api.open-meteo.com/v1/forecast")
        );
        // The https client builds in the functions' dependency set (TLS provider chosen).
        assert!(weather_source(c.weather_url.as_deref()).is_ok());
        assert!(matches!(
            weather_source(Some("api.open-meteo.com")),
            Err(InitError::Weather(_))
        ));
    }

    #[test]
    fn catalog_refresh_defaults_to_10_s_and_must_be_seconds() {
        let c = Config::from_lookup(lookup(&[("NEARCAST_TABLE", "t")])).unwrap();
        assert_eq!(c.catalog_refresh, std::time::Duration::from_secs(10));
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            ("NEARCAST_CATALOG_REFRESH_SECS", "0"),
        ]))
        .unwrap();
        assert_eq!(c.catalog_refresh, std::time::Duration::ZERO);
        for bad in ["-1", "1.5", "ten"] {
            assert!(matches!(
                Config::from_lookup(lookup(&[
                    ("NEARCAST_TABLE", "t"),
                    ("NEARCAST_CATALOG_REFRESH_SECS", bad),
                ])),
                Err(InitError::CatalogRefresh(v)) if v == bad
            ));
        }
    }

    #[test]
    fn retention_defaults_to_7_and_90_days_and_is_checked() {
        let c = Config::from_lookup(lookup(&[("NEARCAST_TABLE", "t")])).unwrap();
        assert_eq!(c.retention, nearcast_core::ports::Retention::default());
        assert_eq!(c.retention.idempotency, chrono::Duration::days(7));
        assert_eq!(c.retention.logs, chrono::Duration::days(90));
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            ("NEARCAST_KEEP_IDEMPOTENCY_DAYS", "2"),
            ("NEARCAST_KEEP_LOG_DAYS", "30"),
        ]))
        .unwrap();
        assert_eq!(
            (c.retention.idempotency, c.retention.logs),
            (chrono::Duration::days(2), chrono::Duration::days(30))
        );
        for (var, bad) in [
            ("NEARCAST_KEEP_IDEMPOTENCY_DAYS", "0"),
            ("NEARCAST_KEEP_LOG_DAYS", "ninety"),
            ("NEARCAST_KEEP_LOG_DAYS", "-5"),
        ] {
            assert!(matches!(
                Config::from_lookup(lookup(&[("NEARCAST_TABLE", "t"), (var, bad)])),
                Err(InitError::Invalid { var: v, .. }) if v == var
            ));
        }
    }

    /// An engine on an in-memory store with the bundled model and no weather.
    async fn memory_engine() -> Arc<Engine> {
        build_engine(
            Arc::new(nearcast_core::memory::InMemoryStateStore::new()),
            Arc::new(LogNotifier),
            Arc::new(TableWeather::default()),
            Arc::new(SystemClock),
            None,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn the_bundled_model_builds_an_engine() {
        let e = memory_engine().await;
        assert!(e.catalog().store_count() == 0);
    }

    #[test]
    fn model_variables_are_read_and_checked_by_name() {
        let m = ModelConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!((m.s3, m.challenger, m.challenger_share), (None, None, 0.1));
        let m = ModelConfig::from_lookup(lookup(&[
            ("NEARCAST_MODEL_BUCKET", "models"),
            ("NEARCAST_MODEL_KEY", "prod/ranker.json"),
            ("NEARCAST_CHALLENGER_KEY", "prod/challenger.json"),
            ("NEARCAST_CHALLENGER_SHARE", "0.25"),
        ]))
        .unwrap();
        assert_eq!(m.s3, Some(("models".into(), "prod/ranker.json".into())));
        assert_eq!(m.challenger.as_deref(), Some("prod/challenger.json"));
        assert_eq!(m.challenger_share, 0.25);
        let field = |pairs: &[(&str, &str)]| match ModelConfig::from_lookup(lookup(pairs)) {
            Err(InitError::Invalid { var, .. }) => var,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(&[("NEARCAST_MODEL_BUCKET", "b")]),
            "NEARCAST_MODEL_KEY"
        );
        assert_eq!(
            field(&[("NEARCAST_MODEL_KEY", "k")]),
            "NEARCAST_MODEL_BUCKET"
        );
        assert_eq!(
            field(&[
                ("NEARCAST_MODEL_BUCKET", "b"),
                ("NEARCAST_MODEL_KEY", "k"),
                ("NEARCAST_MODEL_PATH", "/m.json")
            ]),
            "NEARCAST_MODEL_PATH"
        );
        assert_eq!(
            field(&[("NEARCAST_CHALLENGER_SHARE", "0.2")]),
            "NEARCAST_CHALLENGER_SHARE"
        );
        for bad in ["1.5", "-0.1", "ten", "NaN"] {
            assert_eq!(
                field(&[
                    ("NEARCAST_CHALLENGER_KEY", "c.json"),
                    ("NEARCAST_CHALLENGER_SHARE", bad)
                ]),
                "NEARCAST_CHALLENGER_SHARE",
                "{bad}"
            );
        }
        // Through the whole configuration too.
        let c = Config::from_lookup(lookup(&[
            ("NEARCAST_TABLE", "t"),
            ("NEARCAST_MODEL_BUCKET", "b"),
        ]));
        assert!(matches!(
            c,
            Err(InitError::Invalid {
                var: "NEARCAST_MODEL_KEY",
                ..
            })
        ));
    }

    /// On moto: the champion and challenger come from S3 at init; a refused artifact fails
    /// the start with its reason.
    #[tokio::test]
    async fn models_load_from_s3_at_init() {
        use nearcast_aws::model_store::S3Blobs;
        use nearcast_core::model_store::{Blobs, Slot, publish};
        let moto = nearcast_aws::moto::shared();
        let aws = moto.sdk_config(None).await;
        let bucket = format!("models-{}", std::process::id());
        let client = S3Blobs::client_from(&aws);
        S3Blobs::create_bucket(&client, &bucket).await.unwrap();
        let mut a: serde_json::Value = serde_json::from_str(nearcast::BUNDLED_MODEL).unwrap();
        a["version"] = "s3-champion".into();
        let blobs = S3Blobs::new(client.clone(), &bucket, "prod/ranker.json");
        publish(&blobs, &serde_json::to_vec(&a).unwrap(), chrono::Utc::now())
            .await
            .unwrap();
        a["version"] = "s3-challenger".into();
        let ch = S3Blobs::new(client.clone(), &bucket, "prod/challenger.json");
        ch.put(Slot::Current, &serde_json::to_vec(&a).unwrap())
            .await
            .unwrap();
        let engine = memory_engine().await;
        let models = ModelConfig::from_lookup(lookup(&[
            ("NEARCAST_MODEL_BUCKET", &bucket),
            ("NEARCAST_MODEL_KEY", "prod/ranker.json"),
            ("NEARCAST_CHALLENGER_KEY", "prod/challenger.json"),
            ("NEARCAST_CHALLENGER_SHARE", "0.5"),
        ]))
        .unwrap();
        apply_models(&engine, &models, &aws).await.unwrap();
        assert_eq!(engine.ranker().version(), "s3-champion");
        let c = engine.challenger().unwrap();
        assert_eq!((c.ranker.version(), c.share), ("s3-challenger", 0.5));
        // A missing or corrupt object fails the start, naming it.
        let missing = ModelConfig {
            s3: Some((bucket.clone(), "prod/none.json".into())),
            challenger: None,
            challenger_share: 0.1,
        };
        let e = apply_models(&engine, &missing, &aws)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prod/none.json") && e.contains("no such object"),
            "{e}"
        );
        ch.put(Slot::Current, b"{broken").await.unwrap();
        let e = apply_models(&engine, &models, &aws)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prod/challenger.json") && e.contains("not valid"),
            "{e}"
        );
        // Reload goes back to S3: a newer publish comes into service.
        a["version"] = "s3-champion-2".into();
        publish(&blobs, &serde_json::to_vec(&a).unwrap(), chrono::Utc::now())
            .await
            .unwrap();
        engine.reload_model().await.unwrap();
        assert_eq!(engine.ranker().version(), "s3-champion-2");
    }
}
