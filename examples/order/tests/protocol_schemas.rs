//! What the Rust code sends, against the protocol's JSON Schemas
//! (`schema/protocol/`, specified in `docs/protocol.md`): the order saga
//! runs on the embedded backend with signing and heartbeats on, through a
//! queue that records every message sent or received — start requests, commands
//! (actions, compensations, maybe fences), replies (succeeded, refused,
//! transient), heartbeats, a resume and a dead-lettered copy — and every
//! body is validated against its schema, every attribute map against the
//! attribute schema, and every barrier row the participants wrote against
//! the barrier outcome schema.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_orchestrator::{ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues};
use sqsaga_order::{SERVICES, database_path, generate_orders, participants, seed_data};
use sqsaga_protocol::{Envelope, ResumeSaga, Signer, Signing};
use sqsaga_queue::{Depth, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage, dlq_name};
use sqsaga_worker::{Worker, WorkerOptions};
use tokio::sync::watch;

const ORDERS: usize = 40;
const SEED: u64 = 11;

/// The embedded queue, keeping a copy of every message sent through it.
struct Recording {
    inner: Arc<dyn Queue>,
    sent: Mutex<Vec<(String, OutgoingMessage)>>,
}

impl Recording {
    fn keep(&self, queue: &str, messages: &[OutgoingMessage]) {
        let mut sent = self.sent.lock().unwrap();
        sent.extend(messages.iter().map(|m| (queue.to_string(), m.clone())));
    }
}

