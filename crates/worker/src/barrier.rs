//! The sub-transaction barrier (after dtm), what every participant database
//! shares: one row per (saga, step, op) in the participant's own database,
//! written in the same local transaction as the business change, so effects
//! happen once under at-least-once delivery.
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
//! - A fence (an in-doubt step without compensation) blocks the action for
//!   good if it never ran, or reports that it ran.
//! - A refused compensation is not recorded: the saga goes to
//!   `needs_operator`, and a resume must be able to run it again.
//!
//! The step key is the step *name* (`CommandContext::step`): the command's
//! `step_name` for sqsaga commands, the action command name for seed-shaped
//! messages. Retries of a step (attempts) share one row: the barrier is about
//! effects, not deliveries.
//!
//! This module holds the rules and the stored shapes; each adapter of the
//! participant database port (`sqlite.rs` here, PostgreSQL in
//! `sqsaga-postgres`, DynamoDB in `sqsaga-dynamodb`) applies them in its
//! own writes, and the contract suite
//! (`contract.rs`) holds them all to the same outcomes. It knows nothing
//! about queues or replies.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::duration::format_duration;
use sqsaga_core::machine::{EXPIRED_IN_QUEUE, Outcome, Phase};

use crate::CommandContext;

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
    /// What a command answered by this row replies.
    pub fn to_outcome(&self) -> Outcome {
        match self {
            Recorded::Succeeded { output } => Outcome::Succeeded { output: output.clone() },
            Recorded::Refused { reason } => Outcome::Refused { reason: reason.clone() },
            Recorded::Prevented => Outcome::Refused { reason: HANGING_REASON.to_string() },
        }
    }

    /// The row as stored (JSON text).
    pub fn encode(&self) -> String {
        // A tagged enum of strings and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"kind":"prevented"}"#.to_string())
    }

    /// Reads a stored row back; `Err` says why it is not one.
    pub fn decode(text: &str) -> Result<Recorded, String> {
        serde_json::from_str(text).map_err(|e| format!("outcome `{text}` is not a barrier outcome: {e}"))
    }

    /// The output of a succeeded action, for compensations that need it.
    pub fn output(self) -> Option<Value> {
        match self {
            Recorded::Succeeded { output } => Some(output),
            _ => None,
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
    /// A first run: no flag set.
    pub fn fresh(outcome: Outcome) -> Self {
        BarrierOutcome { outcome, duplicate: false, null_compensation: false, hanging: false, expired: false }
    }

    /// A transient handler failure: rolled back, nothing recorded.
    pub fn transient(error: String) -> Self {
        BarrierOutcome::fresh(Outcome::Transient { error })
    }

    /// The answer to a command whose own row (`op`) already exists.
    pub fn answered(recorded: &Recorded, op: Phase) -> Self {
        let hanging = op == Phase::Action && *recorded == Recorded::Prevented;
        BarrierOutcome { duplicate: !hanging, hanging, ..BarrierOutcome::fresh(recorded.to_outcome()) }
    }

    /// A command refused unrun because it waited past its latest start.
    pub fn expired(recorded: &Recorded) -> Self {
        BarrierOutcome { expired: true, ..BarrierOutcome::fresh(recorded.to_outcome()) }
    }

    /// A compensation (or fence) that found no action row and blocked it.
    pub fn null_compensation(recorded: &Recorded) -> Self {
        BarrierOutcome { null_compensation: true, ..BarrierOutcome::fresh(recorded.to_outcome()) }
    }
}

/// The stored name of a phase (`op` column).
pub fn op_name(op: Phase) -> &'static str {
    crate::phase_name(op)
}

/// What a compensation records when there is nothing to undo.
pub fn nothing_to_undo() -> Recorded {
    Recorded::Succeeded { output: Value::Null }
}

/// What a fence records when the action never ran (or had no effect).
pub fn fence_prevented() -> Recorded {
    Recorded::Succeeded { output: serde_json::json!({ "fence": "prevented" }) }
}

/// What a fence records when the action ran, with what it returned.
pub fn fence_already_ran(output: Value) -> Recorded {
    Recorded::Succeeded { output: serde_json::json!({ "fence": "already_ran", "output": output }) }
}

/// Why an action must not start at `now` (ms since the epoch): it waited in
/// the queue past its latest start time. `None` when it may start.
pub fn expiry(ctx: &CommandContext, now: Millis) -> Option<String> {
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

/// The message of a caught handler panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_string())
}

/// Errors reading the barrier table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("cannot read the barrier table: {0}")]
    Sql(String),
    #[error("barrier row of saga {saga_id} step {step} is corrupt: {cause}")]
    Corrupt { saga_id: String, step: String, cause: String },
}
