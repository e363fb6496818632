//! The in-memory adapters held to the contract suites every adapter of the
//! ports passes (SQLite, SQS and DynamoDB through an emulator): the queue
//! suite, and the store suite in both of the outbox's shapes. On paused
//! tokio time, with a clock that follows it, so the suites' waits for
//! visibility timeouts and delays take no real time.

use std::sync::Arc;

use sqsaga_core::Millis;
use sqsaga_core::clock::{Clock, now_ms};
use sqsaga_testing::queue::MemoryQueue;
use sqsaga_testing::store::MemoryStore;

/// Wall-clock time at the start plus tokio's (paused) time since.
#[derive(Debug)]
struct TokioClock {
    base: Millis,
    start: tokio::time::Instant,
}

impl TokioClock {
    fn new() -> Arc<TokioClock> {
        Arc::new(TokioClock { base: now_ms(), start: tokio::time::Instant::now() })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Millis {
        self.base + u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn expect(result: Result<(), String>) {
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_memory_queue_passes_the_queue_contract() {
    let queue = MemoryQueue::new(TokioClock::new(), 7);
    expect(sqsaga_queue::contract::run_all(&queue, "memq").await);
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_with_pending_outboxes_passes_the_store_contract() {
    let clock = TokioClock::new();
    let queue = MemoryQueue::new(clock.clone(), 7);
    let store = MemoryStore::new(clock);
    expect(sqsaga_store::contract::run_all(&store, &queue, "mems").await);
}

#[tokio::test(start_paused = true)]
async fn the_memory_store_sharing_the_queue_passes_the_store_contract() {
    let clock = TokioClock::new();
    let queue = Arc::new(MemoryQueue::new(clock.clone(), 7));
    let store = MemoryStore::sharing(clock, queue.clone());
    expect(sqsaga_store::contract::run_all(&store, queue.as_ref(), "memshared").await);
}
