//! The PostgreSQL adapter of the participant database port
//! ([`sqsaga_worker::db::ParticipantDb`]): a service keeps its business
//! tables and the barrier table in its own PostgreSQL database (or a schema
//! of a shared one), and every command runs in one local transaction with
//! its barrier row. Handlers implement [`PgHandler`] and receive the plain
//! `tokio_postgres::Transaction`, so business code stays plain SQL.
//!
//! **Driver: `tokio-postgres` with `deadpool-postgres`, not `sqlx`.** Both
//! are maintained and async; tokio-postgres is the lighter build (no proc
//! macros, no compile-time query checking that wants a database — or a
//! checked-in query cache — at build time, no second runtime abstraction),
//! which matters on a 2-core builder, and deadpool adds only a small pool
//! around it. Business code gets the driver's own transaction type either way.
//!
//! **The barrier, insert first.** A command first inserts its own barrier
//! row with `INSERT ... ON CONFLICT DO NOTHING` on the primary key (saga,
//! step, op), `outcome` NULL until the handler is done, then runs the
//! handler and writes the outcome into the row, all in one transaction.
//! `READ COMMITTED` (PostgreSQL's default) is enough because of that order:
//! an insert that meets a concurrent, uncommitted insert of the same key
//! waits for that transaction to end, then either inserts (it rolled back)
//! or does nothing (it committed). So when two replicas run the same command
//! at once, exactly one inserts and runs the handler; the other waits, finds
//! the row, and — each statement of a `READ COMMITTED` transaction taking a
//! fresh snapshot — reads the committed outcome and answers with it. A
//! compensation inserts its own row first, then the action's row as
//! `prevented`: if that insert succeeds the action never ran and now never
//! will (a late action waits on it, then finds `prevented`); if it meets a
//! running action, it waits for it and then reads what it did. No decision
//! rests on a read of a row the transaction did not first try to insert, so
//! no stronger isolation (and no serialisation failures to retry) is needed.
//! A NULL outcome is never visible outside its transaction.
//!
//! **Grouped commits: one transaction per batch, one savepoint per
//! command.** A received batch (up to 10 commands) runs on one pooled
//! connection in one transaction, so it pays one commit (one WAL flush)
//! instead of one per command. Each command runs in its own savepoint
//! (`sqsaga_command`), with the handler in a nested one as before: a
//! transient error or a panic rolls back to the command's savepoint, barrier
//! row included, and costs only that command; a business refusal keeps its
//! barrier row but none of the handler's writes. Why the barrier stays
//! exact: within the transaction the commands run one after another, each
//! statement under `READ COMMITTED` seeing what the earlier commands of the
//! group wrote, so the group decides exactly as the same commands run in
//! sequence would (a duplicate in the same batch is answered from the row
//! its twin just wrote); to every other transaction the group's rows appear
//! together at the commit, and the insert-first argument above holds for
//! each of them, since a sibling meeting one of them waits for the whole
//! group to end. Results are handed out only after that commit: a failure
//! anywhere before it (or of the commit itself) rolls everything back and
//! nothing of the group is durable.
//!
//! **Batches of actions, claimed and settled at once.** The usual batch is
//! actions, each on a barrier key of its own; no command of it can see
//! another's row, so the group needs no savepoint per command. One
//! `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING RETURNING`
//! claims every row (a key it does not return already had a committed row:
//! that command is answered from it), each handler runs in its savepoint
//! pipelined with its first statement, and the outcomes are written (and
//! the rows of transient failures deleted) by one primary-key statement
//! each, all pipelined in one round trip before the commit: about one
//! round trip per command instead of three. A batch with a compensation, a fence or two commands on one key
//! takes the savepoint-per-command path above. The test
//! `random_batches_decide_exactly_as_the_same_commands_one_transaction_each`
//! holds both paths to the outcomes, barrier rows and effects of the same
//! commands run one transaction each.
//!
//! Two replicas with overlapping batches could wait on each other's barrier
//! rows; each group therefore claims its rows in barrier-key order (saga,
//! step; byte order, `COLLATE "C"` in the batch claim), so their claims
//! queue instead of crossing. Locks a handler takes
//! on business rows can still cross; PostgreSQL then ends one group with a
//! deadlock error. That group (like any group whose transaction fails, the
//! commit included) is rolled back whole and its commands are run again one
//! transaction each, as before grouping, so a failure costs only the
//! command it belongs to; on a broken connection each command fails alone
//! and its message comes back. [`PostgresDb::with_grouping`] turns grouping
//! off (one transaction per command), which the benchmark compares against.
//!
//! [`scratch`] creates and drops throw-away databases for tests and demos.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::FutureExt;
use serde_json::Value;
use sqsaga_config::redact_url;
use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;
use sqsaga_core::machine::Phase;
use sqsaga_worker::barrier::{self, BarrierOutcome, Compensate, LookupError, Recorded, Settle};
use sqsaga_worker::db::{Job, JobResult, ParticipantDb, Run};
use sqsaga_worker::{CommandContext, HandlerError, Participant, WorkerError};
use tokio_postgres::{GenericClient, NoTls, Transaction};

