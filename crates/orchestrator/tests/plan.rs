//! Table tests of the orchestrator's pure `plan`: a script of messages in
//! (against sagas already stored, with so many free admission slots), the
//! writes, what becomes of each message and which receipts are deleted
//! after which commit out — one line per case.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::collections::BTreeMap;

use serde_json::json;
use sqsaga_core::Millis;
use sqsaga_core::machine::{Event, Outcome, Phase, Reply, SagaInstance, decide, start};
use sqsaga_orchestrator::Definitions;
use sqsaga_orchestrator::plan::{Admission, DeleteWhen, Disposition, Incoming, Input, Plan, plan};
use sqsaga_store::SagaRecord;

/// reserve (alpha) → charge (beta), both compensable; 1 min deadline.
const PAIR: &str = r#"
name: pair
version: 1
deadline: 1m
steps:
  - name: reserve
    service: alpha
    action: alpha.do
    compensation: alpha.undo
    contract: alpha/v1
    timeout: 5s
  - name: charge
    service: beta
    action: beta.do
    compensation: beta.undo
    contract: beta/v1
    timeout: 5s
"#;

const T0: Millis = 1_000_000;
const NOW: Millis = T0 + 1_000;

fn defs() -> Definitions {
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(PAIR).unwrap(), "test").unwrap();
    defs
}

