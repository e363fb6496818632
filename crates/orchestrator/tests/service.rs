//! The orchestrator service against the real embedded backend: two replicas
//! on one store never lose an update nor emit a transition twice; poison
//! messages are dead-lettered with a reason; timers fire from the store.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqsaga_core::machine::{Outcome, SagaStatus};
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_orchestrator::{
    Definitions, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues,
};
use sqsaga_protocol::{Envelope, ReplyMessage, StartSaga, WorkerInfo};
use sqsaga_queue::{ATTR_REASON, OutgoingMessage, Queue, QueueSpec, Receive, dlq_name};
use sqsaga_store::SagaStore;

/// Each step's reply timer strikes 800 ms after dispatch: 400 ms of queue
/// wait allowed, then 400 ms of run time.
const SAGA: &str = r#"
name: pair
version: 1
deadline: 1m
input: { type: object }
steps:
  - name: first
    service: alpha
    action: alpha.do
    compensation: alpha.undo
    contract: alpha/v1
    queueTimeout: 400ms
    timeout: 400ms
  - name: second
    service: beta
    action: beta.do
    compensation: beta.undo
    contract: beta/v1
    queueTimeout: 400ms
    timeout: 400ms
"#;

struct Setup {
    _dir: tempfile::TempDir,
    backend: EmbeddedBackend,
    queue: Arc<dyn Queue>,
    store: Arc<dyn SagaStore>,
    defs: Arc<Definitions>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(SAGA).unwrap(), "test").unwrap();
    let defs = Arc::new(defs);
    let queue: Arc<dyn Queue> = backend.queue();
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
    Setup { _dir: dir, queue, store: backend.store(), defs, backend }
}

fn orchestrator(s: &Setup) -> Orchestrator {
    Orchestrator::new(
        s.defs.clone(),
        s.queue.clone(),
        s.store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            pollers: 3,
            wait: Duration::from_millis(200),
            timer_interval: Duration::from_millis(50),
            ..OrchestratorOptions::default()
        },
    )
}

async fn start(queue: &dyn Queue, ids: &[String]) {
    for chunk in ids.chunks(10) {
        let batch = chunk
            .iter()
            .map(|id| {
                OutgoingMessage::new(
                    Envelope::Start(StartSaga {
                        saga_id: id.clone(),
                        saga: "pair".into(),
                        version: None,
                        input: json!({}),
                        requested_at: 0,
                    })
                    .encode(),
                )
            })
            .collect();
        queue.send_batch(ORCHESTRATOR_QUEUE, batch).await.unwrap();
    }
}

/// A scripted worker for `service`: answers every command with `outcome`,
/// counting how often each command id arrived.
async fn answer(queue: &dyn Queue, service: &str, seen: &mut HashMap<String, u32>, outcome: Outcome) -> usize {
    answer_if(queue, service, seen, outcome, |_| true).await
}

/// Like [`answer`], but commands for which `reply` is false are consumed
/// silently (a worker that never answers them).
async fn answer_if(
    queue: &dyn Queue,
    service: &str,
    seen: &mut HashMap<String, u32>,
    outcome: Outcome,
    reply: impl Fn(&sqsaga_protocol::Command) -> bool,
) -> usize {
    let got = queue.receive(service, Receive::up_to(10).wait(Duration::from_millis(100))).await.unwrap();
    let mut replies = Vec::new();
    for m in &got {
        let Ok(Envelope::Command(c)) = Envelope::decode(&m.body) else { panic!("not a command: {}", m.body) };
        *seen.entry(c.command_id.clone()).or_default() += 1;
        if !reply(&c) {
            continue;
        }
        replies.push(OutgoingMessage::new(
            Envelope::Reply(ReplyMessage {
                command_id: c.command_id,
                saga_id: c.saga_id,
                step: c.step,
                phase: c.phase,
                attempt: c.attempt,
                outcome: outcome.clone(),
                worker: WorkerInfo { service: service.into(), instance: "test-1".into(), fingerprint: "f".into() },
                replied_at: 0,
            })
            .encode(),
        ));
    }
    if !replies.is_empty() {
        queue.send_batch(ORCHESTRATOR_QUEUE, replies).await.unwrap();
    }
    if !got.is_empty() {
        let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
        queue.delete_batch(service, &receipts).await.unwrap();
    }
    got.len()
}

