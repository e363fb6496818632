//! A participant: one service's own database (any adapter of the
//! [`ParticipantDb`] port) plus the handlers it registers, one per command.
//! `Participant` alone means the SQLite one (`Participant<SqliteDb>`).
//!
//! [`AnyParticipant`] is what the worker runtime drives: every
//! `Participant<D>` is one, so the runtime never knows which database a
//! service keeps.
//!
//! Knows nothing about queues or replies; the runtime (and tests) call
//! [`Participant::execute`] with a ready [`CommandContext`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqsaga_core::clock::{Clock, SystemClock};
use sqsaga_core::machine::Phase;
use sqsaga_sqlite::{GroupCommitter, SqliteError, Sync};

use crate::barrier::BarrierOutcome;
use crate::db::{Job, JobResult, ParticipantDb, Run};
use crate::sqlite::SqliteDb;
use crate::{CommandContext, WorkerError, phase_name};

/// One registered command.
struct Registered<H: ?Sized> {
    /// Handler contract the command belongs to (`inventory/v1`).
    contract: String,
    /// Whether it performs or undoes a step: the barrier treats them differently.
    phase: Phase,
    handler: Arc<H>,
}

/// The service's own database and its handlers.
pub struct Participant<D: ParticipantDb = SqliteDb> {
    db: D,
    /// By command name.
    commands: HashMap<String, Registered<D::Handler>>,
    /// Action command name to its compensation's, for seed-shaped messages
    /// that name the action and set `is_compensating`.
    compensations: HashMap<String, String>,
    /// "Now" for [`Participant::execute_batch`] (whether an action is past its
    /// latest start; barrier row times). The worker runtime passes its own
    /// (`WorkerOptions::clock`) to [`Participant::execute_batch_at`].
    clock: Arc<dyn Clock>,
    /// Slept by every handler inside its transaction ([`Participant::delay_handlers`]).
    delay: Duration,
}

impl Participant<SqliteDb> {
    /// Opens (or creates) the SQLite database at `path` and the barrier table in it.
    pub fn open(path: &Path, sync: Sync) -> Result<Self, WorkerError> {
        Participant::open_with_schema(path, sync, "")
    }

    /// Like [`Participant::open`], also running `schema` (the service's own
    /// `CREATE TABLE IF NOT EXISTS ...` statements) before the writer starts.
    pub fn open_with_schema(path: &Path, sync: Sync, schema: &str) -> Result<Self, WorkerError> {
        Ok(Participant::new(SqliteDb::open(path, sync, schema)?))
    }

    /// The database writer: for reads, for tests, and for counting commits.
    pub fn committer(&self) -> &GroupCommitter {
        self.db.committer()
    }

    /// Runs a read (or an administrative write) in the participant's database,
    /// serialised with the commands. Convenience over [`Participant::committer`].
    pub async fn query<T, F>(&self, f: F) -> Result<T, WorkerError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        match self.committer().run(f).await? {
            Ok(value) => Ok(value),
            Err(e) => Err(WorkerError::Sqlite(SqliteError::from(e))),
        }
    }
}

impl<D: ParticipantDb> Participant<D> {
    /// A participant over `db`, with no handlers yet.
    pub fn new(db: D) -> Self {
        Participant {
            db,
            commands: HashMap::new(),
            compensations: HashMap::new(),
            clock: Arc::new(SystemClock),
            delay: Duration::ZERO,
        }
    }

    /// The database adapter (tests and tools: reads, counters).
    pub fn db(&self) -> &D {
        &self.db
    }

    /// Registers the handler of `action` under `contract`, with its
    /// compensation `(name, handler)` when the step can be undone. Registering
    /// a name again replaces its handler.
    pub fn register(
        &mut self,
        contract: &str,
        action: &str,
        handler: Box<D::Handler>,
        compensation: Option<(&str, Box<D::Handler>)>,
    ) {
        self.commands.insert(
            action.to_string(),
            Registered { contract: contract.to_string(), phase: Phase::Action, handler: Arc::from(handler) },
        );
        match compensation {
            Some((name, handler)) => {
                self.commands.insert(
                    name.to_string(),
                    Registered {
                        contract: contract.to_string(),
                        phase: Phase::Compensation,
                        handler: Arc::from(handler),
                    },
                );
                self.compensations.insert(action.to_string(), name.to_string());
            }
            None => {
                self.compensations.remove(action);
            }
        }
    }

    /// Test and demo knob: every registered handler first sleeps `delay`,
    /// inside its local transaction (as slow work would, holding the
    /// participant's writer), so a test can stop a worker mid-step.
    pub fn delay_handlers(&mut self, delay: Duration) {
        self.delay = delay;
    }

    /// Drift drills and tests: unregisters every command of `contract`, as
    /// a build without it would have. Returns how many commands went.
    pub fn remove_contract(&mut self, contract: &str) -> usize {
        let before = self.commands.len();
        self.commands.retain(|_, r| r.contract != contract);
        let commands = &self.commands;
        self.compensations.retain(|action, _| commands.contains_key(action));
        before - self.commands.len()
    }

    /// The handler contracts implemented, sorted.
    pub fn contracts(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.commands.values().map(|r| &r.contract).collect();
        set.into_iter().cloned().collect()
    }

    /// The registered command names, sorted.
    pub fn commands(&self) -> Vec<String> {
        let mut names: Vec<String> = self.commands.keys().cloned().collect();
        names.sort();
        names
    }

