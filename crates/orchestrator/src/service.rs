//! The orchestrator's event loop: the IO around [`crate::plan`].
//!
//! Pollers receive batches from the orchestrator queue; a timer loop turns
//! due sagas (the store's due-time index) into `Wake` events; a sweeper
//! re-sends outboxes a crashed writer left behind. All three funnel into
//! one path: decode the messages, load their sagas, [`plan`] (pure: writes,
//! dispositions, deletes), commit the writes and the consumed receipts as
//! one [`UnitOfWork`] — with the SQLite adapter, concurrent calls from several
//! pollers land in the same group commit and the receipts are deleted in it
//! —, deliver the outboxes, then dead-letter, delete or hold each message as
//! planned. A conflicting write (another poller or replica got there first)
//! is re-read and its messages planned again, so no update is lost and a
//! transition's commands are emitted by exactly one committed write.
//!
//! Incoming messages are deleted only after the writes they caused are
//! durable; a message whose processing failed comes back after its
//! visibility timeout, and the state machine ignores what it already applied.
//!
//! Idle cost does not grow with the sagas stored: the timer loop polls the
//! due-time index every `timer_interval` while it finds work, backing off to
//! `timer_idle_interval` while it finds none, and a commit that arms a timer
//! sooner than the next poll wakes it; saga counts by status come from this
//! replica's own bookkeeping ([`SagaCounts`](crate::stats::SagaCounts)), read
//! from the store once at start, never by periodic scans.
//!
//! **Admission control** (`OrchestratorOptions::max_in_flight`): this
//! replica counts the sagas in flight per definition from its own commits
//! (from zero at start); a start request beyond the limit is
//! held — kept in memory, its visibility extended, the saga not created —
//! and admitted, oldest first, when a slot frees. The limit adapts to the
//! latency of the sagas that finish ([`crate::admission`]), up to
//! `max_in_flight`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sqsaga_core::Millis;
use sqsaga_core::machine::{CommandSpec, Event, Reply, SagaInstance, WorkerStamp, command_id};
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Command, Envelope, ReplyMessage, Signing, TraceParent};
use sqsaga_queue::{MAX_BATCH, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_store::{
    ConsumedMessage, Consumption, OutboxMessage, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite,
    StoreError, UnitOfWork, WriteOutcome,
};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

use crate::admission::AdaptiveLimit;
use crate::clock::Clock;
use crate::definitions::Definitions;
use crate::fleet::FleetMonitor;
use crate::plan::{Admission, Disposition, Incoming, Input, Plan, plan};
use crate::planted::{self, Fault};
use crate::stats::OrchestratorStats;

/// Logical name of the orchestrator's own queue.
pub const ORCHESTRATOR_QUEUE: &str = "orchestrator";

/// Tuning of the orchestrator loops.
#[derive(Debug, Clone)]
pub struct OrchestratorOptions {
    /// Queue to consume (replies, start and resume requests, heartbeats).
    pub queue: String,
    /// Concurrent receive loops; more pollers mean bigger group commits under load.
    pub pollers: usize,
    /// Long-poll wait of one receive.
    pub wait: Duration,
    /// Visibility timeout of received messages: how long before an
    /// unacknowledged message is retried.
    pub visibility: Duration,
    /// How often the due-time index is checked for timers while timers
    /// are firing.
    pub timer_interval: Duration,
    /// The longest wait between two checks of the due-time index while
    /// none is due (the wait doubles from `timer_interval` up to this). A
    /// commit of this replica that arms a timer sooner wakes the loop; one
    /// of another replica is seen within this.
    pub timer_idle_interval: Duration,
    /// How long terminal sagas are kept. The sweeper deletes older ones on
    /// stores without a TTL of their own ([`SagaStore::expire`]); `None`
    /// keeps them.
    pub retention: Option<Duration>,
    /// How often left-behind outboxes are looked for, and how old they must be.
    pub sweep_interval: Duration,
    /// Re-read-and-re-apply rounds after a write conflict before giving up
    /// (the message is then retried after its visibility timeout).
    pub max_conflict_rounds: u32,
    /// Message signing (`SQSAGA_SIGNING_KEY`...): commands are signed,
    /// incoming messages verified before they touch a saga. `None`: off.
    pub signing: Option<Arc<Signing>>,
    /// Admission control: at most this many sagas of one definition in
    /// flight (running or compensating) as this replica counts them; start
    /// requests beyond it wait, not created, so their deadline has not
    /// started. The limit in force adapts below this maximum to the
    /// latency of finished sagas ([`crate::admission`]). With N replicas
    /// each admits up to this many: set it to the total divided by N.
    /// `None`: no limit.
    pub max_in_flight: Option<u64>,
    /// How long a held start request stays invisible to other consumers
    /// at a time; extended while it is held, so if this replica dies its held
    /// requests come back after at most this long.
    pub hold_visibility: Duration,
    /// Held start requests per definition beyond which a new one is not
    /// held but left to come back after its visibility timeout (memory bound).
    pub max_held: usize,
}

/// The default maximum of the admission limit per definition and replica.
/// The limit in force adapts below it ([`crate::admission`]); the maximum
/// bounds memory and the burst one replica sends to the workers. The SQS
/// benchmark already fills its batches at 200 in flight (≤ 0.8 requests per
/// step), so real SQS loses no batching under it.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 200;

impl Default for OrchestratorOptions {
    fn default() -> Self {
        OrchestratorOptions {
            queue: ORCHESTRATOR_QUEUE.to_string(),
            pollers: 4,
            wait: Duration::from_secs(20),
            visibility: Duration::from_secs(30),
            timer_interval: Duration::from_millis(100),
            timer_idle_interval: Duration::from_secs(5),
            retention: None,
            sweep_interval: Duration::from_secs(10),
            max_conflict_rounds: 8,
            signing: None,
            max_in_flight: Some(DEFAULT_MAX_IN_FLIGHT),
            hold_visibility: Duration::from_secs(120),
            max_held: 10_000,
        }
    }
}

/// When the timer loop polls next; commits that arm a timer sooner move it
/// earlier and wake the loop.
struct TimerSchedule {
    next: Mutex<tokio::time::Instant>,
    wake: tokio::sync::Notify,
}

impl TimerSchedule {
    fn new() -> Self {
        TimerSchedule { next: Mutex::new(tokio::time::Instant::now()), wake: tokio::sync::Notify::new() }
    }

    fn next(&self) -> tokio::time::Instant {
        self.next.lock().map(|n| *n).unwrap_or_else(|_| tokio::time::Instant::now())
    }

    fn set(&self, at: tokio::time::Instant) {
        if let Ok(mut n) = self.next.lock() {
            *n = at;
        }
    }

    /// Polls no later than `at`; wakes the loop if that is sooner than planned.
    fn arm(&self, at: tokio::time::Instant) {
        let sooner = match self.next.lock() {
            Ok(mut n) if at < *n => {
                *n = at;
                true
            }
            _ => false,
        };
        if sooner {
            self.wake.notify_one();
        }
    }
}

/// Errors of the orchestrator loops.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A start request held back by admission control.
struct Held {
    /// The decoded request, planned again when a slot frees.
    incoming: Incoming,
    /// Its message, for the receipt and the visibility extensions.
    message: ReceivedMessage,
    /// When its visibility was last extended.
    extended_at: tokio::time::Instant,
}

/// This replica's admission bookkeeping.
#[derive(Default)]
struct AdmissionBook {
    /// Sagas in flight by definition name, as this replica knows them: the
    /// ids it created (or planned to) and resumed, less those whose finish
    /// it committed — or found finished in the store when it reconciled
    /// ([`Orchestrator::reconcile_admission`]: another replica may finish
    /// a saga this one started, and a count would leak it forever; found
    /// by the simulator). From nothing at start: not read from the store
    /// (its cost would grow with what is stored), so a replica restarted
    /// while sagas run admits up to that many more until they finish.
    in_flight: BTreeMap<String, BTreeSet<String>>,
    /// When each definition's set was last reconciled with the store.
    reconciled_at: BTreeMap<String, Millis>,
    /// Held start requests by definition, oldest first.
    held: BTreeMap<String, VecDeque<Held>>,
    /// The adaptive limit by definition name, created at first use.
    limits: BTreeMap<String, AdaptiveLimit>,
}

impl AdmissionBook {
    /// How many more sagas of `saga` may start now under `max` (the
    /// configured maximum; `None`: unlimited).
    fn free(&mut self, saga: &str, max: Option<u64>) -> u64 {
        let Some(max) = max else { return u64::MAX };
        let limit = self.limits.entry(saga.to_string()).or_insert_with(|| AdaptiveLimit::new(max)).limit();
        limit.saturating_sub(self.used(saga))
    }

    /// Sagas of `saga` in flight as this replica knows them.
    fn used(&self, saga: &str) -> u64 {
        self.in_flight.get(saga).map_or(0, |ids| ids.len() as u64)
    }
}

/// How often, at most, a definition at its admission limit with start
/// requests waiting has its in-flight set checked against the store: one
/// batch read of at most the limit's ids, only while requests wait.
const RECONCILE_EVERY: Millis = 5_000;

/// What happened to a batch's messages once planned and committed.
struct Settled {
    /// Per message, the final disposition.
    dispositions: Vec<Disposition>,
    /// Per message: the store deleted it with the commit.
    deleted: Vec<bool>,
}

/// The orchestrator service. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    defs: Arc<Definitions>,
    queue: Arc<dyn Queue>,
    store: Arc<dyn SagaStore>,
    clock: Arc<dyn Clock>,
    options: OrchestratorOptions,
    stats: Arc<OrchestratorStats>,
    /// Drift guard: the fleet view fed by heartbeats; stamps commands of
    /// enforce-mode services with their conforming fingerprints.
    fleet: Arc<FleetMonitor>,
    /// Admission control: sagas in flight and held start requests.
    admission: Mutex<AdmissionBook>,
    /// When the timer loop polls next.
    timers: TimerSchedule,
    /// Every committed saga write, for whoever listens (the admin API's
    /// live stream); a send without listeners is dropped.
    changes: broadcast::Sender<SagaChange>,
}