async fn wait_terminal(store: &dyn SagaStore, ids: &[String], budget: Duration) {
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let records = store.load(ids).await.unwrap();
        if records.len() == ids.len() && records.iter().all(|r| r.instance.status.is_terminal()) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "sagas not finished in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_lose_no_update_and_emit_each_transition_once() {
    let s = setup().await;
    let (tx, rx) = tokio::sync::watch::channel(false);
    for _ in 0..2 {
        let o = orchestrator(&s);
        let mut rx = rx.clone();
        tokio::spawn(async move {
            o.run(async move {
                let _ = rx.changed().await;
            })
            .await
        });
    }
    let ids: Vec<String> = (0..60).map(|i| format!("saga-{i}")).collect();
    // Duplicate start requests for every saga: the second is ignored.
    start(s.queue.as_ref(), &ids).await;
    start(s.queue.as_ref(), &ids).await;
    let mut seen = HashMap::new();
    let ok = Outcome::Succeeded { output: json!({"ok": true}) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 120 && tokio::time::Instant::now() < deadline {
        answer(s.queue.as_ref(), "alpha", &mut seen, ok.clone()).await;
        answer(s.queue.as_ref(), "beta", &mut seen, ok.clone()).await;
    }
    wait_terminal(s.store.as_ref(), &ids, Duration::from_secs(10)).await;
    let _ = tx.send(true);
    assert_eq!(seen.len(), 120, "one action per step per saga");
    assert!(seen.values().all(|n| *n == 1), "a command was emitted twice: {seen:?}");
    for r in s.store.load(&ids).await.unwrap() {
        assert_eq!(r.instance.status, SagaStatus::Completed);
        let history = s.store.history(&r.instance.id).await.unwrap();
        let events: Vec<&str> = history.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(events, ["start", "reply", "reply"], "{}: {history:?}", r.instance.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_timeout_fires_from_the_store_and_compensates() {
    let s = setup().await;
    let o = orchestrator(&s);
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        o.run(async move {
            let _ = rx.changed().await;
        })
        .await
    });
    let ids = vec!["slow".to_string()];
    start(s.queue.as_ref(), &ids).await;
    let mut seen = HashMap::new();
    let ok = Outcome::Succeeded { output: json!({}) };
    // alpha answers; beta never answers its action, so the 800 ms timeout
    // compensates both steps (beta's too: it may have run).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        answer(s.queue.as_ref(), "alpha", &mut seen, ok.clone()).await;
        answer_if(s.queue.as_ref(), "beta", &mut seen, ok.clone(), |c| {
            c.phase == sqsaga_core::machine::Phase::Compensation
        })
        .await;
        let r = s.store.load(&ids).await.unwrap();
        if r.first().is_some_and(|r| r.instance.status == SagaStatus::Compensated) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no compensation: {r:?}");
    }
    let _ = tx.send(true);
    let mut ids: Vec<&String> = seen.keys().collect();
    ids.sort();
    // Each sent once: alpha's action, beta's action (no reply), beta's
    // compensation (possibly done), then alpha's compensation.
    assert_eq!(ids, ["slow:0:a:1", "slow:0:c:1", "slow:1:a:1", "slow:1:c:1"]);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_with_a_reason() {
    let s = setup().await;
    let o = orchestrator(&s);
    let bodies = [
        "not json at all".to_string(),
        Envelope::Start(StartSaga {
            saga_id: "x".into(),
            saga: "no_such_saga".into(),
            version: None,
            input: json!({}),
            requested_at: 0,
        })
        .encode(),
        Envelope::Start(StartSaga {
            saga_id: "y".into(),
            saga: "pair".into(),
            version: None,
            input: json!([1, 2]),
            requested_at: 0,
        })
        .encode(),
        Envelope::Reply(ReplyMessage {
            command_id: "ghost:0:a:1".into(),
            saga_id: "ghost".into(),
            step: 0,
            phase: sqsaga_core::machine::Phase::Action,
            attempt: 1,
            outcome: Outcome::Succeeded { output: json!({}) },
            worker: WorkerInfo { service: "alpha".into(), instance: "i".into(), fingerprint: "f".into() },
            replied_at: 0,
        })
        .encode(),
    ];
    for b in &bodies {
        s.queue.send(ORCHESTRATOR_QUEUE, OutgoingMessage::new(b.clone())).await.unwrap();
    }
    let got = s.queue.receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap();
    assert_eq!(got.len(), 4);
    o.handle_messages(got).await;
    let dead = s.queue.receive(&dlq_name(ORCHESTRATOR_QUEUE), Receive::up_to(10)).await.unwrap();
    let mut reasons: Vec<String> = dead.iter().map(|m| m.attributes[ATTR_REASON].clone()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("input does not match pair v1's input schema")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("unknown saga `no_such_saga`")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("reply for unknown saga `ghost`")), "{reasons:?}");
    assert!(s.queue.receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap().is_empty());
}

/// On the embedded backend a received batch costs the orchestrator one
/// write job: the saga commit also deletes the messages it consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_applied_and_acknowledged_in_one_commit_job() {
    let s = setup().await;
    let (backend, queue) = (&s.backend, &s.queue);
    let ids: Vec<String> = (0..5).map(|i| format!("one-job-{i}")).collect();
    start(queue.as_ref(), &ids).await;
    let received = queue.receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap();
    assert_eq!(received.len(), 5);

    let jobs = backend.jobs();
    orchestrator(&s).handle_messages(received).await;
    assert_eq!(backend.jobs(), jobs + 1, "applying and acknowledging took more than one job");
    let orchestrator_queue = queue.depth(ORCHESTRATOR_QUEUE).await.unwrap();
    assert_eq!((orchestrator_queue.visible, orchestrator_queue.in_flight), (0, 0), "consumed messages are left");
    assert_eq!(queue.depth("alpha").await.unwrap().visible, 5);
    assert_eq!(s.store.load(&ids).await.unwrap().len(), 5);
}

