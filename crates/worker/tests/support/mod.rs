//! Test helpers: a tiny in-memory `Queue` with SQS semantics (visibility,
//! receipts, receive counts, DLQ by `dead_letter`), a gate wrapper to hold a
//! receive open, and builders for participants and commands.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Transaction, params};
use serde_json::{Value, json};
use sqsaga_core::machine::Phase;
use sqsaga_protocol::{Command, Envelope};
use sqsaga_queue::{Depth, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_worker::{CommandContext, Handler, HandlerError, Participant};

struct Stored {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    receive_count: u32,
    visible_at: Instant,
    receipt: Option<String>,
}

/// In-memory queues; every name exists on first use.
#[derive(Default)]
pub struct MemoryQueue {
    queues: Mutex<HashMap<String, Vec<Stored>>>,
    next: AtomicU64,
    /// Receives that fail with `Unreachable` before the queue works again.
    pub fail_receives: AtomicU32,
    /// Sends that fail with `Unreachable` before sends work again.
    pub fail_sends: AtomicU32,
}

impl MemoryQueue {
    pub fn new() -> Arc<Self> {
        Arc::new(MemoryQueue::default())
    }

    fn id(&self) -> String {
        self.next.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// Bodies and attributes of everything in `queue`, visible or not.
    pub fn peek(&self, queue: &str) -> Vec<(String, BTreeMap<String, String>)> {
        let map = self.queues.lock().unwrap();
        map.get(queue).map(|q| q.iter().map(|m| (m.body.clone(), m.attributes.clone())).collect()).unwrap_or_default()
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        self.queues.lock().unwrap().entry(spec.name.clone()).or_default();
        Ok(())
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        if self.fail_sends.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(QueueError::Unreachable("injected send failure".into()));
        }
        let mut map = self.queues.lock().unwrap();
        let q = map.entry(queue.to_string()).or_default();
        for m in messages {
            q.push(Stored {
                id: self.id(),
                body: m.body,
                attributes: m.attributes,
                receive_count: 0,
                visible_at: Instant::now() + m.delay,
                receipt: None,
            });
        }
        Ok(())
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        if self.fail_receives.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
            return Err(QueueError::Unreachable("injected receive failure".into()));
        }
        let until = Instant::now() + r.wait;
        loop {
            let got = {
                let mut map = self.queues.lock().unwrap();
                let q = map.entry(queue.to_string()).or_default();
                let now = Instant::now();
                let mut got = Vec::new();
                for m in q.iter_mut().filter(|m| m.visible_at <= now).take(r.max) {
                    let receipt = format!("{}-{}", m.id, self.id());
                    m.receipt = Some(receipt.clone());
                    m.receive_count += 1;
                    m.visible_at = now + r.visibility.unwrap_or(Duration::from_secs(30));
                    got.push(ReceivedMessage {
                        message_id: m.id.clone(),
                        receipt_handle: receipt,
                        body: m.body.clone(),
                        attributes: m.attributes.clone(),
                        receive_count: m.receive_count,
                        sent_at: 0,
                    });
                }
                got
            };
            if !got.is_empty() || Instant::now() >= until {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        let mut map = self.queues.lock().unwrap();
        let q = map.entry(queue.to_string()).or_default();
        let mut failed = Vec::new();
        for r in receipts {
            match q.iter().position(|m| m.receipt.as_deref() == Some(r.as_str())) {
                Some(i) => {
                    q.remove(i);
                }
                None => failed.push(QueueError::StaleReceipt(r.clone())),
            }
        }
        Ok(failed)
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let mut map = self.queues.lock().unwrap();
        let q = map.entry(queue.to_string()).or_default();
        match q.iter_mut().find(|m| m.receipt.as_deref() == Some(receipt)) {
            Some(m) => {
                m.visible_at = Instant::now() + timeout;
                Ok(())
            }
            None => Err(QueueError::StaleReceipt(receipt.to_string())),
        }
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let map = self.queues.lock().unwrap();
        let now = Instant::now();
        let mut d = Depth::default();
        for m in map.get(queue).into_iter().flatten() {
            if m.visible_at > now && m.receipt.is_some() {
                d.in_flight += 1;
            } else if m.visible_at > now {
                d.delayed += 1;
            } else {
                d.visible += 1;
            }
        }
        Ok(d)
    }
}

/// Wraps a queue so that receives wait at a gate: `entered` is notified when
/// a receive starts waiting, and it proceeds once `open` is notified.
pub struct GatedQueue {
    pub inner: Arc<dyn Queue>,
    pub entered: tokio::sync::Notify,
    pub open: tokio::sync::Semaphore,
}

impl GatedQueue {
    pub fn new(inner: Arc<dyn Queue>) -> Arc<Self> {
        Arc::new(GatedQueue { inner, entered: tokio::sync::Notify::new(), open: tokio::sync::Semaphore::new(0) })
    }
}

#[async_trait]
impl Queue for GatedQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        self.inner.ensure(spec).await
    }
    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.inner.send_batch(queue, messages).await
    }
    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.entered.notify_one();
        let permit = self.open.acquire().await.map_err(|e| QueueError::Backend(e.to_string()))?;
        permit.forget();
        self.inner.receive(queue, r).await
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
}

