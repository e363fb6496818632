//! The send and delete batchers of the SQS queue adapter: one task
//! per queue URL and kind, fed through a channel by every caller.
//!
//! A batcher takes the first entry, then whatever else is already waiting,
//! then waits at most the flush window (5 ms by default) for more, and sends
//! up to 10 entries — however many callers they came from — in one
//! `SendMessageBatch` or `DeleteMessageBatch`. A full batch goes at once.
//! Up to `max_in_flight` requests run at once; while they do, entries pile
//! up, so batches grow with load.
//!
//! **Busy window.** Callers rarely come together within 5 ms when the
//! traffic is steady but not heavy (a few entries every few hundred ms), so
//! batches stay small. When the last busy window (1 s for sends, 2 s for
//! deletes by default) saw at least [`BUSY_MIN_RECENT`] entries, or enough
//! to fill the batch with its own, the batch waits up to the busy window
//! from its first entry to fill. A lone message on an idle queue sees no
//! recent entries and waits only the flush window. Deletes get the longer
//! window: a delete holds back no message, only its caller.
//!
//! Outcomes per entry: `Failed` entries the service is at fault for are
//! retried alone (up to [`ENTRY_ATTEMPTS`] times with backoff); entries the
//! sender is at fault for fail their own caller only. A request that fails
//! as a whole for a client error (one bad message can fail a whole batch) is
//! split into single-entry requests, so one caller's bad message never fails
//! another caller's good one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{BatchResultErrorEntry, DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use sqsaga_queue::{MAX_BATCH, MAX_MESSAGE_BYTES, OutgoingMessage, QueueError};
use tokio::sync::mpsc::error::{SendError, TryRecvError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::error::FailureKind;
use crate::settings::SqsOptions;
use crate::wire::{Ctx, STALE_RECEIPT, delay_seconds, message_attributes, queue_error};

/// Attempts per entry that SQS failed on its side (`SenderFault: false`).
pub(crate) const ENTRY_ATTEMPTS: u32 = 4;

/// Why one entry failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryError {
    /// This entry alone (a stale receipt, a rejected message).
    Entry(QueueError),
    /// The whole request (unreachable, throttled, no such queue).
    Request(QueueError),
}

/// An entry waiting for its batch, with where its outcome goes.
pub(crate) struct Pending<T> {
    pub item: T,
    pub reply: oneshot::Sender<Result<(), EntryError>>,
    /// When the caller handed it in.
    pub at: Instant,
}

/// How long a batch waits for more entries after its first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Always: concurrent callers of the same moment share a request.
    pub base: Duration,
    /// On a busy queue — the entries of the last `busy` would fill the
    /// batch — the batch may wait this long (from its first entry) to fill.
    /// Not longer than `base` turns it off.
    pub busy: Duration,
}

/// Entries in the last busy window that make a queue busy: traffic steady
/// enough that waiting the window out should bring at least this many more.
pub(crate) const BUSY_MIN_RECENT: usize = 2;

/// Hand-in times of the entries of recent batches, to tell a busy queue
/// from an idle one.
#[derive(Default)]
struct Arrivals {
    times: VecDeque<Instant>,
}

impl Arrivals {
    /// Enough history to count a full batch.
    const KEEP: usize = 2 * MAX_BATCH;

    fn record(&mut self, at: Instant) {
        self.times.push_back(at);
        while self.times.len() > Self::KEEP {
            self.times.pop_front();
        }
    }

    /// Entries handed in at or after `since`.
    fn since(&self, since: Instant) -> usize {
        self.times.iter().rev().take_while(|t| **t >= since).count()
    }
}

/// What a batcher can batch.
pub(crate) trait Entry: Send + Sized + 'static {
    /// Bytes counted against SQS's 1 MiB cap on a batch request's payload.
    fn weight(&self) -> usize;

    /// How long a batch of this kind may wait to fill on a busy queue.
    fn busy_window(options: &SqsOptions) -> Duration;

    /// Sends `items` in one request (or more, see the module doc); one
    /// result per item, in order.
    fn flush(
        ctx: Ctx,
        url: String,
        queue: String,
        items: Vec<Self>,
    ) -> impl Future<Output = Vec<Result<(), EntryError>>> + Send;
}

/// The handle callers send entries to. Cheap to clone.
pub(crate) struct Batcher<T> {
    tx: mpsc::UnboundedSender<Pending<T>>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone() }
    }
}

