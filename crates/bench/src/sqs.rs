//! `sqsaga bench sqs`: what the batching in [`SqsQueue`](sqsaga_aws::SqsQueue)
//! saves, in SQS requests — AWS bills SQS per request.
//!
//! One run, two phases on fresh queues and a fresh table each: the order
//! saga at saturation (orchestrator plus the three `sqsaga_order`
//! participants' workers, in this process, on `SqsQueue` + `DynamoStore`),
//! first batched, then `naive` — one `SendMessage` per message, one
//! `DeleteMessage` per message, as the seed's Go worker does. Both count
//! every SQS request from the first start request to the last saga
//! finishing, per saga step (a command a worker executed). Then, with
//! everything idle, the long polls of every poller are counted over an idle
//! window (20 s waits: at most 3 requests per poller per minute; the pollers
//! of one queue share one long poll at the adapter's receive gate, so fewer).
//!
//! Where the floor is: a step moves two messages (the command and its
//! reply), each sent, received and deleted once — six message operations,
//! ten per request at best: 0.6 requests per step. Start requests add
//! 0.3 / (steps per saga) on top.
//!

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use serde::Serialize;
use serde_json::Value;
use sqsaga_aws::{AwsBackend, AwsError, AwsSettings, RequestCounter, RequestSnapshot};
use sqsaga_core::machine::SagaStatus;
use sqsaga_orchestrator::Definitions;
use sqsaga_queue::{MAX_BATCH, MAX_WAIT, Queue};
use sqsaga_runtime::{ProvisionOptions, Stack, StackOptions, provision, teardown};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;
use sqsaga_worker::Participant;

