//! Publishing ranking models where the services load them, keeping every version and a
//! history, so a bad model is rolled back with one command.
//!
//! A model store has three kinds of object ([`Slot`]): the **current** artifact (the one
//! the services load), one **version** copy per published version, and the **history**
//! (which version was current, in order, and every publish and rollback with its time).
//! The embedded host keeps them in a folder, the AWS host in S3; the logic is here.
//!
//! Every artifact is checked before anything is written: it must load in this build (format,
//! feature schema hash, weights). Writes go version copy, then current, then history.

use crate::ports::BoxFuture;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Format tag of the history object.
pub const HISTORY_FORMAT: &str = "nearcast-model-history/1";

/// One object of a model store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot<'a> {
    /// The artifact in service.
    Current,
    /// The copy of a published version.
    Version(&'a str),
    /// The history.
    History,
}

/// Where the objects live (a folder, an S3 prefix).
pub trait Blobs: Send + Sync {
    /// The object's bytes, or `None` if it does not exist.
    fn get<'a>(&'a self, slot: Slot<'a>) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>>;
    /// Writes the object whole (readers see the old or the new bytes, never a mix).
    fn put<'a>(&'a self, slot: Slot<'a>, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>>;
    /// Where this store is, for messages.
    fn location(&self) -> String;
}

/// Why a model operation failed. Nothing was written unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ModelStoreError {
    /// The artifact does not load in this build.
    #[error("artifact refused, nothing published: {0}")]
    Refused(String),
    /// The version label cannot name a file or key.
    #[error(
        "artifact version {0:?} must be 1 to 64 letters, digits, '.', '-' or '_'; nothing published"
    )]
    BadVersion(String),
    /// The version was published before with other content.
    #[error(
        "version {0} was published before with different content; give the artifact a new version"
    )]
    VersionTaken(String),
    /// Nothing to roll back to.
    #[error("no previous model to roll back to")]
    NoPrevious,
    /// The store failed.
    #[error("model store {location}: {reason}")]
    Storage {
        /// Where.
        location: String,
        /// What.
        reason: String,
    },
}

/// One publish or rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `publish` or `rollback`.
    pub action: String,
    /// The version that became current.
    pub version: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The history object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// [`HISTORY_FORMAT`].
    pub format: String,
    /// Versions that were current, oldest first; the last is current. A rollback removes
    /// the last.
    pub stack: Vec<String>,
    /// Every publish and rollback, oldest first.
    pub log: Vec<HistoryEntry>,
}

impl Default for History {
    fn default() -> Self {
        Self {
            format: HISTORY_FORMAT.into(),
            stack: Vec::new(),
            log: Vec::new(),
        }
    }
}

/// What a store holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// Where.
    pub location: String,
    /// Version of the current artifact, if there is one.
    pub current: Option<String>,
    /// The history.
    pub history: History,
}

/// Checks that an artifact loads in this build; returns its version.
///
/// # Errors
/// [`ModelStoreError::Refused`] with the loader's reason (format, schema hash, weights).
pub fn check(bytes: &[u8]) -> Result<String, ModelStoreError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ModelStoreError::Refused("model artifact is not valid: not UTF-8".into()))?;
    let r = crate::ranker::load(text).map_err(|e| ModelStoreError::Refused(e.to_string()))?;
    Ok(r.version().to_string())
}

fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn storage(b: &dyn Blobs) -> impl Fn(String) -> ModelStoreError + '_ {
    move |reason| ModelStoreError::Storage {
        location: b.location(),
        reason,
    }
}

async fn history(b: &dyn Blobs) -> Result<History, ModelStoreError> {
    match b.get(Slot::History).await.map_err(storage(b))? {
        None => Ok(History::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| storage(b)(format!("history is not valid: {e}"))),
    }
}

async fn put_history(b: &dyn Blobs, h: &History) -> Result<(), ModelStoreError> {
    let bytes = serde_json::to_vec_pretty(h).map_err(|e| storage(b)(e.to_string()))?;
    b.put(Slot::History, &bytes).await.map_err(storage(b))
}

/// Publishes `artifact` as the current model, keeping the previous ones. Returns its version.
///
/// # Errors
/// A refused artifact or version (nothing written), or a storage failure.
pub async fn publish(
    b: &dyn Blobs,
    artifact: &[u8],
    now: DateTime<Utc>,
) -> Result<String, ModelStoreError> {
    let version = check(artifact)?;
    if !valid_version(&version) {
        return Err(ModelStoreError::BadVersion(version));
    }
    let mut h = history(b).await?;
    match b.get(Slot::Version(&version)).await.map_err(storage(b))? {
        Some(existing) if existing != artifact => {
            return Err(ModelStoreError::VersionTaken(version));
        }
        Some(_) => {}
        None => b
            .put(Slot::Version(&version), artifact)
            .await
            .map_err(storage(b))?,
    }
    b.put(Slot::Current, artifact).await.map_err(storage(b))?;
    if h.stack.last() != Some(&version) {
        h.stack.push(version.clone());
    }
    h.log.push(HistoryEntry {
        action: "publish".into(),
        version: version.clone(),
        at: now,
    });
    put_history(b, &h).await?;
    Ok(version)
}

