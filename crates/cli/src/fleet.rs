//! The drift guard in the binary: wiring the orchestrator's fleet view
//! (`fleet.yaml`, `GET /fleet`, metrics, readiness info, a persisted
//! snapshot), a worker's quarantine into its `/readyz`, the operator's
//! `sqsaga fleet [--json]`, and `sqsaga bench drift`.
//!
//! The judgement itself is `sqsaga_drift` (pure) behind
//! `sqsaga_orchestrator::FleetMonitor`; this module only connects it to
//! files, HTTP and the terminal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use sqsaga_config::{Backend, DriftMode, Settings, Sources};
use sqsaga_core::machine::SagaStatus;
use sqsaga_drift::{
    Fingerprint, FingerprintParts, FleetOptions, FleetPolicy, FleetSnapshot, Mode, ServiceView, Verdict,
};
use sqsaga_embedded::EmbeddedBackend;
use sqsaga_http::metrics::{MetricsSource, Text};
use sqsaga_http::{JsonSource, Probe, json_route};
use sqsaga_orchestrator::{
    Definitions, FleetMonitor, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues,
};
use sqsaga_protocol::{Envelope, StartSaga};
use sqsaga_queue::{MAX_BATCH, OutgoingMessage, Queue, QueueSpec};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;
use sqsaga_worker::{Worker, WorkerOptions, WorkerStats};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::demo::{SERVICES, load_definitions, open_participant};
use crate::serve::{GIT_SHA, VERSION};
use crate::signals;

/// The orchestrator's persisted fleet view, in the embedded data dir.
pub const SNAPSHOT_FILE: &str = "fleet.json";
/// Path of the fleet view on the orchestrator's HTTP port.
pub const FLEET_PATH: &str = "/fleet";

fn mode_of(m: DriftMode) -> Mode {
    match m {
        DriftMode::Observe => Mode::Observe,
        DriftMode::Enforce => Mode::Enforce,
    }
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

/// The machine's name for heartbeats: `HOSTNAME` (the pod name in
/// Kubernetes), else the kernel's hostname.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// `fleet_policy` if set, else `fleet.yaml` (or `.yml`) in the definitions
/// directory: the policy lives next to the sagas, in Git.
pub fn policy_path(settings: &Settings) -> Option<PathBuf> {
    if let Some(p) = &settings.fleet_policy {
        return Some(p.clone());
    }
    let dir = settings.definitions.as_ref().filter(|d| d.is_dir())?;
    ["fleet.yaml", "fleet.yml"].iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads and checks the fleet policy; every problem printed as
/// `file:line:col`, then exit code 2 (a configuration problem).
pub fn load_policy(settings: &Settings, defs: &Definitions) -> Result<(FleetPolicy, Option<PathBuf>), ExitCode> {
    let mode = mode_of(settings.drift_mode);
    let Some(path) = policy_path(settings) else { return Ok((FleetPolicy::with_mode(mode), None)) };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        eprintln!("error: invalid configuration (1 problem(s)):\n  fleet_policy: cannot read {name}: {e}");
        ExitCode::from(2)
    })?;
    let policy = FleetPolicy::parse(&text, mode).map_err(|problems| {
        eprintln!("error: invalid fleet policy ({} problem(s)):", problems.len());
        eprint!("{}", sqsaga_core::yaml::format_problems(&name, &problems));
        ExitCode::from(2)
    })?;
    let services = defs.services();
    for service in policy.services.keys().filter(|s| !services.contains(s)) {
        tracing::warn!(service = %service, policy = %name, "The fleet policy names a service no saga uses.");
    }
    Ok((policy, Some(path)))
}

/// The orchestrator's drift guard: the monitor and what serves it.
pub struct OrchestratorFleet {
    pub monitor: Arc<FleetMonitor>,
    /// Where the snapshot is persisted (embedded backend only).
    snapshot_file: Option<PathBuf>,
    /// How often the view is re-judged, readiness info refreshed and the snapshot written.
    refresh_every: Duration,
}

