//! The worker's side of the drift guard: it tells the orchestrator what it
//! is (heartbeats) and keeps itself out of work the fleet gives to others
//! (quarantine).
//!
//! Quarantine is read off the commands themselves, the only channel from the
//! orchestrator to a worker: in `enforce` mode every command carries the
//! conforming fingerprints of its service. A worker outside the set releases
//! the command (its siblings take it) and is quarantined; the next command
//! that includes it — or carries no set at all (the orchestrator no longer
//! enforces) — ends the quarantine. So a worker leaves quarantine by itself
//! as soon as the fleet view counts it as conforming and sends it work,
//! whether the fleet converged on its build or it was fixed and the policy
//! changed. A stamp written before the orchestrator can have heard this
//! worker's first heartbeat (one interval after it) is not held against it:
//! it says nothing about this worker, which still releases the command.
//!
//! Knows the protocol and the `Queue` port; the readiness probe is the
//! binary's business (it subscribes to [`Drift::subscribe`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqsaga_core::Millis;
use sqsaga_protocol::{Command, Envelope, Heartbeat};
use sqsaga_queue::Queue;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::options::WorkerOptions;
use crate::stats::WorkerStats;

/// Whether this worker may run a command, by the drift guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Judgement {
    Run,
    /// Not for this worker: release it for a sibling, with why.
    Release(String),
}

/// Drift-guard state of one worker.
#[derive(Debug)]
pub(crate) struct Drift {
    /// `Some(reason)` while quarantined; subscribers (the readiness probe)
    /// see every change.
    quarantine: watch::Sender<Option<String>>,
    /// `sqsaga_worker_quarantined`: 1 while `quarantine` holds a reason.
    quarantined: Gauge,
    /// When the worker started, reported in heartbeats.
    started_at: Millis,
    /// `sent_at` of the first heartbeat sent (0 before): stamps older than
    /// it plus one interval predate the orchestrator knowing this worker.
    first_heartbeat_at: AtomicU64,
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

impl Drift {
    pub(crate) fn new(started_at: Millis) -> Drift {
        Drift {
            quarantine: watch::channel(None).0,
            quarantined: Gauge::default(),
            started_at,
            first_heartbeat_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_quarantined(&self) -> bool {
        self.quarantine.borrow().is_some()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.quarantine.subscribe()
    }

    /// Judges a command's conforming set against this worker's fingerprint,
    /// entering or leaving quarantine accordingly.
    pub(crate) fn judge(&self, options: &WorkerOptions, c: &Command) -> Judgement {
        let fingerprint = &options.fingerprint;
        let Some(set) = c.conforming.as_ref().filter(|set| !set.contains(fingerprint)) else {
            self.leave(options);
            return Judgement::Run;
        };
        let listed: Vec<&str> = set.iter().map(|f| short(f)).collect();
        let reason = format!(
            "fingerprint {} is not among the conforming fingerprints of service {} ({}); commands are released to conforming siblings",
            short(fingerprint),
            options.service,
            if listed.is_empty() { "none conforms".to_string() } else { listed.join(", ") }
        );
        let first = self.first_heartbeat_at.load(Ordering::Relaxed);
        let interval = options.heartbeat_interval.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let predates_us = first == 0 || c.sent_at < first.saturating_add(interval);
        if !predates_us {
            self.enter(options, &reason);
        }
        Judgement::Release(format!("{reason} (command {})", c.command_id))
    }

    /// Registers `sqsaga_worker_quarantined`.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "sqsaga_worker_quarantined",
            "1 while this worker refuses commands because it does not conform (drift guard)",
            self.quarantined.clone(),
        );
    }

    fn enter(&self, options: &WorkerOptions, reason: &str) {
        self.quarantined.set(1);
        let mut entered = false;
        self.quarantine.send_if_modified(|q| {
            if q.as_deref() == Some(reason) {
                return false;
            }
            entered = q.is_none();
            *q = Some(reason.to_string());
            true
        });
        if entered {
            warn!(
                service = %options.service,
                instance = %options.instance,
                fingerprint = %short(&options.fingerprint),
                reason = %reason,
                "Quarantined: this worker does not conform and releases its commands."
            );
        }
    }

    fn leave(&self, options: &WorkerOptions) {
        self.quarantined.set(0);
        if self.quarantine.send_if_modified(|q| q.take().is_some()) {
            info!(
                service = %options.service,
                instance = %options.instance,
                fingerprint = %short(&options.fingerprint),
                "Left quarantine: this worker conforms again."
            );
        }
    }

    /// The heartbeat this worker sends now.
    fn heartbeat(&self, options: &WorkerOptions, stats: &WorkerStats, now: Millis) -> Heartbeat {
        Heartbeat {
            service: options.service.clone(),
            instance: options.instance.clone(),
            host: options.host.clone(),
            fingerprint: options.fingerprint.clone(),
            parts: options.fingerprint_parts.clone(),
            in_flight: u32::try_from(stats.in_flight.get()).unwrap_or(u32::MAX),
            started_at: self.started_at,
            sent_at: now,
            quarantined: self.is_quarantined(),
        }
    }
}

/// Sends a heartbeat at once, then every `options.heartbeat_interval`,
/// until `stop` turns true. A failed send is logged and retried next tick:
/// missing a few only makes the instance `stale` in the fleet view.
pub(crate) async fn heartbeat_loop(
    options: &WorkerOptions,
    queue: &dyn Queue,
    stats: &WorkerStats,
    drift: &Drift,
    mut stop: watch::Receiver<bool>,
) {
    let Some(interval) = options.heartbeat_interval else { return };
    let mut failing = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = options.clock.now();
        let heartbeat = drift.heartbeat(options, stats, now);
        let message = crate::options::seal(options, &Envelope::Heartbeat(heartbeat), None);
        match queue.send(&options.heartbeat_queue, message).await {
            Ok(()) => {
                let _ = drift.first_heartbeat_at.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                WorkerStats::add(&stats.heartbeats_sent, 1);
                if failing {
                    info!(queue = %options.heartbeat_queue, "Heartbeats are getting through again.");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    warn!(queue = %options.heartbeat_queue, error = %e, "Cannot send a heartbeat; the fleet view may mark this instance stale.");
                }
                failing = true;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval.max(Duration::from_millis(100))) => {}
            _ = stop.changed() => return,
        }
    }
}
