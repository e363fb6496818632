//! `sqsaga bench participant --db postgres`: what one participant worker
//! gets out of a PostgreSQL server, in steps/s and server transactions per
//! step, against the same server's rate of single-row update transactions
//! (pgbench) at the same client count, in the same run.
//!
//! **What runs.** One worker (the real worker runtime, `clients` pollers,
//! each up to 10 messages in flight) over [`PostgresDb`] with a pool of
//! `clients` connections, on a scratch database of the server (dropped
//! afterwards). Its queue is sqsaga-testing's in-memory [`MemoryQueue`], so
//! the participant database is what is measured: no queue I/O competes for
//! the server's disk, and a feeder keeps a few hundred commands waiting.
//! Each command is one action, `bench.update`: a single-row update of a
//! 100 000-row accounts table (pgbench's shape: `abalance = abalance + 1`
//! on a spread account id) plus the barrier row. The run goes twice when
//! asked, grouped (one transaction per received batch, the adapter's
//! default) and one transaction per command.
//!
//! **What is counted.** Steps: commands the worker took to the end (run,
//! replied, deleted). Transactions: the scratch database's `xact_commit`
//! and `xact_rollback` in `pg_stat_database` across the phase, read once
//! every connection to it has closed (a backend flushes its counts when it
//! exits); the phase's setup transaction (barrier table) is among them.
//! After each phase every account update and barrier row is checked: one
//! per step, and one succeeded reply per step.
//!
//! **The yardstick.** `pgbench -n -c N -j N -T secs -f <one UPDATE>` on a
//! second scratch database initialised by `pgbench -i` (scale 1, 100 000
//! accounts), its `tps` parsed; where pgbench is not installed, the same
//! loop in this process (N connections, one autocommitted update each).
//! The target is steps/s ≥ 2× that rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Value, json};
use sqsaga_core::clock::{Clock, SystemClock};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_order::run::round;
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_postgres::{PgHandler, PostgresDb};
use sqsaga_protocol::{Command, Envelope};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec};
use sqsaga_testing::queue::MemoryQueue;
use sqsaga_worker::{CommandContext, HandlerError, Participant, Worker, WorkerOptions};
use tokio_postgres::types::Type;
use tokio_postgres::{NoTls, Transaction};

use crate::BenchError;

/// The server the benchmark uses unless told otherwise: the machine's own.
pub const DEFAULT_URL: &str = sqsaga_postgres::scratch::DEFAULT_SERVER;
/// Accounts in the table the handler updates (pgbench's scale 1).
pub const ACCOUNTS: i32 = 100_000;
/// What the benchmark's steps/s must reach, as a multiple of the single-transaction rate.
pub const TARGET: f64 = 2.0;
/// Commands kept waiting in the queue while a phase runs.
const BACKLOG: usize = 500;
const QUEUE: &str = "bench";
const REPLIES: &str = "replies";
const CONTRACT: &str = "bench/v1";
const COMMAND: &str = "bench.update";

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchParticipantOptions {
    /// The participant database's technology; only `postgres` here
    /// (SQLite participants are measured by `bench embedded`).
    pub db: String,
    /// A URL to any database of the server, by a user who may create
    /// databases; scratch databases are made and dropped beside it.
    pub url: String,
    /// Worker pollers and pool connections; pgbench's clients.
    pub clients: usize,
    /// Steps per phase.
    pub steps: usize,
    /// How long pgbench runs.
    pub pgbench_secs: u64,
    /// Also run one transaction per command, for comparison.
    pub per_command: bool,
}

impl Default for BenchParticipantOptions {
    fn default() -> Self {
        BenchParticipantOptions {
            db: "postgres".to_string(),
            url: DEFAULT_URL.to_string(),
            clients: 2,
            steps: 20_000,
            pgbench_secs: 10,
            per_command: true,
        }
    }
}

/// One phase: the worker over the participant database, grouped or not.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    /// `grouped` (one transaction per batch) or `per-command`.
    pub mode: &'static str,
    pub steps: u64,
    pub elapsed_s: f64,
    pub steps_per_s: f64,
    pub xact_commits: i64,
    pub xact_rollbacks: i64,
    pub transactions_per_step: f64,
    /// One account update, one barrier row and one succeeded reply per step.
    pub effects_ok: bool,
}

