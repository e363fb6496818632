//! The kit's own test: the Rust reference participant of `conformance/v1`,
//! run as a real worker process would run it (`run_worker` on the embedded
//! backend), passes every case, signature cases included; and a participant
//! that skips the barrier fails the cases the barrier is for, so the kit
//! can fail.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_config::{Settings, Sources};
use sqsaga_conformance::{Verdict, contract, run_configured};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_protocol::{Envelope, ReplyMessage, WorkerInfo, WorkerMessage, decode_worker_message};
use sqsaga_queue::{OutgoingMessage, Queue, Receive};
use sqsaga_runtime::{CancellationToken, run_worker};

const SERVICE: &str = "conformance";

fn settings(dir: &std::path::Path, extra: &[(&str, &str)]) -> Settings {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("SQSAGA_DATA_DIR".into(), dir.display().to_string());
    env.insert("SQSAGA_SERVICE".into(), SERVICE.into());
    env.insert("SQSAGA_WAIT_TIME".into(), "1s".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Settings::resolve(&Sources::new(&env)).unwrap()
}

/// Runs the kit against the reference participant under `extra` settings.
async fn kit_against_reference(extra: &[(&str, &str)]) -> sqsaga_conformance::Report {
    // The worker's log goes to the test's output, shown when it fails.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), extra);
    let participant = contract::participant(&dir.path().join("conformance.db"), sqsaga_sqlite::Sync::Normal).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let mut worker = tokio::spawn(run_worker(settings.clone(), Arc::new(participant), listener, shutdown.clone(), 1));
    // A worker that stops early fails the test with its own error, not with
    // a kit waiting out every case.
    let report = tokio::select! {
        report = run_configured(&settings, SERVICE, Duration::from_secs(20)) => report.unwrap(),
        ended = &mut worker => panic!("the reference participant stopped before the kit was done: {ended:?}"),
    };
    shutdown.cancel();
    worker.await.unwrap().unwrap();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_participant_passes_every_case() {
    let report = kit_against_reference(&[]).await;
    assert!(report.passed(), "{}", report.table());
    let skipped: Vec<&str> =
        report.cases.iter().filter(|c| matches!(c.verdict, Verdict::Skip(_))).map(|c| c.name).collect();
    assert_eq!(skipped, ["signature: forged", "signature: stale", "signature: missing"], "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signatures_required_the_reference_participant_passes_the_signature_cases_too() {
    let report = kit_against_reference(&[
        ("SQSAGA_SIGNING_KEY", "conformance-self-test-key-0123456789abcdef"),
        ("SQSAGA_REQUIRE_SIGNATURE", "true"),
    ])
    .await;
    assert!(report.passed(), "{}", report.table());
    assert!(report.cases.iter().all(|c| c.verdict == Verdict::Pass), "{}", report.table());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_never_answers_costs_the_kit_two_timeouts_not_one_per_case() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &[]);
    let report = run_configured(&settings, SERVICE, Duration::from_secs(1)).await.unwrap();
    let first = &report.cases[0];
    assert!(
        matches!(&first.verdict, Verdict::Fail(why) if why.contains("no reply to") && why.contains("within 1s")),
        "{}",
        report.table()
    );
    for case in &report.cases[1..] {
        let not_run = matches!(
            &case.verdict,
            Verdict::Fail(why) if why.starts_with("not run: the participant stopped answering (no reply to")
        );
        let skipped = matches!(case.verdict, Verdict::Skip(_));
        assert!(not_run || skipped, "{}", report.table());
        assert_eq!(case.took, Duration::ZERO, "{}", report.table());
    }
}

/// A participant without a barrier: every command runs its handler on a
/// map and is answered `succeeded`, whatever came before.
async fn barrierless(queue: Arc<dyn Queue>, shutdown: CancellationToken) {
    let mut counters: BTreeMap<String, i64> = BTreeMap::new();
    while !shutdown.is_cancelled() {
        let batch = queue.receive(SERVICE, Receive::up_to(10).wait(Duration::from_millis(200))).await.unwrap();
        for m in batch {
            let Ok(WorkerMessage::Command(c)) = decode_worker_message(&m.body) else {
                queue.dead_letter(SERVICE, &m, "undecodable").await.unwrap();
                continue;
            };
            let input = &c.payload["input"];
            let key = input["key"].as_str().unwrap_or_default().to_string();
            let amount = input["amount"].as_i64().unwrap_or(0);
            let counter = counters.entry(key.clone()).or_default();
            match c.command.as_str() {
                contract::APPLY => *counter += amount,
                contract::UNDO => *counter -= amount,
                _ => {}
            }
            let output: Value = json!({"key": key, "value": *counter});
            let reply = ReplyMessage {
                command_id: c.command_id.clone(),
                saga_id: c.saga_id.clone(),
                step: c.step,
                phase: c.phase,
                attempt: c.attempt,
                outcome: Outcome::Succeeded { output: if c.phase == Phase::Action { output } else { Value::Null } },
                worker: WorkerInfo {
                    service: SERVICE.into(),
                    instance: "broken-1".into(),
                    fingerprint: "unknown".into(),
                },
                replied_at: 1,
            };
            let out = OutgoingMessage::new(Envelope::Reply(reply).encode());
            queue
                .send_then_delete(&c.reply_to, vec![out], SERVICE, std::slice::from_ref(&m.receipt_handle))
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_skips_the_barrier_fails_the_barrier_cases() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), &[]);
    let queue = sqsaga_runtime::open_backend(&settings).await.unwrap().queue;
    queue.ensure(&sqsaga_runtime::queue_spec(&settings, SERVICE)).await.unwrap();
    let shutdown = CancellationToken::new();
    let broken = tokio::spawn(barrierless(queue, shutdown.clone()));
    let report = run_configured(&settings, SERVICE, Duration::from_secs(3)).await.unwrap();
    shutdown.cancel();
    broken.await.unwrap();
    let failed = report.failed();
    for case in
        ["duplicate command", "compensation", "late action after compensation", "fence", "retries (transient failure)"]
    {
        assert!(failed.contains(&case), "`{case}` should fail:\n{}", report.table());
    }
    assert!(!report.passed());
    assert!(report.table().contains("FAIL"), "{}", report.table());
}
