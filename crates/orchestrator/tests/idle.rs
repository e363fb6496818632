//! An idle orchestrator's requests to its store, counted on paused time
//! with a store double: the timer loop backs off to `timer_idle_interval`,
//! the counts by status are read once at start, and nothing else polls.
//! What a store answers cannot make the schedule grow, so this is the
//! O(1)-idle property; `crates/aws/tests/dynamo.rs` shows each poll's cost
//! on DynamoDB does not grow with the sagas stored either.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqsaga_core::Millis;
use sqsaga_core::machine::SagaStatus;
use sqsaga_orchestrator::{Definitions, Orchestrator, OrchestratorOptions, SystemClock};
use sqsaga_queue::{Depth, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_store::{
    HistoryEntry, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError, WriteOutcome,
};

/// A queue that never has a message: each receive waits its long poll.
struct EmptyQueue {
    receives: AtomicU64,
}

#[async_trait]
impl Queue for EmptyQueue {
    async fn ensure(&self, _: &QueueSpec) -> Result<(), QueueError> {
        Ok(())
    }
    async fn send_batch(&self, _: &str, _: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        Ok(())
    }
    async fn receive(&self, _: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.receives.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(r.wait).await;
        Ok(Vec::new())
    }
    async fn delete_batch(&self, _: &str, _: &[String]) -> Result<Vec<QueueError>, QueueError> {
        Ok(Vec::new())
    }
    async fn change_visibility(&self, _: &str, _: &str, _: Duration) -> Result<(), QueueError> {
        Ok(())
    }
    async fn depth(&self, _: &str) -> Result<Depth, QueueError> {
        Ok(Depth::default())
    }
}

/// A store holding `stored` finished sagas, nothing due: counts its calls.
#[derive(Default)]
struct CountingStore {
    stored: u64,
    calls: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

impl CountingStore {
    fn call(&self, name: &'static str) {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
    }
}

#[async_trait]
impl SagaStore for CountingStore {
    async fn load(&self, _: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        self.call("load");
        Ok(Vec::new())
    }
    async fn commit(&self, _: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.call("commit");
        Ok(Vec::new())
    }
    async fn clear_outbox(&self, _: &str, _: u64) -> Result<(), StoreError> {
        self.call("clear_outbox");
        Ok(())
    }
    async fn pending_outboxes(&self, _: Millis, _: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        self.call("pending_outboxes");
        Ok(Vec::new())
    }
    async fn due(&self, _: Millis, _: usize) -> Result<Vec<String>, StoreError> {
        self.call("due");
        Ok(Vec::new())
    }
    async fn list(&self, _: Option<SagaStatus>, _: usize) -> Result<Vec<SagaSummary>, StoreError> {
        self.call("list");
        Ok(Vec::new())
    }
    async fn history(&self, _: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.call("history");
        Ok(Vec::new())
    }
    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        self.call("counts");
        Ok(BTreeMap::from([(SagaStatus::Completed, self.stored)]))
    }
    async fn reachable(&self) -> Result<(), StoreError> {
        self.call("reachable");
        Ok(())
    }
}

/// Store calls of an orchestrator idle for `minutes`.
async fn idle_calls(stored: u64, minutes: u64) -> (BTreeMap<&'static str, u64>, BTreeMap<SagaStatus, u64>) {
    let store = Arc::new(CountingStore { stored, ..CountingStore::default() });
    let queue = Arc::new(EmptyQueue { receives: AtomicU64::new(0) });
    let options =
        OrchestratorOptions { retention: Some(Duration::from_secs(86_400)), ..OrchestratorOptions::default() };
    let o = Orchestrator::new(Arc::new(Definitions::default()), queue, store.clone(), Arc::new(SystemClock), options);
    let stats = o.stats();
    // Off the sweeper's 10 s beat, so both runs see the same number of sweeps.
    o.run(tokio::time::sleep(Duration::from_secs(60 * minutes + 1))).await;
    let calls = store.calls.lock().unwrap().clone();
    (calls, stats.sagas.snapshot())
}

#[tokio::test(start_paused = true)]
async fn an_idle_orchestrator_polls_its_store_at_a_fixed_rate_whatever_it_holds() {
    let (none, counts_none) = idle_calls(0, 10).await;
    let (many, counts_many) = idle_calls(100_000, 10).await;
    assert_eq!(none, many, "store calls with 0 and 100,000 sagas stored");
    // Read once at start, kept by the orchestrator since.
    assert_eq!(counts_none[&SagaStatus::Completed], 0);
    assert_eq!(counts_many[&SagaStatus::Completed], 100_000);
    assert_eq!(many.get("counts"), Some(&1), "{many:?}");
    assert_eq!(many.get("list"), None, "{many:?}");
    // The timer poll backs off from 100 ms to 5 s: about 12 a minute, not 600.
    let due = many.get("due").copied().unwrap_or(0);
    assert!((100..=130).contains(&due), "{due} timer polls in 10 idle minutes");
    // The sweeper (and the retention pass, a no-op here) every 10 s.
    assert!((55..=61).contains(&many.get("pending_outboxes").copied().unwrap_or(0)), "{many:?}");
}
