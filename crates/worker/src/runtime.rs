//! The worker loop: poll the service's queue, run each command through the
//! participant's barrier, reply, and only then delete the message.
//!
//! Delivery rules (DESIGN.md, "Failure semantics" and "Poison messages"):
//! - a message is deleted only after its local transaction committed and its
//!   reply was sent; if either fails it is left alone and comes back after the
//!   visibility timeout, which the barrier makes harmless;
//! - a message that cannot be understood (not JSON, not a command, a command
//!   this participant does not have) goes to the dead-letter queue with the
//!   reason as an attribute: never lost, never retried forever;
//! - a transient handler error is replied as such and the message deleted:
//!   the orchestrator owns retries (backoff, attempts); a seed-shaped
//!   message (choreography, no orchestrator) is left for redelivery instead;
//! - a command whose conforming set excludes this worker's fingerprint is not
//!   run (nor judged): it is released at once for a conforming sibling, and
//!   the worker is quarantined until a command includes it (drift.rs);
//! - a command whose contract this worker does not implement is drift, not
//!   poison: it is released for a sibling that implements it.
//!
//! Shutdown: no new receives; a receive already waiting may return, and what
//! it returns is released unstarted; batches in flight finish within the
//! drain budget, after which whatever is left is SQS's to redeliver.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_protocol::{
    ATTR_SIGNATURE, Command, DecodeError, Envelope, ReplyMessage, TraceParent, WorkerInfo, WorkerMessage,
    decode_worker_message,
};
use sqsaga_queue::{MAX_BATCH, MAX_WAIT, OutgoingMessage, Queue, Receive, ReceivedMessage};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, debug, error, info, warn};

use crate::drift::{Drift, Judgement};
use crate::options::{WorkerOptions, seal};
use crate::stats::WorkerStats;
use crate::{AnyParticipant, BarrierOutcome, CommandContext, WorkerError};

/// First pause after a failed receive; doubled per failure up to the cap.
const RECEIVE_BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest pause between failed receives: short enough to notice recovery fast.
const RECEIVE_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How long a receive in progress may finish once shutdown begins: one that
/// already took messages returns at once (then they are released); an idle
/// long poll does not, and is dropped.
const RECEIVE_GRACE: Duration = Duration::from_millis(250);
/// How often the worker logs a summary of what it did (INFO).
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after an empty receive when no long poll is configured (wait = 0),
/// so an idle worker does not spin on its queue.
const EMPTY_POLL_PAUSE: Duration = Duration::from_millis(50);
/// Pause after releasing commands this worker may not run. Every receive
/// counts towards the queue's maxReceiveCount, so a drifted worker that kept
/// re-receiving a command would push it into the DLQ; pausing leaves the
/// command to conforming siblings. While quarantined, only one poller polls,
/// one message at a time (see `poll_loop`).
const NONCONFORMING_PAUSE: Duration = Duration::from_secs(1);
/// Message attribute propagated from a command to its reply.
const TRACEPARENT: &str = sqsaga_protocol::ATTR_TRACEPARENT;

/// The worker runtime of one participant service.
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    options: WorkerOptions,
    queue: Arc<dyn Queue>,
    participant: Arc<dyn AnyParticipant>,
    stats: Arc<WorkerStats>,
    /// Drift guard: quarantine state and heartbeat bookkeeping.
    drift: Drift,
}

impl Worker {
    pub fn new(options: WorkerOptions, queue: Arc<dyn Queue>, participant: Arc<dyn AnyParticipant>) -> Self {
        let drift = Drift::new(options.started_at.unwrap_or_else(|| options.clock.now()));
        Worker {
            inner: Arc::new(Inner { options, queue, participant, stats: Arc::new(WorkerStats::default()), drift }),
        }
    }

    /// The drift guard's quarantine: `Some(reason)` while this worker
    /// refuses commands because it does not conform (for `/readyz`).
    pub fn quarantine(&self) -> watch::Receiver<Option<String>> {
        self.inner.drift.subscribe()
    }

    /// One poller iteration's work on a batch the caller received from
    /// [`WorkerOptions::queue`] (with [`WorkerOptions::visibility`]): run
    /// each command through the barrier, reply, delete — what a poller does
    /// after its receive. For drivers that decide when a worker receives
    /// (the simulator); returns how many commands were released for a
    /// sibling (drift guard).
    pub async fn handle(&self, messages: Vec<ReceivedMessage>) -> usize {
        WorkerStats::add(&self.inner.stats.received, messages.len());
        handle_batch(&self.inner, messages).await
    }