impl<T: Entry> Batcher<T> {
    /// Starts the batcher task of one queue; it ends when every handle is dropped.
    pub fn start(ctx: Ctx, url: String, queue: String, window: Window, max_in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run::<T>(ctx, url, queue, window, max_in_flight.max(1), rx));
        Batcher { tx }
    }

    /// False once the task is gone (e.g. its runtime shut down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    pub fn send(&self, pending: Pending<T>) -> Result<(), SendError<Pending<T>>> {
        self.tx.send(pending)
    }
}

async fn run<T: Entry>(
    ctx: Ctx,
    url: String,
    queue: String,
    window: Window,
    max_in_flight: usize,
    mut rx: mpsc::UnboundedReceiver<Pending<T>>,
) {
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut carry: Option<Pending<T>> = None;
    let mut arrivals = Arrivals::default();
    loop {
        // A permit first: while every request slot is busy, entries keep
        // arriving and the next batch grows.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let Some(batch) = next_batch(&mut rx, &mut carry, window, &mut arrivals).await else { return };
        let (ctx, url, queue) = (ctx.clone(), url.clone(), queue.clone());
        tokio::spawn(async move {
            let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().map(|p| (p.item, p.reply)).unzip();
            let results = T::flush(ctx, url, queue, items).await;
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have given up waiting; nothing to tell then.
                let _ = reply.send(result);
            }
            drop(permit);
        });
    }
}

/// The next batch: the first entry, then more until 10, the payload cap, or
/// the end of the window — the base window, or the busy one if the entries
/// of the last busy window would fill the batch. `None` once the channel is
/// closed and empty.
async fn next_batch<T: Entry>(
    rx: &mut mpsc::UnboundedReceiver<Pending<T>>,
    carry: &mut Option<Pending<T>>,
    window: Window,
    arrivals: &mut Arrivals,
) -> Option<Vec<Pending<T>>> {
    let batch = gather(rx, carry, window, arrivals).await?;
    for p in &batch {
        arrivals.record(p.at);
    }
    Some(batch)
}

async fn gather<T: Entry>(
    rx: &mut mpsc::UnboundedReceiver<Pending<T>>,
    carry: &mut Option<Pending<T>>,
    window: Window,
    arrivals: &Arrivals,
) -> Option<Vec<Pending<T>>> {
    let first = match carry.take() {
        Some(p) => p,
        None => rx.recv().await?,
    };
    let mut deadline = Instant::now() + window.base;
    let busy_until = first.at + window.busy;
    let mut judged = window.busy <= window.base;
    let mut weight = first.item.weight();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let next = match rx.try_recv() {
            Ok(p) => p,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                if !judged {
                    // Judged once, when the batch has taken what was waiting:
                    // would the pace of the last busy window fill it in time?
                    judged = true;
                    let now = Instant::now();
                    let recent = now.checked_sub(window.busy).map_or(0, |since| arrivals.since(since));
                    if recent >= BUSY_MIN_RECENT || batch.len() + recent >= MAX_BATCH {
                        deadline = deadline.max(busy_until);
                    }
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => p,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        let w = next.item.weight();
        if weight + w > MAX_MESSAGE_BYTES {
            *carry = Some(next);
            break;
        }
        weight += w;
        batch.push(next);
    }
    Some(batch)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64 << attempt.min(6))
}

/// The error of one `Failed` entry.
fn entry_failure(f: &BatchResultErrorEntry, queue: &str, what: &str) -> QueueError {
    let text = format!("SQS {what} on `{queue}` failed: {} {}", f.code, f.message.as_deref().unwrap_or(""));
    if STALE_RECEIPT.contains(&f.code.as_str()) {
        QueueError::StaleReceipt(text)
    } else if f.sender_fault {
        QueueError::Invalid(text)
    } else {
        QueueError::Backend(text)
    }
}

impl Entry for OutgoingMessage {
    /// SQS counts each attribute's data type ("String") too.
    fn weight(&self) -> usize {
        self.size() + self.attributes.len() * "String".len()
    }

    fn busy_window(options: &SqsOptions) -> Duration {
        options.busy_flush_window
    }

    async fn flush(ctx: Ctx, url: String, queue: String, items: Vec<Self>) -> Vec<Result<(), EntryError>> {
        let entries: Vec<Result<SendMessageBatchRequestEntry, QueueError>> =
            items.iter().enumerate().map(|(i, m)| send_entry(i, m)).collect();
        flush_entries(&ctx, &url, &queue, entries, "send", send_request).await
    }
}

