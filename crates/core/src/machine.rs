//! The saga state machine: `decide(definition, state, event, now) -> Decision`.
//!
//! Pure: it never sends, sleeps or reads a clock. The service around it
//! persists the returned state together with the returned actions in one
//! transaction (the outbox) and only then carries the actions out. Timers are
//! not actions: they are part of the state ([`SagaInstance::next_wakeup`]), so
//! they survive restarts with the saga record and a stale firing is harmless —
//! a [`Event::Wake`] only acts on what is due in the current state.
//!
//! Failure rules (see DESIGN.md, "Failure semantics"):
//! - a business refusal fails the step at once; the step had no effect and is
//!   not compensated;
//! - a transient error is retried per the step's policy; once exhausted the
//!   saga compensates, and the failed step is compensated too (a null
//!   compensation if it never ran, which also makes the barrier refuse a
//!   late redelivery of the action);
//! - a step timeout or the saga deadline counts as "possibly done": the step
//!   in flight is compensated;
//! - queue wait is not run time: an action's command carries its latest start
//!   time (`not_after`: dispatch + `queue_timeout`, or the saga deadline), the
//!   worker refuses to start it later ([`EXPIRED_IN_QUEUE`], a refusal: no
//!   effect), and the reply timer is `not_after + timeout` (never past the
//!   deadline), so a backlog alone never times a step out;
//! - compensations retry per their own policy; exhausted (or refused) means
//!   `needs_operator`, from where [`Event::Resume`] continues compensating;
//! - an operator's [`Event::Cancel`] treats the step in flight like a
//!   timeout (possibly done) and compensates a running saga at once.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Millis;
use crate::definition::{RetryPolicy, SagaDefinition};

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    Running,
    Compensating,
    Completed,
    Compensated,
    NeedsOperator,
}

impl SagaStatus {
    pub const ALL: [SagaStatus; 5] = [
        SagaStatus::Running,
        SagaStatus::Compensating,
        SagaStatus::Completed,
        SagaStatus::Compensated,
        SagaStatus::NeedsOperator,
    ];

    /// `completed` and `compensated` are final; `needs_operator` waits for a human.
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::NeedsOperator => "needs_operator",
        }
    }

    pub fn parse(text: &str) -> Option<SagaStatus> {
        SagaStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a command performs a step or undoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Action,
    Compensation,
}

impl Phase {
    pub fn letter(self) -> char {
        match self {
            Phase::Action => 'a',
            Phase::Compensation => 'c',
        }
    }
}

/// Life of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not dispatched yet.
    Pending,
    /// Action sent; waiting for the reply to `attempt` until `due_at`.
    Dispatched,
    /// Action failed transiently; attempt `attempt + 1` goes out at `due_at`.
    RetryWait,
    /// Action done.
    Succeeded,
    /// Business refusal: no effect, nothing to undo.
    Refused,
    /// Transient errors exhausted: probably no effect, compensated to be sure.
    Failed,
    /// No reply within the timeout: possibly done, compensated.
    TimedOut,
    /// Compensation sent; waiting for the reply to `comp_attempt` until `due_at`.
    Compensating,
    /// Compensation failed transiently; retried at `due_at`.
    CompensationRetryWait,
    /// Undone.
    Compensated,
    /// Compensation exhausted or refused: an operator must look.
    CompensationFailed,
    /// Needed undoing but the step has no compensation command.
    NotCompensable,
}

/// Which worker answered, for the audit trail (filled by the drift guard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStamp {
    pub instance: String,
    pub fingerprint: String,
}

/// The orchestrator's record of one step of one saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Action attempts made so far (0 = never dispatched).
    pub attempt: u32,
    /// Compensation attempts made so far.
    pub comp_attempt: u32,
    /// When the current wait ends (reply timeout or retry time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    /// Output of a successful action, handed to later steps and to its compensation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Last error or refusal reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Worker that ran the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerStamp>,
    /// Worker that ran the compensation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comp_worker: Option<WorkerStamp>,
}

