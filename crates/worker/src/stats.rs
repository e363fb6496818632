//! Counters and latency histograms of one worker: `prometheus-client`
//! metrics, counted here on the hot path (relaxed atomic adds, no lock but
//! the histogram family's read lock) and registered here
//! ([`WorkerStats::register`]) under the names docs/operations.md lists.
//! The demo's progress line and tests read the same counters through
//! [`WorkerStats::snapshot`].

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`), from
/// 1 ms (a barrier duplicate) to 10 s (a step's whole timeout budget).
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The label set of the per-command latency histogram.
type CommandLabel = [(&'static str, String); 1];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_SECONDS)
}

/// What a worker has done since it started.
#[derive(Debug)]
pub struct WorkerStats {
    /// Messages received from the queue, whatever became of them.
    pub received: Counter,
    /// Messages handled to the end: executed (any outcome), replied, deleted.
    pub processed: Counter,
    /// Commands whose handler failed transiently (replied `transient`).
    pub failed: Counter,
    /// Commands answered with a business refusal (hanging actions included).
    pub refused: Counter,
    /// Messages moved to the dead-letter queue (undecodable, unknown command...).
    pub dead_lettered: Counter,
    /// Commands the barrier recognised as already handled.
    pub duplicates: Counter,
    /// Compensations that found no action to undo.
    pub null_compensations: Counter,
    /// Actions refused because their compensation came first.
    pub hanging: Counter,
    /// Actions refused unrun because they waited in the queue past their
    /// latest start time (`not_after`).
    pub expired: Counter,
    /// Messages received and not yet finished.
    pub in_flight: Gauge,
    /// Messages handed back unstarted at shutdown (visibility 0).
    pub released: Counter,
    /// Commands not run because this worker's fingerprint is not in the
    /// command's conforming set (released to a sibling).
    pub refused_nonconforming: Counter,
    /// Commands not run because this worker does not implement their
    /// contract (released to a sibling that does): drift, not poison.
    pub released_missing_contract: Counter,
    /// Heartbeats sent to the orchestrator (drift guard).
    pub heartbeats_sent: Counter,
    /// Local transactions or reply sends that failed: left for redelivery.
    /// Logged, not exported.
    pub errors: Counter,
    /// Time to run a command through the barrier (including the group
    /// commit), by command name.
    latency: Family<CommandLabel, Histogram, fn() -> Histogram>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            received: Counter::default(),
            processed: Counter::default(),
            failed: Counter::default(),
            refused: Counter::default(),
            dead_lettered: Counter::default(),
            duplicates: Counter::default(),
            null_compensations: Counter::default(),
            hanging: Counter::default(),
            expired: Counter::default(),
            in_flight: Gauge::default(),
            released: Counter::default(),
            refused_nonconforming: Counter::default(),
            released_missing_contract: Counter::default(),
            heartbeats_sent: Counter::default(),
            errors: Counter::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// Every counter at a point in time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsSnapshot {
    pub received: u64,
    pub processed: u64,
    pub failed: u64,
    pub refused: u64,
    pub dead_lettered: u64,
    pub duplicates: u64,
    pub null_compensations: u64,
    pub hanging: u64,
    pub expired: u64,
    pub in_flight: u64,
    pub released: u64,
    pub refused_nonconforming: u64,
    pub released_missing_contract: u64,
    pub heartbeats_sent: u64,
    pub errors: u64,
}

impl WorkerStats {
    /// Registers every exported family in `registry` (the caller adds the
    /// `service` label with a sub-registry). Names without `_total`: the
    /// encoder appends it to counters.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 13] = [
            ("sqsaga_messages_received", "Messages received from the service queue", &self.received),
            ("sqsaga_messages_processed", "Messages handled to the end (executed, replied, deleted)", &self.processed),
            ("sqsaga_messages_failed", "Commands whose handler failed transiently", &self.failed),
            ("sqsaga_messages_refused", "Commands answered with a business refusal", &self.refused),
            ("sqsaga_messages_dead_lettered", "Messages moved to the DLQ (poison)", &self.dead_lettered),
            ("sqsaga_barrier_duplicates", "Commands the barrier recognised as already handled", &self.duplicates),
            (
                "sqsaga_barrier_null_compensations",
                "Compensations that found no action to undo",
                &self.null_compensations,
            ),
            ("sqsaga_barrier_hanging", "Actions refused because their compensation came first", &self.hanging),
            (
                "sqsaga_barrier_expired",
                "Actions refused unrun because they waited in the queue past their latest start time",
                &self.expired,
            ),
            ("sqsaga_messages_released", "Messages handed back unstarted (shutdown or not conforming)", &self.released),
            (
                "sqsaga_commands_refused_nonconforming",
                "Commands released because this worker is not in their conforming set",
                &self.refused_nonconforming,
            ),
            (
                "sqsaga_commands_missing_contract",
                "Commands released because this worker does not implement their contract",
                &self.released_missing_contract,
            ),
            ("sqsaga_heartbeats_sent", "Heartbeats sent to the orchestrator", &self.heartbeats_sent),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "sqsaga_messages_in_flight",
            "Messages received and not yet finished",
            self.in_flight.clone(),
        );
        registry.register(
            "sqsaga_step_duration_seconds",
            "Time to run one command through the barrier, including its local commit",
            self.latency.clone(),
        );
    }

    /// Records how long one run of `command` took.
    pub fn observe(&self, command: &str, elapsed: Duration) {
        self.latency.get_or_create(&[("command", command.to_string())]).observe(elapsed.as_secs_f64());
    }

    /// Reads every counter (each individually consistent).
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.get(),
            processed: self.processed.get(),
            failed: self.failed.get(),
            refused: self.refused.get(),
            dead_lettered: self.dead_lettered.get(),
            duplicates: self.duplicates.get(),
            null_compensations: self.null_compensations.get(),
            hanging: self.hanging.get(),
            expired: self.expired.get(),
            in_flight: u64::try_from(self.in_flight.get()).unwrap_or(0),
            released: self.released.get(),
            refused_nonconforming: self.refused_nonconforming.get(),
            released_missing_contract: self.released_missing_contract.get(),
            heartbeats_sent: self.heartbeats_sent.get(),
            errors: self.errors.get(),
        }
    }

    pub(crate) fn add(counter: &Counter, n: usize) {
        counter.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_counted_per_command_and_exported_in_seconds() {
        let stats = WorkerStats::default();
        stats.observe("a", Duration::from_micros(500));
        stats.observe("a", Duration::from_millis(30));
        stats.observe("a", Duration::from_secs(60));
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap_or_default();
        for line in [
            "sqsaga_step_duration_seconds_bucket{command=\"a\",le=\"0.001\"} 1",
            "sqsaga_step_duration_seconds_bucket{command=\"a\",le=\"0.05\"} 2",
            "sqsaga_step_duration_seconds_bucket{command=\"a\",le=\"+Inf\"} 3",
            "sqsaga_step_duration_seconds_count{command=\"a\"} 3",
            "sqsaga_messages_received_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
