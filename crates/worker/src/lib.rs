//! The worker runtime: what a participant service links to take part in sagas.
//!
//! A service builds a [`Participant`] (its own database — SQLite here, or
//! any adapter of the [`db::ParticipantDb`] port, such as PostgreSQL in
//! `sqsaga-postgres` — plus one handler per command) and hands it to a
//! [`Worker`], which polls the service's queue, runs every command through
//! the sub-transaction [`barrier`] in the participant's local transaction,
//! replies to the orchestrator and only then deletes the message.
//! [`contract`] is the barrier's behaviour suite every database adapter runs
//! against itself.
//!
//! This crate knows the `Queue` port and the wire protocol, not the adapters
//! behind them (embedded SQLite or Amazon SQS), nor any saga definition: a
//! command carries everything a worker needs.

use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::machine::Phase;

pub mod barrier;
pub mod contract;
pub mod db;
mod drift;
mod options;
mod participant;
pub mod planted;
mod runtime;
pub mod sqlite;
mod stats;
mod typed;

pub use barrier::BarrierOutcome;
pub use options::WorkerOptions;
pub use participant::{AnyParticipant, Participant};
pub use runtime::Worker;
pub use stats::{LATENCY_BUCKETS_SECONDS, StatsSnapshot, WorkerStats};
pub use typed::{output, typed};

/// Why a handler did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A business refusal (card declined, out of stock): final, and the
    /// handler's writes are rolled back so it has no effect. The barrier
    /// records it, so a redelivery gets the same answer.
    #[error("refused: {0}")]
    Refused(String),
    /// Something that may pass (a lock, a downstream timeout): the local
    /// transaction is rolled back, nothing is recorded, and the orchestrator
    /// decides whether to retry.
    #[error("transient error: {0}")]
    Transient(String),
}

impl HandlerError {
    /// Whether the same command may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, HandlerError::Transient(_))
    }
}

/// What a handler is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandContext {
    pub saga_id: String,
    /// Barrier key of the step: the command's `step_name` for sqsaga
    /// commands, the action command name for seed-shaped messages (which have
    /// no step names). Action and compensation of one step share it.
    pub step: String,
    /// Registered command name, e.g. `inventory.reserve`.
    pub command: String,
    pub phase: Phase,
    /// 1 for the first attempt; retries of one step share the barrier row.
    pub attempt: u32,
    /// `{"input": <saga input>, "outputs": {<step>: <output>}}` for sqsaga
    /// commands; the seed message's payload as it came otherwise.
    pub payload: Value,
    /// Latest time the action may start (ms since the epoch): past it the
    /// barrier refuses it unrun and records the refusal. `None` (seed
    /// messages, compensations, older orchestrators): no limit.
    pub not_after: Option<Millis>,
    /// When the orchestrator sent the command, to say how long it waited.
    pub sent_at: Option<Millis>,
}

impl CommandContext {
    /// The saga input: `payload.input` when present (sqsaga commands), else the
    /// whole payload (seed-shaped messages carry the input directly).
    pub fn input(&self) -> &Value {
        match self.payload.get("input") {
            Some(input) => input,
            None => &self.payload,
        }
    }

    /// Output of an earlier step, by step name, when the orchestrator sent it.
    pub fn output_of(&self, step: &str) -> Option<&Value> {
        self.payload.get("outputs").and_then(|o| o.get(step))
    }
}

/// One command's business logic, on SQLite (the [`sqlite::SqliteDb`]
/// adapter's handler type).
pub trait Handler: Send + Sync + 'static {
    /// Runs inside the participant's local transaction, together with the barrier row.
    fn handle(&self, tx: &rusqlite::Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError>;
}

impl<F> Handler for F
where
    F: Fn(&rusqlite::Transaction<'_>, &CommandContext) -> Result<Value, HandlerError> + Send + Sync + 'static,
{
    fn handle(&self, tx: &rusqlite::Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self(tx, ctx)
    }
}

/// Errors of the worker runtime; [`WorkerError::is_retryable`] says whether
/// the same message may succeed later (so it must not be dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("participant database: {0}")]
    Sqlite(#[from] sqsaga_sqlite::SqliteError),
    /// Another adapter's database failed (PostgreSQL...): `database` says
    /// which (no password), `retryable` whether it may pass (unreachable,
    /// a serialisation failure, a deadlock).
    #[error("participant database {database}: {cause}")]
    Database { database: String, cause: String, retryable: bool },
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("command `{command}` is registered as {registered} but the message asks for {requested}")]
    PhaseMismatch { command: String, registered: &'static str, requested: &'static str },
    #[error("command `{0}` has no registered compensation")]
    NoCompensation(String),
    #[error("barrier row of saga {saga_id} step {step} is corrupt: {cause}")]
    CorruptBarrier { saga_id: String, step: String, cause: String },
    #[error("queue: {0}")]
    Queue(#[from] sqsaga_queue::QueueError),
}

impl WorkerError {
    /// Database and queue hiccups may pass; a message naming an unknown or
    /// mismatched command never will.
    pub fn is_retryable(&self) -> bool {
        match self {
            WorkerError::Sqlite(e) => e.is_retryable(),
            WorkerError::Database { retryable, .. } => *retryable,
            WorkerError::Queue(e) => e.is_retryable(),
            WorkerError::CorruptBarrier { .. }
            | WorkerError::UnknownCommand(_)
            | WorkerError::PhaseMismatch { .. }
            | WorkerError::NoCompensation(_) => false,
        }
    }

    /// The message itself is at fault (it names something this participant
    /// does not have): it belongs in the dead-letter queue, not redelivered.
    pub fn is_poison(&self) -> bool {
        matches!(
            self,
            WorkerError::UnknownCommand(_) | WorkerError::PhaseMismatch { .. } | WorkerError::NoCompensation(_)
        )
    }
}

pub(crate) fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Action => "action",
        Phase::Compensation => "compensation",
    }
}
