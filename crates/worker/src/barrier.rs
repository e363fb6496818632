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
//! This module holds the rules and the stored shapes, and decides, as pure
//! functions of the rows found and the handler's result, what to record and
//! answer ([`after_action`], [`after_compensation`], [`expired_action`],
//! [`compensation_plan`], [`fence_plan`]); each adapter of the participant
//! database port (`sqlite.rs` here, PostgreSQL in `sqsaga-postgres`,
//! DynamoDB in `sqsaga-dynamodb`) finds the rows and writes what they
//! decide in its own way (look then insert, insert first, conditional
//! put), and the contract suite
//! (`contract.rs`) holds them all to the same outcomes. It knows nothing
//! about queues or replies.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::duration::format_duration;
use sqsaga_core::machine::{EXPIRED_IN_QUEUE, Outcome, Phase};

use crate::{CommandContext, HandlerError};

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

/// What a command's local transaction comes to once its handler returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Write this into the command's own barrier row, commit, answer.
    Record(Recorded, BarrierOutcome),
    /// Roll back the handler's writes and the command's own row (it is not
    /// recorded), answer.
    Discard(BarrierOutcome),
}

impl Settle {
    /// A recorded first run.
    fn fresh(recorded: Recorded) -> Settle {
        let outcome = BarrierOutcome::fresh(recorded.to_outcome());
        Settle::Record(recorded, outcome)
    }
}

/// After an action's handler: a success or a refusal is recorded (so a
/// duplicate gets the same answer); a transient failure is not.
pub fn after_action(result: Result<Value, HandlerError>) -> Settle {
    match result {
        Ok(output) => Settle::fresh(Recorded::Succeeded { output }),
        Err(HandlerError::Refused(reason)) => Settle::fresh(Recorded::Refused { reason }),
        Err(HandlerError::Transient(error)) => Settle::Discard(BarrierOutcome::transient(error)),
    }
}

/// After a compensation's handler: a success is recorded; a refusal is not
/// (a resume must be able to run it again), nor a transient failure.
pub fn after_compensation(result: Result<Value, HandlerError>) -> Settle {
    match result {
        Ok(output) => Settle::fresh(Recorded::Succeeded { output }),
        Err(HandlerError::Refused(reason)) => Settle::Discard(BarrierOutcome::fresh(Outcome::Refused { reason })),
        Err(HandlerError::Transient(error)) => Settle::Discard(BarrierOutcome::transient(error)),
    }
}

/// An action with no row yet, arriving at `now`: past its latest start, the
/// refusal to record and the answer; `None` when its handler may run.
pub fn expired_action(ctx: &CommandContext, now: Millis) -> Option<(Recorded, BarrierOutcome)> {
    let recorded = Recorded::Refused { reason: expiry(ctx, now)? };
    let outcome = BarrierOutcome::expired(&recorded);
    Some((recorded, outcome))
}

/// What a compensation with no row of its own does, given its action's row.
#[derive(Debug, Clone, PartialEq)]
pub enum Compensate {
    /// Nothing to undo: record this, answer.
    Nothing(Recorded, BarrierOutcome),
    /// The action took effect: run the compensation's handler, then [`after_compensation`].
    Undo,
}

/// The plan of a compensation, given its action's row: `None` when the
/// action never ran (the compensation blocks it with [`Recorded::Prevented`]
/// in the same transaction: a null compensation).
pub fn compensation_plan(action: Option<&Recorded>) -> Compensate {
    let nothing = nothing_to_undo();
    match action {
        None => {
            let (recorded, outcome) = null_compensation();
            Compensate::Nothing(recorded, outcome)
        }
        // A refusal had no effect: nothing to undo.
        Some(Recorded::Refused { .. } | Recorded::Prevented) => {
            let outcome = BarrierOutcome::fresh(nothing.to_outcome());
            Compensate::Nothing(nothing, outcome)
        }
        Some(Recorded::Succeeded { .. }) => Compensate::Undo,
    }
}

/// What a null compensation records and answers: `compensation_plan(None)`,
/// for an adapter that must write it before it knows whether the action ran.
pub fn null_compensation() -> (Recorded, BarrierOutcome) {
    let nothing = nothing_to_undo();
    let outcome = BarrierOutcome::null_compensation(&nothing);
    (nothing, outcome)
}

