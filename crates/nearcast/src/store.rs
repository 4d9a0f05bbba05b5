//! The embedded state store: one SQLite file.
//!
//! Why SQLite (through rusqlite, bundled): it is the most widely deployed and tested
//! embedded database, a single file that any `sqlite3` shell can inspect, with atomic
//! multi-row transactions. In WAL mode with `synchronous=NORMAL` a committed transaction
//! survives the process being killed (the WAL is in the OS page cache); `--sync full` adds
//! an fsync per commit to survive power loss too. redb was the alternative: pure Rust, but
//! younger, with no standard tooling to inspect a file in the field.
//!
//! Every commit is all or nothing: idempotency key check, version check, user state,
//! decision log, pending delivery and outcome log. Commits go to one **writer thread**,
//! which takes every commit waiting when it starts a transaction (group commit): each
//! commit runs inside its own savepoint (a duplicate or a version conflict rolls back that
//! commit alone), the group shares one `BEGIN IMMEDIATE` … `COMMIT`, and each caller is
//! answered only after that `COMMIT` returned, so an acknowledged event is durable as
//! `--sync` promises. The callers serialise their rows (JSON) on their own threads while
//! the writer writes. A group pays the transaction's fixed costs (the WAL append of the
//! pages it shares, its header, with `--sync full` the fsync) once for all its commits.
//!
//! Users are read on their own connections (one per core), which WAL lets read while the
//! writer writes: a read sees every commit acknowledged before it began, and the version
//! check in the commit catches anything newer. Everything else (admin, deliveries,
//! erasure, exports) runs on the writer's connection, behind a lock.

use chrono::{DateTime, Utc};
use nearcast_core::audit::{AuditEntry, ConfigChange};
use nearcast_core::campaign::Campaign;
use nearcast_core::config::{CapPolicy, Offer, Store};
use nearcast_core::coupon::{CouponCounts, Redemption, Upload};
use nearcast_core::decision::{Decision, Push};
use nearcast_core::ids::Id;
use nearcast_core::ports::{
    BoxFuture, Commit, CommitOutcome, DeliveryRecord, DeliveryStatus, Erasure, EventResult,
    KeptEvent, OutcomeKind, OutcomeRecord, StateStore, StoreError, UserData, UserLog, UserLogSink,
    UserRecord, erasure_pseudonym,
};
use nearcast_core::state::UserState;
use nearcast_core::webhook::{WebhookOutcome, WebhookRecord};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

/// How hard commits are pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sync {
    /// Survives a killed process (WAL, synchronous=NORMAL).
    Normal,
    /// Survives power loss too (fsync on every commit).
    Full,
}

