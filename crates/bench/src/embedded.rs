//! `sqsaga bench embedded`: the order saga at saturation on the embedded
//! backend (one SQLite file for queues and sagas, one per participant, all
//! `synchronous=FULL`), in steps/s and SQLite commits per step, against the
//! disk's own rate of single-row durable commits.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqsaga_embedded::EmbeddedBackend;
use sqsaga_order::run::round;
use sqsaga_queue::QueueSpec;
use sqsaga_runtime::{Stack, StackOptions};
use sqsaga_sqlite::Sync;

use crate::BenchError;

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchEmbeddedOptions {
    /// Sagas to run.
    pub orders: usize,
    /// Receive loops per participant worker (each up to 10 messages in flight).
    pub worker_pollers: usize,
    /// Receive loops of the orchestrator.
    pub orchestrator_pollers: usize,
}

/// Commits of one database file during the run.
#[derive(Debug, Serialize)]
pub struct DatabaseCommits {
    pub database: String,
    pub commits: u64,
    pub write_jobs: u64,
    pub commits_per_step: f64,
}

/// The benchmark's result.
#[derive(Debug, Serialize)]
pub struct BenchEmbeddedReport {
    pub sagas: usize,
    pub steps: u64,
    pub elapsed_s: f64,
    pub steps_per_s: f64,
    pub sqlite_commits: u64,
    pub write_jobs: u64,
    pub commits_per_step: f64,
    /// The same, per database file.
    pub by_database: Vec<DatabaseCommits>,
    /// CPU time (user + system) of this process during the run, per step.
    pub cpu_us_per_step: Option<f64>,
    /// The better of the two measurements below.
    pub single_commit_per_s: f64,
    /// Single-row FULL commits/s measured before and after the saga run.
    pub single_commit_per_s_before_after: [f64; 2],
    pub speedup_vs_single_commit: f64,
    pub invariants_ok: bool,
}

