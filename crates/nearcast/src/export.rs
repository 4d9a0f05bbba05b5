//! `nearcast export`: the logged decisions and outcomes of a store, joined into training
//! records ([`nearcast_core::export`]), written as JSON lines.

use crate::HostError;
use nearcast_core::export::{JoinOptions, join};
use nearcast_core::ports::{StateStore, StoreError, UserLog};
use std::io::Write;

/// Walks the store's logs one user at a time ([`StateStore::user_logs`]), joins each user's
/// decisions and outcomes and writes one JSON line per record to `out` as it goes, so
/// memory holds one user's log, not the store's. Records come grouped by user, each
/// user's oldest first. The join only ever looks at one user's log (attribution is per
/// user), so this gives the same records as joining everything at once. Returns how
/// many records were written.
///
/// # Errors
/// A store failure or a failed write (the walk stops at the first).
pub async fn export_to(
    store: &dyn StateStore,
    opts: &JoinOptions,
    out: &mut (dyn Write + Send),
) -> Result<usize, HostError> {
    let mut written = 0;
    let mut failed_write: Option<std::io::Error> = None;
    let mut sink = |log: UserLog| -> Result<(), StoreError> {
        let mut write = || -> std::io::Result<()> {
            for r in join(&log.decisions, &log.outcomes, opts) {
                serde_json::to_writer(&mut *out, &r)?;
                out.write_all(b"\n")?;
                written += 1;
            }
            Ok(())
        };
        write().map_err(|e| {
            failed_write = Some(e);
            StoreError("export output failed".into())
        })
    };
    let walked = store.user_logs(&mut sink).await;
    let io = |source| HostError::Io {
        path: "export output".into(),
        source,
    };
    if let Some(e) = failed_write {
        return Err(io(e));
    }
    walked?;
    out.flush().map_err(io)?;
    Ok(written)
}

/// The pseudonym key: the bytes of `file` when given (stable pseudonyms across exports),
/// otherwise 32 random bytes (pseudonyms that cannot be linked to any other export).
///
/// # Errors
/// An unreadable or empty key file.
pub fn pseudonym_key(file: Option<&std::path::Path>) -> Result<Vec<u8>, HostError> {
    match file {
        None => Ok(rand::random::<[u8; 32]>().to_vec()),
        Some(p) => {
            let k = std::fs::read(p).map_err(|source| HostError::Io {
                path: p.display().to_string(),
                source,
            })?;
            if k.is_empty() {
                return Err(HostError::Invalid {
                    path: p.display().to_string(),
                    reason: "key file is empty".into(),
                });
            }
            Ok(k)
        }
    }
}
