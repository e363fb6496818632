//! Queue depths on the orchestrator's /metrics: every queue the
//! definitions use and its dead-letter queue, as
//! `sqsaga_queue_messages{queue,state}`, so "a message was dead-lettered"
//! and "a backlog is building" are alerts on the metrics operators already
//! scrape (deploy/prometheus), on either backend.
//!
//! The depths are read by a loop every [`INTERVAL`] and served from memory:
//! a scrape never waits on the queue. Cost on SQS: one
//! `GetQueueAttributes` per queue per interval, 2 × (services + 1) × 2 a
//! minute — 16 requests a minute for the order saga, constant whatever the
//! traffic (≈ $0.0004 an hour at $0.40 per million requests).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqsaga_http::Probe;
use sqsaga_http::metrics::{Collector, DescriptorEncoder, gauges};
use sqsaga_queue::{Depth, Queue, dlq_name};

use crate::shutdown::CancellationToken;

/// How often the depths are read: DLQ alerts fire within a minute, at a
/// cost that does not matter (above).
pub const INTERVAL: Duration = Duration::from_secs(30);

/// The name the loop reports its progress under (`/readyz`, stalled loops).
pub const LOOP: &str = "queue-depths";

/// The last depths read, by queue name; a queue whose read failed keeps
/// its previous value (and the failure is logged).
#[derive(Debug, Default)]
pub struct QueueDepths {
    depths: Mutex<BTreeMap<String, Depth>>,
}

impl QueueDepths {
    /// The queues watched for an orchestrator: its own and each service's,
    /// each with its dead-letter queue.
    pub fn queues(orchestrator: &str, services: &[String]) -> Vec<String> {
        std::iter::once(orchestrator.to_string())
            .chain(services.iter().cloned())
            .flat_map(|q| [dlq_name(&q), q])
            .collect()
    }

    /// Reads every queue once.
    pub async fn refresh(&self, queue: &dyn Queue, names: &[String]) {
        for name in names {
            match queue.depth(name).await {
                Ok(depth) => {
                    self.depths.lock().unwrap_or_else(PoisonError::into_inner).insert(name.clone(), depth);
                }
                Err(e) => tracing::warn!(queue = %name, error = %e, "Cannot read a queue's depth; will retry."),
            }
        }
    }

    /// The depths as last read.
    pub fn snapshot(&self) -> BTreeMap<String, Depth> {
        self.depths.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the depths every [`INTERVAL`] until `shutdown`.
    pub fn spawn(
        self: &Arc<Self>,
        queue: Arc<dyn Queue>,
        names: Vec<String>,
        probe: Probe,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        probe.register_loop(LOOP, INTERVAL * 4);
        tokio::spawn(async move {
            loop {
                me.refresh(queue.as_ref(), &names).await;
                probe.heartbeat(LOOP);
                tokio::select! {
                    _ = tokio::time::sleep(INTERVAL) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    }
}

/// `sqsaga_queue_messages{queue,state}` from the last read.
#[derive(Debug)]
pub struct QueueDepthMetrics(pub Arc<QueueDepths>);

impl Collector for QueueDepthMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let depths = self.0.snapshot();
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let samples = depths.iter().flat_map(|(queue, d)| {
            [("visible", d.visible), ("in_flight", d.in_flight), ("delayed", d.delayed)]
                .map(|(state, n)| ([("queue", queue.as_str()), ("state", state)], gauge(n)))
        });
        gauges(
            &mut encoder,
            "sqsaga_queue_messages",
            "Messages in each queue and dead-letter queue the orchestrator's definitions use, by state",
            samples,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_queue_is_watched_with_its_dead_letter_queue() {
        let names = QueueDepths::queues("orchestrator", &["inventory".to_string(), "payment".to_string()]);
        assert_eq!(names, ["orchestrator-dlq", "orchestrator", "inventory-dlq", "inventory", "payment-dlq", "payment"]);
    }
}
