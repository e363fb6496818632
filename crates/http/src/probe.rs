//! [`Probe`]: the process's own view of whether it is alive (its loops keep
//! beating) and ready (nothing has declared it unready), shared between the
//! loops that report and the HTTP handlers that answer Kubernetes.
//!
//! Liveness and readiness are kept apart on purpose: a worker whose queue is
//! unreachable or whose fingerprint is outside the fleet policy is *not
//! ready* (take it out of rotation, stall the rollout) but alive (restarting
//! it would not help); only a stuck loop makes it *not alive*.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{info, warn};

use crate::metrics::{Collector, DescriptorEncoder, Registry, gauges};

/// Shared health state; clones share it. Cheap to clone and to update.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// The state behind a mutex: updates are rare (a reason changes, a loop
    /// beats every few seconds) and tiny, so a lock is simpler than atomics.
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// Why the process is not ready, by component (`queue`, `drift`); empty = ready.
    reasons: BTreeMap<String, String>,
    /// Loops whose silence means the process is stuck.
    loops: BTreeMap<String, LoopState>,
    /// Extra fields of the /readyz body (the fingerprint, say).
    info: BTreeMap<String, Value>,
}

#[derive(Debug)]
struct LoopState {
    /// Silence longer than this makes the loop stalled.
    stall_after: Duration,
    /// When it last called [`Probe::heartbeat`] (or was registered).
    last_beat: Instant,
}

/// A loop that has been silent for longer than it promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StalledLoop {
    /// The loop's registered name.
    pub name: String,
    /// How long since its last heartbeat.
    pub silent_for: Duration,
    /// The silence it was allowed.
    pub stall_after: Duration,
}

impl Probe {
    /// A probe that is ready, with no loops registered.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind;
        // health reporting must keep working, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the process not ready because of `key` (e.g. `queue`), with a
    /// reason shown in /readyz. Logged when the reason changes.
    pub fn set_unready(&self, key: &str, reason: impl Into<String>) {
        let reason = reason.into();
        let previous = self.state().reasons.insert(key.to_string(), reason.clone());
        if previous.as_ref() != Some(&reason) {
            warn!(key, reason = %reason, "Not ready.");
        }
    }

    /// Clears `key`'s reason; ready again once no reason is left.
    pub fn set_ready(&self, key: &str) {
        let mut state = self.state();
        if state.reasons.remove(key).is_some() {
            let remaining = state.reasons.len();
            drop(state);
            info!(key, remaining, "Readiness reason cleared.");
        }
    }

    /// The current reasons for not being ready, by key.
    pub fn reasons(&self) -> BTreeMap<String, String> {
        self.state().reasons.clone()
    }

    /// Whether no reason for unreadiness is set.
    pub fn is_ready(&self) -> bool {
        self.state().reasons.is_empty()
    }

    /// Registers a loop that promises to call [`Probe::heartbeat`] at least
    /// every `stall_after`; the clock starts now. Registering again resets it.
    pub fn register_loop(&self, loop_name: &str, stall_after: Duration) {
        let state = LoopState { stall_after, last_beat: Instant::now() };
        self.state().loops.insert(loop_name.to_string(), state);
    }

    /// Removes a loop that ended on purpose (shutdown), so its silence is not
    /// taken for a stall.
    pub fn unregister_loop(&self, loop_name: &str) {
        self.state().loops.remove(loop_name);
    }

    /// Records that `loop_name` is making progress. Beats of unregistered
    /// loops are ignored.
    pub fn heartbeat(&self, loop_name: &str) {
        if let Some(l) = self.state().loops.get_mut(loop_name) {
            l.last_beat = Instant::now();
        }
    }

    /// Loops silent for longer than their `stall_after`, as of now.
    pub fn stalled_loops(&self) -> Vec<StalledLoop> {
        self.stalled_loops_at(Instant::now())
    }

    /// Loops silent for longer than their `stall_after`, as of `now` (tests
    /// pass a future instant instead of sleeping).
    pub fn stalled_loops_at(&self, now: Instant) -> Vec<StalledLoop> {
        self.state()
            .loops
            .iter()
            .filter_map(|(name, l)| {
                let silent_for = now.saturating_duration_since(l.last_beat);
                (silent_for > l.stall_after).then(|| StalledLoop {
                    name: name.clone(),
                    silent_for,
                    stall_after: l.stall_after,
                })
            })
            .collect()
    }

    /// Sets an extra field of the /readyz body (`fingerprint`, `service`).
    /// `status` and `reasons` are reserved and always win.
    pub fn set_info(&self, key: &str, value: Value) {
        self.state().info.insert(key.to_string(), value);
    }

    /// The extra /readyz fields.
    pub fn info(&self) -> BTreeMap<String, Value> {
        self.state().info.clone()
    }
}

impl Probe {
    /// Registers the probe's gauges (`sqsaga_ready`,
    /// `sqsaga_loop_heartbeat_age_seconds`), read at scrape time.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.clone()));
    }
}

impl Collector for Probe {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let (ready, ages) = {
            let state = self.state();
            let ages: Vec<([(&str, String); 1], f64)> = state
                .loops
                .iter()
                .map(|(name, l)| ([("loop", name.clone())], now.saturating_duration_since(l.last_beat).as_secs_f64()))
                .collect();
            (state.reasons.is_empty(), ages)
        };
        let no_labels: [(&str, &str); 0] = [];
        gauges(
            &mut encoder,
            "sqsaga_ready",
            "1 when the process is ready to take work (see /readyz)",
            [(no_labels, i64::from(ready))],
        )?;
        gauges(
            &mut encoder,
            "sqsaga_loop_heartbeat_age_seconds",
            "Seconds since each registered loop last reported progress",
            ages,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_reasons() {
        let probe = Probe::new();
        assert!(probe.is_ready());
        probe.set_unready("queue", "queue unreachable: timeout");
        probe.set_unready("drift", "fingerprint not in fleet policy");
        assert!(!probe.is_ready());
        probe.set_ready("queue");
        assert_eq!(
            probe.reasons(),
            BTreeMap::from([("drift".to_string(), "fingerprint not in fleet policy".to_string())])
        );
        probe.clone().set_ready("drift");
        assert!(probe.is_ready(), "clones share state");
    }

    #[test]
    fn loops_stall_when_silent_too_long() {
        let probe = Probe::new();
        probe.register_loop("poller", Duration::from_secs(30));
        probe.heartbeat("never-registered");
        let now = Instant::now();
        assert_eq!(probe.stalled_loops_at(now), vec![]);
        let later = now + Duration::from_secs(31);
        let stalled = probe.stalled_loops_at(later);
        assert_eq!(stalled.len(), 1);
        assert_eq!(stalled[0].name, "poller");
        assert!(stalled[0].silent_for > Duration::from_secs(30));
        probe.unregister_loop("poller");
        assert_eq!(probe.stalled_loops_at(later), vec![]);
    }
}