impl OrchestratorFleet {
    /// Loads the policy, registers the contracts the sagas need and
    /// restores the previous run's view when there is one.
    pub fn setup(settings: &Settings, defs: &Definitions) -> Result<OrchestratorFleet, ExitCode> {
        let (policy, path) = load_policy(settings, defs)?;
        let options = FleetOptions { heartbeat_interval: settings.heartbeat_interval, ..FleetOptions::default() };
        let enforced: Vec<&str> =
            policy.services.iter().filter(|(_, p)| p.mode == Mode::Enforce).map(|(s, _)| s.as_str()).collect();
        tracing::info!(
            policy = %path.as_ref().map_or("(none)".to_string(), |p| p.display().to_string()),
            default_mode = %policy.defaults.mode,
            enforced = ?enforced,
            heartbeat_interval_ms = u64::try_from(settings.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
            "Fleet policy loaded."
        );
        let monitor = Arc::new(FleetMonitor::new(policy, options, Arc::new(SystemClock)));
        monitor.require(defs);
        let snapshot_file = (settings.backend == Backend::Embedded).then(|| settings.data_dir.join(SNAPSHOT_FILE));
        if let Some(file) = snapshot_file.as_ref().filter(|f| f.is_file()) {
            match std::fs::read_to_string(file)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<FleetSnapshot>(&t).map_err(|e| e.to_string()))
            {
                Ok(snapshot) => {
                    monitor.restore(&snapshot);
                    let instances: usize = snapshot.services.iter().map(|s| s.instances.len()).sum();
                    tracing::info!(file = %file.display(), instances, "Fleet view restored from the last run.");
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "Cannot restore the fleet view; starting empty.")
                }
            }
        }
        let refresh_every = (settings.heartbeat_interval / 2).max(Duration::from_millis(250));
        Ok(OrchestratorFleet { monitor, snapshot_file, refresh_every })
    }

    /// The `/fleet` route, to merge into the HTTP router.
    pub fn route(&self) -> sqsaga_http::Router {
        json_route(FLEET_PATH, Arc::new(FleetJson(self.monitor.clone())))
    }

    /// The fleet metrics.
    pub fn metrics(&self) -> Arc<dyn MetricsSource> {
        Arc::new(FleetMetrics(self.monitor.clone()))
    }

    /// Re-judges periodically: lists services without an eligible worker in
    /// the orchestrator's `/readyz` body and persists the snapshot.
    pub fn spawn(&self, probe: Probe, shutdown: signals::Shutdown) -> JoinHandle<()> {
        let monitor = self.monitor.clone();
        let file = self.snapshot_file.clone();
        let every = self.refresh_every;
        tokio::spawn(async move {
            let mut last_write_error = None;
            monitor
                .run(every, shutdown.wait(), move |snapshot| {
                    publish_readiness(&probe, snapshot);
                    if let Some(file) = &file {
                        let result = write_snapshot(file, snapshot).map_err(|e| e.to_string());
                        if let Err(e) = &result
                            && last_write_error.as_ref() != Some(e)
                        {
                            tracing::warn!(file = %file.display(), error = %e, "Cannot persist the fleet view.");
                        }
                        last_write_error = result.err();
                    }
                })
                .await;
        })
    }
}

/// The fleet view as `/readyz` info: each service's verdict, and the
/// services whose commands have no eligible worker (the orchestrator stays
/// ready — it can work — but says so).
fn publish_readiness(probe: &Probe, snapshot: &FleetSnapshot) {
    let verdicts: serde_json::Map<String, Value> =
        snapshot.services.iter().map(|s| (s.service.clone(), Value::from(s.verdict.as_str()))).collect();
    let blocked: Vec<Value> = snapshot
        .services
        .iter()
        .filter_map(|s| s.blocked.as_ref().map(|b| serde_json::json!({ "service": s.service, "reason": b })))
        .collect();
    probe.set_info("fleet", Value::Object(verdicts));
    probe.set_info("fleet_blocked", Value::Array(blocked));
}

/// Writes the snapshot atomically (temp file, then rename).
fn write_snapshot(file: &Path, snapshot: &FleetSnapshot) -> std::io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(snapshot).unwrap_or_default())?;
    std::fs::rename(&tmp, file)
}

/// `GET /fleet`.
struct FleetJson(Arc<FleetMonitor>);

impl JsonSource for FleetJson {
    fn render(&self) -> Value {
        let mut v = serde_json::to_value(&*self.0.refresh()).unwrap_or(Value::Null);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("steps_by_nonconforming_worker".into(), serde_json::json!(self.0.steps_by_nonconforming()));
        }
        v
    }
}

/// The orchestrator's drift-guard metrics.
struct FleetMetrics(Arc<FleetMonitor>);

