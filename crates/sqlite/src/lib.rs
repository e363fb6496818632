//! SQLite plumbing shared by the embedded backend and the participants' own
//! databases: connection set-up (WAL, busy timeout, `synchronous=FULL`) and
//! the [`GroupCommitter`], which runs many small jobs in one transaction.
//!
//! Why group commit: with `synchronous=FULL` every commit waits for the disk
//! (an fsync of the WAL). A saga step touches several rows (command, receive,
//! barrier, reply, delete, saga state); committing each on its own caps the
//! system at the disk's fsync rate. The committer instead opens one
//! transaction, runs every job waiting at the moment and, while busy, every
//! job arriving within a short linger (see [`Linger`]) as it arrives — so
//! the wait overlaps the jobs' work — commits once, and only then hands
//! each job its result: a result never reports work that is not durable.
//!
//! Isolation between jobs: [`GroupCommitter::run`] gives a job a SAVEPOINT
//! of its own, so its error rolls back only its writes.
//! [`GroupCommitter::run_in_batch`] does not (a savepoint costs a copy of
//! every page the job touches): such a job checks before it writes, and if
//! it fails after writing anyway, the whole transaction is rolled back and
//! every job in it gets the retryable [`SqliteError::Aborted`].
//!
//! This crate knows nothing about queues, sagas or barriers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    #[error("the group transaction was rolled back because another job in it failed after writing: {0}")]
    Aborted(String),
}

impl SqliteError {
    /// Busy and closed-writer errors may pass; SQL errors will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SqliteError::Busy(_) | SqliteError::Closed | SqliteError::Aborted(_))
    }
}

impl From<rusqlite::Error> for SqliteError {
    fn from(e: rusqlite::Error) -> Self {
        if is_busy(&e) { SqliteError::Busy(e.to_string()) } else { SqliteError::Sql(e.to_string()) }
    }
}

/// How long a connection waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `e` is SQLite's "database is locked" (or "table is locked").
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
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
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Switching a fresh file to WAL needs it to itself; while another
    // connection switches it too, SQLite answers "database is locked" at
    // once instead of calling the busy handler (a lock upgrade that could
    // deadlock). Retried, like a busy lock, within the busy timeout.
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Ok(()) => break,
            Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(open_err(e)),
        }
    }
    let level = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", level).map_err(open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
    // Savepoint and statement journals in memory, never in a temp file.
    conn.pragma_update(None, "temp_store", "MEMORY").map_err(open_err)?;
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
    /// Whether the job runs in a savepoint of its own (see [`GroupCommitter::run`]
    /// and [`GroupCommitter::run_in_batch`]).
    savepoint: bool,
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

/// How long a batch waits for more jobs before it commits.
///
/// The writer lingers only while it is busy — the previous commit ended less
/// than `busy_within` ago — so the first job after a quiet spell commits at
/// once, while under load jobs pile up for up to `max` (or until a gap of
/// `gap` with no new job) and share one fsync. A longer linger means fewer
/// commits and more latency per job; whoever waits on the job must keep
/// enough work in flight to cover it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linger {
    /// Longest a batch waits after its first job.
    pub max: Duration,
    /// A pause this long between jobs ends the wait early.
    pub gap: Duration,
    /// How recent the previous commit must be for the writer to count as busy.
    pub busy_within: Duration,
    /// A batch smaller than this commits at once, busy or not.
    pub min_jobs: usize,
}

impl Linger {
    /// The shared database of queues and sagas: a job there is one hop of
    /// every saga step, so waits are short.
    pub const SHARED: Linger = Linger {
        max: Duration::from_millis(2),
        gap: Duration::from_micros(300),
        busy_within: Duration::from_millis(2),
        min_jobs: 2,
    };

    /// A participant's own database: one job per received batch of
    /// commands, from a handful of pollers, so jobs come far apart; a longer
    /// wait folds several pollers' batches into one commit. The first batch
    /// after a quiet spell is not held back.
    pub const PARTICIPANT: Linger = Linger {
        max: Duration::from_millis(40),
        gap: Duration::from_millis(40),
        busy_within: Duration::from_millis(80),
        min_jobs: 1,
    };

    /// Commit every job at once (tests that count commits).
    pub const NONE: Linger =
        Linger { max: Duration::ZERO, gap: Duration::ZERO, busy_within: Duration::ZERO, min_jobs: usize::MAX };
}

/// How often an idle writer looks for other processes' commits.
const FOREIGN_CHECK_INTERVAL: Duration = Duration::from_millis(20);