impl Entry for String {
    /// Receipt handles do not count against the payload cap.
    fn weight(&self) -> usize {
        0
    }

    fn busy_window(options: &SqsOptions) -> Duration {
        options.busy_delete_window
    }

    /// The same receipt twice in one batch (two callers deleting one
    /// message) is sent once and its outcome given to both.
    async fn flush(ctx: Ctx, url: String, queue: String, items: Vec<Self>) -> Vec<Result<(), EntryError>> {
        let mut unique: Vec<&String> = Vec::new();
        let mut slot: Vec<usize> = Vec::with_capacity(items.len());
        for r in &items {
            match unique.iter().position(|u| *u == r) {
                Some(i) => slot.push(i),
                None => {
                    slot.push(unique.len());
                    unique.push(r);
                }
            }
        }
        let entries = unique
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r.as_str())
                    .build()
                    .map_err(|e| QueueError::Invalid(format!("delete entry: {e}")))
            })
            .collect();
        let results = flush_entries(&ctx, &url, &queue, entries, "delete", delete_request).await;
        slot.into_iter().map(|i| results.get(i).cloned().unwrap_or_else(|| Err(EntryError::Request(lost())))).collect()
    }
}

fn lost() -> QueueError {
    QueueError::Backend("a batch entry got no outcome".to_string())
}

fn send_entry(i: usize, m: &OutgoingMessage) -> Result<SendMessageBatchRequestEntry, QueueError> {
    SendMessageBatchRequestEntry::builder()
        .id(i.to_string())
        .message_body(m.body.clone())
        .set_message_attributes(Some(message_attributes(m)?))
        .delay_seconds(delay_seconds(m))
        .build()
        .map_err(|e| QueueError::Invalid(format!("send entry: {e}")))
}

/// The outcome of one batch request: per entry id, `None` for success.
type BatchOutcome = Result<HashMap<String, BatchResultErrorEntry>, crate::error::Failure>;

async fn send_request(ctx: Ctx, url: String, entries: Vec<SendMessageBatchRequestEntry>) -> BatchOutcome {
    match ctx.client.send_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
        Ok(out) => Ok(out.failed.into_iter().map(|f| (f.id.clone(), f)).collect()),
        Err(e) => Err(ctx.failure(&e)),
    }
}

async fn delete_request(ctx: Ctx, url: String, entries: Vec<DeleteMessageBatchRequestEntry>) -> BatchOutcome {
    match ctx.client.delete_message_batch().queue_url(url).set_entries(Some(entries)).send().await {
        Ok(out) => Ok(out.failed.into_iter().map(|f| (f.id.clone(), f)).collect()),
        Err(e) => Err(ctx.failure(&e)),
    }
}

