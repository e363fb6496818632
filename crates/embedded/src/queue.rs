//! [`SqliteQueue`]: the `Queue` port over the `queues` and `messages` tables,
//! with the SQS semantics sqsaga relies on — visibility timeouts, receive
//! counts, redrive to the DLQ after `maxReceiveCount`, delays, retention,
//! batches of 10, the 1 MiB limit and long polling.
//!
//! Every write (send, receive, delete, visibility change, dead-lettering) is
//! one job of the process's group committer; a worker's replies and the
//! deletes of the commands they answer are one job together
//! (`send_then_delete`). A long poll never writes to find out that nothing
//! is there: it peeks with a read connection and sleeps until a local send
//! (per-queue `Notify`, one poller per batch of 10), another process's
//! commit (the writer's `data_version` check), the earliest future
//! `visible_at`, or the end of the wait. While this process's own sends or
//! full receives say the queue has messages, it takes at once, skipping
//! the peek.
//!
//! A receipt handle is `<seq>.<random>`: the row's primary key makes deletes
//! and visibility changes point look-ups, the random part makes it valid for
//! one receive only (each receive stores a fresh one).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sqsaga_queue::{
    ATTR_REASON, ATTR_SOURCE, Depth, MAX_BATCH, MAX_WAIT, OutgoingMessage, Queue, QueueError, QueueSpec, Receive,
    ReceivedMessage, dlq_name,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::db::{Fail, Shared, for_queue, millis, now_ms};

/// SQS: a visibility timeout is at most 12 hours.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
/// SQS: queue names are at most 80 characters.
pub const MAX_QUEUE_NAME: usize = 80;
/// Retention of the DLQ `ensure` creates: the SQS maximum, so a poison
/// message waits as long as possible for an operator.
pub const DLQ_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// Visibility timeout of the DLQ `ensure` creates (SQS's default).
pub const DLQ_VISIBILITY: Duration = Duration::from_secs(30);
/// Most rows one receive job examines: expired rows and rows due for the
/// DLQ at the head of the queue are cleared on the way (and do not make it
/// come back empty), but a receive never walks an unbounded backlog.
const MAX_CANDIDATES: usize = 64;
/// Longest reason recorded on a dead-lettered message (as the port's default).
const MAX_REASON_BYTES: usize = 1024;

/// The `Queue` port on the embedded database; get it from
/// [`EmbeddedBackend::queue`](crate::EmbeddedBackend::queue).
pub struct SqliteQueue {
    /// The database, its writer and the long-poll signals.
    shared: Arc<Shared>,
}

/// A row of `queues`: how one queue behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueueRow {
    visibility_ms: i64,
    max_receive_count: i64,
    retention_ms: i64,
    dlq: Option<String>,
}

/// What a peek found at the head of a queue.
enum Peek {
    /// A message is receivable now.
    Ready,
    /// The next message becomes visible at this time (ms since the epoch).
    At(i64),
    /// Nothing at all.
    Empty,
}

/// The result of one receive job.
struct Taken {
    messages: Vec<ReceivedMessage>,
    /// The DLQ that received messages over their `maxReceiveCount`, to wake.
    dead_lettered_to: Option<String>,
}

