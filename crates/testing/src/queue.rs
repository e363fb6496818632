//! `MemoryQueue`: the `Queue` port in memory, on an injected [`Clock`], for
//! the harness, the simulator and any test that must not sleep. It passes the queue
//! contract suite (`sqsaga_queue::contract`), so what the simulator finds
//! holds of a queue with SQS's semantics: at-least-once, receipts that go
//! stale, visibility timeouts, delays, a redrive policy to the DLQ.
//!
//! Which visible messages a receive returns is decided by a seeded random
//! source (SQS promises no order), so a simulation seed also fixes the
//! reordering. Every accepted send is kept in a log ([`MemoryQueue::sent`]),
//! which the simulator's outbox check reads: a command is lost if its saga
//! dispatched it and no send carried it, invented if a send carried one no
//! saga dispatched.
//!
//! Long polls wait on tokio's timer (instant under paused time); the
//! harness and the simulator never long-poll: they decide when a process
//! receives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;
use sqsaga_queue::{
    ATTR_REASON, ATTR_SOURCE, Depth, MAX_BATCH, OutgoingMessage, Queue, QueueError, QueueSpec, Receive,
    ReceivedMessage, dlq_name,
};

/// How often a long poll looks again (tokio time).
const LONG_POLL_STEP: Duration = Duration::from_millis(50);

/// One stored message.
#[derive(Debug, Clone)]
struct Stored {
    id: String,
    body: String,
    attributes: BTreeMap<String, String>,
    sent_at: Millis,
    /// Not receivable before (delay, or visibility after a receive).
    visible_at: Millis,
    receive_count: u32,
    /// The receipt of the latest receive; older ones are stale.
    receipt: Option<String>,
}

#[derive(Debug)]
struct QueueState {
    spec: QueueSpec,
    messages: Vec<Stored>,
}

#[derive(Debug)]
struct State {
    queues: BTreeMap<String, QueueState>,
    /// Message ids and receipts are numbered, so a seed names the same ones.
    next_id: u64,
    /// Picks among visible messages.
    rng: StdRng,
    /// Every accepted send, `(queue, body)`, in order.
    sent: Vec<(String, String)>,
}