    /// Contract and phase of a registered command.
    pub fn describe(&self, command: &str) -> Option<(&str, Phase)> {
        self.commands.get(command).map(|r| (r.contract.as_str(), r.phase))
    }

    /// The compensation registered for `action`, if any.
    pub fn compensation_of(&self, action: &str) -> Option<&str> {
        self.compensations.get(action).map(String::as_str)
    }

    /// Uses `clock` for commands run through [`Participant::execute`] and
    /// [`Participant::execute_batch`] (tests: a `ManualClock`).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Runs one command through the barrier. A transient handler error comes
    /// back as `Ok` with `Outcome::Transient` (nothing was recorded); `Err`
    /// means the command could not be run at all (unknown, or the database
    /// failed) and nothing is known to be durable.
    pub async fn execute(&self, ctx: CommandContext) -> Result<BarrierOutcome, WorkerError> {
        let mut results = self.execute_batch(vec![ctx]).await;
        match results.pop() {
            Some((result, _)) => result,
            None => Err(WorkerError::Sqlite(SqliteError::Closed)),
        }
    }

    /// Runs a received batch of commands through the database adapter (see
    /// [`ParticipantDb::run_batch`]). One result per command, in order, with
    /// the time its local transaction took; results are handed out only
    /// once durable. An unknown command fails alone.
    pub async fn execute_batch(&self, ctxs: Vec<CommandContext>) -> Vec<JobResult> {
        self.execute_batch_at(ctxs, self.clock.clone()).await
    }

    /// [`Participant::execute_batch`] with "now" read from `clock` when the
    /// command runs (the worker's clock, so one process has one notion of time).
    pub async fn execute_batch_at(&self, ctxs: Vec<CommandContext>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        let zero = Duration::ZERO;
        let mut slots: Vec<Option<JobResult>> = (0..ctxs.len()).map(|_| None).collect();
        let mut indexes = Vec::with_capacity(ctxs.len());
        let mut batch = Vec::with_capacity(ctxs.len());
        for (i, ctx) in ctxs.into_iter().enumerate() {
            match self.runner(&ctx) {
                Ok(run) => {
                    indexes.push(i);
                    batch.push(Job { ctx, run });
                }
                Err(e) => slots[i] = Some((Err(e), zero)),
            }
        }
        if !batch.is_empty() {
            let results = self.db.run_batch(batch, clock).await;
            for (i, result) in indexes.into_iter().zip(results) {
                slots[i] = Some(result);
            }
        }
        slots.into_iter().map(|s| s.unwrap_or((Err(WorkerError::Sqlite(SqliteError::Closed)), zero))).collect()
    }

    /// What runs `ctx`: the fence (no handler) or its registered handler.
    fn runner(&self, ctx: &CommandContext) -> Result<Run<D::Handler>, WorkerError> {
        if ctx.phase == Phase::Compensation && ctx.command == sqsaga_core::machine::FENCE_COMMAND {
            return Ok(Run::Fence);
        }
        let registered =
            self.commands.get(&ctx.command).ok_or_else(|| WorkerError::UnknownCommand(ctx.command.clone()))?;
        if registered.phase != ctx.phase {
            return Err(WorkerError::PhaseMismatch {
                command: ctx.command.clone(),
                registered: phase_name(registered.phase),
                requested: phase_name(ctx.phase),
            });
        }
        Ok(Run::Handler { handler: registered.handler.clone(), delay: self.delay })
    }

    /// Whether the database takes transactions now (readiness).
    pub async fn ping(&self) -> Result<(), WorkerError> {
        self.db.ping().await
    }
}

/// A participant as the worker runtime (and the readiness loop) sees it,
/// whatever its database: every `Participant<D>` is one.
#[async_trait]
pub trait AnyParticipant: Send + std::marker::Sync + 'static {
    /// The handler contracts implemented, sorted.
    fn contracts(&self) -> Vec<String>;
    /// Contract and phase of a registered command.
    fn describe(&self, command: &str) -> Option<(&str, Phase)>;
    /// The compensation registered for `action`, if any.
    fn compensation_of(&self, action: &str) -> Option<&str>;
    /// Where the database is (`sqlite:<path>`, `postgres://host:port/db`).
    fn database(&self) -> String;
    /// See [`Participant::execute_batch_at`].
    async fn execute_batch_at(&self, ctxs: Vec<CommandContext>, clock: Arc<dyn Clock>) -> Vec<JobResult>;
    /// Whether the database takes transactions now.
    async fn ping(&self) -> Result<(), WorkerError>;
}

#[async_trait]
impl<D: ParticipantDb> AnyParticipant for Participant<D> {
    fn contracts(&self) -> Vec<String> {
        Participant::contracts(self)
    }
    fn describe(&self, command: &str) -> Option<(&str, Phase)> {
        Participant::describe(self, command)
    }
    fn compensation_of(&self, action: &str) -> Option<&str> {
        Participant::compensation_of(self, action)
    }
    fn database(&self) -> String {
        self.db.describe()
    }
    async fn execute_batch_at(&self, ctxs: Vec<CommandContext>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        Participant::execute_batch_at(self, ctxs, clock).await
    }
    async fn ping(&self) -> Result<(), WorkerError> {
        Participant::ping(self).await
    }
}
