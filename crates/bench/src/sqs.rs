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
//! **Cost.** The batched phase runs each process's readiness loop as
//! `serve` does (the orchestrator's checks the store is reachable, every
//! process checks its queue), with the orchestrator's production timer interval, so its
//! figures are all-in: `sqs_requests_per_step` counts every SQS request
//! (`requests_per_step`, the batching figure, leaves the readiness loops'
//! `GetQueueAttributes` out), and DynamoDB's capacity is metered
//! (`sqsaga_aws::capacity`) by purpose ([`crate::purpose`]). Dollars per
//! million steps at the prices given ([`crate::cost`]); the idle window
//! counts the same per process and hour. Step latency (p50/p99, dispatch
//! to reply, from the saga records) shows what the batching windows add.
//!
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use serde::Serialize;
use serde_json::Value;
use sqsaga_aws::{AwsBackend, AwsError, AwsSettings, CapacitySnapshot, RequestSnapshot, Usage, with_purpose};
use sqsaga_core::machine::{SagaInstance, SagaStatus, StepStatus};
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE, OrchestratorOptions};
use sqsaga_queue::{MAX_BATCH, MAX_WAIT, Queue};
use sqsaga_runtime::readiness::{self, Watched};
use sqsaga_runtime::{ProvisionOptions, Stack, StackOptions, provision, teardown};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;
use sqsaga_worker::Participant;

use crate::cost::{self, Counts, HourCost, Prices, StepCost};
use crate::purpose::{self, Labelled};

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
    /// `pgbench` is not on the PATH (the participant benchmark then runs its own loop).
    #[error("pgbench is not installed")]
    PgbenchMissing,
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
    /// List prices the dollars are computed at.
    pub prices: Prices,
    /// Name of the window preset the run uses, for the report (`None`: the
    /// windows were given one by one, or left at their defaults).
    pub preset: Option<String>,
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
            prices: Prices::default(),
            preset: None,
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
    /// Step latency, dispatch to reply recorded, over every finished step
    /// (as the demo's summary computes it).
    pub step_p50_ms: f64,
    pub step_p99_ms: f64,
    /// What the phase cost (batched phase only).
    pub cost: Option<CostReport>,
}

/// What the batched phase cost, all-in, and where.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    pub prices: Prices,
    /// Totals per step and per million steps.
    #[serde(flatten)]
    pub total: StepCost,
    /// Where the capacity figures come from: `item_size_rules` (the
    /// documented rules, from item sizes: what moto's placeholders force) or
    /// `consumed_capacity` (DynamoDB's own answer, when it reports indexes).
    pub capacity_source: &'static str,
    /// DynamoDB cost by purpose (commit, outbox, timers, sweeper,
    /// readiness): table writes and every read; `indexes` holds the index
    /// writes of all purposes; `sqs` the SQS requests.
    pub by_purpose: BTreeMap<String, StepCost>,
    /// Write units per step per index.
    pub index_wru_per_step: BTreeMap<String, f64>,
    /// The same totals by the other source, for comparison.
    pub other_source: OtherSource,
    /// SQS requests per step, per queue (logical name).
    pub sqs_requests_per_step_by_queue: BTreeMap<String, f64>,
    /// Writes refused by their condition (revision conflicts, lost outbox races).
    pub failed_conditions: u64,
    /// Calls whose item sizes were unknown, so their estimate is a floor.
    pub calls_of_unknown_size: u64,
}

/// Capacity per step from the source the dollars were not computed from.
#[derive(Debug, Clone, Serialize)]
pub struct OtherSource {
    pub source: &'static str,
    pub wru_per_step: f64,
    pub rru_per_step: f64,
    pub usd_per_million_steps: f64,
}