impl SqliteQueue {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SqliteQueue { shared }
    }

    /// Reads the queue's head without a write transaction.
    async fn peek(&self, queue: &str) -> Result<Peek, QueueError> {
        let queue = queue.to_string();
        let clock = self.shared.clock.clone();
        let read = self.shared.read(move |conn| {
            let now = now_ms(&*clock);
            let (exists, first): (Option<i64>, Option<i64>) = conn
                .prepare_cached(
                    "SELECT (SELECT 1 FROM queues WHERE name = ?1), \
                            (SELECT visible_at FROM messages WHERE queue = ?1 AND expires_at > ?2 \
                             ORDER BY visible_at, seq LIMIT 1)",
                )?
                .query_row(params![queue, now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if exists.is_none() {
                return Err(QueueError::NoSuchQueue(queue).into());
            }
            Ok(match first {
                Some(at) if at <= now => Peek::Ready,
                Some(at) => Peek::At(at),
                None => Peek::Empty,
            })
        });
        for_queue(read.await)
    }

    /// One receive job: takes what is visible now.
    async fn take(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        let q = queue.to_string();
        let clock = self.shared.clock.clone();
        let job =
            self.shared.writer.run_in_batch(move |txn| take_visible(txn, &q, r.max, r.visibility, now_ms(&*clock)));
        let taken = for_queue(job.await)?;
        if let Some(dlq) = &taken.dead_lettered_to {
            self.shared.wake([(dlq.as_str(), 1)]);
        }
        Ok(taken.messages)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        check_name(&spec.name)?;
        let dlq = spec.with_dlq.then(|| dlq_name(&spec.name));
        if let Some(dlq) = &dlq {
            check_name(dlq)?;
        }
        if spec.visibility_timeout > MAX_VISIBILITY {
            return Err(QueueError::Invalid(format!(
                "visibility timeout of {}s exceeds the SQS maximum of {}s",
                spec.visibility_timeout.as_secs(),
                MAX_VISIBILITY.as_secs()
            )));
        }
        let want = QueueRow {
            visibility_ms: millis(spec.visibility_timeout),
            max_receive_count: i64::from(spec.max_receive_count),
            retention_ms: millis(spec.retention),
            dlq: dlq.clone(),
        };
        // Every process ensures its queues at start: skip the write (and the
        // commit) when the rows are already there as wanted.
        let (name, dlq_check) = (spec.name.clone(), dlq.clone());
        let current = self.shared.read(move |conn| {
            let main = queue_row(conn, &name)?;
            let dlq_present = match &dlq_check {
                Some(d) => queue_row(conn, d)?.is_some(),
                None => true,
            };
            Ok((main, dlq_present))
        });
        if matches!(for_queue(current.await)?, (Some(row), true) if row == want) {
            return Ok(());
        }
        let name = spec.name.clone();
        let job = self.shared.writer.run(move |txn| -> Result<(), Fail> {
            txn.prepare_cached(
                "INSERT INTO queues (name, visibility_ms, max_receive_count, retention_ms, dlq) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (name) DO UPDATE SET visibility_ms = excluded.visibility_ms, \
                   max_receive_count = excluded.max_receive_count, retention_ms = excluded.retention_ms, \
                   dlq = excluded.dlq",
            )?
            .execute(params![
                name,
                want.visibility_ms,
                want.max_receive_count,
                want.retention_ms,
                want.dlq
            ])?;
            if let Some(dlq) = &want.dlq {
                // An existing DLQ keeps its own attributes (it may have been
                // ensured explicitly).
                txn.prepare_cached(
                    "INSERT INTO queues (name, visibility_ms, max_receive_count, retention_ms, dlq) \
                     VALUES (?1, ?2, 0, ?3, NULL) ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![dlq, millis(DLQ_VISIBILITY), millis(DLQ_RETENTION)])?;
            }
            Ok(())
        });
        for_queue(job.await)
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        check_sends(&messages)?;
        if messages.is_empty() {
            return Ok(());
        }
        let q = queue.to_string();
        let count = messages.len();
        let clock = self.shared.clock.clone();
        let job = self.shared.writer.run_in_batch(move |txn| insert_messages(txn, &q, &messages, now_ms(&*clock)));
        for_queue(job.await)?;
        self.shared.wake([(queue, count)]);
        Ok(())
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        if r.max == 0 || r.max > MAX_BATCH {
            return Err(QueueError::Invalid(format!(
                "cannot receive {} messages: between 1 and {MAX_BATCH} per call",
                r.max
            )));
        }
        if r.wait > MAX_WAIT {
            return Err(QueueError::Invalid(format!(
                "long-poll wait of {}s exceeds the SQS maximum of {}s",
                r.wait.as_secs(),
                MAX_WAIT.as_secs()
            )));
        }
        if let Some(v) = r.visibility.filter(|v| *v > MAX_VISIBILITY) {
            return Err(QueueError::Invalid(format!(
                "visibility timeout of {}s exceeds the SQS maximum of {}s",
                v.as_secs(),
                MAX_VISIBILITY.as_secs()
            )));
        }
        let deadline = Instant::now() + r.wait;
        let signal = self.shared.waker(queue);
        let mut take_at_once = signal.ready.load(Ordering::Relaxed);
        loop {
            // Register for both signals before looking, so a commit that lands
            // between the look and the wait still wakes us.
            let local = signal.notify.notified();
            let foreign = self.shared.changed.notified();
            tokio::pin!(local, foreign);
            local.as_mut().enable();
            foreign.as_mut().enable();
            let next = if std::mem::take(&mut take_at_once) { Peek::Ready } else { self.peek(queue).await? };
            let next = match next {
                Peek::Ready => {
                    let got = self.take(queue, r).await?;
                    let full = got.len() == r.max;
                    signal.ready.store(full, Ordering::Relaxed);
                    if full {
                        // There may be more: pass the wake-up on to a sibling poller.
                        signal.notify.notify_one();
                    }
                    if !got.is_empty() {
                        return Ok(got);
                    }
                    // Another consumer was faster, the hint was stale, or the
                    // job only cleared expired or dead-lettered rows: look
                    // again (a peek, so an empty queue never spins on writes).
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                    continue;
                }
                Peek::At(at) => Some(at),
                Peek::Empty => None,
            };
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(at) = next {
                let ms = u64::try_from(at.saturating_sub(now_ms(&*self.shared.clock))).unwrap_or(0);
                until = until.min(now + Duration::from_millis(ms));
            }
            tokio::select! {
                _ = &mut local => take_at_once = true,
                _ = &mut foreign => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        check_batch(receipts.len())?;
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let q = queue.to_string();
        let receipts = receipts.to_vec();
        let job = self.shared.writer.run_in_batch(move |txn| delete_receipts(txn, &q, &receipts));
        for_queue(job.await)
    }

    /// One job: the replies and the deletes commit together, so a crash
    /// can leave neither a reply without its delete nor the reverse.
    async fn send_then_delete(
        &self,
        to: &str,
        messages: Vec<OutgoingMessage>,
        from: &str,
        receipts: &[String],
    ) -> Result<Vec<QueueError>, QueueError> {
        check_sends(&messages)?;
        check_batch(receipts.len())?;
        let (q_to, q_from) = (to.to_string(), from.to_string());
        let count = messages.len();
        let receipts = receipts.to_vec();
        let clock = self.shared.clock.clone();
        let job = self.shared.writer.run_in_batch(move |txn| -> Result<Vec<QueueError>, Fail> {
            // Both queues are checked before anything is written (no savepoint).
            require_queue(txn, &q_from)?;
            if !messages.is_empty() {
                insert_messages(txn, &q_to, &messages, now_ms(&*clock))?;
            }
            if receipts.is_empty() {
                return Ok(Vec::new());
            }
            delete_receipts(txn, &q_from, &receipts)
        });
        let failed = for_queue(job.await)?;
        if count > 0 {
            self.shared.wake([(to, count)]);
        }
        Ok(failed)
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        if timeout > MAX_VISIBILITY {
            return Err(QueueError::Invalid(format!(
                "visibility timeout of {}s exceeds the SQS maximum of {}s",
                timeout.as_secs(),
                MAX_VISIBILITY.as_secs()
            )));
        }
        let Some(seq) = receipt_seq(receipt) else {
            return Err(malformed(receipt));
        };
        let (q, receipt) = (queue.to_string(), receipt.to_string());
        let clock = self.shared.clock.clone();
        let job = self.shared.writer.run_in_batch(move |txn| -> Result<(), Fail> {
            require_queue(txn, &q)?;
            let visible_at = now_ms(&*clock).saturating_add(millis(timeout));
            let changed = txn
                .prepare_cached("UPDATE messages SET visible_at = ?1 WHERE seq = ?2 AND queue = ?3 AND receipt = ?4")?
                .execute(params![visible_at, seq, q, receipt])?;
            if changed == 0 {
                return Err(QueueError::StaleReceipt(receipt).into());
            }
            Ok(())
        });
        for_queue(job.await)?;
        self.shared.wake([(queue, 1)]);
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let q = queue.to_string();
        let clock = self.shared.clock.clone();
        let read = self.shared.read(move |conn| {
            require_queue(conn, &q)?;
            let now = now_ms(&*clock);
            let (visible, in_flight, delayed): (i64, i64, i64) = conn
                .prepare_cached(
                    "SELECT COALESCE(SUM(visible_at <= ?2), 0), \
                            COALESCE(SUM(visible_at > ?2 AND receipt IS NOT NULL), 0), \
                            COALESCE(SUM(visible_at > ?2 AND receipt IS NULL), 0) \
                     FROM messages WHERE queue = ?1 AND expires_at > ?2",
                )?
                .query_row(params![q, now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(Depth {
                visible: u64::try_from(visible).unwrap_or(0),
                in_flight: u64::try_from(in_flight).unwrap_or(0),
                delayed: u64::try_from(delayed).unwrap_or(0),
            })
        });
        for_queue(read.await)
    }

    /// One job instead of the default send-then-delete: the row itself moves
    /// to the DLQ (same body, attributes plus reason and source), so there is
    /// never a moment where it is in both queues.
    async fn dead_letter(&self, queue: &str, message: &ReceivedMessage, reason: &str) -> Result<(), QueueError> {
        let Some(seq) = receipt_seq(&message.receipt_handle) else {
            return Err(malformed(&message.receipt_handle));
        };
        let (q, dlq) = (queue.to_string(), dlq_name(queue));
        let receipt = message.receipt_handle.clone();
        let fallback = message.attributes.clone();
        let reason = truncate(reason, MAX_REASON_BYTES);
        let target = dlq.clone();
        let clock = self.shared.clock.clone();
        let job = self.shared.writer.run_in_batch(move |txn| -> Result<(), Fail> {
            require_queue(txn, &q)?;
            let dlq_row = require_queue(txn, &dlq)?;
            let stored: Option<String> = txn
                .prepare_cached("SELECT attributes FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")?
                .query_row(params![seq, q, receipt], |r| r.get(0))
                .optional()?;
            let Some(stored) = stored else {
                return Err(QueueError::StaleReceipt(receipt).into());
            };
            let mut attributes = serde_json::from_str::<BTreeMap<String, String>>(&stored).unwrap_or(fallback);
            attributes.insert(ATTR_REASON.to_string(), reason);
            attributes.insert(ATTR_SOURCE.to_string(), q.clone());
            let now = now_ms(&*clock);
            move_to_dlq(txn, seq, &dlq, &attributes, now, now.saturating_add(dlq_row.retention_ms))
        });
        for_queue(job.await)?;
        self.shared.wake([(target.as_str(), 1)]);
        Ok(())
    }
}

/// SQS's limit of 10 entries per batch request.
fn check_batch(len: usize) -> Result<(), QueueError> {
    if len > MAX_BATCH { Err(QueueError::BatchTooLarge(len)) } else { Ok(()) }
}

/// A batch of sends within SQS's limits: 10 entries, each within 1 MiB.
fn check_sends(messages: &[OutgoingMessage]) -> Result<(), QueueError> {
    check_batch(messages.len())?;
    messages.iter().try_for_each(OutgoingMessage::check)
}

/// SQS's rule for queue names: 1 to 80 of `[A-Za-z0-9_-]`.
fn check_name(name: &str) -> Result<(), QueueError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(QueueError::Invalid(format!("queue name `{name}`: use 1 to {MAX_QUEUE_NAME} letters, digits, `-` or `_`")))
    }
}

fn queue_row(conn: &Connection, name: &str) -> rusqlite::Result<Option<QueueRow>> {
    conn.prepare_cached("SELECT visibility_ms, max_receive_count, retention_ms, dlq FROM queues WHERE name = ?1")?
        .query_row([name], |r| {
            Ok(QueueRow {
                visibility_ms: r.get(0)?,
                max_receive_count: r.get(1)?,
                retention_ms: r.get(2)?,
                dlq: r.get(3)?,
            })
        })
        .optional()
}

pub(crate) fn require_queue(conn: &Connection, name: &str) -> Result<QueueRow, Fail> {
    queue_row(conn, name)?.ok_or_else(|| QueueError::NoSuchQueue(name.to_string()).into())
}

/// Inserts messages into `queue` (which must exist); shared by sends and the
/// saga store's outbox. Limits are checked by the caller.
pub(crate) fn insert_messages(
    conn: &Connection,
    queue: &str,
    messages: &[OutgoingMessage],
    now: i64,
) -> Result<(), Fail> {
    let row = require_queue(conn, queue)?;
    let expires_at = now.saturating_add(row.retention_ms);
    let mut insert = conn.prepare_cached(
        "INSERT INTO messages (queue, message_id, body, attributes, sent_at, visible_at, receive_count, receipt, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7)",
    )?;
    for m in messages {
        let attributes = serde_json::to_string(&m.attributes)
            .map_err(|e| QueueError::Invalid(format!("message attributes cannot be stored: {e}")))?;
        let visible_at = now.saturating_add(millis(m.delay));
        insert.execute(params![queue, random_uuid().to_string(), m.body, attributes, now, visible_at, expires_at])?;
    }
    Ok(())
}

/// Deletes messages of `queue` by receipt handle inside a job; a stale or
/// foreign handle fails alone. Shared by deletes, replies and saga commits.
pub(crate) fn delete_receipts(conn: &Connection, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, Fail> {
    require_queue(conn, queue)?;
    let mut failed = Vec::new();
    let mut delete = conn.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3")?;
    for receipt in receipts {
        match receipt_seq(receipt) {
            Some(seq) if delete.execute(params![seq, queue, receipt])? == 1 => {}
            Some(_) => failed.push(QueueError::StaleReceipt(receipt.clone())),
            None => failed.push(malformed(receipt)),
        }
    }
    Ok(failed)
}

/// A row at the head of the queue, before the job decides what to do with
/// it: bodies (up to 1 MiB) are read only for the rows actually taken.
struct Candidate {
    seq: i64,
    receive_count: i64,
    expires_at: i64,
}

/// The receive job: walks the visible head of the queue in order, deleting
/// expired rows, moving rows over `maxReceiveCount` to the DLQ, and taking up
/// to `max` others with a fresh receipt and visibility timeout.
fn take_visible(
    conn: &Connection,
    queue: &str,
    max: usize,
    visibility: Option<Duration>,
    now: i64,
) -> Result<Taken, Fail> {
    let row = require_queue(conn, queue)?;
    let visible_at = now.saturating_add(visibility.map(millis).unwrap_or(row.visibility_ms));
    // Redrive only to a DLQ that exists; without one the count is ignored, as
    // in SQS, where maxReceiveCount is part of the redrive policy.
    let redrive = match (&row.dlq, row.max_receive_count > 0) {
        (Some(dlq), true) => queue_row(conn, dlq)?.map(|d| (dlq.clone(), d.retention_ms)),
        _ => None,
    };
    let mut taken = Taken { messages: Vec::new(), dead_lettered_to: None };
    let mut examined = 0;
    let mut taken_seqs: Vec<i64> = Vec::with_capacity(max);
    // Rows handled here leave the `visible_at <= now` head (taken rows move
    // to their new visibility, the others are deleted or moved), so each
    // round reads only as many candidates as there are messages still wanted.
    while taken.messages.len() < max && examined < MAX_CANDIDATES {
        let wanted = max - taken.messages.len();
        let candidates: Vec<Candidate> = conn
            .prepare_cached(
                "SELECT seq, receive_count, expires_at FROM messages \
                 WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
            )?
            .query_map(params![queue, now, wanted as i64], |r| {
                Ok(Candidate { seq: r.get(0)?, receive_count: r.get(1)?, expires_at: r.get(2)? })
            })?
            .collect::<Result<_, _>>()?;
        let exhausted = candidates.len() < wanted;
        examined += candidates.len().max(1);
        for c in candidates {
            // A zero visibility timeout leaves taken rows at the head.
            if !taken_seqs.contains(&c.seq) {
                taken_seqs.push(c.seq);
                take_candidate(conn, queue, &row, redrive.as_ref(), c, visible_at, now, &mut taken)?;
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(taken)
}

/// One candidate of a receive: deleted if expired, moved to the DLQ if over
/// `maxReceiveCount`, otherwise taken with a fresh receipt.
#[allow(clippy::too_many_arguments, reason = "the receive job's state, passed down rather than bundled for one call")]
fn take_candidate(
    conn: &Connection,
    queue: &str,
    row: &QueueRow,
    redrive: Option<&(String, i64)>,
    c: Candidate,
    visible_at: i64,
    now: i64,
    taken: &mut Taken,
) -> Result<(), Fail> {
    if c.expires_at <= now {
        conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?.execute([c.seq])?;
        return Ok(());
    }
    if let Some((dlq, retention_ms)) = redrive.filter(|_| c.receive_count >= row.max_receive_count) {
        let (message_id, stored): (String, String) = conn
            .prepare_cached("SELECT message_id, attributes FROM messages WHERE seq = ?1")?
            .query_row([c.seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let mut attributes = parse_attributes(&message_id, &stored);
        attributes.insert(ATTR_REASON.to_string(), format!("maxReceiveCount ({}) exceeded", row.max_receive_count));
        attributes.insert(ATTR_SOURCE.to_string(), queue.to_string());
        move_to_dlq(conn, c.seq, dlq, &attributes, now, now.saturating_add(*retention_ms))?;
        taken.dead_lettered_to = Some(dlq.clone());
        return Ok(());
    }
    let receipt = format!("{}.{}", c.seq, random_uuid().simple());
    let (message_id, body, stored, sent_at, receive_count): (String, String, String, i64, i64) = conn
        .prepare_cached(
            "UPDATE messages SET receive_count = receive_count + 1, receipt = ?1, visible_at = ?2 WHERE seq = ?3 \
             RETURNING message_id, body, attributes, sent_at, receive_count",
        )?
        .query_row(params![receipt, visible_at, c.seq], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    let attributes = parse_attributes(&message_id, &stored);
    taken.messages.push(ReceivedMessage {
        message_id,
        receipt_handle: receipt,
        body,
        attributes,
        receive_count: u32::try_from(receive_count).unwrap_or(u32::MAX),
        sent_at: u64::try_from(sent_at).unwrap_or(0),
    });
    Ok(())
}

/// Moves a row to `dlq`: visible at once, receive count and receipt reset.
fn move_to_dlq(
    conn: &Connection,
    seq: i64,
    dlq: &str,
    attributes: &BTreeMap<String, String>,
    now: i64,
    expires_at: i64,
) -> Result<(), Fail> {
    let attributes = serde_json::to_string(attributes)
        .map_err(|e| QueueError::Backend(format!("message attributes cannot be stored: {e}")))?;
    conn.prepare_cached(
        "UPDATE messages SET queue = ?1, attributes = ?2, receive_count = 0, receipt = NULL, \
         visible_at = ?3, expires_at = ?4 WHERE seq = ?5",
    )?
    .execute(params![dlq, attributes, now, expires_at, seq])?;
    Ok(())
}

/// Stored attributes are written by this module only; should they be damaged
/// anyway, the message is still delivered (so it can be dead-lettered), with
/// no attributes rather than blocking its queue.
fn parse_attributes(message_id: &str, text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(message_id, error = %e, "Stored message attributes are not valid JSON; delivering without them.");
        BTreeMap::new()
    })
}

/// A version-4 UUID from the thread's user-space generator: message ids and
/// receipts are made on the writer thread for every message, and
/// `Uuid::new_v4` asks the kernel each time.
fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// The row a receipt handle points at, if it is one of ours.
fn receipt_seq(receipt: &str) -> Option<i64> {
    let (seq, random) = receipt.split_once('.')?;
    if random.is_empty() {
        return None;
    }
    seq.parse().ok()
}

fn malformed(receipt: &str) -> QueueError {
    QueueError::Invalid(format!("`{receipt}` is not a receipt handle of this queue backend"))
}

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
