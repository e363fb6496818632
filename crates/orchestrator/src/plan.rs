//! The orchestrator's decisions about one batch, as data: [`plan`] takes the
//! decoded messages of a received batch (or a timer pass's wakes), the saga
//! records loaded for them and `now`, and says
//!
//! - every saga write: new state, history lines, the commands it emits;
//! - what becomes of each message: consumed with the write of a saga, ignored
//!   (stale or duplicate), dead-lettered with a reason, released for a retry,
//!   or held back by admission control;
//! - which receipts to delete after which commit.
//!
//! Pure: no IO, no clock, no async. The service (`service.rs`) loads, calls
//! this, commits the writes as one `UnitOfWork`, delivers the outboxes and
//! carries out the dispositions; on a revision conflict it re-loads the
//! saga and plans its messages again. Tested by table (`tests/plan.rs`).
//!
//! **Admission control.** A start request is admitted only while its
//! definition has a free slot ([`Admission`]): sagas in flight (running or
//! compensating) are bounded, and a start beyond the bound is
//! [`Disposition::Hold`] — the saga is not created, so its deadline has not
//! started; the service keeps the message and offers it again when a slot
//! frees. Without it, 1000 orders started at once on a backend that runs
//! 3–9 sagas/s (the AWS emulator) all start their 2-minute deadline
//! together and the last ones pass it waiting in queues.

use std::collections::BTreeMap;

use serde_json::Value;
use sqsaga_core::Millis;
use sqsaga_core::machine::{Action, CommandSpec, Event, Reply, SagaInstance, SagaStatus, decide, start};
pub use sqsaga_store::DeleteWhen;
use sqsaga_store::{HistoryEntry, SagaRecord};

use crate::definitions::Definitions;

/// What one message (or timer firing) asks of one saga, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A start request. `trace` is its `traceparent` (or one derived from
    /// the saga id): stored on the saga, stamped on its commands.
    Start { saga_id: String, saga: String, version: u32, input: Value, trace: String },
    /// A worker's reply.
    Reply { saga_id: String, reply: Reply },
    /// A timer of the saga may be due.
    Wake { saga_id: String },
    /// An operator asked a `needs_operator` saga to go on.
    Resume { saga_id: String },
    /// An operator (`by`) asked a running saga to compensate now.
    Cancel { saga_id: String, by: String },
    /// Needs no saga change (a heartbeat): consumed with the batch.
    NoSaga,
    /// Cannot be processed, ever (undecodable, bad signature, unknown saga
    /// name): dead-letter it with this reason.
    Poison(String),
}

impl Input {
    /// The saga it is about.
    pub fn saga_id(&self) -> Option<&str> {
        match self {
            Input::Start { saga_id, .. }
            | Input::Reply { saga_id, .. }
            | Input::Wake { saga_id }
            | Input::Resume { saga_id }
            | Input::Cancel { saga_id, .. } => Some(saga_id),
            Input::NoSaga | Input::Poison(_) => None,
        }
    }

    /// `start`, `reply`, `wake`, `resume`, `cancel`: the history line's event.
    pub fn kind(&self) -> &'static str {
        match self {
            Input::Start { .. } => "start",
            Input::Reply { .. } => "reply",
            Input::Wake { .. } => "wake",
            Input::Resume { .. } => "resume",
            Input::Cancel { .. } => "cancel",
            Input::NoSaga => "none",
            Input::Poison(_) => "poison",
        }
    }
}

/// One message of the batch: what it asks and its receipt (`None` for a
/// timer's wake, which has no message).
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub input: Input,
    pub receipt: Option<String>,
}

/// Free admission slots by definition name; a definition not listed has no
/// limit. The service computes them from its own count of sagas in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    pub free: BTreeMap<String, u64>,
}

impl Admission {
    /// No limit on any definition.
    pub fn unlimited() -> Admission {
        Admission::default()
    }

    /// `slots` free for the definition `saga`.
    pub fn with(mut self, saga: &str, slots: u64) -> Admission {
        self.free.insert(saga.to_string(), slots);
        self
    }
}

