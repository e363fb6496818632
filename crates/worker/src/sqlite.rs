//! The SQLite adapter of the participant database port: the service's own
//! SQLite file, written by one [`GroupCommitter`], so a received batch of
//! commands (and several pollers' batches) share one transaction and one
//! fsync. Handlers implement [`crate::Handler`] and get the
//! `rusqlite::Transaction`.
//!
//! The barrier here reads before it writes: the single writer thread
//! serialises every command of this file, so no other transaction can
//! insert the same row between the lookup and the insert (another process
//! on the same file waits for the write lock, and reads after it).

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;
use sqsaga_core::machine::Phase;
use sqsaga_sqlite::{GroupCommitter, Linger, SqliteError, Sync};

use crate::barrier::{self, BarrierOutcome, Compensate, LookupError, Recorded, Settle};
use crate::db::{Job, JobResult, ParticipantDb, Run};
use crate::{CommandContext, Handler, HandlerError, WorkerError};

/// Created by [`SqliteDb::open`]; part of the participant's schema.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sqsaga_barrier (
    saga_id    TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    op         TEXT    NOT NULL CHECK (op IN ('action', 'compensation')),
    outcome    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (saga_id, step, op)
) WITHOUT ROWID;";

/// A participant's SQLite database.
pub struct SqliteDb {
    committer: GroupCommitter,
    /// `sqlite:<path>`, for logs and readiness.
    describe: String,
}

impl SqliteDb {
    /// Opens (or creates) the database at `path`, the barrier table and
    /// `schema` (the service's own `CREATE TABLE IF NOT EXISTS ...`) in it.
    pub fn open(path: &Path, sync: Sync, schema: &str) -> Result<Self, WorkerError> {
        SqliteDb::with_connection(sqsaga_sqlite::open(path, sync)?, path, schema)
    }

    /// Like [`SqliteDb::open`] on a connection the caller opened on `path`
    /// (tests: a shorter busy timeout).
    pub fn with_connection(conn: Connection, path: &Path, schema: &str) -> Result<Self, WorkerError> {
        conn.execute_batch(SCHEMA).map_err(SqliteError::from)?;
        if !schema.trim().is_empty() {
            conn.execute_batch(schema).map_err(SqliteError::from)?;
        }
        let name =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "participant".to_string());
        Ok(SqliteDb {
            committer: GroupCommitter::start(&name, conn, Linger::PARTICIPANT)?,
            describe: format!("sqlite:{}", path.display()),
        })
    }

    /// The database writer: for reads, for tests, and for counting commits.
    pub fn committer(&self) -> &GroupCommitter {
        &self.committer
    }
}

#[async_trait]
impl ParticipantDb for SqliteDb {
    type Handler = dyn Handler;

    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// The batch is one job of the group commit, all made durable by one
    /// commit: a refused or transient command rolls back only its handler's
    /// writes (the handler's savepoint); a database error after a command
    /// wrote rolls back the batch, and every command in it reports the error
    /// (their messages come back).
    async fn run_batch(&self, batch: Vec<Job<dyn Handler>>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        let n = batch.len();
        // No savepoint per command (SQLite would copy every page a command
        // touches into the sub-journal): the barrier writes nothing before
        // it can fail, and the handler has its own savepoint. A command that
        // fails after writing (a SQL error under the barrier) fails the job,
        // and the group commit rolls the whole batch back.
        let job = self.committer.run_in_batch(move |tx| run_jobs(tx, &batch, clock.now()));
        let zero = std::time::Duration::ZERO;
        match job.await {
            Ok(Ok(results)) => results,
            Ok(Err(e)) | Err(e) => (0..n).map(|_| (Err(WorkerError::Sqlite(e.clone())), zero)).collect(),
        }
    }

    /// A write transaction that changes nothing: fails while another
    /// process holds the write lock past the busy timeout, or the writer is gone.
    async fn ping(&self) -> Result<(), WorkerError> {
        match self.committer.run(|_| Ok::<(), rusqlite::Error>(())).await? {
            Ok(()) => Ok(()),
            Err(e) => Err(WorkerError::Sqlite(SqliteError::from(e))),
        }
    }
}

