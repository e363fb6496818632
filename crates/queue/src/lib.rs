//! The `Queue` port: the subset of Amazon SQS semantics sqsaga relies on,
//! named so that an SQLite table and SQS itself can both implement it.
//!
//! Queues are addressed by logical name (`orchestrator`, `inventory`); an
//! adapter maps a name to its storage (a table row, a queue URL). Every queue
//! `q` may have a dead-letter queue named [`dlq_name`]`(q)`.
//!
//! [`contract`] holds the behaviour tests every adapter runs against itself.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

pub mod contract;

/// SQS: at most 10 entries per batch call.
pub const MAX_BATCH: usize = 10;
/// SQS: at most 1 MiB per message, body plus attributes (names and values).
pub const MAX_MESSAGE_BYTES: usize = 1_048_576;
/// SQS: a message can be delayed by at most 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS: long polls wait at most 20 seconds.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// The dead-letter queue of `queue`.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}-dlq")
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// Delivery delay, at most [`MAX_DELAY`].
    pub delay: Duration,
}

impl OutgoingMessage {
    pub fn new(body: impl Into<String>) -> Self {
        OutgoingMessage { body: body.into(), ..Default::default() }
    }

    pub fn with_attribute(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attributes.insert(name.to_string(), value.into());
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Size as SQS counts it: body plus attribute names and values.
    pub fn size(&self) -> usize {
        self.body.len() + self.attributes.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    /// Checks the limits every adapter enforces before sending.
    pub fn check(&self) -> Result<(), QueueError> {
        let size = self.size();
        if size > MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge { size, limit: MAX_MESSAGE_BYTES });
        }
        if self.delay > MAX_DELAY {
            return Err(QueueError::Invalid(format!(
                "delay of {}s exceeds the SQS maximum of {}s",
                self.delay.as_secs(),
                MAX_DELAY.as_secs()
            )));
        }
        Ok(())
    }
}

/// A message as received; it stays invisible to other consumers until its
/// visibility timeout passes, unless it is deleted first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub message_id: String,
    /// Valid for this receive only; needed to delete or change visibility.
    pub receipt_handle: String,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When it was first sent, milliseconds since the epoch.
    pub sent_at: u64,
}

/// How a queue behaves; `ensure` creates it (and its DLQ) if missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    /// Default visibility timeout of received messages.
    pub visibility_timeout: Duration,
    /// Receives after which a message moves to the DLQ (redrive policy); 0 = never.
    pub max_receive_count: u32,
    /// How long an unconsumed message is kept.
    pub retention: Duration,
    /// Whether to create `name-dlq` and redrive to it.
    pub with_dlq: bool,
}

impl QueueSpec {
    /// sqsaga's defaults: 30 s visibility, 5 receives, 4 days retention, a DLQ.
    pub fn named(name: &str) -> Self {
        QueueSpec {
            name: name.to_string(),
            visibility_timeout: Duration::from_secs(30),
            max_receive_count: 5,
            retention: Duration::from_secs(4 * 24 * 3600),
            with_dlq: true,
        }
    }
}

/// Parameters of one receive call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive {
    /// 1..=10 messages.
    pub max: usize,
    /// Long-poll time; 0 returns at once.
    pub wait: Duration,
    /// Visibility timeout for what is received; `None` uses the queue's.
    pub visibility: Option<Duration>,
}

impl Receive {
    pub fn up_to(max: usize) -> Self {
        Receive { max, wait: Duration::ZERO, visibility: None }
    }

    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }
}

/// Approximate counts, as SQS reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// Errors of the queue port; [`QueueError::is_retryable`] says whether the
/// same call may succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("message of {size} bytes exceeds the {limit}-byte limit (body plus attributes)")]
    TooLarge { size: usize, limit: usize },
    #[error("batch of {0} entries exceeds the limit of 10")]
    BatchTooLarge(usize),
    #[error("queue `{0}` does not exist")]
    NoSuchQueue(String),
    #[error("receipt handle is not current (the message was received again or deleted): {0}")]
    StaleReceipt(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("queue backend unreachable: {0}")]
    Unreachable(String),
    #[error("queue backend throttled the request: {0}")]
    Throttled(String),
    #[error("queue backend error: {0}")]
    Backend(String),
}

impl QueueError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, QueueError::Unreachable(_) | QueueError::Throttled(_) | QueueError::Backend(_))
    }
}