impl StepState {
    fn pending() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempt: 0,
            comp_attempt: 0,
            due_at: None,
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            worker: None,
            comp_worker: None,
        }
    }

    /// Dispatched at least once and not known to have had no effect.
    fn may_have_effect(&self) -> bool {
        self.attempt > 0 && self.status != StepStatus::Refused
    }
}

/// One running or finished saga.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SagaInstance {
    pub id: String,
    /// Definition name and the version this instance is pinned to.
    pub saga: String,
    pub version: u32,
    pub status: SagaStatus,
    pub input: Value,
    pub steps: Vec<StepState>,
    /// Index of the active step: the one running forward, or being compensated.
    pub current: usize,
    pub started_at: Millis,
    pub deadline_at: Millis,
    pub updated_at: Millis,
    /// Why the saga is compensating or needs an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The saga's W3C trace context (`traceparent` of its start request),
    /// opaque to the machine: the orchestrator sets it at start and stamps
    /// it on every command, so all of one saga's logs share a trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// What the orchestrator must do after committing the new state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Dispatch(CommandSpec),
}

/// A command to one worker, before it is put in an envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Deterministic: `{saga}:{step}:{a|c}:{attempt}`, so any duplicate is harmless.
    pub command_id: String,
    pub step: usize,
    pub step_name: String,
    pub service: String,
    pub command: String,
    pub phase: Phase,
    pub attempt: u32,
    pub contract: String,
    /// When the orchestrator stops waiting for the reply.
    pub deadline: Millis,
    /// Latest time a worker may start the command; past it, the worker
    /// refuses it unrun ([`EXPIRED_IN_QUEUE`]). Set on actions only:
    /// `None` (compensations) never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Millis>,
}

/// How a worker answered a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded {
        #[serde(default)]
        output: Value,
    },
    Refused {
        reason: String,
    },
    Transient {
        error: String,
    },
}

/// A worker's reply, as the state machine needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub step: usize,
    pub phase: Phase,
    pub attempt: u32,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerStamp>,
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Reply(Reply),
    /// Time passed: act on whatever is due at `now` (timeouts, retries, deadline).
    Wake,
    /// An operator asks a `needs_operator` saga to try its compensation again.
    Resume,
    /// An operator (`by`, as the admin API authenticated them) asks a running
    /// saga to stop: the step in flight counts as possibly done, and the saga
    /// compensates now. Ignored once it compensates or ended.
    Cancel {
        by: String,
    },
}

/// The result of one transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub state: SagaInstance,
    pub actions: Vec<Action>,
    /// False when the event was stale or a duplicate: nothing to persist.
    pub changed: bool,
    /// One line for the saga's history.
    pub note: String,
}

/// Command sent in place of a compensation for a step that has none and whose
/// outcome is in doubt (timed out, or retries ran out while a redelivery could
/// still run it). The worker's barrier answers it without a handler: either
/// the action never ran and is now blocked for good (`{"fence": "prevented"}`),
/// or it ran (`{"fence": "already_ran", "output": ...}`) and the step counts as
/// done — so a step that cannot be undone is never silently left behind a
/// compensated saga.
pub const FENCE_COMMAND: &str = "sqsaga.fence";

/// How a worker's refusal of an action that waited in its queue past the
/// command's `not_after` begins. The refusal is definite (the worker recorded
/// the action as refused in its barrier before replying, so no redelivery
/// runs it), hence the step is not compensated, only the earlier ones.
pub const EXPIRED_IN_QUEUE: &str = "expired in queue";

/// The deterministic id of a command.
pub fn command_id(saga_id: &str, step: usize, phase: Phase, attempt: u32) -> String {
    format!("{saga_id}:{step}:{}:{attempt}", phase.letter())
}

/// Parses a command id back into its parts (used to route replies that lost
/// their fields, and by tests).
pub fn parse_command_id(id: &str) -> Option<(&str, usize, Phase, u32)> {
    let mut parts = id.rsplitn(4, ':');
    let attempt = parts.next()?.parse().ok()?;
    let phase = match parts.next()? {
        "a" => Phase::Action,
        "c" => Phase::Compensation,
        _ => return None,
    };
    let step = parts.next()?.parse().ok()?;
    let saga = parts.next()?;
    Some((saga, step, phase, attempt))
}

