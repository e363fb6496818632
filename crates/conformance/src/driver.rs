//! The kit's side of the wire: it plays the orchestrator towards one
//! participant service. It sends commands (signed and traced as the
//! orchestrator sends them) or raw bodies to the service's queue, waits for
//! the reply of a given command on its own reply queue, and looks for a
//! dead-lettered copy of a body on the service's DLQ.
//!
//! Replies for other commands of this run are kept for later; anything else
//! on the reply queue (a previous, aborted run) is deleted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqsaga_core::machine::Phase;
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Command, Envelope, ReplyMessage, Signing, TraceParent};
use sqsaga_queue::{ATTR_REASON, MAX_BATCH, OutgoingMessage, Queue, QueueError, Receive, ReceivedMessage, dlq_name};

use crate::contract::CONTRACT;

/// How long a receive on the kit's queues waits at most per call.
const POLL: Duration = Duration::from_secs(2);
/// DLQ messages that are not the one looked for stay hidden this long, so
/// the search does not see them again during the run.
const FOREIGN_HIDDEN: Duration = Duration::from_secs(300);

/// A reply as it arrived.
#[derive(Debug, Clone)]
pub struct Arrived {
    pub reply: ReplyMessage,
    /// The exact body, for the schema and the signature.
    pub body: String,
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A dead-lettered copy as found on the DLQ.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Option<String>,
}

/// One step's command, before it is sent.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub saga_id: String,
    pub step_name: String,
    pub command: String,
    pub phase: Phase,
    pub attempt: u32,
    pub input: Value,
    /// `not_after` relative to now (negative: already past); `None` for none.
    pub not_after_ms: Option<i64>,
}

impl Cmd {
    pub fn action(saga_id: &str, command: &str, input: Value) -> Cmd {
        Cmd {
            saga_id: saga_id.to_string(),
            step_name: "apply".to_string(),
            command: command.to_string(),
            phase: Phase::Action,
            attempt: 1,
            input,
            not_after_ms: Some(60_000),
        }
    }

    pub fn compensation(saga_id: &str, command: &str, input: Value) -> Cmd {
        Cmd { phase: Phase::Compensation, not_after_ms: None, ..Cmd::action(saga_id, command, input) }
    }

    pub fn attempt(mut self, attempt: u32) -> Cmd {
        self.attempt = attempt;
        self
    }

    pub fn command_id(&self) -> String {
        let p = if self.phase == Phase::Action { "a" } else { "c" };
        format!("{}:0:{p}:{}", self.saga_id, self.attempt)
    }
}