pub mod scratch;

/// The barrier table, created in the participant's schema by [`PostgresDb::connect`].
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sqsaga_barrier (
    saga_id    TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    op         TEXT   NOT NULL CHECK (op IN ('action', 'compensation')),
    -- NULL only inside the transaction that inserted the row.
    outcome    TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (saga_id, step, op)
);";

/// Claims a command's barrier row (see the module header).
const CLAIM: &str = "INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT DO NOTHING";

/// Writes the outcome into a row this transaction claimed.
const SETTLE: &str = "UPDATE sqsaga_barrier SET outcome = $4 WHERE saga_id = $1 AND step = $2 AND op = $3";

/// Claims the action rows of a whole batch in one statement, in byte order
/// of (saga, step) — the order `run_grouped` claims in, so every replica
/// takes its locks in one order — and returns the keys it inserted; a key
/// left out already had a committed row (its insert waited for it).
const CLAIM_ACTIONS: &str = "INSERT INTO sqsaga_barrier (saga_id, step, op, outcome, created_at)
     SELECT s, t, 'action', NULL, $3 FROM unnest($1::text[], $2::text[]) AS u(s, t)
     ORDER BY s COLLATE \"C\", t COLLATE \"C\"
     ON CONFLICT DO NOTHING RETURNING saga_id, step";

/// Takes back the claimed action row of a transient failure in a batch.
const UNCLAIM: &str = "DELETE FROM sqsaga_barrier WHERE saga_id = $1 AND step = $2 AND op = 'action'";

/// How long opening a connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A participant over PostgreSQL.
pub type PgParticipant = Participant<PostgresDb>;

/// One command's business logic on PostgreSQL: runs inside the command's
/// transaction, together with its barrier row. Return
/// [`HandlerError::Transient`] for database errors (the command is rolled
/// back and retried) and [`HandlerError::Refused`] for business refusals.
///
/// ```no_run
/// use async_trait::async_trait;
/// use serde_json::Value;
/// use sqsaga_postgres::{PgHandler, PostgresDb};
/// use sqsaga_worker::{CommandContext, HandlerError, Participant};
/// use tokio_postgres::Transaction;
///
/// #[derive(serde::Deserialize)]
/// struct Parcel { parcel_id: String }
///
/// struct Book;
///
/// #[async_trait]
/// impl PgHandler for Book {
///     async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
///         let parcel: Parcel = ctx.input_as()?;
///         tx.execute("INSERT INTO shipments (parcel_id, status) VALUES ($1, 'booked')", &[&parcel.parcel_id])
///             .await
///             .map_err(|e| HandlerError::Transient(e.to_string()))?;
///         sqsaga_worker::output(&serde_json::json!({"booked": parcel.parcel_id}))
///     }
/// }
///
/// # async fn open() -> Result<(), sqsaga_worker::WorkerError> {
/// let setup = "CREATE TABLE IF NOT EXISTS shipments (parcel_id TEXT PRIMARY KEY, status TEXT NOT NULL)";
/// let db = PostgresDb::connect("postgres://app@db:5432/shipping", Some("shipping"), setup, 8).await?;
/// let mut p = Participant::new(db);
/// p.register("shipping/v1", "shipping.book", Box::new(Book), None);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait PgHandler: Send + Sync + 'static {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError>;
}

