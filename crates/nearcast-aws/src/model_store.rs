//! A model store in S3: the current artifact at `key` (what the functions load with
//! `NEARCAST_MODEL_BUCKET` / `NEARCAST_MODEL_KEY`), each version at
//! `<key>.versions/<version>.json`, the history at `<key>.history.json`.
//!
//! Why aws-sdk-s3: the official SDK, on the same runtime, configuration and credentials
//! chain as the DynamoDB and SNS clients.
//!
//! # Rollout to running instances
//!
//! A change of the models in S3 reaches warm Lambda instances through the table: whoever
//! changes them ([`announced`]: `nearcast model publish | rollback --table`, or
//! `POST /v1/admin/model/reload` on a function) then adds 1 to the `model` number on
//! `CONFIG / VERSION` ([`DynamoStateStore::bump_model_version`]). Each instance reads that
//! number with the catalog version, in the GetItem it makes at most once per interval
//! anyway ([`crate::refresh::RefreshingStore`]), and when it moved loads the champion and
//! the challenger again through its [`ModelRollout`]. A refused artifact keeps the models
//! in service.

use crate::DynamoStateStore;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use nearcast_core::engine::{Challenger, Engine, EngineError};
use nearcast_core::model_store::{Blobs, ModelStoreError, Slot};
use nearcast_core::ports::BoxFuture;
use nearcast_core::ranker::Ranker;
use std::sync::Arc;

/// A model store at `s3://bucket/key`.
#[derive(Clone)]
pub struct S3Blobs {
    client: Client,
    bucket: String,
    key: String,
}

impl S3Blobs {
    /// A store at `s3://bucket/key` through `client`.
    pub fn new(client: Client, bucket: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    /// A client from the standard AWS configuration (`AWS_ENDPOINT_URL` honoured). Path-style
    /// addressing, so local endpoints work without DNS tricks.
    pub async fn client() -> Client {
        Self::client_from(&crate::sdk_config(None).await)
    }

    /// As [`S3Blobs::client`], at `endpoint` when given (tests put a proxy there).
    pub async fn client_at(endpoint: Option<&str>) -> Client {
        Self::client_from(&crate::sdk_config(endpoint).await)
    }

    /// A client from `config`, path-style addressing.
    pub fn client_from(config: &crate::SdkConfig) -> Client {
        Client::from_conf(
            aws_sdk_s3::config::Builder::from(config)
                .force_path_style(true)
                .build(),
        )
    }

    /// Creates a bucket (deployment scripts and tests); an existing one of ours is fine.
    ///
    /// # Errors
    /// Any other S3 failure.
    pub async fn create_bucket(client: &Client, bucket: &str) -> Result<(), String> {
        match client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "S3 CreateBucket {bucket}: {}",
                DisplayErrorContext(&e)
            )),
        }
    }

    /// Parses `s3://bucket/key`.
    ///
    /// # Errors
    /// When it is not of that form.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?}: expected s3://bucket/key"))?;
        match rest.split_once('/') {
            Some((b, k)) if !b.is_empty() && !k.is_empty() && !k.ends_with('/') => {
                Ok((b.to_string(), k.to_string()))
            }
            _ => Err(format!("{url:?}: expected s3://bucket/key")),
        }
    }

    /// The object key of `slot`.
    pub fn key_of(&self, slot: Slot<'_>) -> String {
        match slot {
            Slot::Current => self.key.clone(),
            Slot::Version(v) => format!("{}.versions/{v}.json", self.key),
            Slot::History => format!("{}.history.json", self.key),
        }
    }

    /// Reads one object, `None` if it does not exist.
    ///
    /// # Errors
    /// Any S3 failure but a missing key.
    pub async fn get_object(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out
                .body
                .collect()
                .await
                .map(|b| Some(b.into_bytes().to_vec()))
                .map_err(|e| format!("S3 GetObject s3://{}/{key}: {e}", self.bucket)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(e) => Err(format!(
                "S3 GetObject s3://{}/{key}: {}",
                self.bucket,
                DisplayErrorContext(&e)
            )),
        }
    }
}

impl Blobs for S3Blobs {
    fn get<'a>(&'a self, slot: Slot<'a>) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move { self.get_object(&self.key_of(slot)).await })
    }

    fn put<'a>(&'a self, slot: Slot<'a>, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let key = self.key_of(slot);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(bytes.to_vec()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    format!(
                        "S3 PutObject s3://{}/{key}: {}",
                        self.bucket,
                        DisplayErrorContext(&e)
                    )
                })
        })
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// The champion loaded from an S3 object each time, on this instance only (the functions
/// use [`crate::refresh::RefreshingStore::serve_models`], which also announces the reload).
pub struct S3ModelSource {
    /// Where the artifact is.
    pub blobs: S3Blobs,
    /// Its key.
    pub key: String,
}

