//! The embedded default's notifier: each push becomes one JSON line in an outbox file and
//! one log line. It implements the same `Notifier` port as the SNS adapter, so the engine
//! cannot tell them apart. The token is never written; the line carries the delivery id,
//! which is deterministic per event, so a consumer can drop repeats.

use nearcast_core::decision::Push;
use nearcast_core::ports::{BoxFuture, Notifier, NotifyError};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Appends pushes to a JSON-lines file.
pub struct OutboxNotifier {
    path: PathBuf,
    file: Mutex<File>,
}

impl OutboxNotifier {
    /// Opens (creating) the outbox for appending.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Notifier for OutboxNotifier {
    fn send<'a>(&'a self, push: &'a Push) -> BoxFuture<'a, Result<(), NotifyError>> {
        let r = (|| {
            let mut line =
                serde_json::to_vec(push).map_err(|e| NotifyError::Permanent(e.to_string()))?;
            line.push(b'\n');
            let mut f = self
                .file
                .lock()
                .map_err(|_| NotifyError::Retryable("outbox lock poisoned".into()))?;
            // A failed append may have written part of the line (or all of it, with the
            // error on the last bytes): a consumer may have it, so it is not sent again.
            f.write_all(&line)
                .map_err(|e| NotifyError::Unconfirmed(format!("outbox append: {e}")))?;
            tracing::info!(delivery = %push.delivery_id, offer = %push.offer_id, store = %push.store_id, "push written to outbox");
            Ok(())
        })();
        Box::pin(std::future::ready(r))
    }
}