/// Handler-call counters of a [`ledger`] participant.
#[derive(Default)]
pub struct Probes {
    /// Times `ledger.add` was called (committed or not).
    pub action_calls: AtomicU32,
    /// Times `ledger.undo` was called.
    pub compensation_calls: AtomicU32,
    /// Upcoming `ledger.add` calls that fail transiently (after writing).
    pub fail_next: AtomicU32,
}

/// A "ledger" participant: `ledger.add` adds `input.amount` to a counter row
/// and logs the run; `ledger.undo` subtracts what the action recorded.
/// `input.refuse` makes the action write, then refuse (the barrier must roll
/// the write back); `input.sleep_ms` makes it slow.
pub fn ledger(path: &Path) -> (Participant, Arc<Probes>) {
    let probes = Arc::new(Probes::default());
    let mut p = Participant::open_with_schema(
        path,
        sqsaga_sqlite::Sync::Normal,
        "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), total INTEGER NOT NULL);
         INSERT OR IGNORE INTO counter VALUES (1, 0);
         CREATE TABLE IF NOT EXISTS runs (n INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT, command TEXT);",
    )
    .unwrap();
    let action_probes = probes.clone();
    let compensation_probes = probes.clone();
    p.register(
        "ledger/v1",
        "ledger.add",
        Box::new(move |tx: &Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
            action_probes.action_calls.fetch_add(1, Ordering::SeqCst);
            let amount = ctx.input()["amount"].as_i64().unwrap_or(1);
            if let Some(ms) = ctx.input()["sleep_ms"].as_u64() {
                // A slow handler: holds the participant's writer, as real work would.
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            log_run(tx, ctx);
            tx.execute("UPDATE counter SET total = total + ?1 WHERE id = 1", params![amount]).unwrap();
            if ctx.input()["refuse"].as_bool() == Some(true) {
                return Err(HandlerError::Refused("ledger closed".into()));
            }
            if action_probes.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(HandlerError::Transient("ledger busy".into()));
            }
            Ok(json!({"added": amount}))
        }),
        Some((
            "ledger.undo",
            Box::new(move |tx: &Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
                compensation_probes.compensation_calls.fetch_add(1, Ordering::SeqCst);
                log_run(tx, ctx);
                let recorded = sqsaga_worker::sqlite::action_output(tx, &ctx.saga_id, &ctx.step)
                    .map_err(|e| HandlerError::Transient(e.to_string()))?;
                let amount = recorded.and_then(|o| o["added"].as_i64()).unwrap_or(0);
                tx.execute("UPDATE counter SET total = total - ?1 WHERE id = 1", params![amount]).unwrap();
                Ok(json!({"removed": amount}))
            }) as Box<dyn Handler>,
        )),
    );
    (p, probes)
}

fn log_run(tx: &Transaction<'_>, ctx: &CommandContext) {
    tx.execute("INSERT INTO runs (saga_id, command) VALUES (?1, ?2)", params![ctx.saga_id, ctx.command]).unwrap();
}

/// Total of the ledger counter and how many times handlers ran (committed).
pub async fn ledger_state(p: &Participant) -> (i64, i64) {
    p.query(|tx| {
        let total: i64 = tx.query_row("SELECT total FROM counter WHERE id = 1", [], |r| r.get(0))?;
        let runs: i64 = tx.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?;
        Ok((total, runs))
    })
    .await
    .unwrap()
}

/// A context for the ledger participant.
pub fn ctx(saga: &str, phase: Phase, input: Value) -> CommandContext {
    CommandContext {
        saga_id: saga.to_string(),
        step: "add".to_string(),
        command: match phase {
            Phase::Action => "ledger.add",
            Phase::Compensation => "ledger.undo",
        }
        .to_string(),
        phase,
        attempt: 1,
        payload: json!({"input": input, "outputs": {}}),
        not_after: None,
        sent_at: None,
    }
}

/// A wire command for the ledger participant, replying to `orchestrator`.
pub fn command(saga: &str, phase: Phase, input: Value) -> Command {
    let (command, letter) = match phase {
        Phase::Action => ("ledger.add", 'a'),
        Phase::Compensation => ("ledger.undo", 'c'),
    };
    Command {
        command_id: format!("{saga}:0:{letter}:1"),
        saga_id: saga.to_string(),
        saga: "test".to_string(),
        version: 1,
        step: 0,
        step_name: "add".to_string(),
        command: command.to_string(),
        phase,
        attempt: 1,
        contract: "ledger/v1".to_string(),
        payload: json!({"input": input, "outputs": {}}),
        deadline: u64::MAX,
        not_after: None,
        sent_at: 0,
        reply_to: "orchestrator".to_string(),
        conforming: None,
    }
}

pub fn body(c: Command) -> String {
    Envelope::Command(c).encode()
}