/// Long polls of idle pollers, and what each idle process costs.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub window_s: f64,
    pub pollers: usize,
    pub receives: u64,
    pub requests_per_poller_per_minute: f64,
    /// Per process (`orchestrator`, then each worker by service): its queue's
    /// requests, and for the orchestrator the store's, per hour.
    pub processes: BTreeMap<String, HourCost>,
    /// The mean over the processes.
    pub requests_per_hour_per_process: f64,
    pub usd_per_hour_per_process: f64,
    /// DynamoDB requests by action over the window (benchmark's own excluded).
    pub dynamodb_by_action: BTreeMap<String, u64>,
}

/// The benchmark's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSqsReport {
    /// The window preset, if the run named one.
    pub preset: Option<String>,
    /// The windows the run used.
    pub windows: Windows,
    /// The headline figures of the batched phase (also under `batched.cost`).
    pub usd_per_million_steps: f64,
    pub sqs_requests_per_step: f64,
    pub wru_per_step: f64,
    pub rru_per_step: f64,
    pub step_p50_ms: f64,
    pub step_p99_ms: f64,
    /// Idle requests and dollars per hour per process (mean), if measured.
    pub idle_requests_per_hour_per_process: Option<f64>,
    pub idle_usd_per_hour_per_process: Option<f64>,
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

/// The adapter's batching windows during a run.
#[derive(Debug, Clone, Serialize)]
pub struct Windows {
    pub receive_linger_ms: u64,
    pub busy_flush_window_ms: u64,
    pub busy_delete_window_ms: u64,
}

impl Windows {
    fn of(s: &AwsSettings) -> Windows {
        Windows {
            receive_linger_ms: s.receive_linger.as_millis() as u64,
            busy_flush_window_ms: s.busy_flush_window.as_millis() as u64,
            busy_delete_window_ms: s.busy_delete_window.as_millis() as u64,
        }
    }
}

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
    let headline = batched.cost.as_ref().map(|c| c.total.clone());
    Ok(BenchSqsReport {
        preset: options.preset.clone(),
        windows: Windows::of(base),
        usd_per_million_steps: headline.as_ref().map_or(0.0, |c| c.usd_per_million_steps),
        sqs_requests_per_step: headline.as_ref().map_or(0.0, |c| c.sqs_requests_per_step),
        wru_per_step: headline.as_ref().map_or(0.0, |c| c.wru_per_step),
        rru_per_step: headline.as_ref().map_or(0.0, |c| c.rru_per_step),
        step_p50_ms: batched.step_p50_ms,
        step_p99_ms: batched.step_p99_ms,
        idle_requests_per_hour_per_process: idle.as_ref().map(|i| i.requests_per_hour_per_process),
        idle_usd_per_hour_per_process: idle.as_ref().map(|i| i.usd_per_hour_per_process),
        batched,
        naive,
        reduction,
        idle,
    })
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
        capacity: !naive,
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
        // The production interval: the timer loop's polls are part of the bill.
        timer_interval: OrchestratorOptions::default().timer_interval,
        drain_timeout: Duration::from_secs(1),
        // The benchmark keeps `in_flight` sagas unfinished itself; the
        // adaptive admission limit would hold it lower on a slow emulator
        // (it aims at a latency, not a request pattern) and the figures
        // would measure moto's speed.
        max_in_flight: None,
        ..StackOptions::default()
    };
    let participants = order_participants(dir, 0.0, options.seed)?;
    let labelled: Arc<dyn SagaStore> = Arc::new(Labelled::new(backend.store()));
    let mut stack = Stack::start(backend.queue(), labelled.clone(), defs.clone(), &participants, &stack_options);
    let services: Vec<String> = participants.iter().map(|(s, _)| s.clone()).collect();
    if !naive {
        spawn_readiness(&mut stack, backend.queue(), labelled, &services);
    }
    let store = backend.store();
    let requests = backend.requests();
    let before = requests.snapshot();
    let dynamo_before = backend.dynamodb_requests().snapshot();
    let capacity_before = backend.capacity().map(|m| m.snapshot());
    let started = Instant::now();
    let mode = if naive { "naive" } else { "batched" };
    let ids: Vec<String> = (0..inputs.len()).map(|i| format!("order-{mode}-{i:05}")).collect();
    let waited = feed(backend.queue().as_ref(), &stack, &ids, &inputs, options).await;
    let elapsed = started.elapsed();
    let delta = requests.snapshot().since(&before);
    let dynamodb = backend.dynamodb_requests().snapshot().since(&dynamo_before);
    let capacity = match (backend.capacity(), &capacity_before) {
        (Some(m), Some(b)) => Some(m.snapshot().since(b)),
        _ => None,
    };
    let steps = stack.steps();
    let prefix = &backend.settings().queue_prefix;
    let idle = if !naive && !options.idle.is_zero() && waited.is_ok() {
        Some(measure_idle(backend, options, stack.pollers(), &services).await)
    } else {
        None
    };
    stack.stop().await;
    waited?;
    let mut report = with_purpose(
        purpose::BENCH,
        phase_report(mode, store.as_ref(), dir, &ids, &inputs, &initial, steps, delta.clone(), elapsed),
    )
    .await?;
    report.dynamodb_requests = dynamodb.total() - bench_requests(capacity.as_ref());
    report.dynamodb_by_action = dynamodb.by_action;
    report.cost = capacity.map(|c| cost_report(&delta, &c, steps, prefix, &options.prices));
    Ok((report, idle))
}

