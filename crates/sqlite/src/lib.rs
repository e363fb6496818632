//! SQLite plumbing shared by the embedded backend and the participants' own
//! databases: connection set-up (WAL, busy timeout, `synchronous=FULL`) and
//! the [`GroupCommitter`], which runs many small jobs in one transaction.
//!
//! Why group commit: with `synchronous=FULL` every commit waits for the disk
//! (an fsync of the WAL). A saga step touches several rows (command, receive,
//! barrier, reply, delete, saga state); committing each on its own caps the
//! system at the disk's fsync rate. The committer instead drains every job
//! waiting at the moment, runs each inside its own SAVEPOINT (so one job's
//! error rolls back only that job), commits once, and only then hands each
//! job its result — so a result never reports work that is not durable.
//!
//! This crate knows nothing about queues, sagas or barriers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// Most jobs in one transaction: bounds the latency a job can add to others.
const MAX_JOBS_PER_COMMIT: usize = 2048;

/// Errors of the SQLite plumbing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SqliteError {
    #[error("cannot open SQLite database {path}: {cause}")]
    Open { path: String, cause: String },
    #[error("SQLite error: {0}")]
    Sql(String),
    #[error("SQLite database is busy (another process holds the write lock): {0}")]
    Busy(String),
    #[error("the database writer thread has stopped")]
    Closed,
}

impl SqliteError {
    /// Busy and closed-writer errors may pass; SQL errors will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqliteError::Busy(_) | SqliteError::Closed)
    }
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
                SqliteError::Busy(e.to_string())
            }
            _ => SqliteError::Sql(e.to_string()),
        }
    }
}

/// Durability of commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync the WAL on every commit: a committed job survives power loss.
    Full,
    /// fsync at checkpoints only: survives a process crash, not power loss.
    Normal,
}

/// Opens a connection with sqsaga's settings: WAL (readers never block the
/// writer, several processes may share the file), a busy timeout so a second
/// process waits for the write lock instead of failing, and `synchronous`.
pub fn open(path: &Path, sync: Sync) -> Result<Connection, SqliteError> {
    let open_err = |e: rusqlite::Error| SqliteError::Open { path: path.display().to_string(), cause: e.to_string() };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(open_err)?;
    conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level).map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    Ok(conn)
}

/// The result of a kept job is delivered with the commit's outcome.
type Deliver = Box<dyn FnOnce(Result<(), SqliteError>) + Send>;

/// A job's body: runs in its savepoint, says whether to keep the writes and
/// how to deliver the result.
type RunJob = Box<dyn FnOnce(&Transaction<'_>) -> (bool, Deliver) + Send>;

/// One unit of work for the writer thread.
struct Job {
    /// Runs inside a savepoint; returns whether to keep the writes and how to
    /// deliver the result once the commit outcome is known.
    run: RunJob,
    /// Called instead of `run` when the transaction could not even begin.
    abort: Deliver,
}

/// Runs jobs against one connection on a dedicated thread, many per commit.
#[derive(Clone)]
pub struct GroupCommitter {
    sender: mpsc::Sender<Job>,
    commits: Arc<AtomicU64>,
    jobs: Arc<AtomicU64>,
}

/// Called on the writer thread when another connection (another process)
/// committed to the same file.
pub type ForeignCommit = Box<dyn Fn() + Send>;

/// Longest a batch waits for more jobs once it has at least two.
const LINGER_MAX: Duration = Duration::from_millis(2);
/// A gap this long between jobs ends the wait.
const LINGER_GAP: Duration = Duration::from_micros(300);

/// How often an idle writer looks for other processes' commits.
const FOREIGN_CHECK_INTERVAL: Duration = Duration::from_millis(20);

impl GroupCommitter {
    /// Starts the writer thread that owns `conn`.
    pub fn start(name: &str, conn: Connection) -> Result<GroupCommitter, SqliteError> {
        Self::start_watching(name, conn, None)
    }

    /// Like [`GroupCommitter::start`], and calls `on_foreign` whenever another
    /// connection committed to the file. The writer reads `PRAGMA
    /// data_version` on its own connection, where (unlike on a reader) its
    /// own commits do not count, after every batch and every
    /// `FOREIGN_CHECK_INTERVAL` while idle — so only other processes' commits
    /// wake this process's long polls.
    pub fn start_watching(
        name: &str,
        conn: Connection,
        on_foreign: Option<ForeignCommit>,
    ) -> Result<GroupCommitter, SqliteError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let jobs = Arc::new(AtomicU64::new(0));
        let thread_commits = commits.clone();
        let thread_jobs = jobs.clone();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || writer_loop(conn, receiver, thread_commits, thread_jobs, on_foreign))
            .map_err(|e| SqliteError::Sql(format!("cannot start writer thread: {e}")))?;
        Ok(GroupCommitter { sender, commits, jobs })
    }

    /// Runs `f` inside a savepoint of the next group transaction. `Ok` results
    /// are returned after the transaction committed (or the commit's error);
    /// an `Err` from `f` rolls back this job's writes only and is returned as
    /// the inner error.
    pub async fn run<T, E, F>(&self, f: F) -> Result<Result<T, E>, SqliteError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<Result<T, E>, SqliteError>>();
        let slot = Arc::new(std::sync::Mutex::new(Some(tx)));
        let abort_slot = slot.clone();
        let job = Job {
            run: Box::new(move |txn: &Transaction<'_>| {
                let result = f(txn);
                let keep = result.is_ok();
                let deliver: Deliver = Box::new(move |commit| {
                    let value = match commit {
                        Ok(()) => Ok(result),
                        Err(e) => Err(e),
                    };
                    send_once(&slot, value);
                });
                (keep, deliver)
            }),
            abort: Box::new(move |commit| {
                if let Err(e) = commit {
                    send_once(&abort_slot, Err(e));
                }
            }),
        };
        self.sender.send(job).map_err(|_| SqliteError::Closed)?;
        rx.await.unwrap_or(Err(SqliteError::Closed))
    }

    /// Durable commits made so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Jobs committed so far.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }
}