/// Admission control: with room for 4 sagas in flight, 10 start requests
/// create 4 sagas and hold 6 (not created, so no deadline runs); each
/// finished saga lets a held one in, and all 10 complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_requests_over_the_admission_limit_wait_uncreated_until_a_slot_frees() {
    let s = setup().await;
    let o = Orchestrator::new(
        s.defs.clone(),
        s.queue.clone(),
        s.store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            pollers: 2,
            wait: Duration::from_millis(200),
            timer_interval: Duration::from_millis(50),
            max_in_flight: Some(4),
            ..OrchestratorOptions::default()
        },
    );
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let running = o.clone();
    tokio::spawn(async move {
        running
            .run(async move {
                let _ = rx.changed().await;
            })
            .await
    });
    let ids: Vec<String> = (0..10).map(|i| format!("admit-{i}")).collect();
    start(s.queue.as_ref(), &ids).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while o.held() < 6 {
        assert!(tokio::time::Instant::now() < deadline, "6 start requests never held (held {})", o.held());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.store.load(&ids).await.unwrap().len(), 4, "only 4 sagas are created");
    assert_eq!(o.in_flight().get("pair"), Some(&4));
    let mut seen = HashMap::new();
    let ok = Outcome::Succeeded { output: json!({}) };
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let records = s.store.load(&ids).await.unwrap();
        let in_flight = records.iter().filter(|r| !r.instance.status.is_terminal()).count();
        most = most.max(in_flight);
        if records.len() == ids.len() && in_flight == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "sagas not finished in time");
        answer(s.queue.as_ref(), "alpha", &mut seen, ok.clone()).await;
        answer(s.queue.as_ref(), "beta", &mut seen, ok.clone()).await;
    }
    let _ = tx.send(true);
    assert!(most <= 4, "{most} sagas were in flight at once");
    for r in s.store.load(&ids).await.unwrap() {
        assert_eq!(r.instance.status, SagaStatus::Completed, "{}", r.instance.id);
    }
    assert_eq!(o.held(), 0);
    assert_eq!(o.in_flight().get("pair"), Some(&0));
    assert!(o.stats().starts_held.get() >= 6);
    let d = s.queue.depth(ORCHESTRATOR_QUEUE).await.unwrap();
    assert_eq!((d.visible, d.in_flight), (0, 0), "every start request was consumed");
}
