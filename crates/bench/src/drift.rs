//! `sqsaga bench drift`: the drift guard end to end, in one process on the
//! embedded backend. N inventory workers, one of which is drifted (another
//! log level, so another configuration hash), with the orchestrator's fleet
//! view: time from the drifted worker's first heartbeat to a `drifted`
//! verdict naming it, then order sagas, counting the steps the drifted
//! worker ran, in `observe` and in `enforce` mode.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sqsaga_config::{Settings, Sources};
use sqsaga_core::machine::SagaStatus;
use sqsaga_drift::{Fingerprint, FingerprintParts, FleetOptions, FleetPolicy, Mode, ServiceView, Verdict};
use sqsaga_embedded::EmbeddedBackend;
use sqsaga_orchestrator::{FleetMonitor, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues};
use sqsaga_order::SERVICES;
use sqsaga_queue::QueueSpec;
use sqsaga_runtime::Stack;
use sqsaga_runtime::identity::{GIT_SHA, VERSION, heartbeat_fields};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;
use sqsaga_worker::{Worker, WorkerOptions};

use crate::BenchError;

/// How the benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchDriftOptions {
    /// Inventory workers, one of which is drifted (a different log level).
    pub workers: usize,
    /// Order sagas run per mode, once the verdict is in.
    pub orders: usize,
    /// Heartbeat interval of every worker.
    pub heartbeat: Duration,
    /// Start the drifted worker two intervals after its siblings (as a
    /// hand-edited node restarting would): it then looks like a rollout and
    /// is `rolling` until the rollout window ends.
    pub late: bool,
    /// The policy's rollout window (`rolloutWindow`).
    pub rollout_window: Duration,
}

