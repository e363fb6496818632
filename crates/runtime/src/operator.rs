//! What an operator asks of a running system, whoever asks (the CLI with
//! the database credentials, the admin API over HTTP): start a saga, resume
//! or cancel one, look into a dead-letter queue, redrive or delete what is
//! in it. Requests to sagas are messages to the orchestrator queue, sealed
//! like any other sender's (trace + signature), never writes to the store:
//! the orchestrator stays the only writer of saga state.

use std::time::Duration;

use serde_json::Value;
use sqsaga_core::machine::SagaStatus;
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE};
use sqsaga_protocol::{ATTR_SIGNATURE, CancelSaga, Envelope, ResumeSaga, Signing, StartSaga, TraceParent};
use sqsaga_queue::{ATTR_REASON, ATTR_SOURCE, OutgoingMessage, Queue, QueueError, ReceivedMessage, dlq_name};
use sqsaga_store::{SagaRecord, SagaStore, StoreError};

use crate::sealing;

/// At most this many messages are read when a dead-letter queue is listed.
pub const PEEK_LIMIT: usize = 1000;

/// Why an operator request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no saga `{0}`")]
    NoSuchSaga(String),
    #[error("saga `{id}` is {status}, not {expected}: {why}")]
    WrongStatus { id: String, status: SagaStatus, expected: &'static str, why: &'static str },
    #[error("no saga `{saga}`{version} in the definitions (known: {known})")]
    NoSuchDefinition { saga: String, version: String, known: String },
    #[error("{0}; nothing was sent")]
    BadInput(String),
    #[error("no message `{id}` in {dlq}")]
    NoSuchMessage { id: String, dlq: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl OperatorError {
    /// Whether the request itself was wrong (a 4xx), rather than the backend (a 5xx).
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, OperatorError::Store(_) | OperatorError::Queue(_))
    }
}

/// What a sender needs to put requests on the orchestrator queue.
#[derive(Clone)]
pub struct Sender<'a> {
    pub queue: &'a dyn Queue,
    pub store: &'a dyn SagaStore,
    pub signing: Option<&'a Signing>,
}

/// A start request.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub saga: String,
    pub version: Option<u32>,
    pub input: Value,
    /// Fresh (`<saga>-<uuid>`) when absent; reusing one makes a retried start idempotent.
    pub id: Option<String>,
    /// The trace to continue; a fresh one when absent.
    pub trace: Option<TraceParent>,
}

impl Sender<'_> {
    /// Checks the saga and its input against `definitions` (so a bad request
    /// is refused now, not dead-lettered later) and sends the start request.
    /// Returns the saga id.
    pub async fn start(&self, definitions: &Definitions, request: StartRequest) -> Result<String, OperatorError> {
        let found = match request.version {
            Some(v) => definitions.get(&request.saga, v),
            None => definitions.latest(&request.saga),
        };
        let Some(def) = found else {
            let mut known: Vec<String> =
                definitions.all().iter().map(|d| format!("`{}` v{}", d.name, d.version)).collect();
            known.dedup();
            return Err(OperatorError::NoSuchDefinition {
                saga: request.saga,
                version: request.version.map(|v| format!(" version {v}")).unwrap_or_default(),
                known: known.join(", "),
            });
        };
        definitions.check_input(&def, &request.input).map_err(OperatorError::BadInput)?;
        let id = request.id.unwrap_or_else(|| format!("{}-{}", request.saga, uuid::Uuid::new_v4().simple()));
        let start = Envelope::Start(StartSaga {
            saga_id: id.clone(),
            saga: request.saga,
            version: request.version,
            input: request.input,
            requested_at: sqsaga_orchestrator::clock::now_ms(),
        });
        let trace = request.trace.unwrap_or_else(sealing::new_trace);
        self.queue.send(ORCHESTRATOR_QUEUE, sealing::seal(start.encode(), self.signing, Some(trace))).await?;
        Ok(id)
    }

    /// Asks the orchestrator to retry the compensation of a `needs_operator` saga.
    pub async fn resume(&self, id: &str) -> Result<(), OperatorError> {
        let record =
            self.saga_in(id, SagaStatus::NeedsOperator, "only a saga whose compensation failed can be resumed").await?;
        let now = sqsaga_orchestrator::clock::now_ms();
        let resume = Envelope::Resume(ResumeSaga { saga_id: id.to_string(), requested_at: now });
        self.send_in_trace(&record, resume, &format!("resume:{now}")).await
    }

    /// Asks the orchestrator to compensate a running saga now; `by` is
    /// recorded in its history.
    pub async fn cancel(&self, id: &str, by: &str) -> Result<(), OperatorError> {
        let record = self.saga_in(id, SagaStatus::Running, "only a running saga can be cancelled").await?;
        let now = sqsaga_orchestrator::clock::now_ms();
        let cancel =
            Envelope::Cancel(CancelSaga { saga_id: id.to_string(), requested_by: by.to_string(), requested_at: now });
        self.send_in_trace(&record, cancel, &format!("cancel:{now}")).await
    }

    async fn saga_in(&self, id: &str, expected: SagaStatus, why: &'static str) -> Result<SagaRecord, OperatorError> {
        let Some(record) = self.store.load(&[id.to_string()]).await?.into_iter().next() else {
            return Err(OperatorError::NoSuchSaga(id.to_string()));
        };
        if record.instance.status != expected {
            return Err(OperatorError::WrongStatus {
                id: id.to_string(),
                status: record.instance.status,
                expected: expected.as_str(),
                why,
            });
        }
        Ok(record)
    }

    /// Sends `envelope` to the orchestrator, joining the saga's own trace
    /// when it has one.
    async fn send_in_trace(&self, record: &SagaRecord, envelope: Envelope, span: &str) -> Result<(), OperatorError> {
        let trace = record.instance.trace.as_deref().and_then(|t| TraceParent::parse(t).ok()).map(|t| t.child(span));
        let message = sealing::seal(envelope.encode(), self.signing, trace);
        self.queue.send(ORCHESTRATOR_QUEUE, message).await?;
        Ok(())
    }
}