/// Starts a saga: the first step is dispatched at once.
pub fn start(def: &SagaDefinition, id: &str, input: Value, now: Millis) -> Decision {
    let mut state = SagaInstance {
        id: id.to_string(),
        saga: def.name.clone(),
        version: def.version,
        status: SagaStatus::Running,
        input,
        steps: def.steps.iter().map(|_| StepState::pending()).collect(),
        current: 0,
        started_at: now,
        deadline_at: now.saturating_add(def.deadline.as_millis() as u64),
        updated_at: now,
        reason: None,
        trace: None,
    };
    let mut actions = Vec::new();
    if def.steps.is_empty() {
        state.status = SagaStatus::Completed;
    } else {
        actions.push(Action::Dispatch(dispatch(def, &mut state, 0, Phase::Action, now)));
    }
    Decision { state, actions, changed: true, note: format!("started {} v{}", def.name, def.version) }
}

/// Applies one event. `def` must be the version the instance is pinned to.
pub fn decide(def: &SagaDefinition, state: &SagaInstance, event: &Event, now: Millis) -> Decision {
    let mut next = state.clone();
    let mut actions = Vec::new();
    let note = match event {
        Event::Reply(reply) => on_reply(def, &mut next, reply, now, &mut actions),
        Event::Wake => on_wake(def, &mut next, now, &mut actions),
        Event::Resume => on_resume(def, &mut next, now, &mut actions),
        Event::Cancel { by } => on_cancel(def, &mut next, by, now, &mut actions),
    };
    match note {
        Some(note) => {
            next.updated_at = now;
            Decision { state: next, actions, changed: true, note }
        }
        None => Decision { state: state.clone(), actions: Vec::new(), changed: false, note: ignored_note(event) },
    }
}

fn ignored_note(event: &Event) -> String {
    match event {
        Event::Reply(r) => {
            format!("ignored stale or duplicate reply (step {}, {:?} attempt {})", r.step, r.phase, r.attempt)
        }
        Event::Wake => "nothing due".to_string(),
        Event::Resume => "resume ignored: saga does not need an operator".to_string(),
        Event::Cancel { by } => format!("cancel by {by} ignored: saga is not running"),
    }
}