/// One committed change of a saga, as the change feed reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SagaChange {
    pub summary: SagaSummary,
    /// The history line the change wrote (what the state machine made of it).
    pub note: String,
}

/// How many changes a slow listener of [`Orchestrator::changes`] may lag
/// before it misses some (it is told how many, and re-reads).
const CHANGE_FEED_CAPACITY: usize = 1024;

/// Creates the orchestrator queue and one queue per service named by the
/// definitions, each with its DLQ. Idempotent.
pub async fn ensure_queues(
    queue: &dyn Queue,
    defs: &Definitions,
    template: &QueueSpec,
) -> Result<Vec<String>, QueueError> {
    let mut names = vec![ORCHESTRATOR_QUEUE.to_string()];
    names.extend(defs.services());
    for name in &names {
        let spec = QueueSpec { name: name.clone(), ..template.clone() };
        queue.ensure(&spec).await?;
    }
    Ok(names)
}

impl Orchestrator {
    pub fn new(
        defs: Arc<Definitions>,
        queue: Arc<dyn Queue>,
        store: Arc<dyn SagaStore>,
        clock: Arc<dyn Clock>,
        options: OrchestratorOptions,
    ) -> Self {
        Orchestrator {
            inner: Arc::new(Inner {
                defs,
                queue,
                store,
                fleet: Arc::new(FleetMonitor::observing(clock.clone())),
                clock,
                options,
                stats: Arc::new(OrchestratorStats::default()),
                timers: TimerSchedule::new(),
                admission: Mutex::new(AdmissionBook::default()),
                changes: broadcast::channel(CHANGE_FEED_CAPACITY).0,
            }),
        }
    }

