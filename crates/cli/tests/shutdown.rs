//! Graceful shutdown of a real `sqsaga worker` process. SIGTERM while a slow
//! step runs: the step must finish, be replied to and deleted; the worker
//! stops receiving at once (an idle long poll is dropped), so what arrives
//! afterwards stays on the queue for a sibling; and the process exits 0
//! within its drain budget. SIGTERM to an idle worker: it exits within a
//! second, not after its 20 s long poll.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::time::{Duration, Instant};

use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_protocol::Envelope;
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive};
use support::{Proc, eventually, reserve, stock};

/// How long each handler sleeps: long enough to signal mid-step.
const STEP: Duration = Duration::from_secs(3);
/// The worker's drain budget; the process must exit well within it.
const DRAIN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_step_finishes_the_step_releases_the_rest_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stock(&data, "A", 10);
    let data_arg = data.display().to_string();
    let mut worker = Proc::spawn(
        &["worker", "--service", "inventory", "--data-dir", &data_arg, "--handler-delay", "3s"],
        &[
            // Two pollers: one runs the slow step, the other sits in a long
            // poll when the signal comes.
            ("SQSAGA_CONCURRENCY", "2"),
            ("SQSAGA_WAIT_TIME", "15s"),
            // Long, so "visible again at once" cannot be the timeout expiring.
            ("SQSAGA_VISIBILITY_TIMEOUT", "120s"),
            ("SQSAGA_DRAIN_TIMEOUT", "20s"),
        ],
    );
    let addr = worker.http_addr();
    eventually("the worker to be ready", Duration::from_secs(30), || support::get(addr, "/readyz").status == 200);

    let backend = EmbeddedBackend::open(&data, Sync::Full).unwrap();
    let queue = backend.queue();
    // Replies go to the orchestrator's queue, which the orchestrator creates.
    queue.ensure(&QueueSpec::named("orchestrator")).await.unwrap();
    queue.send("inventory", OutgoingMessage::new(reserve("slow", "A"))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let d = queue.depth("inventory").await.unwrap();
        if d.in_flight == 1 && d.visible == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never took the command; logs:\n{}", worker.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-step: the handler sleeps for STEP.
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.sigterm();
    let signalled = Instant::now();
    // Two more commands arrive while the worker drains: its idle poller
    // stopped receiving at the signal, so it never takes them.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = vec![OutgoingMessage::new(reserve("late-1", "A")), OutgoingMessage::new(reserve("late-2", "A"))];
    queue.send_batch("inventory", late).await.unwrap();

    let status = worker.wait_exit(DRAIN + Duration::from_secs(10));
    let took = signalled.elapsed();
    let logs = worker.logs();
    let Some(status) = status else { panic!("the worker did not exit within its budget; logs:\n{logs}") };
    assert_eq!(status.code(), Some(0), "exit status {status}; logs:\n{logs}");
    assert!(took < DRAIN, "exit took {took:?}");
    // Signalled about 0.5 s into a 3 s step: exiting sooner than 1 s would
    // mean it did not wait for the step.
    assert!(took >= STEP / 3, "exit after {took:?}: it did not wait for the step");

    // The slow step completed and was acknowledged: its reply is on the
    // orchestrator queue and its command is gone.
    let replies = queue.receive("orchestrator", Receive::up_to(10)).await.unwrap();
    let ids: Vec<String> = replies
        .iter()
        .map(|m| match Envelope::decode(&m.body) {
            Ok(Envelope::Reply(r)) => r.command_id,
            other => panic!("not a reply: {other:?}"),
        })
        .collect();
    assert_eq!(ids, vec!["slow:0:a:1".to_string()], "logs:\n{logs}");

    // The late ones are visible (not in flight for 120 s), were never
    // received by the stopping worker, and never ran.
    let d = queue.depth("inventory").await.unwrap();
    assert_eq!((d.visible, d.in_flight), (2, 0), "logs:\n{logs}");
    let again = queue.receive("inventory", Receive::up_to(10)).await.unwrap();
    let mut bodies: Vec<(String, u32)> = again
        .iter()
        .map(|m| match Envelope::decode(&m.body) {
            Ok(Envelope::Command(c)) => (c.saga_id, m.receive_count),
            other => panic!("not a command: {other:?}"),
        })
        .collect();
    bodies.sort();
    assert_eq!(bodies, vec![("late-1".to_string(), 1), ("late-2".to_string(), 1)]);
    assert!(logs.contains("Worker exited cleanly."), "logs:\n{logs}");
}

/// An idle worker sits in a 20 s long poll; SIGTERM must not wait it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_exits_within_a_second_of_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stock(&data, "A", 1);
    let data_arg = data.display().to_string();
    let mut worker = Proc::spawn(
        &["worker", "--service", "inventory", "--data-dir", &data_arg],
        &[("SQSAGA_CONCURRENCY", "4"), ("SQSAGA_WAIT_TIME", "20s")],
    );
    let addr = worker.http_addr();
    eventually("the worker to be ready", Duration::from_secs(30), || support::get(addr, "/readyz").status == 200);
    // Ready means the pollers started: each is in its 20 s long poll.
    worker.sigterm();
    let signalled = Instant::now();
    let status = worker.wait_exit(Duration::from_secs(10));
    let took = signalled.elapsed();
    let logs = worker.logs();
    let Some(status) = status else { panic!("the idle worker did not exit; logs:\n{logs}") };
    assert_eq!(status.code(), Some(0), "exit status {status}; logs:\n{logs}");
    assert!(took < Duration::from_secs(1), "an idle worker took {took:?} to exit; logs:\n{logs}");
}