/// Errors of the benchmark and of the in-process stack.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Run(#[from] sqsaga_order::run::RunError),
    #[error("order participants: {0}")]
    Order(#[from] sqsaga_order::OrderError),
    #[error("{0}")]
    Io(String),
    #[error("only {finished} of {total} sagas finished within {budget:?}")]
    Timeout { finished: u64, total: usize, budget: Duration },
    #[error("saga store: {0}")]
    Store(#[from] sqsaga_store::StoreError),
    #[error("queue: {0}")]
    Queue(#[from] sqsaga_queue::QueueError),
}

/// How the benchmark runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSqsOptions {
    /// Order sagas per phase.
    pub sagas: usize,
    /// Idle window over which long polls are counted; zero skips it.
    pub idle: Duration,
    /// Orchestrator pollers: more pollers, more sends merged per batch.
    pub orchestrator_pollers: usize,
    /// Pollers per participant worker.
    pub worker_pollers: usize,
    /// Sagas in flight at once: new ones start as others finish. Saturation
    /// without a flood: moto's receive walks the whole queue, so thousands
    /// of messages deep it slows until step timeouts fire and retries pile up.
    pub in_flight: usize,
    /// Run the naive phase too.
    pub naive: bool,
    /// Budget per phase for every saga to finish.
    pub timeout: Duration,
    /// Seed of the order mix.
    pub seed: u64,
}

impl Default for BenchSqsOptions {
    fn default() -> Self {
        BenchSqsOptions {
            sagas: 200,
            idle: Duration::from_secs(60),
            orchestrator_pollers: 8,
            worker_pollers: 2,
            in_flight: 200,
            naive: true,
            timeout: Duration::from_secs(600),
            seed: 7,
        }
    }
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// `batched` or `naive`.
    pub mode: &'static str,
    pub sagas: usize,
    pub completed: usize,
    pub compensated: usize,
    pub unfinished: usize,
    /// Commands executed by the workers.
    pub steps: u64,
    /// SQS requests by action during the phase.
    pub requests: BTreeMap<String, u64>,
    pub total_requests: u64,
    pub requests_per_step: f64,
    pub elapsed_s: f64,
    /// DynamoDB requests during the phase (for context: not what is judged).
    pub dynamodb_requests: u64,
    /// The same by action (the benchmark's own progress checks included).
    pub dynamodb_by_action: BTreeMap<String, u64>,
    /// Stock and money conserved, every order fully done or fully undone.
    pub invariants_ok: bool,
    pub violations: Vec<String>,
}

/// Long polls of idle pollers.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub window_s: f64,
    pub pollers: usize,
    pub receives: u64,
    pub requests_per_poller_per_minute: f64,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSqsReport {
    pub batched: PhaseReport,
    pub naive: Option<PhaseReport>,
    /// Naive requests per step over batched requests per step.
    pub reduction: Option<f64>,
    pub idle: Option<IdleReport>,
}

/// Requests per step the batched phase must stay under.
pub const TARGET_REQUESTS_PER_STEP: f64 = 0.8;
/// How many times fewer requests than naive.
pub const TARGET_REDUCTION: f64 = 7.0;
/// Long polls per idle poller per minute (20 s waits).
pub const TARGET_IDLE_PER_MINUTE: f64 = 3.0;

impl BenchSqsReport {
    /// Every target measured was met (and every phase's invariants held).
    pub fn targets_met(&self) -> bool {
        let phases_ok = self.batched.invariants_ok && self.naive.as_ref().is_none_or(|n| n.invariants_ok);
        phases_ok
            && self.batched.requests_per_step <= TARGET_REQUESTS_PER_STEP
            && self.reduction.is_none_or(|r| r >= TARGET_REDUCTION)
            && self.idle.as_ref().is_none_or(|i| i.requests_per_poller_per_minute <= TARGET_IDLE_PER_MINUTE)
    }
}

/// Runs both phases against the SQS/DynamoDB behind `sdk` (an emulator, or
/// an AWS account: it creates and deletes its own queues and table, named
/// `bench<random>-...`). `base` supplies everything but names and mode.
pub async fn bench_sqs(
    sdk: &SdkConfig,
    base: &AwsSettings,
    options: &BenchSqsOptions,
) -> Result<BenchSqsReport, BenchError> {
    let defs = Arc::new(sqsaga_order::run::definitions()?);
    let (batched, idle) = run_phase(sdk, base, &defs, options, false).await?;
    let naive = if options.naive { Some(run_phase(sdk, base, &defs, options, true).await?.0) } else { None };
    let reduction = naive
        .as_ref()
        .filter(|_| batched.requests_per_step > 0.0)
        .map(|n| round3(n.requests_per_step / batched.requests_per_step));
    Ok(BenchSqsReport { batched, naive, reduction, idle })
}

async fn run_phase(
    sdk: &SdkConfig,
    base: &AwsSettings,
    defs: &Arc<Definitions>,
    options: &BenchSqsOptions,
    naive: bool,
) -> Result<(PhaseReport, Option<IdleReport>), BenchError> {
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let settings = AwsSettings {
        queue_prefix: format!("bench{run}-"),
        table: format!("bench{run}-sagas"),
        queue_urls: BTreeMap::new(),
        naive,
        ..base.clone()
    };
    let backend = AwsBackend::from_sdk_config(sdk, settings)?;
    let dir = std::env::temp_dir().join(format!("sqsaga-bench-sqs-{run}"));
    let result = run_phase_on(&backend, &dir, defs, options, naive).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = teardown(&backend).await {
        tracing::warn!(error = %e, "Cannot delete the benchmark's queues and table.");
    }
    result
}

async fn run_phase_on(
    backend: &AwsBackend,
    dir: &Path,
    defs: &Arc<Definitions>,
    options: &BenchSqsOptions,
    naive: bool,
) -> Result<(PhaseReport, Option<IdleReport>), BenchError> {
    provision(backend, defs, &ProvisionOptions::default()).await?;
    let (initial, inputs) = sqsaga_order::generate_orders(options.sagas, options.seed);
    sqsaga_order::seed_data(dir, &initial)?;
    let stack_options = StackOptions {
        orchestrator_pollers: options.orchestrator_pollers,
        worker_pollers: options.worker_pollers,
        wait: MAX_WAIT,
        timer_interval: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        ..StackOptions::default()
    };
    let participants = order_participants(dir, 0.0, options.seed)?;
    let stack = Stack::start(backend.queue(), backend.store(), defs.clone(), &participants, &stack_options);
    let requests = backend.requests();
    let before = requests.snapshot();
    let dynamo_before = backend.dynamodb_requests().snapshot();
    let started = Instant::now();
    let mode = if naive { "naive" } else { "batched" };
    let ids: Vec<String> = (0..inputs.len()).map(|i| format!("order-{mode}-{i:05}")).collect();
    let waited = feed(backend.queue().as_ref(), &stack, &ids, &inputs, options).await;
    let elapsed = started.elapsed();
    let delta = requests.snapshot().since(&before);
    let dynamodb = backend.dynamodb_requests().snapshot().since(&dynamo_before);
    let steps = stack.steps();
    let idle = if !naive && !options.idle.is_zero() && waited.is_ok() {
        Some(measure_idle(&requests, options.idle, stack.pollers()).await)
    } else {
        None
    };
    stack.stop().await;
    waited?;
    let mut report =
        phase_report(mode, backend.store().as_ref(), dir, &ids, &inputs, &initial, steps, delta, elapsed).await?;
    report.dynamodb_requests = dynamodb.total();
    report.dynamodb_by_action = dynamodb.by_action;
    Ok((report, idle))
}

/// Starts the sagas, keeping at most `in_flight` unfinished, ten start
/// requests per batch; returns once all are terminal or the budget is spent.
async fn feed(
    queue: &dyn Queue,
    stack: &Stack,
    ids: &[String],
    inputs: &[Value],
    options: &BenchSqsOptions,
) -> Result<(), BenchError> {
    let began = Instant::now();
    let total = ids.len();
    let mut sent = 0;
    loop {
        // The orchestrators' own counts: progress checks cost no request.
        let done = stack.finished() as usize;
        if done >= total {
            return Ok(());
        }
        if began.elapsed() >= options.timeout {
            return Err(BenchError::Timeout { finished: done as u64, total, budget: options.timeout });
        }
        let room = (done + options.in_flight.max(MAX_BATCH)).min(total);
        // Full batches of start requests, the last one excepted.
        while sent < room && (room - sent >= MAX_BATCH || room == total) {
            let n = (room - sent).min(MAX_BATCH);
            start_batch(queue, &ids[sent..sent + n], &inputs[sent..sent + n]).await?;
            sent += n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start requests for `ids` with `inputs`.
async fn start_batch(queue: &dyn Queue, ids: &[String], inputs: &[Value]) -> Result<(), BenchError> {
    let sagas: Vec<(String, Value)> = ids.iter().cloned().zip(inputs.iter().cloned()).collect();
    sqsaga_order::run::start_sagas(queue, &sagas, None, sqsaga_orchestrator::clock::now_ms()).await?;
    Ok(())
}

/// Sends one start request per input, ten per batch; returns the saga ids.
pub async fn start_orders(queue: &dyn Queue, prefix: &str, inputs: &[Value]) -> Result<Vec<String>, BenchError> {
    let ids: Vec<String> = (0..inputs.len()).map(|i| format!("{prefix}-{i:05}")).collect();
    start_batch(queue, &ids, inputs).await?;
    Ok(ids)
}

/// Waits until `total` sagas of the store are terminal (a fresh table: the
/// counts are this run's).
pub async fn wait_terminal(store: &dyn SagaStore, total: usize, budget: Duration) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        let counts = store.counts().await?;
        let done: u64 = counts.iter().filter(|(s, _)| s.is_terminal()).map(|(_, n)| *n).sum();
        if done as usize >= total {
            return Ok(());
        }
        if started.elapsed() >= budget {
            return Err(BenchError::Timeout { finished: done, total, budget });
        }
        // Counting is five index queries: not so often that it loads the store.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn measure_idle(requests: &RequestCounter, window: Duration, pollers: usize) -> IdleReport {
    let before = requests.snapshot();
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64();
    let receives = requests.snapshot().since(&before).get("ReceiveMessage");
    IdleReport {
        window_s: round3(secs),
        pollers,
        receives,
        requests_per_poller_per_minute: round3(receives as f64 / pollers.max(1) as f64 / (secs / 60.0)),
    }
}

#[allow(clippy::too_many_arguments, reason = "one phase's raw figures in, its report out")]
async fn phase_report(
    mode: &'static str,
    store: &dyn SagaStore,
    dir: &Path,
    ids: &[String],
    inputs: &[Value],
    initial: &sqsaga_order::DemoData,
    steps: u64,
    requests: RequestSnapshot,
    elapsed: Duration,
) -> Result<PhaseReport, BenchError> {
    let records = store.load(ids).await?;
    let by_id: std::collections::HashMap<&str, SagaStatus> =
        records.iter().map(|r| (r.instance.id.as_str(), r.instance.status)).collect();
    let sagas: Vec<(String, SagaStatus, Value)> = ids
        .iter()
        .zip(inputs)
        .map(|(id, input)| (id.clone(), by_id.get(id.as_str()).copied().unwrap_or(SagaStatus::Running), input.clone()))
        .collect();
    let report = sqsaga_order::check_invariants(dir, &sagas, initial)?;
    let count = |s: SagaStatus| sagas.iter().filter(|(_, st, _)| *st == s).count();
    let total = requests.total();
    Ok(PhaseReport {
        mode,
        sagas: ids.len(),
        completed: count(SagaStatus::Completed),
        compensated: count(SagaStatus::Compensated),
        unfinished: sagas.iter().filter(|(_, s, _)| !s.is_terminal()).count(),
        steps,
        total_requests: total,
        requests_per_step: round3(total as f64 / steps.max(1) as f64),
        requests: requests.by_action,
        elapsed_s: round3(elapsed.as_secs_f64()),
        dynamodb_requests: 0,
        dynamodb_by_action: BTreeMap::new(),
        invariants_ok: report.ok,
        violations: report.violations,
    })
}

fn round3(x: f64) -> f64 {
    sqsaga_order::run::round(x, 3)
}

/// The three order participants in `dir`, shared by their workers.
pub fn order_participants(
    dir: &Path,
    failure_rate: f64,
    seed: u64,
) -> Result<Vec<(String, Arc<Participant>)>, BenchError> {
    Ok(sqsaga_order::participants(dir, Sync::Normal, failure_rate, seed)?
        .into_iter()
        .map(|(service, p)| (service.to_string(), Arc::new(p)))
        .collect())
}

/// A fresh directory for participants' databases under the system temp dir.
pub fn temp_dir(tag: &str) -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("sqsaga-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| BenchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

impl std::fmt::Display for BenchSqsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.batched;
        writeln!(
            f,
            "  batched: {} steps, {} SQS requests: {:.3} per step   (target <= {TARGET_REQUESTS_PER_STEP})",
            b.steps, b.total_requests, b.requests_per_step
        )?;
        writeln!(f, "           {:?}", b.requests)?;
        if let Some(n) = &self.naive {
            writeln!(
                f,
                "  naive:   {} steps, {} SQS requests: {:.3} per step",
                n.steps, n.total_requests, n.requests_per_step
            )?;
            writeln!(f, "           {:?}", n.requests)?;
        }
        if let Some(r) = self.reduction {
            writeln!(f, "  naive / batched: {r:.2}x fewer requests   (target >= {TARGET_REDUCTION})")?;
        }
        if let Some(i) = &self.idle {
            writeln!(
                f,
                "  idle:    {} long polls by {} pollers in {:.0} s: {:.2} per poller per minute   (target <= {TARGET_IDLE_PER_MINUTE})",
                i.receives, i.pollers, i.window_s, i.requests_per_poller_per_minute
            )?;
        }
        let invariants = b.invariants_ok && self.naive.as_ref().is_none_or(|n| n.invariants_ok);
        writeln!(f, "  invariants: {}", if invariants { "ok" } else { "VIOLATED" })?;
        writeln!(f, "  targets: {}", if self.targets_met() { "met" } else { "MISSED" })
    }
}
