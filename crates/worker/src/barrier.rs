//! The sub-transaction barrier (after dtm): one row per (saga, step, op) in
//! the participant's own database, written in the same local transaction as
//! the business change, so effects happen once under at-least-once delivery.
//!
//! - A duplicate action or compensation gets the recorded outcome; the
//!   handler does not run again.
//! - A compensation whose action never ran is a "null compensation": nothing
//!   to undo, and the action row is written as `prevented` so that the action,
//!   should it still arrive (a "hanging" action, redelivered after a step
//!   timeout), is refused instead of taking effect after its undo.
//! - A compensation of a refused action is a no-op: a refusal had no effect.
//! - An action received after its latest start time (`not_after`: it waited
//!   in the queue too long) is refused without running the handler, and the
//!   refusal is recorded like any other, so a redelivery (say, to a sibling
//!   whose clock is behind) gets the same answer and the orchestrator can
//!   take "no effect" as definite. Compensations never expire.
//!
//! The step key is the step *name* (`CommandContext::step`): the command's
//! `step_name` for sqsaga commands, the action command name for seed-shaped
//! messages. Retries of a step (attempts) share one row: the barrier is about
//! effects, not deliveries.
//!
//! This module knows SQLite and the handler trait; it knows nothing about
//! queues or replies.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::duration::format_duration;
use sqsaga_core::machine::{EXPIRED_IN_QUEUE, Outcome, Phase};
use sqsaga_sqlite::SqliteError;

use crate::{CommandContext, Handler, HandlerError};

/// Created by `Participant::open`; part of the participant's schema.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sqsaga_barrier (
    saga_id    TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    op         TEXT    NOT NULL CHECK (op IN ('action', 'compensation')),
    outcome    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (saga_id, step, op)
) WITHOUT ROWID;";

/// Reason given when an action arrives after its step was compensated.
pub const HANGING_REASON: &str = "compensated before the action ran";

/// What the barrier row says happened, as stored in its `outcome` column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recorded {
    Succeeded {
        #[serde(default)]
        output: Value,
    },
    Refused {
        reason: String,
    },
    /// Written for an action by a null compensation: the action must not run.
    Prevented,
}

impl Recorded {
    fn to_outcome(&self) -> Outcome {
        match self {
            Recorded::Succeeded { output } => Outcome::Succeeded { output: output.clone() },
            Recorded::Refused { reason } => Outcome::Refused { reason: reason.clone() },
            Recorded::Prevented => Outcome::Refused { reason: HANGING_REASON.to_string() },
        }
    }
}

/// The result of running one command through the barrier.
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierOutcome {
    /// What to reply; `Transient` when the handler's transaction was rolled back.
    pub outcome: Outcome,
    /// The step had already been handled: the recorded outcome, no new effect.
    pub duplicate: bool,
    /// A compensation arrived before (or instead of) its action: nothing was undone.
    pub null_compensation: bool,
    /// An action arrived after its compensation: refused, no effect.
    pub hanging: bool,
    /// An action arrived after its latest start time: refused unrun (and
    /// recorded), no effect.
    pub expired: bool,
}

impl BarrierOutcome {
    fn fresh(outcome: Outcome) -> Self {
        BarrierOutcome { outcome, duplicate: false, null_compensation: false, hanging: false, expired: false }
    }
}

/// Why a barrier job did not keep its writes.
#[derive(Debug)]
pub(crate) enum JobError {
    /// The handler failed transiently (or panicked): roll back, record nothing.
    Transient(String),
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

fn op_name(op: Phase) -> &'static str {
    crate::phase_name(op)
}

/// Reads the row for (saga, step, op), if any.
pub fn lookup(conn: &Connection, saga_id: &str, step: &str, op: Phase) -> Result<Option<Recorded>, LookupError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT outcome FROM sqsaga_barrier WHERE saga_id = ?1 AND step = ?2 AND op = ?3")
        .and_then(|mut stmt| stmt.query_row(params![saga_id, step, op_name(op)], |row| row.get(0)).optional())
        .map_err(|e| LookupError::Sql(SqliteError::from(e)))?;
    match text {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| LookupError::Corrupt {
            saga_id: saga_id.to_string(),
            step: step.to_string(),
            cause: format!("outcome `{text}` is not a barrier outcome: {e}"),
        }),
    }
}

