//! The registry each long-running process serves on `/metrics`: built
//! once at start by [`orchestrator_registry`] or [`worker_registry`], from
//! the families each component registers where it counts them (the worker's
//! and the orchestrator's stats, the fleet monitor's heartbeats, the probe)
//! and the collectors of values read at scrape time (saga counts by state
//! here, fleet gauges in `fleet.rs`, AWS request counts in `backend.rs`,
//! queue depths in `depths.rs`).
//! The docs test builds the same registries and lists their families.

use std::sync::Arc;

use prometheus_client::metrics::info::Info;
use sqsaga_aws::RequestCounter;
use sqsaga_core::machine::SagaStatus;
use sqsaga_http::metrics::{Collector, DescriptorEncoder, counters, gauges};
use sqsaga_http::{Probe, Registry};
use sqsaga_orchestrator::{FleetMonitor, Orchestrator, OrchestratorStats};
use sqsaga_worker::Worker;

use crate::backend::Requests;
use crate::depths::{QueueDepthMetrics, QueueDepths};
use crate::fleet::FleetMetrics;
use crate::identity::{GIT_SHA, VERSION};

/// `sqsaga_build_info{service,version,git_sha,fingerprint} 1`.
fn register_build_info(registry: &mut Registry, service: &str, fingerprint: &str) {
    let labels = vec![
        ("service", service.to_string()),
        ("version", VERSION.to_string()),
        ("git_sha", GIT_SHA.to_string()),
        ("fingerprint", fingerprint.to_string()),
    ];
    // `Info` appends `_info` to the name.
    registry.register("sqsaga_build", "Build and fingerprint of this process (always 1)", Info::new(labels));
}

/// Every family the orchestrator serves.
pub fn orchestrator_registry(
    probe: &Probe,
    fingerprint: &str,
    orchestrator: &Orchestrator,
    fleet: &Arc<FleetMonitor>,
    requests: Requests,
    depths: &Arc<QueueDepths>,
) -> Registry {
    let mut registry = Registry::default();
    probe.register_metrics(&mut registry);
    register_build_info(&mut registry, "orchestrator", fingerprint);
    registry.register_collector(Box::new(QueueDepthMetrics(depths.clone())));
    orchestrator.stats().register(&mut registry);
    registry.register_collector(Box::new(SagasByState(orchestrator.stats())));
    fleet.register_metrics(&mut registry);
    registry.register_collector(Box::new(FleetMetrics(fleet.clone())));
    register_requests(&mut registry, requests);
    registry
}

/// Every family a worker serves.
pub fn worker_registry(
    probe: &Probe,
    service: &str,
    fingerprint: &str,
    worker: &Worker,
    requests: Requests,
) -> Registry {
    let mut registry = Registry::default();
    probe.register_metrics(&mut registry);
    register_build_info(&mut registry, service, fingerprint);
    worker.register_metrics(&mut registry);
    register_requests(&mut registry, requests);
    registry
}

fn register_requests(registry: &mut Registry, requests: Requests) {
    if let Some((sqs, dynamodb)) = requests {
        registry.register_collector(Box::new(AwsRequests { sqs, dynamodb }));
    }
}

/// Saga counts by state: the orchestrator's own bookkeeping (read once at
/// start, moved by every commit; see `SagaCounts` for what they mean with
/// several replicas), so a scrape never waits on the store.
#[derive(Debug)]
struct SagasByState(Arc<OrchestratorStats>);

impl Collector for SagasByState {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let counts = self.0.sagas.snapshot();
        let count = |status| i64::try_from(counts.get(&status).copied().unwrap_or(0)).unwrap_or(i64::MAX);
        let by_state = SagaStatus::ALL.iter().map(|s| ([("state", s.as_str())], count(*s)));
        gauges(&mut encoder, "sqsaga_sagas", "Sagas by state", by_state)?;
        let no_labels: [(&str, &str); 0] = [];
        gauges(
            &mut encoder,
            "sqsaga_sagas_needing_operator",
            "Sagas whose compensation needs an operator",
            [(no_labels, count(SagaStatus::NeedsOperator))],
        )
    }
}

/// `sqsaga_sqs_requests_total{action}` and the DynamoDB counterpart, read
/// from the adapter's counters at scrape time.
#[derive(Debug)]
struct AwsRequests {
    sqs: Arc<RequestCounter>,
    dynamodb: Arc<RequestCounter>,
}

impl Collector for AwsRequests {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for counter in [&self.sqs, &self.dynamodb] {
            let name = counter.metric().strip_suffix("_total").unwrap_or(counter.metric());
            let help = counter.help().strip_suffix('.').unwrap_or(counter.help());
            let by_action = counter.snapshot().by_action;
            counters(
                &mut encoder,
                name,
                help,
                by_action.iter().map(|(action, n)| ([("action", action.as_str())], *n)),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_encode_one_family_with_a_sample_per_action() {
        let sqs = Arc::new(RequestCounter::sqs());
        sqs.record("SendMessageBatch");
        sqs.record("SendMessageBatch");
        sqs.record("ReceiveMessage");
        let dynamodb = Arc::new(RequestCounter::dynamodb());
        dynamodb.record("UpdateItem");
        let mut registry = Registry::default();
        registry.register_collector(Box::new(AwsRequests { sqs, dynamodb }));
        let out = sqsaga_http::metrics::encode(&registry);
        assert!(out.contains("# TYPE sqsaga_sqs_requests_total counter"), "{out}");
        assert!(out.contains("sqsaga_sqs_requests_total{action=\"SendMessageBatch\"} 2"), "{out}");
        assert!(out.contains("sqsaga_sqs_requests_total{action=\"ReceiveMessage\"} 1"), "{out}");
        assert!(out.contains("sqsaga_dynamodb_requests_total{action=\"UpdateItem\"} 1"), "{out}");
        assert_eq!(out.matches("# TYPE").count(), 2, "{out}");
        sqsaga_http::metrics::assert_valid_exposition(&out);
    }
}
