//! The drift guard in a process: wiring the orchestrator's fleet view
//! (`fleet.yaml`, `GET /fleet`, metrics, readiness info, a persisted
//! snapshot) and a worker's quarantine into its `/readyz`.
//!
//! The judgement itself is `sqsaga_drift` (pure) behind
//! `sqsaga_orchestrator::FleetMonitor`; this module only connects it to
//! files, HTTP and metrics.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqsaga_config::{Backend, DriftMode, Settings};
use sqsaga_drift::{FleetOptions, FleetPolicy, FleetSnapshot, Mode, Verdict};
use sqsaga_http::metrics::{Collector, DescriptorEncoder, counters, gauges};
use sqsaga_http::{JsonSource, Probe, json_route};
use sqsaga_orchestrator::{Definitions, FleetMonitor, SystemClock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::RuntimeError;
use crate::shutdown::CancellationToken;

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

/// `fleet_policy` if set, else `fleet.yaml` (or `.yml`) in the definitions
/// directory: the policy lives next to the sagas, in Git.
pub fn policy_path(settings: &Settings) -> Option<PathBuf> {
    if let Some(p) = &settings.fleet_policy {
        return Some(p.clone());
    }
    let dir = settings.definitions.as_ref().filter(|d| d.is_dir())?;
    ["fleet.yaml", "fleet.yml"].iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Reads and checks the fleet policy; every problem as `file:line:col`
/// (a configuration problem: exit code 2).
pub fn load_policy(settings: &Settings, defs: &Definitions) -> Result<(FleetPolicy, Option<PathBuf>), RuntimeError> {
    let mode = mode_of(settings.drift_mode);
    let Some(path) = policy_path(settings) else { return Ok((FleetPolicy::with_mode(mode), None)) };
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| RuntimeError::config(format!("fleet_policy: cannot read {name}: {e}")))?;
    let policy = FleetPolicy::parse(&text, mode).map_err(|problems| {
        RuntimeError::Config(sqsaga_core::yaml::format_problems(&name, &problems).lines().map(str::to_string).collect())
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
    pub fn setup(settings: &Settings, defs: &Definitions) -> Result<OrchestratorFleet, RuntimeError> {
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
        json_route(FLEET_PATH, self.json())
    }

    /// The fleet view as `/fleet` renders it (the admin API serves it too).
    pub fn json(&self) -> Arc<dyn JsonSource> {
        Arc::new(FleetJson(self.monitor.clone()))
    }

    /// Re-judges periodically: lists services without an eligible worker in
    /// the orchestrator's `/readyz` body and persists the snapshot.
    pub fn spawn(&self, probe: Probe, shutdown: CancellationToken) -> JoinHandle<()> {
        let monitor = self.monitor.clone();
        let file = self.snapshot_file.clone();
        let every = self.refresh_every;
        tokio::spawn(async move {
            let mut last_write_error = None;
            monitor
                .run(every, shutdown.cancelled_owned(), move |snapshot| {
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

/// The orchestrator's drift-guard gauges and non-conforming steps, read
/// from the monitor's last judgement at scrape time (the heartbeat counter
/// is the monitor's own, see [`FleetMonitor::register_metrics`]).
pub(crate) struct FleetMetrics(pub(crate) Arc<FleetMonitor>);

impl std::fmt::Debug for FleetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetMetrics")
    }
}

impl Collector for FleetMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.snapshot();
        let steps = self.0.steps_by_nonconforming();
        let services = || snapshot.services.iter();
        let flag = |b: bool| i64::from(b);
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        gauges(
            &mut encoder,
            "sqsaga_fleet_fingerprints",
            "Distinct fingerprints among live instances",
            services().map(|s| {
                let live = s.fingerprints.iter().filter(|g| !g.instances.is_empty()).count();
                ([("service", s.service.as_str())], count(live))
            }),
        )?;
        gauges(
            &mut encoder,
            "sqsaga_fleet_drifted",
            "1 while the service's fleet verdict is drifted",
            services().map(|s| ([("service", s.service.as_str())], flag(s.verdict == Verdict::Drifted))),
        )?;
        gauges(
            &mut encoder,
            "sqsaga_fleet_instances",
            "Instances in the fleet view, by state",
            services().flat_map(|s| {
                [("live", s.live().count()), ("stale", s.stale.len()), ("quarantined", s.quarantined.len())]
                    .map(|(state, n)| ([("service", s.service.as_str()), ("state", state)], count(n)))
            }),
        )?;
        gauges(
            &mut encoder,
            "sqsaga_fleet_no_eligible_worker",
            "1 while the service's commands have no eligible worker (none conforms, or none implements a needed contract)",
            services().map(|s| ([("service", s.service.as_str())], flag(s.blocked.is_some()))),
        )?;
        counters(
            &mut encoder,
            "sqsaga_steps_by_nonconforming_worker",
            "Replies from workers outside their service's conforming set",
            services().map(|s| ([("service", s.service.as_str())], steps.get(&s.service).copied().unwrap_or(0))),
        )
    }
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