/// A participant's PostgreSQL database: a connection pool, every connection
/// in the participant's schema.
pub struct PostgresDb {
    pool: Pool,
    /// `postgres://host:port/db` (and the schema), no password.
    describe: String,
    /// Whether a batch shares one transaction (the default) or runs one
    /// transaction per command.
    grouped: bool,
}

impl PostgresDb {
    /// Connects to `url` (`postgres://user@host:port/db`), with every
    /// connection's `search_path` set to `schema` when given (created if
    /// missing), and runs the barrier table and `setup` (the service's own
    /// `CREATE TABLE IF NOT EXISTS ...`) in it, serialised with any sibling
    /// starting at the same moment. `pool_size` bounds concurrent commands.
    pub async fn connect(url: &str, schema: Option<&str>, setup: &str, pool_size: usize) -> Result<Self, WorkerError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| WorkerError::Database {
            database: redact_url(url),
            cause: format!("not a PostgreSQL URL: {e}"),
            retryable: false,
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if let Some(schema) = schema {
            config.options(format!("-c search_path={schema}"));
        }
        let describe = match schema {
            Some(schema) => format!("{} (schema {schema})", redact_url(url)),
            None => redact_url(url),
        };
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| WorkerError::Database {
                database: describe.clone(),
                cause: e.to_string(),
                retryable: false,
            })?;
        let db = PostgresDb { pool, describe, grouped: true };
        let mut client = db.pool.get().await.map_err(|e| db.pool_error(e))?;
        let tx = client.transaction().await.map_err(|e| db.error(e))?;
        // Siblings starting together would race on CREATE ... IF NOT EXISTS.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('sqsaga-participant-setup'))", &[])
            .await
            .map_err(|e| db.error(e))?;
        if let Some(schema) = schema {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema)))
                .await
                .map_err(|e| db.error(e))?;
        }
        tx.batch_execute(SCHEMA).await.map_err(|e| db.error(e))?;
        if !setup.trim().is_empty() {
            tx.batch_execute(setup).await.map_err(|e| db.error(e))?;
        }
        tx.commit().await.map_err(|e| db.error(e))?;
        Ok(db)
    }

    /// Runs each batch in one transaction (`true`, the default) or each
    /// command in its own (`false`: what the benchmark compares against).
    pub fn with_grouping(mut self, grouped: bool) -> Self {
        self.grouped = grouped;
        self
    }

    /// The pool, for reads and administrative writes (tests, the demo's
    /// loader and invariant check).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn error(&self, e: tokio_postgres::Error) -> WorkerError {
        db_error(&self.describe, &e)
    }

    fn pool_error(&self, e: deadpool_postgres::PoolError) -> WorkerError {
        // No connection could be had (refused, the database not accepting
        // connections, a timeout): whatever the SQLSTATE, that may pass.
        let cause = match e {
            deadpool_postgres::PoolError::Backend(e) => match db_error(&self.describe, &e) {
                WorkerError::Database { cause, .. } => cause,
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        WorkerError::Database { database: self.describe.clone(), cause, retryable: true }
    }
}

/// A driver error as the worker sees it: retryable when it may pass (the
/// connection, the server shutting down or out of resources, a deadlock or
/// serialisation failure); the SQLSTATE is named.
pub fn db_error(database: &str, e: &tokio_postgres::Error) -> WorkerError {
    let code = e.code().map(|c| c.code().to_string());
    let retryable = e.is_closed()
        || match code.as_deref() {
            // No SQLSTATE: an IO or protocol error on the connection.
            None => true,
            Some(c) => {
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57") || c == "40001" || c == "40P01"
            }
        };
    let cause = match (&code, e.as_db_error()) {
        (Some(code), Some(db)) => format!("{} (SQLSTATE {code})", db.message()),
        _ => e.to_string(),
    };
    WorkerError::Database { database: database.to_string(), cause, retryable }
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl ParticipantDb for PostgresDb {
    type Handler = dyn PgHandler;

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn run_batch(&self, batch: Vec<Job<dyn PgHandler>>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        let mut client = match self.pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let e = self.pool_error(e);
                return batch.iter().map(|_| (Err(e.clone()), Duration::ZERO)).collect();
            }
        };
        if self.grouped && batch.len() > 1 {
            let grouped = if actions_only(&batch) {
                self.run_actions(&mut client, &batch, clock.as_ref()).await
            } else {
                self.run_grouped(&mut client, &batch, clock.as_ref()).await
            };
            match grouped {
                Ok(results) => return results,
                Err(e) => {
                    // Nothing of the group is durable: it rolled back whole
                    // (a deadlock between replicas' groups, a commit refused,
                    // a lost connection). Each command runs alone instead; on
                    // a broken connection each fails alone, and its message
                    // comes back.
                    tracing::debug!(commands = batch.len(), error = %e, "Grouped transaction failed; running its commands one by one.");
                }
            }
        }
        let mut out = Vec::with_capacity(batch.len());
        for job in &batch {
            let started = Instant::now();
            let result = self.run_one(&mut client, job, clock.now()).await;
            out.push((result, started.elapsed()));
        }
        out
    }

    async fn ping(&self) -> Result<(), WorkerError> {
        let client = self.pool.get().await.map_err(|e| self.pool_error(e))?;
        client.simple_query("SELECT 1").await.map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// What the barrier decided for one command's transaction (or savepoint).
enum Decision {
    /// Commit (release the savepoint), then answer.
    Commit(BarrierOutcome),
    /// Roll back (nothing recorded), then answer.
    Rollback(BarrierOutcome),
}

/// The transaction a command runs in: deadpool's, for its statement cache.
type Tx<'a> = deadpool_postgres::Transaction<'a>;

impl PostgresDb {
    /// One command in its own transaction.
    async fn run_one(
        &self,
        client: &mut deadpool_postgres::Client,
        job: &Job<dyn PgHandler>,
        now: Millis,
    ) -> Result<BarrierOutcome, WorkerError> {
        let tx = client.transaction().await.map_err(|e| self.error(e))?;
        match self.decide(&tx, job, now).await {
            Ok(Decision::Commit(outcome)) => {
                tx.commit().await.map_err(|e| self.error(e))?;
                Ok(outcome)
            }
            Ok(Decision::Rollback(outcome)) => {
                // A failed rollback still ends the transaction (the
                // connection is dropped from the pool if it is broken).
                if let Err(e) = tx.rollback().await {
                    tracing::debug!(error = %e, "Rollback failed; the transaction ends with its connection.");
                }
                Ok(outcome)
            }
            Err(e) => Err(e),
        }
    }

    /// The whole batch in one transaction, each command in its own
    /// savepoint, in barrier-key order; results only after the commit.
    /// `Err` (a database error anywhere, the commit included) means the
    /// transaction rolled back whole and nothing is durable.
    async fn run_grouped(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[Job<dyn PgHandler>],
        clock: &dyn Clock,
    ) -> Result<Vec<JobResult>, WorkerError> {
        // Replicas whose batches overlap claim barrier rows in one global
        // order, so their groups queue behind each other instead of
        // deadlocking. Stable: commands of one key keep their order.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&batch[a].ctx, &batch[b].ctx);
            (&a.saga_id, &a.step).cmp(&(&b.saga_id, &b.step))
        });
        let tx = client.transaction().await.map_err(|e| self.error(e))?;
        let mut decided: Vec<Option<(BarrierOutcome, Duration)>> = (0..batch.len()).map(|_| None).collect();
        let ran = async {
            // Statements are pipelined where the order alone is enough:
            // the savepoint goes out with the command's claim, and the
            // release of the previous command's savepoint with both (the
            // commit releases the last one).
            let mut open = false;
            for &i in &order {
                let started = Instant::now();
                let begin = if open {
                    "RELEASE SAVEPOINT sqsaga_command; SAVEPOINT sqsaga_command"
                } else {
                    "SAVEPOINT sqsaga_command"
                };
                let (_, decided_now) =
                    tokio::try_join!(async { tx.batch_execute(begin).await.map_err(|e| self.error(e)) }, async {
                        self.decide(&tx, &batch[i], clock.now()).await
                    })?;
                let outcome = match decided_now {
                    Decision::Commit(outcome) => {
                        open = true;
                        outcome
                    }
                    Decision::Rollback(outcome) => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT sqsaga_command; RELEASE SAVEPOINT sqsaga_command")
                            .await
                            .map_err(|e| self.error(e))?;
                        open = false;
                        outcome
                    }
                };
                decided[i] = Some((outcome, started.elapsed()));
            }
            Ok::<(), WorkerError>(())
        }
        .await;
        if let Err(e) = ran {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(error = %rollback, "Rollback failed; the transaction ends with its connection.");
            }
            return Err(e);
        }
        let commit = Instant::now();
        tx.commit().await.map_err(|e| self.error(e))?;
        let commit = commit.elapsed();
        // Every command was decided (the loop visited every index).
        Ok(decided
            .into_iter()
            .map(|d| match d {
                Some((outcome, took)) => (Ok(outcome), took + commit),
                None => (
                    Err(WorkerError::Database {
                        database: self.describe.clone(),
                        cause: "a command of the group was not run".into(),
                        retryable: true,
                    }),
                    commit,
                ),
            })
            .collect())
    }

    /// A batch of actions with distinct barrier keys (the common batch):
    /// one statement claims every row, each handler runs in a savepoint
    /// pipelined with its first statement, and the outcomes are settled (and
    /// transient failures' rows taken back) in one pipelined round trip
    /// before the commit — about one round trip per command instead of three.
    /// Decides exactly as [`PostgresDb::run_grouped`] would: no command of
    /// the batch can see another's row, as no two share a key.
    async fn run_actions(
        &self,
        client: &mut deadpool_postgres::Client,
        batch: &[Job<dyn PgHandler>],
        clock: &dyn Clock,
    ) -> Result<Vec<JobResult>, WorkerError> {
        let started = Instant::now();
        let tx = client.transaction().await.map_err(|e| self.error(e))?;
        let ran = async {
            let sagas: Vec<&str> = batch.iter().map(|j| j.ctx.saga_id.as_str()).collect();
            let steps: Vec<&str> = batch.iter().map(|j| j.ctx.step.as_str()).collect();
            let now = i64::try_from(clock.now()).unwrap_or(i64::MAX);
            let claim = tx.prepare_cached(CLAIM_ACTIONS).await.map_err(|e| self.error(e))?;
            let claimed: std::collections::HashSet<(String, String)> = tx
                .query(&claim, &[&sagas, &steps, &now])
                .await
                .map_err(|e| self.error(e))?
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            let claim_took = started.elapsed();
            let mut results = Vec::with_capacity(batch.len());
            // The rows to settle (index, stored outcome) and to take back.
            let (mut settle, mut unclaim): (Vec<(usize, String)>, Vec<usize>) = (Vec::new(), Vec::new());
            let mut open = false;
            for (i, job) in batch.iter().enumerate() {
                let began = Instant::now();
                let ctx = &job.ctx;
                let outcome = if !claimed.contains(&(ctx.saga_id.clone(), ctx.step.clone())) {
                    let recorded = self.existing(&tx, ctx, Phase::Action).await?;
                    BarrierOutcome::answered(&recorded, Phase::Action)
                } else if let Some((recorded, outcome)) = barrier::expired_action(ctx, clock.now()) {
                    settle.push((i, recorded.encode()));
                    outcome
                } else {
                    let Run::Handler { handler, delay } = &job.run else {
                        return Err(self.corrupt(ctx, "a fence in a batch of actions".into()));
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(*delay).await;
                    }
                    let begin = if open {
                        "RELEASE SAVEPOINT sqsaga_handler; SAVEPOINT sqsaga_handler"
                    } else {
                        "SAVEPOINT sqsaga_handler"
                    };
                    let result = self.call_in(&tx, begin, handler.as_ref(), ctx).await?;
                    open = result.is_ok();
                    match barrier::after_action(result) {
                        Settle::Record(recorded, outcome) => {
                            settle.push((i, recorded.encode()));
                            outcome
                        }
                        Settle::Discard(outcome) => {
                            unclaim.push(i);
                            outcome
                        }
                    }
                };
                results.push((outcome, began.elapsed()));
            }
            // Every outcome, and every row to take back, in one round trip:
            // one statement per row (a primary-key lookup each), pipelined.
            // (One `UPDATE ... FROM unnest(...)` would be a join the planner
            // may hash over the whole barrier table, a cost growing with it.)
            let tx = &tx;
            let settling = settle.iter().map(|(i, outcome)| async move {
                let ctx = &batch[*i].ctx;
                let statement = tx.prepare_cached(SETTLE).await.map_err(|e| self.error(e))?;
                let op = barrier::op_name(Phase::Action);
                tx.execute(&statement, &[&ctx.saga_id, &ctx.step, &op, outcome]).await.map_err(|e| self.error(e))
            });
            let unclaiming = unclaim.iter().map(|i| async move {
                let ctx = &batch[*i].ctx;
                let statement = tx.prepare_cached(UNCLAIM).await.map_err(|e| self.error(e))?;
                tx.execute(&statement, &[&ctx.saga_id, &ctx.step]).await.map_err(|e| self.error(e))
            });
            tokio::try_join!(
                futures_util::future::try_join_all(settling),
                futures_util::future::try_join_all(unclaiming)
            )?;
            Ok::<_, WorkerError>((results, claim_took))
        }
        .await;
        let (results, claim_took) = match ran {
            Ok(ran) => ran,
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "Rollback failed; the transaction ends with its connection.");
                }
                return Err(e);
            }
        };
        let commit = Instant::now();
        tx.commit().await.map_err(|e| self.error(e))?;
        let shared = claim_took + commit.elapsed();
        Ok(results.into_iter().map(|(outcome, took)| (Ok(outcome), took + shared)).collect())
    }

    /// What the barrier (and the handler) decide for one command, inside `tx`.
    async fn decide(&self, tx: &Tx<'_>, job: &Job<dyn PgHandler>, now: Millis) -> Result<Decision, WorkerError> {
        let ctx = &job.ctx;
        match &job.run {
            Run::Fence => self.fence(tx, ctx, now).await,
            Run::Handler { handler, delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                match ctx.phase {
                    Phase::Action => self.action(tx, handler.as_ref(), ctx, now).await,
                    Phase::Compensation => self.compensation(tx, handler.as_ref(), ctx, now).await,
                }
            }
        }
    }

    /// Inserts the (saga, step, op) row unless it exists; `true` if inserted.
    async fn claim(
        &self,
        tx: &Tx<'_>,
        ctx: &CommandContext,
        op: Phase,
        outcome: Option<&Recorded>,
        now: Millis,
    ) -> Result<bool, WorkerError> {
        let statement = tx.prepare_cached(CLAIM).await.map_err(|e| self.error(e))?;
        let n = tx
            .execute(
                &statement,
                &[
                    &ctx.saga_id,
                    &ctx.step,
                    &barrier::op_name(op),
                    &outcome.map(Recorded::encode),
                    &i64::try_from(now).unwrap_or(i64::MAX),
                ],
            )
            .await
            .map_err(|e| self.error(e))?;
        Ok(n == 1)
    }

    /// Writes the outcome into the row this transaction claimed.
    async fn settle(
        &self,
        tx: &Tx<'_>,
        ctx: &CommandContext,
        op: Phase,
        outcome: &Recorded,
    ) -> Result<(), WorkerError> {
        let statement = tx.prepare_cached(SETTLE).await.map_err(|e| self.error(e))?;
        tx.execute(&statement, &[&ctx.saga_id, &ctx.step, &barrier::op_name(op), &outcome.encode()])
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// The committed row of `op`, which a failed claim proved exists.
    async fn existing(&self, tx: &Tx<'_>, ctx: &CommandContext, op: Phase) -> Result<Recorded, WorkerError> {
        match lookup(&**tx, &ctx.saga_id, &ctx.step, op).await {
            Ok(Some(recorded)) => Ok(recorded),
            Ok(None) => Err(self.corrupt(ctx, "the row that blocked the insert is gone or has no outcome".into())),
            Err(LookupError::Sql(cause)) => {
                Err(WorkerError::Database { database: self.describe.clone(), cause, retryable: true })
            }
            Err(LookupError::Corrupt { cause, .. }) => Err(self.corrupt(ctx, cause)),
        }
    }

    fn corrupt(&self, ctx: &CommandContext, cause: String) -> WorkerError {
        WorkerError::CorruptBarrier { saga_id: ctx.saga_id.clone(), step: ctx.step.clone(), cause }
    }

    /// Runs the handler in a savepoint: `Ok(Ok(output))`, or its error with
    /// its writes rolled back (the barrier row stays).
    async fn call(
        &self,
        tx: &Tx<'_>,
        handler: &dyn PgHandler,
        ctx: &CommandContext,
    ) -> Result<Result<Value, HandlerError>, WorkerError> {
        self.call_in(tx, "SAVEPOINT sqsaga_handler", handler, ctx).await
    }

    /// [`PostgresDb::call`] with the statements that open its savepoint
    /// (`begin`), so a batch can release the previous handler's in the same
    /// round trip.
    async fn call_in(
        &self,
        tx: &Tx<'_>,
        begin: &str,
        handler: &dyn PgHandler,
        ctx: &CommandContext,
    ) -> Result<Result<Value, HandlerError>, WorkerError> {
        // The savepoint goes out pipelined ahead of the handler's first
        // statement; if it failed, so did everything after it.
        let (saved, result) = tokio::join!(
            async { tx.batch_execute(begin).await.map_err(|e| self.error(e)) },
            AssertUnwindSafe(handler.handle(tx, ctx)).catch_unwind()
        );
        saved?;
        let result = match result {
            Ok(r) => r,
            Err(panic) => Err(HandlerError::Transient(format!(
                "handler `{}` panicked: {}",
                ctx.command,
                barrier::panic_message(panic.as_ref())
            ))),
        };
        // A handler that succeeded keeps its savepoint open, which costs
        // nothing: the command's end (commit, or the release of the
        // command's own savepoint in a group) ends it too.
        if result.is_err() {
            tx.batch_execute("ROLLBACK TO SAVEPOINT sqsaga_handler; RELEASE SAVEPOINT sqsaga_handler")
                .await
                .map_err(|e| self.error(e))?;
        }
        Ok(result)
    }

    async fn action(
        &self,
        tx: &Tx<'_>,
        handler: &dyn PgHandler,
        ctx: &CommandContext,
        now: Millis,
    ) -> Result<Decision, WorkerError> {
        if !self.claim(tx, ctx, Phase::Action, None, now).await? {
            // After the claim: an action that already ran answers with what
            // it did, however late its redelivery comes.
            let recorded = self.existing(tx, ctx, Phase::Action).await?;
            return Ok(Decision::Commit(BarrierOutcome::answered(&recorded, Phase::Action)));
        }
        if let Some((recorded, outcome)) = barrier::expired_action(ctx, now) {
            self.settle(tx, ctx, Phase::Action, &recorded).await?;
            return Ok(Decision::Commit(outcome));
        }
        let result = self.call(tx, handler, ctx).await?;
        self.decided(tx, ctx, Phase::Action, barrier::after_action(result)).await
    }

    /// Writes what the barrier decided after a handler ran into the claimed
    /// row; a discarded outcome rolls the row back with the rest.
    async fn decided(
        &self,
        tx: &Tx<'_>,
        ctx: &CommandContext,
        op: Phase,
        settle: Settle,
    ) -> Result<Decision, WorkerError> {
        match settle {
            Settle::Record(recorded, outcome) => {
                self.settle(tx, ctx, op, &recorded).await?;
                Ok(Decision::Commit(outcome))
            }
            Settle::Discard(outcome) => Ok(Decision::Rollback(outcome)),
        }
    }

    /// For a compensation or a fence whose own row this transaction
    /// claimed: blocks the action if it never ran (`None`), else returns
    /// what it did.
    async fn block_action(
        &self,
        tx: &Tx<'_>,
        ctx: &CommandContext,
        now: Millis,
    ) -> Result<Option<Recorded>, WorkerError> {
        if self.claim(tx, ctx, Phase::Action, Some(&Recorded::Prevented), now).await? {
            return Ok(None);
        }
        Ok(Some(self.existing(tx, ctx, Phase::Action).await?))
    }

    async fn compensation(
        &self,
        tx: &Tx<'_>,
        handler: &dyn PgHandler,
        ctx: &CommandContext,
        now: Millis,
    ) -> Result<Decision, WorkerError> {
        if !self.claim(tx, ctx, Phase::Compensation, None, now).await? {
            let recorded = self.existing(tx, ctx, Phase::Compensation).await?;
            return Ok(Decision::Commit(BarrierOutcome::answered(&recorded, Phase::Compensation)));
        }
        let action = self.block_action(tx, ctx, now).await?;
        match barrier::compensation_plan(action.as_ref()) {
            Compensate::Nothing(recorded, outcome) => {
                self.settle(tx, ctx, Phase::Compensation, &recorded).await?;
                Ok(Decision::Commit(outcome))
            }
            Compensate::Undo => {
                let result = self.call(tx, handler, ctx).await?;
                self.decided(tx, ctx, Phase::Compensation, barrier::after_compensation(result)).await
            }
        }
    }

    async fn fence(&self, tx: &Tx<'_>, ctx: &CommandContext, now: Millis) -> Result<Decision, WorkerError> {
        if !self.claim(tx, ctx, Phase::Compensation, None, now).await? {
            let recorded = self.existing(tx, ctx, Phase::Compensation).await?;
            return Ok(Decision::Commit(BarrierOutcome::answered(&recorded, Phase::Compensation)));
        }
        let action = self.block_action(tx, ctx, now).await?;
        let (recorded, outcome) = barrier::fence_plan(action);
        self.settle(tx, ctx, Phase::Compensation, &recorded).await?;
        Ok(Decision::Commit(outcome))
    }
}