/// Sends prepared entries (ids are their indexes), retrying the ones SQS
/// failed on its side, splitting a batch that failed as a whole for a client
/// error. One result per entry, in order.
async fn flush_entries<E, F, Fut>(
    ctx: &Ctx,
    url: &str,
    queue: &str,
    entries: Vec<Result<E, QueueError>>,
    what: &str,
    request: F,
) -> Vec<Result<(), EntryError>>
where
    E: Clone,
    F: Fn(Ctx, String, Vec<E>) -> Fut,
    Fut: Future<Output = BatchOutcome>,
{
    let mut results: Vec<Option<Result<(), EntryError>>> = vec![None; entries.len()];
    let mut todo: Vec<(usize, E)> = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        match e {
            Ok(e) => todo.push((i, e)),
            Err(err) => results[i] = Some(Err(EntryError::Entry(err))),
        }
    }
    let mut round = 0;
    while !todo.is_empty() {
        let batch: Vec<E> = todo.iter().map(|(_, e)| e.clone()).collect();
        match request(ctx.clone(), url.to_string(), batch).await {
            Err(f) if f.kind == FailureKind::Client && todo.len() > 1 && !f.is(crate::wire::NO_SUCH_QUEUE) => {
                // One entry may have spoiled the batch: find it by sending each alone.
                for (i, e) in std::mem::take(&mut todo) {
                    let outcome = request(ctx.clone(), url.to_string(), vec![e]).await;
                    results[i] = Some(match outcome {
                        Ok(failed) => match failed.values().next() {
                            None => Ok(()),
                            Some(f) => Err(EntryError::Entry(entry_failure(f, queue, what))),
                        },
                        Err(f) => Err(EntryError::Entry(queue_error(f, queue))),
                    });
                }
            }
            Err(f) => {
                let err = queue_error(f, queue);
                for (i, _) in std::mem::take(&mut todo) {
                    results[i] = Some(Err(EntryError::Request(err.clone())));
                }
            }
            Ok(failed) => {
                let mut retry = Vec::new();
                for (i, e) in std::mem::take(&mut todo) {
                    match failed.get(&i.to_string()) {
                        None => results[i] = Some(Ok(())),
                        Some(f) => {
                            // Provisional for a retried entry: the next round overwrites it.
                            results[i] = Some(Err(EntryError::Entry(entry_failure(f, queue, what))));
                            if !f.sender_fault && !STALE_RECEIPT.contains(&f.code.as_str()) {
                                retry.push((i, e));
                            }
                        }
                    }
                }
                round += 1;
                if retry.is_empty() || round >= ENTRY_ATTEMPTS {
                    break;
                }
                tracing::debug!(
                    queue,
                    entries = retry.len(),
                    "SQS failed some batch entries on its side; retrying them."
                );
                tokio::time::sleep(backoff(round)).await;
                todo = retry;
            }
        }
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(EntryError::Request(lost())))).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

    use std::sync::Mutex;

    use aws_sdk_sqs::config::{BehaviorVersion, Region};

    use super::*;
    use crate::error::{Failure, FailureKind};

    fn ctx() -> Ctx {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .build();
        Ctx { client: aws_sdk_sqs::Client::from_conf(config), endpoint: Arc::from("http://fake") }
    }

    fn failed(id: &str, sender_fault: bool, code: &str) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder().id(id).sender_fault(sender_fault).code(code).build().unwrap()
    }

    /// Entries are `"<id>:<behaviour>"`; the fake answers by behaviour and
    /// records which ids each request carried.
    async fn run(
        entries: &[&str],
        respond: fn(&[String], usize) -> BatchOutcome,
    ) -> (Vec<Result<(), EntryError>>, Vec<Vec<String>>) {
        let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let seen = calls.clone();
        let request = move |_ctx: Ctx, _url: String, batch: Vec<String>| {
            let seen = seen.clone();
            async move {
                let call = {
                    let mut calls = seen.lock().unwrap();
                    calls.push(batch.iter().map(|e| e.split(':').next().unwrap_or("").to_string()).collect());
                    calls.len()
                };
                respond(&batch, call)
            }
        };
        let entries = entries.iter().map(|e| Ok(e.to_string())).collect();
        let results = flush_entries(&ctx(), "url", "q", entries, "send", request).await;
        let calls = calls.lock().unwrap().clone();
        (results, calls)
    }

    fn id(entry: &str) -> &str {
        entry.split(':').next().unwrap_or("")
    }

    #[tokio::test]
    async fn service_side_failures_are_retried_alone_and_sender_faults_fail_their_own_entry() {
        let (results, calls) = run(&["0:ok", "1:flaky", "2:bad"], |batch, call| {
            let mut out = HashMap::new();
            for e in batch {
                if e.ends_with(":flaky") && call == 1 {
                    out.insert(id(e).to_string(), failed(id(e), false, "InternalError"));
                }
                if e.ends_with(":bad") {
                    out.insert(id(e).to_string(), failed(id(e), true, "InvalidMessageContents"));
                }
            }
            Ok(out)
        })
        .await;
        assert_eq!(calls, vec![vec!["0", "1", "2"], vec!["1"]], "only the failed entry is retried");
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1], Ok(()));
        assert!(
            matches!(&results[2], Err(EntryError::Entry(QueueError::Invalid(m))) if m.contains("InvalidMessageContents"))
        );
    }

    #[tokio::test]
    async fn an_entry_that_keeps_failing_on_the_service_side_gives_up_after_the_attempts() {
        let (results, calls) = run(&["0:ok", "1:down"], |batch, _| {
            Ok(batch
                .iter()
                .filter(|e| e.ends_with(":down"))
                .map(|e| (id(e).to_string(), failed(id(e), false, "ServiceUnavailable")))
                .collect())
        })
        .await;
        assert_eq!(calls.len(), ENTRY_ATTEMPTS as usize);
        assert_eq!(results[0], Ok(()));
        assert!(
            matches!(&results[1], Err(EntryError::Entry(QueueError::Backend(m))) if m.contains("ServiceUnavailable"))
        );
    }

    #[tokio::test]
    async fn a_batch_spoiled_by_one_entry_is_split_so_the_others_go_through() {
        let (results, calls) = run(&["0:ok", "1:poison", "2:ok"], |batch, _| {
            if batch.iter().any(|e| e.ends_with(":poison")) {
                return Err(Failure {
                    kind: FailureKind::Client,
                    code: Some("InvalidParameterValue".to_string()),
                    message: "SQS answered 400 InvalidParameterValue: bad body".to_string(),
                });
            }
            Ok(HashMap::new())
        })
        .await;
        assert_eq!(calls, vec![vec!["0", "1", "2"], vec!["0"], vec!["1"], vec!["2"]]);
        assert_eq!(results[0], Ok(()));
        assert!(matches!(&results[1], Err(EntryError::Entry(QueueError::Invalid(_)))));
        assert_eq!(results[2], Ok(()));
    }

    #[tokio::test]
    async fn a_request_that_fails_as_a_whole_fails_every_entry_as_a_request_error() {
        let (results, calls) = run(&["0:ok", "1:ok"], |_, _| {
            Err(Failure {
                kind: FailureKind::Unreachable,
                code: None,
                message: "cannot reach SQS at http://fake: connection refused".to_string(),
            })
        })
        .await;
        assert_eq!(calls.len(), 1);
        for r in results {
            assert!(matches!(r, Err(EntryError::Request(QueueError::Unreachable(_)))), "{r:?}");
        }
    }

    const BASE: Duration = Duration::from_millis(5);
    const BUSY: Duration = Duration::from_millis(500);

    fn pending(i: usize) -> Pending<String> {
        let (reply, _) = oneshot::channel();
        Pending { item: format!("r{i}"), reply, at: Instant::now() }
    }

    /// Sends `n` entries, one every `every`, starting now; the channel stays open.
    fn trickle(tx: &mpsc::UnboundedSender<Pending<String>>, n: usize, every: Duration) {
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let _ = tx.send(pending(i));
                tokio::time::sleep(every).await;
            }
        });
    }

    /// `earlier` entries, then a pause of `quiet`, then one entry alone:
    /// the size of its batch and how long the batch waited.
    async fn lone_entry_after(earlier: usize, quiet: Duration) -> (usize, Duration) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut arrivals = Arrivals::default();
        for _ in 0..earlier {
            arrivals.record(Instant::now());
        }
        tokio::time::sleep(quiet).await;
        tx.send(pending(0)).unwrap();
        let started = Instant::now();
        let batch = next_batch(&mut rx, &mut None, Window { base: BASE, busy: BUSY }, &mut arrivals).await.unwrap();
        (batch.len(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_message_on_an_idle_queue_waits_only_the_base_window() {
        // Traffic long ago does not make the queue busy now.
        assert_eq!(lone_entry_after(20, Duration::from_secs(10)).await, (1, BASE));
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_busy_queue_a_batch_waits_up_to_the_busy_window_to_fill() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut arrivals = Arrivals::default();
        let window = Window { base: BASE, busy: BUSY };
        // One entry every 40 ms: each base window catches one entry alone,
        // 12 or 13 arrive per busy window.
        trickle(&tx, 40, Duration::from_millis(40));
        let mut sizes = Vec::new();
        while sizes.iter().sum::<usize>() < 40 {
            sizes.push(next_batch(&mut rx, &mut None, window, &mut arrivals).await.unwrap().len());
        }
        // Alone until the last busy window saw two entries (steady
        // traffic); then full batches; the last ones wait the window out.
        assert_eq!(sizes, vec![1, 1, 10, 10, 10, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_recent_entry_does_not_make_a_queue_busy() {
        assert_eq!(lone_entry_after(1, Duration::from_millis(100)).await, (1, BASE));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_on_a_busy_queue_goes_when_the_busy_window_ends() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut arrivals = Arrivals::default();
        for _ in 0..10 {
            arrivals.record(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Traffic stops after three entries: the batch does not wait past the busy window.
        trickle(&tx, 3, Duration::from_millis(10));
        let started = Instant::now();
        let batch = next_batch(&mut rx, &mut None, Window { base: BASE, busy: BUSY }, &mut arrivals).await.unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(started.elapsed(), BUSY);
    }
}