/// Each process's readiness loop, as `serve` runs it: the orchestrator's
/// checks its queue and the store; each worker's checks its queue.
fn spawn_readiness(stack: &mut Stack, queue: Arc<dyn Queue>, store: Arc<dyn SagaStore>, services: &[String]) {
    let orchestrator = Watched {
        queue: queue.clone(),
        queue_name: ORCHESTRATOR_QUEUE.to_string(),
        store: Some(store),
        participant: None,
    };
    // The benchmark measures queue and store requests: no database pings.
    let workers = services.iter().map(|s| Watched {
        queue: queue.clone(),
        queue_name: s.clone(),
        store: None,
        participant: None,
    });
    for watched in std::iter::once(orchestrator).chain(workers) {
        stack.spawn(move |token| async move {
            let probe = sqsaga_http::Probe::new();
            let _ = readiness::spawn(probe, watched, readiness::INTERVAL, token).await;
        });
    }
}

/// DynamoDB requests the benchmark itself made (progress checks, the final read).
fn bench_requests(capacity: Option<&CapacitySnapshot>) -> u64 {
    capacity.and_then(|c| c.by_purpose.get(purpose::BENCH)).map_or(0, Usage::request_total)
}

/// The capacity figures of `usage`: from the source the dollars use.
fn units(usage: &Usage, reported: bool) -> &sqsaga_aws::capacity::Units {
    if reported { &usage.reported } else { &usage.estimated }
}

/// Trusts DynamoDB's `ConsumedCapacity` when it reports index units (real
/// DynamoDB does, for a table with indexes); otherwise (moto) the estimate.
fn reported_is_real(capacity: &CapacitySnapshot) -> bool {
    capacity.by_purpose.values().any(|u| !u.reported.index_wru.is_empty())
}

