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
    sqsaga_aws::teardown(&b).await.unwrap();
}

/// As `AwsBackend` builds it: the store sends committed outboxes itself
/// (`outbox_pending: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_contract_runs_all_on_dynamodb() {
    let b = common::backend().await;
    if let Err(e) = sqsaga_store::contract::run_all(&*b.store(), &*b.queue(), "s").await {
        panic!("{e}");
    }
    sqsaga_aws::teardown(&b).await.unwrap();
}

/// Without a delivery queue every outbox stays pending until cleared: the
/// contract's other outbox shape (`pending_outboxes`, `clear_outbox`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_contract_runs_all_on_dynamodb_with_outboxes_left_pending() {
    let b = common::backend().await;
    let store = b.dynamo().without_delivery();
    if let Err(e) = sqsaga_store::contract::run_all(&store, &*b.queue(), "p").await {
        panic!("{e}");
    }
    sqsaga_aws::teardown(&b).await.unwrap();
}