impl std::fmt::Display for BenchEmbeddedReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bench embedded: {} sagas, {} steps in {:.2} s", self.sagas, self.steps, self.elapsed_s)?;
        writeln!(f, "  steps/s                     {:>10.1}", self.steps_per_s)?;
        writeln!(f, "  SQLite commits              {:>10}", self.sqlite_commits)?;
        writeln!(f, "  write jobs (group-committed) {:>9}", self.write_jobs)?;
        writeln!(f, "  commits per step            {:>10.3}   (target <= 0.05)", self.commits_per_step)?;
        for db in &self.by_database {
            writeln!(
                f,
                "    {:<12} {:>8} commits {:>8} jobs {:>8.3} per step",
                db.database, db.commits, db.write_jobs, db.commits_per_step
            )?;
        }
        if let Some(cpu) = self.cpu_us_per_step {
            writeln!(f, "  CPU per step (user+system)  {cpu:>10.1} µs")?;
        }
        writeln!(
            f,
            "  single-row FULL commits/s   {:>10.1}   (same disk, same run: better of {:.1} before, {:.1} after)",
            self.single_commit_per_s,
            self.single_commit_per_s_before_after[0],
            self.single_commit_per_s_before_after[1]
        )?;
        writeln!(f, "  steps/s / single commits/s  {:>10.2}   (target >= 10)", self.speedup_vs_single_commit)?;
        write!(f, "  invariants                  {:>10}", if self.invariants_ok { "ok" } else { "VIOLATED" })
    }
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat` (Linux); `None` where that is not available.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime and stime the 14th and 15th, in clock ticks.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux ABI Rust targets.
    Some(Duration::from_millis(ticks * 10))
}

/// Single-row `synchronous=FULL` commits per second on the same disk.
fn single_commit_rate(dir: &Path) -> Result<f64, BenchError> {
    let run = || -> Result<f64, sqsaga_sqlite::SqliteError> {
        let conn = sqsaga_sqlite::open(&dir.join("single-commit.db"), Sync::Full)?;
        conn.execute_batch("CREATE TABLE IF NOT EXISTS t (x INTEGER)")?;
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            conn.execute("INSERT INTO t (x) VALUES (?1)", [n as i64])?;
            n += 1;
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    };
    run().map_err(|e| BenchError::Io(format!("single-commit measurement in {}: {e}", dir.display())))
}

/// Runs the benchmark in a fresh temporary directory, removed afterwards.
pub async fn bench_embedded(o: &BenchEmbeddedOptions) -> Result<BenchEmbeddedReport, BenchError> {
    let dir = crate::sqs::temp_dir("bench-embedded")?;
    let result = run_in(&dir, o).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &Path, o: &BenchEmbeddedOptions) -> Result<BenchEmbeddedReport, BenchError> {
    let single_before = single_commit_rate(dir)?;
    let defs = Arc::new(sqsaga_order::run::definitions()?);
    let backend = EmbeddedBackend::open(dir, Sync::Full).map_err(|e| BenchError::Io(e.to_string()))?;
    sqsaga_orchestrator::ensure_queues(backend.queue().as_ref(), &defs, &QueueSpec::named("template")).await?;
    let participants: Vec<(String, Arc<sqsaga_worker::Participant>)> =
        sqsaga_order::participants(dir, Sync::Full, 0.0, 7)?
            .into_iter()
            .map(|(service, p)| (service.to_string(), Arc::new(p)))
            .collect();
    let options = StackOptions {
        worker_pollers: o.worker_pollers,
        orchestrator_pollers: o.orchestrator_pollers,
        ..StackOptions::default()
    };
    let stack = Stack::start(backend.queue(), backend.store(), defs, &participants, &options);
    let commits = || {
        let mut out = vec![("sqsaga".to_string(), backend.commits(), backend.jobs())];
        for (service, p) in &participants {
            out.push((service.clone(), p.committer().commits(), p.committer().jobs()));
        }
        out
    };
    let by_db_before = commits();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let now = sqsaga_orchestrator::clock::now_ms();
    let manifest = sqsaga_order::run::load(dir, o.orders, 7, backend.queue().as_ref(), None, now).await?;
    sqsaga_order::run::wait_terminal(backend.store().as_ref(), &manifest.ids(), Duration::from_secs(600), |_| {})
        .await?;
    let elapsed = started.elapsed();
    let cpu = process_cpu().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    let steps = stack.steps();
    let by_database: Vec<DatabaseCommits> = commits()
        .into_iter()
        .zip(by_db_before)
        .map(|((database, commits, jobs), (_, c0, j0))| DatabaseCommits {
            database,
            commits: commits.saturating_sub(c0),
            write_jobs: jobs.saturating_sub(j0),
            commits_per_step: round(commits.saturating_sub(c0) as f64 / steps.max(1) as f64, 3),
        })
        .collect();
    let sqlite_commits: u64 = by_database.iter().map(|d| d.commits).sum();
    let write_jobs: u64 = by_database.iter().map(|d| d.write_jobs).sum();
    stack.stop().await;
    let summary = sqsaga_order::run::summarize(dir, backend.store().as_ref(), &manifest, Some(elapsed)).await?;
    // Measured again after the run: the disk's fsync rate drifts with
    // whatever else the machine does, and the ratio is taken against the
    // better of the two (the conservative choice).
    let single_after = single_commit_rate(dir)?;
    let single = single_before.max(single_after);
    let secs = elapsed.as_secs_f64().max(1e-9);
    Ok(BenchEmbeddedReport {
        sagas: manifest.sagas.len(),
        steps,
        elapsed_s: round(secs, 2),
        steps_per_s: round(steps as f64 / secs, 2),
        sqlite_commits,
        write_jobs,
        commits_per_step: round(sqlite_commits as f64 / steps.max(1) as f64, 3),
        by_database,
        cpu_us_per_step: cpu.map(|d| round(d.as_secs_f64() * 1e6 / steps.max(1) as f64, 2)),
        single_commit_per_s: round(single, 2),
        single_commit_per_s_before_after: [round(single_before, 2), round(single_after, 2)],
        speedup_vs_single_commit: round(steps as f64 / secs / single.max(1e-9), 2),
        invariants_ok: summary.invariants_ok,
    })
}
