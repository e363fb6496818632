//! Contract tests every `Queue` adapter runs against itself: the SQS
//! behaviour sqsaga relies on, written once so the SQLite queue and Amazon SQS
//! (through an emulator) are held to the same rules.
//!
//! Each case takes the adapter and a name prefix unique to the run (queues
//! are named `<prefix>-<case>`, so runs never collide) and returns `Err` with
//! a sentence saying what broke. [`run_all`] runs every case and reports all
//! failures at once. The cases keep queues shallow (< 30 messages) and rely on
//! no timing tighter than about 2 s, because an emulator can be slow.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::{
    ATTR_REASON, ATTR_SOURCE, MAX_BATCH, MAX_MESSAGE_BYTES, OutgoingMessage, Queue, QueueError, QueueSpec, Receive,
    ReceivedMessage, dlq_name, redrive,
};

/// How long a case waits for something that should arrive promptly.
const PATIENCE: Duration = Duration::from_secs(10);

/// Fails the case with a message unless the condition holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Adds what was being done to an adapter error.
trait Context<T> {
    fn ctx(self, doing: &str) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, QueueError> {
    fn ctx(self, doing: &str) -> Result<T, String> {
        self.map_err(|e| format!("{doing}: {e}"))
    }
}

/// A case: its name and how to run it.
type Case = for<'a> fn(
    &'a dyn Queue,
    &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// Every case, by name.
pub fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("round_trip", |q, p| Box::pin(round_trip(q, p))),
        ("batch_limits", |q, p| Box::pin(batch_limits(q, p))),
        ("size_limit", |q, p| Box::pin(size_limit(q, p))),
        ("delay", |q, p| Box::pin(delay(q, p))),
        ("visibility_expiry", |q, p| Box::pin(visibility_expiry(q, p))),
        ("stale_receipt_loses_nothing", |q, p| Box::pin(stale_receipt_loses_nothing(q, p))),
        ("change_visibility_zero", |q, p| Box::pin(change_visibility_zero(q, p))),
        ("max_receive_count_to_dlq", |q, p| Box::pin(max_receive_count_to_dlq(q, p))),
        ("dead_letter", |q, p| Box::pin(dead_letter(q, p))),
        ("redrive_moves_once", |q, p| Box::pin(redrive_moves_once(q, p))),
        ("long_poll_wakes", |q, p| Box::pin(long_poll_wakes(q, p))),
        ("depth", |q, p| Box::pin(depth(q, p))),
        ("missing_queue", |q, p| Box::pin(missing_queue(q, p))),
    ]
}

