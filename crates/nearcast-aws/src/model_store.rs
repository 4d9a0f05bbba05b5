//! A model store in S3: the current artifact at `key` (what the functions load with
//! `NEARCAST_MODEL_BUCKET` / `NEARCAST_MODEL_KEY`), each version at
//! `<key>.versions/<version>.json`, the history at `<key>.history.json`.
//!
//! Why aws-sdk-s3: the official SDK, on the same runtime, configuration and credentials
//! chain as the DynamoDB and SNS clients.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use nearcast_core::model_store::{Blobs, Slot};
use nearcast_core::ports::BoxFuture;

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

/// The champion loaded from an S3 object each time: the functions' reload after a publish.
pub struct S3ModelSource {
    /// Where the artifact is.
    pub blobs: S3Blobs,
    /// Its key.
    pub key: String,
}

/// Loads and checks an artifact from S3.
///
/// # Errors
/// A missing object, an S3 failure, or an artifact this build refuses (naming the cause).
pub async fn load_ranker(
    blobs: &S3Blobs,
    key: &str,
) -> Result<std::sync::Arc<dyn nearcast_core::ranker::Ranker>, String> {
    let where_ = format!("s3://{}/{key}", blobs.bucket);
    let bytes = blobs
        .get_object(key)
        .await?
        .ok_or_else(|| format!("{where_}: no such object"))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("{where_}: not UTF-8"))?;
    nearcast_core::ranker::load(text).map_err(|e| format!("{where_}: {e}"))
}

impl nearcast_core::engine::ModelSource for S3ModelSource {
    fn load(
        &self,
    ) -> BoxFuture<'_, Result<std::sync::Arc<dyn nearcast_core::ranker::Ranker>, String>> {
        Box::pin(load_ranker(&self.blobs, &self.key))
    }
}
