//! The metrics the long-running processes serve on `/metrics`, each source
//! rendering one component's counters (the fleet's are in `fleet.rs`, the
//! AWS request counters in `backend.rs`).

use std::sync::Arc;

use sqsaga_core::machine::SagaStatus;
use sqsaga_http::metrics::{MetricsSource, Text};
use sqsaga_orchestrator::OrchestratorStats;
use sqsaga_worker::WorkerStats;

use crate::identity::{GIT_SHA, VERSION};

/// `sqsaga_build_info{service,version,git_sha,fingerprint} 1`.
pub struct BuildInfo {
    pub service: String,
    pub fingerprint: String,
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
pub struct WorkerMetrics {
    pub service: String,
    pub stats: Arc<WorkerStats>,
}

impl MetricsSource for WorkerMetrics {
    fn render(&self, out: &mut String) {
        let s = self.stats.snapshot();
        let svc = [("service", self.service.as_str())];
        let mut t = Text::new(out);
        let counters: [(&str, &str, u64); 10] = [
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
                "sqsaga_barrier_expired_total",
                "Actions refused unrun because they waited in the queue past their latest start time.",
                s.expired,
            ),
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

/// The orchestrator's counters and saga counts by state (its own
/// bookkeeping: read once at start, moved by every commit; see
/// `SagaCounts` for what they mean with several replicas).
pub struct OrchestratorMetrics {
    pub stats: Arc<OrchestratorStats>,
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
        let counts = s.sagas.snapshot();
        for status in SagaStatus::ALL {
            let n = counts.get(&status).copied().unwrap_or(0);
            t.gauge("sqsaga_sagas", "Sagas by state.", &[("state", status.as_str())], n as f64);
        }
        let stuck = counts.get(&SagaStatus::NeedsOperator).copied().unwrap_or(0);
        t.gauge("sqsaga_sagas_needing_operator", "Sagas whose compensation needs an operator.", &[], stuck as f64);
    }
}
