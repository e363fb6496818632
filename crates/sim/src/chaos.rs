//! The fault plan: one seeded random source that decides, at every point
//! where a real process could die or a real dependency could fail, whether
//! it does — and the process wrappers that consult it: [`FaultyQueue`] and
//! [`FaultyStore`] put a process's queue and store calls behind it; the
//! participant database (`participant.rs`) does the same for its commits.
//!
//! A crash marks the process dead: every later call it makes fails, so
//! nothing it would have done after the crash point takes effect, until the
//! simulator restarts it (a new orchestrator or worker over the same
//! queues, store and database, with nothing of the dead one's memory).
//! A transient error fails one call and nothing else.
//!
//! Crash points: before and after a store commit, before a send (a reply,
//! an outbox), before a delete, before and after a participant's local
//! commit. Everything is decided in call order, which is deterministic in
//! one thread, so a seed replays the same faults.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqsaga_core::Millis;
use sqsaga_queue::{Depth, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_store::{
    HistoryEntry, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError, UnitOfWork, UnitOutcome,
    WriteOutcome,
};

use crate::trace::Trace;

/// How often each fault happens, per opportunity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// A process dies at a crash point.
    pub crash: f64,
    /// A call fails transiently (unreachable, throttled, a busy database).
    pub transient: f64,
    /// A saga write loses a race to another replica's (the store reports
    /// a revision conflict; the orchestrator re-reads and re-plans).
    pub conflict: f64,
}

impl Rates {
    /// No faults: the quiet phase after the chaos, so the system can settle.
    pub const NONE: Rates = Rates { crash: 0.0, transient: 0.0, conflict: 0.0 };
}

/// Where in a process a fault may strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    BeforeStoreCommit,
    AfterStoreCommit,
    BeforeSend,
    BeforeDelete,
    BeforeLocalCommit,
    AfterLocalCommit,
    /// Reads and other calls that may fail but are no commit point.
    Call,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::BeforeStoreCommit => "before store commit",
            Point::AfterStoreCommit => "after store commit",
            Point::BeforeSend => "before send",
            Point::BeforeDelete => "before delete",
            Point::BeforeLocalCommit => "before local commit",
            Point::AfterLocalCommit => "after local commit",
            Point::Call => "call",
        }
    }

    fn is_commit_point(self) -> bool {
        !matches!(self, Point::Call)
    }
}

/// What a fault check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// The process is dead (now or earlier): the call must not take effect.
    Crashed,
    /// This call fails; the process lives on.
    Transient,
}

/// The shared fault state of one simulation.
#[derive(Debug)]
pub struct Chaos {
    rng: StdRng,
    rates: Rates,
    /// Processes that crashed and were not restarted yet.
    dead: BTreeSet<String>,
    trace: Trace,
}

/// [`Chaos`], shared by every wrapper of one simulation.
#[derive(Debug, Clone)]
pub struct SharedChaos(Arc<Mutex<Chaos>>);

