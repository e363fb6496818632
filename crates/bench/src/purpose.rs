//! [`Labelled`]: a `SagaStore` that labels the DynamoDB calls behind each
//! port method with a purpose, so the capacity meter
//! (`sqsaga_aws::capacity`) splits the bill by what the orchestrator asked
//! for.
//!
//! Why a decorator with a task-local label rather than a label argument: the
//! purpose of a call is the port method it serves, and the port is where
//! the benchmark can see it without the orchestrator or the store knowing —
//! neither changes, and the store's own requests keep one code path. The
//! one place the label would be lost, tasks the store spawns, carries it
//! (`DynamoStore`'s parallel writes).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqsaga_aws::with_purpose;
use sqsaga_core::Millis;
use sqsaga_core::machine::SagaStatus;
use sqsaga_store::{
    HistoryEntry, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError, UnitOfWork, UnitOutcome,
    WriteOutcome,
};

/// Loads and commits of the event path (a saga's read before it decides, and its write).
pub const COMMIT: &str = "commit";
/// Clearing an outbox once sent.
pub const OUTBOX: &str = "outbox";
/// Polling the due-time index.
pub const TIMERS: &str = "timers";
/// The sweeper's look for outboxes left pending.
pub const SWEEPER: &str = "sweeper";
/// The readiness loop's reachability check.
pub const READINESS: &str = "readiness";
/// Expiring terminal sagas (the embedded backend; DynamoDB's TTL is free).
pub const RETENTION: &str = "retention";
/// Listings, histories and counts (operator commands, start-up).
pub const ADMIN: &str = "admin";
/// The benchmark's own progress checks and final read: not part of the bill.
pub const BENCH: &str = "bench";

/// `inner` with every call labelled by its purpose.
pub struct Labelled {
    inner: Arc<dyn SagaStore>,
}

impl Labelled {
    pub fn new(inner: Arc<dyn SagaStore>) -> Self {
        Labelled { inner }
    }
}

#[async_trait]
impl SagaStore for Labelled {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        with_purpose(COMMIT, self.inner.load(ids)).await
    }

    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        with_purpose(COMMIT, self.inner.commit(writes)).await
    }

    async fn commit_unit(&self, unit: UnitOfWork) -> Result<UnitOutcome, StoreError> {
        with_purpose(COMMIT, self.inner.commit_unit(unit)).await
    }

    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        with_purpose(OUTBOX, self.inner.clear_outbox(saga_id, revision)).await
    }

    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        with_purpose(SWEEPER, self.inner.pending_outboxes(written_before, limit)).await
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        with_purpose(TIMERS, self.inner.due(now, limit)).await
    }

    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        with_purpose(ADMIN, self.inner.list(status, limit)).await
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        with_purpose(ADMIN, self.inner.history(saga_id)).await
    }

    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        with_purpose(ADMIN, self.inner.counts()).await
    }

    async fn reachable(&self) -> Result<(), StoreError> {
        with_purpose(READINESS, self.inner.reachable()).await
    }

    async fn expire(&self, ended_before: Millis, limit: usize) -> Result<usize, StoreError> {
        with_purpose(RETENTION, self.inner.expire(ended_before, limit)).await
    }
}