impl SagaInstance {
    /// The earliest time at which a [`Event::Wake`] would change something.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let step_due = self.steps.get(self.current).and_then(|s| match s.status {
            StepStatus::Dispatched
            | StepStatus::RetryWait
            | StepStatus::Compensating
            | StepStatus::CompensationRetryWait => s.due_at,
            _ => None,
        });
        let deadline = (self.status == SagaStatus::Running).then_some(self.deadline_at);
        match (step_due, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn on_reply(
    def: &SagaDefinition,
    s: &mut SagaInstance,
    reply: &Reply,
    now: Millis,
    actions: &mut Vec<Action>,
) -> Option<String> {
    if reply.step != s.current {
        return None;
    }
    let step_def = def.step(reply.step)?;
    let name = step_def.name.clone();
    match (s.status, reply.phase) {
        (SagaStatus::Running, Phase::Action) => {
            let st = &s.steps[reply.step];
            if st.status != StepStatus::Dispatched || st.attempt != reply.attempt {
                return None;
            }
            match &reply.outcome {
                Outcome::Succeeded { output } => {
                    let st = &mut s.steps[reply.step];
                    st.status = StepStatus::Succeeded;
                    st.output = Some(output.clone());
                    st.worker = reply.worker.clone();
                    st.finished_at = Some(now);
                    st.due_at = None;
                    st.error = None;
                    if reply.step + 1 == def.steps.len() {
                        s.status = SagaStatus::Completed;
                        Some(format!("step {name} succeeded; saga completed"))
                    } else {
                        s.current = reply.step + 1;
                        actions.push(Action::Dispatch(dispatch(def, s, reply.step + 1, Phase::Action, now)));
                        Some(format!("step {name} succeeded"))
                    }
                }
                Outcome::Refused { reason } => {
                    let st = &mut s.steps[reply.step];
                    st.status = StepStatus::Refused;
                    st.worker = reply.worker.clone();
                    st.finished_at = Some(now);
                    st.due_at = None;
                    st.error = Some(reason.clone());
                    begin_compensation(def, s, format!("step {name} refused: {reason}"), now, actions);
                    Some(format!("step {name} refused: {reason}"))
                }
                Outcome::Transient { error } => {
                    let attempt = reply.attempt;
                    let st = &mut s.steps[reply.step];
                    st.error = Some(error.clone());
                    st.worker = reply.worker.clone();
                    if attempt < step_def.retry.max_attempts {
                        let due = now + backoff_ms(&step_def.retry, &s.id, reply.step, Phase::Action, attempt + 1);
                        let st = &mut s.steps[reply.step];
                        st.status = StepStatus::RetryWait;
                        st.due_at = Some(due);
                        Some(format!("step {name} attempt {attempt} failed transiently: {error}; retry at {due}"))
                    } else {
                        st.status = StepStatus::Failed;
                        st.due_at = None;
                        st.finished_at = Some(now);
                        let why = format!("step {name} failed after {attempt} attempts: {error}");
                        begin_compensation(def, s, why.clone(), now, actions);
                        Some(why)
                    }
                }
            }
        }
        (SagaStatus::Compensating, Phase::Compensation) => {
            let st = &s.steps[reply.step];
            if st.status != StepStatus::Compensating || st.comp_attempt != reply.attempt {
                return None;
            }
            match &reply.outcome {
                Outcome::Succeeded { output } if step_def.compensation.is_none() => {
                    Some(on_fence(def, s, reply, output, now, actions))
                }
                Outcome::Succeeded { .. } => {
                    let st = &mut s.steps[reply.step];
                    st.status = StepStatus::Compensated;
                    st.comp_worker = reply.worker.clone();
                    st.finished_at = Some(now);
                    st.due_at = None;
                    continue_compensation(def, s, reply.step, now, actions);
                    Some(format!("step {name} compensated"))
                }
                Outcome::Refused { reason } => {
                    let st = &mut s.steps[reply.step];
                    st.status = StepStatus::CompensationFailed;
                    st.comp_worker = reply.worker.clone();
                    st.due_at = None;
                    st.error = Some(reason.clone());
                    let why = format!("compensation of {name} refused: {reason}");
                    s.status = SagaStatus::NeedsOperator;
                    s.reason = Some(why.clone());
                    Some(why)
                }
                Outcome::Transient { error } => {
                    let st = &mut s.steps[reply.step];
                    st.comp_worker = reply.worker.clone();
                    let why = format!("compensation of {name} attempt {} failed: {error}", reply.attempt);
                    retry_compensation(def, s, reply.step, error.clone(), now);
                    Some(why)
                }
            }
        }
        _ => None,
    }
}

/// The answer to a fence: the in-doubt step either never ran (now blocked:
/// carry on compensating) or ran after all (it cannot be undone: it counts as
/// done, and the saga goes forward from it — completed if it was the last).
fn on_fence(
    def: &SagaDefinition,
    s: &mut SagaInstance,
    reply: &Reply,
    output: &Value,
    now: Millis,
    actions: &mut Vec<Action>,
) -> String {
    let i = reply.step;
    let name = def.steps[i].name.clone();
    let st = &mut s.steps[i];
    st.comp_worker = reply.worker.clone();
    st.due_at = None;
    st.finished_at = Some(now);
    if output.get("fence").and_then(Value::as_str) == Some("already_ran") {
        st.status = StepStatus::Succeeded;
        st.output = Some(output.get("output").cloned().unwrap_or(Value::Null));
        st.worker = reply.worker.clone();
        st.error = None;
        s.reason = None;
        if i + 1 == def.steps.len() {
            s.status = SagaStatus::Completed;
            return format!("step {name} had run after all (it cannot be undone); saga completed");
        }
        s.status = SagaStatus::Running;
        s.current = i + 1;
        actions.push(Action::Dispatch(dispatch(def, s, i + 1, Phase::Action, now)));
        return format!("step {name} had run after all (it cannot be undone); going forward");
    }
    st.status = StepStatus::Compensated;
    continue_compensation(def, s, i, now, actions);
    format!("step {name} fenced: it never ran and never will")
}

fn on_wake(def: &SagaDefinition, s: &mut SagaInstance, now: Millis, actions: &mut Vec<Action>) -> Option<String> {
    let i = s.current;
    let step_def = def.step(i)?;
    let name = step_def.name.clone();
    if s.status == SagaStatus::Running && now >= s.deadline_at {
        mark_in_flight_as_possibly_done(s, now);
        begin_compensation(def, s, "saga deadline passed".to_string(), now, actions);
        return Some("saga deadline passed; compensating".to_string());
    }
    let st = &s.steps[i];
    let due = st.due_at.is_some_and(|d| now >= d);
    if !due {
        return None;
    }
    match (s.status, st.status) {
        (SagaStatus::Running, StepStatus::Dispatched) => {
            let attempt = st.attempt;
            mark_in_flight_as_possibly_done(s, now);
            let why = format!("step {name} attempt {attempt} timed out");
            begin_compensation(def, s, why.clone(), now, actions);
            Some(why)
        }
        (SagaStatus::Running, StepStatus::RetryWait) => {
            let spec = dispatch(def, s, i, Phase::Action, now);
            let note = format!("step {name} retry, attempt {}", spec.attempt);
            actions.push(Action::Dispatch(spec));
            Some(note)
        }
        (SagaStatus::Compensating, StepStatus::Compensating) => {
            let why = format!("compensation of {name} attempt {} timed out", st.comp_attempt);
            retry_compensation(def, s, i, "timed out".to_string(), now);
            Some(why)
        }
        (SagaStatus::Compensating, StepStatus::CompensationRetryWait) => {
            let spec = dispatch(def, s, i, Phase::Compensation, now);
            let note = format!("compensation of {name} retry, attempt {}", spec.attempt);
            actions.push(Action::Dispatch(spec));
            Some(note)
        }
        _ => None,
    }
}

fn on_resume(def: &SagaDefinition, s: &mut SagaInstance, now: Millis, actions: &mut Vec<Action>) -> Option<String> {
    if s.status != SagaStatus::NeedsOperator {
        return None;
    }
    let i = s.current;
    let name = def.step(i)?.name.clone();
    s.status = SagaStatus::Compensating;
    actions.push(Action::Dispatch(dispatch(def, s, i, Phase::Compensation, now)));
    Some(format!("resumed by operator; compensating {name} again"))
}

fn on_cancel(
    def: &SagaDefinition,
    s: &mut SagaInstance,
    by: &str,
    now: Millis,
    actions: &mut Vec<Action>,
) -> Option<String> {
    if s.status != SagaStatus::Running {
        return None;
    }
    def.step(s.current)?;
    mark_in_flight_as_possibly_done(s, now);
    begin_compensation(def, s, format!("cancelled by {by}"), now, actions);
    Some(format!("cancelled by {by}; compensating"))
}

/// The step in flight when a timeout or the deadline strikes may have run.
fn mark_in_flight_as_possibly_done(s: &mut SagaInstance, now: Millis) {
    let st = &mut s.steps[s.current];
    match st.status {
        StepStatus::Dispatched => {
            st.status = StepStatus::TimedOut;
            st.error = Some("no reply before the timeout".to_string());
        }
        StepStatus::RetryWait => st.status = StepStatus::Failed,
        _ => return,
    }
    st.due_at = None;
    st.finished_at = Some(now);
}

fn begin_compensation(
    def: &SagaDefinition,
    s: &mut SagaInstance,
    reason: String,
    now: Millis,
    actions: &mut Vec<Action>,
) {
    s.status = SagaStatus::Compensating;
    s.reason = Some(reason);
    next_compensation(def, s, s.current as isize, now, actions);
}

fn continue_compensation(
    def: &SagaDefinition,
    s: &mut SagaInstance,
    done: usize,
    now: Millis,
    actions: &mut Vec<Action>,
) {
    next_compensation(def, s, done as isize - 1, now, actions);
}

/// Dispatches the compensation of the highest step at or below `from` that
/// may have had an effect, or finishes the saga as compensated.
fn next_compensation(def: &SagaDefinition, s: &mut SagaInstance, from: isize, now: Millis, actions: &mut Vec<Action>) {
    let mut i = from;
    while i >= 0 {
        let idx = i as usize;
        if s.steps[idx].may_have_effect() {
            let in_doubt = matches!(s.steps[idx].status, StepStatus::TimedOut | StepStatus::Failed);
            if def.steps[idx].compensation.is_some() || in_doubt {
                s.current = idx;
                actions.push(Action::Dispatch(dispatch(def, s, idx, Phase::Compensation, now)));
                return;
            }
            s.steps[idx].status = StepStatus::NotCompensable;
        }
        i -= 1;
    }
    s.status = SagaStatus::Compensated;
}

fn retry_compensation(def: &SagaDefinition, s: &mut SagaInstance, i: usize, error: String, now: Millis) {
    let policy = &def.steps[i].compensation_retry;
    let attempt = s.steps[i].comp_attempt;
    let st = &mut s.steps[i];
    st.error = Some(error.clone());
    if attempt < policy.max_attempts {
        st.status = StepStatus::CompensationRetryWait;
        st.due_at = Some(now + backoff_ms(policy, &s.id, i, Phase::Compensation, attempt + 1));
    } else {
        st.status = StepStatus::CompensationFailed;
        st.due_at = None;
        s.status = SagaStatus::NeedsOperator;
        s.reason = Some(format!("compensation of {} failed after {attempt} attempts: {error}", def.steps[i].name));
    }
}

fn backoff_ms(policy: &RetryPolicy, saga: &str, step: usize, phase: Phase, next_attempt: u32) -> Millis {
    let seed = format!("{saga}:{step}:{}", phase.letter());
    policy.backoff(next_attempt, &seed).as_millis() as Millis
}

/// Sends the next attempt of `phase` for step `i` and arms its reply timeout.
///
/// An action may wait in the worker's queue until `not_after` (dispatch +
/// `queue_timeout`, or the saga deadline when the step sets none) and then
/// run for `timeout`: the reply timer is `not_after + timeout`, capped by the
/// deadline. Past it the step is "possibly done", as before.
///
/// A compensation never expires (it must run whenever it arrives), and its
/// timeout only re-sends it. Counting its `timeout` from dispatch would, in a
/// backlog, re-send it every `timeout` (piling duplicates into the very
/// backlog that delays it) and burn its attempts into `needs_operator`; a
/// re-send does not overtake the first copy anyway. So its reply timer allows
/// the same queue wait an action of the step gets — `queue_timeout`, or the
/// saga's whole deadline budget — before the `timeout` starts.
fn dispatch(def: &SagaDefinition, s: &mut SagaInstance, i: usize, phase: Phase, now: Millis) -> CommandSpec {
    let step_def = &def.steps[i];
    let timeout = step_def.timeout.as_millis() as Millis;
    let queue_wait = step_def.queue_timeout.unwrap_or(def.deadline).as_millis() as Millis;
    let (not_after, due) = match phase {
        Phase::Action => {
            let not_after = now.saturating_add(queue_wait).min(s.deadline_at);
            (Some(not_after), not_after.saturating_add(timeout).min(s.deadline_at))
        }
        Phase::Compensation => (None, now.saturating_add(queue_wait).saturating_add(timeout)),
    };
    let st = &mut s.steps[i];
    let (attempt, command, status) = match phase {
        Phase::Action => {
            st.attempt += 1;
            (st.attempt, step_def.action.clone(), StepStatus::Dispatched)
        }
        Phase::Compensation => {
            st.comp_attempt += 1;
            let command = step_def.compensation.clone().unwrap_or_else(|| FENCE_COMMAND.to_string());
            (st.comp_attempt, command, StepStatus::Compensating)
        }
    };
    st.status = status;
    st.due_at = Some(due);
    st.started_at.get_or_insert(now);
    CommandSpec {
        command_id: command_id(&s.id, i, phase, attempt),
        step: i,
        step_name: step_def.name.clone(),
        service: step_def.service.clone(),
        command,
        phase,
        attempt,
        contract: step_def.contract.clone(),
        deadline: due,
        not_after,
    }
}
