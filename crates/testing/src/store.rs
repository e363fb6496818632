//! `MemoryStore`: the `SagaStore` port in memory, for saga authors' tests
//! (the harness) and the simulator. It passes the store contract suite
//! (`sqsaga_store::contract`) in both of the outbox's shapes:
//!
//! - [`MemoryStore::new`] keeps each committed outbox in the record until
//!   the orchestrator clears it, as the DynamoDB store does
//!   (`outbox_pending: true`; the orchestrator sends, then clears; the
//!   sweeper re-sends what a crash left behind);
//! - [`MemoryStore::sharing`] shares a transaction with a [`MemoryQueue`],
//!   as the embedded SQLite store does: the outbox is in the queues and
//!   the consumed messages deleted when the commit returns.
//!
//! Optimistic concurrency by revision, history, the due-time index (a scan:
//! in memory it costs nothing worth indexing) and listing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_queue::{Queue, QueueError};
use sqsaga_store::{
    Consumption, HistoryEntry, OutboxMessage, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError,
    UnitOfWork, UnitOutcome, WriteOutcome,
};

use crate::queue::MemoryQueue;

/// An outbox kept in the record until cleared.
#[derive(Debug, Clone)]
struct KeptOutbox {
    revision: u64,
    written_at: Millis,
    messages: Vec<OutboxMessage>,
}

#[derive(Debug, Clone)]
struct Stored {
    instance: SagaInstance,
    revision: u64,
    history: Vec<HistoryEntry>,
    outboxes: Vec<KeptOutbox>,
    /// Creation order, for "newest first".
    created: u64,
}

#[derive(Debug, Default)]
struct State {
    sagas: BTreeMap<String, Stored>,
    created: u64,
}

/// The in-memory saga store. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    /// `Some`: outboxes go into these queues, and consumed messages are
    /// deleted, within the commit.
    queue: Option<Arc<MemoryQueue>>,
    state: Mutex<State>,
}

impl MemoryStore {
    /// A store that keeps outboxes pending until cleared (the DynamoDB shape).
    pub fn new(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore { clock, queue: None, state: Mutex::new(State::default()) }
    }

