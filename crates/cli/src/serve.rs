//! The long-running processes: `sqsaga orchestrator` and `sqsaga worker`,
//! plus `sqsaga config check`. Each resolves its configuration (every problem
//! reported at once, before any queue is touched), opens the backend, serves
//! `/healthz`, `/readyz` and `/metrics`, and runs until SIGTERM/SIGINT, then
//! drains within the configured budget and exits 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sqsaga_config::{Backend, Settings, Sources};
use sqsaga_core::machine::SagaStatus;
use sqsaga_drift::{Fingerprint, FingerprintParts};
use sqsaga_embedded::EmbeddedBackend;
use sqsaga_http::metrics::{MetricsSource, Text};
use sqsaga_http::{Probe, router, serve};
use sqsaga_orchestrator::{ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, OrchestratorStats, SystemClock};
use sqsaga_queue::{Queue, QueueSpec};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;
use sqsaga_worker::{Worker, WorkerOptions, WorkerStats};

use crate::demo::{SERVICES, load_definitions, open_participant};
use crate::{readiness, signals};

/// Binary version, for build info and fingerprints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Git commit of the build (see build.rs).
pub const GIT_SHA: &str = env!("BUILD_GIT_SHA");

/// Flags shared by every configured process. Everything else comes from the
/// environment and the config file (see README, Configuration).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// JSON config file (Chef's /etc/sqsaga/config.json); also `SQSAGA_CONFIG`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Embedded data directory; overrides `SQSAGA_DATA_DIR` and `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Participant service to run (inventory, payment, notification); overrides `SQSAGA_SERVICE`.
    #[arg(long)]
    pub service: Option<String>,
    /// Probability that a notification attempt fails transiently (demo participant).
    #[arg(long, default_value_t = 0.2)]
    pub failure_rate: f64,
    /// Seed of the injected failures.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Test knob: every handler sleeps this long (e.g. `2s`) inside its local
    /// transaction before doing its work, so tests can stop a worker mid-step.
    #[arg(long, hide = true, value_parser = parse_delay)]
    pub handler_delay: Option<Duration>,
    /// Drift drills: serve without this contract's handlers (repeatable), as
    /// a build lacking it would; its fingerprint says so.
    #[arg(long, hide = true)]
    pub without_contract: Vec<String>,
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    sqsaga_core::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Sets up logging, and trace export when an OTLP endpoint is configured;
/// `Err` carries the exit code after printing the problem (a configuration
/// problem, so 2, like every other).
fn init_logging(settings: &Settings, service: &str) -> Result<(), ExitCode> {
    let otlp = settings.otlp_endpoint.as_deref().map(|endpoint| (endpoint, service));
    crate::logging::init_process(settings.log_level.as_str(), otlp).map_err(|e| {
        eprintln!("error: invalid configuration (1 problem(s)):\n  {e}");
        ExitCode::from(2)
    })
}

/// Resolves settings from flags, the environment and the config file.
/// Every problem is printed, naming the variable or key; `Err` carries the exit code.
pub fn resolve(config: &ConfigArgs, service: Option<&str>) -> Result<Settings, ExitCode> {
    let env = sqsaga_config::env_map();
    let mut sources = Sources::new(&env);
    if let Some(path) = &config.config {
        sources = sources.with_config_path(path.clone());
    }
    if let Some(dir) = &config.data_dir {
        sources = sources.with_flag("data_dir", dir.display().to_string());
    }
    if let Some(service) = service {
        sources = sources.with_flag("service", service);
    }
    Settings::resolve(&sources).map_err(|errors| {
        eprintln!("error: invalid configuration ({} problem(s)):", errors.0.len());
        for problem in &errors.0 {
            eprintln!("  {problem}");
        }
        ExitCode::from(2)
    })
}