/// The SQLite-backed state store.
pub struct SqliteStore {
    /// The connection that writes (the writer thread's, and every other operation's).
    conn: Arc<Mutex<Connection>>,
    /// Connections that read users, each behind its own lock.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Commits for the writer thread; `None` once the store is being dropped.
    commits: Option<mpsc::Sender<Job>>,
    /// Commits handed over and not yet answered (queued, being written by the writer
    /// thread, or being written inline by a caller).
    in_flight: Arc<AtomicUsize>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Stops the checkpointer.
    stop: Arc<std::sync::atomic::AtomicBool>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

/// How often the checkpointer copies the write-ahead log into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Most commits one transaction takes.
const MAX_GROUP: usize = 256;

/// One commit, serialised by its caller, for the writer thread.
struct Job {
    user: String,
    expected_version: u64,
    state: Option<String>,
    /// Event id and the answer given.
    events: Vec<(String, String)>,
    decisions: Vec<String>,
    /// Delivery id and body.
    pushes: Vec<(String, String)>,
    /// Time (seconds) and body.
    outcomes: Vec<(i64, String)>,
    /// Campaign, sends to count and its budget.
    budgets: Vec<(String, u64, u64)>,
    /// Campaign, code, delivery id and offer of each coupon code to assign.
    coupons: Vec<(String, String, String, String)>,
    /// Webhook message id and body (the message's JSON).
    webhooks: Vec<(String, String)>,
    /// Campaign, cell and the counts to add to it.
    cells: Vec<(
        String,
        nearcast_core::campaign_results::CellLevel,
        nearcast_core::campaign_results::CellKey,
        nearcast_core::campaign_results::Cell,
    )>,
    reply: tokio::sync::oneshot::Sender<Result<Written, StoreError>>,
}

/// What the writer did with one commit.
enum Written {
    Applied,
    Conflict,
    /// The event ids already recorded, each with the answer stored then.
    Duplicates(Vec<(String, String)>),
    /// This campaign's budget would be passed.
    BudgetSpent(String),
    /// A code of this campaign's pool was given out already.
    CouponTaken(String),
}

/// How `results_cells` names a level.
fn level_code(level: nearcast_core::campaign_results::CellLevel) -> i64 {
    use nearcast_core::campaign_results::CellLevel;
    match level {
        CellLevel::Days => 0,
        CellLevel::StoreDays => 1,
        CellLevel::StoreMonths => 2,
    }
}

/// Moves the cells of a file written before the cells had levels (`campaign_cells`) into
/// `results_cells`, each store's months added up from its days, in one transaction.
const MOVE_OLD_CELLS: &str = "
BEGIN IMMEDIATE;
INSERT INTO results_cells (campaign_id, level, day, store_id, variant, counter, value)
    SELECT campaign_id, CASE WHEN store_id = '*' THEN 0 ELSE 1 END, day, store_id, variant,
           counter, value
    FROM campaign_cells;
INSERT INTO results_cells (campaign_id, level, day, store_id, variant, counter, value)
    SELECT campaign_id, 2, substr(day, 1, 8) || '01' AS month, store_id, variant, counter,
           SUM(value)
    FROM campaign_cells WHERE store_id <> '*'
    GROUP BY campaign_id, month, store_id, variant, counter;
DROP TABLE campaign_cells;
COMMIT;
";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    state   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    user_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    at       INTEGER NOT NULL,
    result   TEXT NOT NULL,
    PRIMARY KEY (user_id, event_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    seq     INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_user ON decisions(user_id);
CREATE TABLE IF NOT EXISTS deliveries (
    seq         INTEGER PRIMARY KEY,
    delivery_id TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    claim       TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_user ON deliveries(user_id);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(seq) WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS outcomes (
    seq     INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    at      INTEGER NOT NULL,
    body    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_user ON outcomes(user_id);
CREATE TABLE IF NOT EXISTS stores (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS offers (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS campaign_sends (campaign_id TEXT PRIMARY KEY, sent INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results_cells (
    campaign_id TEXT NOT NULL,
    level       INTEGER NOT NULL,
    day         TEXT NOT NULL,
    store_id    TEXT NOT NULL,
    variant     TEXT NOT NULL,
    counter     TEXT NOT NULL,
    value       REAL NOT NULL,
    PRIMARY KEY (campaign_id, level, day, store_id, variant, counter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS erased (pseudonym TEXT PRIMARY KEY, at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (id TEXT PRIMARY KEY, body TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS coupons (
    code        TEXT PRIMARY KEY,
    campaign_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    issued      INTEGER NOT NULL DEFAULT 0,
    issued_at   INTEGER,
    delivery_id TEXT,
    user_id     TEXT,
    offer_id    TEXT,
    redeemed_at INTEGER,
    order_id    TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS coupons_free ON coupons(campaign_id, seq) WHERE issued = 0;
CREATE INDEX IF NOT EXISTS coupons_user ON coupons(user_id) WHERE user_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS webhooks (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    dead       INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks(next_at) WHERE dead = 0;
CREATE INDEX IF NOT EXISTS webhooks_dead ON webhooks(next_at) WHERE dead = 1;
CREATE INDEX IF NOT EXISTS webhooks_user ON webhooks(user_id);
";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// How long a checkpoint that truncates the WAL (after an erasure or a prune) is tried
/// again while something else holds it up.
const CHECKPOINT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The `user_version` of a file written with `secure_delete` on since it was last vacuumed.
const SECURE_DELETE_SINCE: i64 = 1;

impl SqliteStore {
    /// Opens (creating if needed) the database file.
    ///
    /// # Errors
    /// When the file cannot be opened or the schema cannot be created.
    pub fn open(path: &Path, sync: Sync) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(
            None,
            "synchronous",
            if sync == Sync::Full { "FULL" } else { "NORMAL" },
        )
        .map_err(err)?;
        conn.pragma_update(None, "busy_timeout", 5000)
            .map_err(err)?;
        conn.pragma_update(None, "temp_store", "memory")
            .map_err(err)?;
        // Deleted and overwritten content is zeroed in its page, not just unlinked: an
        // erased person (or a pruned log) cannot be read back from freed space.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // Files written before deliveries were claimed have no `claim` column.
        let has_claim: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('deliveries') WHERE name = 'claim'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if !has_claim {
            conn.execute_batch("ALTER TABLE deliveries ADD COLUMN claim TEXT")
                .map_err(err)?;
        }
        // Files written before the cells had levels keep them in `campaign_cells` (store,
        // then day): moved into `results_cells` with their stores' months added up.
        let old_cells: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'campaign_cells'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(err)?
            > 0;
        if old_cells {
            conn.execute_batch(MOVE_OLD_CELLS).map_err(err)?;
        }
        // A file last written without `secure_delete` may hold deleted rows in its free
        // pages: rewritten once (VACUUM keeps only live rows), then marked so it never is
        // again. `user_version` is Nearcast's own: 1 = written with secure_delete since.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if version < SECURE_DELETE_SINCE {
            conn.execute_batch("VACUUM").map_err(err)?;
            conn.pragma_update(None, "user_version", SECURE_DELETE_SINCE)
                .map_err(err)?;
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(err)?;
        }
        conn.set_prepared_statement_cache_capacity(64);
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open(path)?;
                r.pragma_update(None, "busy_timeout", 5000)?;
                r.pragma_update(None, "query_only", "ON")?;
                r.set_prepared_statement_cache_capacity(8);
                Ok(Mutex::new(r))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(err)?;
        // Checkpoints (copying the WAL into the file, and its fsyncs) run mostly on their
        // own thread and connection, concurrently with the writer. The writer keeps
        // SQLite's automatic checkpoint: run between two of its own transactions, it finds
        // little left to copy, and only a checkpoint that reaches the end of the log lets
        // the next transaction start the log again from its beginning (a log that is
        // always being appended to is never wholly copied by a concurrent checkpoint, and
        // would grow without end).
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpointer = {
            let c = Connection::open(path).map_err(err)?;
            c.pragma_update(None, "busy_timeout", 5000).map_err(err)?;
            c.pragma_update(
                None,
                "synchronous",
                if sync == Sync::Full { "FULL" } else { "NORMAL" },
            )
            .map_err(err)?;
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("nearcast-sqlite-checkpoint".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(CHECKPOINT_EVERY);
                        if let Err(e) =
                            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::warn!(error = %e, "checkpoint failed; retried");
                        }
                    }
                })
                .map_err(err)?
        };
        let conn = Arc::new(Mutex::new(conn));
        let (tx, rx) = mpsc::channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let writer = {
            let conn = Arc::clone(&conn);
            let in_flight = Arc::clone(&in_flight);
            std::thread::Builder::new()
                .name("nearcast-sqlite-writer".into())
                .spawn(move || write_loop(&conn, &rx, &in_flight))
                .map_err(err)?
        };
        Ok(Self {
            conn,
            readers,
            next_reader: AtomicUsize::new(0),
            commits: Some(tx),
            in_flight,
            writer: Some(writer),
            stop,
            checkpointer: Some(checkpointer),
        })
    }

    /// Runs `f` on a read connection (a free one if any).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        // With no commit in flight the writing connection is usually free, and its page
        // cache is current (a read connection's is dropped whenever another connection
        // wrote since its last read).
        if self.in_flight.load(Ordering::Acquire) == 0
            && let Ok(c) = self.conn.try_lock()
        {
            return f(&c).map_err(err);
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        let guard = (0..n)
            .find_map(|k| self.readers[(start + k) % n].try_lock().ok())
            .map_or_else(|| self.readers[start % n].lock(), Ok)
            .map_err(|_| StoreError("store lock poisoned".into()))?;
        f(&guard).map_err(err)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| StoreError("store lock poisoned".into()))?;
        f(&mut c).map_err(err)
    }

    /// SQLite's `secure_delete` setting in force: 1 when deleted content is zeroed.
    ///
    /// # Errors
    /// A database failure.
    pub fn secure_delete(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("PRAGMA secure_delete", [], |r| r.get(0)))
    }

    /// Copies the write-ahead log into the database file and truncates it to zero bytes, so
    /// that the frames holding deleted rows (an erasure, a prune) are gone from the WAL too.
    ///
    /// The pragma does not fail when it cannot finish: it answers `busy` = 1, and the WAL
    /// keeps its frames. That happens when the checkpointer thread's own (passive)
    /// checkpoint holds the checkpoint lock at that moment (SQLite then gives up at once,
    /// without waiting), or a reader outlasts the busy timeout. So it is tried again until
    /// it finishes, for up to [`CHECKPOINT_PATIENCE`]; after that the caller fails (an
    /// erasure answers an error and is retried; it is idempotent) rather than answering
    /// while deleted rows can still be read from the log.
    fn checkpoint(c: &Connection) -> rusqlite::Result<()> {
        let began = std::time::Instant::now();
        loop {
            let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(());
            }
            if began.elapsed() >= CHECKPOINT_PATIENCE {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("the write-ahead log could not be checkpointed and truncated".into()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// SQLite's `synchronous` setting in force: 1 (NORMAL) or 2 (FULL).
    ///
    /// # Errors
    /// A database failure.
    pub fn synchronous(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
    }

    /// Forgets idempotency keys older than `before` (the idempotency window).
    ///
    /// # Errors
    /// A database failure.
    pub fn prune_seen(&self, before: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        self.with(|c| {
            let n = c.execute(
                "DELETE FROM seen WHERE at < ?1",
                params![before.timestamp()],
            )?;
            if n > 0 {
                Self::checkpoint(c)?;
            }
            Ok(n)
        })
    }

    /// Forgets decisions, outcomes and finished deliveries that happened before `before`
    /// (the log retention, by default [`nearcast_core::ports::LOG_RETENTION_DAYS`]);
    /// returns how many rows went. A pending delivery stays until the relay sends it.
    ///
    /// # Errors
    /// A database failure.
    pub fn prune_logs(&self, before: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let t = before.timestamp();
            let n = tx.execute(
                "DELETE FROM decisions WHERE unixepoch(json_extract(body, '$.at')) < ?1",
                [t],
            )? + tx.execute("DELETE FROM outcomes WHERE at < ?1", [t])?
                + tx.execute(
                    "DELETE FROM deliveries WHERE status <> 'pending'
                       AND unixepoch(json_extract(body, '$.at')) < ?1",
                    [t],
                )?;
            // A coupon code's link to its user expires with the delivery it went out with
            // (the code stays issued).
            tx.execute(
                "UPDATE coupons SET user_id = NULL, delivery_id = NULL
                 WHERE user_id IS NOT NULL AND issued_at < ?1",
                [t],
            )?;
            tx.commit()?;
            if n > 0 {
                Self::checkpoint(c)?;
            }
            Ok(n)
        })
    }

    /// Applies `retention` as of `now`: forgets idempotency keys and logs older than their
    /// periods; returns how many keys and how many log rows went.
    ///
    /// # Errors
    /// A database failure.
    pub fn prune(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        retention: &nearcast_core::ports::Retention,
    ) -> Result<(usize, usize), StoreError> {
        let forgotten = now - chrono::Duration::days(nearcast_core::ports::ERASURE_MEMORY_DAYS);
        self.with(|c| c.execute("DELETE FROM erased WHERE at < ?1", [forgotten.timestamp()]))?;
        // Campaign send-rate counts (`<campaign>.rate.<YYYYMMDDHHMM>`) matter for their
        // minute only.
        let minute = (now - chrono::Duration::minutes(10))
            .format("%Y%m%d%H%M")
            .to_string();
        self.with(|c| {
            c.execute(
                "DELETE FROM campaign_sends WHERE campaign_id LIKE '%.rate.%'
                   AND substr(campaign_id, -12) < ?1",
                [minute],
            )
        })?;
        // Webhook dead letters not redriven within their keeping period, as on DynamoDB.
        let dead_before = now - chrono::Duration::days(nearcast_core::webhook::KEEP_DAYS);
        self.with(|c| {
            c.execute(
                "DELETE FROM webhooks WHERE dead = 1 AND next_at < ?1",
                [dead_before.timestamp_micros()],
            )
        })?;
        Ok((
            self.prune_seen(now - retention.idempotency)?,
            self.prune_logs(now - retention.logs)?,
        ))
    }

    /// Number of rows in a table (tests and the health endpoint).
    ///
    /// # Errors
    /// A database failure or an unknown table.
    pub fn count(&self, table: &str) -> Result<u64, StoreError> {
        if ![
            "users",
            "seen",
            "decisions",
            "deliveries",
            "outcomes",
            "stores",
            "offers",
            "campaigns",
            "campaign_sends",
            "results_cells",
            "coupons",
            "webhooks",
        ]
        .contains(&table)
        {
            return Err(StoreError(format!("unknown table {table}")));
        }
        self.with(|c| {
            c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n as u64)
    }

    /// Every row of every table, one line each (`table: col | col ...`), in table then row
    /// order: what an audit or a "nothing changed" test compares.
    ///
    /// # Errors
    /// A database failure.
    pub fn dump(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let tables: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut rows = Vec::new();
            for t in tables {
                let mut q = c.prepare(&format!("SELECT * FROM \"{t}\" ORDER BY 1"))?;
                let n = q.column_count();
                let mut r = q.query([])?;
                while let Some(row) = r.next()? {
                    let cols = (0..n)
                        .map(|i| {
                            row.get_ref(i).map(|v| match v {
                                rusqlite::types::ValueRef::Text(t) => {
                                    format!("{:?}", String::from_utf8_lossy(t))
                                }
                                other => format!("{other:?}"),
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    rows.push(format!("{t}: {}", cols.join(" | ")));
                }
            }
            Ok(rows)
        })
    }

    /// Rows mentioning a user anywhere (erasure tests).
    ///
    /// # Errors
    /// A database failure.
    pub fn rows_about(&self, user: &Id) -> Result<u64, StoreError> {
        self.with(|c| {
            let mut n = 0i64;
            for t in [
                "users",
                "seen",
                "decisions",
                "deliveries",
                "outcomes",
                "webhooks",
            ] {
                n += c.query_row(
                    &format!("SELECT COUNT(*) FROM {t} WHERE user_id = ?1"),
                    [user.as_str()],
                    |r| r.get::<_, i64>(0),
                )?;
            }
            Ok(n as u64)
        })
    }

    /// Serialises a commit and has it written; the answer comes once the transaction that
    /// holds it is committed. A commit that finds no other in flight and the connection
    /// free is written by its caller at once (a lone caller does not pay two thread
    /// wake-ups per commit); otherwise it goes to the writer thread, which groups it with
    /// the others waiting. At most one commit is written inline at a time, and only when
    /// nothing is queued, so the writer's groups form as before under load.
    fn submit(
        &self,
        cm: &Commit,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Written, StoreError>>, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            user: cm.user_id.as_str().to_owned(),
            expected_version: cm.expected_version,
            state: cm.state.as_ref().map(json).transpose()?,
            events: cm
                .events
                .iter()
                .map(|(e, r)| Ok((e.as_str().to_owned(), json(r)?)))
                .collect::<Result<_, StoreError>>()?,
            decisions: cm.decisions.iter().map(json).collect::<Result<_, _>>()?,
            pushes: cm
                .pushes
                .iter()
                .map(|p| Ok((p.delivery_id.clone(), json(p)?)))
                .collect::<Result<_, StoreError>>()?,
            outcomes: cm
                .outcomes
                .iter()
                .map(|o| Ok((o.at.timestamp(), json(o)?)))
                .collect::<Result<_, StoreError>>()?,
            budgets: {
                let mut b: Vec<(String, u64, u64)> = Vec::new();
                for (id, budget) in &cm.budgets {
                    match b.iter_mut().find(|x| x.0 == id.as_str()) {
                        Some(x) => x.1 += 1,
                        None => b.push((id.as_str().to_owned(), 1, *budget)),
                    }
                }
                b
            },
            cells: cm
                .cells
                .iter()
                .map(|(c, l, k, v)| (c.as_str().to_owned(), *l, k.clone(), v.clone()))
                .collect(),
            coupons: cm
                .coupons
                .iter()
                .map(|c| {
                    (
                        c.campaign_id.as_str().to_owned(),
                        c.code.clone(),
                        c.delivery_id.clone(),
                        c.offer_id.as_str().to_owned(),
                    )
                })
                .collect(),
            webhooks: cm
                .webhooks
                .iter()
                .map(|m| Ok((m.id.clone(), json(m)?)))
                .collect::<Result<_, StoreError>>()?,
            reply,
        };
        let commits = self
            .commits
            .as_ref()
            .ok_or_else(|| StoreError("store is closing".into()))?;
        if self
            .in_flight
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if let Ok(mut c) = self.conn.try_lock() {
                let answer = match write_group(&mut c, std::slice::from_ref(&job)) {
                    Ok(mut a) => a
                        .pop()
                        .unwrap_or_else(|| Err(StoreError("no answer".into()))),
                    Err(e) => Err(e),
                };
                drop(c);
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                let _ = job.reply.send(answer);
                return Ok(rx);
            }
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        // Counted in flight above (the inline attempt's count is kept for the writer).
        if commits.send(job).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError("the store's writer has stopped".into()));
        }
        Ok(rx)
    }

    /// Settles the deliveries a sender claimed and never finished because the process
    /// died between the claim and the answer: those whose line is in the outbox (`sent`
    /// holds the outbox's delivery ids) went out and are marked sent; the others never
    /// left, and go back to pending for the relay. Exact on the embedded host, whose
    /// outbox file is the platform: no push is lost and none is written twice. Returns
    /// (marked sent, reopened).
    ///
    /// # Errors
    /// A database failure.
    pub fn settle_claims(
        &self,
        sent: impl FnOnce() -> std::io::Result<std::collections::HashSet<String>>,
    ) -> Result<(usize, usize), StoreError> {
        let mut sent = Some(sent);
        let mut in_outbox = None;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids: Vec<String> = {
                let mut st =
                    tx.prepare("SELECT delivery_id FROM deliveries WHERE status = 'sending'")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            if ids.is_empty() {
                return Ok((0, 0));
            }
            // The outbox is read only when a claim is left (after a crash): it grows with
            // every push, and a clean start needs none of it.
            let sent = match in_outbox.insert(sent.take().map(|f| f())) {
                Some(Ok(set)) => set,
                _ => return Err(rusqlite::Error::InvalidQuery),
            };
            let (mut done, mut reopened) = (0, 0);
            for id in ids {
                if sent.contains(&id) {
                    tx.execute(
                        "UPDATE deliveries SET status = 'sent', claim = NULL WHERE delivery_id = ?1",
                        [&id],
                    )?;
                    done += 1;
                } else {
                    tx.execute(
                        "UPDATE deliveries SET status = 'pending', claim = NULL WHERE delivery_id = ?1",
                        [&id],
                    )?;
                    reopened += 1;
                }
            }
            tx.commit()?;
            Ok((done, reopened))
        })
        .map_err(|e| match in_outbox {
            Some(Some(Err(io))) => err(format!("reading the outbox: {io}")),
            _ => e,
        })
    }

    /// Users with a logged decision or outcome, in id order, after `after`, at most `limit`.
    fn logged_users(&self, after: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT user_id FROM decisions WHERE user_id > ?1
                 UNION SELECT user_id FROM outcomes WHERE user_id > ?1
                 ORDER BY user_id LIMIT ?2",
            )?;
            let rows = st.query_map(rusqlite::params![after, limit], |r| r.get::<_, String>(0))?;
            rows.collect()
        })
    }

    /// One user's log, each kind oldest first (two indexed reads).
    fn user_log(&self, user: &str) -> Result<UserLog, StoreError> {
        let (decisions, outcomes): (Vec<String>, Vec<String>) = self.with(|c| {
            let read = |sql: &str| -> rusqlite::Result<Vec<String>> {
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map([user], |r| r.get::<_, String>(0))?;
                rows.collect()
            };
            Ok((
                read("SELECT body FROM decisions WHERE user_id = ?1 ORDER BY seq")?,
                read("SELECT body FROM outcomes WHERE user_id = ?1 ORDER BY seq")?,
            ))
        })?;
        Ok(UserLog {
            user_id: Id::parse(user).map_err(err)?,
            decisions: decisions
                .iter()
                .map(|b| serde_json::from_str(b).map_err(err))
                .collect::<Result<_, _>>()?,
            outcomes: outcomes
                .iter()
                .map(|b| serde_json::from_str(b).map_err(err))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Webhook rows matching `filter` (SQL after `FROM webhooks`, two parameters).
    fn webhook_rows(
        &self,
        filter: &str,
        p: impl rusqlite::Params,
    ) -> Result<Vec<WebhookRecord>, StoreError> {
        type Row = (String, i64, i64, Option<String>, bool);
        let rows: Vec<Row> = self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT body, attempts, next_at, last_error, dead FROM webhooks {filter}"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect()
        })?;
        rows.into_iter()
            .map(|(body, attempts, next_at, last_error, dead)| {
                Ok(WebhookRecord {
                    message: serde_json::from_str(&body).map_err(err)?,
                    attempts: u32::try_from(attempts).map_err(err)?,
                    next_at: DateTime::<Utc>::from_timestamp_micros(next_at)
                        .ok_or_else(|| err("webhook time out of range"))?,
                    last_error,
                    dead,
                })
            })
            .collect()
    }

    fn list<T: serde::de::DeserializeOwned>(&self, sql: &str) -> Result<Vec<T>, StoreError> {
        let rows: Vec<String> = self.with(|c| {
            let mut st = c.prepare_cached(sql)?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect()
        })?;
        rows.iter()
            .map(|b| serde_json::from_str(b).map_err(err))
            .collect()
    }
}

/// Read connections: one per core of the machine this was measured on; reads are short.
const READERS: usize = 2;

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(err)
}

/// The writer thread: waits for a commit, takes every other one waiting (up to
/// [`MAX_GROUP`]), writes them in one transaction and answers each. Ends when the store
/// is dropped.
fn write_loop(conn: &Mutex<Connection>, rx: &mpsc::Receiver<Job>, in_flight: &AtomicUsize) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => group.push(j),
                Err(_) => break,
            }
        }
        let answers = match conn.lock() {
            Ok(mut c) => write_group(&mut c, &group),
            Err(_) => Err(StoreError("store lock poisoned".into())),
        };
        in_flight.fetch_sub(group.len(), Ordering::AcqRel);
        match answers {
            Ok(answers) => {
                for (job, a) in group.into_iter().zip(answers) {
                    let _ = job.reply.send(a);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for a group: each commit in its own savepoint. `Err` when the
/// transaction itself failed (then nothing of the group is written).
fn write_group(
    c: &mut Connection,
    group: &[Job],
) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    let now = chrono::Utc::now().timestamp();
    let mut tx = c
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    if let [job] = group {
        // One commit alone needs no savepoint (whose page copies cost a lone caller about
        // a tenth of its time): the transaction is the commit.
        let a = write_one(&tx, job, now);
        if matches!(a, Ok(Written::Applied)) {
            write_cells(&tx, [job]).map_err(err)?;
            tx.commit().map_err(err)?;
        } else {
            tx.rollback().map_err(err)?;
        }
        return Ok(vec![a.map_err(err)]);
    }
    let mut answers = Vec::with_capacity(group.len());
    for job in group {
        let mut sp = tx.savepoint().map_err(err)?;
        let a = write_one(&sp, job, now);
        match a {
            Ok(Written::Applied) => sp.commit().map_err(err)?,
            // Rolled back and released: nothing of this commit stays.
            _ => {
                sp.rollback().map_err(err)?;
                sp.commit().map_err(err)?;
            }
        }
        answers.push(a.map_err(err));
    }
    let applied = group
        .iter()
        .zip(&answers)
        .filter(|(_, a)| matches!(a, Ok(Written::Applied)))
        .map(|(job, _)| job);
    write_cells(&tx, applied).map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(answers)
}

/// Adds the result cells of the applied commits `jobs` in the group's transaction: the
/// cells they share (a campaign's day roll-up above all, which every decision that
/// considers the campaign moves) summed first, so each is written once per group; then one
/// row per named counter, added to in place (no read, no JSON).
fn write_cells<'a>(
    tx: &Connection,
    jobs: impl IntoIterator<Item = &'a Job>,
) -> rusqlite::Result<()> {
    use nearcast_core::campaign_results::{Cell, CellKey, CellLevel};
    let mut merged: std::collections::BTreeMap<(&str, CellLevel, &CellKey), Cell> =
        std::collections::BTreeMap::new();
    for job in jobs {
        for (campaign, level, k, add) in &job.cells {
            merged
                .entry((campaign.as_str(), *level, k))
                .or_default()
                .add(add);
        }
    }
    let mut up = tx.prepare_cached(
        "INSERT INTO results_cells (campaign_id, level, day, store_id, variant, counter, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT DO UPDATE SET value = value + excluded.value",
    )?;
    for ((campaign, level, k), add) in merged {
        let day = k.day.to_string();
        for (counter, x) in add.counters() {
            up.execute(params![
                campaign,
                level_code(level),
                day,
                k.store,
                k.variant,
                counter,
                x
            ])?;
        }
    }
    Ok(())
}

fn write_one(tx: &Connection, job: &Job, now: i64) -> rusqlite::Result<Written> {
    let user = job.user.as_str();
    // Insert the idempotency keys first: a key that was already there inserts nothing,
    // which is the duplicate check without a separate lookup. On a duplicate the savepoint
    // is rolled back, so nothing of this commit stays.
    let mut dup_ids = Vec::new();
    {
        let mut ins = tx.prepare_cached(
            "INSERT INTO seen (user_id, event_id, at, result) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(user_id, event_id) DO NOTHING",
        )?;
        for (e, r) in &job.events {
            if ins.execute(params![user, e, now, r])? == 0 {
                dup_ids.push(e);
            }
        }
    }
    if !dup_ids.is_empty() {
        let mut seen =
            tx.prepare_cached("SELECT result FROM seen WHERE user_id = ?1 AND event_id = ?2")?;
        let mut dups = Vec::with_capacity(dup_ids.len());
        for e in dup_ids {
            let r: String = seen.query_row(params![user, e], |r| r.get(0))?;
            dups.push((e.clone(), r));
        }
        return Ok(Written::Duplicates(dups));
    }
    if let Some(state) = &job.state {
        let version: i64 = tx
            .prepare_cached("SELECT version FROM users WHERE user_id = ?1")?
            .query_row([user], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if version as u64 != job.expected_version {
            return Ok(Written::Conflict);
        }
        tx.prepare_cached(
            "INSERT INTO users (user_id, version, state) VALUES (?1, ?2, ?3)
             ON CONFLICT(user_id) DO UPDATE SET version = excluded.version, state = excluded.state",
        )?
        .execute(params![user, version + 1, state])?;
    }
    for d in &job.decisions {
        tx.prepare_cached("INSERT INTO decisions (user_id, body) VALUES (?1, ?2)")?
            .execute(params![user, d])?;
    }
    for (id, body) in &job.pushes {
        tx.prepare_cached(
            "INSERT INTO deliveries (delivery_id, user_id, status, body) VALUES (?1, ?2, 'pending', ?3)",
        )?
        .execute(params![id, user, body])?;
    }
    for (at, body) in &job.outcomes {
        tx.prepare_cached("INSERT INTO outcomes (user_id, at, body) VALUES (?1, ?2, ?3)")?
            .execute(params![user, at, body])?;
    }
    // Presence webhook messages, due at once (`next_at` 0): the outbox the relay reads.
    for (id, body) in &job.webhooks {
        tx.prepare_cached("INSERT INTO webhooks (id, user_id, body) VALUES (?1, ?2, ?3)")?
            .execute(params![id, user, body])?;
    }
    // The campaigns' result cells are written by the caller once the commit is applied,
    // in the same transaction (`write_cells`).
    // Each campaign's count of sends moves with the sends, in the same transaction, and
    // never past its budget: the commit is rolled back instead.
    for (campaign, n, budget) in &job.budgets {
        let counted = *n <= *budget
            && tx
                .prepare_cached(
                    "INSERT INTO campaign_sends (campaign_id, sent) VALUES (?1, ?2)
                     ON CONFLICT(campaign_id) DO UPDATE SET sent = sent + excluded.sent
                     WHERE sent + excluded.sent <= ?3",
                )?
                .execute(params![campaign, *n as i64, *budget as i64])?
                == 1;
        if !counted {
            return Ok(Written::BudgetSpent(campaign.clone()));
        }
    }
    // Each coupon code is assigned only if still free: a code is never given twice.
    for (campaign, code, delivery, offer) in &job.coupons {
        let assigned = tx
            .prepare_cached(
                "UPDATE coupons SET issued = 1, issued_at = ?5, delivery_id = ?2, user_id = ?3,
                   offer_id = ?4
                 WHERE code = ?1 AND issued = 0",
            )?
            .execute(params![code, delivery, user, offer, now])?;
        if assigned != 1 {
            return Ok(Written::CouponTaken(campaign.clone()));
        }
    }
    Ok(Written::Applied)
}

/// Leases one webhook message for an attempt ([`StateStore::lease_webhook`]).
fn lease_one(
    c: &Connection,
    user: &Id,
    id: &str,
    attempts: u32,
    until: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    Ok(c.prepare_cached(
        "UPDATE webhooks SET attempts = attempts + 1, next_at = ?4
         WHERE id = ?1 AND user_id = ?2 AND attempts = ?3 AND dead = 0",
    )?
    .execute(params![
        id,
        user.as_str(),
        i64::from(attempts),
        until.timestamp_micros()
    ])? == 1)
}

/// Settles one attempt ([`StateStore::settle_webhook`]); nothing for a message gone.
fn settle_one(
    c: &Connection,
    user: &Id,
    id: &str,
    outcome: &WebhookOutcome,
) -> rusqlite::Result<()> {
    let u = user.as_str();
    match outcome {
        WebhookOutcome::Delivered => c
            .prepare_cached("DELETE FROM webhooks WHERE id = ?1 AND user_id = ?2 AND dead = 0")?
            .execute(params![id, u])?,
        WebhookOutcome::Retry { at, error } => c
            .prepare_cached(
                "UPDATE webhooks SET next_at = ?3, last_error = ?4
                 WHERE id = ?1 AND user_id = ?2 AND dead = 0",
            )?
            .execute(params![id, u, at.timestamp_micros(), error])?,
        WebhookOutcome::Dead { error } => c
            .prepare_cached(
                "UPDATE webhooks SET dead = 1, next_at = ?3, last_error = ?4
                 WHERE id = ?1 AND user_id = ?2 AND dead = 0",
            )?
            .execute(params![id, u, Utc::now().timestamp_micros(), error])?,
    };
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has answered what it holds; joined,
        // so the file is closed when the store is gone.
        self.commits = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.checkpointer.take() {
            let _ = c.join();
        }
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl StateStore for SqliteStore {
    fn load_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserRecord, StoreError>> {
        let r = self
            .read(|c| {
                c.prepare_cached("SELECT version, state FROM users WHERE user_id = ?1")?
                    .query_row([user.as_str()], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()
            })
            .and_then(|row| match row {
                None => Ok(UserRecord::default()),
                Some((v, s)) => {
                    let state: UserState = serde_json::from_str(&s).map_err(err)?;
                    Ok(UserRecord {
                        state,
                        version: v as u64,
                    })
                }
            });
        ready(r)
    }

    fn commit<'a>(&'a self, c: &'a Commit) -> BoxFuture<'a, Result<CommitOutcome, StoreError>> {
        let rx = self.submit(c);
        Box::pin(async move {
            let written = rx?
                .await
                .map_err(|_| StoreError("the store's writer has stopped".into()))??;
            Ok(match written {
                Written::Applied => CommitOutcome::Applied,
                Written::Conflict => CommitOutcome::Conflict,
                Written::BudgetSpent(c) => CommitOutcome::BudgetSpent(Id::parse(&c).map_err(err)?),
                Written::CouponTaken(c) => CommitOutcome::CouponTaken(Id::parse(&c).map_err(err)?),
                Written::Duplicates(d) => CommitOutcome::Duplicates(
                    d.into_iter()
                        .map(|(e, r)| {
                            Ok((
                                Id::parse(&e).map_err(err)?,
                                serde_json::from_str::<EventResult>(&r).map_err(err)?,
                            ))
                        })
                        .collect::<Result<_, StoreError>>()?,
                ),
            })
        })
    }

    fn user_data<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<UserData, StoreError>> {
        type Rows = (
            Option<String>,
            Vec<(String, String)>,
            Vec<String>,
            Vec<(String, String)>,
            Vec<String>,
        );
        let rows: Result<Rows, StoreError> = self.with(|c| {
            let u = user.as_str();
            let one = |sql: &str| -> rusqlite::Result<Vec<String>> {
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map([u], |r| r.get(0))?;
                rows.collect()
            };
            let two = |sql: &str| -> rusqlite::Result<Vec<(String, String)>> {
                let mut st = c.prepare_cached(sql)?;
                let rows = st.query_map([u], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            };
            Ok((
                one("SELECT state FROM users WHERE user_id = ?1")?
                    .into_iter()
                    .next(),
                two("SELECT event_id, result FROM seen WHERE user_id = ?1 ORDER BY at, event_id")?,
                one("SELECT body FROM decisions WHERE user_id = ?1 ORDER BY seq")?,
                two("SELECT status, body FROM deliveries WHERE user_id = ?1 ORDER BY seq")?,
                one("SELECT body FROM outcomes WHERE user_id = ?1 ORDER BY seq")?,
            ))
        });
        let decode = |rows: Rows| -> Result<UserData, StoreError> {
            let (profile, events, decisions, deliveries, outcomes) = rows;
            Ok(UserData {
                profile: profile
                    .map(|s| serde_json::from_str(&s).map_err(err))
                    .transpose()?,
                events: events
                    .into_iter()
                    .map(|(e, r)| {
                        Ok(KeptEvent {
                            event_id: Id::parse(&e).map_err(err)?,
                            result: serde_json::from_str(&r).map_err(err)?,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                decisions: decisions
                    .iter()
                    .map(|b| serde_json::from_str(b).map_err(err))
                    .collect::<Result<_, _>>()?,
                deliveries: deliveries
                    .iter()
                    .map(|(s, b)| {
                        Ok(DeliveryRecord {
                            push: serde_json::from_str(b).map_err(err)?,
                            status: DeliveryStatus::parse(s)
                                .ok_or_else(|| err(format!("unknown delivery status {s:?}")))?,
                        })
                    })
                    .collect::<Result<_, StoreError>>()?,
                outcomes: outcomes
                    .iter()
                    .map(|b| serde_json::from_str(b).map_err(err))
                    .collect::<Result<_, _>>()?,
                webhooks: Vec::new(),
            })
        };
        let hooks = self.webhook_rows(
            "WHERE user_id = ?1 AND ?2 = ?2 ORDER BY dead, next_at, id",
            params![user.as_str(), 0],
        );
        ready(rows.and_then(decode).and_then(|mut d| {
            d.webhooks = hooks?;
            Ok(d)
        }))
    }

    fn event_result<'a>(
        &'a self,
        user: &'a Id,
        event: &'a Id,
    ) -> BoxFuture<'a, Result<Option<EventResult>, StoreError>> {
        ready(
            self.with(|c| {
                c.prepare_cached("SELECT result FROM seen WHERE user_id = ?1 AND event_id = ?2")?
                    .query_row(params![user.as_str(), event.as_str()], |r| {
                        r.get::<_, String>(0)
                    })
                    .optional()
            })
            .and_then(|r| {
                r.map(|j| serde_json::from_str::<EventResult>(&j).map_err(err))
                    .transpose()
            }),
        )
    }

    fn erased_recently<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| {
            c.prepare_cached(
                "SELECT NOT EXISTS (SELECT 1 FROM users WHERE user_id = ?1)
                    AND EXISTS (SELECT 1 FROM erased WHERE pseudonym = ?2)",
            )?
            .query_row(params![user.as_str(), erasure_pseudonym(user)], |r| {
                r.get::<_, bool>(0)
            })
        }))
    }

    fn claim_delivery<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        claim: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE deliveries SET status = 'sending', claim = ?3
                     WHERE delivery_id = ?1 AND user_id = ?2
                       AND (status = 'pending' OR (status = 'sending' AND claim = ?3))",
                )?
                .execute(params![id, user.as_str(), claim])?;
            Ok(n == 1)
        }))
    }