/// The cost lines of a phase: SQS requests (all), DynamoDB by purpose.
fn cost_report(
    sqs: &RequestSnapshot,
    capacity: &CapacitySnapshot,
    steps: u64,
    prefix: &str,
    prices: &Prices,
) -> CostReport {
    let leave_out = [purpose::BENCH];
    let real = reported_is_real(capacity);
    let all = capacity.total_without(&leave_out);
    let counts_of = |reported: bool| {
        let u = units(&all, reported);
        Counts {
            sqs_requests: sqs.total() as f64,
            dynamodb_requests: all.request_total() as f64,
            wru: u.wru(),
            rru: u.rru(),
        }
    };
    let mut lines: BTreeMap<String, Counts> = BTreeMap::new();
    let mut index_wru: BTreeMap<String, f64> = BTreeMap::new();
    let mut indexes = Counts::default();
    for (name, usage) in &capacity.by_purpose {
        if leave_out.contains(&name.as_str()) {
            continue;
        }
        let u = units(usage, real);
        // A purpose's reads include the index queries it made; index
        // writes, the churn every write causes, are a line of their own.
        lines.insert(
            name.clone(),
            Counts {
                dynamodb_requests: usage.request_total() as f64,
                wru: u.table_wru,
                rru: u.rru(),
                ..Counts::default()
            },
        );
        indexes.wru += u.index_wru_total();
        for (index, w) in &u.index_wru {
            *index_wru.entry(index.clone()).or_default() += w;
        }
    }
    lines.insert("indexes".to_string(), indexes);
    lines.insert("sqs".to_string(), Counts { sqs_requests: sqs.total() as f64, ..Counts::default() });
    let other = cost::step_cost(&counts_of(!real), steps, prices);
    let per_step = |x: f64| cost::round(x / steps.max(1) as f64, 4);
    CostReport {
        prices: *prices,
        total: cost::step_cost(&counts_of(real), steps, prices),
        capacity_source: if real { "consumed_capacity" } else { "item_size_rules" },
        by_purpose: cost::by_purpose(&lines, steps, prices),
        index_wru_per_step: index_wru.into_iter().map(|(k, v)| (k, per_step(v))).collect(),
        other_source: OtherSource {
            source: if real { "item_size_rules" } else { "consumed_capacity" },
            wru_per_step: other.wru_per_step,
            rru_per_step: other.rru_per_step,
            usd_per_million_steps: other.usd_per_million_steps,
        },
        sqs_requests_per_step_by_queue: sqs
            .by_queue
            .iter()
            .map(|(q, a)| (q.strip_prefix(prefix).unwrap_or(q).to_string(), per_step(a.values().sum::<u64>() as f64)))
            .collect(),
        failed_conditions: all.failed_conditions,
        calls_of_unknown_size: all.size_unknown,
    }
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

/// Counts every request over the idle window: long polls per poller, and
/// per process its queue's requests (the orchestrator's also its store's).
async fn measure_idle(
    backend: &AwsBackend,
    options: &BenchSqsOptions,
    pollers: usize,
    services: &[String],
) -> IdleReport {
    let requests = backend.requests();
    let before = requests.snapshot();
    let capacity_before = backend.capacity().map(|m| m.snapshot());
    let dynamo_before = backend.dynamodb_requests().snapshot();
    let started = Instant::now();
    tokio::time::sleep(options.idle).await;
    let secs = started.elapsed().as_secs_f64();
    let sqs = requests.snapshot().since(&before);
    let capacity = match (backend.capacity(), capacity_before) {
        (Some(m), Some(b)) => m.snapshot().since(&b),
        _ => CapacitySnapshot::default(),
    };
    let store = capacity.total_without(&[purpose::BENCH]);
    let real = reported_is_real(&capacity);
    let prefix = &backend.settings().queue_prefix;
    let mut processes = BTreeMap::new();
    for name in std::iter::once(ORCHESTRATOR_QUEUE.to_string()).chain(services.iter().cloned()) {
        let mut counts = Counts { sqs_requests: sqs.on_queue(&format!("{prefix}{name}")) as f64, ..Counts::default() };
        if name == ORCHESTRATOR_QUEUE {
            let u = units(&store, real);
            counts.dynamodb_requests = store.request_total() as f64;
            counts.wru = u.wru();
            counts.rru = u.rru();
        }
        processes.insert(name, cost::hour_cost(&counts, secs, &options.prices));
    }
    let n = processes.len().max(1) as f64;
    let receives = sqs.get("ReceiveMessage");
    let mut dynamodb_by_action = backend.dynamodb_requests().snapshot().since(&dynamo_before).by_action;
    if let Some(bench) = capacity.by_purpose.get(purpose::BENCH) {
        for (action, n) in &bench.requests {
            if let Some(v) = dynamodb_by_action.get_mut(action) {
                *v = v.saturating_sub(*n);
            }
        }
    }
    IdleReport {
        window_s: round3(secs),
        pollers,
        receives,
        requests_per_poller_per_minute: round3(receives as f64 / pollers.max(1) as f64 / (secs / 60.0)),
        requests_per_hour_per_process: cost::round(
            processes.values().map(|p| p.sqs_requests_per_hour + p.dynamodb_requests_per_hour).sum::<f64>() / n,
            1,
        ),
        usd_per_hour_per_process: cost::round(processes.values().map(|p| p.usd_per_hour).sum::<f64>() / n, 6),
        processes,
        dynamodb_by_action,
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
    let (step_p50_ms, step_p99_ms) = step_latency(records.iter().map(|r| &r.instance));
    // The batching figure: message operations (the readiness loops' checks are in the cost).
    let total = requests.total() - requests.get("GetQueueAttributes");
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
        step_p50_ms,
        step_p99_ms,
        cost: None,
    })
}

