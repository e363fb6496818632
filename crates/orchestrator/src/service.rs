//! The orchestrator's event loop.
//!
//! Pollers receive batches from the orchestrator queue; a timer loop turns
//! due sagas (the store's due-time index) into `Wake` events; a sweeper
//! re-sends outboxes a crashed writer left behind. All three funnel into
//! [`Orchestrator::apply`], which groups events by saga, runs them through
//! the state machine, and commits every changed saga in one `SagaStore::commit`
//! call — with the SQLite adapter, concurrent calls from several pollers land
//! in the same group commit. A conflicting write (another poller or replica
//! got there first) is re-read and re-applied, so no update is lost and a
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
//! replica's own bookkeeping ([`SagaCounts`](crate::stats::SagaCounts)), read from the store once at
//! start, never by periodic scans.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sqsaga_core::Millis;
use sqsaga_core::machine::{
    Action, CommandSpec, Event, Reply, SagaInstance, SagaStatus, WorkerStamp, command_id, decide, start,
};
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Command, Envelope, ReplyMessage, Signing, TraceParent};
use sqsaga_queue::{MAX_BATCH, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage};
use sqsaga_store::{
    Consumed, HistoryEntry, OutboxMessage, PendingOutbox, SagaStore, SagaWrite, StoreError, WriteOutcome,
};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::definitions::Definitions;
use crate::fleet::FleetMonitor;
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
}

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

/// One thing that happened to one saga.
#[derive(Debug, Clone)]
enum Work {
    /// `trace` is the start request's `traceparent` (or one derived from the
    /// saga id when it came without): stored on the saga, stamped on its commands.
    Start {
        saga: String,
        version: u32,
        input: Value,
        trace: String,
    },
    Reply(Reply),
    Wake,
    Resume,
}

impl Work {
    fn kind(&self) -> &'static str {
        match self {
            Work::Start { .. } => "start",
            Work::Reply(_) => "reply",
            Work::Wake => "wake",
            Work::Resume => "resume",
        }
    }
}

/// The receipts of a received batch, for deleting consumed messages in
/// the saga commit.
struct Consumption {
    /// Per work item, its message's receipt.
    receipts: Vec<String>,
    /// Messages that needed no saga change (heartbeats).
    always: Vec<String>,
}

/// What `apply_tracked` did with a batch of work items.
struct Applied {
    /// Per item.
    dispositions: Vec<Disposition>,
    /// Per item: the store deleted its message with the commit.
    consumed: Vec<bool>,
    /// The store deleted the `always` messages.
    always_consumed: bool,
}