/// What a fence with no row of its own records and answers, given its
/// action's row (`None`: the action never ran and the fence blocks it).
pub fn fence_plan(action: Option<Recorded>) -> (Recorded, BarrierOutcome) {
    match action {
        None => {
            let recorded = fence_prevented();
            let outcome = BarrierOutcome::null_compensation(&recorded);
            (recorded, outcome)
        }
        Some(Recorded::Refused { .. } | Recorded::Prevented) => {
            let recorded = fence_prevented();
            let outcome = BarrierOutcome::fresh(recorded.to_outcome());
            (recorded, outcome)
        }
        Some(Recorded::Succeeded { output }) => {
            let recorded = fence_already_ran(output);
            let outcome = BarrierOutcome::fresh(recorded.to_outcome());
            (recorded, outcome)
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(reason: &str) -> Result<Value, HandlerError> {
        Err(HandlerError::Refused(reason.into()))
    }

    fn busy() -> Result<Value, HandlerError> {
        Err(HandlerError::Transient("busy".into()))
    }

    #[test]
    fn an_action_records_success_and_refusal_and_discards_a_transient_failure() {
        let fresh = |r: Recorded| Settle::Record(r.clone(), BarrierOutcome::fresh(r.to_outcome()));
        assert_eq!(after_action(Ok(json!(1))), fresh(Recorded::Succeeded { output: json!(1) }));
        assert_eq!(after_action(refused("no")), fresh(Recorded::Refused { reason: "no".into() }));
        assert_eq!(after_action(busy()), Settle::Discard(BarrierOutcome::transient("busy".into())));
    }

    #[test]
    fn a_compensation_records_only_success() {
        let ok = Recorded::Succeeded { output: json!(2) };
        assert_eq!(
            after_compensation(Ok(json!(2))),
            Settle::Record(ok.clone(), BarrierOutcome::fresh(ok.to_outcome()))
        );
        let no = BarrierOutcome::fresh(Outcome::Refused { reason: "no".into() });
        assert_eq!(after_compensation(refused("no")), Settle::Discard(no));
        assert_eq!(after_compensation(busy()), Settle::Discard(BarrierOutcome::transient("busy".into())));
    }

    #[test]
    fn a_compensation_undoes_only_an_action_that_took_effect() {
        let (nothing, null) = null_compensation();
        assert!(null.null_compensation);
        assert_eq!(compensation_plan(None), Compensate::Nothing(nothing.clone(), null));
        let noop = Compensate::Nothing(nothing.clone(), BarrierOutcome::fresh(nothing.to_outcome()));
        assert_eq!(compensation_plan(Some(&Recorded::Refused { reason: "no".into() })), noop);
        assert_eq!(compensation_plan(Some(&Recorded::Prevented)), noop);
        assert_eq!(compensation_plan(Some(&Recorded::Succeeded { output: json!(1) })), Compensate::Undo);
    }

    #[test]
    fn a_fence_blocks_an_action_that_never_ran_and_reports_one_that_did() {
        let (prevented, null) = fence_plan(None);
        assert_eq!((prevented, null.null_compensation), (fence_prevented(), true));
        assert_eq!(fence_plan(Some(Recorded::Prevented)).0, fence_prevented());
        let (ran, outcome) = fence_plan(Some(Recorded::Succeeded { output: json!({"id": 7}) }));
        assert_eq!(ran, fence_already_ran(json!({"id": 7})));
        assert!(!outcome.null_compensation && !outcome.duplicate);
    }

    #[test]
    fn an_action_past_its_latest_start_is_refused_unrun_and_recorded() {
        let ctx = CommandContext {
            saga_id: "s".into(),
            step: "a".into(),
            command: "c".into(),
            phase: Phase::Action,
            attempt: 1,
            payload: json!({}),
            not_after: Some(1_000),
            sent_at: Some(500),
        };
        assert_eq!(expired_action(&ctx, 1_000), None);
        let (recorded, outcome) = expired_action(&ctx, 2_000).unwrap_or_else(|| panic!("not expired"));
        assert!(outcome.expired);
        assert!(matches!(recorded, Recorded::Refused { ref reason } if reason.starts_with(EXPIRED_IN_QUEUE)));
        let compensation = CommandContext { phase: Phase::Compensation, ..ctx };
        assert_eq!(expired_action(&compensation, 2_000), None);
    }
}
