//! The orchestrator's side of message signing and trace context, against the
//! real embedded (SQLite) queue and store: start requests and replies are
//! verified before they touch a saga (unsigned when required, forged and
//! stale ones are dead-lettered with the reason), the previous key still
//! verifies during a rotation, and the saga keeps its start request's trace,
//! which every command carries with a span id of its own, signed.
#![allow(clippy::unwrap_used, reason = "test helpers unwrap; a failure is the test failing")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqsaga_core::machine::{Outcome, Phase, SagaStatus};
use sqsaga_orchestrator::clock::now_ms;
use sqsaga_orchestrator::{
    Definitions, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues,
};
use sqsaga_protocol::{
    ATTR_DLQ_REASON, ATTR_SIGNATURE, ATTR_TRACEPARENT, Command, Envelope, ReplyMessage, Signer, Signing, StartSaga,
    TraceParent, Verified, WorkerInfo,
};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive, ReceivedMessage, dlq_name};
use sqsaga_store::SagaStore;

const ORDER: &str = include_str!("../../../examples/order/create_order.yaml");
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-current";
const OLD: &[u8] = b"fedcba9876543210fedcba9876543210-previous";
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const MAX_AGE: Duration = Duration::from_secs(300);

/// An orchestrator whose loops are not running: tests feed it with [`Setup::pump`].
struct Setup {
    orchestrator: Orchestrator,
    queue: Arc<dyn Queue>,
    store: Arc<dyn SagaStore>,
    _dir: tempfile::TempDir,
}

async fn setup(signing: Signing) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let backend = sqsaga_embedded::EmbeddedBackend::open(dir.path(), sqsaga_embedded::Sync::Full).unwrap();
    let queue: Arc<dyn Queue> = backend.queue();
    let store: Arc<dyn SagaStore> = backend.store();
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(ORDER).unwrap(), "create_order.yaml").unwrap();
    let defs = Arc::new(defs);
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
    let options = OrchestratorOptions { signing: Some(Arc::new(signing)), ..OrchestratorOptions::default() };
    let orchestrator = Orchestrator::new(defs, queue.clone(), store.clone(), Arc::new(SystemClock), options);
    Setup { orchestrator, queue, store, _dir: dir }
}

fn policy(previous: Option<&[u8]>, require: bool) -> Signing {
    Signing { signer: Signer::new(KEY, previous), max_age: MAX_AGE, require }
}

impl Setup {
    /// Sends `message` to the orchestrator queue and has the orchestrator handle it.
    async fn pump(&self, message: OutgoingMessage) {
        self.queue.send(ORCHESTRATOR_QUEUE, message).await.unwrap();
        let got = self.queue.receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap();
        assert_eq!(got.len(), 1);
        self.orchestrator.handle_messages(got).await;
    }

    /// Everything in `queue` (received and deleted).
    async fn drain(&self, queue: &str) -> Vec<ReceivedMessage> {
        let got = self.queue.receive(queue, Receive::up_to(10)).await.unwrap();
        if !got.is_empty() {
            let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
            self.queue.delete_batch(queue, &receipts).await.unwrap();
        }
        got
    }

    /// The reasons recorded on the orchestrator's dead-lettered messages.
    async fn dead_reasons(&self) -> Vec<String> {
        let dead = self.drain(&dlq_name(ORCHESTRATOR_QUEUE)).await;
        dead.iter().map(|m| m.attributes.get(ATTR_DLQ_REASON).cloned().unwrap_or_default()).collect()
    }

    async fn status(&self, id: &str) -> Option<SagaStatus> {
        let records = self.store.load(&[id.to_string()]).await.unwrap();
        records.first().map(|r| r.instance.status)
    }
}

fn start_body(id: &str) -> String {
    Envelope::Start(StartSaga {
        saga_id: id.into(),
        saga: "create_order".into(),
        version: None,
        input: json!({"order_id": id, "sku": "A", "qty": 1, "account": "c1", "amount": 100}),
        requested_at: now_ms(),
    })
    .encode()
}

fn signed(body: String, signer: &Signer, at: u64) -> OutgoingMessage {
    let signature = signer.sign(&body, at);
    OutgoingMessage::new(body).with_attribute(ATTR_SIGNATURE, signature)
}

fn command_of(m: &ReceivedMessage) -> Command {
    match Envelope::decode(&m.body) {
        Ok(Envelope::Command(c)) => c,
        other => panic!("not a command: {other:?}"),
    }
}