/// Lists a queue without consuming it: receive with a short visibility,
/// then hand everything back at once (SQS has no peek). At most [`PEEK_LIMIT`].
pub async fn peek_all(queue: &dyn Queue, name: &str) -> Result<Vec<ReceivedMessage>, QueueError> {
    sqsaga_queue::peek_all(queue, name, PEEK_LIMIT).await
}

/// The copy of a dead-lettered message that goes back to its queue: the
/// dead-letter attributes removed, and a genuine signature that went stale
/// while it waited re-signed now (unsigned and forged ones move as they are).
/// Returns whether it was re-signed.
pub fn redrive_copy(message: &mut OutgoingMessage, signing: Option<&Signing>) -> bool {
    message.attributes.remove(ATTR_REASON);
    message.attributes.remove(ATTR_SOURCE);
    let Some(signing) = signing else { return false };
    let attr = message.attributes.get(ATTR_SIGNATURE).map(String::as_str);
    match signing.signer.refresh(&message.body, attr, sqsaga_orchestrator::clock::now_ms()) {
        Some(fresh) => {
            message.attributes.insert(ATTR_SIGNATURE.to_string(), fresh);
            true
        }
        None => false,
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redriven {
    pub moved: usize,
    /// Genuine messages whose signature would have been stale, re-signed.
    pub refreshed: usize,
}

/// Moves every dead-lettered message of `queue` back to it.
pub async fn redrive_all(queue: &dyn Queue, source: &str, signing: Option<&Signing>) -> Result<Redriven, QueueError> {
    let mut refreshed = 0;
    let moved = sqsaga_queue::redrive_with(queue, &dlq_name(source), source, |m| {
        if redrive_copy(m, signing) {
            refreshed += 1;
        }
    })
    .await?;
    Ok(Redriven { moved, refreshed })
}

/// Moves one dead-lettered message of `source` back to it: sent first,
/// deleted from the DLQ second (never lost, at worst briefly in both).
pub async fn redrive_one(
    queue: &dyn Queue,
    source: &str,
    message_id: &str,
    signing: Option<&Signing>,
) -> Result<Redriven, OperatorError> {
    let found = take(queue, source, message_id).await?;
    let mut copy =
        OutgoingMessage { body: found.body.clone(), attributes: found.attributes.clone(), delay: Duration::ZERO };
    let refreshed = usize::from(redrive_copy(&mut copy, signing));
    queue.send(source, copy).await?;
    delete_received(queue, &dlq_name(source), &found).await?;
    Ok(Redriven { moved: 1, refreshed })
}

/// Deletes one dead-lettered message of `source` for good; returns it.
pub async fn delete_one(queue: &dyn Queue, source: &str, message_id: &str) -> Result<ReceivedMessage, OperatorError> {
    let found = take(queue, source, message_id).await?;
    delete_received(queue, &dlq_name(source), &found).await?;
    Ok(found)
}

/// Receives the DLQ of `source` until `message_id` shows, hands the others
/// back, and returns it (still invisible, for its receipt).
async fn take(queue: &dyn Queue, source: &str, message_id: &str) -> Result<ReceivedMessage, OperatorError> {
    let dlq = dlq_name(source);
    let mut seen = sqsaga_queue::hold_all(queue, &dlq, PEEK_LIMIT).await?;
    let found = seen.iter().position(|m| m.message_id == message_id).map(|i| seen.swap_remove(i));
    sqsaga_queue::release_all(queue, &dlq, &seen).await?;
    found.ok_or_else(|| OperatorError::NoSuchMessage { id: message_id.to_string(), dlq })
}

async fn delete_received(queue: &dyn Queue, name: &str, message: &ReceivedMessage) -> Result<(), QueueError> {
    match queue.delete_batch(name, std::slice::from_ref(&message.receipt_handle)).await?.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