/// Why an artifact was not loaded from S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// The object is missing or this build refuses it (format, schema hash, weights): it
    /// stays so until someone changes it, which is announced again.
    Refused(String),
    /// S3 failed: worth trying again.
    Unavailable(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(m) | Self::Unavailable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads and checks an artifact from S3, telling a refused artifact from an S3 failure.
///
/// # Errors
/// [`LoadError`] naming the object and the cause.
pub async fn fetch_ranker(blobs: &S3Blobs, key: &str) -> Result<Arc<dyn Ranker>, LoadError> {
    let where_ = format!("s3://{}/{key}", blobs.bucket);
    let bytes = blobs
        .get_object(key)
        .await
        .map_err(LoadError::Unavailable)?
        .ok_or_else(|| LoadError::Refused(format!("{where_}: no such object")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| LoadError::Refused(format!("{where_}: not UTF-8")))?;
    nearcast_core::ranker::load(text).map_err(|e| LoadError::Refused(format!("{where_}: {e}")))
}

/// Loads and checks an artifact from S3.
///
/// # Errors
/// A missing object, an S3 failure, or an artifact this build refuses (naming the cause).
pub async fn load_ranker(blobs: &S3Blobs, key: &str) -> Result<Arc<dyn Ranker>, String> {
    fetch_ranker(blobs, key).await.map_err(|e| e.to_string())
}

/// The models of one instance as loaded from S3.
#[derive(Clone)]
pub struct Models {
    /// The champion.
    pub champion: Arc<dyn Ranker>,
    /// The challenger, when one is configured.
    pub challenger: Option<Challenger>,
}

/// Where an instance's models are in S3 (`NEARCAST_MODEL_BUCKET` / `NEARCAST_MODEL_KEY`,
/// `NEARCAST_CHALLENGER_KEY` / `NEARCAST_CHALLENGER_SHARE`): loaded at cold start and
/// again whenever a model change is announced.
pub struct ModelRollout {
    blobs: S3Blobs,
    challenger: Option<(String, f64)>,
}

impl std::fmt::Debug for ModelRollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRollout")
            .field("champion", &self.blobs.location())
            .field("challenger", &self.challenger)
            .finish()
    }
}

impl ModelRollout {
    /// The champion at `champion` (its bucket and key), and the challenger at a key of the
    /// same bucket scoring `share` of the users.
    pub fn new(champion: S3Blobs, challenger: Option<(String, f64)>) -> Self {
        Self {
            blobs: champion,
            challenger,
        }
    }

    /// Loads the champion, then the challenger: 1 or 2 GetObjects.
    ///
    /// # Errors
    /// The first [`LoadError`]; nothing is put in service.
    pub async fn load(&self) -> Result<Models, LoadError> {
        let champion = fetch_ranker(&self.blobs, &self.blobs.key).await?;
        let challenger = match &self.challenger {
            None => None,
            Some((key, share)) => Some(Challenger {
                ranker: fetch_ranker(&self.blobs, key).await?,
                share: *share,
            }),
        };
        Ok(Models {
            champion,
            challenger,
        })
    }

    /// Puts `models` in service on `engine`, the challenger first.
    ///
    /// # Errors
    /// [`EngineError::Invalid`] for a challenger share outside [0, 1]; nothing changes.
    pub fn put_in_service(&self, engine: &Engine, models: Models) -> Result<(), EngineError> {
        engine.set_challenger(models.challenger)?;
        engine.set_ranker(models.champion);
        Ok(())
    }

    /// The champion's store (to publish to it).
    pub fn blobs(&self) -> &S3Blobs {
        &self.blobs
    }
}

/// Why [`announced`] failed.
#[derive(Debug)]
pub enum AnnounceError {
    /// The table could not be read before anything was written: nothing published.
    Table {
        /// The table.
        table: String,
        /// What failed.
        reason: String,
    },
    /// The publish or rollback itself failed (see [`ModelStoreError`]).
    Store(ModelStoreError),
    /// The models are in S3 but the change was not announced.
    NotAnnounced {
        /// The version now current in S3.
        version: String,
        /// The table.
        table: String,
        /// What failed.
        reason: String,
    },
}

impl std::fmt::Display for AnnounceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Table { table, reason } => {
                write!(f, "table {table}: {reason}; nothing published")
            }
            Self::Store(e) => e.fmt(f),
            Self::NotAnnounced {
                version,
                table,
                reason,
            } => write!(
                f,
                "{version} is current in S3 but running functions were not told ({reason}); \
                 they keep their model until `nearcast model announce --table {table}` succeeds"
            ),
        }
    }
}

impl std::error::Error for AnnounceError {}

/// Runs `change` (a [`publish`](nearcast_core::model_store::publish) or a
/// [`rollback`](nearcast_core::model_store::rollback) on S3), then announces it on `table`
/// ([`DynamoStateStore::bump_model_version`]), so every warm instance loads the models
/// within its refresh interval. The table is read first, so a wrong table name or missing
/// permission fails before anything is written. Returns the version now current and the
/// new announcement number.
///
/// # Errors
/// [`AnnounceError`]: which step failed and what holds.
pub async fn announced(
    table: &DynamoStateStore,
    change: impl std::future::Future<Output = Result<String, ModelStoreError>>,
) -> Result<(String, u64), AnnounceError> {
    table.versions().await.map_err(|e| AnnounceError::Table {
        table: table.table().to_string(),
        reason: e.to_string(),
    })?;
    let version = change.await.map_err(AnnounceError::Store)?;
    let n = table
        .bump_model_version()
        .await
        .map_err(|e| AnnounceError::NotAnnounced {
            version: version.clone(),
            table: table.table().to_string(),
            reason: e.to_string(),
        })?;
    Ok((version, n))
}

impl nearcast_core::engine::ModelSource for S3ModelSource {
    fn load(&self) -> BoxFuture<'_, Result<Arc<dyn Ranker>, String>> {
        Box::pin(load_ranker(&self.blobs, &self.key))
    }
}
