//! Counters and latency histograms of one worker, shared with whoever exports
//! them (the HTTP `/metrics` endpoint, the demo's progress line, tests).
//!
//! Plain atomics so the hot path never waits; the per-command histograms sit
//! behind one short mutex. This module does not format metrics: exporters read
//! a [`StatsSnapshot`] and name things their own way.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`), from
/// 1 ms (a barrier duplicate) to 10 s (a step's whole timeout budget).
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// What a worker has done since it started.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Messages received from the queue, whatever became of them.
    pub received: AtomicU64,
    /// Messages handled to the end: executed (any outcome), replied, deleted.
    pub processed: AtomicU64,
    /// Commands whose handler failed transiently (replied `transient`).
    pub failed: AtomicU64,
    /// Commands answered with a business refusal (hanging actions included).
    pub refused: AtomicU64,
    /// Messages moved to the dead-letter queue (undecodable, unknown command...).
    pub dead_lettered: AtomicU64,
    /// Commands the barrier recognised as already handled.
    pub duplicates: AtomicU64,
    /// Compensations that found no action to undo.
    pub null_compensations: AtomicU64,
    /// Actions refused because their compensation came first.
    pub hanging: AtomicU64,
    /// Actions refused unrun because they waited in the queue past their
    /// latest start time (`not_after`).
    pub expired: AtomicU64,
    /// Messages received and not yet finished (gauge).
    pub in_flight: AtomicU64,
    /// Messages handed back unstarted at shutdown (visibility 0).
    pub released: AtomicU64,
    /// Commands not run because this worker's fingerprint is not in the
    /// command's conforming set (released to a sibling).
    pub refused_nonconforming: AtomicU64,
    /// Commands not run because this worker does not implement their
    /// contract (released to a sibling that does): drift, not poison.
    pub released_missing_contract: AtomicU64,
    /// Heartbeats sent to the orchestrator (drift guard).
    pub heartbeats_sent: AtomicU64,
    /// Local transactions or reply sends that failed: left for redelivery.
    pub errors: AtomicU64,
    latency: Mutex<BTreeMap<String, Histogram>>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    count: u64,
    sum_seconds: f64,
}

/// One command's latency distribution at a point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, cumulative count)`, as Prometheus wants them;
    /// the final `+Inf` bucket equals `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
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
    /// Time to run a command through the barrier (including the group
    /// commit), by command name.
    pub latency: BTreeMap<String, HistogramSnapshot>,
}

impl WorkerStats {
    /// Records how long one run of `command` took.
    pub fn observe(&self, command: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot =
            LATENCY_BUCKETS_SECONDS.iter().position(|le| seconds <= *le).unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        let mut map = self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let histogram = map.entry(command.to_string()).or_default();
        histogram.buckets[slot] += 1;
        histogram.count += 1;
        histogram.sum_seconds += seconds;
    }

    /// Reads everything at once (each counter individually consistent).
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let latency = {
            let map = self.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            map.iter().map(|(name, h)| (name.clone(), h.snapshot())).collect()
        };
        StatsSnapshot {
            received: load(&self.received),
            processed: load(&self.processed),
            failed: load(&self.failed),
            refused: load(&self.refused),
            dead_lettered: load(&self.dead_lettered),
            duplicates: load(&self.duplicates),
            null_compensations: load(&self.null_compensations),
            hanging: load(&self.hanging),
            expired: load(&self.expired),
            in_flight: load(&self.in_flight),
            released: load(&self.released),
            refused_nonconforming: load(&self.refused_nonconforming),
            released_missing_contract: load(&self.released_missing_contract),
            heartbeats_sent: load(&self.heartbeats_sent),
            errors: load(&self.errors),
            latency,
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Histogram {
    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = LATENCY_BUCKETS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((le, cumulative));
        }
        HistogramSnapshot { buckets, count: self.count, sum_seconds: self.sum_seconds }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let stats = WorkerStats::default();
        stats.observe("a", Duration::from_micros(500));
        stats.observe("a", Duration::from_millis(30));
        stats.observe("a", Duration::from_secs(60));
        let snap = stats.snapshot();
        let h = &snap.latency["a"];
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], (0.001, 1));
        assert_eq!(h.buckets[5], (0.05, 2));
        assert_eq!(h.buckets.last().map(|b| b.1), Some(3));
        assert!(h.buckets.last().is_some_and(|b| b.0.is_infinite()));
    }
}