/// The output the action of (saga, step) recorded, for compensations that
/// need it (say, the reservation id to release).
pub fn action_output(conn: &Connection, saga_id: &str, step: &str) -> Result<Option<Value>, LookupError> {
    Ok(match lookup(conn, saga_id, step, Phase::Action)? {
        Some(Recorded::Succeeded { output }) => Some(output),
        _ => None,
    })
}

/// Errors reading the barrier table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read the barrier table: {0}")]
    Sql(SqliteError),
    #[error("barrier row of saga {saga_id} step {step} is corrupt: {cause}")]
    Corrupt { saga_id: String, step: String, cause: String },
}

fn lookup_job(tx: &Connection, ctx: &CommandContext, op: Phase) -> Result<Option<Recorded>, JobError> {
    lookup(tx, &ctx.saga_id, &ctx.step, op).map_err(|e| match e {
        LookupError::Sql(e) => JobError::Sql(e),
        LookupError::Corrupt { cause, .. } => JobError::Corrupt(cause),
    })
}

fn record(tx: &Connection, ctx: &CommandContext, op: Phase, outcome: &Recorded, now: Millis) -> Result<(), JobError> {
    let text = serde_json::to_string(outcome).map_err(|e| JobError::Corrupt(e.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![ctx.saga_id, ctx.step, op_name(op), text, i64::try_from(now).unwrap_or(i64::MAX)])?;
    Ok(())
}

/// Why an action must not start at `now` (ms since the epoch): it waited in
/// the queue past its latest start time. `None` when it may start.
fn expiry(ctx: &CommandContext, now: Millis) -> Option<String> {
    let not_after = ctx.not_after?;
    if ctx.phase != Phase::Action || now <= not_after {
        return None;
    }
    let ago = |t: u64| format_duration(Duration::from_millis(now.saturating_sub(t)));
    Some(match ctx.sent_at {
        Some(sent) => format!("{EXPIRED_IN_QUEUE} after {} (latest start was {} ago)", ago(sent), ago(not_after)),
        None => format!("{EXPIRED_IN_QUEUE}: latest start was {} ago", ago(not_after)),
    })
}

/// Runs the handler inside a nested savepoint so a refusal keeps the barrier
/// row but none of the handler's writes. A panic is caught: it would
/// otherwise take down the database writer thread shared by every command.
fn call_handler(tx: &Transaction<'_>, handler: &dyn Handler, ctx: &CommandContext) -> Result<Value, JobErrorOr> {
    tx.execute_batch("SAVEPOINT sqsaga_handler")?;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(tx, ctx)));
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(HandlerError::Transient(format!("handler `{}` panicked: {text}", ctx.command)))
        }
    };
    match result {
        Ok(output) => {
            tx.execute_batch("RELEASE sqsaga_handler")?;
            Ok(output)
        }
        Err(e) => {
            tx.execute_batch("ROLLBACK TO sqsaga_handler; RELEASE sqsaga_handler")?;
            Err(JobErrorOr::Handler(e))
        }
    }
}