    /// Uses `fleet` (policy, heartbeat interval, restored snapshot) as the
    /// drift guard's fleet view instead of the default observe-only one.
    /// Call before [`Orchestrator::run`] and before cloning.
    pub fn with_fleet(mut self, fleet: Arc<FleetMonitor>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.fleet = fleet,
            None => tracing::error!("Fleet monitor set on an orchestrator already shared; it keeps the default one."),
        }
        self
    }

    /// The drift guard's fleet view.
    pub fn fleet(&self) -> Arc<FleetMonitor> {
        self.inner.fleet.clone()
    }

    pub fn stats(&self) -> Arc<OrchestratorStats> {
        self.inner.stats.clone()
    }

    pub fn definitions(&self) -> Arc<Definitions> {
        self.inner.defs.clone()
    }

    /// The change feed: every saga write this replica commits from now on.
    /// Other replicas' writes are not in it (each has its own).
    pub fn changes(&self) -> broadcast::Sender<SagaChange> {
        self.inner.changes.clone()
    }

    /// Runs the pollers, the timer loop and the outbox sweeper until
    /// `shutdown` resolves; in-flight batches finish before it returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut tasks = JoinSet::new();
        {
            let me = self.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move { me.seed_counts(stop).await });
        }
        for poller in 0..self.inner.options.pollers.max(1) {
            let me = self.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move { me.poll_loop(poller, stop).await });
        }
        {
            let me = self.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move { me.timer_loop(stop).await });
        }
        {
            let me = self.clone();
            let stop = stop_rx.clone();
            tasks.spawn(async move { me.sweep_loop(stop).await });
        }
        shutdown.await;
        tracing::info!("Orchestrator stopping: finishing in-flight batches.");
        let _ = stop_tx.send(true);
        while tasks.join_next().await.is_some() {}
        self.release_held().await;
        tracing::info!("Orchestrator stopped.");
    }

    async fn poll_loop(&self, poller: usize, mut stop: tokio::sync::watch::Receiver<bool>) {
        let o = &self.inner.options;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            let receive =
                self.inner.queue.receive(&o.queue, Receive::up_to(MAX_BATCH).wait(o.wait).visibility(o.visibility));
            let received = tokio::select! {
                r = receive => r,
                _ = stop.changed() => return,
            };
            match received {
                Ok(messages) => {
                    backoff = Duration::from_millis(100);
                    if messages.is_empty() {
                        continue;
                    }
                    self.handle_messages(messages).await;
                }
                Err(e) => {
                    self.inner.stats.queue_errors.inc();
                    tracing::warn!(poller, error = %e, retry_in_ms = backoff.as_millis() as u64, "Cannot receive from the orchestrator queue.");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Reads the saga counts once, retrying until the store answers (the
    /// one read whose cost grows with the sagas stored, once per start).
    async fn seed_counts(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.inner.store.counts().await {
                Ok(counts) => {
                    self.inner.stats.sagas.seed(counts);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = backoff.as_secs(), "Cannot read the saga counts; will retry.")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }

    /// Polls the due-time index: every `timer_interval` while timers fire,
    /// backing off to `timer_idle_interval` while none is due, and at once
    /// when a commit arms a timer before the next poll.
    async fn timer_loop(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let o = &self.inner.options;
        let (fast, slow) = (o.timer_interval, o.timer_idle_interval.max(o.timer_interval));
        let timers = &self.inner.timers;
        let mut backoff = fast;
        timers.set(tokio::time::Instant::now() + fast);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(timers.next()) => {}
                _ = timers.wake.notified() => {
                    // Re-plan: an armed timer moved the next poll earlier.
                    backoff = fast;
                    continue;
                }
                _ = stop.changed() => return,
            }
            backoff = match self.fire_due_timers().await {
                Ok(0) => (backoff * 2).min(slow),
                Ok(_) => fast,
                Err(e) => {
                    tracing::warn!(error = %e, "Timer pass failed; will retry.");
                    slow
                }
            };
            self.admit_held().await;
            timers.set(tokio::time::Instant::now() + backoff);
        }
    }

    /// Deletes terminal sagas past the retention, a batch at a time, on
    /// stores that do not expire them by themselves.
    async fn expire_old(&self) -> Result<usize, OrchestratorError> {
        const BATCH: usize = 500;
        let Some(retention) = self.inner.options.retention else { return Ok(0) };
        let before = self.inner.clock.now().saturating_sub(retention.as_millis() as Millis);
        let mut total = 0;
        loop {
            let n = self.inner.store.expire(before, BATCH).await?;
            total += n;
            if n < BATCH {
                break;
            }
        }
        if total > 0 {
            self.inner.stats.sagas_expired.inc_by(total as u64);
            tracing::info!(expired = total, "Deleted terminal sagas past their retention.");
        }
        Ok(total)
    }

    async fn sweep_loop(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.options.sweep_interval) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = self.sweep_outboxes().await {
                tracing::warn!(error = %e, "Outbox sweep failed; will retry.");
            }
            if let Err(e) = self.expire_old().await {
                tracing::warn!(error = %e, "Deleting expired sagas failed; will retry.");
            }
        }
    }

    /// Applies `Wake` to every saga whose next wake-up has passed.
    pub async fn fire_due_timers(&self) -> Result<usize, OrchestratorError> {
        let now = self.inner.clock.now();
        let mut total = 0;
        loop {
            let due = self.inner.store.due(now, 256).await?;
            if due.is_empty() {
                return Ok(total);
            }
            let count = due.len();
            let batch =
                due.into_iter().map(|saga_id| Incoming { input: Input::Wake { saga_id }, receipt: None }).collect();
            self.run_batch(batch, false).await?;
            total += count;
            if count < 256 {
                return Ok(total);
            }
        }
    }

    /// Sends outboxes that a crashed writer left behind (AWS store only;
    /// the SQLite store never leaves any).
    pub async fn sweep_outboxes(&self) -> Result<usize, OrchestratorError> {
        let older = self.inner.clock.now().saturating_sub(self.inner.options.sweep_interval.as_millis() as Millis);
        let pending = self.inner.store.pending_outboxes(older, 100).await?;
        let count = pending.len();
        for p in &pending {
            tracing::info!(saga_id = %p.saga_id, revision = p.revision, "Re-sending a left-behind outbox.");
        }
        let cleared = self.deliver_all(pending).await;
        self.inner.stats.outboxes_swept.inc_by(cleared as u64);
        self.inner.stats.outboxes_undelivered.set(i64::try_from(count.saturating_sub(cleared)).unwrap_or(i64::MAX));
        Ok(count)
    }

    /// Decodes a received batch, plans and commits it, then dead-letters,
    /// deletes or holds each message according to what happened to it.
    pub async fn handle_messages(&self, messages: Vec<ReceivedMessage>) {
        let stats = &self.inner.stats;
        stats.messages_received.inc_by(messages.len() as u64);
        let batch: Vec<Incoming> = messages
            .iter()
            .map(|m| Incoming { input: self.decode(m), receipt: Some(m.receipt_handle.clone()) })
            .collect();
        let held_inputs: Vec<Incoming> = batch.clone();
        let settled = match self.run_batch(batch, false).await {
            Ok(settled) => settled,
            Err(e) => {
                stats.store_errors.inc();
                tracing::warn!(error = %e, "Cannot apply events; the messages will be retried.");
                // Poison stays poison; everything else comes back.
                let dispositions = held_inputs
                    .iter()
                    .map(|m| match &m.input {
                        Input::Poison(reason) => Disposition::DeadLetter { reason: reason.clone() },
                        _ => Disposition::Release { reason: format!("store failed: {e}") },
                    })
                    .collect();
                Settled { dispositions, deleted: vec![false; messages.len()] }
            }
        };
        self.act(messages, held_inputs, settled).await;
        self.admit_held().await;
    }

    /// Carries out what the plan decided for each received message.
    async fn act(&self, messages: Vec<ReceivedMessage>, inputs: Vec<Incoming>, settled: Settled) {
        let stats = &self.inner.stats;
        let queue = &self.inner.options.queue;
        let mut acks = Vec::new();
        let mut hold = Vec::new();
        for (((message, incoming), d), deleted) in
            messages.into_iter().zip(inputs).zip(settled.dispositions).zip(settled.deleted)
        {
            match d {
                Disposition::Consumed { .. } | Disposition::Ignored { .. } if deleted => {}
                Disposition::Consumed { .. } | Disposition::Ignored { .. } => acks.push(message.receipt_handle.clone()),
                Disposition::DeadLetter { reason } => {
                    tracing::warn!(message_id = %message.message_id, reason = %reason, "Dead-lettering a message the orchestrator cannot process.");
                    match self.inner.queue.dead_letter(queue, &message, &reason).await {
                        Ok(()) => {
                            stats.dead_lettered.inc();
                        }
                        Err(e) => {
                            stats.queue_errors.inc();
                            tracing::warn!(message_id = %message.message_id, error = %e, "Cannot dead-letter; it will come back.");
                        }
                    }
                }
                Disposition::Release { reason } => {
                    tracing::debug!(message_id = %message.message_id, reason = %reason, "Message left to come back.");
                }
                Disposition::Hold => hold.push((incoming, message)),
            }
        }
        if !acks.is_empty() {
            self.delete(&acks).await;
        }
        if !hold.is_empty() {
            self.hold(hold).await;
        }
    }

    /// Deletes consumed messages the store did not delete itself.
    async fn delete(&self, receipts: &[String]) {
        let queue = &self.inner.options.queue;
        for chunk in receipts.chunks(MAX_BATCH) {
            match self.inner.queue.delete_batch(queue, chunk).await {
                Ok(failed) => {
                    for e in failed {
                        tracing::debug!(error = %e, "A processed message could not be deleted; its redelivery will be ignored.");
                    }
                }
                Err(e) => {
                    self.inner.stats.queue_errors.inc();
                    tracing::warn!(error = %e, "Cannot delete processed messages; their redelivery will be ignored.");
                }
            }
        }
    }

    /// Turns a message into what it asks of a saga. Verifies the signature
    /// first, and feeds the fleet view (heartbeats, replies' fingerprints).
    fn decode(&self, message: &ReceivedMessage) -> Input {
        let envelope = match Envelope::decode(&message.body) {
            Ok(e) => e,
            Err(e) => return Input::Poison(e.to_string()),
        };
        // Before the message can touch a saga: an unsigned (when required),
        // forged or stale one is dead-lettered with the reason.
        if let Some(signing) = &self.inner.options.signing {
            let attr = message.attributes.get(ATTR_SIGNATURE).map(String::as_str);
            if let Err(e) = signing.verify(&message.body, attr, self.inner.clock.now()) {
                return Input::Poison(format!("signature check failed: {e}"));
            }
        }
        match envelope {
            Envelope::Start(s) => {
                let def = match s.version {
                    Some(v) => self.inner.defs.get(&s.saga, v),
                    None => self.inner.defs.latest(&s.saga),
                };
                let Some(def) = def else {
                    return Input::Poison(match s.version {
                        Some(v) => format!("unknown saga `{}` version {v}", s.saga),
                        None => format!("unknown saga `{}`", s.saga),
                    });
                };
                if s.saga_id.is_empty() {
                    return Input::Poison("start request with an empty saga_id".to_string());
                }
                if let Err(reason) = self.inner.defs.check_input(&def, &s.input) {
                    return Input::Poison(reason);
                }
                let trace = match message.attributes.get(ATTR_TRACEPARENT).map(|v| TraceParent::parse(v)) {
                    Some(Ok(tp)) => tp,
                    Some(Err(e)) => {
                        tracing::debug!(saga_id = %s.saga_id, error = %e, "Start request has a malformed traceparent; deriving one.");
                        TraceParent::derived(&s.saga_id)
                    }
                    None => TraceParent::derived(&s.saga_id),
                };
                Input::Start {
                    saga_id: s.saga_id,
                    saga: def.name.clone(),
                    version: def.version,
                    input: s.input,
                    trace: trace.to_string(),
                }
            }
            Envelope::Reply(r) => {
                self.inner.fleet.record_step(&r.worker.service, &r.worker.fingerprint);
                Input::Reply { saga_id: r.saga_id.clone(), reply: reply_event(r) }
            }
            Envelope::Resume(r) => Input::Resume { saga_id: r.saga_id },
            Envelope::Cancel(c) => Input::Cancel { saga_id: c.saga_id, by: c.requested_by },
            Envelope::Heartbeat(h) => {
                self.inner.fleet.observe(&h);
                Input::NoSaga
            }
            Envelope::Command(c) => {
                Input::Poison(format!("command `{}` for service queue arrived on the orchestrator queue", c.command))
            }
        }
    }

    /// Applies events that came without a message (tests, tools); returns
    /// an error only if the store failed as a whole.
    pub async fn apply_events(&self, items: Vec<(String, Event)>) -> Result<(), OrchestratorError> {
        let batch = items
            .into_iter()
            .map(|(saga_id, e)| {
                let input = match e {
                    Event::Reply(reply) => Input::Reply { saga_id, reply },
                    Event::Wake => Input::Wake { saga_id },
                    Event::Resume => Input::Resume { saga_id },
                    Event::Cancel { by } => Input::Cancel { saga_id, by },
                };
                Incoming { input, receipt: None }
            })
            .collect();
        self.run_batch(batch, false).await.map(|_| ())
    }

    /// The IO around [`plan`]: load, plan, commit as one unit of work,
    /// deliver; on a revision conflict, re-load the saga and plan its
    /// messages again. `from_held`: the batch is held start requests being
    /// admitted (they may take free slots even though requests are held).
    async fn run_batch(&self, batch: Vec<Incoming>, from_held: bool) -> Result<Settled, OrchestratorError> {
        let stats = &self.inner.stats;
        let mut dispositions: Vec<Option<Disposition>> = vec![None; batch.len()];
        let mut deleted = vec![false; batch.len()];
        // Indexes still to plan: everything, then the messages of sagas
        // whose write lost a conflict.
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        // Sagas whose write lost a conflict (only the planted fault reads it).
        let mut conflicted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for _round in 0..self.inner.options.max_conflict_rounds {
            if pending.is_empty() {
                break;
            }
            let mut ids: Vec<String> =
                pending.iter().filter_map(|&i| batch[i].input.saga_id().map(str::to_string)).collect();
            ids.sort_unstable();
            ids.dedup();
            let records: BTreeMap<String, SagaRecord> = if ids.is_empty() {
                BTreeMap::new()
            } else {
                self.inner.store.load(&ids).await?.into_iter().map(|r| (r.instance.id.clone(), r)).collect()
            };
            let sub: Vec<Incoming> = pending.iter().map(|&i| batch[i].clone()).collect();
            let now = self.inner.clock.now();
            let plan = self.plan_admitting(&sub, &records, now, from_held);
            self.log_plan(&sub, &records, &plan);
            let outboxes: Vec<Vec<OutboxMessage>> = plan
                .writes
                .iter()
                .map(|w| {
                    if planted::active(Fault::DropOutboxOnConflict) && conflicted.contains(&w.saga_id) {
                        return Vec::new();
                    }
                    self.outbox(&w.state, &w.commands, now)
                })
                .collect();
            let unit = UnitOfWork {
                writes: plan
                    .writes
                    .iter()
                    .zip(&outboxes)
                    .map(|(w, outbox)| SagaWrite {
                        instance: w.state.clone(),
                        expected_revision: w.expected_revision,
                        history: w.history.clone(),
                        outbox: outbox.clone(),
                    })
                    .collect(),
                consumed: plan
                    .deletes
                    .iter()
                    .map(|(receipt, when)| ConsumedMessage {
                        queue: self.inner.options.queue.clone(),
                        receipt: receipt.clone(),
                        when: *when,
                    })
                    .collect(),
            };
            if planted::active(Fault::DeleteBeforeCommit) {
                let receipts: Vec<String> = unit.consumed.iter().map(|m| m.receipt.clone()).collect();
                self.delete(&receipts).await;
            }
            let result = if unit.writes.is_empty() {
                // Nothing to write: the caller deletes what was ignored.
                Ok(sqsaga_store::UnitOutcome { outcomes: Vec::new(), consumption: Consumption::LeftToCaller })
            } else {
                self.inner.store.commit_unit(unit).await
            };
            let done = match result {
                Ok(done) => done,
                Err(e) => {
                    self.unreserve(&plan);
                    return Err(e.into());
                }
            };
            self.settle_admission(&plan, &done.outcomes);
            let store_deleted = match done.consumption {
                Consumption::Deleted { failed } => {
                    for e in failed {
                        tracing::debug!(error = %e, "A processed message could not be deleted; its redelivery will be ignored.");
                    }
                    true
                }
                Consumption::LeftToCaller => false,
            };
            let committed = |w: usize| matches!(done.outcomes.get(w), Some(WriteOutcome::Committed { .. }));
            let write_of_saga: BTreeMap<&str, usize> =
                plan.writes.iter().enumerate().map(|(w, pw)| (pw.saga_id.as_str(), w)).collect();
            let mut next = Vec::new();
            for (k, d) in plan.dispositions.into_iter().enumerate() {
                let i = pending[k];
                let write = batch[i].input.saga_id().and_then(|id| write_of_saga.get(id)).copied();
                match (&d, write) {
                    // Planned against a state that lost the race: plan it again.
                    (Disposition::Consumed { .. } | Disposition::Ignored { .. }, Some(w)) if !committed(w) => {
                        next.push(i);
                        continue;
                    }
                    (Disposition::Consumed { .. } | Disposition::Ignored { .. }, _) => {
                        deleted[i] = store_deleted && batch[i].receipt.is_some();
                    }
                    _ => {}
                }
                match &d {
                    Disposition::Consumed { .. } => {
                        stats.events_applied.inc();
                    }
                    Disposition::Ignored { .. } => {
                        stats.events_ignored.inc();
                    }
                    _ => {}
                }
                dispositions[i] = Some(d);
            }
            let mut to_deliver = Vec::new();
            for ((w, outcome), outbox) in plan.writes.iter().zip(&done.outcomes).zip(outboxes) {
                match outcome {
                    WriteOutcome::Committed { revision, outbox_pending } => {
                        stats.sagas.transition(records.get(&w.saga_id).map(|r| r.instance.status), w.state.status);
                        // A timer sooner than the timer loop's next poll wakes it.
                        if let Some(at) = (!w.state.status.is_terminal()).then(|| w.state.next_wakeup()).flatten() {
                            let wait = Duration::from_millis(at.saturating_sub(now));
                            self.inner.timers.arm(tokio::time::Instant::now() + wait);
                        }
                        if w.creates() {
                            stats.sagas_started.inc();
                        }
                        let note = w.history.last().map(|h| h.note.clone()).unwrap_or_default();
                        let _ = self.inner.changes.send(SagaChange { summary: SagaSummary::from(&w.state), note });
                        stats.commands_sent.inc_by(outbox.len() as u64);
                        if *outbox_pending {
                            to_deliver.push(PendingOutbox {
                                saga_id: w.saga_id.clone(),
                                revision: *revision,
                                messages: outbox,
                            });
                        }
                    }
                    WriteOutcome::Conflict | WriteOutcome::AlreadyExists => {
                        conflicted.insert(w.saga_id.clone());
                        stats.write_conflicts.inc();
                        tracing::debug!(saga_id = %w.saga_id, "Write conflict; re-reading and re-applying.");
                    }
                }
            }
            self.deliver_all(to_deliver).await;
            pending = next;
        }
        // Whatever is still pending lost every round: retry later.
        let dispositions = dispositions
            .into_iter()
            .map(|d| d.unwrap_or_else(|| Disposition::Release { reason: "lost every conflict round".to_string() }))
            .collect();
        Ok(Settled { dispositions, deleted })
    }

    /// Plans under the admission lock, so two pollers cannot both take the
    /// last free slot: the creates a plan makes are counted in flight at
    /// once, and taken back by [`Orchestrator::settle_admission`] if they do
    /// not commit.
    fn plan_admitting(
        &self,
        batch: &[Incoming],
        records: &BTreeMap<String, SagaRecord>,
        now: Millis,
        from_held: bool,
    ) -> Plan {
        let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
        let mut admission = Admission::unlimited();
        let max = self.inner.options.max_in_flight;
        if max.is_some() {
            for def in self.inner.defs.all() {
                let queued_ahead = !from_held && book.held.get(&def.name).is_some_and(|h| !h.is_empty());
                let free = if queued_ahead { 0 } else { book.free(&def.name, max) };
                admission = admission.with(&def.name, free);
            }
        }
        let plan = plan(batch, records, now, &self.inner.defs, &admission);
        for w in plan.writes.iter().filter(|w| w.creates() && w.in_flight > 0) {
            book.in_flight.entry(w.state.saga.clone()).or_default().insert(w.state.id.clone());
        }
        plan
    }

    /// After a commit: counts the committed writes' changes of sagas in
    /// flight (creates were counted when planned), takes back the creates
    /// that did not commit, and feeds each finished saga's latency to its
    /// definition's adaptive limit.
    fn settle_admission(&self, plan: &Plan, outcomes: &[WriteOutcome]) {
        let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
        for (w, outcome) in plan.writes.iter().zip(outcomes) {
            let committed = matches!(outcome, WriteOutcome::Committed { .. });
            let s = &w.state;
            match (w.creates(), committed) {
                // Again at commit: a reconcile between plan and commit may
                // have dropped it as not stored yet.
                (true, true) if w.in_flight > 0 => {
                    book.in_flight.entry(s.saga.clone()).or_default().insert(s.id.clone());
                }
                (true, false) => {
                    book.in_flight.entry(s.saga.clone()).or_default().remove(&s.id);
                }
                (false, true) if w.in_flight < 0 => {
                    let used = book.used(&s.saga);
                    if let Some(limit) = book.limits.get_mut(&s.saga) {
                        let latency = s.updated_at.saturating_sub(s.started_at);
                        limit.on_finish(latency, s.deadline_at.saturating_sub(s.started_at), used);
                    }
                    book.in_flight.entry(s.saga.clone()).or_default().remove(&s.id);
                }
                (false, true) if w.in_flight > 0 => {
                    book.in_flight.entry(s.saga.clone()).or_default().insert(s.id.clone());
                }
                _ => {}
            }
        }
    }

    /// Drops from the in-flight sets the sagas another replica finished (or
    /// that are gone): for each definition at its limit with start requests
    /// held, at most every [`RECONCILE_EVERY`], its ids are read back from
    /// the store. Finished ones feed the adaptive limit like a finish this
    /// replica committed.
    async fn reconcile_admission(&self) {
        let now = self.inner.clock.now();
        let due: Vec<(String, Vec<String>)> = {
            let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
            let waiting: Vec<String> =
                book.held.iter().filter(|(_, q)| !q.is_empty()).map(|(saga, _)| saga.clone()).collect();
            let mut due = Vec::new();
            for saga in waiting {
                let recent = book.reconciled_at.get(&saga).is_some_and(|at| now.saturating_sub(*at) < RECONCILE_EVERY);
                if recent || book.free(&saga, self.inner.options.max_in_flight) > 0 {
                    continue;
                }
                book.reconciled_at.insert(saga.clone(), now);
                let ids: Vec<String> =
                    book.in_flight.get(&saga).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                due.push((saga, ids));
            }
            due
        };
        for (saga, ids) in due {
            let records = match self.inner.store.load(&ids).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::debug!(error = %e, saga = %saga, "Cannot reconcile admission; will retry.");
                    continue;
                }
            };
            let running: BTreeSet<&str> = records
                .iter()
                .filter(|r| crate::plan::in_flight(r.instance.status))
                .map(|r| r.instance.id.as_str())
                .collect();
            let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
            // Only ids still in the set: a finish this replica committed
            // while the store was read has already fed the limit.
            let still = |id: &str| book.in_flight.get(&saga).is_some_and(|set| set.contains(id));
            let finished: Vec<&sqsaga_core::machine::SagaInstance> = records
                .iter()
                .map(|r| &r.instance)
                .filter(|s| !running.contains(s.id.as_str()) && still(&s.id))
                .collect();
            for s in finished {
                let used = book.used(&saga);
                if let Some(limit) = book.limits.get_mut(&saga) {
                    limit.on_finish(
                        s.updated_at.saturating_sub(s.started_at),
                        s.deadline_at.saturating_sub(s.started_at),
                        used,
                    );
                }
            }
            if let Some(set) = book.in_flight.get_mut(&saga) {
                // Ids read and not running, and ids no longer stored.
                set.retain(|id| !ids.contains(id) || running.contains(id.as_str()));
            }
        }
    }

    /// Takes back every create of `plan` (its commit failed as a whole).
    fn unreserve(&self, plan: &Plan) {
        let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
        for w in plan.writes.iter().filter(|w| w.creates()) {
            book.in_flight.entry(w.state.saga.clone()).or_default().remove(&w.state.id);
        }
    }

    /// One debug line per message planned, inside the saga's span.
    fn log_plan(&self, batch: &[Incoming], records: &BTreeMap<String, SagaRecord>, plan: &Plan) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        for (m, d) in batch.iter().zip(&plan.dispositions) {
            let Some(id) = m.input.saga_id() else { continue };
            let span = event_span(id, &m.input, records.get(id).map(|r| &r.instance));
            let _entered = span.enter();
            match d {
                Disposition::Consumed { write } => {
                    let note = plan.writes[*write].history.last().map(|h| h.note.as_str()).unwrap_or("");
                    tracing::debug!(saga_id = %id, event = m.input.kind(), note = %note, "Saga event applied.");
                }
                Disposition::Ignored { note } => {
                    tracing::debug!(saga_id = %id, event = m.input.kind(), note = %note, "Saga event ignored.")
                }
                Disposition::Release { reason } => {
                    tracing::error!(saga_id = %id, reason = %reason, "Cannot apply an event; it will be retried.")
                }
                Disposition::Hold => {
                    tracing::debug!(saga_id = %id, "Start request held: its saga is at its admission limit.")
                }
                Disposition::DeadLetter { .. } => {}
            }
        }
    }

    /// Sagas in flight by definition, as this replica counts them.
    pub fn in_flight(&self) -> BTreeMap<String, i64> {
        let book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
        book.in_flight.iter().map(|(saga, ids)| (saga.clone(), ids.len() as i64)).collect()
    }

    /// Start requests held back by admission control right now.
    pub fn held(&self) -> usize {
        self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner).held.values().map(VecDeque::len).sum()
    }

    /// Keeps start requests over the admission limit: each is made
    /// invisible for `hold_visibility` and queued behind those already held.
    /// Beyond `max_held` per definition a request is left to come back
    /// after its visibility timeout instead.
    async fn hold(&self, requests: Vec<(Incoming, ReceivedMessage)>) {
        let o = &self.inner.options;
        let mut extend = JoinSet::new();
        {
            let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
            for (incoming, message) in requests {
                let Input::Start { saga, .. } = &incoming.input else { continue };
                let queue = book.held.entry(saga.clone()).or_default();
                if queue.len() >= o.max_held {
                    tracing::debug!(saga = %saga, "Too many start requests held; this one comes back later.");
                    continue;
                }
                self.inner.stats.starts_held.inc();
                let (port, name, receipt, hold) =
                    (self.inner.queue.clone(), o.queue.clone(), message.receipt_handle.clone(), o.hold_visibility);
                extend.spawn(async move { port.change_visibility(&name, &receipt, hold).await });
                queue.push_back(Held { incoming, message, extended_at: tokio::time::Instant::now() });
            }
        }
        while let Some(joined) = extend.join_next().await {
            if let Ok(Err(e)) = joined {
                tracing::debug!(error = %e, "Cannot extend a held start request's visibility; it may come back early (harmless).");
            }
        }
    }

    /// Makes every held start request visible again at once (at shutdown),
    /// for another replica or the next run.
    async fn release_held(&self) {
        let held: Vec<Held> = {
            let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut book.held).into_values().flatten().collect()
        };
        if !held.is_empty() {
            tracing::info!(count = held.len(), "Releasing held start requests.");
        }
        for h in held {
            let receipt = &h.message.receipt_handle;
            if let Err(e) = self.inner.queue.change_visibility(&self.inner.options.queue, receipt, Duration::ZERO).await
            {
                tracing::debug!(error = %e, "Cannot release a held start request; it comes back when its visibility ends.");
            }
        }
    }

    /// Admits held start requests, oldest first, while their definitions
    /// have free slots; extends the visibility of those still held when half
    /// of it has passed.
    pub async fn admit_held(&self) {
        self.reconcile_admission().await;
        let o = &self.inner.options;
        let (admit, extend) = {
            let mut book = self.inner.admission.lock().unwrap_or_else(PoisonError::into_inner);
            let mut held = std::mem::take(&mut book.held);
            let mut admit: Vec<Held> = Vec::new();
            let mut extend: Vec<String> = Vec::new();
            let now = tokio::time::Instant::now();
            for (saga, queue) in held.iter_mut() {
                let free = usize::try_from(book.free(saga, o.max_in_flight)).unwrap_or(usize::MAX);
                admit.extend(queue.drain(..free.min(queue.len())));
                for h in queue.iter_mut() {
                    if now.duration_since(h.extended_at) >= o.hold_visibility / 2 {
                        h.extended_at = now;
                        extend.push(h.message.receipt_handle.clone());
                    }
                }
            }
            held.retain(|_, q| !q.is_empty());
            book.held = held;
            (admit, extend)
        };
        for receipt in extend {
            if let Err(e) = self.inner.queue.change_visibility(&o.queue, &receipt, o.hold_visibility).await {
                tracing::debug!(error = %e, "Cannot extend a held start request's visibility; it may come back early (harmless).");
            }
        }
        let mut admit = admit;
        while !admit.is_empty() {
            let rest = admit.split_off(admit.len().min(MAX_BATCH));
            let chunk = std::mem::replace(&mut admit, rest);
            let (inputs, messages): (Vec<Incoming>, Vec<ReceivedMessage>) =
                chunk.into_iter().map(|h| (h.incoming, h.message)).unzip();
            let settled = match self.run_batch(inputs.clone(), true).await {
                Ok(settled) => settled,
                Err(e) => {
                    self.inner.stats.store_errors.inc();
                    tracing::warn!(error = %e, "Cannot admit held start requests; they will come back.");
                    let n = messages.len();
                    Settled {
                        dispositions: vec![Disposition::Release { reason: format!("store failed: {e}") }; n],
                        deleted: vec![false; n],
                    }
                }
            };
            // A request held again (another poller took the slot) goes back
            // to the front of the line through `act`'s hold, at the back:
            // rare enough not to matter.
            self.act(messages, inputs, settled).await;
        }
    }

    /// The envelopes for the commands a transition emitted.
    fn outbox(&self, state: &SagaInstance, specs: &[CommandSpec], now: Millis) -> Vec<OutboxMessage> {
        if specs.is_empty() {
            return Vec::new();
        }
        let payload = payload_of(state, &self.inner.defs);
        let trace = state.trace.as_deref().and_then(|t| TraceParent::parse(t).ok());
        specs
            .iter()
            .map(|spec| {
                let command = Command {
                    command_id: spec.command_id.clone(),
                    saga_id: state.id.clone(),
                    saga: state.saga.clone(),
                    version: state.version,
                    step: spec.step,
                    step_name: spec.step_name.clone(),
                    command: spec.command.clone(),
                    phase: spec.phase,
                    attempt: spec.attempt,
                    contract: spec.contract.clone(),
                    payload: payload.clone(),
                    deadline: spec.deadline,
                    not_after: spec.not_after,
                    sent_at: now,
                    reply_to: self.inner.options.queue.clone(),
                    conforming: self.inner.fleet.stamp(&spec.service, &spec.contract),
                };
                let mut message = OutgoingMessage::new(Envelope::Command(command).encode());
                if let Some(tp) = &trace {
                    // Same trace, a span id of the command's own.
                    message = message.with_attribute(ATTR_TRACEPARENT, tp.child(&spec.command_id).to_string());
                }
                if let Some(signing) = &self.inner.options.signing {
                    let signature = signing.sign(&message.body, now);
                    message = message.with_attribute(ATTR_SIGNATURE, signature);
                }
                OutboxMessage { queue: spec.service.clone(), message }
            })
            .collect()
    }

    /// Sends committed outboxes (several sagas' at once, so their messages
    /// share send batches: one saga at a time would hand the queue adapter
    /// one message per flush window), then clears the outbox of every saga
    /// whose messages all went out; returns how many were cleared. An
    /// outbox not sent or not cleared stays for the sweeper, and a re-send
    /// is harmless (deterministic command ids).
    async fn deliver_all(&self, outboxes: Vec<PendingOutbox>) -> usize {
        if outboxes.is_empty() {
            return 0;
        }
        let now = self.inner.clock.now();
        // queue → (index of the outbox, message), every saga's together.
        let mut by_queue: BTreeMap<String, Vec<(usize, OutgoingMessage)>> = BTreeMap::new();
        for (k, outbox) in outboxes.iter().enumerate() {
            for m in &outbox.messages {
                let mut message = m.message.clone();
                // Signed again at send time: an outbox the sweeper sends late
                // must not arrive already stale.
                if let Some(signing) = &self.inner.options.signing {
                    message.attributes.insert(ATTR_SIGNATURE.to_string(), signing.sign(&message.body, now));
                }
                by_queue.entry(m.queue.clone()).or_default().push((k, message));
            }
        }
        let mut sends = JoinSet::new();
        for (queue, messages) in by_queue {
            for chunk in messages.chunks(MAX_BATCH) {
                let owners: Vec<usize> = chunk.iter().map(|(k, _)| *k).collect();
                let batch: Vec<OutgoingMessage> = chunk.iter().map(|(_, m)| m.clone()).collect();
                let (port, queue) = (self.inner.queue.clone(), queue.clone());
                sends.spawn(async move {
                    let result = port.send_batch(&queue, batch).await;
                    (owners, queue, result)
                });
            }
        }
        let mut unsent: Vec<Option<String>> = vec![None; outboxes.len()];
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((_, _, Ok(()))) => {}
                Ok((owners, queue, Err(e))) => {
                    for k in owners {
                        unsent[k] = Some(format!("{queue}: {e}"));
                    }
                }
                // A send task that panicked: which sagas it carried is lost
                // with it, so none is cleared; the sweeper re-sends.
                Err(e) => unsent.iter_mut().for_each(|u| *u = Some(format!("send task failed: {e}"))),
            }
        }
        let mut clears = JoinSet::new();
        for (outbox, unsent) in outboxes.into_iter().zip(unsent) {
            if let Some(error) = unsent {
                tracing::warn!(saga_id = %outbox.saga_id, error = %error, "Outbox committed but not sent; the sweeper will send it.");
                continue;
            }
            let store = self.inner.store.clone();
            clears.spawn(async move {
                let result = store.clear_outbox(&outbox.saga_id, outbox.revision).await;
                (outbox.saga_id, result)
            });
        }
        let mut cleared = 0;
        while let Some(joined) = clears.join_next().await {
            match joined {
                Ok((_, Ok(()))) => cleared += 1,
                Ok((saga_id, Err(e))) => {
                    tracing::warn!(saga_id = %saga_id, error = %e, "Outbox sent but not cleared; the sweeper will re-send it harmlessly.");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "An outbox clear task failed; the sweeper will re-send harmlessly.")
                }
            }
        }
        cleared
    }
}