/// Whether `batch` is actions only, each with a barrier key of its own:
/// then no command's decision depends on another's row, and
/// [`PostgresDb::run_actions`] can claim and settle them all at once.
fn actions_only(batch: &[Job<dyn PgHandler>]) -> bool {
    let mut keys = std::collections::HashSet::with_capacity(batch.len());
    batch.iter().all(|job| {
        matches!(job.run, Run::Handler { .. })
            && job.ctx.phase == Phase::Action
            && keys.insert((job.ctx.saga_id.as_str(), job.ctx.step.as_str()))
    })
}

/// Reads the committed row for (saga, step, op), if any (a row whose
/// outcome is still NULL counts as none).
pub async fn lookup(
    client: &impl GenericClient,
    saga_id: &str,
    step: &str,
    op: Phase,
) -> Result<Option<Recorded>, LookupError> {
    let row = client
        .query_opt(
            "SELECT outcome FROM sqsaga_barrier WHERE saga_id = $1 AND step = $2 AND op = $3",
            &[&saga_id, &step, &barrier::op_name(op)],
        )
        .await
        .map_err(|e| LookupError::Sql(e.to_string()))?;
    let Some(row) = row else { return Ok(None) };
    let text: Option<String> = row.try_get(0).map_err(|e| LookupError::Sql(e.to_string()))?;
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
/// need it (say, the reservation to release).
pub async fn action_output(
    client: &impl GenericClient,
    saga_id: &str,
    step: &str,
) -> Result<Option<Value>, LookupError> {
    Ok(lookup(client, saga_id, step, Phase::Action).await?.and_then(Recorded::output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_ident_doubles_quotes() {
        assert_eq!(quote_ident("inventory"), "\"inventory\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