    /// How this worker runs.
    pub fn options(&self) -> &WorkerOptions {
        &self.inner.options
    }

    /// Live counters, shared with the running worker.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.inner.stats.clone()
    }

    /// Registers the worker's metrics (its stats and the drift guard's
    /// quarantine), every family labelled with the worker's `service`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let service = registry.sub_registry_with_label(("service".into(), self.inner.options.service.clone().into()));
        self.inner.stats.register(service);
        self.inner.drift.register_metrics(service);
    }

    /// Runs until `shutdown` resolves, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        let inner = self.inner;
        let pollers = inner.options.concurrency.max(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // One INFO line a minute with what was done, instead of one per command.
        let summary = {
            let (stats, stop) = (inner.stats.clone(), stop_rx.clone());
            tokio::spawn(summary_loop(stats, SUMMARY_INTERVAL, stop))
        };
        // Heartbeats first: the fleet view should know this worker before it takes work.
        let heartbeats = {
            let (i, stop) = (inner.clone(), stop_rx.clone());
            tokio::spawn(async move {
                crate::drift::heartbeat_loop(&i.options, i.queue.as_ref(), &i.stats, &i.drift, stop).await;
            })
        };
        for n in 0..pollers {
            tasks.spawn(poll_loop(inner.clone(), n, stop_rx.clone()));
        }
        info!(
            service = %inner.options.service,
            instance = %inner.options.instance,
            queue = %inner.options.queue,
            pollers,
            fingerprint = %inner.options.fingerprint,
            "Worker started."
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(ended) = tasks.join_next() => {
                    // A poller only ends on its own by panicking: start
                    // another. A cancelled one means the runtime is shutting
                    // down (its replacement would be cancelled as well).
                    match ended {
                        Err(e) if e.is_cancelled() => break,
                        Err(e) => error!(error = %e, "A poller stopped unexpectedly; starting a new one."),
                        Ok(()) => {}
                    }
                    tasks.spawn(poll_loop(inner.clone(), pollers, stop_rx.clone()));
                }
            }
        }
        let _ = stop_tx.send(true);
        let _ = heartbeats.await;
        let _ = summary.await;
        let in_flight = inner.stats.in_flight.get();
        info!(
            in_flight,
            drain_timeout_ms = millis(inner.options.drain_timeout),
            "Shutting down; draining in-flight work."
        );
        let drained =
            tokio::time::timeout(inner.options.drain_timeout, async { while tasks.join_next().await.is_some() {} })
                .await;
        match drained {
            Ok(()) => info!("Worker stopped; all in-flight work finished."),
            Err(_) => {
                let left = inner.stats.in_flight.get();
                tasks.abort_all();
                warn!(
                    in_flight = left,
                    "Drain budget exhausted; unfinished messages will be redelivered after their visibility timeout."
                );
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Logs, every `every`, what the worker did since the last line (nothing
/// when it did nothing): per-command lines are at debug, so an INFO log
/// of a busy worker stays readable.
async fn summary_loop(stats: Arc<WorkerStats>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut last = stats.snapshot();
    while !pause(every, &mut stop).await {
        let now = stats.snapshot();
        let processed = now.processed.saturating_sub(last.processed);
        if processed > 0 || now.dead_lettered > last.dead_lettered {
            info!(
                processed,
                refused = now.refused.saturating_sub(last.refused),
                failed = now.failed.saturating_sub(last.failed),
                duplicates = now.duplicates.saturating_sub(last.duplicates),
                expired = now.expired.saturating_sub(last.expired),
                dead_lettered = now.dead_lettered.saturating_sub(last.dead_lettered),
                in_flight = now.in_flight,
                interval_s = every.as_secs(),
                "Commands handled."
            );
        }
        last = now;
    }
}

/// Sleeps for `d`, or less if shutdown begins. Returns whether to stop.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

async fn poll_loop(inner: Arc<Inner>, poller: usize, mut stop: watch::Receiver<bool>) {
    let options = &inner.options;
    let request = Receive { max: MAX_BATCH, wait: options.wait.min(MAX_WAIT), visibility: Some(options.visibility) };
    let mut backoff = RECEIVE_BACKOFF_START;
    loop {
        if *stop.borrow() {
            break;
        }
        // Quarantined (drift guard): one poller taking one message at a
        // time, so a drifted worker bounces at most about one command a
        // second back to its siblings (every receive counts towards the
        // queue's maxReceiveCount) while still seeing the command that
        // tells it it conforms again.
        let quarantined = inner.drift.is_quarantined();
        if quarantined && poller > 0 {
            if pause(NONCONFORMING_PAUSE, &mut stop).await {
                break;
            }
            continue;
        }
        let request = if quarantined { Receive { max: 1, ..request } } else { request };
        // Raced against shutdown, with a grace: a receive that already took
        // messages returns within it, and they are released at once (below);
        // an idle long poll (up to 20 s) is dropped, so an idle worker exits
        // at once. Nothing a dropped receive held is lost: at worst it is
        // redelivered after its visibility timeout.
        let receive = inner.queue.receive(&options.queue, request);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = async { stop.wait_for(|stopped| *stopped).await.is_ok() } => match tokio::time::timeout(RECEIVE_GRACE, &mut receive).await {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        match received {
            Err(e) => {
                warn!(
                    queue = %options.queue,
                    poller,
                    error = %e,
                    retry_in_ms = millis(backoff),
                    "Cannot receive from the queue; retrying."
                );
                if pause(backoff, &mut stop).await {
                    break;
                }
                backoff = (backoff * 2).min(RECEIVE_BACKOFF_CAP);
            }
            Ok(messages) => {
                backoff = RECEIVE_BACKOFF_START;
                if messages.is_empty() {
                    if request.wait.is_zero() && pause(EMPTY_POLL_PAUSE, &mut stop).await {
                        break;
                    }
                    continue;
                }
                WorkerStats::add(&inner.stats.received, messages.len());
                if *stop.borrow() {
                    release(&inner, &messages, "shutting down").await;
                    break;
                }
                let released = handle_batch(&inner, messages).await;
                if released > 0 && pause(NONCONFORMING_PAUSE, &mut stop).await {
                    break;
                }
            }
        }
    }
    debug!(poller, "Poller stopped.");
}

/// Makes messages visible again at once, for a sibling (or a later run).
async fn release(inner: &Inner, messages: &[ReceivedMessage], why: &str) {
    for m in messages {
        match inner.queue.change_visibility(&inner.options.queue, &m.receipt_handle, Duration::ZERO).await {
            Ok(()) => {
                WorkerStats::add(&inner.stats.released, 1);
                info!(message_id = %m.message_id, reason = why, "Message released unstarted.");
            }
            Err(e) => warn!(
                message_id = %m.message_id,
                error = %e,
                "Cannot release the message; it comes back after its visibility timeout."
            ),
        }
    }
}

/// Replies to one queue, each with the index of the job it answers.
type Replies = Vec<(usize, OutgoingMessage)>;

/// Decrements the in-flight gauge when a batch ends, even if it is aborted.
struct InFlight<'a> {
    stats: &'a WorkerStats,
    n: i64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.dec_by(self.n);
    }
}

/// A message ready to run.
struct Job {
    message: ReceivedMessage,
    ctx: CommandContext,
    /// The sqsaga command, to reply to; `None` for seed-shaped messages.
    command: Option<Command>,
    /// For logs: the command id, or the message id of a seed message.
    id: String,
    /// The saga's trace context, from the message's `traceparent`.
    trace: Option<TraceParent>,
    /// Covers the command from execution to its delete; carries the ids and
    /// the trace id, so every log line about it does too.
    span: tracing::Span,
}

impl Job {
    fn new(message: &ReceivedMessage, ctx: CommandContext, command: Option<Command>, id: String) -> Self {
        let trace = trace_of(message);
        let trace_id = trace.map(|t| t.trace_id()).unwrap_or_default();
        let span = tracing::info_span!(
            "command",
            saga_id = %ctx.saga_id,
            step = %ctx.step,
            command_id = %id,
            attempt = ctx.attempt,
            command = %ctx.command,
            trace_id = %trace_id,
        );
        if let Some(parent) = &trace {
            sqsaga_protocol::trace::link_span(&span, parent);
        }
        Job { message: message.clone(), ctx, command, id, trace, span }
    }

    /// The trace id for log fields; empty when the message had none.
    fn trace_id(&self) -> String {
        self.trace.map(|t| t.trace_id()).unwrap_or_default()
    }
}

/// The message's trace context; a malformed `traceparent` is ignored (it
/// costs the trace, never the message).
fn trace_of(message: &ReceivedMessage) -> Option<TraceParent> {
    let value = message.attributes.get(TRACEPARENT)?;
    match TraceParent::parse(value) {
        Ok(tp) => Some(tp),
        Err(e) => {
            debug!(message_id = %message.message_id, error = %e, "Ignoring a malformed traceparent.");
            None
        }
    }
}

/// Checks the message's signature under the worker's policy; `Some(reason)`
/// when it must be dead-lettered instead of run.
fn signature_problem(inner: &Inner, message: &ReceivedMessage) -> Option<String> {
    let signing = inner.options.signing.as_ref()?;
    let attr = message.attributes.get(ATTR_SIGNATURE).map(String::as_str);
    match signing.verify(&message.body, attr, inner.options.clock.now()) {
        Ok(_) => None,
        Err(e) => Some(format!("signature check failed: {e}")),
    }
}

/// What to do with one received message.
enum Plan {
    Run(Box<Job>),
    /// Send to the DLQ with this reason.
    Poison(String),
    /// Not for this worker (drift guard): release for a sibling.
    NotConforming(String),
    /// Needs a contract this worker does not implement: release for a sibling that does.
    MissingContract(String),
}

fn plan(inner: &Inner, message: &ReceivedMessage) -> Plan {
    let participant = &inner.participant;
    let decoded = match decode_worker_message(&message.body) {
        Ok(d) => d,
        Err(e) => return Plan::Poison(decode_reason(&e)),
    };
    match decoded {
        WorkerMessage::Command(c) => {
            // Checked first: a drifted worker must not judge (let alone
            // dead-letter) a command its conforming siblings can run. This
            // is also where quarantine starts and ends (drift.rs).
            if let Judgement::Release(why) = inner.drift.judge(&inner.options, &c) {
                return Plan::NotConforming(why);
            }
            // After the conformance check (a drifted worker, say one with a
            // stale key, must not dead-letter what its siblings can verify),
            // before anything else: an unverified command is never judged further.
            if let Some(reason) = signature_problem(inner, message) {
                return Plan::Poison(reason);
            }
            // A contract this worker lacks is drift (an older build, a
            // handler switched off), not poison: a sibling that implements
            // it takes the command. If none ever does, the redrive policy
            // still ends in the DLQ, and the fleet view reports the gap.
            let contracts = participant.contracts();
            if !contracts.contains(&c.contract) {
                return Plan::MissingContract(format!(
                    "contract `{}` of command `{}` is not implemented here (implemented: {})",
                    c.contract,
                    c.command,
                    if contracts.is_empty() { "none".to_string() } else { contracts.join(", ") }
                ));
            }
            // A fence resolves an in-doubt step that has no compensation; it
            // runs through the barrier alone, with no handler.
            let fence = c.command == sqsaga_core::machine::FENCE_COMMAND && c.phase == Phase::Compensation;
            let described =
                if fence { Some((c.contract.as_str(), Phase::Compensation)) } else { participant.describe(&c.command) };
            let Some((contract, phase)) = described else {
                return Plan::Poison(format!("unknown command `{}`", c.command));
            };
            if contract != c.contract {
                return Plan::Poison(format!(
                    "command `{}` belongs to contract `{contract}`, not `{}`",
                    c.command, c.contract
                ));
            }
            if phase != c.phase {
                return Plan::Poison(format!(
                    "command `{}` is a {} but the message asks for a {}",
                    c.command,
                    crate::phase_name(phase),
                    crate::phase_name(c.phase)
                ));
            }
            let ctx = CommandContext {
                saga_id: c.saga_id.clone(),
                step: c.step_name.clone(),
                command: c.command.clone(),
                phase: c.phase,
                attempt: c.attempt,
                payload: c.payload.clone(),
                // Compensations never expire, whatever the message says.
                not_after: c.not_after.filter(|_| c.phase == Phase::Action),
                sent_at: Some(c.sent_at),
            };
            let id = c.command_id.clone();
            Plan::Run(Box::new(Job::new(message, ctx, Some(c), id)))
        }
        WorkerMessage::Seed(s) => {
            if let Some(reason) = signature_problem(inner, message) {
                return Plan::Poison(reason);
            }
            match participant.describe(&s.step) {
                Some((_, Phase::Action)) => {}
                Some((_, Phase::Compensation)) => {
                    return Plan::Poison(format!(
                        "seed message names compensation `{}`; it must name the action and set is_compensating",
                        s.step
                    ));
                }
                None => return Plan::Poison(format!("unknown command `{}`", s.step)),
            }
            let (command, phase) = if s.is_compensating {
                match participant.compensation_of(&s.step) {
                    Some(name) => (name.to_string(), Phase::Compensation),
                    None => return Plan::Poison(format!("command `{}` has no registered compensation", s.step)),
                }
            } else {
                (s.step.clone(), Phase::Action)
            };
            let ctx = CommandContext {
                saga_id: s.saga_id,
                step: s.step,
                command,
                phase,
                attempt: message.receive_count,
                payload: s.payload,
                not_after: None,
                sent_at: None,
            };
            Plan::Run(Box::new(Job::new(message, ctx, None, message.message_id.clone())))
        }
    }
}

fn decode_reason(e: &DecodeError) -> String {
    match e {
        DecodeError::NotJson(_) => format!("undecodable body: {e}"),
        DecodeError::BadEnvelope(_) | DecodeError::WrongKind { .. } => format!("not a worker command: {e}"),
        DecodeError::UnsupportedVersion(_) => format!("not a worker command: {e}"),
    }
}

async fn dead_letter(inner: &Inner, message: &ReceivedMessage, reason: &str) {
    match inner.queue.dead_letter(&inner.options.queue, message, reason).await {
        Ok(()) => {
            WorkerStats::add(&inner.stats.dead_lettered, 1);
            warn!(message_id = %message.message_id, reason, "Message moved to the dead-letter queue.");
        }
        Err(e) => {
            WorkerStats::add(&inner.stats.errors, 1);
            warn!(
                message_id = %message.message_id,
                reason,
                error = %e,
                "Cannot dead-letter the message; it comes back after its visibility timeout."
            );
        }
    }
}

/// Handles one received batch; returns how many commands were released
/// because this worker does not conform or lacks their contract.
async fn handle_batch(inner: &Inner, messages: Vec<ReceivedMessage>) -> usize {
    let stats = &inner.stats;
    let n = i64::try_from(messages.len()).unwrap_or(i64::MAX);
    stats.in_flight.inc_by(n);
    let _gauge = InFlight { stats, n };

    let mut jobs = Vec::new();
    let mut nonconforming = Vec::new();
    for message in &messages {
        match plan(inner, message) {
            Plan::Run(job) => jobs.push(*job),
            Plan::Poison(reason) => dead_letter(inner, message, &reason).await,
            Plan::NotConforming(why) => {
                warn!(message_id = %message.message_id, reason = %why, "Command not run: this worker does not conform; released for a sibling.");
                WorkerStats::add(&stats.refused_nonconforming, 1);
                nonconforming.push(message.clone());
            }
            Plan::MissingContract(why) => {
                warn!(message_id = %message.message_id, reason = %why, "Command not run: its contract is not implemented here; released for a sibling.");
                WorkerStats::add(&stats.released_missing_contract, 1);
                nonconforming.push(message.clone());
            }
        }
    }
    if !nonconforming.is_empty() {
        for m in &nonconforming {
            if let Err(e) = inner.queue.change_visibility(&inner.options.queue, &m.receipt_handle, Duration::ZERO).await
            {
                warn!(message_id = %m.message_id, error = %e, "Cannot release the message; it comes back after its visibility timeout.");
            }
        }
    }
    if jobs.is_empty() {
        return nonconforming.len();
    }

    // The whole batch goes to the participant's database at once: on SQLite
    // one job of its group commit (one hand-off to its writer, one fsync
    // shared with other pollers' batches).
    let ctxs: Vec<_> = jobs.iter().map(|job| job.ctx.clone()).collect();
    let results = inner.participant.execute_batch_at(ctxs, inner.options.clock.clone()).await;

    // Decide per job: reply (commands), delete, dead-letter or leave.
    let mut replies: BTreeMap<String, Replies> = BTreeMap::new();
    let mut deletable: Vec<bool> = vec![false; jobs.len()];
    for (i, (job, (result, elapsed))) in jobs.iter().zip(results).enumerate() {
        let ctx = &job.ctx;
        stats.observe(&ctx.command, elapsed);
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) if e.is_poison() => {
                dead_letter(inner, &job.message, &e.to_string()).instrument(job.span.clone()).await;
                continue;
            }
            Err(e) => {
                WorkerStats::add(&stats.errors, 1);
                job.span.in_scope(|| {
                    warn!(
                        saga_id = %ctx.saga_id, step = %ctx.step, command_id = %job.id, attempt = ctx.attempt,
                        trace_id = %job.trace_id(),
                        error = %e,
                        "Local transaction failed; the message will be redelivered."
                    )
                });
                continue;
            }
        };
        record_outcome(stats, job, &outcome);
        match &job.command {
            Some(c) => {
                let worker = WorkerInfo {
                    service: inner.options.service.clone(),
                    instance: inner.options.instance.clone(),
                    fingerprint: inner.options.fingerprint.clone(),
                };
                let reply = ReplyMessage::answering(c, outcome.outcome, worker, inner.options.clock.now());
                // Same trace, the reply's own span id.
                let trace = job.trace.map(|t| t.child(&format!("reply:{}", c.command_id)));
                let out = seal(&inner.options, &Envelope::Reply(reply), trace);
                replies.entry(c.reply_to.clone()).or_default().push((i, out));
            }
            // Choreography has no orchestrator to retry: a transient failure
            // leaves the message to come back after its visibility timeout
            // (and to the DLQ through the redrive policy if it never passes).
            None => deletable[i] = !matches!(outcome.outcome, Outcome::Transient { .. }),
        }
    }

    // Each reply queue's replies go out with the deletes of their commands
    // (one transaction on the embedded backend); the commands that need no
    // reply ride along with the first group. A received batch holds at most
    // 10 messages, so every group fits one call.
    let mut direct: Vec<usize> = (0..jobs.len()).filter(|i| deletable[*i]).collect();
    let mut groups: Vec<(Option<String>, Replies)> = replies.into_iter().map(|(to, out)| (Some(to), out)).collect();
    if groups.is_empty() && !direct.is_empty() {
        groups.push((None, Vec::new()));
    }
    for (reply_to, outgoing) in groups {
        let mut done: Vec<usize> = outgoing.iter().map(|(i, _)| *i).collect();
        done.append(&mut direct);
        let receipts: Vec<String> = done.iter().map(|i| jobs[*i].message.receipt_handle.clone()).collect();
        let messages: Vec<OutgoingMessage> = outgoing.into_iter().map(|(_, m)| m).collect();
        let result = match &reply_to {
            Some(to) => inner.queue.send_then_delete(to, messages, &inner.options.queue, &receipts).await,
            None => inner.queue.delete_batch(&inner.options.queue, &receipts).await,
        };
        match result {
            Ok(failed) => {
                WorkerStats::add(&stats.processed, done.len());
                for e in failed {
                    warn!(error = %e, "Cannot delete a handled message; its redelivery will be answered from the barrier.");
                }
            }
            Err(e) => {
                WorkerStats::add(&stats.errors, done.len());
                warn!(
                    reply_to = reply_to.as_deref().unwrap_or("-"),
                    messages = done.len(),
                    error = %e,
                    "Cannot reply to or delete handled commands; they will be redelivered and answered from the barrier."
                );
            }
        }
    }
    nonconforming.len()
}

