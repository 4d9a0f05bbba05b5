//! `nearcast`: the whole service on one machine.

use clap::{Parser, Subcommand};
use nearcast::demo::{
    DemoOptions, embedded_engine, load_config_dir, print_report, replay, run_demo,
};
use nearcast::outbox::OutboxNotifier;
use nearcast::store::Sync;
use nearcast::{HostError, load_weather};
use nearcast_aws::DynamoStateStore;
use nearcast_aws::sns::SnsNotifier;
use nearcast_core::engine::Engine;
use nearcast_core::ports::{Clock, ManualClock, Notifier, SystemClock, WeatherSource};
use nearcast_core::weather::TableWeather;
use nearcast_weather::OpenMeteo;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "nearcast",
    version,
    about = "Geo-contextual push offers, on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where `serve` keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// SQLite file and outbox.
    #[value(alias = "sqlite")]
    Embedded,
    /// DynamoDB and SNS.
    Aws,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a day in Helsinki through the pipeline and prints every decision.
    Demo {
        /// Folder with stores.json, offers.json, weather.json, demo-day.jsonl.
        #[arg(long, default_value = "events")]
        data: PathBuf,
        /// Working folder for the database and the outbox (recreated).
        #[arg(long, default_value = "target/demo")]
        work: PathBuf,
        /// Model artifact (default: the bundled models/ranker.json).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Serves the HTTP API on loopback.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8787")]
        addr: String,
        /// State store: embedded (SQLite file, outbox) or aws (DynamoDB and SNS at
        /// AWS_ENDPOINT_URL or the standard AWS configuration, as the Lambda functions).
        #[arg(long, value_enum, default_value = "embedded")]
        backend: Backend,
        /// DynamoDB table (backend aws).
        #[arg(long, env = "NEARCAST_TABLE", default_value = "nearcast")]
        table: String,
        /// Create the DynamoDB table if it does not exist (backend aws; local use).
        #[arg(long)]
        create_table: bool,
        /// SNS platform application for APNs (backend aws); with neither ARN, pushes go
        /// to the outbox file.
        #[arg(long, env = "NEARCAST_APNS_ARN")]
        apns_arn: Option<String>,
        /// SNS platform application for FCM (backend aws).
        #[arg(long, env = "NEARCAST_FCM_ARN")]
        fcm_arn: Option<String>,
        /// Open-Meteo-compatible forecast endpoint (e.g. https://api.open-meteo.com/v1/forecast);
        /// overrides --weather.
        #[arg(long, env = "NEARCAST_WEATHER_URL")]
        weather_url: Option<String>,
        /// Database file (backend embedded).
        #[arg(long, default_value = "nearcast.db")]
        db: PathBuf,
        /// Outbox file for pushes.
        #[arg(long, default_value = "outbox.jsonl")]
        outbox: PathBuf,
        /// Model artifact (default: the bundled one).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Weather table (JSON spans) for the deterministic weather source.
        #[arg(long)]
        weather: Option<PathBuf>,
        /// Load stores.json / offers.json from this folder when the database has no stores.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Durability: normal survives a killed process, full survives power loss too.
        #[arg(long, value_enum, default_value = "normal")]
        sync: Sync,
        /// A challenger model artifact, scoring a stable share of users.
        #[arg(long)]
        challenger: Option<PathBuf>,
        /// Share of users scored by the challenger, 0 to 1.
        #[arg(long, default_value_t = 0.1, requires = "challenger")]
        challenger_share: f64,
        /// Days an idempotency key (event id and the answer given) is kept.
        #[arg(long, env = "NEARCAST_KEEP_IDEMPOTENCY_DAYS", default_value_t = nearcast_core::ports::IDEMPOTENCY_DAYS)]
        keep_idempotency_days: i64,
        /// Days decisions, deliveries and outcomes are kept.
        #[arg(long, env = "NEARCAST_KEEP_LOG_DAYS", default_value_t = nearcast_core::ports::LOG_RETENTION_DAYS)]
        keep_log_days: i64,
        /// API keys of the admin routes (a keys file, see `nearcast admin-key`). Required
        /// unless --addr is a loopback address, where without keys every caller is an admin.
        #[arg(long, env = "NEARCAST_ADMIN_KEYS")]
        admin_keys: Option<PathBuf>,
        /// The marketer console's built files, served at /console/ (default:
        /// crates/nearcast-console/dist when it exists; build it with
        /// scripts/build-console.sh).
        #[arg(long, env = "NEARCAST_CONSOLE")]
        console: Option<PathBuf>,
        /// Presence webhooks: every visit begun or ended is posted to this URL (https://,
        /// or http:// on loopback), signed with NEARCAST_WEBHOOK_SECRET (docs/formats.md).
        #[arg(long, env = "NEARCAST_WEBHOOK_URL", requires = "webhook_secret")]
        webhook_url: Option<String>,
        /// Signing secrets of the webhooks: `whsec_<base64>`, several separated by spaces
        /// during a rotation. Read from the environment only, never a command line.
        #[arg(
            long,
            env = "NEARCAST_WEBHOOK_SECRET",
            hide = true,
            hide_env_values = true
        )]
        webhook_secret: Option<String>,
    },
    /// Feeds a JSON-lines file of events through the pipeline and prints the decisions.
    Replay {
        /// The events, one JSON object per line.
        file: PathBuf,
        /// Database file.
        #[arg(long, default_value = "nearcast.db")]
        db: PathBuf,
        /// Outbox file.
        #[arg(long, default_value = "outbox.jsonl")]
        outbox: PathBuf,
        /// Configuration folder to load first (stores.json, offers.json).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Weather table.
        #[arg(long)]
        weather: Option<PathBuf>,
        /// Model artifact.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Writes the logged decisions with their outcomes as training data (JSON lines,
    /// format nearcast-training/1, docs/training-data.md).
    Export(ExportArgs),
    /// Publishes, rolls back and shows ranking models where the services load them.
    Model {
        #[command(subcommand)]
        action: ModelCommand,
    },
    /// Makes an API key for the admin routes of `nearcast serve`: prints the key once and
    /// adds its name, role and SHA-256 (never the key) to the keys file.
    AdminKey {
        /// Who holds it (the audit log names them).
        #[arg(long)]
        name: String,
        /// viewer (reads, simulates), editor (and changes stores and offers) or admin (and
        /// the policy, models, one person's data).
        #[arg(long, value_parser = ["viewer", "editor", "admin"])]
        role: String,
        /// The keys file to add it to (created if missing); `serve --admin-keys` reads it.
        #[arg(long)]
        keys: PathBuf,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Checks that the artifact loads in this build, then makes it the current model,
    /// keeping the previous versions.
    Publish {
        /// The artifact (nearcast-ranker JSON).
        artifact: PathBuf,
        /// A folder (current model at <dir>/ranker.json) or s3://bucket/key.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        table: AnnounceTable,
    },
    /// Makes the previously current version current again.
    Rollback {
        /// The folder or s3://bucket/key published to.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        table: AnnounceTable,
    },
    /// Shows the current version and the history.
    Status {
        /// The folder or s3://bucket/key published to.
        #[arg(long)]
        to: String,
    },
    /// Tells the functions on a table to load their models from S3 again (after the
    /// objects were changed some other way, or when a publish could not announce itself).
    Announce {
        /// The functions' DynamoDB table.
        #[arg(long, env = "NEARCAST_TABLE")]
        table: String,
    },
}

/// The table whose functions are told about an S3 publish or rollback.
#[derive(clap::Args)]
struct AnnounceTable {
    /// With an s3:// destination (required there; not used with a folder): the functions'
    /// DynamoDB table. The change is announced on it, and every warm function loads the
    /// models within NEARCAST_CATALOG_REFRESH_SECS.
    #[arg(long, env = "NEARCAST_TABLE")]
    table: Option<String>,
}

impl AnnounceTable {
    /// The store to announce on: required for S3, not used for a folder.
    async fn store(&self, to: &str) -> Result<Option<DynamoStateStore>, HostError> {
        let invalid = |reason: &str| HostError::Invalid {
            path: "--table".into(),
            reason: reason.into(),
        };
        match (to.starts_with("s3://"), &self.table) {
            (true, Some(t)) => Ok(Some(DynamoStateStore::from_env(t.clone()).await)),
            (true, None) => Err(invalid(
                "required with an s3:// destination (or NEARCAST_TABLE): the functions on that \
                 table load the new model when it is announced there",
            )),
            // A folder serves `nearcast serve`, which reloads on POST /v1/admin/model/reload.
            (false, _) => Ok(None),
        }
    }
}

async fn model_blobs(to: &str) -> Result<Box<dyn nearcast_core::model_store::Blobs>, HostError> {
    use nearcast_aws::model_store::S3Blobs;
    if to.starts_with("s3://") {
        let (bucket, key) = S3Blobs::parse_url(to).map_err(|reason| HostError::Invalid {
            path: "--to".into(),
            reason,
        })?;
        Ok(Box::new(S3Blobs::new(S3Blobs::client().await, bucket, key)))
    } else {
        Ok(Box::new(nearcast::model_store::DirBlobs(PathBuf::from(to))))
    }
}

async fn model(action: ModelCommand) -> Result<(), HostError> {
    use nearcast_aws::model_store::announced;
    use nearcast_core::model_store::{publish, rollback, status};
    let now = chrono::Utc::now();
    let failed = |to: &str, e: nearcast_core::model_store::ModelStoreError| HostError::Invalid {
        path: to.to_string(),
        reason: e.to_string(),
    };
    let told = |table: &DynamoStateStore, n: u64| {
        println!(
            "announced on table {} (model change {n}): warm functions load it within their refresh interval",
            table.table()
        );
    };
    let not_announced = |to: &str, e: nearcast_aws::model_store::AnnounceError| {
        use nearcast_aws::model_store::AnnounceError;
        match e {
            AnnounceError::Store(e) => failed(to, e),
            e => HostError::Invalid {
                path: to.to_string(),
                reason: e.to_string(),
            },
        }
    };
    match action {
        ModelCommand::Publish {
            artifact,
            to,
            table,
        } => {
            let bytes = std::fs::read(&artifact).map_err(|source| HostError::Io {
                path: artifact.display().to_string(),
                source,
            })?;
            let table = table.store(&to).await?;
            let blobs = model_blobs(&to).await?;
            let name = artifact.display().to_string();
            let (v, n) = match &table {
                None => (
                    publish(&*blobs, &bytes, now)
                        .await
                        .map_err(|e| failed(&name, e))?,
                    None,
                ),
                Some(t) => announced(t, publish(&*blobs, &bytes, now))
                    .await
                    .map(|(v, n)| (v, Some(n)))
                    .map_err(|e| not_announced(&name, e))?,
            };
            println!("published {v} to {}", blobs.location());
            if let (Some(t), Some(n)) = (&table, n) {
                told(t, n);
            }
        }
        ModelCommand::Rollback { to, table } => {
            let table = table.store(&to).await?;
            let blobs = model_blobs(&to).await?;
            let (v, n) = match &table {
                None => (
                    rollback(&*blobs, now).await.map_err(|e| failed(&to, e))?,
                    None,
                ),
                Some(t) => announced(t, rollback(&*blobs, now))
                    .await
                    .map(|(v, n)| (v, Some(n)))
                    .map_err(|e| not_announced(&to, e))?,
            };
            println!("rolled back to {v} at {}", blobs.location());
            if let (Some(t), Some(n)) = (&table, n) {
                told(t, n);
            }
        }
        ModelCommand::Status { to } => {
            let blobs = model_blobs(&to).await?;
            let s = status(&*blobs).await.map_err(|e| failed(&to, e))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&s).expect("status serialises")
            );
        }
        ModelCommand::Announce { table } => {
            let t = DynamoStateStore::from_env(table).await;
            let n = t.bump_model_version().await?;
            told(&t, n);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct ExportArgs {
    /// SQLite database file (the embedded store).
    #[arg(long, conflicts_with = "table")]
    db: Option<PathBuf>,
    /// Where the logs are: `embedded` (SQLite, --db) or `aws` (DynamoDB --table, at the standard AWS
    /// configuration; AWS_ENDPOINT_URL is honoured).
    #[arg(long, value_enum, default_value = "embedded")]
    backend: Backend,
    /// DynamoDB table (with --backend aws).
    #[arg(long)]
    table: Option<String>,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Attribution window in hours: outcomes count for a decision this long after it.
    #[arg(long, default_value_t = nearcast_core::export::DEFAULT_WINDOW_HOURS)]
    window_hours: i64,
    /// Only decisions at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only decisions before this time (RFC 3339).
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// File whose bytes key the user pseudonyms (same key: same pseudonyms across exports).
    /// Default: a random key, so no two exports can be linked.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

async fn export(a: ExportArgs) -> Result<(), HostError> {
    let invalid = |path: &str, reason: &str| HostError::Invalid {
        path: path.into(),
        reason: reason.into(),
    };
    if !(1..=24 * 365).contains(&a.window_hours) {
        return Err(invalid("--window-hours", "must be between 1 and 8760"));
    }
    let store: Arc<dyn nearcast_core::ports::StateStore> = match a.backend {
        Backend::Embedded => {
            let db =
                a.db.ok_or_else(|| invalid("--db", "is required with --backend embedded"))?;
            if !db.exists() {
                return Err(invalid(&db.display().to_string(), "no such database"));
            }
            Arc::new(nearcast::store::SqliteStore::open(&db, Sync::Normal)?)
        }
        Backend::Aws => {
            let table = a
                .table
                .ok_or_else(|| invalid("--table", "is required with --backend aws"))?;
            Arc::new(nearcast_aws::DynamoStateStore::from_env(table).await)
        }
    };
    let mut opts = nearcast_core::export::JoinOptions::new(nearcast::export::pseudonym_key(
        a.key_file.as_deref(),
    )?);
    opts.window = chrono::Duration::hours(a.window_hours);
    opts.since = a.since.map(|t| t.to_utc());
    opts.until = a.until.map(|t| t.to_utc());
    let n = match &a.out {
        Some(path) => {
            let f = std::fs::File::create(path).map_err(|source| HostError::Io {
                path: path.display().to_string(),
                source,
            })?;
            nearcast::export::export_to(&*store, &opts, &mut std::io::BufWriter::new(f)).await?
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            nearcast::export::export_to(&*store, &opts, &mut out).await?
        }
    };
    eprintln!("exported {n} records");
    Ok(())
}

/// The engine on DynamoDB and SNS (or the outbox without platform applications).
async fn aws_engine(
    table: &str,
    create_table: bool,
    apns_arn: Option<String>,
    fcm_arn: Option<String>,
    outbox: &std::path::Path,
    model: Option<&std::path::Path>,
    weather: Arc<dyn WeatherSource>,
    retention: nearcast_core::ports::Retention,
) -> Result<Arc<Engine>, HostError> {
    let client = DynamoStateStore::client(None).await;
    if create_table && DynamoStateStore::ensure_table(&client, table).await? {
        println!("created DynamoDB table {table}");
    }
    let notifier: Arc<dyn Notifier> = if apns_arn.is_none() && fcm_arn.is_none() {
        Arc::new(
            OutboxNotifier::open(outbox).map_err(|source| HostError::Io {
                path: outbox.display().to_string(),
                source,
            })?,
        )
    } else {
        Arc::new(SnsNotifier::new(
            SnsNotifier::client(None).await,
            apns_arn,
            fcm_arn,
        ))
    };
    let ranker = nearcast::load_model(model)?;
    let engine = Engine::new(
        Arc::new(DynamoStateStore::new(client, table).with_retention(retention)),
        notifier,
        weather,
        Arc::new(SystemClock),
        ranker,
    )
    .await?;
    Ok(Arc::new(engine))
}

fn weather_from(path: Option<&PathBuf>) -> Result<Arc<dyn WeatherSource>, HostError> {
    Ok(match path {
        Some(p) => Arc::new(load_weather(p)?),
        None => Arc::new(TableWeather::default()),
    })
}

async fn run(cli: Cli) -> Result<(), HostError> {
    match cli.command {
        Command::Export(a) => export(a).await,
        Command::Model { action } => model(action).await,
        Command::AdminKey { name, role, keys } => {
            let role =
                nearcast_api::auth::Role::parse(&role).unwrap_or(nearcast_api::auth::Role::Viewer);
            let existing = match std::fs::read_to_string(&keys) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(HostError::Io {
                        path: keys.display().to_string(),
                        source,
                    });
                }
            };
            let (key, text) = nearcast::new_admin_key(&name, role, existing.as_deref())?;
            std::fs::write(&keys, text).map_err(|source| HostError::Io {
                path: keys.display().to_string(),
                source,
            })?;
            eprintln!(
                "added {name} ({}) to {}; the key is shown once:",
                role.as_str(),
                keys.display()
            );
            println!("{key}");
            Ok(())
        }
        Command::Demo { data, work, model } => {
            let (engine, report, outbox) = run_demo(&DemoOptions { data, work, model }).await?;
            let mut out = std::io::stdout().lock();
            print_report(&engine, &report, &mut out).map_err(|source| HostError::Io {
                path: "stdout".into(),
                source,
            })?;
            nearcast::demo::print_campaign_results(&engine, &mut out).await?;
            println!(
                "  outbox          {} ({} pushes)",
                outbox.display(),
                report.sent
            );
            Ok(())
        }
        Command::Serve {
            addr,
            backend,
            table,
            create_table,
            apns_arn,
            fcm_arn,
            weather_url,
            db,
            outbox,
            model,
            weather,
            config,
            sync,
            challenger,
            challenger_share,
            keep_idempotency_days,
            keep_log_days,
            admin_keys,
            console,
            webhook_url,
            webhook_secret,
        } => {
            let admin_keys = nearcast::load_admin_keys(admin_keys.as_deref())?;
            let webhooks = match (&webhook_url, &webhook_secret) {
                (Some(url), Some(secret)) => Some((
                    nearcast::webhooks::HttpWebhookSender::new(url).map_err(|reason| {
                        HostError::Invalid {
                            path: "--webhook-url".into(),
                            reason,
                        }
                    })?,
                    nearcast_core::webhook::WebhookSecret::parse_list(secret).map_err(
                        |reason| HostError::Invalid {
                            path: "NEARCAST_WEBHOOK_SECRET".into(),
                            reason,
                        },
                    )?,
                )),
                (None, Some(_)) => {
                    return Err(HostError::Invalid {
                        path: "--webhook-url".into(),
                        reason: "NEARCAST_WEBHOOK_SECRET is set but no webhook URL".into(),
                    });
                }
                _ => None,
            };
            let retention =
                nearcast_core::ports::Retention::days(keep_idempotency_days, keep_log_days)
                    .map_err(|e| HostError::Invalid {
                        path: format!(
                            "--keep-{}",
                            e.field.replace("_days", "-days").replace('_', "-")
                        ),
                        reason: e.reason,
                    })?;
            let weather: Arc<dyn WeatherSource> = match weather_url {
                Some(url) => Arc::new(
                    OpenMeteo::new(&url, nearcast_weather::Options::default()).map_err(|e| {
                        HostError::Invalid {
                            path: "--weather-url".into(),
                            reason: e.to_string(),
                        }
                    })?,
                ),
                None => weather_from(weather.as_ref())?,
            };
            let (engine, pruned, pruned_logs) = match backend {
                Backend::Embedded => {
                    let (engine, store) = embedded_engine(
                        &db,
                        sync,
                        &outbox,
                        model.as_deref(),
                        weather,
                        Arc::new(SystemClock),
                    )
                    .await?;
                    // Idempotency keys and logs expire now and every RETENTION_EVERY.
                    let (pruned, pruned_logs) = store.prune(chrono::Utc::now(), &retention)?;
                    nearcast::spawn_retention(
                        store,
                        Arc::new(SystemClock),
                        retention,
                        nearcast::RETENTION_EVERY,
                    );
                    (engine, pruned, pruned_logs)
                }
                // DynamoDB expires idempotency keys and logs itself (TTL).
                Backend::Aws => (
                    aws_engine(
                        &table,
                        create_table,
                        apns_arn,
                        fcm_arn,
                        &outbox,
                        model.as_deref(),
                        weather,
                        retention,
                    )
                    .await?,
                    0,
                    0,
                ),
            };
            // `POST /v1/admin/model/reload` loads the --model file again (after a publish).
            if let Some(path) = &model {
                engine.set_model_source(Arc::new(nearcast::FileModelSource(path.clone())));
            }
            if let Some(path) = &challenger {
                engine.set_challenger(Some(nearcast_core::engine::Challenger {
                    ranker: nearcast::load_model(Some(path))?,
                    share: challenger_share,
                }))?;
            }
            if let Some(dir) = config
                && (engine.catalog().store_count() == 0)
            {
                load_config_dir(&engine, &dir).await?;
            }
            // The outbox relay: pushes committed but never claimed by a sender (the last
            // process died between its commit and its send) go out now, and every
            // RELAY_EVERY those whose sender has not come for RELAY_GRACE. The embedded file
            // has one owner, so at start every unclaimed push is an orphan.
            let start_grace = match backend {
                Backend::Embedded => chrono::Duration::zero(),
                Backend::Aws => nearcast::RELAY_GRACE,
            };
            let relayed = engine
                .relay_pending(start_grace, usize::MAX)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "outbox relay at start failed; retried on its timer");
                    0
                });
            nearcast::spawn_relay(engine.clone());
            // Presence webhooks: messages go to the outbox in each commit from now on, and
            // the relay posts them (and those left by an earlier run) every second.
            if let Some((sender, secrets)) = webhooks {
                engine.set_webhooks(true);
                nearcast::webhooks::spawn_relay(Arc::new(
                    nearcast_core::webhook::WebhookRelay::new(
                        engine.store().clone(),
                        Arc::new(sender),
                        secrets,
                        nearcast_core::webhook::RetryPolicy::DEFAULT,
                        Arc::new(SystemClock),
                    ),
                ));
            }
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| HostError::Io {
                    path: addr.clone(),
                    source,
                })?;
            let local = listener.local_addr().map_err(|source| HostError::Io {
                path: addr.clone(),
                source,
            })?;
            let access = nearcast::admin_access(local, admin_keys)?;
            let keys = match &access {
                nearcast_api::auth::Access::Keys(k) => k.len(),
                _ => 0,
            };
            tracing::info!(%local, ?backend, relayed, stores = engine.catalog().store_count(), pruned, pruned_logs, admin_keys = keys, "nearcast serving");
            println!("nearcast listening on http://{local}");
            let console = nearcast::console::console_dir(console.as_deref());
            if let Some(dir) = &console {
                println!(
                    "console at http://{local}/console/ (files of {})",
                    dir.display()
                );
            }
            let app =
                nearcast_api::router_with(engine, access).merge(nearcast::console::router(console));
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .map_err(|source| HostError::Io { path: addr, source })?;
            Ok(())
        }
        Command::Replay {
            file,
            db,
            outbox,
            config,
            weather,
            model,
        } => {
            let clock = ManualClock::new(chrono::Utc::now());
            let (engine, _) = embedded_engine(
                &db,
                Sync::Normal,
                &outbox,
                model.as_deref(),
                weather_from(weather.as_ref())?,
                Arc::new(clock.clone()) as Arc<dyn Clock>,
            )
            .await?;
            if let Some(dir) = config {
                load_config_dir(&engine, &dir).await?;
            }
            let report = replay(&engine, &clock, &file).await?;
            print_report(&engine, &report, &mut std::io::stdout().lock()).map_err(|source| {
                HostError::Io {
                    path: "stdout".into(),
                    source,
                }
            })?;
            Ok(())
        }
    }
}

/// mimalloc rather than glibc's allocator: see docs/performance.md ("Memory").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEARCAST_LOG")
                .unwrap_or_else(|_| "warn".into())
                .add_directive(
                    nearcast_core::QUIET_GEOMETRY_LOGS
                        .parse()
                        .expect("directive"),
                ),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
