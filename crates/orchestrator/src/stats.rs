//! The orchestrator's counters: `prometheus-client` metrics, counted by the
//! service's loops and registered here ([`OrchestratorStats::register`])
//! under the names docs/operations.md lists; and its saga counts by status
//! ([`SagaCounts`]), which whoever serves them reads at scrape time.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqsaga_core::machine::SagaStatus;

/// What the orchestrator has done since it started.
#[derive(Debug, Default)]
pub struct OrchestratorStats {
    /// Messages received from the orchestrator queue.
    pub messages_received: Counter,
    /// Events that changed a saga.
    pub events_applied: Counter,
    /// Stale or duplicate events (no change).
    pub events_ignored: Counter,
    /// Sagas started.
    pub sagas_started: Counter,
    /// Commands emitted to workers (through the outbox).
    pub commands_sent: Counter,
    /// Saga writes that lost a revision race and were re-applied.
    pub write_conflicts: Counter,
    /// Messages moved to the DLQ (poison, failed signature check).
    pub dead_lettered: Counter,
    /// Batches that failed on the saga store and will be retried.
    pub store_errors: Counter,
    /// Queue calls that failed and will be retried.
    pub queue_errors: Counter,
    /// Outboxes the sweeper sent late: a crash (or a failed send) between
    /// a commit and its delivery left them behind.
    pub outboxes_swept: Counter,
    /// Outboxes older than the sweep interval that the last sweep found and
    /// could not deliver: commands committed but not sent (alert when it
    /// stays above zero).
    pub outboxes_undelivered: Gauge,
    /// Terminal sagas deleted past their retention (stores without a TTL;
    /// not exported).
    pub sagas_expired: Counter,
    /// Start requests held back by admission control, each time one is
    /// held (not exported).
    pub starts_held: Counter,
    /// Sagas by status, as this replica knows them.
    pub sagas: SagaCounts,
}

impl OrchestratorStats {
    /// Registers every exported counter in `registry`; names without
    /// `_total`, which the encoder appends.
    pub fn register(&self, registry: &mut Registry) {
        let counters: [(&str, &str, &Counter); 10] = [
            ("sqsaga_messages_received", "Messages received from the orchestrator queue", &self.messages_received),
            ("sqsaga_events_applied", "Events that changed a saga", &self.events_applied),
            ("sqsaga_events_ignored", "Stale or duplicate events (no change)", &self.events_ignored),
            ("sqsaga_sagas_started", "Sagas started", &self.sagas_started),
            ("sqsaga_commands_sent", "Commands emitted to workers (through the outbox)", &self.commands_sent),
            (
                "sqsaga_write_conflicts",
                "Saga writes that lost a revision race and were re-applied",
                &self.write_conflicts,
            ),
            ("sqsaga_messages_dead_lettered", "Messages moved to the DLQ (poison)", &self.dead_lettered),
            ("sqsaga_store_errors", "Batches that failed on the saga store and will be retried", &self.store_errors),
            ("sqsaga_queue_errors", "Queue calls that failed and will be retried", &self.queue_errors),
            (
                "sqsaga_outboxes_swept",
                "Outboxes a crash or a failed send left behind, sent late by the sweeper",
                &self.outboxes_swept,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "sqsaga_outboxes_undelivered",
            "Outboxes older than the sweep interval that the last sweep could not deliver",
            self.outboxes_undelivered.clone(),
        );
    }
}

/// Sagas by status without asking the store: the counts read once when the
/// orchestrator starts ([`SagaCounts::seed`]) plus every transition this
/// replica has committed since. With one replica that is the store's count
/// (terminal sagas expired by a TTL excepted: they stay counted). With
/// several, each replica adds only its own commits to the counts it read at
/// its start, so its figures drift from the fleet's by what the others
/// committed: sum the changes over replicas, or restart one to re-read.
#[derive(Debug, Default)]
pub struct SagaCounts {
    inner: Mutex<CountsInner>,
}

#[derive(Debug, Default)]
struct CountsInner {
    /// Read from the store at start; `None` until then.
    base: Option<BTreeMap<SagaStatus, u64>>,
    /// Changes this replica committed.
    delta: BTreeMap<SagaStatus, i64>,
}

impl SagaCounts {
    /// Sets the counts read from the store; transitions committed before
    /// and after are added to them.
    pub fn seed(&self, counts: BTreeMap<SagaStatus, u64>) {
        if let Ok(mut c) = self.inner.lock() {
            c.base = Some(counts);
        }
    }

    /// Whether the counts read at start arrived.
    pub fn seeded(&self) -> bool {
        self.inner.lock().map(|c| c.base.is_some()).unwrap_or(false)
    }

    /// A saga moved from `from` (`None`: created) to `to`.
    pub fn transition(&self, from: Option<SagaStatus>, to: SagaStatus) {
        if from == Some(to) {
            return;
        }
        if let Ok(mut c) = self.inner.lock() {
            if let Some(from) = from {
                *c.delta.entry(from).or_default() -= 1;
            }
            *c.delta.entry(to).or_default() += 1;
        }
    }

    /// Every status, base plus changes (never below zero).
    pub fn snapshot(&self) -> BTreeMap<SagaStatus, u64> {
        let Ok(c) = self.inner.lock() else { return BTreeMap::new() };
        SagaStatus::ALL
            .into_iter()
            .map(|s| {
                let base = c.base.as_ref().and_then(|b| b.get(&s)).copied().unwrap_or(0) as i64;
                (s, (base + c.delta.get(&s).copied().unwrap_or(0)).max(0) as u64)
            })
            .collect()
    }
}
