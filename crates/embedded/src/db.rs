//! The database file of the embedded backend: schema, the one writer (a
//! group committer), the read connections, and the signals that wake long
//! polls — a per-queue `Notify` for this process's commits, and the writer's
//! check of `PRAGMA data_version` (which, on the writer's own connection,
//! changes only when another process commits) for everyone else's.
//!
//! This module knows the tables but not the rules of queues or sagas.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::Connection;
use sqsaga_core::clock::Clock;
use sqsaga_queue::QueueError;
use sqsaga_sqlite::{GroupCommitter, Linger, SqliteError, Sync};
use sqsaga_store::StoreError;
use tokio::sync::Notify;

use crate::EmbeddedError;

/// Bumped when the tables change shape; a newer file is refused, not guessed at.
const SCHEMA_VERSION: i64 = 2;

/// Idempotent: every process runs it at open, in one transaction.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    name              TEXT PRIMARY KEY,
    visibility_ms     INTEGER NOT NULL,
    max_receive_count INTEGER NOT NULL,
    retention_ms      INTEGER NOT NULL,
    dlq               TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    attributes    TEXT NOT NULL,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (queue, visible_at, seq);
CREATE TABLE IF NOT EXISTS sagas (
    id          TEXT PRIMARY KEY,
    saga        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    state       TEXT NOT NULL,
    next_due_at INTEGER,
    outbox      TEXT,
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, updated_at);
CREATE INDEX IF NOT EXISTS sagas_by_due ON sagas (next_due_at) WHERE next_due_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    saga_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    event   TEXT NOT NULL,
    note    TEXT NOT NULL,
    PRIMARY KEY (saga_id, seq)
) WITHOUT ROWID;
";

/// From version 1 to 2: message ids lose their UNIQUE index (random UUIDs
/// scattered every insert over the index's pages, and each commit wrote
/// them all to the WAL; ids are 122 random bits, unique without it) and
/// history becomes a clustered `WITHOUT ROWID` table (one B-tree per append
/// instead of a table and an index). The old tables step aside, [`SCHEMA`]
/// creates the new ones, and [`MIGRATE_1_TO_2_ROWS`] moves the rows over.
const MIGRATE_1_TO_2_ASIDE: &str = "
DROP INDEX IF EXISTS messages_by_visibility;
ALTER TABLE messages RENAME TO messages_v1;
ALTER TABLE history RENAME TO history_v1;
";

/// The second half of the move from version 1, after [`SCHEMA`].
const MIGRATE_1_TO_2_ROWS: &str = "
INSERT INTO messages SELECT seq, queue, message_id, body, attributes, sent_at, visible_at, receive_count, receipt, expires_at FROM messages_v1;
DROP TABLE messages_v1;
INSERT INTO history SELECT saga_id, seq, at, event, note FROM history_v1;
DROP TABLE history_v1;
";

/// Read connections: one is usually busy with long-poll peeks, the other
/// serves loads and lists; more would only contend for the same page cache.
const READERS: usize = 2;

/// The file and its connections; shared by the queue and the store.
pub(crate) struct Shared {
    /// `<data_dir>/sqsaga.db`.
    pub(crate) path: PathBuf,
    /// The only writer of this process: every write is a job here, so
    /// concurrent writers share one transaction and one fsync.
    pub(crate) writer: GroupCommitter,
    /// Connections for reads, so a peek or a list never takes the write lock.
    readers: Arc<Vec<Mutex<Connection>>>,
    /// Round robin over `readers`.
    next_reader: AtomicUsize,
    /// Per-queue signal raised after this process commits something that may
    /// make a message of that queue receivable.
    wakers: Mutex<HashMap<String, Arc<QueueSignal>>>,
    /// Raised by the writer when another process committed to the file.
    pub(crate) changed: Arc<Notify>,
    /// Where "now" comes from: visibility timeouts, delays, retention and
    /// `sent_at` stamps are all read from it, never from the wall clock directly.
    pub(crate) clock: Arc<dyn Clock>,
}

impl Shared {
    /// Opens the file, creates the schema and starts the writer and the watcher.
    pub(crate) fn open(data_dir: &Path, sync: Sync, clock: Arc<dyn Clock>) -> Result<Arc<Shared>, EmbeddedError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| EmbeddedError::DataDir { path: data_dir.display().to_string(), cause: e.to_string() })?;
        let path = data_dir.join(crate::DB_FILE);
        let mut write = sqsaga_sqlite::open(&path, sync)?;
        create_schema(&mut write, &path)?;

        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_reader(&path, sync)?));
        }
        let changed = Arc::new(Notify::new());
        let on_foreign = {
            let changed = changed.clone();
            Box::new(move || changed.notify_waiters()) as sqsaga_sqlite::ForeignCommit
        };
        let writer = GroupCommitter::start_watching("embedded", write, Linger::SHARED, Some(on_foreign))?;
        let shared = Arc::new(Shared {
            path,
            writer,
            readers: Arc::new(readers),
            next_reader: AtomicUsize::new(0),
            wakers: Mutex::new(HashMap::new()),
            changed,
            clock,
        });
        Ok(shared)
    }

    /// Runs `f` on a read connection, off the async runtime.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<Result<T, Fail>, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Fail> + Send + 'static,
    {
        let readers = self.readers.clone();
        let first = self.next_reader.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let n = readers.len();
            // Take a free connection if there is one; otherwise queue on ours.
            for i in 0..n {
                match readers[(first + i) % n].try_lock() {
                    Ok(conn) => return f(&conn),
                    Err(TryLockError::Poisoned(p)) => return f(&p.into_inner()),
                    Err(TryLockError::WouldBlock) => {}
                }
            }
            let conn = readers[first % n].lock().unwrap_or_else(PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| SqliteError::Sql(format!("read task failed: {e}")))
    }

    /// The signal for `queue` (created on first use).
    pub(crate) fn waker(&self, queue: &str) -> Arc<QueueSignal> {
        let mut wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        wakers.entry(queue.to_string()).or_default().clone()
    }

    /// Wakes long polls of these queues after a commit that made `count`
    /// messages receivable there: one poller per batch of up to 10, not every
    /// poller (a poller that finds a full batch wakes the next one itself).
    /// Waking them all made every send cost a peek by each idle poller.
    pub(crate) fn wake<'a>(&self, queues: impl IntoIterator<Item = (&'a str, usize)>) {
        let wakers = self.wakers.lock().unwrap_or_else(PoisonError::into_inner);
        for (queue, count) in queues {
            if let Some(signal) = wakers.get(queue) {
                signal.ready.store(true, Ordering::Relaxed);
                for _ in 0..count.div_ceil(sqsaga_queue::MAX_BATCH).max(1) {
                    signal.notify.notify_one();
                }
            }
        }
    }
}