/// Runs every case one after the other; `Err` lists every failure.
pub async fn run_all(queue: &dyn Queue, prefix: &str) -> Result<(), String> {
    let mut failures = Vec::new();
    for (name, case) in cases() {
        if let Err(e) = case(queue, prefix).await {
            failures.push(format!("queue contract `{name}` failed: {e}"));
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// A queue with a DLQ, `visibility` seconds of visibility and redrive after
/// `max_receive_count` receives (0 = never).
pub fn spec(name: &str, visibility: u64, max_receive_count: u32) -> QueueSpec {
    QueueSpec {
        name: name.to_string(),
        visibility_timeout: Duration::from_secs(visibility),
        max_receive_count,
        retention: Duration::from_secs(24 * 3600),
        with_dlq: true,
    }
}

/// Receives until `n` messages arrived or `within` passed (SQS may hand out
/// fewer than asked per call), with the queue's visibility timeout.
pub async fn receive_n(q: &dyn Queue, queue: &str, n: usize, within: Duration) -> Result<Vec<ReceivedMessage>, String> {
    let deadline = Instant::now() + within;
    let mut got: Vec<ReceivedMessage> = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let r = Receive::up_to((n - got.len()).min(MAX_BATCH)).wait(left.min(crate::MAX_WAIT));
        got.extend(q.receive(queue, r).await.ctx(&format!("receive from {queue}"))?);
    }
    Ok(got)
}

/// Ensures a queue named `<prefix>-<case>`.
async fn fresh(q: &dyn Queue, prefix: &str, case: &str, visibility: u64, max_receive: u32) -> Result<String, String> {
    let name = format!("{prefix}-{case}");
    q.ensure(&spec(&name, visibility, max_receive)).await.ctx("ensure")?;
    Ok(name)
}

async fn receive_one(q: &dyn Queue, queue: &str) -> Result<ReceivedMessage, String> {
    let mut got = receive_n(q, queue, 1, PATIENCE).await?;
    check!(got.len() == 1, "expected 1 message on {queue} within {PATIENCE:?}, got {}", got.len());
    got.pop().ok_or_else(|| "no message".to_string())
}

async fn delete_all(q: &dyn Queue, queue: &str, messages: &[ReceivedMessage]) -> Result<(), String> {
    for chunk in messages.chunks(MAX_BATCH) {
        let receipts: Vec<String> = chunk.iter().map(|m| m.receipt_handle.clone()).collect();
        let failed = q.delete_batch(queue, &receipts).await.ctx("delete")?;
        check!(failed.is_empty(), "deleting current receipts failed: {failed:?}");
    }
    Ok(())
}

/// Nothing is receivable now (a short poll, 0 s wait).
async fn nothing_now(q: &dyn Queue, queue: &str, why: &str) -> Result<(), String> {
    let got = q.receive(queue, Receive::up_to(MAX_BATCH)).await.ctx("receive")?;
    check!(got.is_empty(), "{why}, but received {:?}", bodies(&got));
    Ok(())
}

fn bodies(messages: &[ReceivedMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

fn has_attributes(m: &ReceivedMessage, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| m.attributes.get(k) == Some(v))
}

/// Send, receive with attributes, invisible while in flight, delete, gone.
pub async fn round_trip(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "roundtrip", 30, 5).await?;
    q.ensure(&spec(&name, 30, 5)).await.ctx("ensure is idempotent")?;
    let sent = OutgoingMessage::new(r#"{"hello":"wörld","n":1}"#)
        .with_attribute("kind", "greeting")
        .with_attribute("trace", "abc-123");
    q.send(&name, sent.clone()).await.ctx("send")?;
    let r = Receive::up_to(1).wait(PATIENCE).visibility(Duration::from_secs(3));
    let got = q.receive(&name, r).await.ctx("receive")?;
    check!(got.len() == 1, "expected the sent message, got {}", got.len());
    let m = &got[0];
    check!(m.body == sent.body, "body changed: {:?}", m.body);
    check!(has_attributes(m, &sent.attributes), "attributes changed: {:?}", m.attributes);
    check!(m.receive_count == 1, "first receive has receive_count {}", m.receive_count);
    check!(!m.receipt_handle.is_empty() && !m.message_id.is_empty(), "empty id or receipt: {m:?}");
    check!(m.sent_at > 1_500_000_000_000, "sent_at is not epoch milliseconds: {}", m.sent_at);
    nothing_now(q, &name, "a message in flight must be invisible").await?;
    delete_all(q, &name, &got).await?;
    // Past the 3 s visibility a message that was not deleted would be back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    nothing_now(q, &name, "a deleted message must not come back").await
}

/// Batches of more than 10 are rejected (send, receive, delete); 10 pass.
pub async fn batch_limits(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "batch", 30, 5).await?;
    let batch = |n: usize| (0..n).map(|i| OutgoingMessage::new(format!("m{i}"))).collect::<Vec<_>>();
    let too_many = q.send_batch(&name, batch(MAX_BATCH + 1)).await;
    check!(matches!(too_many, Err(QueueError::BatchTooLarge(_))), "send of 11 must be BatchTooLarge, got {too_many:?}");
    q.send_batch(&name, batch(MAX_BATCH)).await.ctx("send of 10")?;
    for max in [0, MAX_BATCH + 1] {
        let r = q.receive(&name, Receive::up_to(max)).await;
        check!(matches!(r, Err(QueueError::Invalid(_))), "receive of {max} must be Invalid, got {r:?}");
    }
    let got = receive_n(q, &name, MAX_BATCH, PATIENCE).await?;
    let mut seen: Vec<&str> = bodies(&got);
    seen.sort_unstable();
    seen.dedup();
    check!(seen.len() == MAX_BATCH, "expected the 10 messages once each, got {seen:?}");
    let mut receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    receipts.push(receipts[0].clone());
    let r = q.delete_batch(&name, &receipts).await;
    check!(matches!(r, Err(QueueError::BatchTooLarge(_))), "delete of 11 must be BatchTooLarge, got {r:?}");
    delete_all(q, &name, &got).await
}

/// 1 MiB (body plus attributes) is the limit: one byte more is TooLarge.
pub async fn size_limit(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "size", 30, 5).await?;
    let over = q.send(&name, OutgoingMessage::new("x".repeat(MAX_MESSAGE_BYTES + 1))).await;
    check!(matches!(over, Err(QueueError::TooLarge { .. })), "a body of 1 MiB + 1 must be TooLarge, got {over:?}");
    let with_attr = OutgoingMessage::new("x".repeat(MAX_MESSAGE_BYTES - 10)).with_attribute("k", "v".repeat(20));
    let over = q.send(&name, with_attr).await;
    check!(
        matches!(over, Err(QueueError::TooLarge { .. })),
        "attributes count towards the limit: must be TooLarge, got {over:?}"
    );
    q.send(&name, OutgoingMessage::new("y".repeat(MAX_MESSAGE_BYTES)))
        .await
        .ctx("a body of exactly 1 MiB must be accepted")?;
    let m = receive_one(q, &name).await?;
    check!(m.body.len() == MAX_MESSAGE_BYTES, "the 1 MiB body came back with {} bytes", m.body.len());
    delete_all(q, &name, &[m]).await
}

/// A delayed message is invisible at first and delivered after its delay.
pub async fn delay(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "delay", 30, 5).await?;
    let too_long = q.send(&name, OutgoingMessage::new("late").with_delay(Duration::from_secs(901))).await;
    check!(too_long.is_err(), "a delay over 900 s must be rejected");
    let start = Instant::now();
    q.send(&name, OutgoingMessage::new("delayed").with_delay(Duration::from_secs(2))).await.ctx("send delayed")?;
    nothing_now(q, &name, "a message delayed by 2 s must not be visible at once").await?;
    let m = receive_one(q, &name).await?;
    let waited = start.elapsed();
    check!(m.body == "delayed", "unexpected body {:?}", m.body);
    check!(waited >= Duration::from_millis(1500), "delivered after {waited:?}, before its 2 s delay");
    delete_all(q, &name, &[m]).await
}

