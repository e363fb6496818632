//! Retention on the embedded backend: `expire` deletes terminal sagas last
//! updated before the cut-off, with their history, a batch per call, and
//! never a running or stuck one; `list` and `history` go on with the rest.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use sqsaga_core::machine::SagaStatus;
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_store::contract::{instance, with_status};
use sqsaga_store::{HistoryEntry, SagaStore, SagaWrite};

fn create(id: &str, status: SagaStatus, updated_at: u64) -> SagaWrite {
    let mut s = with_status(instance(id, updated_at), status);
    s.updated_at = updated_at;
    let history = vec![HistoryEntry { at: updated_at, event: "start".into(), note: "started".into() }];
    SagaWrite { instance: s, expected_revision: None, history, outbox: Vec::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_removes_old_terminal_sagas_in_batches_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    let store = backend.store();
    let mut writes = Vec::new();
    for i in 0..5 {
        writes.push(create(&format!("old-done-{i}"), SagaStatus::Completed, 1_000 + i));
        writes.push(create(&format!("old-undone-{i}"), SagaStatus::Compensated, 1_000 + i));
    }
    writes.push(create("old-running", SagaStatus::Running, 1_000));
    writes.push(create("old-stuck", SagaStatus::NeedsOperator, 1_000));
    writes.push(create("new-done", SagaStatus::Completed, 50_000));
    store.commit(writes).await.unwrap();

    // Batches of 4: 10 old terminal sagas go in three calls.
    assert_eq!(store.expire(10_000, 4).await.unwrap(), 4);
    assert_eq!(store.expire(10_000, 4).await.unwrap(), 4);
    assert_eq!(store.expire(10_000, 4).await.unwrap(), 2);
    assert_eq!(store.expire(10_000, 4).await.unwrap(), 0);

    let left: Vec<String> = store.list(None, 100).await.unwrap().into_iter().map(|s| s.id).collect();
    let mut sorted = left.clone();
    sorted.sort();
    assert_eq!(sorted, ["new-done", "old-running", "old-stuck"]);
    assert!(store.history("old-done-0").await.unwrap().is_empty(), "history of an expired saga is gone");
    assert_eq!(store.history("old-running").await.unwrap().len(), 1);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&SagaStatus::Completed], 1);
    assert_eq!(counts[&SagaStatus::Compensated], 0);
}