/// Runs `batch` through the barrier inside `tx`, "now" being `now`: one
/// result per command, in order. `Err` when a command failed after writing
/// (the batch must be rolled back as a whole: every message comes back).
/// What [`SqliteDb`] runs as one job of its group commit; public so another
/// SQLite holder (the simulator's in-memory database) runs the same barrier.
pub fn run_jobs(tx: &Transaction<'_>, batch: &[Job<dyn Handler>], now: Millis) -> Result<Vec<JobResult>, SqliteError> {
    let mut out = Vec::with_capacity(batch.len());
    for Job { ctx, run: runner } in batch {
        let started = std::time::Instant::now();
        let before = tx.total_changes();
        let result = match runner {
            Run::Fence => fence(tx, ctx, now),
            Run::Handler { handler, delay } => {
                if !delay.is_zero() {
                    std::thread::sleep(*delay);
                }
                run(tx, handler.as_ref(), ctx, now)
            }
        };
        // A transient error rolled its handler's savepoint back;
        // anything else after a write leaves the batch in doubt.
        match &result {
            Err(JobError::Sql(e)) if tx.total_changes() != before => return Err(e.clone()),
            Err(JobError::Corrupt(cause)) if tx.total_changes() != before => {
                return Err(SqliteError::Sql(format!("barrier of saga {}: {cause}", ctx.saga_id)));
            }
            _ => {}
        }
        out.push((job_result(result, ctx), started.elapsed()));
    }
    Ok(out)
}

/// Why a barrier job did not keep its writes.
#[derive(Debug)]
enum JobError {
    /// SQLite failed under the barrier: roll back; the message comes back.
    Sql(SqliteError),
    /// A barrier row cannot be read back.
    Corrupt(String),
}

impl From<rusqlite::Error> for JobError {
    fn from(e: rusqlite::Error) -> Self {
        JobError::Sql(SqliteError::from(e))
    }
}

/// A barrier job's result as the runtime sees it: a transient handler error
/// is an outcome to reply (nothing was recorded), not a failure.
fn job_result(result: Result<BarrierOutcome, JobError>, ctx: &CommandContext) -> Result<BarrierOutcome, WorkerError> {
    match result {
        Ok(outcome) => Ok(outcome),
        Err(JobError::Sql(e)) => Err(WorkerError::Sqlite(e)),
        Err(JobError::Corrupt(cause)) => {
            Err(WorkerError::CorruptBarrier { saga_id: ctx.saga_id.clone(), step: ctx.step.clone(), cause })
        }
    }
}

/// Reads the row for (saga, step, op), if any.
pub fn lookup(conn: &Connection, saga_id: &str, step: &str, op: Phase) -> Result<Option<Recorded>, LookupError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT outcome FROM sqsaga_barrier WHERE saga_id = ?1 AND step = ?2 AND op = ?3")
        .and_then(|mut stmt| stmt.query_row(params![saga_id, step, barrier::op_name(op)], |row| row.get(0)).optional())
        .map_err(|e| LookupError::Sql(SqliteError::from(e).to_string()))?;
    match text {
        None => Ok(None),
        Some(text) => Recorded::decode(&text).map(Some).map_err(|cause| LookupError::Corrupt {
            saga_id: saga_id.to_string(),
            step: step.to_string(),
            cause,
        }),
    }
}

/// The output the action of (saga, step) recorded, for compensations that
/// need it (say, the reservation id to release).
pub fn action_output(conn: &Connection, saga_id: &str, step: &str) -> Result<Option<Value>, LookupError> {
    Ok(lookup(conn, saga_id, step, Phase::Action)?.and_then(Recorded::output))
}

fn lookup_job(tx: &Connection, ctx: &CommandContext, op: Phase) -> Result<Option<Recorded>, JobError> {
    lookup(tx, &ctx.saga_id, &ctx.step, op).map_err(|e| match e {
        LookupError::Sql(e) => JobError::Sql(SqliteError::Sql(e)),
        LookupError::Corrupt { cause, .. } => JobError::Corrupt(cause),
    })
}

fn record(tx: &Connection, ctx: &CommandContext, op: Phase, outcome: &Recorded, now: Millis) -> Result<(), JobError> {
    let sql = if crate::planted::skip_barrier() {
        "INSERT OR REPLACE INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    } else {
        "INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    tx.prepare_cached(sql)?.execute(params![
        ctx.saga_id,
        ctx.step,
        barrier::op_name(op),
        outcome.encode(),
        i64::try_from(now).unwrap_or(i64::MAX)
    ])?;
    Ok(())
}

/// Runs the handler inside a nested savepoint so a refusal keeps the barrier
/// row but none of the handler's writes: `Ok` with the handler's result,
/// its writes rolled back if it failed. A panic is caught (a transient
/// error): it would otherwise take down the database writer thread shared
/// by every command.
fn call_handler(
    tx: &Transaction<'_>,
    handler: &dyn Handler,
    ctx: &CommandContext,
) -> Result<Result<Value, HandlerError>, JobError> {
    tx.execute_batch("SAVEPOINT sqsaga_handler")?;
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(tx, ctx))) {
        Ok(r) => r,
        Err(panic) => Err(HandlerError::Transient(format!(
            "handler `{}` panicked: {}",
            ctx.command,
            barrier::panic_message(panic.as_ref())
        ))),
    };
    match &result {
        Ok(_) => tx.execute_batch("RELEASE sqsaga_handler")?,
        Err(_) => tx.execute_batch("ROLLBACK TO sqsaga_handler; RELEASE sqsaga_handler")?,
    }
    Ok(result)
}

