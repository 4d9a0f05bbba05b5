//! `nearcast export`: the logged decisions and outcomes of a store, joined into training
//! records ([`nearcast_core::export`]), written as JSON lines.

use crate::HostError;
use nearcast_core::export::{JoinOptions, join};
use nearcast_core::ports::StateStore;
use std::io::Write;

/// Reads the store's decision and outcome logs, joins them and writes one JSON line per
/// record to `out`. Returns how many records were written.
///
/// # Errors
/// A store failure or a failed write.
pub async fn export_to(
    store: &dyn StateStore,
    opts: &JoinOptions,
    out: &mut dyn Write,
) -> Result<usize, HostError> {
    let decisions = store.decisions().await?;
    let outcomes = store.outcomes().await?;
    let records = join(&decisions, &outcomes, opts);
    let io = |source| HostError::Io {
        path: "export output".into(),
        source,
    };
    for r in &records {
        serde_json::to_writer(&mut *out, r).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(records.len())
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
