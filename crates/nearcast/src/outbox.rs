//! The embedded default's notifier: each push becomes one JSON line in an outbox file and
//! one log line. It implements the same `Notifier` port as the SNS adapter, so the engine
//! cannot tell them apart. The token is never written; the line carries the delivery id,
//! which is deterministic per event, so a consumer can drop repeats.
//!
//! The outbox is part of what Nearcast writes, so erasure reaches it: the file is rewritten
//! without the erased user's lines (a new file renamed over the old one, so no freed
//! block of this file keeps them). A consumer that already read a line holds its own copy:
//! that is outside Nearcast (see docs/privacy.md).

use nearcast_core::decision::Push;
use nearcast_core::ids::Id;
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

    /// The delivery ids of every push in the outbox (a line cut short by a crash is
    /// skipped: its push was never acknowledged as sent).
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn delivery_ids(&self) -> std::io::Result<std::collections::HashSet<String>> {
        let _f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("outbox lock poisoned"))?;
        #[derive(serde::Deserialize)]
        struct Line {
            delivery_id: String,
        }
        let mut ids = std::collections::HashSet::new();
        for line in std::io::BufRead::split(std::io::BufReader::new(File::open(&self.path)?), b'\n')
        {
            if let Ok(l) = serde_json::from_slice::<Line>(&line?) {
                ids.insert(l.delivery_id);
            }
        }
        Ok(ids)
    }

    /// Rewrites the outbox without the lines addressed to `user`; returns how many went.
    /// A line that is not valid JSON (a torn append) is dropped when it holds the user id
    /// as a JSON string anywhere.
    ///
    /// # Errors
    /// When the file cannot be read, written or renamed; the old file is then untouched.
    pub fn erase_user(&self, user: &Id) -> std::io::Result<u64> {
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("outbox lock poisoned"))?;
        let text = std::fs::read(&self.path)?;
        let quoted = serde_json::to_string(user.as_str()).map_err(std::io::Error::other)?;
        let mut kept = Vec::with_capacity(text.len());
        let mut removed = 0u64;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let theirs = match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(v) => v.get("user_id").and_then(|u| u.as_str()) == Some(user.as_str()),
                Err(_) => line.windows(quoted.len()).any(|w| w == quoted.as_bytes()),
            };
            if theirs {
                removed += 1;
            } else {
                kept.extend_from_slice(line);
            }
        }
        if removed == 0 {
            return Ok(0);
        }
        let tmp = self.path.with_extension("erasing");
        {
            let mut t = File::create(&tmp)?;
            t.write_all(&kept)?;
            t.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        *f = OpenOptions::new().append(true).open(&self.path)?;
        tracing::info!(removed, "outbox lines of an erased user removed");
        Ok(removed)
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

    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<u64, NotifyError>> {
        let r = OutboxNotifier::erase_user(self, user)
            .map_err(|e| NotifyError::Retryable(format!("outbox rewrite: {e}")));
        Box::pin(std::future::ready(r))
    }
}
