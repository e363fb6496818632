//! The worker loop end to end against the real embedded (SQLite) queue:
//! execute, reply, delete; poison messages to the DLQ with a reason;
//! seed-shaped messages; the drift guard's release; graceful shutdown.
//! Receive and send failures are injected through the in-memory double.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_protocol::{ATTR_DLQ_REASON, Envelope, ReplyMessage, SeedMessage};
use sqsaga_queue::{Queue, QueueSpec, Receive, dlq_name};
use sqsaga_worker::{Participant, Worker, WorkerOptions, WorkerStats};
use support::{MemoryQueue, Probes, body, command, ledger, ledger_state};
use tokio::sync::oneshot;

/// A running worker and what a test needs to watch and stop it.
struct Running {
    queue: Arc<dyn Queue>,
    participant: Arc<Participant>,
    probes: Arc<Probes>,
    stats: Arc<WorkerStats>,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<Result<(), sqsaga_worker::WorkerError>>,
    _dirs: (tempfile::TempDir, Option<tempfile::TempDir>),
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "worker did not stop cleanly: {result:?}");
    }
}

fn options() -> WorkerOptions {
    let mut o = WorkerOptions::new("ledger", "ledger-test-1");
    o.wait = Duration::from_millis(100);
    o.visibility = Duration::from_secs(5);
    o.drain_timeout = Duration::from_secs(5);
    o.fingerprint = "fp-1".into();
    o
}

async fn ensure_queues(queue: &dyn Queue) {
    for name in ["ledger", "orchestrator"] {
        queue.ensure(&QueueSpec::named(name)).await.unwrap();
    }
}

/// A queue under test and the directory that must outlive it.
struct Backend {
    queue: Arc<dyn Queue>,
    dir: Option<tempfile::TempDir>,
}

/// The real embedded SQLite queue, in a fresh data directory.
fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqsaga_embedded::EmbeddedBackend::open(dir.path(), sqsaga_embedded::Sync::Full).unwrap();
    Backend { queue: backend.queue(), dir: Some(dir) }
}

/// The in-memory double, for fault injection.
fn memory(queue: Arc<MemoryQueue>) -> Backend {
    Backend { queue, dir: None }
}

async fn start(backend: Backend, options: WorkerOptions) -> Running {
    let Backend { queue, dir: queue_dir } = backend;
    let dir = tempfile::tempdir().unwrap();
    ensure_queues(queue.as_ref()).await;
    let (participant, probes) = ledger(&dir.path().join("ledger.db"));
    let participant = Arc::new(participant);
    let worker = Worker::new(options, queue.clone(), participant.clone());
    let stats = worker.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    Running { queue, participant, probes, stats, stop, handle, _dirs: (dir, queue_dir) }
}

async fn send(queue: &dyn Queue, name: &str, body: String) {
    queue.send(name, sqsaga_queue::OutgoingMessage::new(body)).await.unwrap();
}