/// `sqsaga config check`: the effective configuration, secrets redacted, and its hash.
pub fn config_check(config: ConfigArgs) -> Result<ExitCode> {
    match resolve(&config, None) {
        Ok(settings) => {
            println!("{}", settings.redacted_report());
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// The process's fingerprint; contracts are those it implements.
pub fn fingerprint(settings: &Settings, contracts: Vec<String>) -> Fingerprint {
    let executable_sha256 = sqsaga_drift::executable_sha256().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Cannot hash the running executable; the fingerprint will say so.");
        format!("unreadable: {e}")
    });
    Fingerprint::new(FingerprintParts {
        version: VERSION.to_string(),
        git_sha: GIT_SHA.to_string(),
        executable_sha256,
        config_hash: settings.config_hash(),
        contracts,
        config: settings.effective(),
    })
}

/// The queue and store of the configured backend.
pub struct Opened {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn SagaStore>,
    /// The SQLite backend, when that is the one (commit counts for benchmarks).
    pub embedded: Option<EmbeddedBackend>,
    /// The AWS backend, when that is the one (provisioning, request counts).
    pub aws: Option<sqsaga_aws::AwsBackend>,
}

impl Opened {
    /// Backend-specific metrics (`sqsaga_sqs_requests_total` on AWS).
    pub fn metrics(&self) -> Vec<Arc<dyn MetricsSource>> {
        match &self.aws {
            Some(aws) => vec![Arc::new(AwsRequests(aws.clone()))],
            None => Vec::new(),
        }
    }
}

/// `sqsaga_sqs_requests_total{action}` and the DynamoDB counterpart.
struct AwsRequests(sqsaga_aws::AwsBackend);

impl MetricsSource for AwsRequests {
    fn render(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

pub async fn open_backend(settings: &Settings) -> Result<Opened> {
    match settings.backend {
        Backend::Embedded => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("cannot create data dir {}", settings.data_dir.display()))?;
            let backend = EmbeddedBackend::open(&settings.data_dir, Sync::Full)?;
            Ok(Opened { queue: backend.queue(), store: backend.store(), embedded: Some(backend), aws: None })
        }
        Backend::Aws => {
            let backend = crate::aws_cmd::connect(settings).await?;
            Ok(Opened { queue: backend.queue(), store: backend.store(), embedded: None, aws: Some(backend) })
        }
    }
}

/// Settings for one-shot commands: environment and config file, with the
/// data dir (and optionally the backend) given on the command line.
pub fn settings_for(data_dir: &std::path::Path, backend: Option<&str>) -> Result<Settings> {
    let mut env = sqsaga_config::env_map();
    if let Some(backend) = backend {
        env.insert("SQSAGA_BACKEND".to_string(), backend.to_string());
    }
    let sources = Sources::new(&env).with_flag("data_dir", data_dir.display().to_string());
    Settings::resolve(&sources).map_err(|errors| {
        let lines: Vec<String> = errors.0.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!("invalid configuration ({} problem(s)):\n{}", errors.0.len(), lines.join("\n"))
    })
}

fn queue_spec(settings: &Settings, name: &str) -> QueueSpec {
    QueueSpec {
        visibility_timeout: settings.visibility_timeout,
        max_receive_count: settings.max_receive_count,
        ..QueueSpec::named(name)
    }
}

/// `sqsaga_build_info{service,version,git_sha,fingerprint} 1`.
struct BuildInfo {
    service: String,
    fingerprint: String,
}

impl MetricsSource for BuildInfo {
    fn render(&self, out: &mut String) {
        let mut t = Text::new(out);
        t.gauge(
            "sqsaga_build_info",
            "Build and fingerprint of this process (always 1).",
            &[
                ("service", &self.service),
                ("version", VERSION),
                ("git_sha", GIT_SHA),
                ("fingerprint", &self.fingerprint),
            ],
            1.0,
        );
    }
}

/// A worker's counters and latency histograms.
struct WorkerMetrics {
    service: String,
    stats: Arc<WorkerStats>,
}

impl MetricsSource for WorkerMetrics {
    fn render(&self, out: &mut String) {
        let s = self.stats.snapshot();
        let svc = [("service", self.service.as_str())];
        let mut t = Text::new(out);
        let counters: [(&str, &str, u64); 9] = [
            ("sqsaga_messages_received_total", "Messages received from the service queue.", s.received),
            (
                "sqsaga_messages_processed_total",
                "Messages handled to the end (executed, replied, deleted).",
                s.processed,
            ),
            ("sqsaga_messages_failed_total", "Commands whose handler failed transiently.", s.failed),
            ("sqsaga_messages_refused_total", "Commands answered with a business refusal.", s.refused),
            ("sqsaga_messages_dead_lettered_total", "Messages moved to the DLQ (poison).", s.dead_lettered),
            ("sqsaga_barrier_duplicates_total", "Commands the barrier recognised as already handled.", s.duplicates),
            (
                "sqsaga_barrier_null_compensations_total",
                "Compensations that found no action to undo.",
                s.null_compensations,
            ),
            ("sqsaga_barrier_hanging_total", "Actions refused because their compensation came first.", s.hanging),
            (
                "sqsaga_messages_released_total",
                "Messages handed back unstarted (shutdown or not conforming).",
                s.released,
            ),
        ];
        for (name, help, value) in counters {
            t.counter(name, help, &svc, value);
        }
        t.gauge("sqsaga_messages_in_flight", "Messages received and not yet finished.", &svc, s.in_flight as f64);
        for (command, h) in &s.latency {
            let mut previous = 0;
            let bounds: Vec<f64> = h.buckets.iter().map(|(le, _)| *le).filter(|le| le.is_finite()).collect();
            let counts: Vec<u64> = h
                .buckets
                .iter()
                .filter(|(le, _)| le.is_finite())
                .map(|(_, cumulative)| {
                    let n = cumulative.saturating_sub(previous);
                    previous = *cumulative;
                    n
                })
                .collect();
            t.histogram(
                "sqsaga_step_duration_seconds",
                "Time to run one command through the barrier, including its local commit.",
                &[("service", self.service.as_str()), ("command", command.as_str())],
                &bounds,
                &counts,
                h.sum_seconds,
                h.count,
            );
        }
    }
}

/// The orchestrator's counters and saga counts by state.
struct OrchestratorMetrics {
    stats: Arc<OrchestratorStats>,
    /// Refreshed by the readiness loop, so a scrape never waits on the store.
    counts: Arc<Mutex<BTreeMap<SagaStatus, u64>>>,
}

impl MetricsSource for OrchestratorMetrics {
    fn render(&self, out: &mut String) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.stats;
        let mut t = Text::new(out);
        let counters: [(&str, &str, u64); 9] = [
            (
                "sqsaga_messages_received_total",
                "Messages received from the orchestrator queue.",
                s.messages_received.load(Relaxed),
            ),
            ("sqsaga_events_applied_total", "Events that changed a saga.", s.events_applied.load(Relaxed)),
            ("sqsaga_events_ignored_total", "Stale or duplicate events (no change).", s.events_ignored.load(Relaxed)),
            ("sqsaga_sagas_started_total", "Sagas started.", s.sagas_started.load(Relaxed)),
            (
                "sqsaga_commands_sent_total",
                "Commands emitted to workers (through the outbox).",
                s.commands_sent.load(Relaxed),
            ),
            (
                "sqsaga_write_conflicts_total",
                "Saga writes that lost a revision race and were re-applied.",
                s.write_conflicts.load(Relaxed),
            ),
            (
                "sqsaga_messages_dead_lettered_total",
                "Messages moved to the DLQ (poison).",
                s.dead_lettered.load(Relaxed),
            ),
            (
                "sqsaga_store_errors_total",
                "Batches that failed on the saga store and will be retried.",
                s.store_errors.load(Relaxed),
            ),
            ("sqsaga_queue_errors_total", "Queue calls that failed and will be retried.", s.queue_errors.load(Relaxed)),
        ];
        for (name, help, value) in counters {
            t.counter(name, help, &[], value);
        }
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        for status in SagaStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            t.gauge("sqsaga_sagas", "Sagas by state.", &[("state", status.as_str())], n as f64);
        }
        let stuck = counts.get(&SagaStatus::NeedsOperator).copied().unwrap_or(0);
        t.gauge("sqsaga_sagas_needing_operator", "Sagas whose compensation needs an operator.", &[], stuck as f64);
    }
}