/// Makes the previously current version current again. Returns its version.
///
/// # Errors
/// [`ModelStoreError::NoPrevious`], a previous artifact that no longer loads in this build
/// (nothing written), or a storage failure.
pub async fn rollback(b: &dyn Blobs, now: DateTime<Utc>) -> Result<String, ModelStoreError> {
    let mut h = history(b).await?;
    if h.stack.len() < 2 {
        return Err(ModelStoreError::NoPrevious);
    }
    let previous = h.stack[h.stack.len() - 2].clone();
    let bytes = b
        .get(Slot::Version(&previous))
        .await
        .map_err(storage(b))?
        .ok_or_else(|| storage(b)(format!("the copy of version {previous} is missing")))?;
    check(&bytes)?;
    b.put(Slot::Current, &bytes).await.map_err(storage(b))?;
    h.stack.pop();
    h.log.push(HistoryEntry {
        action: "rollback".into(),
        version: previous.clone(),
        at: now,
    });
    put_history(b, &h).await?;
    Ok(previous)
}

/// What the store holds.
///
/// # Errors
/// A storage failure or an unreadable history.
pub async fn status(b: &dyn Blobs) -> Result<Status, ModelStoreError> {
    let current = b
        .get(Slot::Current)
        .await
        .map_err(storage(b))?
        .map(|bytes| check(&bytes).unwrap_or_else(|e| format!("(refused: {e})")));
    Ok(Status {
        location: b.location(),
        current,
        history: history(b).await?,
    })
}

/// Blobs in memory (tests).
#[derive(Default)]
pub struct MemoryBlobs(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

fn slot_name(s: Slot<'_>) -> String {
    match s {
        Slot::Current => "current".into(),
        Slot::Version(v) => format!("versions/{v}"),
        Slot::History => "history".into(),
    }
}

impl Blobs for MemoryBlobs {
    fn get<'a>(&'a self, slot: Slot<'a>) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        let v = self.0.lock().expect("lock").get(&slot_name(slot)).cloned();
        Box::pin(std::future::ready(Ok(v)))
    }
    fn put<'a>(&'a self, slot: Slot<'a>, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>> {
        self.0
            .lock()
            .expect("lock")
            .insert(slot_name(slot), bytes.to_vec());
        Box::pin(std::future::ready(Ok(())))
    }
    fn location(&self) -> String {
        "memory".into()
    }
}

impl MemoryBlobs {
    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.0.lock().expect("lock").len()
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLED: &str = include_str!("../../../models/ranker.json");

    fn artifact(version: &str) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_str(BUNDLED).unwrap();
        v["version"] = version.into();
        serde_json::to_vec(&v).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn publish_keeps_versions_and_rollback_restores_the_previous_one() {
        block(async {
            let b = MemoryBlobs::default();
            assert_eq!(publish(&b, &artifact("v1"), now()).await.unwrap(), "v1");
            assert_eq!(publish(&b, &artifact("v2"), now()).await.unwrap(), "v2");
            assert_eq!(b.get(Slot::Current).await.unwrap(), Some(artifact("v2")));
            assert_eq!(
                b.get(Slot::Version("v1")).await.unwrap(),
                Some(artifact("v1"))
            );
            let s = status(&b).await.unwrap();
            assert_eq!(s.current.as_deref(), Some("v2"));
            assert_eq!(s.history.stack, ["v1", "v2"]);
            assert_eq!(rollback(&b, now()).await.unwrap(), "v1");
            assert_eq!(b.get(Slot::Current).await.unwrap(), Some(artifact("v1")));
            let s = status(&b).await.unwrap();
            assert_eq!(s.history.stack, ["v1"]);
            let actions: Vec<&str> = s.history.log.iter().map(|e| e.action.as_str()).collect();
            assert_eq!(actions, ["publish", "publish", "rollback"]);
            assert!(matches!(
                rollback(&b, now()).await,
                Err(ModelStoreError::NoPrevious)
            ));
            // Publishing the same artifact again is fine; other bytes under a taken version
            // are not.
            publish(&b, &artifact("v2"), now()).await.unwrap();
            let mut other: serde_json::Value = serde_json::from_slice(&artifact("v2")).unwrap();
            other["created_at"] = "2026-12-01T00:00:00Z".into();
            let e = publish(&b, &serde_json::to_vec(&other).unwrap(), now())
                .await
                .unwrap_err();
            assert!(matches!(e, ModelStoreError::VersionTaken(v) if v == "v2"));
            assert_eq!(b.get(Slot::Current).await.unwrap(), Some(artifact("v2")));
        });
    }

    #[test]
    fn a_corrupt_or_mismatched_artifact_is_refused_before_anything_is_written() {
        block(async {
            let b = MemoryBlobs::default();
            let e = publish(&b, b"{not json", now()).await.unwrap_err();
            assert!(e.to_string().contains("not valid"), "{e}");
            let mut v: serde_json::Value = serde_json::from_str(BUNDLED).unwrap();
            v["schema_hash"] = "0000".into();
            let e = publish(&b, &serde_json::to_vec(&v).unwrap(), now())
                .await
                .unwrap_err();
            assert!(e.to_string().contains("schema"), "{e}");
            let e = publish(&b, &artifact("../evil"), now()).await.unwrap_err();
            assert!(matches!(e, ModelStoreError::BadVersion(_)));
            assert!(b.is_empty());
        });
    }
}