/// A message not deleted within its visibility timeout comes back, counted
/// twice, with a new receipt.
pub async fn visibility_expiry(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "expiry", 1, 0).await?;
    q.send(&name, OutgoingMessage::new("again")).await.ctx("send")?;
    let first = receive_one(q, &name).await?;
    let second = receive_one(q, &name).await?;
    check!(second.message_id == first.message_id, "a different message came back: {second:?}");
    check!(second.receive_count == 2, "redelivery has receive_count {}", second.receive_count);
    check!(second.receipt_handle != first.receipt_handle, "redelivery reused the receipt handle");
    delete_all(q, &name, &[second]).await
}

/// After a redelivery, a delete with the old receipt is reported stale or
/// ignored — the message is not lost: the current receipt still deletes it.
pub async fn stale_receipt_loses_nothing(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "stale", 1, 0).await?;
    q.send(&name, OutgoingMessage::new("keep me")).await.ctx("send")?;
    let first = receive_one(q, &name).await?;
    let second = receive_one(q, &name).await?;
    check!(second.message_id == first.message_id, "a different message came back: {second:?}");
    // Hold the redelivered copy while the stale delete runs.
    q.change_visibility(&name, &second.receipt_handle, Duration::from_secs(30)).await.ctx("extend visibility")?;
    let stale = q.delete_batch(&name, std::slice::from_ref(&first.receipt_handle)).await;
    match &stale {
        Ok(failed) => check!(
            failed.iter().all(|e| matches!(e, QueueError::StaleReceipt(_) | QueueError::Invalid(_))),
            "a stale delete must fail with StaleReceipt, got {failed:?}"
        ),
        Err(e) => check!(
            matches!(e, QueueError::StaleReceipt(_) | QueueError::Invalid(_)),
            "a stale delete must fail with StaleReceipt, got {e:?}"
        ),
    }
    let failed = q
        .delete_batch(&name, std::slice::from_ref(&second.receipt_handle))
        .await
        .ctx("delete with the current receipt")?;
    check!(failed.is_empty(), "the current receipt no longer deletes: {failed:?}");
    Ok(())
}