pub async fn orchestrator(args: OrchestratorArgs) -> Result<ExitCode> {
    let settings = match resolve(&args.config, None) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if let Err(code) = init_logging(&settings, "orchestrator") {
        return Ok(code);
    }
    // Signals first: a SIGTERM during start-up must also end in a clean exit.
    let shutdown = signals::on_signals();
    let defs_paths: Vec<PathBuf> = settings.definitions.iter().cloned().collect();
    let defs = Arc::new(load_definitions(&defs_paths)?);
    let fleet = match crate::fleet::OrchestratorFleet::setup(&settings, &defs) {
        Ok(f) => f,
        Err(code) => return Ok(code),
    };
    let opened = open_backend(&settings).await?;
    sqsaga_orchestrator::ensure_queues(opened.queue.as_ref(), &defs, &queue_spec(&settings, "template")).await?;
    let fp = fingerprint(&settings, Vec::new());
    let probe = Probe::new();
    probe.set_info("service", serde_json::json!("orchestrator"));
    probe.set_info("fingerprint", serde_json::json!(fp.id));
    probe.register_loop("readiness", Duration::from_secs(30));
    let orchestrator = Orchestrator::new(
        defs,
        opened.queue.clone(),
        opened.store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            signing: crate::sealing::signing(&settings),
            pollers: settings.concurrency,
            wait: settings.wait_time,
            visibility: settings.visibility_timeout,
            ..OrchestratorOptions::default()
        },
    )
    .with_fleet(fleet.monitor.clone());
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let sources: Vec<Arc<dyn MetricsSource>> = vec![
        Arc::new(BuildInfo { service: "orchestrator".into(), fingerprint: fp.id.clone() }),
        Arc::new(OrchestratorMetrics { stats: orchestrator.stats(), counts: counts.clone() }),
        fleet.metrics(),
    ];
    let sources = [sources, opened.metrics()].concat();
    let app = router(probe.clone(), sources).merge(fleet.route());
    let (addr, http) = serve(settings.http_addr, app, shutdown.clone().wait()).await?;
    let fleet_loop = fleet.spawn(probe.clone(), shutdown.clone());
    tracing::info!(http = %addr, fingerprint = %fp.short(), backend = settings.backend.as_str(), "Orchestrator started.");
    let watched = readiness::Watched {
        queue: opened.queue.clone(),
        queue_name: ORCHESTRATOR_QUEUE.to_string(),
        store: Some((opened.store.clone(), counts)),
    };
    let readiness = readiness::spawn(probe, watched, readiness::INTERVAL, shutdown.clone());
    orchestrator.run(shutdown.wait()).await;
    let _ = readiness.await;
    let _ = fleet_loop.await;
    let _ = http.await;
    tracing::info!("Orchestrator exited cleanly.");
    Ok(ExitCode::SUCCESS)
}