impl SharedChaos {
    pub fn new(seed: u64, rates: Rates, trace: Trace) -> SharedChaos {
        SharedChaos(Arc::new(Mutex::new(Chaos {
            rng: StdRng::seed_from_u64(seed),
            rates,
            dead: BTreeSet::new(),
            trace,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Chaos> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_rates(&self, rates: Rates) {
        self.lock().rates = rates;
    }

    /// Whether `process` may go past `point`.
    pub fn check(&self, process: &str, point: Point) -> Verdict {
        let mut c = self.lock();
        if c.dead.contains(process) {
            return Verdict::Crashed;
        }
        let Rates { crash, transient, .. } = c.rates;
        if point.is_commit_point() && crash > 0.0 && c.rng.random_bool(crash) {
            c.dead.insert(process.to_string());
            c.trace.line(format!("CRASH {process} {}", point.name()));
            return Verdict::Crashed;
        }
        if transient > 0.0 && c.rng.random_bool(transient) {
            c.trace.line(format!("transient error in {process} {}", point.name()));
            return Verdict::Transient;
        }
        Verdict::Go
    }

    /// Whether a write of saga `saga_id` loses a race now.
    pub fn loses_race(&self, process: &str, saga_id: &str) -> bool {
        let mut c = self.lock();
        let p = c.rates.conflict;
        if p > 0.0 && c.rng.random_bool(p) {
            c.trace.line(format!("{process}: the write of saga {saga_id} loses a race to another writer"));
            return true;
        }
        false
    }

    /// The processes that crashed since the last call, now taken as restarted.
    pub fn take_dead(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().dead).into_iter().collect()
    }
}

fn queue_error(process: &str, v: &Verdict) -> QueueError {
    match v {
        Verdict::Crashed => QueueError::Unreachable(format!("{process} crashed")),
        _ => QueueError::Unreachable(format!("{process}: injected transient error")),
    }
}

fn store_error(process: &str, v: &Verdict) -> StoreError {
    match v {
        Verdict::Crashed => StoreError::Unreachable(format!("{process} crashed")),
        _ => StoreError::Unreachable(format!("{process}: injected transient error")),
    }
}

/// One process's view of the queue, behind the fault plan.
pub struct FaultyQueue {
    pub process: String,
    pub inner: Arc<dyn Queue>,
    pub chaos: SharedChaos,
}

impl FaultyQueue {
    fn gate(&self, point: Point) -> Result<(), QueueError> {
        match self.chaos.check(&self.process, point) {
            Verdict::Go => Ok(()),
            v => Err(queue_error(&self.process, &v)),
        }
    }
}

#[async_trait]
impl Queue for FaultyQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        self.inner.ensure(spec).await
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        self.gate(Point::BeforeSend)?;
        self.inner.send_batch(queue, messages).await
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        self.gate(Point::Call)?;
        self.inner.receive(queue, r).await
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        self.gate(Point::BeforeDelete)?;
        self.inner.delete_batch(queue, receipts).await
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        self.gate(Point::Call)?;
        self.inner.change_visibility(queue, receipt, timeout).await
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        self.inner.depth(queue).await
    }
}

/// What the simulator learns of every committed saga write, for the
/// replay check.
#[derive(Debug, Clone)]
pub struct CommitRecord {
    pub write: SagaWrite,
    /// Bodies of the messages the write consumed (applied or ignored), in
    /// batch order; empty for a timer pass's wake.
    pub consumed: Vec<String>,
}

/// The orchestrator's view of the store, behind the fault plan; records
/// every committed write with the messages it consumed.
pub struct FaultyStore {
    pub process: String,
    pub inner: Arc<dyn SagaStore>,
    pub chaos: SharedChaos,
    /// Receipt → body of what this process received, to name what a unit consumed.
    pub received: Arc<Mutex<std::collections::HashMap<String, String>>>,
    pub commits: Arc<Mutex<Vec<CommitRecord>>>,
}

impl FaultyStore {
    fn gate(&self, point: Point) -> Result<(), StoreError> {
        match self.chaos.check(&self.process, point) {
            Verdict::Go => Ok(()),
            v => Err(store_error(&self.process, &v)),
        }
    }

    fn record(&self, unit: &UnitOfWork, outcomes: &[WriteOutcome]) {
        let received = self.received.lock().unwrap_or_else(PoisonError::into_inner);
        let mut commits = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, (w, o)) in unit.writes.iter().zip(outcomes).enumerate() {
            if !matches!(o, WriteOutcome::Committed { .. }) {
                continue;
            }
            let consumed = unit
                .consumed
                .iter()
                .filter(|m| m.when == sqsaga_store::DeleteWhen::Committed(i))
                .filter_map(|m| received.get(&m.receipt).cloned())
                .collect();
            commits.push(CommitRecord { write: w.clone(), consumed });
        }
    }
}

#[async_trait]
impl SagaStore for FaultyStore {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        // A store is a network hop away: let a concurrent replica run here.
        tokio::task::yield_now().await;
        self.gate(Point::Call)?;
        self.inner.load(ids).await
    }

    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        let unit = UnitOfWork { writes, consumed: Vec::new() };
        Ok(self.commit_unit(unit).await?.outcomes)
    }

    async fn commit_unit(&self, unit: UnitOfWork) -> Result<UnitOutcome, StoreError> {
        tokio::task::yield_now().await;
        self.gate(Point::BeforeStoreCommit)?;
        let mut unit = unit;
        for w in &mut unit.writes {
            if w.expected_revision.is_some() && self.chaos.loses_race(&self.process, &w.instance.id) {
                // No store holds this revision: the write conflicts, as if
                // another replica had written first.
                w.expected_revision = Some(u64::MAX);
            }
        }
        let done = self.inner.commit_unit(unit.clone()).await?;
        self.record(&unit, &done.outcomes);
        self.gate(Point::AfterStoreCommit)?;
        Ok(done)
    }

    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        self.gate(Point::Call)?;
        self.inner.clear_outbox(saga_id, revision).await
    }

    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        self.gate(Point::Call)?;
        self.inner.pending_outboxes(written_before, limit).await
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        tokio::task::yield_now().await;
        self.gate(Point::Call)?;
        self.inner.due(now, limit).await
    }

    async fn list(
        &self,
        status: Option<sqsaga_core::machine::SagaStatus>,
        limit: usize,
    ) -> Result<Vec<SagaSummary>, StoreError> {
        self.inner.list(status, limit).await
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        self.inner.history(saga_id).await
    }

    async fn counts(&self) -> Result<std::collections::BTreeMap<sqsaga_core::machine::SagaStatus, u64>, StoreError> {
        self.inner.counts().await
    }

    async fn reachable(&self) -> Result<(), StoreError> {
        self.inner.reachable().await
    }
}

/// A participant database's commits behind the fault plan, charged to its
/// worker process.
#[derive(Debug)]
pub struct DbFaults {
    pub process: String,
    pub chaos: SharedChaos,
}

impl sqsaga_testing::participant::CommitGate for DbFaults {
    fn before_commit(&self) -> Result<(), String> {
        match self.chaos.check(&self.process, Point::BeforeLocalCommit) {
            Verdict::Go => Ok(()),
            Verdict::Crashed => Err(format!("{} crashed before the local commit", self.process)),
            Verdict::Transient => Err("injected transient error (database busy)".to_string()),
        }
    }

    fn after_commit(&self) -> Result<(), String> {
        match self.chaos.check(&self.process, Point::AfterLocalCommit) {
            Verdict::Go | Verdict::Transient => Ok(()),
            Verdict::Crashed => Err(format!("{} crashed after the local commit", self.process)),
        }
    }
}
