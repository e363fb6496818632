//! A participant: one service's own SQLite database plus the handlers it
//! registers, one per command. A received batch of commands runs through the
//! barrier as one job of the database's group commit, so many commands (and
//! several pollers' batches) share one fsync.
//!
//! Knows nothing about queues or replies; the runtime (and tests) call
//! [`Participant::execute`] with a ready [`CommandContext`].

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use sqsaga_core::clock::{Clock, SystemClock};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_sqlite::{GroupCommitter, Linger, SqliteError, Sync};

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

/// How one command of a batch runs inside the job.
enum Runner {
    Fence,
    Handler(Arc<dyn Handler>),
}

/// A barrier job's result as the runtime sees it: a transient handler error
/// is an outcome to reply (nothing was recorded), not a failure.
fn job_result(result: Result<BarrierOutcome, JobError>, ctx: &CommandContext) -> Result<BarrierOutcome, WorkerError> {
    match result {
        Ok(outcome) => Ok(outcome),
        Err(JobError::Transient(error)) => Ok(BarrierOutcome {
            outcome: Outcome::Transient { error },
            duplicate: false,
            null_compensation: false,
            hanging: false,
            expired: false,
        }),
        Err(JobError::Sql(e)) => Err(WorkerError::Sqlite(e)),
        Err(JobError::Corrupt(cause)) => {
            Err(WorkerError::CorruptBarrier { saga_id: ctx.saga_id.clone(), step: ctx.step.clone(), cause })
        }
    }
}

/// The service's own database and its handlers.
pub struct Participant {
    committer: GroupCommitter,
    /// By command name.
    commands: HashMap<String, Registered>,
    /// Action command name to its compensation's, for seed-shaped messages
    /// that name the action and set `is_compensating`.
    compensations: HashMap<String, String>,
    /// "Now" for [`Participant::execute_batch`] (whether an action is past its
    /// latest start; barrier row times). The worker runtime passes its own
    /// (`WorkerOptions::clock`) to [`Participant::execute_batch_at`].
    clock: Arc<dyn Clock>,
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
            committer: GroupCommitter::start(&name, conn, Linger::PARTICIPANT)?,
            commands: HashMap::new(),
            compensations: HashMap::new(),
            clock: Arc::new(SystemClock),
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

    /// Uses `clock` for commands run through [`Participant::execute`] and
    /// [`Participant::execute_batch`] (tests: a `ManualClock`).
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
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
        let mut results = self.execute_batch(vec![ctx]).await;
        match results.pop() {
            Some((result, _)) => result,
            None => Err(WorkerError::Sqlite(SqliteError::Closed)),
        }
    }

    /// Runs a received batch of commands as one job of the group commit,
    /// all made durable by one commit: a refused or transient command rolls
    /// back only its handler's writes (the handler's savepoint); a database
    /// error after a command wrote rolls back the batch, and every command
    /// in it reports the error (their messages come back). One
    /// result per command, in order, with the time its local transaction
    /// took; results are handed out only after the commit.
    pub async fn execute_batch(
        &self,
        ctxs: Vec<CommandContext>,
    ) -> Vec<(Result<BarrierOutcome, WorkerError>, std::time::Duration)> {
        self.execute_batch_at(ctxs, self.clock.clone()).await
    }

    /// [`Participant::execute_batch`] with "now" read from `clock` when the
    /// job runs (the worker's clock, so one process has one notion of time).
    pub async fn execute_batch_at(
        &self,
        ctxs: Vec<CommandContext>,
        clock: Arc<dyn Clock>,
    ) -> Vec<(Result<BarrierOutcome, WorkerError>, std::time::Duration)> {
        let zero = std::time::Duration::ZERO;
        let mut slots: Vec<Option<(Result<BarrierOutcome, WorkerError>, std::time::Duration)>> =
            (0..ctxs.len()).map(|_| None).collect();
        let mut runnable: Vec<(usize, Runner, CommandContext)> = Vec::with_capacity(ctxs.len());
        for (i, ctx) in ctxs.into_iter().enumerate() {
            match self.runner(&ctx) {
                Ok(runner) => runnable.push((i, runner, ctx)),
                Err(e) => slots[i] = Some((Err(e), zero)),
            }
        }
        if !runnable.is_empty() {
            let indexes: Vec<usize> = runnable.iter().map(|(i, _, _)| *i).collect();
            // No savepoint per command (SQLite would copy every page a command
            // touches into the sub-journal): the barrier writes nothing before
            // it can fail, and the handler has its own savepoint. A command
            // that fails after writing (a SQL error under the barrier) fails
            // the job, and the group commit rolls the whole batch back.
            let job = self.committer.run_in_batch(move |tx| -> Result<_, SqliteError> {
                let mut out = Vec::with_capacity(runnable.len());
                let now = clock.now();
                for (_, runner, ctx) in &runnable {
                    let started = std::time::Instant::now();
                    let before = tx.total_changes();
                    let result = match runner {
                        Runner::Fence => barrier::fence(tx, ctx, now),
                        Runner::Handler(handler) => barrier::run(tx, handler.as_ref(), ctx, now),
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
            });
            match job.await {
                Ok(Ok(results)) => {
                    for (i, result) in indexes.into_iter().zip(results) {
                        slots[i] = Some(result);
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    for i in indexes {
                        slots[i] = Some((Err(WorkerError::Sqlite(e.clone())), zero));
                    }
                }
            }
        }
        slots.into_iter().map(|s| s.unwrap_or((Err(WorkerError::Sqlite(SqliteError::Closed)), zero))).collect()
    }

    /// What runs `ctx`: the fence (no handler) or its registered handler.
    fn runner(&self, ctx: &CommandContext) -> Result<Runner, WorkerError> {
        if ctx.phase == Phase::Compensation && ctx.command == sqsaga_core::machine::FENCE_COMMAND {
            return Ok(Runner::Fence);
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
        Ok(Runner::Handler(registered.handler.clone()))
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