fn writer_loop(
    mut conn: Connection,
    receiver: mpsc::Receiver<Job>,
    commits: Arc<AtomicU64>,
    jobs: Arc<AtomicU64>,
    on_foreign: Option<ForeignCommit>,
) {
    let data_version = |conn: &Connection| conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok();
    let mut seen = on_foreign.as_ref().and_then(|_| data_version(&conn));
    let mut check_foreign = |conn: &Connection| {
        if let Some(callback) = &on_foreign {
            let now = data_version(conn);
            if now != seen {
                seen = now;
                callback();
            }
        }
    };
    loop {
        let first = if on_foreign.is_some() {
            match receiver.recv_timeout(FOREIGN_CHECK_INTERVAL) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    check_foreign(&conn);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match receiver.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let mut batch = vec![first];
        // Linger briefly while jobs keep arriving: under load the next job is
        // usually microseconds away, and folding it into this commit saves
        // an fsync; when idle the first gap ends the wait at once.
        let linger_until = std::time::Instant::now() + LINGER_MAX;
        while batch.len() < MAX_JOBS_PER_COMMIT {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if batch.len() < 2 || now >= linger_until {
                        break;
                    }
                    match receiver.recv_timeout(LINGER_GAP.min(linger_until - now)) {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
            }
        }
        run_batch(&mut conn, batch, &commits, &jobs);
        check_foreign(&conn);
    }
}

/// Delivers a job's result at most once (the run and abort paths share it).
fn send_once<V>(slot: &std::sync::Mutex<Option<tokio::sync::oneshot::Sender<V>>>, value: V) {
    if let Some(tx) = slot.lock().ok().and_then(|mut s| s.take()) {
        let _ = tx.send(value);
    }
}

/// Runs a batch in one IMMEDIATE transaction, one savepoint per job, and
/// delivers every result only once the commit outcome is known.
fn run_batch(conn: &mut Connection, batch: Vec<Job>, commits: &AtomicU64, jobs: &AtomicU64) {
    let count = batch.len() as u64;
    let txn = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(e) => {
            let error = SqliteError::from(e);
            tracing::warn!(error = %error, jobs = count, "Cannot begin SQLite transaction; failing the batch.");
            for job in batch {
                (job.abort)(Err(error.clone()));
            }
            return;
        }
    };
    let mut deliveries = Vec::with_capacity(batch.len());
    for job in batch {
        if let Err(e) = txn.execute_batch("SAVEPOINT job") {
            (job.abort)(Err(SqliteError::from(e)));
            continue;
        }
        let (keep, deliver) = (job.run)(&txn);
        let closing = if keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
        match txn.execute_batch(closing) {
            Ok(()) if keep => deliveries.push(deliver),
            Ok(()) => deliver(Ok(())),
            Err(e) => deliver(Err(SqliteError::from(e))),
        }
    }
    match txn.commit() {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            jobs.fetch_add(count, Ordering::Relaxed);
            for deliver in deliveries {
                deliver(Ok(()));
            }
        }
        Err(e) => {
            let error = SqliteError::from(e);
            tracing::warn!(error = %error, jobs = count, "SQLite group commit failed; callers will retry.");
            for deliver in deliveries {
                deliver(Err(error.clone()));
            }
        }
    }
}