/// Long-poll signalling of one queue in this process.
#[derive(Default)]
pub(crate) struct QueueSignal {
    /// Raised after a local commit that may make messages receivable.
    pub(crate) notify: Notify,
    /// A hint, not a promise: set by local sends and by receives that came
    /// back full, cleared by receives that did not. While set, a receive
    /// takes at once instead of peeking first (one read hand-off fewer per
    /// receive under load); a wrong hint costs one empty take.
    pub(crate) ready: AtomicBool,
}

fn create_schema(conn: &mut Connection, path: &Path) -> Result<(), EmbeddedError> {
    let schema_err =
        |e: rusqlite::Error| EmbeddedError::Schema { path: path.display().to_string(), cause: e.to_string() };
    // IMMEDIATE: two processes opening a fresh directory at once take turns
    // (busy timeout) instead of one failing half-way.
    let txn = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(schema_err)?;
    let found: i64 = txn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(schema_err)?;
    if found > SCHEMA_VERSION {
        return Err(EmbeddedError::NewerSchema { path: path.display().to_string(), found, known: SCHEMA_VERSION });
    }
    if found == 1 {
        txn.execute_batch(MIGRATE_1_TO_2_ASIDE).map_err(schema_err)?;
    }
    txn.execute_batch(SCHEMA).map_err(schema_err)?;
    if found == 1 {
        txn.execute_batch(MIGRATE_1_TO_2_ROWS).map_err(schema_err)?;
    }
    if found < SCHEMA_VERSION {
        txn.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(schema_err)?;
    }
    txn.commit().map_err(schema_err)
}

fn open_reader(path: &Path, sync: Sync) -> Result<Connection, EmbeddedError> {
    let conn = sqsaga_sqlite::open(path, sync)?;
    conn.pragma_update(None, "query_only", true).map_err(|e| EmbeddedError::Sqlite(SqliteError::from(e)))?;
    Ok(conn)
}

/// Why a job or a read failed, before it is turned into a port's error.
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    Queue(QueueError),
    Store(StoreError),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<QueueError> for Fail {
    fn from(e: QueueError) -> Self {
        Fail::Queue(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// A busy database is throttling (retry later); a stopped writer is unreachable.
fn queue_error(e: SqliteError) -> QueueError {
    match e {
        SqliteError::Busy(m) => QueueError::Throttled(m),
        SqliteError::Closed => QueueError::Unreachable(e.to_string()),
        SqliteError::Open { .. } | SqliteError::Sql(_) | SqliteError::Aborted(_) => QueueError::Backend(e.to_string()),
    }
}

fn store_error(e: SqliteError) -> StoreError {
    match e {
        SqliteError::Busy(m) => StoreError::Throttled(m),
        SqliteError::Closed => StoreError::Unreachable(e.to_string()),
        SqliteError::Open { .. } | SqliteError::Sql(_) | SqliteError::Aborted(_) => StoreError::Backend(e.to_string()),
    }
}

/// Flattens a job's or a read's result into the queue port's error.
pub(crate) fn for_queue<T>(r: Result<Result<T, Fail>, SqliteError>) -> Result<T, QueueError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Fail::Sql(e))) => Err(queue_error(SqliteError::from(e))),
        Ok(Err(Fail::Queue(e))) => Err(e),
        Ok(Err(Fail::Store(e))) => Err(QueueError::Backend(e.to_string())),
        Err(e) => Err(queue_error(e)),
    }
}

/// Flattens a job's or a read's result into the store port's error.
pub(crate) fn for_store<T>(r: Result<Result<T, Fail>, SqliteError>) -> Result<T, StoreError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Fail::Sql(e))) => Err(store_error(SqliteError::from(e))),
        Ok(Err(Fail::Queue(e))) => Err(StoreError::Queue(e)),
        Ok(Err(Fail::Store(e))) => Err(e),
        Err(e) => Err(store_error(e)),
    }
}

/// `clock`'s milliseconds since the epoch as SQLite's `INTEGER`.
pub(crate) fn now_ms(clock: &dyn Clock) -> i64 {
    to_sql(clock.now())
}

/// A duration in milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A `u64` timestamp or count as SQLite's `INTEGER`, saturating.
pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
