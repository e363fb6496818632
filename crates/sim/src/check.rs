//! What every seed must prove once the system is quiet: the checks that do
//! not depend on the order saga's business (the order example's own
//! invariant checker covers effects and conservation).
//!
//! - [`replay`]: each saga's committed writes, in commit order, are what
//!   the pure state machine makes of the messages each write consumed (or
//!   of a wake): same state, same history events, same commands. A write
//!   built on anything but the previous one (a lost update), a transition
//!   the machine would not make (a stale reply taken as current) or an
//!   outbox that differs from the transition's commands fails it.
//! - [`outbox`]: every command a saga dispatched was sent at least once
//!   (none lost), and every command sent was dispatched (none invented).

use std::collections::{BTreeMap, BTreeSet};

use sqsaga_core::machine::{Action, Event, Reply, SagaInstance, WorkerStamp, decide, start};
use sqsaga_orchestrator::Definitions;
use sqsaga_protocol::Envelope;

use crate::chaos::CommitRecord;

/// The command ids of a write's outbox, in order.
fn outbox_ids(record: &CommitRecord) -> Vec<String> {
    record
        .write
        .outbox
        .iter()
        .filter_map(|m| match Envelope::decode(&m.message.body) {
            Ok(Envelope::Command(c)) => Some(c.command_id),
            _ => None,
        })
        .collect()
}

/// The event a consumed message was, as the orchestrator decodes it.
enum Consumed {
    Start(serde_json::Value),
    Event(Event),
    Nothing,
}

fn consumed(body: &str) -> Consumed {
    match Envelope::decode(body) {
        Ok(Envelope::Start(s)) => Consumed::Start(s.input),
        Ok(Envelope::Reply(r)) => Consumed::Event(Event::Reply(Reply {
            step: r.step,
            phase: r.phase,
            attempt: r.attempt,
            outcome: r.outcome,
            worker: Some(WorkerStamp { instance: r.worker.instance, fingerprint: r.worker.fingerprint }),
        })),
        Ok(Envelope::Resume(_)) => Consumed::Event(Event::Resume),
        _ => Consumed::Nothing,
    }
}

/// Replays every saga's writes; returns the violations and, per saga, the
/// commands the machine dispatched (for [`outbox`]).
pub fn replay(defs: &Definitions, commits: &[CommitRecord]) -> (Vec<String>, BTreeSet<String>) {
    let mut violations = Vec::new();
    let mut dispatched = BTreeSet::new();
    let mut last: BTreeMap<String, SagaInstance> = BTreeMap::new();
    for (k, record) in commits.iter().enumerate() {
        let written = &record.write.instance;
        let id = &written.id;
        let Some(def) = defs.get(&written.saga, written.version) else {
            violations.push(format!("saga {id}: write #{k} names an unloaded definition"));
            continue;
        };
        let Some(now) = record.write.history.first().map(|h| h.at) else {
            violations.push(format!("saga {id}: write #{k} changed the saga with no history line"));
            continue;
        };
        let mut state = last.get(id).cloned();
        let mut commands = Vec::new();
        let mut kinds = Vec::new();
        let events: Vec<Consumed> = if record.consumed.is_empty() {
            vec![Consumed::Event(Event::Wake)]
        } else {
            record.consumed.iter().map(|b| consumed(b)).collect()
        };
        for event in events {
            let (decision, kind) = match (event, &state) {
                (Consumed::Start(input), None) => {
                    let mut d = start(&def, id, input, now);
                    d.state.trace = written.trace.clone();
                    (d, "start")
                }
                (Consumed::Event(e), Some(s)) => {
                    let kind = match e {
                        Event::Reply(_) => "reply",
                        Event::Wake => "wake",
                        Event::Resume => "resume",
                        Event::Cancel { .. } => "cancel",
                    };
                    (decide(&def, s, &e, now), kind)
                }
                _ => continue,
            };
            if decision.changed {
                commands.extend(decision.actions.into_iter().map(|Action::Dispatch(c)| c.command_id));
                kinds.push(kind.to_string());
                state = Some(decision.state);
            }
        }
        let wrote: Vec<String> = record.write.history.iter().map(|h| h.event.clone()).collect();
        if state.as_ref() != Some(written) {
            violations.push(format!(
                "saga {id}: write #{k} ({wrote:?}) is not what replaying its events gives: wrote {}, replay gives {}",
                brief(Some(written)),
                brief(state.as_ref())
            ));
        } else if kinds != wrote {
            violations.push(format!("saga {id}: write #{k} records events {wrote:?}, replay applies {kinds:?}"));
        }
        let sent = outbox_ids(record);
        if sent != commands {
            violations
                .push(format!("saga {id}: write #{k} has outbox {sent:?}, the transition dispatched {commands:?}"));
        }
        dispatched.extend(commands);
        last.insert(id.clone(), written.clone());
    }
    (violations, dispatched)
}

/// A saga's state in one line, for violation messages.
fn brief(s: Option<&SagaInstance>) -> String {
    match s {
        None => "nothing".to_string(),
        Some(s) => {
            let steps: Vec<String> =
                s.steps.iter().map(|st| format!("{:?}/{}/{}", st.status, st.attempt, st.comp_attempt)).collect();
            format!("{} at step {} [{}]", s.status.as_str(), s.current, steps.join(", "))
        }
    }
}

/// Commands lost (dispatched, never sent) and invented (sent, never
/// dispatched); `sent` are the bodies of every send to a service queue.
pub fn outbox(dispatched: &BTreeSet<String>, sent: &[String]) -> Vec<String> {
    let sent: BTreeSet<String> = sent
        .iter()
        .filter_map(|b| match Envelope::decode(b) {
            Ok(Envelope::Command(c)) => Some(c.command_id),
            _ => None,
        })
        .collect();
    let mut v: Vec<String> =
        dispatched.difference(&sent).map(|c| format!("command {c} was dispatched but never sent (lost)")).collect();
    v.extend(sent.difference(dispatched).map(|c| format!("command {c} was sent but never dispatched (invented)")));
    v
}