#[async_trait]
impl Queue for Recording {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        self.inner.ensure(spec).await
    }
    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.keep(queue, &messages);
        self.inner.send_batch(queue, messages).await
    }
    /// Received messages are kept too: on the embedded backend the store
    /// writes commands straight into the queue table (the outbox), so they
    /// are never sent through this port.
    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        let received = self.inner.receive(queue, r).await?;
        let copies: Vec<OutgoingMessage> = received
            .iter()
            .map(|m| OutgoingMessage { body: m.body.clone(), attributes: m.attributes.clone(), delay: Duration::ZERO })
            .collect();
        self.keep(queue, &copies);
        Ok(received)
    }
    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        self.inner.delete_batch(queue, receipts).await
    }
    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.inner.change_visibility(queue, receipt, timeout).await
    }
    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        self.inner.depth(queue).await
    }
    async fn send_then_delete(
        &self,
        to: &str,
        messages: Vec<OutgoingMessage>,
        from: &str,
        receipts: &[String],
    ) -> Result<Vec<QueueError>, QueueError> {
        self.keep(to, &messages);
        self.inner.send_then_delete(to, messages, from, receipts).await
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../schema/protocol/{name}.schema.json"));
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::validator_for(&value).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every problem of `value` against schema `name`, one line each.
fn problems(name: &str, value: &Value) -> Vec<String> {
    schema(name).iter_errors(value).map(|e| format!("{name}: {e} at `{}` in {value}", e.instance_path())).collect()
}

fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// A short label of a body: its type, and for commands and replies what kind.
fn label(body: &Value) -> String {
    match body["type"].as_str() {
        Some("command") if body["command"] == "sqsaga.fence" => "command fence".into(),
        Some("command") => format!("command {}", body["phase"].as_str().unwrap_or("?")),
        Some("reply") => format!("reply {}", body["outcome"]["kind"].as_str().unwrap_or("?")),
        Some(kind) => kind.to_string(),
        None => "seed".to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_services_send_is_valid_against_the_protocol_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let (initial, inputs) = generate_orders(ORDERS, SEED);
    seed_data(dir.path(), &initial).unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Normal).unwrap();
    let recording = Arc::new(Recording { inner: backend.queue(), sent: Mutex::new(Vec::new()) });
    let queue: Arc<dyn Queue> = recording.clone();
    let store = backend.store();
    let defs = Arc::new(sqsaga_order::run::definitions().unwrap());
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
    let signing = Arc::new(Signing {
        signer: Signer::new(b"protocol-schema-test-key", None),
        max_age: Duration::from_secs(300),
        require: true,
    });

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let orchestrator = Orchestrator::new(
        defs,
        queue.clone(),
        store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            wait: Duration::from_millis(200),
            timer_interval: Duration::from_millis(50),
            signing: Some(signing.clone()),
            ..OrchestratorOptions::default()
        },
    );
    tasks.spawn(orchestrator.run(stopped(&stop_rx)));
    // Injected notification failures: transient replies, retries, and
    // (when every attempt fails) compensations.
    for (service, participant) in participants(dir.path(), Sync::Normal, 0.5, SEED).unwrap() {
        let options = WorkerOptions {
            wait: Duration::from_millis(200),
            signing: Some(signing.clone()),
            heartbeat_interval: Some(Duration::from_millis(100)),
            fingerprint: "f1e2d3c4".into(),
            host: "test-host".into(),
            ..WorkerOptions::new(service, &format!("{service}-0"))
        };
        let worker = Worker::new(options, queue.clone(), Arc::new(participant));
        let shutdown = stopped(&stop_rx);
        tasks.spawn(async move { worker.run(shutdown).await.unwrap() });
    }

    let sagas: Vec<(String, Value)> =
        inputs.into_iter().enumerate().map(|(i, input)| (format!("order-{i:05}"), input)).collect();
    let now = sqsaga_orchestrator::clock::now_ms();
    sqsaga_order::run::start_sagas(queue.as_ref(), &sagas, Some(&signing), now).await.unwrap();
    let ids: Vec<String> = sagas.iter().map(|(id, _)| id.clone()).collect();
    let since = Instant::now();
    while !sqsaga_order::run::wait_terminal(store.as_ref(), &ids, Duration::from_millis(100), |_| {}).await.unwrap() {
        assert!(since.elapsed() < Duration::from_secs(120), "sagas did not end");
    }
    // A resume (ignored: the saga ended) and a poison command, dead-lettered.
    let resume = Envelope::Resume(ResumeSaga { saga_id: ids[0].clone(), requested_at: now }).encode();
    queue.send(ORCHESTRATOR_QUEUE, sqsaga_runtime::sealing::seal(resume, Some(&signing), None)).await.unwrap();
    queue.send("inventory", OutgoingMessage::new("not json")).await.unwrap();
    while backend.queue().depth(&dlq_name("inventory")).await.unwrap().visible == 0 {
        assert!(since.elapsed() < Duration::from_secs(120), "poison message not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // a heartbeat or two more
    stop.send(true).unwrap();
    while let Some(task) = tasks.join_next().await {
        task.unwrap();
    }

    let sent = recording.sent.lock().unwrap().clone();
    let mut seen = BTreeSet::new();
    let mut all = Vec::new();
    for (queue, message) in &sent {
        let attributes = serde_json::to_value(&message.attributes).unwrap();
        all.extend(problems("attributes", &attributes));
        if queue.ends_with("-dlq") {
            seen.insert(format!("dead-lettered {}", message.attributes.contains_key("sqsaga-dlq-reason")));
        }
        if message.body == "not json" {
            seen.insert(format!("poison to {queue}"));
            continue;
        }
        let body: Value = serde_json::from_str(&message.body).unwrap();
        let kind = label(&body);
        all.extend(problems(body["type"].as_str().unwrap_or("seed"), &body));
        if message.attributes.contains_key(sqsaga_protocol::ATTR_SIGNATURE) {
            seen.insert(format!("{kind} signed"));
        }
        seen.insert(kind);
    }
    assert_eq!(all, Vec::<String>::new(), "{} messages checked", sent.len());
    for expected in [
        "start signed",
        "command action signed",
        "command compensation signed",
        "reply succeeded signed",
        "reply refused signed",
        "reply transient signed",
        "heartbeat signed",
        "resume signed",
        "poison to inventory",
        "dead-lettered true",
    ] {
        assert!(seen.contains(expected), "no `{expected}` among what was sent: {seen:?}");
    }

    // The barrier rows, as the participants wrote them.
    let barrier = schema("barrier-outcome");
    let mut rows = 0;
    for service in SERVICES {
        let db = rusqlite::Connection::open(database_path(dir.path(), service)).unwrap();
        let mut stmt = db.prepare("SELECT saga_id, step, op, outcome FROM sqsaga_barrier").unwrap();
        let found = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?))
            })
            .unwrap();
        for row in found {
            let (saga, step, op, outcome) = row.unwrap();
            let value: Value = serde_json::from_str(&outcome).unwrap();
            assert!(barrier.is_valid(&value), "{service}: barrier row ({saga}, {step}, {op}) = {outcome}");
            rows += 1;
        }
    }
    assert!(rows >= ORDERS, "only {rows} barrier rows");
}
