//! The `SagaStore` port: durable saga state, its history, the transactional
//! outbox and the due-time index that makes timers survive restarts.
//!
//! Only the orchestrator writes saga state, and only through
//! [`SagaStore::commit`]: the new state and the messages it emits are made
//! durable together, before anything is sent. An adapter that can write the
//! messages into the queues in the same transaction (SQLite) does so and
//! reports `outbox_pending: false`; one that cannot (DynamoDB + SQS) keeps them
//! in the saga record, and the orchestrator sends them and then calls
//! [`SagaStore::clear_outbox`] (which the adapter may persist lazily, with
//! the saga's next write: a re-send of an outbox already sent is harmless,
//! command ids being deterministic). Either way a crash can neither lose nor
//! invent a command.
//!
//! Terminal sagas expire after a retention: an adapter whose database does
//! it by itself (DynamoDB's TTL) marks them at the terminal commit; one that
//! cannot (SQLite) deletes them when the orchestrator calls
//! [`SagaStore::expire`].
//!
//! Writes are optimistic: each record has a `revision`, and a write names the
//! revision it read. A mismatch is a [`WriteOutcome::Conflict`], never a lost update.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqsaga_core::Millis;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_queue::{OutgoingMessage, QueueError};

pub mod contract;

/// A saga as stored, with its optimistic-concurrency revision.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaRecord {
    pub instance: SagaInstance,
    pub revision: u64,
}

/// One line of a saga's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Millis,
    /// `start`, `reply`, `wake`, `resume`, `cancel`.
    pub event: String,
    /// What the state machine made of it.
    pub note: String,
}

/// A message the orchestrator must send once the write is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub queue: String,
    pub message: OutgoingMessage,
}

/// One saga's new state and what it emits.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaWrite {
    pub instance: SagaInstance,
    /// `None` creates the saga (fails with `AlreadyExists` if present);
    /// `Some(r)` updates it only if its revision is still `r`.
    pub expected_revision: Option<u64>,
    pub history: Vec<HistoryEntry>,
    pub outbox: Vec<OutboxMessage>,
}

/// What happened to one [`SagaWrite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Committed {
        revision: u64,
        /// True when the outbox was kept in the record and still has to be sent.
        outbox_pending: bool,
    },
    /// Someone else wrote first: re-read and re-apply.
    Conflict,
    /// A create for an id that exists (a duplicate start request).
    AlreadyExists,
}

/// A saga's outbox left behind, e.g. by a crashed orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingOutbox {
    pub saga_id: String,
    pub revision: u64,
    pub messages: Vec<OutboxMessage>,
}

/// A row of `sagas list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaSummary {
    pub id: String,
    pub saga: String,
    pub version: u32,
    pub status: SagaStatus,
    pub started_at: Millis,
    pub updated_at: Millis,
}

impl From<&SagaInstance> for SagaSummary {
    fn from(i: &SagaInstance) -> Self {
        SagaSummary {
            id: i.id.clone(),
            saga: i.saga.clone(),
            version: i.version,
            status: i.status,
            started_at: i.started_at,
            updated_at: i.updated_at,
        }
    }
}

/// Errors of the store port.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("saga `{id}` is stored but cannot be read: {cause}")]
    Corrupt { id: String, cause: String },
    #[error("saga store unreachable: {0}")]
    Unreachable(String),
    #[error("saga store throttled the request: {0}")]
    Throttled(String),
    #[error("saga store error: {0}")]
    Backend(String),
    #[error("outbox could not be delivered: {0}")]
    Queue(#[from] sqsaga_queue::QueueError),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unreachable(_) | StoreError::Throttled(_) | StoreError::Backend(_) => true,
            StoreError::Queue(e) => e.is_retryable(),
            StoreError::Corrupt { .. } => false,
        }
    }
}

/// When a consumed message may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteWhen {
    /// Only if write `i` of the unit commits (it is what applied the message).
    Committed(usize),
    /// Whatever the writes' outcomes (a heartbeat, an ignored duplicate).
    Always,
}