/// A saga write the plan decided.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedWrite {
    pub saga_id: String,
    pub state: SagaInstance,
    /// `None` creates the saga; `Some(r)` updates it only at revision `r`.
    pub expected_revision: Option<u64>,
    pub history: Vec<HistoryEntry>,
    /// The commands the transitions emitted, in order (the outbox).
    pub commands: Vec<CommandSpec>,
    /// How the write changes the count of sagas in flight (running or
    /// compensating): +1 created or resumed, -1 finished or stuck.
    pub in_flight: i64,
}

impl PlannedWrite {
    /// Whether the write creates the saga.
    pub fn creates(&self) -> bool {
        self.expected_revision.is_none()
    }
}

/// What becomes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Applied by write `write` of the plan: deleted once it commits.
    Consumed { write: usize },
    /// Nothing to do (a stale or duplicate event, a heartbeat): deleted
    /// with the write of its saga if there is one, else regardless.
    Ignored { note: String },
    /// Can never be processed: to the DLQ with this reason.
    DeadLetter { reason: String },
    /// Cannot be processed now (its definition is not loaded): left to
    /// come back after its visibility timeout.
    Release { reason: String },
    /// A start request over its definition's admission limit: kept, not
    /// created, offered again when a slot frees.
    Hold,
}

/// Everything the orchestrator will do about a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One per saga that changed, in saga id order.
    pub writes: Vec<PlannedWrite>,
    /// One per message, in batch order.
    pub dispositions: Vec<Disposition>,
    /// Receipts to delete, and when.
    pub deletes: Vec<(String, DeleteWhen)>,
}

/// Whether a saga in `status` counts against its definition's admission limit.
pub fn in_flight(status: SagaStatus) -> bool {
    matches!(status, SagaStatus::Running | SagaStatus::Compensating)
}

/// Decides a batch; see the module documentation. `records` holds the
/// loaded sagas by id (missing: not created yet).
pub fn plan(
    batch: &[Incoming],
    records: &BTreeMap<String, SagaRecord>,
    now: Millis,
    defs: &Definitions,
    admission: &Admission,
) -> Plan {
    let mut dispositions: Vec<Option<Disposition>> = vec![None; batch.len()];
    // saga id → its messages, in arrival order.
    let mut by_saga: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in batch.iter().enumerate() {
        match (&m.input, m.input.saga_id()) {
            (_, Some(id)) => by_saga.entry(id).or_default().push(i),
            (Input::Poison(reason), None) => dispositions[i] = Some(Disposition::DeadLetter { reason: reason.clone() }),
            (_, None) => dispositions[i] = Some(Disposition::Ignored { note: "no saga change".to_string() }),
        }
    }
    let mut free = admission.free.clone();
    let mut writes = Vec::new();
    // Per message: the write its saga made, if any.
    let mut write_of: Vec<Option<usize>> = vec![None; batch.len()];
    for (id, indexes) in by_saga {
        let record = records.get(id);
        let mut current: Option<SagaInstance> = record.map(|r| r.instance.clone());
        let mut history = Vec::new();
        let mut commands = Vec::new();
        let mut changed = Vec::new();
        for &i in &indexes {
            let step = step(defs, id, current.as_ref(), &batch[i].input, now, &mut free);
            dispositions[i] = Some(match step {
                Step::Changed { state, actions, note } => {
                    history.push(HistoryEntry { at: now, event: batch[i].input.kind().to_string(), note });
                    commands.extend(actions.into_iter().map(|Action::Dispatch(c)| c));
                    current = Some(*state);
                    changed.push(i);
                    // The write's index is known once the saga is done.
                    Disposition::Consumed { write: usize::MAX }
                }
                Step::Ignored(note) => Disposition::Ignored { note },
                Step::Poison(reason) => Disposition::DeadLetter { reason },
                Step::Stuck(reason) => Disposition::Release { reason },
                Step::Hold => Disposition::Hold,
            });
        }
        let Some(state) = current.filter(|_| !changed.is_empty()) else { continue };
        let write = writes.len();
        let before = record.is_some_and(|r| in_flight(r.instance.status));
        let in_flight = i64::from(in_flight(state.status)) - i64::from(before);
        for &i in &indexes {
            write_of[i] = Some(write);
            if let Some(Disposition::Consumed { write: w }) = &mut dispositions[i] {
                *w = write;
            }
        }
        writes.push(PlannedWrite {
            saga_id: id.to_string(),
            state,
            expected_revision: record.map(|r| r.revision),
            history,
            commands,
            in_flight,
        });
    }
    let dispositions: Vec<Disposition> = dispositions
        .into_iter()
        .map(|d| d.unwrap_or_else(|| Disposition::Release { reason: "not planned".to_string() }))
        .collect();
    let mut deletes = Vec::new();
    for ((m, d), write) in batch.iter().zip(&dispositions).zip(&write_of) {
        let Some(receipt) = &m.receipt else { continue };
        let when = match (d, write) {
            (Disposition::Consumed { write }, _) => DeleteWhen::Committed(*write),
            // Ignored against the state this write replaces: if the write
            // loses a conflict, the message is planned again.
            (Disposition::Ignored { .. }, Some(write)) => DeleteWhen::Committed(*write),
            (Disposition::Ignored { .. }, None) => DeleteWhen::Always,
            (Disposition::DeadLetter { .. } | Disposition::Release { .. } | Disposition::Hold, _) => continue,
        };
        deletes.push((receipt.clone(), when));
    }
    Plan { writes, dispositions, deletes }
}