/// Receives (and deletes) messages from `name` until `n` arrived or 10 s passed.
async fn collect(queue: &dyn Queue, name: &str, n: usize) -> Vec<sqsaga_queue::ReceivedMessage> {
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

fn reply_of(m: &sqsaga_queue::ReceivedMessage) -> ReplyMessage {
    match Envelope::decode(&m.body) {
        Ok(Envelope::Reply(r)) => r,
        other => panic!("not a reply: {other:?}"),
    }
}

/// Waits until `cond` holds, up to 10 s.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn empty(queue: &dyn Queue, name: &str) -> bool {
    let d = queue.depth(name).await.unwrap();
    d.visible == 0 && d.in_flight == 0 && d.delayed == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_is_executed_replied_and_deleted() {
    let w = start(embedded(), options()).await;
    send(w.queue.as_ref(), "ledger", body(command("s1", Phase::Action, json!({"amount": 5})))).await;
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    let reply = reply_of(&replies[0]);
    assert_eq!(reply.command_id, "s1:0:a:1");
    assert_eq!(reply.saga_id, "s1");
    assert_eq!(reply.phase, Phase::Action);
    assert_eq!(reply.outcome, Outcome::Succeeded { output: json!({"added": 5}) });
    assert_eq!(reply.worker.service, "ledger");
    assert_eq!(reply.worker.instance, "ledger-test-1");
    assert_eq!(reply.worker.fingerprint, "fp-1");
    let stats = w.stats.clone();
    eventually("the delete", || stats.processed.get() == 1).await;
    assert!(empty(w.queue.as_ref(), "ledger").await);
    assert_eq!(ledger_state(&w.participant).await, (5, 1));
    let snap = w.stats.snapshot();
    assert_eq!(snap.received, 1);
    let mut registry = prometheus_client::registry::Registry::default();
    w.stats.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("sqsaga_step_duration_seconds_count{command=\"ledger.add\"} 1\n"), "{text}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dlq_with_a_reason_and_work_goes_on() {
    let w = start(embedded(), options()).await;
    let q = w.queue.as_ref();
    send(q, "ledger", "this is not json".into()).await;
    let mut unknown = command("s2", Phase::Action, json!({}));
    unknown.command = "ledger.explode".into();
    send(q, "ledger", body(unknown)).await;
    send(q, "ledger", r#"{"type":"heartbeat","service":"x"}"#.into()).await;
    send(q, "ledger", body(command("s4", Phase::Action, json!({"amount": 2})))).await;

    let replies = collect(q, "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(reply_of(&replies[0]).saga_id, "s4");

    let dead = collect(q, &dlq_name("ledger"), 3).await;
    let mut reasons: Vec<String> =
        dead.iter().map(|m| m.attributes.get(ATTR_DLQ_REASON).cloned().unwrap_or_default()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("undecodable body")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "unknown command `ledger.explode`"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.starts_with("not a worker command")), "{reasons:?}");
    assert!(dead.iter().any(|m| m.body == "this is not json"));

    let stats = w.stats.clone();
    eventually("the good message's delete", || stats.processed.get() == 1).await;
    assert_eq!(w.stats.dead_lettered.get(), 3);
    assert!(empty(q, "ledger").await);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_error_is_replied_and_the_message_deleted() {
    let w = start(embedded(), options()).await;
    w.probes.fail_next.store(1, Ordering::SeqCst);
    send(w.queue.as_ref(), "ledger", body(command("s1", Phase::Action, json!({"amount": 5})))).await;
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(reply_of(&replies[0]).outcome, Outcome::Transient { error: "ledger busy".into() });
    let stats = w.stats.clone();
    eventually("the delete", || stats.processed.get() == 1).await;
    assert!(empty(w.queue.as_ref(), "ledger").await);
    assert_eq!(w.stats.failed.get(), 1);
    assert_eq!(ledger_state(&w.participant).await, (0, 0));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_commands_all_replied_in_few_commits() {
    let w = start(embedded(), options()).await;
    for i in 0..25 {
        send(w.queue.as_ref(), "ledger", body(command(&format!("s{i}"), Phase::Action, json!({"amount": 1})))).await;
    }
    let replies = collect(w.queue.as_ref(), "orchestrator", 25).await;
    assert_eq!(replies.len(), 25);
    let stats = w.stats.clone();
    eventually("all deletes", || stats.processed.get() == 25).await;
    let commits = w.participant.committer().commits();
    assert!(commits < 25, "25 commands took {commits} commits");
    assert_eq!(ledger_state(&w.participant).await, (25, 25));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_messages_run_through_the_barrier_without_a_reply() {
    let w = start(embedded(), options()).await;
    let seed = |comp: bool| {
        serde_json::to_string(&SeedMessage {
            saga_id: "o-1".into(),
            step: "ledger.add".into(),
            payload: json!({"amount": 9}),
            is_compensating: comp,
        })
        .unwrap()
    };
    send(w.queue.as_ref(), "ledger", seed(false)).await;
    let stats = w.stats.clone();
    eventually("the action", || stats.processed.get() == 1).await;
    assert_eq!(ledger_state(&w.participant).await, (9, 1));
    // Delivered twice (at least once), then compensated.
    send(w.queue.as_ref(), "ledger", seed(false)).await;
    eventually("the duplicate", || stats.processed.get() == 2).await;
    send(w.queue.as_ref(), "ledger", seed(true)).await;
    eventually("the compensation", || stats.processed.get() == 3).await;
    assert_eq!(ledger_state(&w.participant).await, (0, 2));
    assert_eq!(w.stats.duplicates.get(), 1);
    assert!(empty(w.queue.as_ref(), "orchestrator").await);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_message_failing_transiently_comes_back_and_then_succeeds() {
    let mut o = options();
    o.visibility = Duration::from_millis(300);
    let w = start(embedded(), o).await;
    w.probes.fail_next.store(1, Ordering::SeqCst);
    let seed = SeedMessage {
        saga_id: "o-2".into(),
        step: "ledger.add".into(),
        payload: json!({"amount": 6}),
        is_compensating: false,
    };
    send(w.queue.as_ref(), "ledger", serde_json::to_string(&seed).unwrap()).await;
    let stats = w.stats.clone();
    eventually("the redelivered seed message", || stats.processed.get() == 1).await;
    assert_eq!(stats.failed.get(), 1);
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 2);
    assert_eq!(ledger_state(&w.participant).await, (6, 1));
    assert!(empty(w.queue.as_ref(), "ledger").await);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_received_messages_that_did_not_start() {
    let backend = embedded();
    let gated = support::GatedQueue::new(backend.queue);
    let mut o = options();
    o.concurrency = 1;
    let w = start(Backend { queue: gated.clone(), dir: backend.dir }, o).await;
    for i in 0..3 {
        send(w.queue.as_ref(), "ledger", body(command(&format!("s{i}"), Phase::Action, json!({"amount": 1})))).await;
    }
    // The poller is inside its receive when the shutdown begins...
    gated.entered.notified().await;
    let _ = w.stop.send(());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and the receive then returns the three messages.
    gated.open.add_permits(1);
    let result = tokio::time::timeout(Duration::from_secs(10), w.handle).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert_eq!(w.stats.released.get(), 3);
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 0);
    // Visible again at once, for a sibling or the next run.
    let d = gated.inner.depth("ledger").await.unwrap();
    assert_eq!((d.visible, d.in_flight), (3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_work_finish_reply_and_delete() {
    let w = start(embedded(), options()).await;
    let slow = command("s1", Phase::Action, json!({"amount": 1, "sleep_ms": 400}));
    send(w.queue.as_ref(), "ledger", body(slow)).await;
    let stats = w.stats.clone();
    eventually("the command to start", || stats.in_flight.get() == 1).await;
    let queue = w.queue.clone();
    w.shutdown().await;
    assert_eq!(stats.processed.get(), 1);
    assert_eq!(stats.in_flight.get(), 0);
    assert!(empty(queue.as_ref(), "ledger").await);
    assert_eq!(collect(queue.as_ref(), "orchestrator", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_budget_bounds_shutdown_and_leaves_the_rest_for_redelivery() {
    let mut o = options();
    o.drain_timeout = Duration::from_millis(100);
    let w = start(embedded(), o).await;
    let slow = command("s1", Phase::Action, json!({"amount": 1, "sleep_ms": 1500}));
    send(w.queue.as_ref(), "ledger", body(slow)).await;
    let stats = w.stats.clone();
    eventually("the command to start", || stats.in_flight.get() == 1).await;
    let queue = w.queue.clone();
    let started = std::time::Instant::now();
    w.shutdown().await;
    assert!(started.elapsed() < Duration::from_millis(1000), "took {:?}", started.elapsed());
    assert_eq!(stats.processed.get(), 0);
    // Not deleted: it comes back after its visibility timeout.
    let d = queue.depth("ledger").await.unwrap();
    assert_eq!(d.visible + d.in_flight, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonconforming_worker_releases_the_command_to_a_conforming_sibling() {
    let drifted = start(embedded(), options()).await;
    let mut c = command("s1", Phase::Action, json!({"amount": 1}));
    c.conforming = Some(vec!["fp-good".into()]);
    send(drifted.queue.as_ref(), "ledger", body(c)).await;
    let stats = drifted.stats.clone();
    eventually("the refusal", || stats.refused_nonconforming.get() >= 1).await;
    assert_eq!(drifted.probes.action_calls.load(Ordering::SeqCst), 0);
    let d = drifted.queue.depth("ledger").await.unwrap();
    assert_eq!(d.visible + d.in_flight, 1, "released, not lost nor dead-lettered");

    let mut o = options();
    o.instance = "ledger-test-2".into();
    o.fingerprint = "fp-good".into();
    let sibling = start(Backend { queue: drifted.queue.clone(), dir: None }, o).await;
    let replies = collect(sibling.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(reply_of(&replies[0]).worker.fingerprint, "fp-good");
    assert_eq!(sibling.probes.action_calls.load(Ordering::SeqCst), 1);
    assert_eq!(drifted.probes.action_calls.load(Ordering::SeqCst), 0);
    sibling.shutdown().await;
    drifted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_contract_is_not_implemented_is_released_not_dead_lettered() {
    // Drift, not poison: an older build (or a handler switched off) leaves
    // the command to a sibling that implements the contract.
    let w = start(embedded(), options()).await;
    let mut foreign = command("s3", Phase::Action, json!({}));
    foreign.contract = "ledger/v2".into();
    send(w.queue.as_ref(), "ledger", body(foreign)).await;
    let stats = w.stats.clone();
    eventually("the release", || stats.released_missing_contract.get() >= 1).await;
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 0);
    assert_eq!(w.stats.dead_lettered.get(), 0);
    let d = w.queue.depth("ledger").await.unwrap();
    assert_eq!(d.visible + d.in_flight, 1, "released, not lost nor dead-lettered");
    w.shutdown().await;
}

fn heartbeat_of(m: &sqsaga_queue::ReceivedMessage) -> Option<sqsaga_protocol::Heartbeat> {
    match Envelope::decode(&m.body) {
        Ok(Envelope::Heartbeat(h)) => Some(h),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_follows_the_conforming_sets_the_worker_is_sent() {
    let mut o = options();
    o.heartbeat_interval = Some(Duration::from_millis(200));
    o.host = "test-host".into();
    o.fingerprint_parts = json!({"version": "0.1.0"});
    let w = start(embedded(), o).await;
    let q = w.queue.as_ref();

    // Heartbeats start at once and carry what the fleet view needs.
    let first = collect(q, "orchestrator", 1).await;
    let hb = heartbeat_of(&first[0]).expect("a heartbeat");
    assert_eq!(
        (hb.service.as_str(), hb.instance.as_str(), hb.fingerprint.as_str()),
        ("ledger", "ledger-test-1", "fp-1")
    );
    assert_eq!(hb.host, "test-host");
    assert_eq!(hb.parts, json!({"version": "0.1.0"}));
    assert!(!hb.quarantined);

    // A stamp written before the orchestrator can have heard of this worker
    // does not quarantine it (but the command is still released).
    let mut old = command("s0", Phase::Action, json!({"amount": 1}));
    old.conforming = Some(vec!["fp-good".into()]);
    send(q, "ledger", body(old)).await;
    let stats = w.stats.clone();
    eventually("the release", || stats.refused_nonconforming.get() >= 1).await;
    // Two more heartbeats: the second was judged after the release.
    let sent = stats.heartbeats_sent.get();
    eventually("two heartbeats", || stats.heartbeats_sent.get() >= sent + 2).await;
    let hb = collect(q, "orchestrator", 1).await.iter().filter_map(heartbeat_of).next_back().expect("a heartbeat");
    assert!(!hb.quarantined, "an old stamp says nothing about this worker");
    assert_eq!(collect(q, "ledger", 1).await.len(), 1, "take the released command away");

    // A current stamp that excludes it: quarantined, reported in heartbeats.
    let mut excluded = command("s1", Phase::Action, json!({"amount": 1}));
    excluded.conforming = Some(vec!["fp-good".into()]);
    excluded.sent_at = now_ms() + 1_000;
    send(q, "ledger", body(excluded)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let hbs: Vec<_> = collect(q, "orchestrator", 1).await.iter().filter_map(heartbeat_of).collect();
        if hbs.iter().any(|h| h.quarantined) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never reported quarantined");
    }
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 0);
    assert_eq!(collect(q, "ledger", 1).await.len(), 1, "take the released command away");

    // A command that includes it: run, and quarantine ends by itself.
    let mut included = command("s2", Phase::Action, json!({"amount": 1}));
    included.conforming = Some(vec!["fp-good".into(), "fp-1".into()]);
    included.sent_at = now_ms() + 1_000;
    send(q, "ledger", body(included)).await;
    eventually("the run", || w.probes.action_calls.load(Ordering::SeqCst) == 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msgs = collect(q, "orchestrator", 1).await;
        if msgs.iter().filter_map(heartbeat_of).any(|h| !h.quarantined) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never left quarantine");
    }
    assert!(w.stats.heartbeats_sent.get() >= 3);
    w.shutdown().await;
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

// The tests below inject faults, which only the in-memory double can do.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_errors_are_retried_and_the_worker_keeps_going() {
    let q = MemoryQueue::new();
    q.fail_receives.store(3, Ordering::SeqCst);
    let w = start(memory(q.clone()), options()).await;
    let probe = q.clone();
    eventually("the worker to hit every failure", || probe.fail_receives.load(Ordering::SeqCst) == 0).await;
    send(w.queue.as_ref(), "ledger", body(command("s1", Phase::Action, json!({"amount": 1})))).await;
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reply_leaves_the_message_and_the_redelivery_is_answered_from_the_barrier() {
    let q = MemoryQueue::new();
    let mut o = options();
    o.visibility = Duration::from_millis(300);
    send(q.as_ref(), "ledger", body(command("s1", Phase::Action, json!({"amount": 4})))).await;
    // The first reply send fails: the message must stay for redelivery.
    q.fail_sends.store(1, Ordering::SeqCst);
    let w = start(memory(q.clone()), o).await;
    let replies = collect(w.queue.as_ref(), "orchestrator", 1).await;
    assert_eq!(replies.len(), 1);
    assert_eq!(reply_of(&replies[0]).outcome, Outcome::Succeeded { output: json!({"added": 4}) });
    let stats = w.stats.clone();
    eventually("the delete", || stats.processed.get() == 1).await;
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 1);
    assert_eq!(w.stats.duplicates.get(), 1);
    assert_eq!(w.stats.errors.get(), 1);
    assert_eq!(ledger_state(&w.participant).await, (4, 1));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_waited_past_its_latest_start_is_refused_unrun_and_so_is_its_redelivery() {
    let w = start(embedded(), options()).await;
    let q = w.queue.as_ref();
    let expired = sqsaga_protocol::Command { not_after: Some(1), ..command("s1", Phase::Action, json!({"amount": 5})) };
    send(q, "ledger", body(expired.clone())).await;
    let first = reply_of(&collect(q, "orchestrator", 1).await[0]);
    let Outcome::Refused { reason } = &first.outcome else { panic!("{first:?}") };
    assert!(reason.starts_with(sqsaga_core::machine::EXPIRED_IN_QUEUE), "{reason}");
    // Redelivered (a duplicate, or a sibling's copy): the barrier answers the same.
    send(q, "ledger", body(expired)).await;
    let again = reply_of(&collect(q, "orchestrator", 1).await[0]);
    assert_eq!(again.outcome, first.outcome);
    let stats = w.stats.clone();
    eventually("both deletes", || stats.processed.get() == 2).await;
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 0, "the handler never ran");
    assert_eq!(w.stats.expired.get(), 1);
    assert_eq!(ledger_state(&w.participant).await, (0, 0));
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_runs_however_late_it_arrives() {
    let w = start(embedded(), options()).await;
    let q = w.queue.as_ref();
    send(q, "ledger", body(command("s1", Phase::Action, json!({"amount": 5})))).await;
    collect(q, "orchestrator", 1).await;
    // Even a message that claims a latest start time long past.
    let late = sqsaga_protocol::Command { not_after: Some(1), ..command("s1", Phase::Compensation, json!({})) };
    send(q, "ledger", body(late)).await;
    let reply = reply_of(&collect(q, "orchestrator", 1).await[0]);
    assert_eq!(reply.outcome, Outcome::Succeeded { output: json!({"removed": 5}) });
    assert_eq!(w.stats.expired.get(), 0);
    assert_eq!(ledger_state(&w.participant).await, (0, 2));
    w.shutdown().await;
}

/// The worker judges lateness by its own clock (`WorkerOptions::clock`): a
/// command in time when sent is refused once that clock has passed its
/// latest start, with no waiting in the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lateness_is_judged_by_the_workers_clock() {
    let clock = Arc::new(sqsaga_core::clock::ManualClock::at(1_000_000));
    let w = start(embedded(), WorkerOptions { clock: clock.clone(), ..options() }).await;
    let q = w.queue.as_ref();
    let on_time =
        sqsaga_protocol::Command { not_after: Some(1_000_500), ..command("s1", Phase::Action, json!({"amount": 5})) };
    send(q, "ledger", body(on_time)).await;
    let reply = reply_of(&collect(q, "orchestrator", 1).await[0]);
    assert!(matches!(reply.outcome, Outcome::Succeeded { .. }), "{reply:?}");
    assert_eq!(reply.replied_at, 1_000_000, "replies carry the worker's clock");
    clock.advance(Duration::from_secs(1));
    let late =
        sqsaga_protocol::Command { not_after: Some(1_000_500), ..command("s2", Phase::Action, json!({"amount": 5})) };
    send(q, "ledger", body(late)).await;
    let reply = reply_of(&collect(q, "orchestrator", 1).await[0]);
    let Outcome::Refused { reason } = &reply.outcome else { panic!("{reply:?}") };
    assert!(reason.starts_with(sqsaga_core::machine::EXPIRED_IN_QUEUE), "{reason}");
    assert_eq!(w.probes.action_calls.load(Ordering::SeqCst), 1, "only the command in time ran");
    w.shutdown().await;
}
