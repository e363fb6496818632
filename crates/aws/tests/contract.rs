//! The shared queue and store contracts, on SqsQueue and DynamoStore against
//! the moto emulator (see `tests/common`): the same rules the embedded
//! backend is held to.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_contract_runs_all_on_sqs() {
    let b = common::backend().await;
    if let Err(e) = sqsaga_queue::contract::run_all(&*b.queue(), "q").await {
        panic!("{e}");
    }
    b.teardown().await.unwrap();
}

/// The store keeps every committed outbox pending until cleared: the
/// contract's outbox shape for stores that cannot write to the queues
/// (`pending_outboxes`, `clear_outbox`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_contract_runs_all_on_dynamodb() {
    let b = common::backend().await;
    if let Err(e) = sqsaga_store::contract::run_all(&*b.store(), &*b.queue(), "s").await {
        panic!("{e}");
    }
    b.teardown().await.unwrap();
}