impl MetricsSource for FleetMetrics {
    fn render(&self, out: &mut String) {
        let snapshot = self.0.snapshot();
        let steps = self.0.steps_by_nonconforming();
        let mut t = Text::new(out);
        for s in &snapshot.services {
            let svc = [("service", s.service.as_str())];
            let live = s.fingerprints.iter().filter(|g| !g.instances.is_empty()).count();
            t.gauge("sqsaga_fleet_fingerprints", "Distinct fingerprints among live instances.", &svc, live as f64);
            t.gauge(
                "sqsaga_fleet_drifted",
                "1 while the service's fleet verdict is drifted.",
                &svc,
                f64::from(u8::from(s.verdict == Verdict::Drifted)),
            );
            for (state, n) in
                [("live", s.live().count()), ("stale", s.stale.len()), ("quarantined", s.quarantined.len())]
            {
                t.gauge(
                    "sqsaga_fleet_instances",
                    "Instances in the fleet view, by state.",
                    &[("service", s.service.as_str()), ("state", state)],
                    n as f64,
                );
            }
            t.gauge(
                "sqsaga_fleet_no_eligible_worker",
                "1 while the service's commands have no eligible worker (none conforms, or none implements a needed contract).",
                &svc,
                f64::from(u8::from(s.blocked.is_some())),
            );
            t.counter(
                "sqsaga_steps_by_nonconforming_worker_total",
                "Replies from workers outside their service's conforming set.",
                &svc,
                steps.get(&s.service).copied().unwrap_or(0),
            );
        }
        t.counter(
            "sqsaga_fleet_heartbeats_received_total",
            "Worker heartbeats received by this orchestrator.",
            &[],
            self.0.heartbeats_received(),
        );
    }
}

/// A worker's drift-guard metrics.
struct WorkerDriftMetrics {
    service: String,
    stats: Arc<WorkerStats>,
    quarantine: watch::Receiver<Option<String>>,
}

impl MetricsSource for WorkerDriftMetrics {
    fn render(&self, out: &mut String) {
        let s = self.stats.snapshot();
        let svc = [("service", self.service.as_str())];
        let mut t = Text::new(out);
        t.gauge(
            "sqsaga_worker_quarantined",
            "1 while this worker refuses commands because it does not conform (drift guard).",
            &svc,
            f64::from(u8::from(self.quarantine.borrow().is_some())),
        );
        t.counter(
            "sqsaga_commands_refused_nonconforming_total",
            "Commands released because this worker is not in their conforming set.",
            &svc,
            s.refused_nonconforming,
        );
        t.counter(
            "sqsaga_commands_missing_contract_total",
            "Commands released because this worker does not implement their contract.",
            &svc,
            s.released_missing_contract,
        );
        t.counter("sqsaga_heartbeats_sent_total", "Heartbeats sent to the orchestrator.", &svc, s.heartbeats_sent);
    }
}

/// The worker's drift-guard metrics source.
pub fn worker_metrics(service: &str, worker: &Worker) -> Arc<dyn MetricsSource> {
    Arc::new(WorkerDriftMetrics {
        service: service.to_string(),
        stats: worker.stats(),
        quarantine: worker.quarantine(),
    })
}

/// Mirrors the worker's quarantine into its readiness: `/readyz` fails with
/// the reason while quarantined (a rollout stalls instead of spreading) and
/// passes again as soon as the worker conforms.
pub fn forward_quarantine(mut quarantine: watch::Receiver<Option<String>>, probe: Probe) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = quarantine.borrow_and_update().clone();
            match current {
                Some(reason) => {
                    probe.set_info("quarantined", Value::Bool(true));
                    probe.set_unready("drift", format!("quarantined: {reason}"));
                }
                None => {
                    probe.set_info("quarantined", Value::Bool(false));
                    probe.set_ready("drift");
                }
            }
            if quarantine.changed().await.is_err() {
                return;
            }
        }
    })
}