/// One mode's figures.
#[derive(Debug, Serialize)]
pub struct DriftRun {
    pub mode: Mode,
    /// From the drifted worker's first heartbeat (its `sent_at`) to the
    /// first `drifted` verdict naming it.
    pub verdict_ms: u64,
    /// The same, in heartbeat intervals (target: at most 2).
    pub verdict_intervals: f64,
    /// The verdict's differences, as sentences.
    pub differences: Vec<String>,
    /// Steps (commands run to a reply) by the drifted worker.
    pub steps_by_drifted_worker: u64,
    /// Replies the orchestrator counted as from a non-conforming worker.
    pub steps_counted_nonconforming: u64,
    /// Commands the drifted worker released instead of running.
    pub commands_released_by_drifted_worker: u64,
    /// Whether the drifted worker ended quarantined.
    pub drifted_worker_quarantined: bool,
    pub sagas: usize,
    pub sagas_finished: usize,
    pub invariants_ok: bool,
    pub elapsed_s: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchDriftReport {
    pub workers: usize,
    pub heartbeat_interval_ms: u64,
    /// The drifted worker started two intervals after its siblings.
    pub late: bool,
    pub rollout_window_ms: u64,
    pub orders: usize,
    pub runs: Vec<DriftRun>,
    /// The verdict within two intervals (late: within the rollout window
    /// plus two intervals) in every mode, and zero steps by the drifted
    /// worker in enforce.
    pub targets_met: bool,
}

const DRIFTED: &str = "inventory-drifted";

/// Runs both modes, each in a fresh temporary directory.
pub async fn bench_drift(args: &BenchDriftOptions) -> Result<BenchDriftReport, BenchError> {
    if args.workers < 2 {
        return Err(BenchError::Io("--workers must be at least 2 (one drifted, at least one conforming)".into()));
    }
    let exe = sqsaga_drift::executable_sha256()
        .map_err(|e| BenchError::Io(format!("cannot hash the running executable: {e}")))?;
    let mut runs = Vec::new();
    for mode in [Mode::Observe, Mode::Enforce] {
        runs.push(drift_run(args, mode, &exe).await?);
    }
    let interval_ms = u64::try_from(args.heartbeat.as_millis()).unwrap_or(u64::MAX);
    let window_ms = u64::try_from(args.rollout_window.as_millis()).unwrap_or(u64::MAX);
    let budget_ms = 2 * interval_ms + if args.late { window_ms } else { 0 };
    let targets_met = runs.iter().all(|r| r.verdict_ms <= budget_ms && r.invariants_ok && r.sagas_finished == r.sagas)
        && runs.iter().filter(|r| r.mode == Mode::Enforce).all(|r| r.steps_by_drifted_worker == 0);
    Ok(BenchDriftReport {
        workers: args.workers,
        heartbeat_interval_ms: interval_ms,
        late: args.late,
        rollout_window_ms: window_ms,
        orders: args.orders,
        runs,
        targets_met,
    })
}

/// Fingerprint parts of a worker of `service`, configured by `env`.
fn bench_fingerprint(env: &[(&str, &str)], contracts: Vec<String>, exe: &str) -> Result<Fingerprint, BenchError> {
    let map: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let settings =
        Settings::resolve(&Sources::new(&map)).map_err(|e| BenchError::Io(format!("bench settings rejected: {e}")))?;
    Ok(Fingerprint::new(FingerprintParts {
        version: VERSION.to_string(),
        git_sha: GIT_SHA.to_string(),
        executable_sha256: exe.to_string(),
        config_hash: settings.config_hash(),
        contracts,
        config: settings.effective(),
    }))
}

async fn drift_run(args: &BenchDriftOptions, mode: Mode, exe: &str) -> Result<DriftRun, BenchError> {
    let dir = crate::sqs::temp_dir("bench-drift")?;
    let result = drift_run_in(args, mode, exe, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn drift_run_in(args: &BenchDriftOptions, mode: Mode, exe: &str, dir: &Path) -> Result<DriftRun, BenchError> {
    let backend = EmbeddedBackend::open(dir, Sync::Full).map_err(|e| BenchError::Io(e.to_string()))?;
    let queue = backend.queue();
    let store = backend.store();
    let defs = Arc::new(sqsaga_order::run::definitions()?);
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await?;
    let options = FleetOptions { heartbeat_interval: args.heartbeat, ..FleetOptions::default() };
    let mut policy = FleetPolicy::with_mode(mode);
    policy.defaults.rollout_window = args.rollout_window;
    let monitor = Arc::new(FleetMonitor::new(policy, options, Arc::new(SystemClock)));
    monitor.require(&defs);
    let mut stack = Stack::new();
    let orchestrator = Orchestrator::new(
        defs,
        queue.clone(),
        store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            pollers: 4,
            wait: Duration::from_secs(1),
            timer_interval: Duration::from_millis(50),
            ..OrchestratorOptions::default()
        },
    )
    .with_fleet(monitor.clone());
    stack.spawn_orchestrator(orchestrator, 4);
    let m = monitor.clone();
    stack.spawn(move |stop| async move { m.run(Duration::from_millis(250), stop.cancelled_owned(), |_| {}).await });

    // The fleet: N inventory workers (the last one drifted), one payment, one notification.
    let mut participants = BTreeMap::new();
    for service in SERVICES {
        participants.insert(service, Arc::new(sqsaga_order::open_participant(dir, service, Sync::Full, 0.0, 7)?));
    }
    let start_worker = |service: &'static str, instance: String, drifted: bool| -> Result<Worker, BenchError> {
        let participant = participants[service].clone();
        let mut env = vec![("SQSAGA_SERVICE", service), ("SQSAGA_DATA_DIR", "bench")];
        if drifted {
            env.push(("LOG_LEVEL", "debug"));
        }
        let fp = bench_fingerprint(&env, participant.contracts(), exe)?;
        let (host, parts) = heartbeat_fields(&fp);
        let options = WorkerOptions {
            concurrency: 4,
            wait: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            fingerprint: fp.id.clone(),
            heartbeat_interval: Some(args.heartbeat),
            host,
            fingerprint_parts: parts,
            ..WorkerOptions::new(service, &instance)
        };
        Ok(Worker::new(options, queue.clone(), participant))
    };
    let mut siblings: Vec<(&'static str, String)> =
        (1..args.workers).map(|i| ("inventory", format!("inventory-{i}"))).collect();
    siblings.extend(SERVICES.iter().filter(|s| **s != "inventory").map(|s| (*s, format!("{s}-1"))));
    for (service, instance) in siblings {
        stack.spawn_worker(start_worker(service, instance, false)?, 4);
    }
    if args.late {
        let deadline = Instant::now() + args.heartbeat * 10 + Duration::from_secs(10);
        while monitor.snapshot().service("inventory").is_none_or(|s| s.live().count() < args.workers - 1) {
            if Instant::now() > deadline {
                return Err(BenchError::Io("the siblings never sent a heartbeat".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(args.heartbeat * 2).await;
    }
    let drifted = start_worker("inventory", DRIFTED.to_string(), true)?;
    let drifted_stats = drifted.stats();
    let drifted_quarantine = drifted.quarantine();
    stack.spawn_worker(drifted, 4);

    // Time from the drifted worker's first heartbeat to the verdict naming it.
    let started = Instant::now();
    let mut first_heartbeat = None;
    let (verdict_at, differences) = loop {
        let snapshot = monitor.snapshot();
        let inventory = snapshot.service("inventory");
        if first_heartbeat.is_none() {
            first_heartbeat =
                inventory.and_then(|s| s.instances.iter().find(|i| i.instance == DRIFTED)).map(|i| i.sent_at);
        }
        if let (Some(_), Some(s)) = (first_heartbeat, inventory)
            && names_drifted(s)
        {
            break (
                sqsaga_orchestrator::clock::now_ms(),
                s.differences.iter().map(ToString::to_string).collect::<Vec<_>>(),
            );
        }
        if started.elapsed() > args.heartbeat * 10 + args.rollout_window + Duration::from_secs(10) {
            return Err(BenchError::Io(
                "no drifted verdict within the rollout window and ten heartbeat intervals".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let first = first_heartbeat.unwrap_or(verdict_at);
    let verdict_ms = verdict_at.saturating_sub(first);
    // Steady state: stamps from the first interval after a worker's first
    // heartbeat do not quarantine it (they may predate the orchestrator
    // knowing it); start the sagas after that.
    let settle = Duration::from_millis(first + 250).saturating_sub(Duration::from_millis(verdict_at)) + args.heartbeat;
    tokio::time::sleep(settle).await;

    // The sagas, once the fleet view knows the fleet.
    let (initial, inputs) = sqsaga_order::generate_orders(args.orders, 7);
    sqsaga_order::seed_data(dir, &initial)?;
    let ids: Vec<String> = (0..inputs.len()).map(|i| format!("drift-{}-{i:05}", mode.as_str())).collect();
    let run_started = Instant::now();
    let sagas: Vec<(String, Value)> = ids.iter().cloned().zip(inputs.iter().cloned()).collect();
    sqsaga_order::run::start_sagas(queue.as_ref(), &sagas, None, sqsaga_orchestrator::clock::now_ms()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let records = loop {
        let records = store.load(&ids).await?;
        let done = records.iter().filter(|r| r.instance.status.is_terminal()).count();
        if done == ids.len() || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = run_started.elapsed();
    let finished = records.iter().filter(|r| r.instance.status.is_terminal()).count();
    let statuses: BTreeMap<String, SagaStatus> =
        records.iter().map(|r| (r.instance.id.clone(), r.instance.status)).collect();
    let sagas: Vec<(String, SagaStatus, Value)> = ids
        .iter()
        .zip(&inputs)
        .map(|(id, input)| (id.clone(), statuses.get(id).copied().unwrap_or(SagaStatus::Running), input.clone()))
        .collect();
    let report = sqsaga_order::check_invariants(dir, &sagas, &initial)?;
    let quarantined = drifted_quarantine.borrow().is_some();
    let stats = drifted_stats.snapshot();
    stack.stop().await;
    let interval_ms = args.heartbeat.as_millis().max(1) as f64;
    Ok(DriftRun {
        mode,
        verdict_ms,
        verdict_intervals: (verdict_ms as f64 / interval_ms * 100.0).round() / 100.0,
        differences,
        steps_by_drifted_worker: stats.processed,
        steps_counted_nonconforming: monitor.steps_by_nonconforming().get("inventory").copied().unwrap_or(0),
        commands_released_by_drifted_worker: stats.refused_nonconforming,
        drifted_worker_quarantined: quarantined,
        sagas: ids.len(),
        sagas_finished: finished,
        invariants_ok: report.ok,
        elapsed_s: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
    })
}

/// A `drifted` verdict that names the drifted worker.
fn names_drifted(s: &ServiceView) -> bool {
    s.verdict == Verdict::Drifted && s.differences.iter().any(|d| d.instance == DRIFTED)
}

impl std::fmt::Display for BenchDriftReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "bench drift: {} inventory workers, 1 drifted (log_level) started {}, heartbeat {} ms, rollout window {}, {} sagas per mode",
            self.workers,
            if self.late { "two intervals after its siblings" } else { "with its siblings" },
            self.heartbeat_interval_ms,
            sqsaga_core::duration::format_duration(Duration::from_millis(self.rollout_window_ms)),
            self.orders
        )?;
        writeln!(
            f,
            "  {:<8} {:>12} {:>10} {:>15} {:>10} {:>9} {:>12} {:>11}",
            "mode", "verdict ms", "intervals", "drifted steps", "counted", "released", "quarantined", "sagas done"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "  {:<8} {:>12} {:>10.2} {:>15} {:>10} {:>9} {:>12} {:>7}/{}",
                r.mode.as_str(),
                r.verdict_ms,
                r.verdict_intervals,
                r.steps_by_drifted_worker,
                r.steps_counted_nonconforming,
                r.commands_released_by_drifted_worker,
                if r.drifted_worker_quarantined { "yes" } else { "no" },
                r.sagas_finished,
                r.sagas
            )?;
        }
        if let Some(r) = self.runs.first() {
            for d in &r.differences {
                writeln!(f, "  verdict: {d}")?;
            }
        }
        writeln!(
            f,
            "  targets (verdict <= {}; 0 steps by the drifted worker in enforce): {}",
            if self.late { "rollout window + 2 intervals" } else { "2 intervals" },
            if self.targets_met { "met" } else { "NOT MET" }
        )?;
        Ok(())
    }
}