/// `change_visibility(0)` releases a message at once.
pub async fn change_visibility_zero(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "release", 30, 0).await?;
    q.send(&name, OutgoingMessage::new("release me")).await.ctx("send")?;
    let r = Receive::up_to(1).wait(PATIENCE).visibility(Duration::from_secs(120));
    let first = q.receive(&name, r).await.ctx("receive")?;
    check!(first.len() == 1, "expected the message, got {}", first.len());
    q.change_visibility(&name, &first[0].receipt_handle, Duration::ZERO).await.ctx("change_visibility(0)")?;
    let start = Instant::now();
    let again = receive_one(q, &name).await?;
    check!(again.receive_count == 2, "released message has receive_count {}", again.receive_count);
    check!(start.elapsed() < Duration::from_secs(5), "released message took {:?}", start.elapsed());
    delete_all(q, &name, &[again]).await
}

/// After `max_receive_count` receives the message moves to the DLQ, with the
/// reason recorded.
pub async fn max_receive_count_to_dlq(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "poison", 30, 2).await?;
    let sent = OutgoingMessage::new("poison").with_attribute("kind", "bad");
    q.send(&name, sent.clone()).await.ctx("send")?;
    for attempt in 1..=2 {
        let m = receive_one(q, &name).await?;
        check!(m.receive_count == attempt, "receive {attempt} has receive_count {}", m.receive_count);
        q.change_visibility(&name, &m.receipt_handle, Duration::ZERO).await.ctx("release")?;
    }
    let third = q.receive(&name, Receive::up_to(1).wait(Duration::from_secs(3))).await.ctx("third receive")?;
    check!(third.is_empty(), "a message over maxReceiveCount was delivered again: {third:?}");
    let dlq = dlq_name(&name);
    let dead = receive_one(q, &dlq).await?;
    check!(dead.body == sent.body, "the DLQ holds {:?}", dead.body);
    check!(has_attributes(&dead, &sent.attributes), "attributes lost on the way to the DLQ: {:?}", dead.attributes);
    let reason = dead.attributes.get(ATTR_REASON).cloned().unwrap_or_default();
    check!(!reason.is_empty(), "no {ATTR_REASON} attribute on {:?}", dead.attributes);
    check!(dead.attributes.get(ATTR_SOURCE) == Some(&name), "{ATTR_SOURCE} should name {name}: {:?}", dead.attributes);
    delete_all(q, &dlq, &[dead]).await
}

/// `dead_letter` moves a received message to the DLQ with the reason; the
/// original is gone.
pub async fn dead_letter(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "deadletter", 30, 5).await?;
    let sent = OutgoingMessage::new("not json").with_attribute("kind", "cmd");
    q.send(&name, sent.clone()).await.ctx("send")?;
    let m = receive_one(q, &name).await?;
    let reason = "unparseable: expected value at line 1 column 1";
    q.dead_letter(&name, &m, reason).await.ctx("dead_letter")?;
    // Released and wiped: if the original were still there it would be
    // visible again by now.
    let back = q.receive(&name, Receive::up_to(1).wait(Duration::from_secs(2))).await.ctx("receive source")?;
    check!(back.is_empty(), "the original is still in the source queue: {back:?}");
    let dlq = dlq_name(&name);
    let dead = receive_one(q, &dlq).await?;
    check!(dead.body == sent.body, "the DLQ holds {:?}", dead.body);
    check!(has_attributes(&dead, &sent.attributes), "attributes lost: {:?}", dead.attributes);
    check!(
        dead.attributes.get(ATTR_REASON).map(String::as_str) == Some(reason),
        "reason not recorded: {:?}",
        dead.attributes
    );
    check!(dead.attributes.get(ATTR_SOURCE) == Some(&name), "source not recorded: {:?}", dead.attributes);
    delete_all(q, &dlq, &[dead]).await
}

