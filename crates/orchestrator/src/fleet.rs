//! The orchestrator's side of the drift guard: it owns the fleet view, feeds
//! it the heartbeats that arrive on the orchestrator queue, stamps commands
//! of `enforce`-mode services with the conforming fingerprints, and counts
//! steps run by non-conforming workers.
//!
//! The pure judgement lives in `sqsaga_drift::FleetView`; this wrapper adds
//! the clock, a lock, a cached snapshot (stamping a command must not
//! recompute verdicts), counters and logs of verdict changes.
//!
//! With several orchestrator replicas each heartbeat reaches one of them,
//! so each replica's view holds the instances it happened to hear from
//! (see ARCHITECTURE.md, "Drift guard").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use sqsaga_drift::{FleetOptions, FleetPolicy, FleetSnapshot, FleetView, Verdict};
use sqsaga_protocol::Heartbeat;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::definitions::Definitions;

/// The fleet view of one orchestrator. Shared (`Arc`) between the pollers
/// that feed and consult it, the refresh loop, `/fleet` and `/metrics`.
pub struct FleetMonitor {
    /// The view itself; locked briefly per heartbeat and per refresh.
    view: Mutex<FleetView>,
    /// The last judgement, read by every command stamp and every scrape.
    current: RwLock<Arc<FleetSnapshot>>,
    clock: Arc<dyn Clock>,
    /// Replies from workers outside their service's conforming set, by service.
    nonconforming_steps: Mutex<BTreeMap<String, u64>>,
    /// Heartbeats received, all services (`sqsaga_fleet_heartbeats_received_total`).
    heartbeats: Counter,
}

impl FleetMonitor {
    pub fn new(policy: FleetPolicy, options: FleetOptions, clock: Arc<dyn Clock>) -> FleetMonitor {
        let now = clock.now();
        let view = FleetView::new(policy, options);
        let current = RwLock::new(Arc::new(view.snapshot(now)));
        FleetMonitor {
            view: Mutex::new(view),
            current,
            clock,
            nonconforming_steps: Mutex::new(BTreeMap::new()),
            heartbeats: Counter::default(),
        }
    }

    /// Observe mode, no policy: what an orchestrator does without `fleet.yaml`.
    pub fn observing(clock: Arc<dyn Clock>) -> FleetMonitor {
        FleetMonitor::new(FleetPolicy::default(), FleetOptions::default(), clock)
    }

    /// Registers the contract every step of every loaded definition needs, so
    /// a contract nobody implements is reported.
    pub fn require(&self, defs: &Definitions) {
        {
            let mut view = self.lock();
            for def in defs.all() {
                for step in &def.steps {
                    view.require(&step.service, &step.contract);
                }
            }
        }
        self.refresh();
    }

    /// Restores a snapshot persisted by a previous run.
    pub fn restore(&self, snapshot: &FleetSnapshot) {
        self.lock().restore(snapshot);
        self.refresh();
    }

    /// Records a worker's heartbeat and re-judges.
    pub fn observe(&self, hb: &Heartbeat) {
        self.heartbeats.inc();
        let now = self.clock.now();
        self.lock().observe(hb, now);
        self.refresh();
    }

    /// Re-judges the fleet at the current time (stale instances, rollout
    /// windows run out), logs what changed and returns the new snapshot.
    pub fn refresh(&self) -> Arc<FleetSnapshot> {
        let now = self.clock.now();
        let next = {
            let mut view = self.lock();
            view.expire(now);
            Arc::new(view.snapshot(now))
        };
        let previous = {
            let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *slot, next.clone())
        };
        log_changes(&previous, &next);
        next
    }

    /// The last judgement.
    pub fn snapshot(&self) -> Arc<FleetSnapshot> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The conforming set to put on a command of `service` needing
    /// `contract`; `None` when the service is not enforced (or not yet heard from).
    pub fn stamp(&self, service: &str, contract: &str) -> Option<Vec<String>> {
        self.snapshot().service(service)?.stamp(contract)
    }

    /// Counts a step (a reply) if the worker that ran it is outside its
    /// service's conforming set at this moment.
    pub fn record_step(&self, service: &str, fingerprint: &str) {
        let nonconforming = self.snapshot().service(service).is_some_and(|s| s.is_nonconforming(fingerprint));
        if nonconforming {
            let mut counts = self.nonconforming_steps.lock().unwrap_or_else(PoisonError::into_inner);
            *counts.entry(service.to_string()).or_default() += 1;
        }
    }

    /// Steps run by non-conforming workers since start, by service.
    pub fn steps_by_nonconforming(&self) -> BTreeMap<String, u64> {
        self.nonconforming_steps.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Heartbeats received since start.
    pub fn heartbeats_received(&self) -> u64 {
        self.heartbeats.get()
    }

    /// Registers the counter this monitor keeps. The fleet's gauges and the
    /// non-conforming steps are read from [`FleetMonitor::snapshot`] and
    /// [`FleetMonitor::steps_by_nonconforming`] at scrape time, by a
    /// collector of whoever serves them.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sqsaga_fleet_heartbeats_received",
            "Worker heartbeats received by this orchestrator",
            self.heartbeats.clone(),
        );
    }

    /// Re-judges every `every` until `shutdown` resolves, handing each
    /// snapshot to `on_refresh` (readiness, the persisted snapshot).
    pub async fn run(
        self: Arc<Self>,
        every: Duration,
        shutdown: impl Future<Output = ()> + Send,
        mut on_refresh: impl FnMut(&FleetSnapshot) + Send,
    ) {
        tokio::pin!(shutdown);
        loop {
            let snapshot = self.refresh();
            on_refresh(&snapshot);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = &mut shutdown => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FleetView> {
        // A panic elsewhere leaves plain data behind; keep judging.
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Logs each service whose verdict, conforming set or blocked state changed.
fn log_changes(previous: &FleetSnapshot, next: &FleetSnapshot) {
    for s in &next.services {
        let before = previous.service(&s.service);
        let changed = before.is_none_or(|b| b.verdict != s.verdict || b.conforming != s.conforming);
        if changed && !(before.is_none() && s.verdict == Verdict::Empty) {
            let reasons = s.reasons.join("; ");
            let conforming: Vec<&str> = s.conforming.iter().map(|f| &f[..f.len().min(12)]).collect();
            let fingerprints = s.fingerprints.iter().filter(|g| !g.instances.is_empty()).count();
            if s.verdict == Verdict::Drifted {
                warn!(service = %s.service, verdict = %s.verdict, mode = %s.mode, fingerprints, conforming = ?conforming, reasons = %reasons, "Fleet verdict changed.");
            } else {
                info!(service = %s.service, verdict = %s.verdict, mode = %s.mode, fingerprints, conforming = ?conforming, reasons = %reasons, "Fleet verdict changed.");
            }
        }
        match (before.and_then(|b| b.blocked.as_ref()), &s.blocked) {
            (None, Some(reason)) => error!(service = %s.service, reason = %reason, "No eligible worker for a service."),
            (Some(_), None) => info!(service = %s.service, "A service has an eligible worker again."),
            _ => {}
        }
    }
}