/// The single-row update transactions per second of the same server.
#[derive(Debug, Serialize)]
pub struct SingleTransactionRate {
    /// `pgbench`, or `loop` (this process's equivalent, where pgbench is missing).
    pub tool: &'static str,
    /// What ran (the pgbench command line, without the password).
    pub command: String,
    pub clients: usize,
    pub secs: u64,
    pub tps: f64,
}

/// The benchmark's result.
#[derive(Debug, Serialize)]
pub struct BenchParticipantReport {
    /// The server, no password.
    pub server: String,
    pub queue: &'static str,
    pub clients: usize,
    pub grouped: PhaseReport,
    pub per_command: Option<PhaseReport>,
    pub single: SingleTransactionRate,
    /// Grouped steps/s over the single-transaction rate.
    pub ratio: f64,
    pub target: f64,
    pub target_met: bool,
}

impl BenchParticipantReport {
    /// Whether every phase kept one effect per step.
    pub fn effects_ok(&self) -> bool {
        self.grouped.effects_ok && self.per_command.as_ref().is_none_or(|p| p.effects_ok)
    }
}

impl std::fmt::Display for BenchParticipantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench participant --db postgres: {} ({} clients, queue: {})",
            self.server, self.clients, self.queue
        )?;
        for p in std::iter::once(&self.grouped).chain(&self.per_command) {
            writeln!(
                f,
                "  {:<12} {:>7} steps in {:>6.2} s  {:>8.1} steps/s  {:>6.3} transactions/step ({} commits, {} rollbacks)  effects {}",
                p.mode,
                p.steps,
                p.elapsed_s,
                p.steps_per_s,
                p.transactions_per_step,
                p.xact_commits,
                p.xact_rollbacks,
                if p.effects_ok { "ok" } else { "WRONG" }
            )?;
        }
        writeln!(
            f,
            "  {:<12} {:>8.1} single-row update transactions/s ({} clients, {} s: {})",
            self.single.tool, self.single.tps, self.single.clients, self.single.secs, self.single.command
        )?;
        write!(
            f,
            "  grouped steps/s / single transactions/s {:>6.2}   (target >= {TARGET}: {})",
            self.ratio,
            if self.target_met { "met" } else { "NOT met" }
        )
    }
}

/// The benchmark's handler: one single-row update, in the command's transaction.
struct Update;

#[async_trait]
impl PgHandler for Update {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let aid = ctx.input()["aid"]
            .as_i64()
            .and_then(|a| i32::try_from(a).ok())
            .ok_or_else(|| HandlerError::Refused(format!("input {} has no account id `aid`", ctx.input())))?;
        // One round trip: an unnamed statement with typed parameters.
        tx.execute_typed("UPDATE accounts SET abalance = abalance + 1 WHERE aid = $1", &[(&aid, Type::INT4)])
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        Ok(json!({"aid": aid}))
    }
}

/// Runs the benchmark on the server at `o.url`; every scratch database it
/// made is dropped, whatever happens.
pub async fn bench_participant(o: &BenchParticipantOptions) -> Result<BenchParticipantReport, BenchError> {
    if o.db != "postgres" {
        return Err(BenchError::Io(format!(
            "`--db {}`: only `postgres` is benchmarked here (SQLite participants: `sqsaga bench embedded`)",
            o.db
        )));
    }
    let clients = o.clients.max(1);
    let scratch = ScratchDb::create_named(&o.url, "sqsaga_bench").await.map_err(BenchError::Io)?;
    let phases = async {
        load_accounts(&scratch.url, "accounts").await?;
        let grouped = phase(o, &scratch, clients, true).await?;
        let per_command = if o.per_command { Some(phase(o, &scratch, clients, false).await?) } else { None };
        Ok::<_, BenchError>((grouped, per_command))
    }
    .await;
    let dropped = scratch.drop_now().await;
    let (grouped, per_command) = phases?;
    dropped.map_err(BenchError::Io)?;
    let single = single_rate(&o.url, clients, o.pgbench_secs).await?;
    let ratio = grouped.steps_per_s / single.tps.max(1e-9);
    Ok(BenchParticipantReport {
        server: sqsaga_config::redact_url(&o.url),
        queue: "in-memory (sqsaga-testing MemoryQueue)",
        clients,
        grouped,
        per_command,
        single,
        ratio: round(ratio, 2),
        target: TARGET,
        target_met: ratio >= TARGET,
    })
}