/// The span of one event applied to one saga: the saga id, the step,
/// command id and attempt a reply is about, and the saga's trace id (the
/// stored one, or a start request's), so every log line it covers has them.
fn event_span(saga_id: &str, input: &Input, state: Option<&SagaInstance>) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "saga_event",
        saga_id = %saga_id,
        event = input.kind(),
        step = Empty,
        command_id = Empty,
        attempt = Empty,
        trace_id = Empty,
    );
    if let Input::Reply { reply: r, .. } = input {
        span.record("step", r.step);
        span.record("attempt", r.attempt);
        span.record("command_id", command_id(saga_id, r.step, r.phase, r.attempt).as_str());
    }
    let trace = match input {
        Input::Start { trace, .. } => Some(trace.as_str()),
        _ => state.and_then(|s| s.trace.as_deref()),
    };
    if let Some(tp) = trace.and_then(|t| TraceParent::parse(t).ok()) {
        span.record("trace_id", tp.trace_id().as_str());
        sqsaga_protocol::trace::link_span(&span, &tp);
    }
    span
}

fn reply_event(r: ReplyMessage) -> Reply {
    Reply {
        step: r.step,
        phase: r.phase,
        attempt: r.attempt,
        outcome: r.outcome,
        worker: Some(WorkerStamp { instance: r.worker.instance, fingerprint: r.worker.fingerprint }),
    }
}

/// What a command carries: the saga input and the outputs of finished steps.
fn payload_of(state: &SagaInstance, defs: &Definitions) -> Value {
    let mut outputs = Map::new();
    if let Some(def) = defs.get(&state.saga, state.version) {
        for (step, st) in def.steps.iter().zip(&state.steps) {
            if let Some(output) = &st.output {
                outputs.insert(step.name.clone(), output.clone());
            }
        }
    }
    json!({ "input": state.input, "outputs": outputs })
}