/// A received message a unit of work consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// The queue it was received from.
    pub queue: String,
    pub receipt: String,
    pub when: DeleteWhen,
}

/// What the orchestrator commits for one received batch: the saga writes
/// and the messages they consumed. A store that shares a transaction with
/// the queue (the embedded backend) deletes the messages with the writes;
/// one that does not leaves them to the caller ([`Consumption`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitOfWork {
    pub writes: Vec<SagaWrite>,
    pub consumed: Vec<ConsumedMessage>,
}

impl UnitOfWork {
    /// Whether there is nothing to write and nothing to delete.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.consumed.is_empty()
    }

    /// The receipts to delete given the writes' outcomes: those whose write
    /// committed, and the `Always` ones.
    pub fn deletable<'a>(&'a self, outcomes: &'a [WriteOutcome]) -> impl Iterator<Item = &'a ConsumedMessage> + 'a {
        self.consumed.iter().filter(move |m| match m.when {
            DeleteWhen::Always => true,
            DeleteWhen::Committed(i) => matches!(outcomes.get(i), Some(WriteOutcome::Committed { .. })),
        })
    }
}

/// Who deletes a unit's consumed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumption {
    /// The store deleted every deletable message in the commit's
    /// transaction; `failed` are receipts it could not delete (already
    /// gone, stale), whose redelivery the state machine will ignore.
    Deleted { failed: Vec<QueueError> },
    /// The store cannot (another service than the queue): the caller deletes
    /// [`UnitOfWork::deletable`] after the commit.
    LeftToCaller,
}

/// What a [`UnitOfWork`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitOutcome {
    /// Per write, in order.
    pub outcomes: Vec<WriteOutcome>,
    pub consumption: Consumption,
}

/// Durable saga state.
#[async_trait]
pub trait SagaStore: Send + Sync + 'static {
    /// Reads sagas by id; missing ids are left out.
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError>;

    /// Commits a group of writes; each succeeds or conflicts on its own. The
    /// adapter should use as few durable commits as it can (group commit).
    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError>;

    /// Commits a unit of work: its writes like [`SagaStore::commit`], and
    /// deletes the messages they consumed in the same transaction where the
    /// store shares one with the queue (the embedded backend). The default
    /// (stores on another service than the queue) commits the writes and
    /// leaves the deletes to the caller.
    async fn commit_unit(&self, unit: UnitOfWork) -> Result<UnitOutcome, StoreError> {
        Ok(UnitOutcome { outcomes: self.commit(unit.writes).await?, consumption: Consumption::LeftToCaller })
    }

    /// Marks the outbox of `saga_id` at `revision` as sent. The adapter may
    /// persist the mark with the saga's next write instead of at once.
    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError>;

    /// Outboxes still pending that were written at or before `written_before`
    /// (for the sweeper: a fresh outbox is being sent by its writer right now).
    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError>;

    /// Ids of non-terminal sagas whose next wake-up is at or before `now`.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Sagas, newest first, optionally by status (through an index, not a scan).
    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError>;

    /// The history of one saga, oldest first.
    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError>;

    /// How many sagas are in each status. Its cost grows with the sagas
    /// stored: for operators and start-up, never for a periodic check.
    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError>;

    /// Whether the store answers, at a cost that does not depend on how many
    /// sagas it holds: the readiness loop calls it every few seconds.
    async fn reachable(&self) -> Result<(), StoreError>;

    /// Deletes at most `limit` terminal sagas that ended at or before
    /// `ended_before`, with their history; returns how many it deleted. The
    /// default does nothing: for stores that expire them by themselves
    /// (DynamoDB's TTL, set at the terminal commit).
    async fn expire(&self, ended_before: Millis, limit: usize) -> Result<usize, StoreError> {
        let _ = (ended_before, limit);
        Ok(0)
    }
}
