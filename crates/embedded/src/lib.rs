//! The embedded backend, sqsaga's default: SQS-like queues and the saga store
//! in one SQLite file, `<data_dir>/sqsaga.db`.
//!
//! One [`EmbeddedBackend`] per process and data directory. Every write of the
//! process (sends, receives, deletes, saga commits) is a job of ONE
//! [`GroupCommitter`](sqsaga_sqlite::GroupCommitter) on one write connection,
//! so concurrent callers share fsyncs; reads (long-poll peeks, loads, lists)
//! go to separate read connections and never open a write transaction.
//! Several processes may open the same directory at once: WAL and the busy
//! timeout serialise their writers, and a long poll notices another process's
//! commit through `PRAGMA data_version`.
//!
//! Because queues and sagas live in the same file, a saga commit inserts its
//! outbox messages into the queues in the same transaction: the state and the
//! commands it emits become durable together, with nothing left to sweep.
//!
//! Modules: `db` owns the file, the schema and the connections; [`queue`]
//! implements the `Queue` port; [`store`] the `SagaStore` port.

use std::path::Path;
use std::sync::Arc;

use sqsaga_core::clock::{Clock, SystemClock};

mod db;
pub mod queue;
pub mod store;

pub use queue::SqliteQueue;
pub use sqsaga_sqlite::Sync;
pub use store::SqliteStore;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "sqsaga.db";

/// Errors opening the embedded backend; the operations themselves report
/// the ports' own errors (`QueueError`, `StoreError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create data directory {path}: {cause}")]
    DataDir { path: String, cause: String },
    #[error("cannot prepare the sqsaga schema in {path}: {cause}")]
    Schema { path: String, cause: String },
    #[error("{path} was created by a newer sqsaga (schema version {found}, this build knows {known})")]
    NewerSchema { path: String, found: i64, known: i64 },
    #[error("cannot start the embedded backend's {what} thread: {cause}")]
    Thread { what: &'static str, cause: String },
    #[error(transparent)]
    Sqlite(#[from] sqsaga_sqlite::SqliteError),
}

impl EmbeddedError {
    /// Only a busy database (another process migrating or holding the write
    /// lock for longer than the busy timeout) may pass by itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            EmbeddedError::Sqlite(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The embedded backend of one process: a queue and a store over one file.
#[derive(Clone)]
pub struct EmbeddedBackend {
    /// The file, its connections and the wake-up signals, shared by both ports.
    shared: Arc<db::Shared>,
    /// The queue port, handed out as an `Arc` so services can share it.
    queue: Arc<SqliteQueue>,
    /// The store port, same.
    store: Arc<SqliteStore>,
}

impl EmbeddedBackend {
    /// Opens (creating the dir and schema if needed) `<data_dir>/sqsaga.db`.
    pub fn open(data_dir: &Path, sync: Sync) -> Result<Self, EmbeddedError> {
        EmbeddedBackend::open_with_clock(data_dir, sync, Arc::new(SystemClock))
    }

    /// Like [`EmbeddedBackend::open`], reading "now" (visibility timeouts,
    /// delays, retention, send times) from `clock`. Long polls still wait in
    /// real time; a test that advances a `ManualClock` past a visibility
    /// timeout sees the message on its next receive.
    pub fn open_with_clock(data_dir: &Path, sync: Sync, clock: Arc<dyn Clock>) -> Result<Self, EmbeddedError> {
        let shared = db::Shared::open(data_dir, sync, clock)?;
        Ok(EmbeddedBackend {
            queue: Arc::new(SqliteQueue::new(shared.clone())),
            store: Arc::new(SqliteStore::new(shared.clone())),
            shared,
        })
    }

    /// The queue port (`impl sqsaga_queue::Queue`).
    pub fn queue(&self) -> Arc<SqliteQueue> {
        self.queue.clone()
    }

    /// The saga store port (`impl sqsaga_store::SagaStore`).
    pub fn store(&self) -> Arc<SqliteStore> {
        self.store.clone()
    }

    /// Durable commits made by this process's writer so far.
    pub fn commits(&self) -> u64 {
        self.shared.writer.commits()
    }

    /// Write jobs committed by this process's writer so far; `commits / jobs`
    /// is the group-commit ratio.
    pub fn jobs(&self) -> u64 {
        self.shared.writer.jobs()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl std::fmt::Debug for EmbeddedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBackend").field("path", &self.shared.path).finish()
    }
}