pub async fn worker(args: WorkerArgs) -> Result<ExitCode> {
    // Before hashing the executable: siblings started together report (nearly) the same start.
    let started_at = sqsaga_orchestrator::clock::now_ms();
    let settings = match resolve(&args.config, args.service.as_deref()) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    if let Err(code) = init_logging(&settings, settings.service.as_deref().unwrap_or("worker")) {
        return Ok(code);
    }
    let shutdown = signals::on_signals();
    let Some(service) = settings.service.clone() else {
        eprintln!(
            "error: invalid configuration (1 problem(s)):\n  no service: set --service, SQSAGA_SERVICE or `service` in the config file"
        );
        return Ok(ExitCode::from(2));
    };
    if !SERVICES.contains(&service.as_str()) {
        eprintln!(
            "error: invalid configuration (1 problem(s)):\n  service `{service}`: this binary implements {}",
            SERVICES.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    let opened = open_backend(&settings).await?;
    opened.queue.ensure(&queue_spec(&settings, &service)).await?;
    let mut participant = open_participant(&settings.data_dir, &service, args.failure_rate, args.seed)?;
    if let Some(delay) = args.handler_delay {
        tracing::warn!(delay_ms = delay.as_millis() as u64, "Test knob --handler-delay: every handler sleeps first.");
        participant.delay_handlers(delay);
    }
    for contract in &args.without_contract {
        let removed = participant.remove_contract(contract);
        tracing::warn!(contract = %contract, removed, "Drill knob --without-contract: handlers of this contract are not served.");
    }
    let participant = Arc::new(participant);
    let fp = fingerprint(&settings, participant.contracts());
    let probe = Probe::new();
    probe.set_info("service", serde_json::json!(service));
    probe.set_info("instance", serde_json::json!(settings.instance_id));
    probe.set_info("fingerprint", serde_json::json!(fp.id));
    probe.register_loop("readiness", Duration::from_secs(30));
    let options = WorkerOptions {
        concurrency: settings.concurrency,
        wait: settings.wait_time,
        visibility: settings.visibility_timeout,
        drain_timeout: settings.drain_timeout,
        fingerprint: fp.id.clone(),
        signing: crate::sealing::signing(&settings),
        heartbeat_interval: Some(settings.heartbeat_interval),
        host: crate::fleet::heartbeat_fields(&fp).0,
        fingerprint_parts: crate::fleet::heartbeat_fields(&fp).1,
        started_at: Some(started_at),
        ..WorkerOptions::new(&service, &settings.instance_id)
    };
    let worker = Worker::new(options, opened.queue.clone(), participant);
    let quarantine = crate::fleet::forward_quarantine(worker.quarantine(), probe.clone());
    let sources: Vec<Arc<dyn MetricsSource>> = vec![
        Arc::new(BuildInfo { service: service.clone(), fingerprint: fp.id.clone() }),
        Arc::new(WorkerMetrics { service: service.clone(), stats: worker.stats() }),
        crate::fleet::worker_metrics(&service, &worker),
    ];
    let sources = [sources, opened.metrics()].concat();
    let (addr, http) = serve(settings.http_addr, router(probe.clone(), sources), shutdown.clone().wait()).await?;
    tracing::info!(service = %service, http = %addr, fingerprint = %fp.short(), "Worker started.");
    let watched = readiness::Watched { queue: opened.queue.clone(), queue_name: service.clone(), store: None };
    let readiness = readiness::spawn(probe, watched, readiness::INTERVAL, shutdown.clone());
    worker.run(shutdown.wait()).await?;
    let _ = readiness.await;
    let _ = quarantine.await;
    let _ = http.await;
    tracing::info!(service = %service, "Worker exited cleanly.");
    Ok(ExitCode::SUCCESS)
}