    fn finish_delivery<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        to: DeliveryStatus,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| {
            let n = c
                .prepare_cached(
                    "UPDATE deliveries SET status = ?3, claim = NULL
                     WHERE delivery_id = ?1 AND user_id = ?2 AND status = 'sending'",
                )?
                .execute(params![id, user.as_str(), to.as_str()])?;
            Ok(n == 1)
        }))
    }

    fn unfinished_erasures(
        &self,
        _before: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<Vec<Id>, StoreError>> {
        // Erasure is one transaction here: it never stops halfway.
        ready(Ok(Vec::new()))
    }

    fn settle_stale_claims(
        &self,
        _lease: chrono::Duration,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        // A sender lives in the same process as this store, so a claim outlives its sender
        // only when the process dies; every start settles those against the outbox, which
        // says whether the push went out ([`SqliteStore::settle_claims`]).
        ready(Ok(0))
    }

    fn pending_deliveries(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Push>, StoreError>> {
        // Pending deliveries are few (each lives from its commit to its claim), and the
        // partial index holds only them.
        let rows: Result<Vec<String>, StoreError> = self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT body FROM deliveries WHERE status = 'pending' ORDER BY seq",
            )?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect()
        });
        ready(rows.and_then(|rows| {
            let mut v = Vec::new();
            for b in rows {
                let push: Push = serde_json::from_str(&b).map_err(err)?;
                if push.at <= before {
                    v.push(push);
                }
            }
            v.sort_by_key(|p| p.at);
            v.truncate(limit);
            Ok(v)
        }))
    }

    fn due_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<WebhookRecord>, StoreError>> {
        ready(self.webhook_rows(
            "WHERE dead = 0 AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2",
            params![now.timestamp_micros(), limit as i64],
        ))
    }

    fn lease_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        attempts: u32,
        until: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| lease_one(c, user, id, attempts, until)))
    }

    fn lease_webhooks<'a>(
        &'a self,
        leases: &'a [(Id, String, u32)],
        until: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<bool>, StoreError>> {
        // A relay's pass in one transaction: one WAL append, not one per message.
        ready(self.with(|c| {
            let tx = c.transaction()?;
            let out = leases
                .iter()
                .map(|(u, id, a)| lease_one(&tx, u, id, *a, until))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(out)
        }))
    }

    fn settle_webhook<'a>(
        &'a self,
        user: &'a Id,
        id: &'a str,
        outcome: WebhookOutcome,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.with(|c| settle_one(c, user, id, &outcome)))
    }

    fn settle_webhooks<'a>(
        &'a self,
        settles: &'a [(Id, String, WebhookOutcome)],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        ready(self.with(|c| {
            let tx = c.transaction()?;
            for (u, id, outcome) in settles {
                settle_one(&tx, u, id, outcome)?;
            }
            tx.commit()
        }))
    }

    fn dead_webhooks(&self, limit: usize) -> BoxFuture<'_, Result<Vec<WebhookRecord>, StoreError>> {
        ready(self.webhook_rows(
            "WHERE dead = 1 AND ?1 = ?1 ORDER BY next_at, id LIMIT ?2",
            params![0, limit as i64],
        ))
    }

    fn redrive_webhooks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        ready(self.with(|c| {
            Ok(c.prepare_cached(
                "UPDATE webhooks SET dead = 0, attempts = 0, next_at = ?1, last_error = NULL
                 WHERE dead = 1",
            )?
            .execute([now.timestamp_micros()])?)
        }))
    }

    fn erase_user<'a>(&'a self, user: &'a Id) -> BoxFuture<'a, Result<Erasure, StoreError>> {
        ready(self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let endpoint: Option<String> = tx
                .query_row(
                    "SELECT state FROM users WHERE user_id = ?1",
                    [user.as_str()],
                    |r| r.get::<_, String>(0),
                )
                .optional()?
                .and_then(|s| serde_json::from_str::<UserState>(&s).ok())
                .and_then(|s| s.push.and_then(|p| p.endpoint));
            let mut n = 0usize;
            for t in [
                "users",
                "seen",
                "decisions",
                "deliveries",
                "outcomes",
                "webhooks",
            ] {
                n += tx.execute(
                    &format!("DELETE FROM {t} WHERE user_id = ?1"),
                    [user.as_str()],
                )?;
            }
            // The codes sent to the person stay issued (never reused) but no longer lead
            // to them.
            n += tx.execute(
                "UPDATE coupons SET user_id = NULL, delivery_id = NULL WHERE user_id = ?1",
                [user.as_str()],
            )?;
            tx.execute(
                "INSERT INTO erased (pseudonym, at) VALUES (?1, ?2)
                 ON CONFLICT(pseudonym) DO UPDATE SET at = excluded.at",
                params![erasure_pseudonym(user), chrono::Utc::now().timestamp()],
            )?;
            tx.commit()?;
            // The deleted rows are zeroed in the new page images (secure_delete), but the
            // WAL still holds the frames written before: copy and truncate it now, before
            // the erasure is answered, so a crash right after leaves nothing to read.
            Self::checkpoint(c)?;
            Ok(Erasure {
                records: n as u64,
                endpoint,
            })
        }))
    }

    fn list_stores(&self) -> BoxFuture<'_, Result<Vec<Store>, StoreError>> {
        ready(self.list("SELECT body FROM stores ORDER BY id"))
    }

    fn put_store<'a>(&'a self, s: &'a Store) -> BoxFuture<'a, Result<(), StoreError>> {
        let body = serde_json::to_string(s).map_err(err);
        ready(body.and_then(|b| {
            self.with(|c| {
                c.execute("INSERT INTO stores (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body", params![s.id.as_str(), b])?;
                Ok(())
            })
        }))
    }

    fn delete_store<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| Ok(c.execute("DELETE FROM stores WHERE id = ?1", [id.as_str()])? > 0)))
    }

    fn list_offers(&self) -> BoxFuture<'_, Result<Vec<Offer>, StoreError>> {
        ready(self.list("SELECT body FROM offers ORDER BY id"))
    }

    fn list_campaigns(&self) -> BoxFuture<'_, Result<Vec<Campaign>, StoreError>> {
        ready(self.list("SELECT body FROM campaigns ORDER BY id"))
    }

    fn campaign_sends<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<u64, StoreError>> {
        ready(
            self.read(|c| {
                c.prepare_cached("SELECT sent FROM campaign_sends WHERE campaign_id = ?1")?
                    .query_row([id.as_str()], |r| r.get::<_, i64>(0))
                    .optional()
            })
            .map(|n| n.unwrap_or(0) as u64),
        )
    }

    fn put_offer<'a>(&'a self, o: &'a Offer) -> BoxFuture<'a, Result<(), StoreError>> {
        let body = serde_json::to_string(o).map_err(err);
        ready(body.and_then(|b| {
            self.with(|c| {
                c.execute("INSERT INTO offers (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body", params![o.id.as_str(), b])?;
                Ok(())
            })
        }))
    }

    fn delete_offer<'a>(&'a self, id: &'a Id) -> BoxFuture<'a, Result<bool, StoreError>> {
        ready(self.with(|c| Ok(c.execute("DELETE FROM offers WHERE id = ?1", [id.as_str()])? > 0)))
    }

    fn add_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        codes: &'a [String],
        audit: Option<&'a AuditEntry>,
    ) -> BoxFuture<'a, Result<Upload, StoreError>> {
        let entry = audit.map(json).transpose();
        ready(entry.and_then(|entry| {
            self.with(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let mut existing = Vec::new();
                {
                    let mut q = tx.prepare_cached("SELECT 1 FROM coupons WHERE code = ?1")?;
                    for code in codes {
                        if q.exists([code])? {
                            existing.push(code.clone());
                        }
                    }
                }
                if !existing.is_empty() {
                    return Ok(Upload::Existing(existing));
                }
                let Some(entry) = entry else {
                    return Ok(Upload::Added(codes.len() as u64));
                };
                let start: i64 =
                    tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM coupons", [], |r| {
                        r.get(0)
                    })?;
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO coupons (code, campaign_id, seq) VALUES (?1, ?2, ?3)",
                    )?;
                    for (k, code) in codes.iter().enumerate() {
                        ins.execute(params![code, campaign.as_str(), start + 1 + k as i64])?;
                    }
                }
                tx.execute(
                    "INSERT INTO audit (id, body) VALUES (?1, ?2)",
                    params![audit.map(|a| a.id.as_str()), entry],
                )?;
                tx.commit()?;
                Ok(Upload::Added(codes.len() as u64))
            })
        }))
    }

    fn free_coupons<'a>(
        &'a self,
        campaign: &'a Id,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        ready(self.read(|c| {
            c.prepare_cached(
                "SELECT code FROM coupons WHERE campaign_id = ?1 AND issued = 0 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![campaign.as_str(), limit as i64], |r| r.get(0))?
            .collect()
        }))
    }

    fn coupon_counts<'a>(
        &'a self,
        campaign: &'a Id,
    ) -> BoxFuture<'a, Result<CouponCounts, StoreError>> {
        ready(self.read(|c| {
            c.prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(issued), 0), COUNT(redeemed_at)
                 FROM coupons WHERE campaign_id = ?1",
            )?
            .query_row([campaign.as_str()], |r| {
                Ok(CouponCounts {
                    total: r.get::<_, i64>(0)? as u64,
                    issued: r.get::<_, i64>(1)? as u64,
                    redeemed: r.get::<_, i64>(2)? as u64,
                })
            })
        }))
    }

    fn redeem_coupon<'a>(
        &'a self,
        code: &'a str,
        at: DateTime<Utc>,
        order_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Redemption, StoreError>> {
        type Row = (
            String,
            bool,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<String>,
        );
        ready(self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let row: Option<Row> = tx
                .query_row(
                    "SELECT campaign_id, issued, delivery_id, user_id, offer_id, redeemed_at, order_id
                     FROM coupons WHERE code = ?1",
                    [code],
                    |r| {
                        Ok((
                            r.get(0)?,
                            r.get::<_, i64>(1)? != 0,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                        ))
                    },
                )
                .optional()?;
            let Some((campaign, issued, delivery, user, offer, redeemed_at, order)) = row else {
                return Ok(Redemption::Unknown);
            };
            let id = |s: Option<String>| s.and_then(|s| Id::parse(&s).ok());
            let (user, offer) = (id(user), id(offer));
            if let Some(t) = redeemed_at {
                return Ok(Redemption::AlreadyRedeemed {
                    redeemed_at: DateTime::from_timestamp_micros(t).unwrap_or_default(),
                    order_id: order,
                    offer_id: offer,
                    delivery_id: delivery,
                    user_id: user,
                });
            }
            if !issued {
                return Ok(Redemption::NotIssued);
            }
            tx.execute(
                "UPDATE coupons SET redeemed_at = ?2, order_id = ?3 WHERE code = ?1",
                params![code, at.timestamp_micros(), order_id],
            )?;
            if let Some(u) = &user {
                let o = OutcomeRecord {
                    detail: Default::default(),
                    event_id: nearcast_core::coupon::redemption_event_id(code),
                    user_id: u.clone(),
                    at,
                    kind: OutcomeKind::Redeemed,
                    offer_id: offer.clone(),
                    category: None,
                    delivery_id: delivery.clone(),
                };
                let body = serde_json::to_string(&o)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                tx.execute(
                    "INSERT INTO outcomes (user_id, at, body) VALUES (?1, ?2, ?3)",
                    params![u.as_str(), at.timestamp(), body],
                )?;
            }
            tx.commit()?;
            Ok(Redemption::Redeemed {
                campaign_id: Id::parse(&campaign)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                offer_id: offer,
                delivery_id: delivery,
                user_id: user,
            })
        }))
    }

    fn get_policy(&self) -> BoxFuture<'_, Result<Option<CapPolicy>, StoreError>> {
        let r = self
            .with(|c| {
                c.query_row("SELECT value FROM meta WHERE key = 'policy'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
            })
            .and_then(|v| v.map(|s| serde_json::from_str(&s).map_err(err)).transpose());
        ready(r)
    }

    fn put_policy<'a>(&'a self, p: &'a CapPolicy) -> BoxFuture<'a, Result<(), StoreError>> {
        let body = serde_json::to_string(p).map_err(err);
        ready(body.and_then(|b| {
            self.with(|c| {
                c.execute("INSERT INTO meta (key, value) VALUES ('policy', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [b])?;
                Ok(())
            })
        }))
    }

    fn apply_config<'a>(
        &'a self,
        changes: &'a [ConfigChange],
        audit: &'a AuditEntry,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        // Bodies first, outside the lock; then one transaction: the changes and the entry.
        let bodies: Result<Vec<Option<String>>, StoreError> = changes
            .iter()
            .map(|c| match c {
                ConfigChange::PutStore(s) => json(s).map(Some),
                ConfigChange::PutOffer(o) => json(o).map(Some),
                ConfigChange::PutPolicy(p) => json(p).map(Some),
                ConfigChange::PutCampaign(c) => json(c).map(Some),
                ConfigChange::DeleteStore(_)
                | ConfigChange::DeleteOffer(_)
                | ConfigChange::DeleteCampaign(_) => Ok(None),
            })
            .collect();
        let entry = json(audit);
        ready(bodies.and_then(|bodies| {
            let entry = entry?;
            self.with(|c| {
                let tx = c.transaction()?;
                for (change, body) in changes.iter().zip(&bodies) {
                    let body = body.as_deref().unwrap_or_default();
                    let n = match change {
                        ConfigChange::PutStore(s) => tx.execute("INSERT INTO stores (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body", params![s.id.as_str(), body])?,
                        ConfigChange::PutOffer(o) => tx.execute("INSERT INTO offers (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body", params![o.id.as_str(), body])?,
                        ConfigChange::PutPolicy(_) => tx.execute("INSERT INTO meta (key, value) VALUES ('policy', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [body])?,
                        ConfigChange::DeleteStore(id) => tx.execute("DELETE FROM stores WHERE id = ?1", [id.as_str()])?,
                        ConfigChange::DeleteOffer(id) => tx.execute("DELETE FROM offers WHERE id = ?1", [id.as_str()])?,
                        ConfigChange::PutCampaign(c) => {
                            // A campaign created (none under its id) starts from no results,
                            // whatever cells a late commit of a deleted namesake left.
                            let exists = tx
                                .query_row("SELECT 1 FROM campaigns WHERE id = ?1", [c.id.as_str()], |_| Ok(()))
                                .optional()?
                                .is_some();
                            if !exists {
                                tx.execute("DELETE FROM results_cells WHERE campaign_id = ?1", [c.id.as_str()])?;
                            }
                            tx.execute("INSERT INTO campaigns (id, body) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET body = excluded.body", params![c.id.as_str(), body])?
                        }
                        ConfigChange::DeleteCampaign(id) => {
                            // Its results go with it: a campaign made again under its id
                            // starts from nothing.
                            tx.execute("DELETE FROM results_cells WHERE campaign_id = ?1", [id.as_str()])?;
                            tx.execute("DELETE FROM campaigns WHERE id = ?1", [id.as_str()])?
                        }
                    };
                    if n == 0 {
                        // A delete of nothing: the transaction rolls back when dropped.
                        return Ok(false);
                    }
                }
                tx.execute(
                    "INSERT INTO audit (id, body) VALUES (?1, ?2)",
                    params![audit.id, entry],
                )?;
                tx.commit()?;
                Ok(true)
            })
        }))
    }

    fn audit_log<'a>(
        &'a self,
        before: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Result<Vec<String>, StoreError> = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT body FROM audit WHERE ?1 IS NULL OR id < ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![before, limit], |r| r.get::<_, String>(0))?;
            rows.collect()
        });
        ready(rows.and_then(|rows| {
            rows.iter()
                .map(|b| serde_json::from_str(b).map_err(err))
                .collect()
        }))
    }

    fn deliveries(&self) -> BoxFuture<'_, Result<Vec<DeliveryRecord>, StoreError>> {
        let rows: Result<Vec<(String, String)>, StoreError> = self.with(|c| {
            let mut st = c.prepare_cached("SELECT status, body FROM deliveries ORDER BY seq")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        });
        ready(rows.and_then(|rows| {
            rows.into_iter()
                .map(|(s, b)| {
                    let push: Push = serde_json::from_str(&b).map_err(err)?;
                    let status = DeliveryStatus::parse(&s)
                        .ok_or_else(|| err(format!("unknown delivery status {s:?}")))?;
                    Ok(DeliveryRecord { push, status })
                })
                .collect()
        }))
    }

    fn decisions(&self) -> BoxFuture<'_, Result<Vec<Decision>, StoreError>> {
        ready(self.list("SELECT body FROM decisions ORDER BY seq"))
    }

    fn outcomes(&self) -> BoxFuture<'_, Result<Vec<OutcomeRecord>, StoreError>> {
        ready(self.list("SELECT body FROM outcomes ORDER BY seq"))
    }

    fn campaign_cells<'a>(
        &'a self,
        campaign: &'a Id,
        level: nearcast_core::campaign_results::CellLevel,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> BoxFuture<'a, Result<nearcast_core::campaign_results::Cells, StoreError>> {
        let from = from.map_or_else(|| "0000-01-01".to_string(), |d| d.to_string());
        let to = to.map_or_else(|| "9999-12-31".to_string(), |d| d.to_string());
        // One range of the key: campaign, level, then day.
        ready(self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT day, store_id, variant, counter, value FROM results_cells
                 WHERE campaign_id = ?1 AND level = ?2 AND day >= ?3 AND day <= ?4",
            )?;
            let mut rows = st.query(params![campaign.as_str(), level_code(level), from, to])?;
            let mut out = nearcast_core::campaign_results::Cells::new();
            // Rows come in key order: one cell's counters together.
            let mut last: Option<(
                nearcast_core::campaign_results::CellKey,
                nearcast_core::campaign_results::Cell,
            )> = None;
            let mut last_day = String::new();
            while let Some(r) = rows.next()? {
                let (day, store, variant) = (
                    r.get_ref(0)?.as_str()?,
                    r.get_ref(1)?.as_str()?,
                    r.get_ref(2)?.as_str()?,
                );
                let same = last.as_ref().is_some_and(|(k, _)| {
                    k.store == store && k.variant == variant && last_day == day
                });
                if !same {
                    if let Some((k, cell)) = last.take() {
                        out.entry(k).or_default().add(&cell);
                    }
                    last_day.clear();
                    last_day.push_str(day);
                    let day = day.parse().map_err(|e: chrono::ParseError| {
                        rusqlite::Error::FromSqlConversionFailure(
                            0,
                            rusqlite::types::Type::Text,
                            e.into(),
                        )
                    })?;
                    last = Some((
                        nearcast_core::campaign_results::CellKey {
                            day,
                            store: store.to_owned(),
                            variant: variant.to_owned(),
                        },
                        Default::default(),
                    ));
                }
                if let Some((_, cell)) = last.as_mut() {
                    cell.add_counter(r.get_ref(3)?.as_str()?, r.get(4)?);
                }
            }
            if let Some((k, cell)) = last {
                out.entry(k).or_default().add(&cell);
            }
            Ok(out)
        }))
    }

    /// Pages of 500 user ids (in id order, from the `user_id` indexes), then each user's
    /// log; the connection is taken per query, so serving goes on between users.
    fn user_logs<'a>(
        &'a self,
        sink: &'a mut UserLogSink<'_>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut walk = || {
            let mut after = String::new();
            loop {
                let users = self.logged_users(&after, 500)?;
                let Some(last) = users.last() else {
                    return Ok(());
                };
                after = last.clone();
                for u in &users {
                    sink(self.user_log(u)?)?;
                }
            }
        };
        ready(walk())
    }
    fn max_commit_events(&self) -> usize {
        // One SQLite transaction takes any number of events.
        usize::MAX
    }

    fn keeps_every_event_key(&self) -> bool {
        // A key is a row of an indexed table: cheap enough to keep for every event.
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The erasure's checkpoint waits out whatever holds it up: here a reader whose
    /// snapshot outlasts the busy timeout (the checkpoint pragma then answers `busy`
    /// rather than failing, and the WAL would keep the erased rows' frames).
    #[test]
    fn an_erasure_answers_only_once_the_log_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.db");
        let store = SqliteStore::open(&path, Sync::Normal).unwrap();
        store
            .with(|c| {
                c.execute(
                    "INSERT INTO users (user_id, version, state) VALUES ('person-kq27', 1, '{}')",
                    [],
                )
                .map(|_| ())
            })
            .unwrap();
        let wal = dir.path().join("n.db-wal");
        // A reader that holds a snapshot with the row for longer than the busy timeout.
        let reader = Connection::open(&path).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(6));
            reader.execute_batch("COMMIT").unwrap();
        });
        let erased = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(store.erase_user(&Id::parse("person-kq27").unwrap()))
            .unwrap();
        assert!(erased.records >= 1);
        let log = std::fs::read(&wal).unwrap_or_default();
        assert!(
            log.is_empty(),
            "the erasure answered with {} bytes of log left",
            log.len()
        );
        release.join().unwrap();
    }

    #[test]
    fn a_file_written_without_secure_delete_is_rewritten_once_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            // As an older version left it: a deleted row still in a free page.
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "secure_delete", "OFF").unwrap();
            c.execute_batch(
                "CREATE TABLE old (t TEXT);
                 INSERT INTO old VALUES ('person-zq81-was-here');
                 DELETE FROM old;",
            )
            .unwrap();
        }
        let has = |p: &Path| {
            let bytes = std::fs::read(p).unwrap_or_default();
            bytes.windows(20).any(|w| w == b"person-zq81-was-here")
        };
        assert!(
            has(&path),
            "the deleted row is in the old file's free space"
        );
        drop(SqliteStore::open(&path, Sync::Normal).unwrap());
        assert!(!has(&path), "rewritten on open");
        assert!(!has(&dir.path().join("old.db-wal")));
        let c = Connection::open(&path).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            v, SECURE_DELETE_SINCE,
            "marked, so it is not rewritten again"
        );
    }

    #[tokio::test]
    async fn dead_letters_are_pruned_after_their_keeping_period_and_live_messages_stay() {
        use nearcast_core::webhook::{KEEP_DAYS, WebhookMessage, WebhookOutcome};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("w.db"), Sync::Normal).unwrap();
        let user = Id::parse("u1").unwrap();
        let mut commit = Commit::new(user.clone(), 0);
        for e in ["e1", "e2"] {
            let event = Id::parse(e).unwrap();
            commit.webhooks.push(WebhookMessage {
                id: nearcast_core::webhook::message_id(&user, &event),
                user_id: user.clone(),
                event_id: event,
                at: Utc::now(),
                changes: Vec::new(),
            });
        }
        store.commit(&commit).await.unwrap();
        let dead = commit.webhooks[0].id.clone();
        store
            .settle_webhook(
                &user,
                &dead,
                WebhookOutcome::Dead {
                    error: "HTTP 410".into(),
                },
            )
            .await
            .unwrap();
        let retention = nearcast_core::ports::Retention::default();
        store
            .prune(
                Utc::now() + chrono::Duration::days(KEEP_DAYS - 1),
                &retention,
            )
            .unwrap();
        assert_eq!(store.count("webhooks").unwrap(), 2, "kept for its period");
        store
            .prune(
                Utc::now() + chrono::Duration::days(KEEP_DAYS + 1),
                &retention,
            )
            .unwrap();
        assert_eq!(store.count("webhooks").unwrap(), 1, "the dead letter went");
        assert!(store.dead_webhooks(10).await.unwrap().is_empty());
        assert_eq!(
            store.due_webhooks(Utc::now(), 10).await.unwrap()[0]
                .message
                .id,
            commit.webhooks[1].id,
            "a message not yet delivered stays"
        );
    }

    #[test]
    fn cells_of_a_file_written_before_levels_are_moved_with_their_months_on_open() {
        use nearcast_core::campaign_results::{CellLevel, store_cells};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cells.db");
        {
            // As the version before left it: cells per store then day, roll-ups as `*`.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE campaign_cells (
                     campaign_id TEXT NOT NULL, store_id TEXT NOT NULL, day TEXT NOT NULL,
                     variant TEXT NOT NULL, counter TEXT NOT NULL, value REAL NOT NULL,
                     PRIMARY KEY (campaign_id, store_id, day, variant, counter)) WITHOUT ROWID;
                 INSERT INTO campaign_cells VALUES
                     ('c1', 's1', '2026-11-03', 'a', 'tr', 2),
                     ('c1', 's1', '2026-11-20', 'a', 'tr', 3),
                     ('c1', 's1', '2026-12-01', 'a', 'tr', 5),
                     ('c1', 's2', '2026-11-20', 'a', 't.n', 1),
                     ('c1', '*', '2026-11-03', 'a', 'tr', 2),
                     ('c1', '*', '2026-11-20', 'a', 'tr', 3),
                     ('c1', '*', '2026-11-20', 'a', 't.n', 1),
                     ('c1', '*', '2026-12-01', 'a', 'tr', 5);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Sync::Normal).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let c1 = Id::parse("c1").unwrap();
        let get = |level, from: Option<&str>, to: Option<&str>| {
            let cells = rt
                .block_on(store.campaign_cells(
                    &c1,
                    level,
                    from.map(|d| d.parse().unwrap()),
                    to.map(|d| d.parse().unwrap()),
                ))
                .unwrap();
            cells
                .into_iter()
                .map(|(k, c)| (k.day.to_string(), k.store, c.triggered, c.treated.n))
                .collect::<Vec<_>>()
        };
        let row = |d: &str, s: &str, tr: u64, n: u64| (d.to_string(), s.to_string(), tr, n);
        assert_eq!(
            get(CellLevel::StoreMonths, None, None),
            vec![
                row("2026-11-01", "s1", 5, 0),
                row("2026-11-01", "s2", 0, 1),
                row("2026-12-01", "s1", 5, 0)
            ]
        );
        assert_eq!(
            get(CellLevel::StoreDays, Some("2026-11-20"), None),
            vec![
                row("2026-11-20", "s1", 3, 0),
                row("2026-11-20", "s2", 0, 1),
                row("2026-12-01", "s1", 5, 0)
            ]
        );
        assert_eq!(
            get(CellLevel::Days, None, Some("2026-11-30")),
            vec![row("2026-11-03", "*", 2, 0), row("2026-11-20", "*", 3, 1)]
        );
        let by_store = rt
            .block_on(store_cells(
                &store,
                &c1,
                Some("2026-11-04".parse().unwrap()),
                None,
            ))
            .unwrap();
        assert_eq!(by_store.values().map(|c| c.triggered).sum::<u64>(), 8);
        assert_eq!(store.count("results_cells").unwrap(), 11);
        drop(store);
        let c = Connection::open(&path).unwrap();
        let old: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'campaign_cells'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0, "the old table is gone");
    }

    #[test]
    fn claims_left_unfinished_are_settled_against_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db"), Sync::Normal).unwrap();
        store
            .with(|c| {
                c.execute_batch(
                    "INSERT INTO deliveries (delivery_id, user_id, status, body, claim) VALUES
                     ('d-out', 'u', 'sending', '{}', 'c1'),
                     ('d-lost', 'u', 'sending', '{}', 'c2'),
                     ('d-done', 'u', 'sent', '{}', NULL),
                     ('d-new', 'u', 'pending', '{}', NULL)",
                )
            })
            .unwrap();
        let outbox = || {
            Ok(std::collections::HashSet::from([
                "d-out".to_string(),
                "d-done".to_string(),
            ]))
        };
        // An unreadable outbox settles nothing.
        assert!(
            store
                .settle_claims(|| Err(std::io::Error::other("gone")))
                .is_err()
        );
        assert_eq!(store.settle_claims(outbox).unwrap(), (1, 1));
        let status = |id: &str| {
            store
                .with(|c| {
                    c.query_row(
                        "SELECT status || '/' || IFNULL(claim, '') FROM deliveries WHERE delivery_id = ?1",
                        [id],
                        |r| r.get::<_, String>(0),
                    )
                })
                .unwrap()
        };
        assert_eq!(status("d-out"), "sent/");
        assert_eq!(status("d-lost"), "pending/");
        assert_eq!(status("d-done"), "sent/");
        assert_eq!(status("d-new"), "pending/");
        // Nothing left to settle, and the outbox is not read at all.
        assert_eq!(
            store
                .settle_claims(|| panic!("read without a claim left"))
                .unwrap(),
            (0, 0)
        );
    }

    /// A commit with no other in flight is written by its caller: its answer is ready
    /// when `commit` returns, with no wait for the writer thread. One queued behind a
    /// held connection is not, and is written once the connection is free.
    #[test]
    fn a_lone_commit_is_written_inline_and_a_queued_one_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("i.db"), Sync::Normal).unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let result = || nearcast_core::ports::EventResult {
            kind: "location".into(),
            decision: None,
        };
        let mut c = Commit::new(Id::parse("u1").unwrap(), 0);
        c.state = Some(UserState::default());
        c.events = vec![(Id::parse("a").unwrap(), result())];
        let mut f = store.commit(&c);
        assert!(matches!(
            f.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(CommitOutcome::Applied))
        ));
        // A lone duplicate (on the current version) and a lone stale commit leave nothing.
        let mut dup = Commit::new(Id::parse("u1").unwrap(), 1);
        dup.state = Some(UserState::default());
        dup.events = vec![
            (Id::parse("a").unwrap(), result()),
            (Id::parse("fresh").unwrap(), result()),
        ];
        assert!(matches!(
            store.commit(&dup).as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(CommitOutcome::Duplicates(_)))
        ));
        let mut stale = Commit::new(Id::parse("u1").unwrap(), 0);
        stale.state = Some(UserState::default());
        stale.events = vec![(Id::parse("late").unwrap(), result())];
        assert!(matches!(
            store.commit(&stale).as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(CommitOutcome::Conflict))
        ));
        let seen: i64 = store
            .with(|c| c.query_row("SELECT COUNT(*) FROM seen", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(seen, 1, "only the applied commit's key");
        let mut c2 = Commit::new(Id::parse("u2").unwrap(), 0);
        c2.state = Some(UserState::default());
        let held = store.conn.lock().unwrap();
        let mut f2 = store.commit(&c2);
        assert!(f2.as_mut().poll(&mut cx).is_pending());
        drop(held);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(rt.block_on(f2), Ok(CommitOutcome::Applied)));
        for u in ["u1", "u2"] {
            let v = store
                .with(|c| {
                    c.query_row("SELECT version FROM users WHERE user_id = ?1", [u], |r| {
                        r.get::<_, i64>(0)
                    })
                })
                .unwrap();
            assert_eq!(v, 1, "{u}");
        }
        assert_eq!(store.in_flight.load(Ordering::Acquire), 0);
    }

    /// Many commits at once, so the writer takes them in groups: per user an applied
    /// commit, a duplicate of it, and a commit on a stale version. Only what each answer
    /// says was applied is in the file; a refused commit leaves none of its rows, and
    /// does not take the others of its transaction down with it.
    #[test]
    fn a_group_keeps_each_commit_all_or_nothing() {
        use nearcast_core::ports::EventResult;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("g.db"), Sync::Normal).unwrap();
        let id = |s: &str| Id::parse(s).unwrap();
        let result = || EventResult {
            kind: "location".into(),
            decision: None,
        };
        // Each commit also adds one to a campaign's cells, the same roll-up for all (the
        // group sums what its applied commits share before writing it).
        let commit = |u: usize, version: u64, events: &[&str]| {
            let mut c = Commit::new(id(&format!("u{u}")), version);
            c.state = Some(UserState::default());
            c.events = events.iter().map(|e| (id(e), result())).collect();
            let mut deltas = nearcast_core::campaign_results::CellDeltas::new();
            deltas.insert(
                (
                    id("c1"),
                    nearcast_core::campaign_results::CellKey {
                        day: "2026-11-20".parse().unwrap(),
                        store: format!("s{}", u % 7),
                        variant: "-".into(),
                    },
                ),
                nearcast_core::campaign_results::Cell {
                    triggered: 1,
                    ..Default::default()
                },
            );
            c.cells = nearcast_core::campaign_results::with_rollups(deltas);
            c
        };
        let n = 150;
        let mut commits = Vec::new();
        for u in 0..n {
            commits.push(commit(u, 0, &["a", "b"]));
            // The same first event: a duplicate, whichever comes second.
            commits.push(commit(u, 0, &["a", &format!("dup{u}")]));
            // A fresh event on the version both read: applied only if first.
            commits.push(commit(u, 0, &[&format!("late{u}")]));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Every commit is handed to the writer before any answer is awaited, and the
        // writer cannot start before all are queued (the connection is held meanwhile, so
        // none is written inline either): they are written in groups.
        let held = store.conn.lock().unwrap();
        let futures: Vec<_> = commits.iter().map(|c| store.commit(c)).collect();
        drop(held);
        let answers: Vec<CommitOutcome> = rt.block_on(async {
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await.unwrap());
            }
            out
        });
        let seen = |u: usize, e: &str| -> bool {
            store
                .with(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM seen WHERE user_id = ?1 AND event_id = ?2",
                        params![format!("u{u}"), e],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .unwrap()
                == 1
        };
        for u in 0..n {
            let a = &answers[3 * u..3 * u + 3];
            // Sent in order, so the first is applied and the others refused.
            assert!(matches!(a[0], CommitOutcome::Applied), "{u}: {:?}", a[0]);
            assert!(
                matches!(a[1], CommitOutcome::Duplicates(_)),
                "{u}: {:?}",
                a[1]
            );
            assert!(matches!(a[2], CommitOutcome::Conflict), "{u}: {:?}", a[2]);
            assert!(seen(u, "a") && seen(u, "b"));
            assert!(
                !seen(u, &format!("dup{u}")),
                "a duplicate's other rows stay out"
            );
            assert!(!seen(u, &format!("late{u}")), "a conflict's rows stay out");
        }
        let version: i64 = store
            .with(|c| c.query_row("SELECT MAX(version) FROM users", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, 1);
        // The cells count the applied commits only, once each, at every level.
        use nearcast_core::campaign_results::CellLevel;
        for level in [
            CellLevel::Days,
            CellLevel::StoreDays,
            CellLevel::StoreMonths,
        ] {
            let cells = rt
                .block_on(store.campaign_cells(&id("c1"), level, None, None))
                .unwrap();
            assert_eq!(
                cells.values().map(|c| c.triggered).sum::<u64>(),
                n as u64,
                "{level:?}"
            );
        }
    }

    #[test]
    fn sync_full_is_full_and_normal_is_normal() {
        let dir = tempfile::tempdir().unwrap();
        let full = SqliteStore::open(&dir.path().join("f.db"), Sync::Full).unwrap();
        assert_eq!(full.synchronous().unwrap(), 2);
        let normal = SqliteStore::open(&dir.path().join("n.db"), Sync::Normal).unwrap();
        assert_eq!(normal.synchronous().unwrap(), 1);
    }
}