/// What one input did to one saga.
enum Step {
    Changed { state: Box<SagaInstance>, actions: Vec<Action>, note: String },
    Ignored(String),
    Poison(String),
    Stuck(String),
    Hold,
}

fn step(
    defs: &Definitions,
    id: &str,
    current: Option<&SagaInstance>,
    input: &Input,
    now: Millis,
    free: &mut BTreeMap<String, u64>,
) -> Step {
    match (input, current) {
        (Input::Start { saga, version, input, trace, .. }, None) => {
            let Some(def) = defs.get(saga, *version) else {
                return Step::Poison(format!("unknown saga `{saga}` version {version}"));
            };
            if let Some(slots) = free.get_mut(saga) {
                if *slots == 0 {
                    return Step::Hold;
                }
                *slots -= 1;
            }
            let mut d = start(&def, id, input.clone(), now);
            d.state.trace = Some(trace.clone());
            Step::Changed { state: Box::new(d.state), actions: d.actions, note: d.note }
        }
        (Input::Start { .. }, Some(_)) => Step::Ignored("duplicate start request".to_string()),
        (Input::Reply { reply, .. }, None) => {
            Step::Poison(format!("reply for unknown saga `{id}` (step {}, attempt {})", reply.step, reply.attempt))
        }
        (Input::Wake { .. } | Input::Resume { .. } | Input::Cancel { .. }, None) => {
            Step::Ignored("no such saga".to_string())
        }
        (Input::NoSaga | Input::Poison(_), _) => Step::Ignored("no saga change".to_string()),
        (input, Some(state)) => {
            let Some(def) = defs.get(&state.saga, state.version) else {
                return Step::Stuck(format!(
                    "definition {} v{} is not loaded; load it to let this saga continue",
                    state.saga, state.version
                ));
            };
            let event = match input {
                Input::Reply { reply, .. } => Event::Reply(planted_stale_reply(reply, state)),
                Input::Wake { .. } => Event::Wake,
                Input::Resume { .. } => Event::Resume,
                Input::Cancel { by, .. } => Event::Cancel { by: by.clone() },
                _ => return Step::Ignored("no saga change".to_string()),
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

/// The reply as decoded; with the planted fault
/// [`Fault::StaleReplyAsCurrent`](crate::planted::Fault) on, re-stamped
/// with the current attempt of its step.
fn planted_stale_reply(reply: &sqsaga_core::machine::Reply, state: &SagaInstance) -> sqsaga_core::machine::Reply {
    let mut reply = reply.clone();
    if crate::planted::active(crate::planted::Fault::StaleReplyAsCurrent)
        && let Some(st) = state.steps.get(reply.step)
    {
        reply.attempt = match reply.phase {
            sqsaga_core::machine::Phase::Action => st.attempt,
            sqsaga_core::machine::Phase::Compensation => st.comp_attempt,
        };
    }
    reply
}