/// SQS semantics, as sqsaga needs them.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Creates the queue (and its DLQ with a redrive policy) if missing. Idempotent.
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError>;

    /// Sends up to [`MAX_BATCH`] messages; all or nothing from the caller's view
    /// (an adapter retries partial failures itself).
    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError>;

    /// Receives up to `r.max` visible messages, waiting up to `r.wait` for the first.
    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError>;

    /// Deletes up to [`MAX_BATCH`] messages by receipt handle. A stale handle
    /// is not an error for the others; the adapter reports which failed.
    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError>;

    /// Makes a received message visible again after `timeout` (0 = at once).
    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError>;

    /// Approximate depth of the queue.
    async fn depth(&self, queue: &str) -> Result<Depth, QueueError>;

    /// Moves a received message to the queue's DLQ with `reason` recorded as a
    /// message attribute: sent to the DLQ first, deleted second, so it is
    /// never lost (at worst it is in both for a moment).
    async fn dead_letter(&self, queue: &str, message: &ReceivedMessage, reason: &str) -> Result<(), QueueError> {
        let mut attributes = message.attributes.clone();
        attributes.insert(ATTR_REASON.to_string(), truncate(reason, 1024));
        attributes.insert(ATTR_SOURCE.to_string(), queue.to_string());
        let copy = OutgoingMessage { body: message.body.clone(), attributes, delay: Duration::ZERO };
        self.send_batch(&dlq_name(queue), vec![copy]).await?;
        let failed = self.delete_batch(queue, std::slice::from_ref(&message.receipt_handle)).await?;
        match failed.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends `messages` (at most [`MAX_BATCH`]) to `to`, then — only if the
    /// send succeeded — deletes `receipts` (at most [`MAX_BATCH`]) from
    /// `from`: how a worker answers a batch and acknowledges it. A send error
    /// deletes nothing; the returned list is the deletes that failed, as for
    /// [`Queue::delete_batch`]. By default two calls; an adapter that can
    /// do both in one transaction (the embedded backend) overrides it.
    async fn send_then_delete(
        &self,
        to: &str,
        messages: Vec<OutgoingMessage>,
        from: &str,
        receipts: &[String],
    ) -> Result<Vec<QueueError>, QueueError> {
        self.send_batch(to, messages).await?;
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        self.delete_batch(from, receipts).await
    }

    /// Sends one message.
    async fn send(&self, queue: &str, message: OutgoingMessage) -> Result<(), QueueError> {
        self.send_batch(queue, vec![message]).await
    }
}

/// Attribute recording why a message was dead-lettered (same as the protocol's).
pub const ATTR_REASON: &str = "sqsaga-dlq-reason";
/// Attribute naming the queue a dead-lettered message came from.
pub const ATTR_SOURCE: &str = "sqsaga-dlq-source";

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// Moves every message of `dlq` back to `target`: send first, then delete,
/// batch by batch, so a crash in between can duplicate (harmless: ids are
/// deterministic and the barrier dedupes) but never drop. Returns the count.
pub async fn redrive<Q: Queue + ?Sized>(queue: &Q, dlq: &str, target: &str) -> Result<usize, QueueError> {
    redrive_with(queue, dlq, target, |_| {}).await
}

/// [`redrive`], letting `prepare` adjust each copy before it is sent (the
/// CLI refreshes the signature of genuine messages that went stale in the DLQ).
pub async fn redrive_with<Q, F>(queue: &Q, dlq: &str, target: &str, mut prepare: F) -> Result<usize, QueueError>
where
    Q: Queue + ?Sized,
    F: FnMut(&mut OutgoingMessage),
{
    let mut moved = 0;
    loop {
        let batch = queue.receive(dlq, Receive::up_to(MAX_BATCH).visibility(Duration::from_secs(60))).await?;
        if batch.is_empty() {
            return Ok(moved);
        }
        let copies = batch
            .iter()
            .map(|m| {
                let mut attributes = m.attributes.clone();
                attributes.remove(ATTR_REASON);
                attributes.remove(ATTR_SOURCE);
                let mut copy = OutgoingMessage { body: m.body.clone(), attributes, delay: Duration::ZERO };
                prepare(&mut copy);
                copy
            })
            .collect();
        queue.send_batch(target, copies).await?;
        let receipts: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
        let failed = queue.delete_batch(dlq, &receipts).await?;
        if let Some(e) = failed.into_iter().next() {
            return Err(e);
        }
        moved += batch.len();
    }
}

/// Lists up to `limit` messages of `queue` without consuming them: receive
/// with a short visibility, then hand everything back at once (SQS has no
/// peek).
pub async fn peek_all<Q: Queue + ?Sized>(
    queue: &Q,
    name: &str,
    limit: usize,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    let seen = hold_all(queue, name, limit).await?;
    release_all(queue, name, &seen).await?;
    Ok(seen)
}

/// Receives up to `limit` messages of `queue` and keeps them invisible for
/// 30 s, for a caller that acts on some and hands the rest back with
/// [`release_all`].
pub async fn hold_all<Q: Queue + ?Sized>(
    queue: &Q,
    name: &str,
    limit: usize,
) -> Result<Vec<ReceivedMessage>, QueueError> {
    let mut seen = Vec::new();
    while seen.len() < limit {
        let batch = queue.receive(name, Receive::up_to(MAX_BATCH).visibility(Duration::from_secs(30))).await?;
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
    }
    Ok(seen)
}

/// Makes held `messages` visible again at once.
pub async fn release_all<Q: Queue + ?Sized>(
    queue: &Q,
    name: &str,
    messages: &[ReceivedMessage],
) -> Result<(), QueueError> {
    for m in messages {
        queue.change_visibility(name, &m.receipt_handle, Duration::ZERO).await?;
    }
    Ok(())
}
