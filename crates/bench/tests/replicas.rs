//! Several orchestrator replicas on one queue and one table: two
//! `Orchestrator`s compete for the same replies, timers and outboxes while
//! the real order participants' workers run the commands (with transient
//! notification failures, so retries and timer wake-ups race too).
//!
//! Every message to the orchestrator queue (start requests, replies) is
//! sent twice, as SQS may deliver it, so the replicas race on the same
//! event: one commits, the other conflicts, re-reads and finds it applied.
//!
//! SQS delivers at least once, so "each command received once" is not the
//! property; the saga history is: every transition appears once (no
//! duplicated transition), every saga ends terminal with step states that
//! match its status, and the participants' data add up (no lost update).
//!
//! Known emulator flaw: moto (5.2.5) does not apply a conditional
//! `UpdateItem` atomically across its server threads, so now and then two
//! replicas' writes conditioned on the same `revision` both succeed and a
//! transition shows twice. The failure prints the saga's revision with its
//! history: a revision below the number of writes in the history is that
//! flaw (each write bumps the revision by one). DynamoDB's conditional
//! writes are atomic; nextest retries this test (`.config/nextest.toml`).

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

#[path = "../../aws/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqsaga_orchestrator::ORCHESTRATOR_QUEUE;
use sqsaga_queue::{Depth, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use std::sync::Arc;
use std::time::Duration;

use sqsaga_bench::sqs::{order_participants, start_orders, temp_dir, wait_terminal};
use sqsaga_core::machine::{SagaStatus, StepStatus};
use sqsaga_runtime::{ProvisionOptions, Stack, StackOptions, provision};

const SAGAS: usize = 40;

/// A queue that sends everything bound for the orchestrator twice, in two
/// separate requests, so two pollers (of two replicas) can get the copies.
struct Duplicating(Arc<dyn Queue>);

#[async_trait]
impl Queue for Duplicating {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        self.0.ensure(spec).await
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        if queue == ORCHESTRATOR_QUEUE {
            self.0.send_batch(queue, messages.clone()).await?;
        }
        self.0.send_batch(queue, messages).await
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.0.receive(queue, r).await
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        self.0.delete_batch(queue, receipts).await
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.0.change_visibility(queue, receipt, timeout).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        self.0.depth(queue).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrator_replicas_lose_no_update_and_duplicate_no_transition() {
    let b = common::backend().await;
    let defs = Arc::new(sqsaga_order::run::definitions().unwrap());
    provision(&b, &defs, &ProvisionOptions::default()).await.unwrap();
    let dir = temp_dir("replicas").unwrap();
    let (initial, inputs) = sqsaga_order::generate_orders(SAGAS, 11);
    sqsaga_order::seed_data(&dir, &initial).unwrap();
    let options = StackOptions {
        orchestrators: 2,
        orchestrator_pollers: 4,
        worker_pollers: 2,
        wait: Duration::from_secs(2),
        timer_interval: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
        ..StackOptions::default()
    };
    let queue: Arc<dyn Queue> = Arc::new(Duplicating(b.queue()));
    let participants = order_participants(&dir, 0.2, 11).unwrap();
    let stack = Stack::start(queue.clone(), b.store(), defs, &participants, &options);
    let ids = start_orders(queue.as_ref(), "replica", &inputs).await.unwrap();
    let finished = wait_terminal(b.store().as_ref(), SAGAS, Duration::from_secs(240)).await;
    let replicas: Vec<(u64, u64, u64)> = stack
        .orchestrators
        .iter()
        .map(|s| (s.events_applied.get(), s.events_ignored.get(), s.write_conflicts.get()))
        .collect();
    stack.stop().await;
    finished.unwrap();
    eprintln!("replicas (events applied, ignored, write conflicts): {replicas:?}");
    assert!(replicas.iter().all(|(applied, _, _)| *applied > 0), "a replica did nothing: {replicas:?}");
    // Every duplicate was recognised as applied, by whichever replica got it.
    let ignored: u64 = replicas.iter().map(|(_, i, _)| i).sum();
    assert!(ignored >= SAGAS as u64, "duplicates were not ignored: {replicas:?}");

    let store = b.store();
    let records = store.load(&ids).await.unwrap();
    assert_eq!(records.len(), SAGAS, "sagas missing from the store");
    let mut failures = Vec::new();
    let mut statuses = BTreeMap::new();
    for r in &records {
        let s = &r.instance;
        *statuses.entry(s.status).or_insert(0) += 1;
        let history = store.history(&s.id).await.unwrap();
        let starts = history.iter().filter(|h| h.event == "start").count();
        if starts != 1 {
            failures.push(format!("{}: {starts} start transitions", s.id));
        }
        let mut notes: Vec<&str> = history.iter().map(|h| h.note.as_str()).collect();
        notes.sort_unstable();
        if let Some(dup) = notes.windows(2).find(|w| w[0] == w[1]) {
            let entries: Vec<String> = history.iter().map(|h| format!("{} {} {}", h.at, h.event, h.note)).collect();
            failures.push(format!(
                "{}: transition `{}` recorded twice; revision {}, history:\n  {}",
                s.id,
                dup[0],
                r.revision,
                entries.join("\n  ")
            ));
        }
        let steps: Vec<StepStatus> = s.steps.iter().map(|st| st.status).collect();
        let consistent = match s.status {
            SagaStatus::Completed => steps.iter().all(|st| *st == StepStatus::Succeeded),
            SagaStatus::Compensated => {
                steps.iter().any(|st| matches!(st, StepStatus::Refused | StepStatus::Compensated))
                    && steps.iter().all(|st| {
                        matches!(
                            st,
                            StepStatus::Pending
                                | StepStatus::Refused
                                | StepStatus::Compensated
                                | StepStatus::NotCompensable
                        )
                    })
            }
            _ => false,
        };
        if !consistent {
            failures.push(format!("{} ended {:?} with steps {steps:?}", s.id, s.status));
        }
    }
    let sagas: Vec<_> = ids
        .iter()
        .zip(&inputs)
        .map(|(id, input)| {
            let status =
                records.iter().find(|r| &r.instance.id == id).map_or(SagaStatus::Running, |r| r.instance.status);
            (id.clone(), status, input.clone())
        })
        .collect();
    let report = sqsaga_order::check_invariants(&dir, &sagas, &initial).unwrap();
    failures.extend(report.violations);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(statuses.get(&SagaStatus::Completed).is_some_and(|n| *n > 0), "no saga completed: {statuses:?}");
    let _ = std::fs::remove_dir_all(&dir);
    b.teardown().await.unwrap();
}