/// `redrive` moves every DLQ message back exactly once, without the DLQ
/// attributes; a second redrive moves nothing.
pub async fn redrive_moves_once(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "redrive", 30, 5).await?;
    let dlq = dlq_name(&name);
    let sent: Vec<OutgoingMessage> = (0..3)
        .map(|i| {
            OutgoingMessage::new(format!("redriven-{i}"))
                .with_attribute("kind", "cmd")
                .with_attribute(ATTR_REASON, "handler crashed")
                .with_attribute(ATTR_SOURCE, name.clone())
        })
        .collect();
    q.send_batch(&dlq, sent).await.ctx("send to the DLQ")?;
    let moved = redrive(q, &dlq, &name).await.ctx("redrive")?;
    check!(moved == 3, "redrive moved {moved} messages, expected 3");
    let got = receive_n(q, &name, 4, Duration::from_secs(4)).await?;
    let mut seen = bodies(&got);
    seen.sort_unstable();
    check!(
        seen == ["redriven-0", "redriven-1", "redriven-2"],
        "expected each message once after redrive, got {seen:?}"
    );
    for m in &got {
        check!(m.attributes.get("kind").map(String::as_str) == Some("cmd"), "attributes lost: {m:?}");
        check!(!m.attributes.contains_key(ATTR_REASON), "the DLQ reason survived the redrive: {m:?}");
    }
    delete_all(q, &name, &got).await?;
    let again = redrive(q, &dlq, &name).await.ctx("second redrive")?;
    check!(again == 0, "a second redrive moved {again} messages");
    Ok(())
}

/// A long poll returns as soon as a message is sent during the wait.
pub async fn long_poll_wakes(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "longpoll", 30, 5).await?;
    let start = Instant::now();
    let wait = crate::MAX_WAIT;
    let (got, sent) = tokio::join!(q.receive(&name, Receive::up_to(1).wait(wait)), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.send(&name, OutgoingMessage::new("wake up")).await
    });
    sent.ctx("send during the wait")?;
    let got = got.ctx("long poll")?;
    let took = start.elapsed();
    check!(got.len() == 1, "the long poll returned {} messages", got.len());
    check!(took < Duration::from_secs(8), "the long poll took {took:?} for a message sent after 1 s (wait {wait:?})");
    delete_all(q, &name, &got).await
}

/// Depth counts visible, in-flight and delayed messages (approximately, as
/// SQS does: the case retries for a few seconds until they match).
pub async fn depth(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = fresh(q, prefix, "depth", 60, 5).await?;
    q.send_batch(
        &name,
        vec![
            OutgoingMessage::new("a"),
            OutgoingMessage::new("b"),
            OutgoingMessage::new("later").with_delay(Duration::from_secs(120)),
        ],
    )
    .await
    .ctx("send")?;
    let taken = receive_n(q, &name, 1, PATIENCE).await?;
    check!(taken.len() == 1, "expected one message, got {}", taken.len());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let d = q.depth(&name).await.ctx("depth")?;
        if (d.visible, d.in_flight, d.delayed) == (1, 1, 1) {
            break;
        }
        check!(Instant::now() < deadline, "depth should be 1 visible, 1 in flight, 1 delayed; is {d:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    delete_all(q, &name, &taken).await
}

/// Operations on a queue that was never ensured fail with NoSuchQueue.
pub async fn missing_queue(q: &dyn Queue, prefix: &str) -> Result<(), String> {
    let name = format!("{prefix}-never-created");
    let r = q.receive(&name, Receive::up_to(1)).await;
    check!(matches!(r, Err(QueueError::NoSuchQueue(_))), "receive: expected NoSuchQueue, got {r:?}");
    let r = q.send(&name, OutgoingMessage::new("x")).await;
    check!(matches!(r, Err(QueueError::NoSuchQueue(_))), "send: expected NoSuchQueue, got {r:?}");
    Ok(())
}