/// A handler's error, or SQLite failing around it.
enum JobErrorOr {
    Handler(HandlerError),
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for JobErrorOr {
    fn from(e: rusqlite::Error) -> Self {
        JobErrorOr::Sql(e)
    }
}

/// Runs `ctx` through the barrier inside `tx`. `Err` means: roll back this
/// job (a transient handler error or a database failure).
/// `now` is the time the job runs: it decides whether an action is too late
/// and stamps the barrier row.
pub(crate) fn run(
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
    if let Some(recorded) = lookup_job(tx, ctx, Phase::Action)? {
        let hanging = recorded == Recorded::Prevented;
        return Ok(BarrierOutcome {
            outcome: recorded.to_outcome(),
            duplicate: !hanging,
            null_compensation: false,
            hanging,
            expired: false,
        });
    }
    // After the lookup: an action that already ran answers with what it
    // did, however late its redelivery comes.
    if let Some(reason) = expiry(ctx, now) {
        let recorded = Recorded::Refused { reason };
        record(tx, ctx, Phase::Action, &recorded, now)?;
        return Ok(BarrierOutcome { expired: true, ..BarrierOutcome::fresh(recorded.to_outcome()) });
    }
    let recorded = match call_handler(tx, handler, ctx) {
        Ok(output) => Recorded::Succeeded { output },
        Err(JobErrorOr::Handler(HandlerError::Refused(reason))) => Recorded::Refused { reason },
        Err(JobErrorOr::Handler(HandlerError::Transient(error))) => return Err(JobError::Transient(error)),
        Err(JobErrorOr::Sql(e)) => return Err(e.into()),
    };
    record(tx, ctx, Phase::Action, &recorded, now)?;
    Ok(BarrierOutcome::fresh(recorded.to_outcome()))
}

/// Resolves a step that has no compensation and whose outcome is in doubt
/// (it timed out, or its retries ran out): the orchestrator sends
/// [`sqsaga_core::machine::FENCE_COMMAND`] instead of a compensation. If the
/// action never ran, it is blocked for good (like a null compensation) and
/// the reply says `{"fence": "prevented"}`; if it ran, the reply says
/// `{"fence": "already_ran", "output": ...}` so the orchestrator can treat the
/// step as done instead of pretending it can be undone.
pub(crate) fn fence(tx: &Transaction<'_>, ctx: &CommandContext, now: Millis) -> Result<BarrierOutcome, JobError> {
    if let Some(recorded) = lookup_job(tx, ctx, Phase::Compensation)? {
        return Ok(BarrierOutcome {
            outcome: recorded.to_outcome(),
            duplicate: true,
            null_compensation: false,
            hanging: false,
            expired: false,
        });
    }
    let prevented = Recorded::Succeeded { output: serde_json::json!({ "fence": "prevented" }) };
    let (recorded, null_compensation) = match lookup_job(tx, ctx, Phase::Action)? {
        None => {
            record(tx, ctx, Phase::Action, &Recorded::Prevented, now)?;
            (prevented, true)
        }
        Some(Recorded::Refused { .. }) | Some(Recorded::Prevented) => (prevented, false),
        Some(Recorded::Succeeded { output }) => {
            (Recorded::Succeeded { output: serde_json::json!({ "fence": "already_ran", "output": output }) }, false)
        }
    };
    record(tx, ctx, Phase::Compensation, &recorded, now)?;
    Ok(BarrierOutcome {
        outcome: recorded.to_outcome(),
        duplicate: false,
        null_compensation,
        hanging: false,
        expired: false,
    })
}

fn run_compensation(
    tx: &Transaction<'_>,
    handler: &dyn Handler,
    ctx: &CommandContext,
    now: Millis,
) -> Result<BarrierOutcome, JobError> {
    if let Some(recorded) = lookup_job(tx, ctx, Phase::Compensation)? {
        return Ok(BarrierOutcome {
            outcome: recorded.to_outcome(),
            duplicate: true,
            null_compensation: false,
            hanging: false,
            expired: false,
        });
    }
    let nothing_to_undo = Recorded::Succeeded { output: Value::Null };
    match lookup_job(tx, ctx, Phase::Action)? {
        None => {
            // Null compensation: the action never ran here. Block it for good.
            record(tx, ctx, Phase::Action, &Recorded::Prevented, now)?;
            record(tx, ctx, Phase::Compensation, &nothing_to_undo, now)?;
            Ok(BarrierOutcome {
                outcome: nothing_to_undo.to_outcome(),
                duplicate: false,
                null_compensation: true,
                hanging: false,
                expired: false,
            })
        }
        Some(Recorded::Refused { .. }) | Some(Recorded::Prevented) => {
            // A refusal had no effect: nothing to undo.
            record(tx, ctx, Phase::Compensation, &nothing_to_undo, now)?;
            Ok(BarrierOutcome::fresh(nothing_to_undo.to_outcome()))
        }
        Some(Recorded::Succeeded { .. }) => match call_handler(tx, handler, ctx) {
            Ok(output) => {
                let recorded = Recorded::Succeeded { output };
                record(tx, ctx, Phase::Compensation, &recorded, now)?;
                Ok(BarrierOutcome::fresh(recorded.to_outcome()))
            }
            // A refused compensation is not recorded: the saga goes to
            // `needs_operator`, and a resume must be able to run it again.
            Err(JobErrorOr::Handler(HandlerError::Refused(reason))) => {
                Ok(BarrierOutcome::fresh(Outcome::Refused { reason }))
            }
            Err(JobErrorOr::Handler(HandlerError::Transient(error))) => Err(JobError::Transient(error)),
            Err(JobErrorOr::Sql(e)) => Err(e.into()),
        },
    }
}
