//! A model store in a folder: `ranker.json` (current), `versions/<version>.json` and
//! `history.json`. `nearcast serve --model <dir>/ranker.json` and the functions'
//! `NEARCAST_MODEL_PATH` load the current artifact.

use nearcast_core::model_store::{Blobs, Slot};
use nearcast_core::ports::BoxFuture;
use std::path::{Path, PathBuf};

/// File name of the current artifact in a model folder.
pub const CURRENT: &str = "ranker.json";

/// A model store in the folder `.0`.
pub struct DirBlobs(pub PathBuf);

impl DirBlobs {
    /// The file of `slot`.
    pub fn path(&self, slot: Slot<'_>) -> PathBuf {
        match slot {
            Slot::Current => self.0.join(CURRENT),
            Slot::Version(v) => self.0.join("versions").join(format!("{v}.json")),
            Slot::History => self.0.join("history.json"),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader sees the
/// old or the new file, never half of one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Blobs for DirBlobs {
    fn get<'a>(&'a self, slot: Slot<'a>) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        let p = self.path(slot);
        let r = match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        };
        Box::pin(std::future::ready(r))
    }

    fn put<'a>(&'a self, slot: Slot<'a>, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), String>> {
        let p = self.path(slot);
        let r = write_atomic(&p, bytes).map_err(|e| format!("{}: {e}", p.display()));
        Box::pin(std::future::ready(r))
    }

    fn location(&self) -> String {
        self.0.display().to_string()
    }
}