/// Connects to `url` for the benchmark's own statements.
async fn connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| BenchError::Io(format!("cannot connect to {}: {e}", sqsaga_config::redact_url(url))))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Benchmark connection ended.");
        }
    });
    Ok(client)
}

fn sql(what: &str) -> impl Fn(tokio_postgres::Error) -> BenchError + '_ {
    move |e| match e.as_db_error() {
        Some(db) => BenchError::Io(format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code())),
        None => BenchError::Io(format!("{what}: {e}")),
    }
}

/// Creates `table` (aid, abalance) with [`ACCOUNTS`] rows.
async fn load_accounts(url: &str, table: &str) -> Result<(), BenchError> {
    let client = connect(url).await?;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (aid INT PRIMARY KEY, abalance BIGINT NOT NULL);
             INSERT INTO {table} SELECT g, 0 FROM generate_series(1, {ACCOUNTS}) g;"
        ))
        .await
        .map_err(sql("loading the accounts"))?;
    // Alone: VACUUM cannot run in the implicit transaction of a multi-statement string.
    client.batch_execute(&format!("VACUUM ANALYZE {table}")).await.map_err(sql("vacuuming the accounts"))
}

/// `(xact_commit, xact_rollback)` of `db`, once no connection to it is
/// left (their counts are flushed when they exit).
async fn settled_transactions(admin_url: &str, db: &str) -> Result<(i64, i64), BenchError> {
    let client = connect(admin_url).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = client
            .query_one(
                "SELECT xact_commit, xact_rollback, numbackends FROM pg_stat_database WHERE datname = $1",
                &[&db],
            )
            .await
            .map_err(sql("reading pg_stat_database"))?;
        let backends: i32 = row.get(2);
        if backends == 0 {
            return Ok((row.get(0), row.get(1)));
        }
        if Instant::now() > deadline {
            return Err(BenchError::Io(format!("{backends} connections to {db} still open after the phase")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The account a step updates: spread over the table, the same in every run.
fn account(step: usize) -> i64 {
    (step as i64 * 7919) % i64::from(ACCOUNTS) + 1
}

fn command(saga_id: &str, aid: i64, now: u64) -> Command {
    Command {
        command_id: format!("{saga_id}:0:a:1"),
        saga_id: saga_id.to_string(),
        saga: "bench".to_string(),
        version: 1,
        step: 0,
        step_name: "update".to_string(),
        command: COMMAND.to_string(),
        phase: Phase::Action,
        attempt: 1,
        contract: CONTRACT.to_string(),
        payload: json!({"input": {"aid": aid}, "outputs": {}}),
        deadline: u64::MAX,
        not_after: None,
        sent_at: now,
        reply_to: REPLIES.to_string(),
        conforming: None,
    }
}

/// Keeps about [`BACKLOG`] commands waiting until `steps` were sent.
async fn feed(queue: Arc<MemoryQueue>, mode: &'static str, steps: usize) -> Result<(), BenchError> {
    let clock = SystemClock;
    let mut sent = 0;
    while sent < steps {
        if queue.len(QUEUE) >= BACKLOG {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        let n = (steps - sent).min(sqsaga_queue::MAX_BATCH);
        let batch = (sent..sent + n)
            .map(|i| {
                OutgoingMessage::new(
                    Envelope::Command(command(&format!("{mode}-{i}"), account(i), clock.now())).encode(),
                )
            })
            .collect();
        queue.send_batch(QUEUE, batch).await?;
        sent += n;
    }
    Ok(())
}

/// One phase on `scratch`: a fresh worker and pool, `o.steps` commands.
async fn phase(
    o: &BenchParticipantOptions,
    scratch: &ScratchDb,
    clients: usize,
    grouped: bool,
) -> Result<PhaseReport, BenchError> {
    let mode = if grouped { "grouped" } else { "per-command" };
    let before = settled_transactions(&o.url, &scratch.name).await?;
    let db = PostgresDb::connect(&scratch.url, None, "", clients).await.map_err(|e| BenchError::Io(e.to_string()))?;
    let mut participant = Participant::new(db.with_grouping(grouped));
    participant.register(CONTRACT, COMMAND, Box::new(Update), None);
    let queue = Arc::new(MemoryQueue::new(Arc::new(SystemClock), 7));
    for name in [QUEUE, REPLIES] {
        queue.ensure(&QueueSpec { visibility_timeout: Duration::from_secs(300), ..QueueSpec::named(name) }).await?;
    }
    let mut options = WorkerOptions::new(QUEUE, &format!("bench-{mode}"));
    options.concurrency = clients;
    options.wait = Duration::from_millis(100);
    options.visibility = Duration::from_secs(300);
    options.drain_timeout = Duration::from_secs(30);
    let worker = Worker::new(options, queue.clone(), Arc::new(participant));
    let stats = worker.stats();
    let feeder = tokio::spawn(feed(queue.clone(), mode, o.steps));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    // Generous: a phase that cannot finish in this time is broken, not slow.
    let budget = Duration::from_secs(60) + Duration::from_millis(o.steps as u64 * 10);
    let steps = o.steps as u64;
    while stats.processed.get() < steps {
        if started.elapsed() > budget || feeder.is_finished() && running.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let ran = running.await.map_err(|e| BenchError::Io(format!("the worker stopped: {e}")));
    feeder.await.map_err(|e| BenchError::Io(format!("the feeder stopped: {e}")))??;
    ran?.map_err(|e| BenchError::Io(e.to_string()))?;
    let done = stats.processed.get();
    if done < steps {
        return Err(BenchError::Io(format!("{mode}: only {done} of {steps} steps finished within {budget:?}")));
    }
    let after = settled_transactions(&o.url, &scratch.name).await?;
    let effects_ok = effects_ok(&scratch.url, mode, o.steps, &queue).await?;
    let (commits, rollbacks) = (after.0 - before.0, after.1 - before.1);
    let secs = elapsed.as_secs_f64().max(1e-9);
    Ok(PhaseReport {
        mode,
        steps: done,
        elapsed_s: round(secs, 2),
        steps_per_s: round(done as f64 / secs, 1),
        xact_commits: commits,
        xact_rollbacks: rollbacks,
        transactions_per_step: round((commits + rollbacks) as f64 / done.max(1) as f64, 3),
        effects_ok,
    })
}

/// One update, one barrier row and one succeeded reply per step of `mode`
/// (the accounts carry every phase's updates so far, so the total is
/// checked against the barrier rows of all phases).
async fn effects_ok(url: &str, mode: &str, steps: usize, queue: &MemoryQueue) -> Result<bool, BenchError> {
    let client = connect(url).await?;
    let row = client
        .query_one(
            "SELECT (SELECT COALESCE(sum(abalance), 0)::BIGINT FROM accounts),
                    (SELECT count(*) FROM sqsaga_barrier),
                    (SELECT count(*) FROM sqsaga_barrier WHERE saga_id LIKE $1 AND outcome LIKE '%succeeded%')",
            &[&format!("{mode}-%")],
        )
        .await
        .map_err(sql("checking the effects"))?;
    let (updates, rows, mine): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    let replies = queue.bodies(REPLIES);
    let succeeded = replies
        .iter()
        .filter(
            |b| matches!(Envelope::decode(b), Ok(Envelope::Reply(r)) if matches!(r.outcome, Outcome::Succeeded { .. })),
        )
        .count();
    let ok = updates == rows && mine == steps as i64 && replies.len() == steps && succeeded == steps;
    if !ok {
        tracing::warn!(
            mode,
            updates,
            barrier_rows = rows,
            mine,
            replies = replies.len(),
            succeeded,
            "Effects do not match the steps."
        );
    }
    Ok(ok)
}

/// Single-row update transactions per second on a scratch database of the
/// server: pgbench if installed, else the same loop here.
async fn single_rate(admin_url: &str, clients: usize, secs: u64) -> Result<SingleTransactionRate, BenchError> {
    let scratch = ScratchDb::create_named(admin_url, "sqsaga_pgbench").await.map_err(BenchError::Io)?;
    let result = match pgbench(&scratch.url, clients, secs).await {
        Err(BenchError::PgbenchMissing) => {
            async {
                load_accounts(&scratch.url, "pgbench_accounts").await?;
                single_loop(&scratch.url, clients, secs).await
            }
            .await
        }
        other => other,
    };
    let dropped = scratch.drop_now().await;
    let rate = result?;
    dropped.map_err(BenchError::Io)?;
    Ok(rate)
}

/// The script pgbench runs: pgbench's own account update, alone.
const PGBENCH_SCRIPT: &str =
    "\\set aid random(1, 100000)\nUPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n";

/// `pgbench -i`, then `pgbench -n -c N -j N -T secs -f <script>`; its tps.
async fn pgbench(url: &str, clients: usize, secs: u64) -> Result<SingleTransactionRate, BenchError> {
    let config: tokio_postgres::Config =
        url.parse().map_err(|e| BenchError::Io(format!("not a PostgreSQL URL: {e}")))?;
    let mut connection: Vec<String> = Vec::new();
    if let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() {
        connection.extend(["-h".to_string(), host.clone()]);
    }
    if let Some(port) = config.get_ports().first() {
        connection.extend(["-p".to_string(), port.to_string()]);
    }
    if let Some(user) = config.get_user() {
        connection.extend(["-U".to_string(), user.to_string()]);
    }
    let db = config.get_dbname().unwrap_or("postgres").to_string();
    let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    let run = |args: Vec<String>| {
        let mut c = std::process::Command::new("pgbench");
        c.args(&connection).args(args).arg(&db);
        if let Some(p) = &password {
            c.env("PGPASSWORD", p);
        }
        async move {
            tokio::task::spawn_blocking(move || c.output())
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(format!("pgbench's runner stopped: {e}"))))
        }
    };
    let init = match run(vec!["-i".into(), "-q".into()]).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BenchError::PgbenchMissing),
        other => other.map_err(|e| BenchError::Io(format!("cannot run pgbench: {e}")))?,
    };
    if !init.status.success() {
        return Err(BenchError::Io(format!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr).trim())));
    }
    let dir = crate::sqs::temp_dir("bench-pgbench")?;
    let script = dir.join("update.sql");
    std::fs::write(&script, PGBENCH_SCRIPT)
        .map_err(|e| BenchError::Io(format!("cannot write {}: {e}", script.display())))?;
    let c = clients.to_string();
    let args: Vec<String> = vec![
        "-n".into(),
        "-c".into(),
        c.clone(),
        "-j".into(),
        c,
        "-T".into(),
        secs.max(1).to_string(),
        "-f".into(),
        script.display().to_string(),
    ];
    let shown = format!("pgbench {} {} {db}", connection.join(" "), args.join(" "));
    let out = run(args).await.map_err(|e| BenchError::Io(format!("cannot run pgbench: {e}")));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = parse_tps(&stdout).ok_or_else(|| {
        BenchError::Io(format!(
            "no tps in pgbench's output ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    Ok(SingleTransactionRate { tool: "pgbench", command: shown, clients, secs: secs.max(1), tps: round(tps, 1) })
}

/// The `tps = ...` figure of pgbench's report.
pub fn parse_tps(output: &str) -> Option<f64> {
    output.lines().find_map(|l| l.trim().strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
}

/// pgbench's loop without pgbench: `clients` connections, each running one
/// autocommitted single-row update after another for `secs`.
async fn single_loop(url: &str, clients: usize, secs: u64) -> Result<SingleTransactionRate, BenchError> {
    let secs = secs.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    for c in 0..clients {
        let client = connect(url).await?;
        tasks.spawn(async move {
            let mut n = 0usize;
            while Instant::now() < until {
                let aid = i32::try_from(account(c * 1_000_003 + n)).unwrap_or(1);
                client
                    .execute_typed(
                        "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1",
                        &[(&aid, Type::INT4)],
                    )
                    .await
                    .map_err(sql("the single-transaction loop"))?;
                n += 1;
            }
            Ok::<usize, BenchError>(n)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(|e| BenchError::Io(format!("a loop client stopped: {e}")))??;
    }
    Ok(SingleTransactionRate {
        tool: "loop",
        command: format!("{clients} connections, UPDATE pgbench_accounts ... WHERE aid = $1, autocommit"),
        clients,
        secs,
        tps: round(total as f64 / started.elapsed().as_secs_f64().max(1e-9), 1),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_tps;

    #[test]
    fn parse_tps_reads_pgbench_15s_line() {
        let out = "latency average = 1.0 ms\ninitial connection time = 3.1 ms\ntps = 1957.544981 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(1957.544981));
        assert_eq!(parse_tps("no figure"), None);
    }
}