fn reply_to(c: &Command) -> String {
    Envelope::Reply(ReplyMessage {
        command_id: c.command_id.clone(),
        saga_id: c.saga_id.clone(),
        step: c.step,
        phase: Phase::Action,
        attempt: c.attempt,
        outcome: Outcome::Succeeded { output: json!({"reserved": 1}) },
        worker: WorkerInfo { service: "inventory".into(), instance: "i-1".into(), fingerprint: "fp".into() },
        replied_at: now_ms(),
    })
    .encode()
}

/// Starts saga `id` with a signed, traced request; returns its first command.
async fn started(s: &Setup, id: &str) -> ReceivedMessage {
    let start = signed(start_body(id), &Signer::new(KEY, None), now_ms()).with_attribute(ATTR_TRACEPARENT, TRACE);
    s.pump(start).await;
    let commands = s.drain("inventory").await;
    assert_eq!(commands.len(), 1, "the first step's command");
    commands.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_start_keeps_its_trace_and_every_command_is_signed_and_traced() {
    let s = setup(policy(None, true)).await;
    let m = started(&s, "o-1").await;
    let record = s.store.load(&["o-1".to_string()]).await.unwrap().remove(0);
    assert_eq!(record.instance.trace.as_deref(), Some(TRACE), "the saga stores its start request's trace");

    let attr = m.attributes.get(ATTR_SIGNATURE).map(String::as_str);
    let worker = Signer::new(KEY, None);
    assert_eq!(worker.verify(&m.body, attr, now_ms(), MAX_AGE, true), Ok(Verified::Current));
    let tp = TraceParent::parse(m.attributes.get(ATTR_TRACEPARENT).unwrap()).unwrap();
    let sent = TraceParent::parse(TRACE).unwrap();
    assert_eq!(tp.trace_id(), sent.trace_id());
    assert_ne!(tp.span_id(), sent.span_id(), "each command has a span id of its own");

    // The next command carries the same trace.
    s.pump(signed(reply_to(&command_of(&m)), &worker, now_ms())).await;
    let next = s.drain("payment").await;
    assert_eq!(next.len(), 1);
    let tp2 = TraceParent::parse(next[0].attributes.get(ATTR_TRACEPARENT).unwrap()).unwrap();
    assert_eq!(tp2.trace_id(), sent.trace_id());
    assert_ne!(tp2.span_id(), tp.span_id());
    assert!(s.dead_reasons().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_a_traceparent_gets_a_stable_derived_trace() {
    let s = setup(policy(None, false)).await;
    s.pump(OutgoingMessage::new(start_body("o-9"))).await;
    let commands = s.drain("inventory").await;
    assert_eq!(commands.len(), 1, "unsigned accepted while signatures are not required");
    let tp = TraceParent::parse(commands[0].attributes.get(ATTR_TRACEPARENT).unwrap()).unwrap();
    assert_eq!(tp.trace_id(), TraceParent::derived("o-9").trace_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_start_is_dead_lettered_when_signatures_are_required() {
    let s = setup(policy(None, true)).await;
    s.pump(OutgoingMessage::new(start_body("o-2"))).await;
    let reasons = s.dead_reasons().await;
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].starts_with("signature check failed: unsigned message"), "{reasons:?}");
    assert_eq!(s.status("o-2").await, None, "no saga was created");
    assert!(s.drain("inventory").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_replies_are_dead_lettered_and_change_nothing() {
    let s = setup(policy(None, true)).await;
    let c = command_of(&started(&s, "o-3").await);
    let key = Signer::new(KEY, None);

    let mut forged = signed(reply_to(&c), &key, now_ms());
    forged.body = forged.body.replace("\"reserved\":1", "\"reserved\":99");
    s.pump(forged).await;
    s.pump(signed(reply_to(&c), &key, now_ms() - 3_600_000)).await;

    let reasons = s.dead_reasons().await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("forged or altered message")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("stale signature")), "{reasons:?}");
    assert!(s.drain("payment").await.is_empty(), "the saga did not advance");
    let record = s.store.load(&["o-3".to_string()]).await.unwrap().remove(0);
    assert_eq!(record.instance.current, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_signed_with_the_previous_key_is_applied_during_a_rotation() {
    let s = setup(policy(Some(OLD), true)).await;
    let c = command_of(&started(&s, "o-4").await);
    s.pump(signed(reply_to(&c), &Signer::new(OLD, None), now_ms())).await;
    assert!(s.dead_reasons().await.is_empty());
    assert_eq!(s.drain("payment").await.len(), 1, "the saga advanced to the next step");
}