/// Runs `ctx` through the barrier inside `tx`. `Err` means: roll back this
/// job (a transient handler error or a database failure). `now` is the time
/// the job runs: it decides whether an action is too late and stamps the row.
fn run(
    tx: &Transaction<'_>,
    handler: &dyn Handler,
    ctx: &CommandContext,
    now: Millis,
) -> Result<BarrierOutcome, JobError> {
    match ctx.phase {
        Phase::Action => run_action(tx, handler, ctx, now),
        Phase::Compensation => run_compensation(tx, handler, ctx, now),
    }
}

fn run_action(
    tx: &Transaction<'_>,
    handler: &dyn Handler,
    ctx: &CommandContext,
    now: Millis,
) -> Result<BarrierOutcome, JobError> {
    let recorded = if crate::planted::skip_barrier() { None } else { lookup_job(tx, ctx, Phase::Action)? };
    if let Some(recorded) = recorded {
        return Ok(BarrierOutcome::answered(&recorded, Phase::Action));
    }
    // After the lookup: an action that already ran answers with what it
    // did, however late its redelivery comes.
    if let Some((recorded, outcome)) = barrier::expired_action(ctx, now) {
        record(tx, ctx, Phase::Action, &recorded, now)?;
        return Ok(outcome);
    }
    let result = call_handler(tx, handler, ctx)?;
    settle(tx, ctx, Phase::Action, barrier::after_action(result), now)
}

/// Writes what the barrier decided after a handler ran. A discarded outcome
/// wrote nothing: the handler's savepoint is already rolled back, and the
/// command's row is only ever written here.
fn settle(
    tx: &Transaction<'_>,
    ctx: &CommandContext,
    op: Phase,
    settle: Settle,
    now: Millis,
) -> Result<BarrierOutcome, JobError> {
    match settle {
        Settle::Record(recorded, outcome) => {
            record(tx, ctx, op, &recorded, now)?;
            Ok(outcome)
        }
        Settle::Discard(outcome) => Ok(outcome),
    }
}

/// Resolves a step that has no compensation and whose outcome is in doubt
/// (it timed out, or its retries ran out): the orchestrator sends
/// [`sqsaga_core::machine::FENCE_COMMAND`] instead of a compensation. If the
/// action never ran, it is blocked for good (like a null compensation) and
/// the reply says `{"fence": "prevented"}`; if it ran, the reply says
/// `{"fence": "already_ran", "output": ...}` so the orchestrator can treat the
/// step as done instead of pretending it can be undone.
fn fence(tx: &Transaction<'_>, ctx: &CommandContext, now: Millis) -> Result<BarrierOutcome, JobError> {
    if let Some(recorded) = lookup_job(tx, ctx, Phase::Compensation)? {
        return Ok(BarrierOutcome::answered(&recorded, Phase::Compensation));
    }
    let action = block_action(tx, ctx, now)?;
    let (recorded, outcome) = barrier::fence_plan(action);
    record(tx, ctx, Phase::Compensation, &recorded, now)?;
    Ok(outcome)
}

/// For a compensation or fence: the action's row, or `None` after writing
/// it as `prevented` (it never ran here, and now never will).
fn block_action(tx: &Transaction<'_>, ctx: &CommandContext, now: Millis) -> Result<Option<Recorded>, JobError> {
    let action = lookup_job(tx, ctx, Phase::Action)?;
    if action.is_none() {
        record(tx, ctx, Phase::Action, &Recorded::Prevented, now)?;
    }
    Ok(action)
}

fn run_compensation(
    tx: &Transaction<'_>,
    handler: &dyn Handler,
    ctx: &CommandContext,
    now: Millis,
) -> Result<BarrierOutcome, JobError> {
    if let Some(recorded) = lookup_job(tx, ctx, Phase::Compensation)? {
        return Ok(BarrierOutcome::answered(&recorded, Phase::Compensation));
    }
    let action = block_action(tx, ctx, now)?;
    match barrier::compensation_plan(action.as_ref()) {
        Compensate::Nothing(recorded, outcome) => {
            record(tx, ctx, Phase::Compensation, &recorded, now)?;
            Ok(outcome)
        }
        Compensate::Undo => {
            let result = call_handler(tx, handler, ctx)?;
            settle(tx, ctx, Phase::Compensation, barrier::after_compensation(result), now)
        }
    }
}
