//! A participant: one service's own SQLite database plus the handlers it
//! registers, one per command. Every command runs through the barrier in a
//! savepoint of the database's group commit, so many commands share one fsync.
//!
//! Knows nothing about queues or replies; the runtime (and tests) call
//! [`Participant::execute`] with a ready [`CommandContext`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_sqlite::{GroupCommitter, SqliteError, Sync};

use crate::barrier::{self, BarrierOutcome, JobError};
use crate::{CommandContext, Handler, WorkerError, phase_name};

/// One registered command.
struct Registered {
    /// Handler contract the command belongs to (`inventory/v1`).
    contract: String,
    /// Whether it performs or undoes a step: the barrier treats them differently.
    phase: Phase,
    handler: Arc<dyn Handler>,
}

/// The service's own database and its handlers.
pub struct Participant {
    committer: GroupCommitter,
    /// By command name.
    commands: HashMap<String, Registered>,
    /// Action command name to its compensation's, for seed-shaped messages
    /// that name the action and set `is_compensating`.
    compensations: HashMap<String, String>,
}

impl Participant {
    /// Opens (or creates) the database at `path` and the barrier table in it.
    pub fn open(path: &Path, sync: Sync) -> Result<Self, WorkerError> {
        Participant::open_with_schema(path, sync, "")
    }

    /// Like [`Participant::open`], also running `schema` (the service's own
    /// `CREATE TABLE IF NOT EXISTS ...` statements) before the writer starts.
    pub fn open_with_schema(path: &Path, sync: Sync, schema: &str) -> Result<Self, WorkerError> {
        let conn = sqsaga_sqlite::open(path, sync)?;
        conn.execute_batch(barrier::SCHEMA).map_err(SqliteError::from)?;
        if !schema.trim().is_empty() {
            conn.execute_batch(schema).map_err(SqliteError::from)?;
        }
        let name =
            path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "participant".to_string());
        Ok(Participant {
            committer: GroupCommitter::start(&name, conn)?,
            commands: HashMap::new(),
            compensations: HashMap::new(),
        })
    }

    /// Registers the handler of `action` under `contract`, with its
    /// compensation `(name, handler)` when the step can be undone. Registering
    /// a name again replaces its handler.
    pub fn register(
        &mut self,
        contract: &str,
        action: &str,
        h: impl Handler,
        compensation: Option<(&str, Box<dyn Handler>)>,
    ) {
        self.commands.insert(
            action.to_string(),
            Registered { contract: contract.to_string(), phase: Phase::Action, handler: Arc::new(h) },
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
    pub fn delay_handlers(&mut self, delay: std::time::Duration) {
        for registered in self.commands.values_mut() {
            let inner = registered.handler.clone();
            registered.handler = Arc::new(move |tx: &rusqlite::Transaction<'_>, ctx: &CommandContext| {
                std::thread::sleep(delay);
                inner.handle(tx, ctx)
            });
        }
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

    /// The database writer: for reads, for tests, and for counting commits.
    pub fn committer(&self) -> &GroupCommitter {
        &self.committer
    }

    /// Runs one command through the barrier in the next group commit. A
    /// transient handler error comes back as `Ok` with `Outcome::Transient`
    /// (nothing was recorded); `Err` means the command could not be run at all
    /// (unknown, or the database failed) and nothing is known to be durable.
    pub async fn execute(&self, ctx: CommandContext) -> Result<BarrierOutcome, WorkerError> {
        let saga_id = ctx.saga_id.clone();
        let step = ctx.step.clone();
        let result = if ctx.phase == Phase::Compensation && ctx.command == sqsaga_core::machine::FENCE_COMMAND {
            self.committer.run(move |tx| barrier::fence(tx, &ctx)).await?
        } else {
            let registered =
                self.commands.get(&ctx.command).ok_or_else(|| WorkerError::UnknownCommand(ctx.command.clone()))?;
            if registered.phase != ctx.phase {
                return Err(WorkerError::PhaseMismatch {
                    command: ctx.command.clone(),
                    registered: phase_name(registered.phase),
                    requested: phase_name(ctx.phase),
                });
            }
            let handler = registered.handler.clone();
            self.committer.run(move |tx| barrier::run(tx, handler.as_ref(), &ctx)).await?
        };
        match result {
            Ok(outcome) => Ok(outcome),
            Err(JobError::Transient(error)) => Ok(BarrierOutcome {
                outcome: Outcome::Transient { error },
                duplicate: false,
                null_compensation: false,
                hanging: false,
            }),
            Err(JobError::Sql(e)) => Err(WorkerError::Sqlite(e)),
            Err(JobError::Corrupt(cause)) => Err(WorkerError::CorruptBarrier { saga_id, step, cause }),
        }
    }

    /// Runs a read (or an administrative write) in the participant's database,
    /// serialised with the commands. Convenience over [`Participant::committer`].
    pub async fn query<T, F>(&self, f: F) -> Result<T, WorkerError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        match self.committer.run(f).await? {
            Ok(value) => Ok(value),
            Err(e) => Err(WorkerError::Sqlite(SqliteError::from(e))),
        }
    }
}