/// The in-memory queue. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct MemoryQueue {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl MemoryQueue {
    /// A queue on `clock` whose receives pick visible messages at random,
    /// seeded by `seed`.
    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> MemoryQueue {
        MemoryQueue {
            clock,
            state: Mutex::new(State {
                queues: BTreeMap::new(),
                next_id: 0,
                rng: StdRng::seed_from_u64(seed),
                sent: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every accepted send so far, `(queue, body)`, in order.
    pub fn sent(&self) -> Vec<(String, String)> {
        self.lock().sent.clone()
    }

    /// Messages in `queue` now (visible, in flight or delayed); 0 for a
    /// queue that does not exist.
    pub fn len(&self, queue: &str) -> usize {
        self.lock().queues.get(queue).map_or(0, |q| q.messages.len())
    }

    /// Whether every queue but the dead-letter queues is empty.
    pub fn is_drained(&self) -> bool {
        self.lock().queues.iter().filter(|(name, _)| !name.ends_with("-dlq")).all(|(_, q)| q.messages.is_empty())
    }

    /// Bodies in `queue` now, oldest first.
    pub fn bodies(&self, queue: &str) -> Vec<String> {
        self.lock().queues.get(queue).map(|q| q.messages.iter().map(|m| m.body.clone()).collect()).unwrap_or_default()
    }

    /// The earliest time a message of a non-DLQ queue becomes visible,
    /// if one is invisible now (for a driver that skips idle time).
    pub fn next_visible(&self) -> Option<Millis> {
        let now = self.clock.now();
        self.lock()
            .queues
            .iter()
            .filter(|(name, _)| !name.ends_with("-dlq"))
            .flat_map(|(_, q)| q.messages.iter().map(|m| m.visible_at))
            .filter(|&at| at > now)
            .min()
    }

    /// SQS delivers at least once: puts a copy of one message of `queue`
    /// (chosen by the queue's random source) back as a new message, as a
    /// duplicate delivery would. Returns the copied body.
    pub fn duplicate_one(&self, queue: &str) -> Option<String> {
        let now = self.clock.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        let q = state.queues.get_mut(queue)?;
        if q.messages.is_empty() {
            return None;
        }
        let pick = state.rng.random_range(0..q.messages.len());
        let original = q.messages[pick].clone();
        state.next_id += 1;
        let copy = Stored {
            id: format!("m{}", state.next_id),
            visible_at: now,
            receive_count: 0,
            receipt: None,
            ..original.clone()
        };
        q.messages.push(copy);
        state.sent.push((queue.to_string(), original.body.clone()));
        Some(original.body)
    }

    fn check_batch(n: usize) -> Result<(), QueueError> {
        if n > MAX_BATCH { Err(QueueError::BatchTooLarge(n)) } else { Ok(()) }
    }
}

fn millis(d: Duration) -> Millis {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl State {
    fn queue(&mut self, name: &str) -> Result<&mut QueueState, QueueError> {
        self.queues.get_mut(name).ok_or_else(|| QueueError::NoSuchQueue(name.to_string()))
    }

    /// Takes up to `max` visible messages of `name` at `now`, moving those
    /// past the redrive policy to the DLQ first.
    fn take(
        &mut self,
        name: &str,
        max: usize,
        visibility: Option<Duration>,
        now: Millis,
    ) -> Result<Vec<ReceivedMessage>, QueueError> {
        let q = self.queues.get_mut(name).ok_or_else(|| QueueError::NoSuchQueue(name.to_string()))?;
        let limit = q.spec.max_receive_count;
        let to_dlq = q.spec.with_dlq && limit > 0;
        let mut dead = Vec::new();
        if to_dlq {
            let (over, keep): (Vec<Stored>, Vec<Stored>) =
                q.messages.drain(..).partition(|m| m.visible_at <= now && m.receive_count >= limit);
            q.messages = keep;
            dead = over;
        }
        let visibility = millis(visibility.unwrap_or(q.spec.visibility_timeout));
        let mut candidates: Vec<usize> = (0..q.messages.len()).filter(|&i| q.messages[i].visible_at <= now).collect();
        candidates.shuffle(&mut self.rng);
        candidates.truncate(max);
        candidates.sort_unstable();
        let mut out = Vec::with_capacity(candidates.len());
        for i in candidates {
            self.next_id += 1;
            let m = &mut q.messages[i];
            m.receive_count += 1;
            m.visible_at = now.saturating_add(visibility);
            let receipt = format!("{}#r{}", m.id, self.next_id);
            m.receipt = Some(receipt.clone());
            out.push(ReceivedMessage {
                message_id: m.id.clone(),
                receipt_handle: receipt,
                body: m.body.clone(),
                attributes: m.attributes.clone(),
                receive_count: m.receive_count,
                sent_at: m.sent_at,
            });
        }
        if !dead.is_empty() {
            let dlq = dlq_name(name);
            let reason = format!("received more than maxReceiveCount ({limit}) times");
            if let Some(d) = self.queues.get_mut(&dlq) {
                for mut m in dead {
                    m.attributes.insert(ATTR_REASON.to_string(), reason.clone());
                    m.attributes.insert(ATTR_SOURCE.to_string(), name.to_string());
                    m.visible_at = now;
                    m.receive_count = 0;
                    m.receipt = None;
                    d.messages.push(m);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        let mut state = self.lock();
        if spec.with_dlq {
            let dlq = QueueSpec { name: dlq_name(&spec.name), max_receive_count: 0, with_dlq: false, ..spec.clone() };
            state.queues.entry(dlq.name.clone()).or_insert(QueueState { spec: dlq, messages: Vec::new() });
        }
        state.queues.entry(spec.name.clone()).or_insert(QueueState { spec: spec.clone(), messages: Vec::new() });
        Ok(())
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        MemoryQueue::check_batch(messages.len())?;
        for m in &messages {
            m.check()?;
        }
        let now = self.clock.now();
        let mut guard = self.lock();
        let state = &mut *guard;
        state.queue(queue)?;
        for m in messages {
            state.next_id += 1;
            let stored = Stored {
                id: format!("m{}", state.next_id),
                body: m.body.clone(),
                attributes: m.attributes,
                sent_at: now,
                visible_at: now.saturating_add(millis(m.delay)),
                receive_count: 0,
                receipt: None,
            };
            state.sent.push((queue.to_string(), m.body));
            if let Some(q) = state.queues.get_mut(queue) {
                q.messages.push(stored);
            }
        }
        Ok(())
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        if r.max == 0 || r.max > MAX_BATCH {
            return Err(QueueError::Invalid(format!("receive of {} messages: must be 1 to 10", r.max)));
        }
        let deadline = tokio::time::Instant::now() + r.wait;
        loop {
            let got = {
                let now = self.clock.now();
                self.lock().take(queue, r.max, r.visibility, now)?
            };
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::time::sleep(left.min(LONG_POLL_STEP)).await;
        }
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        MemoryQueue::check_batch(receipts.len())?;
        let mut state = self.lock();
        let q = state.queue(queue)?;
        let mut failed = Vec::new();
        for receipt in receipts {
            match q.messages.iter().position(|m| m.receipt.as_deref() == Some(receipt.as_str())) {
                Some(i) => {
                    q.messages.remove(i);
                }
                None => {
                    let id = receipt.split('#').next().unwrap_or_default();
                    // A message received again has a newer receipt; a deleted
                    // one is gone, which SQS does not report.
                    if q.messages.iter().any(|m| m.id == id) {
                        failed.push(QueueError::StaleReceipt(receipt.clone()));
                    }
                }
            }
        }
        Ok(failed)
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let q = state.queue(queue)?;
        match q.messages.iter_mut().find(|m| m.receipt.as_deref() == Some(receipt)) {
            Some(m) => {
                m.visible_at = now.saturating_add(millis(timeout));
                Ok(())
            }
            None => Err(QueueError::StaleReceipt(receipt.to_string())),
        }
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let now = self.clock.now();
        let mut state = self.lock();
        let q = state.queue(queue)?;
        let mut d = Depth::default();
        for m in &q.messages {
            if m.visible_at <= now {
                d.visible += 1;
            } else if m.receive_count > 0 {
                d.in_flight += 1;
            } else {
                d.delayed += 1;
            }
        }
        Ok(d)
    }
}