/// What became of an incoming message.
enum Disposition {
    /// Applied (or harmlessly ignored): delete it.
    Ack,
    /// Cannot ever be processed: dead-letter it with this reason.
    DeadLetter(String),
    /// Processing failed for now: leave it to come back.
    Retry,
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
    /// When the timer loop polls next.
    timers: TimerSchedule,
}

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
            let items = due.into_iter().map(|id| (id, Work::Wake)).collect();
            self.apply(items).await?;
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
        Ok(count)
    }

    /// Decodes a received batch, applies it, then deletes or dead-letters
    /// each message according to what happened to it.
    pub async fn handle_messages(&self, messages: Vec<ReceivedMessage>) {
        let stats = &self.inner.stats;
        stats.messages_received.inc_by(messages.len() as u64);
        let mut dispositions: Vec<Disposition> = Vec::with_capacity(messages.len());
        let mut items: Vec<(String, Work)> = Vec::new();
        let mut item_message: Vec<usize> = Vec::new();
        let mut plain: Vec<usize> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.decode(message) {
                Ok(Some((saga_id, work))) => {
                    items.push((saga_id, work));
                    item_message.push(index);
                    dispositions.push(Disposition::Ack);
                }
                Ok(None) => {
                    plain.push(index);
                    dispositions.push(Disposition::Ack);
                }
                Err(reason) => dispositions.push(Disposition::DeadLetter(reason)),
            }
        }
        // Messages the store already deleted with the writes they caused.
        let mut deleted = vec![false; messages.len()];
        if !items.is_empty() {
            let consumption = Consumption {
                receipts: item_message.iter().map(|&i| messages[i].receipt_handle.clone()).collect(),
                always: plain.iter().map(|&i| messages[i].receipt_handle.clone()).collect(),
            };
            match self.apply_tracked(items, Some(consumption)).await {
                Ok(applied) => {
                    for (i, d) in applied.dispositions.into_iter().enumerate() {
                        dispositions[item_message[i]] = d;
                        deleted[item_message[i]] = applied.consumed[i];
                    }
                    if applied.always_consumed {
                        for &i in &plain {
                            deleted[i] = true;
                        }
                    }
                }
                Err(e) => {
                    stats.store_errors.inc();
                    tracing::warn!(error = %e, "Cannot apply events; the messages will be retried.");
                    for &i in &item_message {
                        dispositions[i] = Disposition::Retry;
                    }
                }
            }
        }
        let queue = &self.inner.options.queue;
        let mut acks = Vec::new();
        for ((message, d), deleted) in messages.iter().zip(dispositions).zip(deleted) {
            match d {
                Disposition::Ack if deleted => {}
                Disposition::Ack => acks.push(message.receipt_handle.clone()),
                Disposition::DeadLetter(reason) => {
                    tracing::warn!(message_id = %message.message_id, reason = %reason, "Dead-lettering a message the orchestrator cannot process.");
                    match self.inner.queue.dead_letter(queue, message, &reason).await {
                        Ok(()) => {
                            stats.dead_lettered.inc();
                        }
                        Err(e) => {
                            stats.queue_errors.inc();
                            tracing::warn!(message_id = %message.message_id, error = %e, "Cannot dead-letter; it will come back.");
                        }
                    }
                }
                Disposition::Retry => {}
            }
        }
        if !acks.is_empty() {
            match self.inner.queue.delete_batch(queue, &acks).await {
                Ok(failed) => {
                    for e in failed {
                        tracing::debug!(error = %e, "A processed message could not be deleted; its redelivery will be ignored.");
                    }
                }
                Err(e) => {
                    stats.queue_errors.inc();
                    tracing::warn!(error = %e, "Cannot delete processed messages; their redelivery will be ignored.");
                }
            }
        }
    }

    /// Turns a message into work for one saga, `None` for messages that need
    /// no saga change (heartbeats), or a dead-letter reason.
    fn decode(&self, message: &ReceivedMessage) -> Result<Option<(String, Work)>, String> {
        let envelope = Envelope::decode(&message.body).map_err(|e| e.to_string())?;
        // Before the message can touch a saga: an unsigned (when required),
        // forged or stale one is dead-lettered with the reason.
        if let Some(signing) = &self.inner.options.signing {
            let attr = message.attributes.get(ATTR_SIGNATURE).map(String::as_str);
            if let Err(e) = signing.verify(&message.body, attr, self.inner.clock.now()) {
                return Err(format!("signature check failed: {e}"));
            }
        }
        match envelope {
            Envelope::Start(s) => {
                let def = match s.version {
                    Some(v) => self.inner.defs.get(&s.saga, v),
                    None => self.inner.defs.latest(&s.saga),
                };
                let Some(def) = def else {
                    return Err(match s.version {
                        Some(v) => format!("unknown saga `{}` version {v}", s.saga),
                        None => format!("unknown saga `{}`", s.saga),
                    });
                };
                if s.saga_id.is_empty() {
                    return Err("start request with an empty saga_id".to_string());
                }
                self.inner.defs.check_input(&def, &s.input)?;
                let trace = match message.attributes.get(ATTR_TRACEPARENT).map(|v| TraceParent::parse(v)) {
                    Some(Ok(tp)) => tp,
                    Some(Err(e)) => {
                        tracing::debug!(saga_id = %s.saga_id, error = %e, "Start request has a malformed traceparent; deriving one.");
                        TraceParent::derived(&s.saga_id)
                    }
                    None => TraceParent::derived(&s.saga_id),
                };
                let work = Work::Start {
                    saga: def.name.clone(),
                    version: def.version,
                    input: s.input,
                    trace: trace.to_string(),
                };
                Ok(Some((s.saga_id, work)))
            }
            Envelope::Reply(r) => {
                self.inner.fleet.record_step(&r.worker.service, &r.worker.fingerprint);
                Ok(Some((r.saga_id.clone(), Work::Reply(reply_event(r)))))
            }
            Envelope::Resume(r) => Ok(Some((r.saga_id, Work::Resume))),
            Envelope::Heartbeat(h) => {
                self.inner.fleet.observe(&h);
                Ok(None)
            }
            Envelope::Command(c) => {
                Err(format!("command `{}` for service queue arrived on the orchestrator queue", c.command))
            }
        }
    }

    /// Applies work items; returns an error only if the store failed as a whole.
    pub async fn apply_events(&self, items: Vec<(String, Event)>) -> Result<(), OrchestratorError> {
        let items = items
            .into_iter()
            .map(|(id, e)| {
                let work = match e {
                    Event::Reply(r) => Work::Reply(r),
                    Event::Wake => Work::Wake,
                    Event::Resume => Work::Resume,
                };
                (id, work)
            })
            .collect();
        self.apply(items).await
    }

    async fn apply(&self, items: Vec<(String, Work)>) -> Result<(), OrchestratorError> {
        self.apply_tracked(items, None).await.map(|_| ())
    }

    /// The heart of the loop: group by saga, decide, commit, re-apply on conflict.
    /// With `consumption` (the receipt of each item's message, and of the
    /// batch's messages that needed no saga change), a store that shares a
    /// transaction with the queue deletes them with the writes they caused.
    async fn apply_tracked(
        &self,
        items: Vec<(String, Work)>,
        consumption: Option<Consumption>,
    ) -> Result<Applied, OrchestratorError> {
        let stats = &self.inner.stats;
        let mut results: Vec<Option<Disposition>> = (0..items.len()).map(|_| None).collect();
        let mut consumed = vec![false; items.len()];
        // The plain messages ride with the first commit (taken from here).
        let mut always = consumption.as_ref().map(|c| c.always.clone()).unwrap_or_default();
        let mut always_consumed = false;
        // saga id → indexes of its items, in arrival order.
        let mut pending: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (id, _)) in items.iter().enumerate() {
            pending.entry(id.clone()).or_default().push(i);
        }
        for _round in 0..self.inner.options.max_conflict_rounds {
            if pending.is_empty() {
                break;
            }
            let ids: Vec<String> = pending.keys().cloned().collect();
            let records: HashMap<String, (SagaInstance, u64)> = self
                .inner
                .store
                .load(&ids)
                .await?
                .into_iter()
                .map(|r| (r.instance.id.clone(), (r.instance, r.revision)))
                .collect();
            let now = self.inner.clock.now();
            let mut writes = Vec::new();
            let mut write_ids = Vec::new();
            let mut finished = Vec::new();
            // Items acknowledged without a write (ignored events), deleted
            // with this round's writes when the store can.
            let mut ignored_items: Vec<usize> = Vec::new();
            for (id, indexes) in &pending {
                let record = records.get(id);
                let mut current = record.map(|(s, _)| s.clone());
                let mut history = Vec::new();
                let mut specs: Vec<CommandSpec> = Vec::new();
                for &i in indexes {
                    let work = &items[i].1;
                    let span = event_span(id, work, current.as_ref());
                    let _entered = span.enter();
                    let outcome = self.step(id, current.as_ref(), work, now);
                    match outcome {
                        Step::Changed { state, actions, note } => {
                            stats.events_applied.inc();
                            if matches!(work, Work::Start { .. }) {
                                stats.sagas_started.inc();
                            }
                            tracing::debug!(saga_id = %id, event = work.kind(), note = %note, "Saga event applied.");
                            history.push(HistoryEntry { at: now, event: work.kind().to_string(), note });
                            specs.extend(actions.into_iter().map(|Action::Dispatch(c)| c));
                            current = Some(*state);
                            results[i] = Some(Disposition::Ack);
                        }
                        Step::Ignored(note) => {
                            stats.events_ignored.inc();
                            tracing::debug!(saga_id = %id, event = work.kind(), note = %note, "Saga event ignored.");
                            results[i] = Some(Disposition::Ack);
                        }
                        Step::Poison(reason) => results[i] = Some(Disposition::DeadLetter(reason)),
                        Step::Stuck(reason) => {
                            tracing::error!(saga_id = %id, reason = %reason, "Cannot apply an event; it will be retried.");
                            results[i] = Some(Disposition::Retry);
                        }
                    }
                }
                match (current, history.is_empty()) {
                    (Some(state), false) => {
                        let outbox = self.outbox(&state, &specs, now);
                        write_ids.push(id.clone());
                        writes.push(SagaWrite {
                            instance: state,
                            expected_revision: record.map(|(_, rev)| *rev),
                            history,
                            outbox,
                        });
                    }
                    _ => {
                        ignored_items.extend(indexes.iter().filter(|&&i| matches!(results[i], Some(Disposition::Ack))));
                        finished.push(id.clone());
                    }
                }
            }
            for id in finished {
                pending.remove(&id);
            }
            if writes.is_empty() {
                break;
            }
            let acked = |indexes: &[usize]| -> Vec<usize> {
                indexes.iter().copied().filter(|&i| matches!(results[i], Some(Disposition::Ack))).collect()
            };
            let write_items: Vec<Vec<usize>> =
                write_ids.iter().map(|id| pending.get(id).map(|ix| acked(ix)).unwrap_or_default()).collect();
            // Ignored items' and (first round only) the batch's plain
            // messages go with whatever this commit does.
            let consumed_now = consumption
                .as_ref()
                .map(|c| {
                    let mut always = std::mem::take(&mut always);
                    always.extend(ignored_items.iter().map(|&i| c.receipts[i].clone()));
                    let receipts = |ix: &Vec<usize>| ix.iter().map(|&i| c.receipts[i].clone()).collect();
                    Consumed {
                        queue: self.inner.options.queue.clone(),
                        per_write: write_items.iter().map(receipts).collect(),
                        always,
                    }
                })
                .unwrap_or_default();
            let outboxes: Vec<Vec<OutboxMessage>> = writes.iter().map(|w| w.outbox.clone()).collect();
            // For the bookkeeping: each write's status change and timer.
            let moves: Vec<(Option<SagaStatus>, SagaStatus, Option<Millis>)> = writes
                .iter()
                .map(|w| {
                    let from = records.get(&w.instance.id).map(|(s, _)| s.status);
                    let timer = (!w.instance.status.is_terminal()).then(|| w.instance.next_wakeup()).flatten();
                    (from, w.instance.status, timer)
                })
                .collect();
            let (outcomes, deleted) = self.inner.store.commit_consuming(writes, consumed_now).await?;
            // `None`: this store never deletes; the caller deletes everything.
            let store_deleted = consumption.is_some() && deleted.is_some();
            for e in deleted.unwrap_or_default() {
                tracing::debug!(error = %e, "A processed message could not be deleted; its redelivery will be ignored.");
            }
            if store_deleted {
                always_consumed = true;
                for &i in &ignored_items {
                    consumed[i] = true;
                }
            }
            let mut to_deliver = Vec::new();
            for ((((id, outcome), outbox), items_of_write), (from, to, timer)) in
                write_ids.iter().zip(outcomes).zip(outboxes).zip(&write_items).zip(moves)
            {
                match outcome {
                    WriteOutcome::Committed { revision, outbox_pending } => {
                        stats.sagas.transition(from, to);
                        if let Some(at) = timer {
                            let wait = Duration::from_millis(at.saturating_sub(now));
                            self.inner.timers.arm(tokio::time::Instant::now() + wait);
                        }
                        if store_deleted {
                            for &i in items_of_write {
                                consumed[i] = true;
                            }
                        }
                        stats.commands_sent.inc_by(outbox.len() as u64);
                        if outbox_pending {
                            to_deliver.push(PendingOutbox { saga_id: id.clone(), revision, messages: outbox });
                        }
                        pending.remove(id);
                    }
                    WriteOutcome::Conflict | WriteOutcome::AlreadyExists => {
                        stats.write_conflicts.inc();
                        tracing::debug!(saga_id = %id, "Write conflict; re-reading and re-applying.");
                        if let Some(indexes) = pending.get(id) {
                            for &i in indexes {
                                results[i] = None;
                            }
                        }
                    }
                }
            }
            self.deliver_all(to_deliver).await;
        }
        // Whatever is still pending lost every round: retry later.
        let dispositions = results.into_iter().map(|r| r.unwrap_or(Disposition::Retry)).collect();
        Ok(Applied { dispositions, consumed, always_consumed })
    }

    fn step(&self, id: &str, current: Option<&SagaInstance>, work: &Work, now: Millis) -> Step {
        match (work, current) {
            (Work::Start { saga, version, input, trace }, None) => {
                let Some(def) = self.inner.defs.get(saga, *version) else {
                    return Step::Poison(format!("unknown saga `{saga}` version {version}"));
                };
                let mut d = start(&def, id, input.clone(), now);
                d.state.trace = Some(trace.clone());
                Step::Changed { state: Box::new(d.state), actions: d.actions, note: d.note }
            }
            (Work::Start { .. }, Some(_)) => Step::Ignored("duplicate start request".to_string()),
            (Work::Reply(r), None) => {
                Step::Poison(format!("reply for unknown saga `{id}` (step {}, attempt {})", r.step, r.attempt))
            }
            (Work::Wake | Work::Resume, None) => Step::Ignored("no such saga".to_string()),
            (work, Some(state)) => {
                let Some(def) = self.inner.defs.get(&state.saga, state.version) else {
                    return Step::Stuck(format!(
                        "definition {} v{} is not loaded; load it to let this saga continue",
                        state.saga, state.version
                    ));
                };
                let event = match work {
                    Work::Reply(r) => Event::Reply(r.clone()),
                    Work::Wake => Event::Wake,
                    Work::Resume => Event::Resume,
                    Work::Start { .. } => return Step::Ignored("duplicate start request".to_string()),
                };
                let d = decide(&def, state, &event, now);
                if d.changed {
                    Step::Changed { state: Box::new(d.state), actions: d.actions, note: d.note }
                } else {
                    Step::Ignored(d.note)
                }
            }
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
fn event_span(saga_id: &str, work: &Work, state: Option<&SagaInstance>) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::info_span!(
        "saga_event",
        saga_id = %saga_id,
        event = work.kind(),
        step = Empty,
        command_id = Empty,
        attempt = Empty,
        trace_id = Empty,
    );
    if let Work::Reply(r) = work {
        span.record("step", r.step);
        span.record("attempt", r.attempt);
        span.record("command_id", command_id(saga_id, r.step, r.phase, r.attempt).as_str());
    }
    let trace = match work {
        Work::Start { trace, .. } => Some(trace.as_str()),
        _ => state.and_then(|s| s.trace.as_deref()),
    };
    if let Some(tp) = trace.and_then(|t| TraceParent::parse(t).ok()) {
        span.record("trace_id", tp.trace_id().as_str());
        sqsaga_protocol::trace::link_span(&span, &tp);
    }
    span
}

/// What one event did to one saga.
enum Step {
    Changed { state: Box<SagaInstance>, actions: Vec<Action>, note: String },
    Ignored(String),
    Poison(String),
    Stuck(String),
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