/// Talks to one participant service over the queues.
pub struct Driver {
    pub queue: Arc<dyn Queue>,
    /// The participant's service (and queue) name.
    pub service: String,
    /// Where replies are asked to go.
    pub reply_queue: String,
    /// Prefix of every saga id of this run.
    pub run_id: String,
    /// The deployment's signing policy: commands are signed with it.
    pub signing: Option<Arc<Signing>>,
    /// How long to wait for a reply or a dead letter.
    pub timeout: Duration,
    /// Replies of this run that arrived while another was awaited.
    early: HashMap<String, Arrived>,
    /// Set when a wait ran out (no reply, no dead letter): the run then
    /// checks whether the participant still answers at all.
    timed_out: bool,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Driver {
    pub fn new(
        queue: Arc<dyn Queue>,
        service: &str,
        reply_queue: &str,
        signing: Option<Arc<Signing>>,
        timeout: Duration,
    ) -> Driver {
        let run_id = format!("conformance-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Driver {
            queue,
            service: service.to_string(),
            reply_queue: reply_queue.to_string(),
            run_id,
            signing,
            timeout,
            early: HashMap::new(),
            timed_out: false,
        }
    }

    /// A saga id of this run for `case` (unique per call site by `tag`).
    pub fn saga(&self, tag: &str) -> String {
        format!("{}-{tag}", self.run_id)
    }

    /// The command `cmd` as the orchestrator would write it.
    pub fn command(&self, cmd: &Cmd) -> Command {
        let now = now_ms();
        Command {
            command_id: cmd.command_id(),
            saga_id: cmd.saga_id.clone(),
            saga: "conformance".to_string(),
            version: 1,
            step: 0,
            step_name: cmd.step_name.clone(),
            command: cmd.command.clone(),
            phase: cmd.phase,
            attempt: cmd.attempt,
            contract: CONTRACT.to_string(),
            payload: json!({"input": cmd.input, "outputs": {}}),
            deadline: now + 60_000,
            not_after: cmd.not_after_ms.map(|d| now.saturating_add_signed(d)),
            sent_at: now,
            reply_to: self.reply_queue.clone(),
            conforming: None,
        }
    }

    /// Sends `body` to the service's queue with `trace`, signed with `signing` at `signed_at`.
    pub async fn send_raw(
        &self,
        body: String,
        trace: Option<TraceParent>,
        signing: Option<(&Signing, u64)>,
    ) -> Result<(), QueueError> {
        let mut out = OutgoingMessage::new(body);
        if let Some(tp) = trace {
            out = out.with_attribute(ATTR_TRACEPARENT, tp.to_string());
        }
        if let Some((signing, at)) = signing {
            let signature = signing.sign(&out.body, at);
            out = out.with_attribute(ATTR_SIGNATURE, signature);
        }
        self.queue.send(&self.service, out).await
    }

    /// Sends `cmd` signed (when signing is configured) and traced; returns its trace.
    pub async fn send(&self, cmd: &Cmd) -> Result<TraceParent, String> {
        let trace = sqsaga_runtime::sealing::new_trace();
        let body = Envelope::Command(self.command(cmd)).encode();
        let signing = self.signing.as_deref().map(|s| (s, now_ms()));
        self.send_raw(body, Some(trace), signing).await.map_err(|e| format!("cannot send {}: {e}", cmd.command))?;
        Ok(trace)
    }

    /// Sends `cmd` and waits for its reply.
    pub async fn call(&mut self, cmd: &Cmd) -> Result<Arrived, String> {
        self.send(cmd).await?;
        self.reply_to(&cmd.command_id()).await
    }

    /// Waits for the reply to `command_id`.
    pub async fn reply_to(&mut self, command_id: &str) -> Result<Arrived, String> {
        if let Some(found) = self.early.remove(command_id) {
            return Ok(found);
        }
        let until = Instant::now() + self.timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.timed_out = true;
                return Err(format!(
                    "no reply to {command_id} on `{}` within {}s",
                    self.reply_queue,
                    self.timeout.as_secs()
                ));
            }
            let batch = self
                .queue
                .receive(&self.reply_queue, Receive::up_to(MAX_BATCH).wait(left.min(POLL)))
                .await
                .map_err(|e| format!("cannot receive from `{}`: {e}", self.reply_queue))?;
            let mut found = None;
            let mut receipts = Vec::new();
            for m in batch {
                receipts.push(m.receipt_handle.clone());
                let Some(arrived) = self.decode(m)? else { continue };
                if arrived.reply.command_id == command_id && found.is_none() {
                    found = Some(arrived);
                } else if arrived.reply.saga_id.starts_with(&self.run_id) {
                    self.early.entry(arrived.reply.command_id.clone()).or_insert(arrived);
                }
            }
            if !receipts.is_empty() {
                self.queue
                    .delete_batch(&self.reply_queue, &receipts)
                    .await
                    .map_err(|e| format!("cannot delete replies: {e}"))?;
            }
            if let Some(found) = found {
                return Ok(found);
            }
        }
    }

    /// Whether a wait ran out since the last call (and clears it).
    pub fn take_timed_out(&mut self) -> bool {
        std::mem::take(&mut self.timed_out)
    }

    /// A reply of this run, or `None` for a foreign message (to be deleted);
    /// an undecodable message of this run fails the case that waits.
    fn decode(&self, m: ReceivedMessage) -> Result<Option<Arrived>, String> {
        match Envelope::decode(&m.body) {
            Ok(Envelope::Reply(reply)) => Ok(Some(Arrived { reply, body: m.body, attributes: m.attributes })),
            _ if m.body.contains(&self.run_id) => {
                Err(format!("a message on `{}` is not a valid v1 reply: {}", self.reply_queue, shorten(&m.body)))
            }
            _ => Ok(None),
        }
    }

    /// Waits for the dead-lettered copy of a body containing `marker` on the service's DLQ.
    pub async fn dead_letter(&mut self, marker: &str) -> Result<DeadLetter, String> {
        let dlq = dlq_name(&self.service);
        let until = Instant::now() + self.timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.timed_out = true;
                return Err(format!("not on `{dlq}` within {}s", self.timeout.as_secs()));
            }
            let receive = Receive::up_to(MAX_BATCH).wait(left.min(POLL)).visibility(FOREIGN_HIDDEN);
            let batch =
                self.queue.receive(&dlq, receive).await.map_err(|e| format!("cannot receive from `{dlq}`: {e}"))?;
            let mut found = None;
            for m in batch {
                if found.is_none() && m.body.contains(marker) {
                    self.queue
                        .delete_batch(&dlq, std::slice::from_ref(&m.receipt_handle))
                        .await
                        .map_err(|e| e.to_string())?;
                    found = Some(DeadLetter { reason: m.attributes.get(ATTR_REASON).cloned() });
                }
            }
            if let Some(found) = found {
                return Ok(found);
            }
        }
    }
}

/// At most 200 characters of `text`, for messages.
pub fn shorten(text: &str) -> String {
    let mut s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}
