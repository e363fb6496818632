//! The request-accounting benchmark end to end on a small run: both phases
//! finish with the invariants holding, and naive mode costs more requests
//! than batching. The figures themselves (targets: ≤ 0.8 requests per step,
//! ≥ 7× fewer than naive) are measured at saturation by `sqsaga bench sqs`,
//! not asserted here: a 20-saga run on an emulator is not saturation.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

#[path = "../../aws/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use sqsaga_aws::AwsSettings;
use sqsaga_bench::{BenchSqsOptions, bench_sqs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_sqs_runs_both_phases_and_naive_costs_more() {
    let sdk = common::sdk_config().await;
    let options = BenchSqsOptions {
        sagas: 20,
        idle: Duration::ZERO,
        orchestrator_pollers: 4,
        worker_pollers: 2,
        timeout: Duration::from_secs(180),
        ..BenchSqsOptions::default()
    };
    let report = bench_sqs(&sdk, &AwsSettings::default(), &options).await.unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let naive = report.naive.as_ref().unwrap();
    for phase in [&report.batched, naive] {
        assert!(phase.invariants_ok, "{}: {:?}", phase.mode, phase.violations);
        assert_eq!(phase.unfinished, 0, "{}", phase.mode);
        assert!(phase.steps >= 20, "{}: {} steps", phase.mode, phase.steps);
    }
    assert_eq!(report.batched.requests.get("SendMessage"), None, "batched mode sent single messages");
    assert_eq!(naive.requests.get("SendMessageBatch"), None, "naive mode batched");
    assert!(naive.requests_per_step > report.batched.requests_per_step, "{report:?}");
    assert!(report.reduction.is_some_and(|r| r > 1.0), "{report:?}");
}

/// Records the size of every `send_batch` per queue, passing it on.
struct Recording {
    inner: std::sync::Arc<dyn sqsaga_queue::Queue>,
    sends: std::sync::Mutex<Vec<(String, usize)>>,
}

#[async_trait::async_trait]
impl sqsaga_queue::Queue for Recording {
    async fn ensure(&self, spec: &sqsaga_queue::QueueSpec) -> Result<(), sqsaga_queue::QueueError> {
        self.inner.ensure(spec).await
    }

    async fn send_batch(
        &self,
        queue: &str,
        messages: Vec<sqsaga_queue::OutgoingMessage>,
    ) -> Result<(), sqsaga_queue::QueueError> {
        self.sends.lock().unwrap().push((queue.to_string(), messages.len()));
        self.inner.send_batch(queue, messages).await
    }

    async fn receive(
        &self,
        queue: &str,
        r: sqsaga_queue::Receive,
    ) -> Result<Vec<sqsaga_queue::ReceivedMessage>, sqsaga_queue::QueueError> {
        self.inner.receive(queue, r).await
    }

    async fn delete_batch(
        &self,
        queue: &str,
        receipts: &[String],
    ) -> Result<Vec<sqsaga_queue::QueueError>, sqsaga_queue::QueueError> {
        self.inner.delete_batch(queue, receipts).await
    }

    async fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), sqsaga_queue::QueueError> {
        self.inner.change_visibility(queue, receipt, timeout).await
    }

    async fn depth(&self, queue: &str) -> Result<sqsaga_queue::Depth, sqsaga_queue::QueueError> {
        self.inner.depth(queue).await
    }
}

/// The orchestrator sends the commands of every saga a received batch moved on
/// together, so they share one `SendMessageBatch`; one saga after another
/// would hand the adapter one message per flush window. Every outbox is
/// cleared after its send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_received_batch_sends_its_sagas_commands_together() {
    use std::sync::Arc;

    use sqsaga_orchestrator::{ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock};
    use sqsaga_queue::Receive;

    let b = common::backend().await;
    let defs = Arc::new(sqsaga_order::run::definitions().unwrap());
    sqsaga_runtime::provision(&b, &defs, &sqsaga_runtime::ProvisionOptions::default()).await.unwrap();
    let (_, inputs) = sqsaga_order::generate_orders(5, 3);
    let ids = sqsaga_bench::sqs::start_orders(b.queue().as_ref(), "together", &inputs).await.unwrap();
    let mut received = Vec::new();
    while received.len() < ids.len() {
        received.extend(b.queue().receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap());
    }
    let recording = Arc::new(Recording { inner: b.queue(), sends: Default::default() });
    let store = b.store();
    let orchestrator = Orchestrator::new(
        defs,
        recording.clone(),
        store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions::default(),
    );
    orchestrator.handle_messages(received).await;
    let sends = recording.sends.lock().unwrap().clone();
    assert_eq!(sends, vec![("inventory".to_string(), 5)], "one send of the five sagas' first commands");
    let left = store.pending_outboxes(u64::MAX, 100).await.unwrap();
    assert!(left.is_empty(), "outboxes not cleared after the send: {left:?}");
}