/// What a worker's heartbeats carry besides its fingerprint id.
pub fn heartbeat_fields(fp: &Fingerprint) -> (String, Value) {
    (hostname(), serde_json::to_value(&fp.parts).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------
// `sqsaga fleet`

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The orchestrator's fleet view; default `http://<SQSAGA_HTTP_ADDR>/fleet`.
    #[arg(long)]
    url: Option<String>,
    /// Read a persisted snapshot instead (`<data dir>/fleet.json` of an embedded orchestrator).
    #[arg(long, conflicts_with = "url")]
    file: Option<PathBuf>,
    /// Print the view as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The default URL: the orchestrator's HTTP address from the environment,
/// with a wildcard host replaced by loopback.
fn default_url() -> String {
    let addr = std::env::var("SQSAGA_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".to_string());
    let addr = addr.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "127.0.0.1:");
    format!("http://{addr}{FLEET_PATH}")
}

pub async fn fleet(args: FleetArgs) -> Result<ExitCode> {
    let text = match &args.file {
        Some(file) => std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?,
        None => {
            let url = args.url.clone().unwrap_or_else(default_url);
            let (status, body) =
                http_get(&url).await.with_context(|| format!("cannot reach the orchestrator at {url}"))?;
            if status != 200 {
                bail!("{url} answered {status}: {}", body.chars().take(200).collect::<String>());
            }
            body
        }
    };
    let value: Value = serde_json::from_str(&text).context("the fleet view is not JSON")?;
    if args.json {
        println!("{}", serde_json::to_string(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    let snapshot: FleetSnapshot =
        serde_json::from_value(value.clone()).context("the fleet view has an unknown shape")?;
    let steps: BTreeMap<String, u64> = value
        .get("steps_by_nonconforming_worker")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    print!("{}", render(&snapshot, &steps));
    Ok(ExitCode::SUCCESS)
}

/// A plain HTTP/1.1 GET (the orchestrator's port speaks nothing else).
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").with_context(|| format!("`{url}`: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let connect = tokio::net::TcpStream::connect(authority);
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect).await.context("connect timed out")??;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await.context("read timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("malformed status line")?;
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The human form of the fleet view.
pub fn render(snapshot: &FleetSnapshot, steps: &BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    let at = snapshot.at;
    let ago = |t: u64| format!("{:.1}s ago", at.saturating_sub(t) as f64 / 1000.0);
    if snapshot.services.is_empty() {
        out.push_str("no service known yet (no saga definition loaded, no heartbeat received)\n");
    }
    for s in &snapshot.services {
        out.push_str(&format!(
            "{}: {} (mode {}, rollout window {}, {} live instance(s))\n",
            s.service,
            s.verdict.as_str().to_uppercase(),
            s.mode,
            s.rollout_window,
            s.live().count()
        ));
        if let Some(e) = &s.expect {
            out.push_str(&format!(
                "  expect     version {}, contracts {}\n",
                e.version.as_deref().unwrap_or("(any)"),
                if e.contracts.is_empty() { "(any)".to_string() } else { e.contracts.join(", ") }
            ));
        }
        if !s.fingerprints.is_empty() {
            out.push_str(&format!(
                "  {:<13} {:>9}  {:<10} {:<9} {:<8} {:<13} {:<13} {}\n",
                "FINGERPRINT", "INSTANCES", "CONFORMING", "VERSION", "GIT", "EXECUTABLE", "CONFIG", "CONTRACTS"
            ));
        }
        for g in &s.fingerprints {
            let (version, git, exe, config, contracts) = match &g.parts {
                Some(p) => (
                    p.version.as_str(),
                    &p.git_sha[..p.git_sha.len().min(8)],
                    short(&p.executable_sha256),
                    short(&p.config_hash),
                    p.contracts.join(","),
                ),
                None => ("?", "?", "?", "?", "?".to_string()),
            };
            let count = if g.stale.is_empty() {
                g.instances.len().to_string()
            } else {
                format!("{}+{} stale", g.instances.len(), g.stale.len())
            };
            out.push_str(&format!(
                "  {:<13} {:>9}  {:<10} {:<9} {:<8} {:<13} {:<13} {}\n",
                short(&g.fingerprint),
                count,
                if g.conforming { "yes" } else { "no" },
                version,
                git,
                exe,
                config,
                contracts
            ));
        }
        for i in &s.instances {
            let mut flags = Vec::new();
            if i.stale {
                flags.push("STALE");
            }
            if i.quarantined {
                flags.push("QUARANTINED");
            }
            if !i.conforming && !i.stale {
                flags.push("not conforming");
            }
            out.push_str(&format!(
                "  - {} [{}] on {}, {} in flight, last heartbeat {}{}\n",
                i.instance,
                short(&i.fingerprint),
                i.host,
                i.in_flight,
                ago(i.last_seen),
                if flags.is_empty() { String::new() } else { format!("  {}", flags.join(", ")) }
            ));
        }
        for r in &s.reasons {
            out.push_str(&format!("  why: {r}\n"));
        }
        if let Some(n) = steps.get(&s.service).filter(|n| **n > 0) {
            out.push_str(&format!("  steps run by non-conforming workers: {n}\n"));
        }
        if let Some(b) = &s.blocked {
            out.push_str(&format!("  NO ELIGIBLE WORKER: {b}\n"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// `sqsaga bench drift`

#[derive(Debug, Args)]
pub struct BenchDriftArgs {
    /// Inventory workers, one of which is drifted (a different log level).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Order sagas run per mode, once the verdict is in.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Heartbeat interval of every worker.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Start the drifted worker two intervals after its siblings (as a
    /// hand-edited node restarting would): it then looks like a rollout and
    /// is `rolling` until the rollout window ends.
    #[arg(long)]
    late: bool,
    /// The policy's rollout window (`rolloutWindow`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    rollout_window: Duration,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sqsaga_core::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// One mode's figures.
#[derive(Debug, Serialize)]
struct DriftRun {
    mode: Mode,
    /// From the drifted worker's first heartbeat (its `sent_at`) to the
    /// first `drifted` verdict naming it.
    verdict_ms: u64,
    /// The same, in heartbeat intervals (target: at most 2).
    verdict_intervals: f64,
    /// The verdict's differences, as sentences.
    differences: Vec<String>,
    /// Steps (commands run to a reply) by the drifted worker.
    steps_by_drifted_worker: u64,
    /// Replies the orchestrator counted as from a non-conforming worker.
    steps_counted_nonconforming: u64,
    /// Commands the drifted worker released instead of running.
    commands_released_by_drifted_worker: u64,
    /// Whether the drifted worker ended quarantined.
    drifted_worker_quarantined: bool,
    sagas: usize,
    sagas_finished: usize,
    invariants_ok: bool,
    elapsed_s: f64,
}

#[derive(Debug, Serialize)]
struct BenchDrift {
    workers: usize,
    heartbeat_interval_ms: u64,
    /// The drifted worker started two intervals after its siblings.
    late: bool,
    rollout_window_ms: u64,
    orders: usize,
    runs: Vec<DriftRun>,
    /// The verdict within two intervals (late: within the rollout window
    /// plus two intervals) in every mode, and zero steps by the drifted
    /// worker in enforce.
    targets_met: bool,
}

const DRIFTED: &str = "inventory-drifted";

pub async fn bench_drift(args: BenchDriftArgs) -> Result<ExitCode> {
    if args.workers < 2 {
        bail!("--workers must be at least 2 (one drifted, at least one conforming)");
    }
    let exe = sqsaga_drift::executable_sha256().context("cannot hash the running executable")?;
    let mut runs = Vec::new();
    for mode in [Mode::Observe, Mode::Enforce] {
        runs.push(drift_run(&args, mode, &exe).await?);
    }
    let interval_ms = u64::try_from(args.heartbeat.as_millis()).unwrap_or(u64::MAX);
    let window_ms = u64::try_from(args.rollout_window.as_millis()).unwrap_or(u64::MAX);
    let budget_ms = 2 * interval_ms + if args.late { window_ms } else { 0 };
    let targets_met = runs.iter().all(|r| r.verdict_ms <= budget_ms && r.invariants_ok && r.sagas_finished == r.sagas)
        && runs.iter().filter(|r| r.mode == Mode::Enforce).all(|r| r.steps_by_drifted_worker == 0);
    let result = BenchDrift {
        workers: args.workers,
        heartbeat_interval_ms: interval_ms,
        late: args.late,
        rollout_window_ms: window_ms,
        orders: args.orders,
        runs,
        targets_met,
    };
    println!(
        "bench drift: {} inventory workers, 1 drifted (log_level) started {}, heartbeat {} ms, rollout window {}, {} sagas per mode",
        result.workers,
        if args.late { "two intervals after its siblings" } else { "with its siblings" },
        interval_ms,
        sqsaga_core::duration::format_duration(args.rollout_window),
        result.orders
    );
    println!(
        "  {:<8} {:>12} {:>10} {:>15} {:>10} {:>9} {:>12} {:>11}",
        "mode", "verdict ms", "intervals", "drifted steps", "counted", "released", "quarantined", "sagas done"
    );
    for r in &result.runs {
        println!(
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
        );
    }
    if let Some(r) = result.runs.first() {
        for d in &r.differences {
            println!("  verdict: {d}");
        }
    }
    println!(
        "  targets (verdict <= {}; 0 steps by the drifted worker in enforce): {}",
        if args.late { "rollout window + 2 intervals" } else { "2 intervals" },
        if result.targets_met { "met" } else { "NOT MET" }
    );
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    }
    Ok(if result.targets_met { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Fingerprint parts of a worker of `service`, configured by `env`.
fn bench_fingerprint(env: &[(&str, &str)], contracts: Vec<String>, exe: &str) -> Result<Fingerprint> {
    let map: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let settings = Settings::resolve(&Sources::new(&map)).map_err(|e| {
        anyhow::anyhow!("bench settings rejected: {:?}", e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    })?;
    Ok(Fingerprint::new(FingerprintParts {
        version: VERSION.to_string(),
        git_sha: GIT_SHA.to_string(),
        executable_sha256: exe.to_string(),
        config_hash: settings.config_hash(),
        contracts,
        config: settings.effective(),
    }))
}

async fn drift_run(args: &BenchDriftArgs, mode: Mode, exe: &str) -> Result<DriftRun> {
    let dir = std::env::temp_dir().join(format!("sqsaga-bench-drift-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = drift_run_in(args, mode, exe, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn drift_run_in(args: &BenchDriftArgs, mode: Mode, exe: &str, dir: &Path) -> Result<DriftRun> {
    let backend = EmbeddedBackend::open(dir, Sync::Full)?;
    let queue = backend.queue();
    let store = backend.store();
    let defs = Arc::new(load_definitions(&[])?);
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await?;
    let options = FleetOptions { heartbeat_interval: args.heartbeat, ..FleetOptions::default() };
    let mut policy = FleetPolicy::with_mode(mode);
    policy.defaults.rollout_window = args.rollout_window;
    let monitor = Arc::new(FleetMonitor::new(policy, options, Arc::new(SystemClock)));
    monitor.require(&defs);
    let (trigger, shutdown) = signals::manual();
    let mut tasks = tokio::task::JoinSet::new();
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
    let stop = shutdown.clone();
    tasks.spawn(async move { orchestrator.run(stop.wait()).await });
    {
        let (m, stop) = (monitor.clone(), shutdown.clone());
        tasks.spawn(async move { m.run(Duration::from_millis(250), stop.wait(), |_| {}).await });
    }

    // The fleet: N inventory workers (the last one drifted), one payment, one notification.
    let mut participants = BTreeMap::new();
    for service in SERVICES {
        participants.insert(service, Arc::new(open_participant(dir, service, 0.0, 7)?));
    }
    let start_worker = |service: &'static str, instance: String, drifted: bool| -> Result<Worker> {
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
        let worker = start_worker(service, instance, false)?;
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = worker.run(stop.wait()).await {
                tracing::error!(error = %e, "Worker stopped with an error.");
            }
        });
    }
    if args.late {
        let deadline = Instant::now() + args.heartbeat * 10 + Duration::from_secs(10);
        while monitor.snapshot().service("inventory").is_none_or(|s| s.live().count() < args.workers - 1) {
            if Instant::now() > deadline {
                bail!("the siblings never sent a heartbeat");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(args.heartbeat * 2).await;
    }
    let drifted = start_worker("inventory", DRIFTED.to_string(), true)?;
    let drifted_stats = drifted.stats();
    let drifted_quarantine = drifted.quarantine();
    {
        let stop = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = drifted.run(stop.wait()).await {
                tracing::error!(error = %e, "Worker stopped with an error.");
            }
        });
    }

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
            bail!("no drifted verdict within the rollout window and ten heartbeat intervals");
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
    sqsaga_order::seed_data(dir, &initial).context("cannot load stock and accounts")?;
    let ids: Vec<String> = (0..inputs.len()).map(|i| format!("drift-{}-{i:05}", mode.as_str())).collect();
    let now = sqsaga_orchestrator::clock::now_ms();
    let run_started = Instant::now();
    let messages: Vec<OutgoingMessage> = ids
        .iter()
        .zip(&inputs)
        .map(|(id, input)| {
            let start = StartSaga {
                saga_id: id.clone(),
                saga: "create_order".into(),
                version: None,
                input: input.clone(),
                requested_at: now,
            };
            OutgoingMessage::new(Envelope::Start(start).encode())
        })
        .collect();
    for chunk in messages.chunks(MAX_BATCH) {
        queue.send_batch(ORCHESTRATOR_QUEUE, chunk.to_vec()).await?;
    }
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
    let report = sqsaga_order::check_invariants(dir, &sagas, &initial).context("cannot check the invariants")?;
    let quarantined = drifted_quarantine.borrow().is_some();
    let stats = drifted_stats.snapshot();
    trigger.fire();
    while tasks.join_next().await.is_some() {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), "hello world");
    }
}