    /// A store sharing its transaction with `queue` (the embedded shape).
    pub fn sharing(clock: Arc<dyn Clock>, queue: Arc<MemoryQueue>) -> MemoryStore {
        MemoryStore { clock, queue: Some(queue), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every saga stored, by id.
    pub fn all(&self) -> Vec<SagaRecord> {
        self.lock().sagas.values().map(|s| SagaRecord { instance: s.instance.clone(), revision: s.revision }).collect()
    }

    /// How many outboxes are still pending.
    pub fn pending_count(&self) -> usize {
        self.lock().sagas.values().map(|s| s.outboxes.len()).sum()
    }

    /// Applies the writes under one lock; `Err` only when an outbox names a
    /// queue that does not exist (nothing is applied then).
    async fn apply(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        if let Some(queue) = &self.queue {
            for w in &writes {
                for m in &w.outbox {
                    if queue.depth(&m.queue).await.is_err() {
                        return Err(StoreError::Queue(QueueError::NoSuchQueue(m.queue.clone())));
                    }
                }
            }
        }
        let now = self.clock.now();
        let mut deliver: Vec<OutboxMessage> = Vec::new();
        let outcomes = {
            let mut state = self.lock();
            let mut outcomes = Vec::with_capacity(writes.len());
            for w in writes {
                let id = w.instance.id.clone();
                let current = state.sagas.get(&id).map(|s| s.revision);
                let revision = match (w.expected_revision, current) {
                    (None, Some(_)) => {
                        outcomes.push(WriteOutcome::AlreadyExists);
                        continue;
                    }
                    (Some(want), Some(have)) if want == have => have + 1,
                    (Some(_), _) => {
                        outcomes.push(WriteOutcome::Conflict);
                        continue;
                    }
                    (None, None) => 1,
                };
                let outbox_pending = self.queue.is_none() && !w.outbox.is_empty();
                state.created += 1;
                let created = state.created;
                let entry = state.sagas.entry(id).or_insert_with(|| Stored {
                    instance: w.instance.clone(),
                    revision: 0,
                    history: Vec::new(),
                    outboxes: Vec::new(),
                    created,
                });
                entry.instance = w.instance;
                entry.revision = revision;
                entry.history.extend(w.history);
                if outbox_pending {
                    entry.outboxes.push(KeptOutbox { revision, written_at: now, messages: w.outbox });
                } else {
                    deliver.extend(w.outbox);
                }
                outcomes.push(WriteOutcome::Committed { revision, outbox_pending });
            }
            outcomes
        };
        if let Some(queue) = &self.queue {
            // The queues exist (checked above) and the messages were
            // checked by their writer: one send per message keeps batches
            // under the limit whatever the outbox's size.
            for m in deliver {
                queue.send_batch(&m.queue, vec![m.message]).await?;
            }
        }
        Ok(outcomes)
    }
}

#[async_trait]
impl SagaStore for MemoryStore {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        let state = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| state.sagas.get(id))
            .map(|s| SagaRecord { instance: s.instance.clone(), revision: s.revision })
            .collect())
    }

    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.apply(writes).await
    }

    async fn commit_unit(&self, unit: UnitOfWork) -> Result<UnitOutcome, StoreError> {
        let outcomes = self.apply(unit.writes.clone()).await?;
        let Some(queue) = &self.queue else {
            return Ok(UnitOutcome { outcomes, consumption: Consumption::LeftToCaller });
        };
        let mut by_queue: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for m in unit.deletable(&outcomes) {
            by_queue.entry(m.queue.as_str()).or_default().push(m.receipt.clone());
        }
        let mut failed = Vec::new();
        for (name, receipts) in by_queue {
            for chunk in receipts.chunks(sqsaga_queue::MAX_BATCH) {
                match queue.delete_batch(name, chunk).await {
                    Ok(f) => failed.extend(f),
                    Err(e) => failed.push(e),
                }
            }
        }
        Ok(UnitOutcome { outcomes, consumption: Consumption::Deleted { failed } })
    }

    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        if let Some(s) = self.lock().sagas.get_mut(saga_id) {
            s.outboxes.retain(|o| o.revision != revision);
        }
        Ok(())
    }

    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        let state = self.lock();
        Ok(state
            .sagas
            .iter()
            .flat_map(|(id, s)| {
                s.outboxes.iter().filter(|o| o.written_at <= written_before).map(|o| PendingOutbox {
                    saga_id: id.clone(),
                    revision: o.revision,
                    messages: o.messages.clone(),
                })
            })
            .take(limit)
            .collect())
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let state = self.lock();
        Ok(state
            .sagas
            .iter()
            .filter(|(_, s)| !s.instance.status.is_terminal())
            .filter(|(_, s)| s.instance.next_wakeup().is_some_and(|at| at <= now))
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect())
    }

    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        let state = self.lock();
        let mut rows: Vec<&Stored> =
            state.sagas.values().filter(|s| status.is_none_or(|want| s.instance.status == want)).collect();
        rows.sort_by(|a, b| b.instance.updated_at.cmp(&a.instance.updated_at).then(b.created.cmp(&a.created)));
        Ok(rows.into_iter().take(limit).map(|s| SagaSummary::from(&s.instance)).collect())
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.lock().sagas.get(saga_id).map(|s| s.history.clone()).unwrap_or_default())
    }

    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for s in self.lock().sagas.values() {
            *counts.entry(s.instance.status).or_default() += 1;
        }
        Ok(counts)
    }

    async fn reachable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn expire(&self, ended_before: Millis, limit: usize) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let old: Vec<String> = state
            .sagas
            .iter()
            .filter(|(_, s)| s.instance.status.is_terminal() && s.instance.updated_at <= ended_before)
            .map(|(id, _)| id.clone())
            .take(limit)
            .collect();
        for id in &old {
            state.sagas.remove(id);
        }
        Ok(old.len())
    }
}