fn record_outcome(stats: &WorkerStats, job: &Job, outcome: &BarrierOutcome) {
    let ctx = &job.ctx;
    if outcome.duplicate {
        WorkerStats::add(&stats.duplicates, 1);
    }
    if outcome.null_compensation {
        WorkerStats::add(&stats.null_compensations, 1);
    }
    if outcome.hanging {
        WorkerStats::add(&stats.hanging, 1);
    }
    if outcome.expired {
        WorkerStats::add(&stats.expired, 1);
    }
    let (saga_id, step, command_id, attempt) = (&ctx.saga_id, &ctx.step, &job.id, ctx.attempt);
    let command = &ctx.command;
    let trace_id = job.trace_id();
    let _span = job.span.enter();
    match &outcome.outcome {
        Outcome::Succeeded { .. } => debug!(
            %saga_id, %step, %command_id, attempt, %command, %trace_id,
            duplicate = outcome.duplicate,
            null_compensation = outcome.null_compensation,
            "Command succeeded."
        ),
        Outcome::Refused { reason } => {
            WorkerStats::add(&stats.refused, 1);
            debug!(
                %saga_id, %step, %command_id, attempt, %command, %reason, %trace_id,
                duplicate = outcome.duplicate,
                hanging = outcome.hanging,
                expired = outcome.expired,
                "Command refused."
            );
        }
        Outcome::Transient { error } => {
            WorkerStats::add(&stats.failed, 1);
            warn!(
                %saga_id, %step, %command_id, attempt, %command, %error, %trace_id,
                "Command failed transiently; rolled back."
            );
        }
    }
}