/// One scripted message; its receipt is `r{index}` (wakes have none).
#[derive(Clone, Copy)]
enum M {
    Start(&'static str),
    /// A successful reply to the current attempt of step `n`.
    Ok(&'static str, usize),
    /// A refusal of step `n`'s action.
    Refuse(&'static str, usize),
    /// A reply to an attempt that was never sent (stale).
    Stale(&'static str, usize),
    Wake(&'static str),
    Resume(&'static str),
    Beat,
    Poison,
    /// A start of a saga whose definition is unknown to the planner.
    StartOf(&'static str, &'static str),
}

/// What is stored before the batch.
#[derive(Clone, Copy)]
enum Stored {
    /// Started at `T0`, waiting for step 0.
    Running(&'static str),
    /// Started, step 0 succeeded: waiting for step 1.
    AtCharge(&'static str),
    /// Stored under a definition version this orchestrator has not loaded.
    Unloaded(&'static str),
}

fn reply(step: usize, outcome: Outcome, attempt: u32) -> Reply {
    Reply { step, phase: Phase::Action, attempt, outcome, worker: None }
}

fn stored(s: Stored) -> SagaRecord {
    let def = defs().get("pair", 1).unwrap();
    let (id, instance): (&str, SagaInstance) = match s {
        Stored::Running(id) => (id, start(&def, id, json!({}), T0).state),
        Stored::AtCharge(id) => {
            let st = start(&def, id, json!({}), T0).state;
            let ok = Event::Reply(reply(0, Outcome::Succeeded { output: json!({}) }, 1));
            (id, decide(&def, &st, &ok, T0 + 10).state)
        }
        Stored::Unloaded(id) => {
            let mut st = start(&def, id, json!({}), T0).state;
            st.version = 9;
            (id, st)
        }
    };
    SagaRecord { instance: SagaInstance { id: id.to_string(), ..instance }, revision: 3 }
}

fn incoming(i: usize, m: M) -> Incoming {
    let id = |s: &str| s.to_string();
    let receipt = Some(format!("r{i}"));
    let ok = Outcome::Succeeded { output: json!({}) };
    let input = match m {
        M::Start(s) => start_of(s, "pair"),
        M::StartOf(s, saga) => start_of(s, saga),
        M::Ok(s, n) => Input::Reply { saga_id: id(s), reply: reply(n, ok, 1) },
        M::Refuse(s, n) => {
            Input::Reply { saga_id: id(s), reply: reply(n, Outcome::Refused { reason: "no".into() }, 1) }
        }
        M::Stale(s, n) => Input::Reply { saga_id: id(s), reply: reply(n, ok, 7) },
        M::Wake(s) => return Incoming { input: Input::Wake { saga_id: id(s) }, receipt: None },
        M::Resume(s) => Input::Resume { saga_id: id(s) },
        M::Beat => Input::NoSaga,
        M::Poison => Input::Poison("not JSON".into()),
    };
    Incoming { input, receipt }
}

fn start_of(saga_id: &str, saga: &str) -> Input {
    Input::Start {
        saga_id: saga_id.to_string(),
        saga: saga.to_string(),
        version: 1,
        input: json!({}),
        trace: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
    }
}

/// `free`: admission slots of `pair` (`None`: no limit).
fn run(script: &[M], store: &[Stored], free: Option<u64>) -> Plan {
    let batch: Vec<Incoming> = script.iter().enumerate().map(|(i, m)| incoming(i, *m)).collect();
    let records: BTreeMap<String, SagaRecord> =
        store.iter().map(|s| stored(*s)).map(|r| (r.instance.id.clone(), r)).collect();
    let admission = match free {
        Some(n) => Admission::unlimited().with("pair", n),
        None => Admission::unlimited(),
    };
    plan(&batch, &records, NOW, &defs(), &admission)
}

/// `id:new|@rev status [commands] ±in_flight`, e.g. `a:new running [a:0:a:1] +1`.
fn writes(p: &Plan) -> String {
    p.writes
        .iter()
        .map(|w| {
            let rev = w.expected_revision.map_or("new".to_string(), |r| format!("@{r}"));
            let cmds: Vec<&str> = w.commands.iter().map(|c| c.command_id.as_str()).collect();
            format!("{}:{rev} {} [{}] {:+}", w.saga_id, w.state.status, cmds.join(" "), w.in_flight)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `w0` (consumed by write 0), `ignored`, `dlq`, `release`, `hold`.
fn dispositions(p: &Plan) -> String {
    p.dispositions
        .iter()
        .map(|d| match d {
            Disposition::Consumed { write } => format!("w{write}"),
            Disposition::Ignored { .. } => "ignored".to_string(),
            Disposition::DeadLetter { .. } => "dlq".to_string(),
            Disposition::Release { .. } => "release".to_string(),
            Disposition::Hold => "hold".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `r0@w0` (after write 0 commits), `r1@any` (regardless).
fn deletes(p: &Plan) -> String {
    p.deletes
        .iter()
        .map(|(r, when)| match when {
            DeleteWhen::Committed(w) => format!("{r}@w{w}"),
            DeleteWhen::Always => format!("{r}@any"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn case(script: &[M], store: &[Stored], free: Option<u64>, want: (&str, &str, &str)) {
    let p = run(script, store, free);
    let got = (writes(&p), dispositions(&p), deletes(&p));
    assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), want, "script of {} messages", script.len());
}

use M::*;
use Stored::*;

#[test]
fn starts() {
    case(&[Start("a")], &[], None, ("a:new running [a:0:a:1] +1", "w0", "r0@w0"));
    case(&[Start("a")], &[Running("a")], None, ("", "ignored", "r0@any"));
    case(&[Start("a"), Start("a")], &[], None, ("a:new running [a:0:a:1] +1", "w0 ignored", "r0@w0 r1@w0"));
    case(&[StartOf("a", "nosuch")], &[], None, ("", "dlq", ""));
}

#[test]
fn replies_wakes_and_resumes() {
    case(&[Ok("a", 0)], &[Running("a")], None, ("a:@3 running [a:1:a:1] +0", "w0", "r0@w0"));
    case(&[Ok("a", 1)], &[AtCharge("a")], None, ("a:@3 completed [] -1", "w0", "r0@w0"));
    case(&[Refuse("a", 1)], &[AtCharge("a")], None, ("a:@3 compensating [a:0:c:1] +0", "w0", "r0@w0"));
    case(&[Stale("a", 0)], &[Running("a")], None, ("", "ignored", "r0@any"));
    case(&[Ok("a", 0)], &[], None, ("", "dlq", ""));
    case(&[Wake("a")], &[Running("a")], None, ("", "ignored", ""));
    case(&[Wake("gone")], &[], None, ("", "ignored", ""));
    case(&[Resume("a")], &[Running("a")], None, ("", "ignored", "r0@any"));
    case(&[Ok("a", 0)], &[Unloaded("a")], None, ("", "release", ""));
}

#[test]
fn several_sagas_and_messages_without_a_saga() {
    case(
        &[Ok("b", 0), Beat, Ok("a", 0), Poison],
        &[Running("a"), Running("b")],
        None,
        ("a:@3 running [a:1:a:1] +0, b:@3 running [b:1:a:1] +0", "w1 ignored w0 dlq", "r0@w1 r1@any r2@w0"),
    );
    // A stale reply rides with its saga's write: if that write loses a
    // conflict, the reply is planned again against the new state.
    case(
        &[Ok("a", 0), Stale("a", 0)],
        &[Running("a")],
        None,
        ("a:@3 running [a:1:a:1] +0", "w0 ignored", "r0@w0 r1@w0"),
    );
    // Start and first reply in one batch: one write.
    case(&[Start("a"), Ok("a", 0)], &[], None, ("a:new running [a:0:a:1 a:1:a:1] +1", "w0 w0", "r0@w0 r1@w0"));
}

#[test]
fn admission_control() {
    case(&[Start("a")], &[], Some(0), ("", "hold", ""));
    case(
        &[Start("a"), Start("b"), Start("c")],
        &[],
        Some(2),
        ("a:new running [a:0:a:1] +1, b:new running [b:0:a:1] +1", "w0 w1 hold", "r0@w0 r1@w1"),
    );
    // Only creates take slots: a duplicate start, replies and wakes never wait.
    case(&[Start("a")], &[Running("a")], Some(0), ("", "ignored", "r0@any"));
    case(&[Ok("a", 1)], &[AtCharge("a")], Some(0), ("a:@3 completed [] -1", "w0", "r0@w0"));
    // A held start's saga does not exist: its reply in the same batch is poison.
    case(&[Start("a"), Ok("a", 0)], &[], Some(0), ("", "hold dlq", ""));
}