impl GroupCommitter {
    /// Starts the writer thread that owns `conn`.
    pub fn start(name: &str, conn: Connection, linger: Linger) -> Result<GroupCommitter, SqliteError> {
        Self::start_watching(name, conn, linger, None)
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
        linger: Linger,
        on_foreign: Option<ForeignCommit>,
    ) -> Result<GroupCommitter, SqliteError> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let commits = Arc::new(AtomicU64::new(0));
        let jobs = Arc::new(AtomicU64::new(0));
        let thread_commits = commits.clone();
        let thread_jobs = jobs.clone();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || writer_loop(conn, receiver, linger, thread_commits, thread_jobs, on_foreign))
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
        self.submit(f, true).await
    }

    /// Like [`GroupCommitter::run`] without a savepoint of its own, for the
    /// hot paths: a savepoint makes SQLite copy every page the job touches
    /// into the sub-journal first, which cost more than the job's own work.
    /// `f` must check before it writes: an `Err` returned before any row
    /// changed is returned as the inner error, as with `run`; if `f` fails
    /// after writing, the whole group transaction is rolled back and every
    /// job in it fails with the retryable [`SqliteError::Aborted`].
    pub async fn run_in_batch<T, E, F>(&self, f: F) -> Result<Result<T, E>, SqliteError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<T, E, F>(&self, f: F, savepoint: bool) -> Result<Result<T, E>, SqliteError>
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
            savepoint,
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
    linger: Linger,
    commits: Arc<AtomicU64>,
    jobs: Arc<AtomicU64>,
    on_foreign: Option<ForeignCommit>,
) {
    let data_version = |conn: &Connection| conn.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0)).ok();
    let mut seen = on_foreign.as_ref().and_then(|_| data_version(&conn));
    let mut last_commit: Option<Instant> = None;
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
        // Linger only while busy: after a quiet spell the first job commits at once.
        let started = Instant::now();
        let busy = last_commit.is_some_and(|at| started.duration_since(at) < linger.busy_within);
        let linger_until = busy.then(|| started + linger.max);
        run_batch(&mut conn, first, &receiver, linger, linger_until, &commits, &jobs);
        last_commit = Some(Instant::now());
        check_foreign(&conn);
    }
}

/// Delivers a job's result at most once (the run and abort paths share it).
fn send_once<V>(slot: &std::sync::Mutex<Option<tokio::sync::oneshot::Sender<V>>>, value: V) {
    if let Some(tx) = slot.lock().ok().and_then(|mut s| s.take()) {
        let _ = tx.send(value);
    }
}

/// Runs one group transaction: begins it (IMMEDIATE) with `first`, then
/// runs every job already waiting and, until `linger_until` (`None`: not
/// busy, no linger), every job that arrives — each as it arrives, so the
/// linger overlaps the jobs' own work instead of adding to it. Commits once
/// and delivers every result only when the commit outcome is known.
fn run_batch(
    conn: &mut Connection,
    first: Job,
    receiver: &mpsc::Receiver<Job>,
    linger: Linger,
    linger_until: Option<Instant>,
    commits: &AtomicU64,
    jobs: &AtomicU64,
) {
    let txn = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(t) => t,
        Err(e) => {
            let error = SqliteError::from(e);
            tracing::warn!(error = %error, "Cannot begin SQLite transaction; failing the job.");
            (first.abort)(Err(error));
            return;
        }
    };
    let mut deliveries: Vec<Deliver> = Vec::new();
    let mut count: u64 = 0;
    let mut next = Some(first);
    while let Some(job) = next.take() {
        count += 1;
        if let Err(error) = run_job(&txn, job, &mut deliveries) {
            // A job without a savepoint failed after writing: the whole
            // transaction goes, and every job in it fails. Jobs still
            // waiting are not part of it; they start the next one.
            tracing::warn!(jobs = count, "A group-commit job failed after writing; rolling back its whole batch.");
            drop(txn);
            for deliver in deliveries {
                deliver(Err(error.clone()));
            }
            return;
        }
        if count as usize >= MAX_JOBS_PER_COMMIT {
            break;
        }
        next = match receiver.try_recv() {
            Ok(job) => Some(job),
            Err(mpsc::TryRecvError::Disconnected) => None,
            Err(mpsc::TryRecvError::Empty) => {
                let now = Instant::now();
                match linger_until {
                    Some(until) if (count as usize) >= linger.min_jobs && now < until => {
                        receiver.recv_timeout(linger.gap.min(until - now)).ok()
                    }
                    _ => None,
                }
            }
        };
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

/// Runs one job in the open transaction: kept results wait in `deliveries`
/// for the commit; a job that failed without leaving writes gets its error
/// at once. `Err` means a job without a savepoint failed after writing and
/// the transaction must be rolled back.
fn run_job(txn: &Transaction<'_>, job: Job, deliveries: &mut Vec<Deliver>) -> Result<(), SqliteError> {
    if !job.savepoint {
        let before = txn.total_changes();
        let (keep, deliver) = (job.run)(txn);
        if keep {
            deliveries.push(deliver);
        } else if txn.total_changes() == before {
            // Failed before writing: nothing to undo.
            deliver(Ok(()));
        } else {
            deliver(Ok(()));
            return Err(SqliteError::Aborted("a job without a savepoint failed after writing".to_string()));
        }
        return Ok(());
    }
    if let Err(e) = txn.execute_batch("SAVEPOINT job") {
        (job.abort)(Err(SqliteError::from(e)));
        return Ok(());
    }
    let (keep, deliver) = (job.run)(txn);
    let closing = if keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
    match txn.execute_batch(closing) {
        Ok(()) if keep => deliveries.push(deliver),
        Ok(()) => deliver(Ok(())),
        Err(e) => deliver(Err(SqliteError::from(e))),
    }
    Ok(())
}
