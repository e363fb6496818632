//! Message signing in the worker, against the real embedded (SQLite) queue:
//! a forged, an unsigned (when required) or a stale command lands in the DLQ
//! with the reason and its handler never runs; a command signed with the
//! previous key (a rotation) runs; replies are signed and carry the trace.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqsaga_core::machine::Phase;
use sqsaga_protocol::{ATTR_DLQ_REASON, ATTR_SIGNATURE, ATTR_TRACEPARENT, Signer, Signing, TraceParent, Verified};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive, ReceivedMessage, dlq_name};
use sqsaga_worker::{Worker, WorkerOptions, WorkerStats};
use support::{Probes, body, command, ledger};
use tokio::sync::oneshot;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-current";
const OLD: &[u8] = b"fedcba9876543210fedcba9876543210-previous";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A worker with a signing policy, on a fresh embedded data dir.
struct Running {
    queue: Arc<dyn Queue>,
    probes: Arc<Probes>,
    stats: Arc<WorkerStats>,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), sqsaga_worker::WorkerError>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "worker did not stop cleanly: {result:?}");
    }
}

fn policy(current: &[u8], previous: Option<&[u8]>, require: bool) -> Signing {
    Signing { signer: Signer::new(current, previous), max_age: Duration::from_secs(300), require }
}

async fn start(signing: Signing) -> Running {
    let queue_dir = tempfile::tempdir().unwrap();
    let backend = sqsaga_embedded::EmbeddedBackend::open(queue_dir.path(), sqsaga_embedded::Sync::Full).unwrap();
    let queue: Arc<dyn Queue> = backend.queue();
    for name in ["ledger", "orchestrator"] {
        queue.ensure(&QueueSpec::named(name)).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (participant, probes) = ledger(&dir.path().join("ledger.db"));
    let mut options = WorkerOptions::new("ledger", "ledger-test-1");
    options.wait = Duration::from_millis(100);
    options.visibility = Duration::from_secs(5);
    options.signing = Some(Arc::new(signing));
    let worker = Worker::new(options, queue.clone(), Arc::new(participant));
    let stats = worker.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { queue, probes, stats, stop, handle, _dirs: (queue_dir, dir) }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap()
}

/// A ledger command for saga `saga`, signed by `signer` at `at` (unsigned when `None`).
fn message(saga: &str, signer: Option<(&Signer, u64)>) -> OutgoingMessage {
    let text = body(command(saga, Phase::Action, json!({"amount": 1})));
    let mut out = OutgoingMessage::new(text).with_attribute(ATTR_TRACEPARENT, TRACE);
    if let Some((signer, at)) = signer {
        let signature = signer.sign(&out.body, at);
        out = out.with_attribute(ATTR_SIGNATURE, signature);
    }
    out
}

/// Receives (and deletes) from `name` until `n` messages arrived or 10 s passed.
async fn collect(queue: &dyn Queue, name: &str, n: usize) -> Vec<ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < n && tokio::time::Instant::now() < deadline {
        let batch = queue.receive(name, Receive::up_to(10).wait(Duration::from_millis(100))).await.unwrap();
        if !batch.is_empty() {
            let receipts: Vec<String> = batch.iter().map(|m| m.receipt_handle.clone()).collect();
            queue.delete_batch(name, &receipts).await.unwrap();
        }
        got.extend(batch);
    }
    got
}

/// Sends `m` to a worker requiring signatures and returns the DLQ reason;
/// asserts the handler never ran and nothing was replied.
async fn rejected(m: OutgoingMessage) -> String {
    let w = start(policy(KEY, None, true)).await;
    w.queue.send("ledger", m).await.unwrap();
    let dead = collect(w.queue.as_ref(), &dlq_name("ledger"), 1).await;
    assert_eq!(dead.len(), 1, "expected one dead-lettered message");
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 0, "the handler must never run");
    assert_eq!(w.stats.dead_lettered.get(), 1);
    let d = w.queue.depth("orchestrator").await.unwrap();
    assert_eq!(d.visible + d.in_flight, 0, "no reply for a rejected command");
    let d = w.queue.depth("ledger").await.unwrap();
    assert_eq!(d.visible + d.in_flight, 0, "moved, not left behind");
    w.shutdown().await;
    dead[0].attributes.get(ATTR_DLQ_REASON).cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_command_goes_to_the_dlq_and_never_runs() {
    let mut m = message("s1", Some((&Signer::new(KEY, None), now_ms())));
    // Signed, then altered: the amount changes after signing.
    m.body = m.body.replace("\"amount\":1", "\"amount\":1000");
    let reason = rejected(m).await;
    assert!(reason.starts_with("signature check failed: forged or altered message"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_signed_with_an_unknown_key_goes_to_the_dlq() {
    let stranger = Signer::new(b"somebody else's key, long enough to pass", None);
    let reason = rejected(message("s1", Some((&stranger, now_ms())))).await;
    assert!(reason.contains("signed with unknown key"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_command_goes_to_the_dlq_when_signatures_are_required() {
    let reason = rejected(message("s1", None)).await;
    assert!(reason.starts_with("signature check failed: unsigned message"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_command_goes_to_the_dlq() {
    let an_hour_ago = now_ms() - 3_600_000;
    let reason = rejected(message("s1", Some((&Signer::new(KEY, None), an_hour_ago)))).await;
    assert!(reason.starts_with("signature check failed: stale signature"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_signed_with_the_previous_key_runs_and_the_reply_is_signed_with_the_current_one() {
    let w = start(policy(KEY, Some(OLD), true)).await;
    w.queue.send("ledger", message("s1", Some((&Signer::new(OLD, None), now_ms())))).await.unwrap();
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 1);
    let reply = &replies[0];
    let attr = reply.attributes.get(ATTR_SIGNATURE).map(String::as_str);
    let orchestrator = Signer::new(KEY, None);
    let verified = orchestrator.verify(&reply.body, attr, now_ms(), Duration::from_secs(300), true);
    assert_eq!(verified, Ok(Verified::Current));
    // Same trace, the reply's own span.
    let tp = TraceParent::parse(reply.attributes.get(ATTR_TRACEPARENT).unwrap()).unwrap();
    let sent = TraceParent::parse(TRACE).unwrap();
    assert_eq!(tp.trace_id(), sent.trace_id());
    assert_ne!(tp.span_id(), sent.span_id());
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rollout_unsigned_commands_run_but_signed_ones_must_verify() {
    let w = start(policy(KEY, None, false)).await;
    w.queue.send("ledger", message("s1", None)).await.unwrap();
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1, "unsigned accepted while not required");
    let mut forged = message("s2", Some((&Signer::new(KEY, None), now_ms())));
    forged.body = forged.body.replace("\"amount\":1", "\"amount\":7");
    w.queue.send("ledger", forged).await.unwrap();
    let dead = collect(w.queue.as_ref(), &dlq_name("ledger"), 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 1, "only the unsigned one ran");
    w.shutdown().await;
}