/// p50 and p99 of step latency (dispatch to reply recorded) over the
/// finished steps of `sagas`, in ms.
pub fn step_latency<'a>(sagas: impl Iterator<Item = &'a SagaInstance>) -> (f64, f64) {
    let mut latencies: Vec<u64> = sagas
        .flat_map(|s| s.steps.iter())
        .filter(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Refused | StepStatus::Compensated))
        .filter_map(|s| Some(s.finished_at?.saturating_sub(s.started_at?)))
        .collect();
    latencies.sort_unstable();
    (sqsaga_order::run::percentile(&latencies, 0.50), sqsaga_order::run::percentile(&latencies, 0.99))
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
        writeln!(f, "  step latency (dispatch to reply): p50 {:.0} ms, p99 {:.0} ms", b.step_p50_ms, b.step_p99_ms)?;
        if let Some(c) = &b.cost {
            let t = &c.total;
            writeln!(
                f,
                "  cost:    ${:.3} per million steps (SQS ${:.3}, writes ${:.3}, reads ${:.3}; capacity by {})",
                t.usd_per_million_steps,
                t.usd_per_million_steps_sqs,
                t.usd_per_million_steps_wru,
                t.usd_per_million_steps_rru,
                c.capacity_source
            )?;
            writeln!(
                f,
                "           per step: {:.3} SQS requests, {:.3} DynamoDB requests, {:.3} WRU, {:.3} RRU",
                t.sqs_requests_per_step, t.dynamodb_requests_per_step, t.wru_per_step, t.rru_per_step
            )?;
            let o = &c.other_source;
            writeln!(
                f,
                "           by {}: {:.3} WRU, {:.3} RRU per step, ${:.3} per million steps",
                o.source, o.wru_per_step, o.rru_per_step, o.usd_per_million_steps
            )?;
            for (purpose, p) in &c.by_purpose {
                writeln!(
                    f,
                    "           {purpose:<10} {:>7.3} req {:>7.3} WRU {:>7.3} RRU  ${:.3}/M steps",
                    p.sqs_requests_per_step + p.dynamodb_requests_per_step,
                    p.wru_per_step,
                    p.rru_per_step,
                    p.usd_per_million_steps
                )?;
            }
            writeln!(f, "           index WRU per step: {:?}", c.index_wru_per_step)?;
        }
        if let Some(i) = &self.idle {
            writeln!(
                f,
                "  idle cost: {:.0} requests and ${:.5} per hour per process (mean of {})",
                i.requests_per_hour_per_process,
                i.usd_per_hour_per_process,
                i.processes.len()
            )?;
            for (name, p) in &i.processes {
                writeln!(
                    f,
                    "           {name:<13} {:>7.0} SQS + {:>7.0} DynamoDB requests/h  ${:.5}/h",
                    p.sqs_requests_per_hour, p.dynamodb_requests_per_hour, p.usd_per_hour
                )?;
            }
        }
        let invariants = b.invariants_ok && self.naive.as_ref().is_none_or(|n| n.invariants_ok);
        writeln!(f, "  invariants: {}", if invariants { "ok" } else { "VIOLATED" })?;
        writeln!(f, "  targets: {}", if self.targets_met() { "met" } else { "MISSED" })
    }
}
