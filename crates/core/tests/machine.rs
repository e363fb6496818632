//! Table-driven tests of the saga state machine: a script of events in, the
//! final status and the exact sequence of dispatched commands out.

use std::time::Duration;

use serde_json::json;
use sqsaga_core::Millis;
use sqsaga_core::definition::{RetryPolicy, SagaDefinition, StepDefinition};
use sqsaga_core::machine::{
    Action, EXPIRED_IN_QUEUE, Event, Outcome, Phase, Reply, SagaInstance, SagaStatus, StepStatus, command_id, decide,
    parse_command_id, start,
};

/// A step whose command may wait 5 s in the worker's queue and then run for
/// 5 s: its reply timer strikes 10 s after dispatch.
fn step(name: &str, compensable: bool) -> StepDefinition {
    StepDefinition {
        name: name.to_string(),
        service: name.to_string(),
        action: format!("{name}.do"),
        compensation: compensable.then(|| format!("{name}.undo")),
        timeout: Duration::from_secs(5),
        queue_timeout: Some(Duration::from_secs(5)),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        },
        compensation_retry: RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.0,
        },
        contract: format!("{name}/v1"),
    }
}

/// reserve (compensable) → charge (compensable) → notify (not compensable).
fn order_saga() -> SagaDefinition {
    SagaDefinition {
        input_schema: None,
        name: "order".into(),
        version: 1,
        description: None,
        deadline: Duration::from_secs(60),
        steps: vec![step("reserve", true), step("charge", true), step("notify", false)],
    }
}

/// `order_saga` with no `queueTimeout`: queue wait is bounded by the 60 s
/// deadline only, and each step runs for at most 10 s once started.
fn order_saga_without_queue_timeout() -> SagaDefinition {
    let mut def = order_saga();
    for step in &mut def.steps {
        step.queue_timeout = None;
        step.timeout = Duration::from_secs(10);
    }
    def
}

/// One scripted input. Replies answer the step's current attempt unless an
/// explicit attempt is given (to test stale replies).
#[derive(Clone, Copy)]
enum Ev {
    Ok(usize),
    Refuse(usize),
    Transient(usize),
    CompOk(usize),
    CompTransient(usize),
    CompRefuse(usize),
    StaleOk(usize, u32),
    /// The worker's refusal of an action that waited in its queue past `not_after`.
    Expired(usize),
    /// The barrier's answer to a fence: did the in-doubt action run?
    Fence(usize, bool),
    /// Advance the clock by this many ms and wake.
    Wait(Millis),
    Resume,
    /// An operator cancels the saga.
    Cancel,
}

struct Run {
    state: SagaInstance,
    /// `a0#1` = action of step 0, attempt 1; `c1#2` = compensation of step 1, attempt 2.
    log: Vec<String>,
    unchanged: usize,
}

fn run(script: &[Ev]) -> Run {
    run_with(&order_saga(), script)
}

fn run_with(def: &SagaDefinition, script: &[Ev]) -> Run {
    let mut now: Millis = 1_000;
    let first = start(def, "s1", json!({"order": 1}), now);
    let mut log = Vec::new();
    record(&mut log, &first.actions);
    let mut state = first.state;
    let mut unchanged = 0;
    for ev in script {
        let reply = |step: usize, phase: Phase, attempt: Option<u32>, outcome: Outcome| {
            let st = &state.steps[step];
            let current = match phase {
                Phase::Action => st.attempt,
                Phase::Compensation => st.comp_attempt,
            };
            Event::Reply(Reply { step, phase, attempt: attempt.unwrap_or(current), outcome, worker: None })
        };
        let ok = || Outcome::Succeeded { output: json!({"done": true}) };
        let refused = || Outcome::Refused { reason: "no".into() };
        let transient = || Outcome::Transient { error: "flaky".into() };
        let event = match *ev {
            Ev::Ok(s) => reply(s, Phase::Action, None, ok()),
            Ev::Refuse(s) => reply(s, Phase::Action, None, refused()),
            Ev::Transient(s) => reply(s, Phase::Action, None, transient()),
            Ev::CompOk(s) => reply(s, Phase::Compensation, None, ok()),
            Ev::CompTransient(s) => reply(s, Phase::Compensation, None, transient()),
            Ev::CompRefuse(s) => reply(s, Phase::Compensation, None, refused()),
            Ev::StaleOk(s, a) => reply(s, Phase::Action, Some(a), ok()),
            Ev::Expired(s) => {
                let reason = format!("{EXPIRED_IN_QUEUE} after 5.2s (latest start 200 ms ago)");
                reply(s, Phase::Action, None, Outcome::Refused { reason })
            }
            Ev::Fence(s, ran) => {
                let output = if ran {
                    json!({"fence": "already_ran", "output": {"sent": true}})
                } else {
                    json!({"fence": "prevented"})
                };
                reply(s, Phase::Compensation, None, Outcome::Succeeded { output })
            }
            Ev::Wait(ms) => {
                now += ms;
                Event::Wake
            }
            Ev::Resume => Event::Resume,
            Ev::Cancel => Event::Cancel { by: "admin".into() },
        };
        now += 1;
        let d = decide(def, &state, &event, now);
        if !d.changed {
            unchanged += 1;
            assert_eq!(d.state, state, "an ignored event must not change the state");
            assert!(d.actions.is_empty(), "an ignored event must not emit actions");
        }
        record(&mut log, &d.actions);
        state = d.state;
    }
    Run { state, log, unchanged }
}

fn record(log: &mut Vec<String>, actions: &[Action]) {
    for Action::Dispatch(c) in actions {
        log.push(format!("{}{}#{}", c.phase.letter(), c.step, c.attempt));
    }
}

/// The table: name, script, final status, dispatched commands.
fn check(name: &str, script: &[Ev], status: SagaStatus, log: &[&str]) -> Run {
    check_with(&order_saga(), name, script, status, log)
}

fn check_with(def: &SagaDefinition, name: &str, script: &[Ev], status: SagaStatus, log: &[&str]) -> Run {
    let r = run_with(def, script);
    assert_eq!(r.state.status, status, "{name}: status");
    assert_eq!(r.log, log, "{name}: dispatched commands");
    r
}

use Ev::*;
use SagaStatus::*;

#[test]
fn all_steps_succeed() {
    let r = check("happy", &[Ok(0), Ok(1), Ok(2)], Completed, &["a0#1", "a1#1", "a2#1"]);
    assert!(r.state.steps.iter().all(|s| s.status == StepStatus::Succeeded));
    assert_eq!(r.state.next_wakeup(), None);
}

#[test]
fn refusal_at_each_step_compensates_exactly_the_completed_steps_in_reverse() {
    check("refuse 0", &[Refuse(0)], Compensated, &["a0#1"]);
    check("refuse 1", &[Ok(0), Refuse(1), CompOk(0)], Compensated, &["a0#1", "a1#1", "c0#1"]);
    let r = check(
        "refuse 2",
        &[Ok(0), Ok(1), Refuse(2), CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "a2#1", "c1#1", "c0#1"],
    );
    assert_eq!(r.state.steps[2].status, StepStatus::Refused);
    assert_eq!(r.state.steps[1].status, StepStatus::Compensated);
    assert_eq!(r.state.steps[0].status, StepStatus::Compensated);
}

#[test]
fn transient_errors_are_retried_with_backoff_then_succeed() {
    // Backoff before attempt 2 is 100 ms: waking earlier does nothing.
    let r = check(
        "retry",
        &[Transient(0), Wait(50), Wait(60), Ok(0), Ok(1), Ok(2)],
        Completed,
        &["a0#1", "a0#2", "a1#1", "a2#1"],
    );
    assert_eq!(r.unchanged, 1, "the early wake is a no-op");
    assert_eq!(r.state.steps[0].attempt, 2);
}

#[test]
fn retries_exhausted_compensate() {
    // Step 1 fails 3 times (max_attempts 3): it is compensated too (null
    // compensation at worst), then step 0.
    check(
        "exhausted",
        &[Ok(0), Transient(1), Wait(200), Transient(1), Wait(400), Transient(1), CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "a1#2", "a1#3", "c1#1", "c0#1"],
    );
}

#[test]
fn step_timeout_compensates_the_possibly_done_step_too() {
    let r =
        check("timeout", &[Ok(0), Wait(10_000), CompOk(1), CompOk(0)], Compensated, &["a0#1", "a1#1", "c1#1", "c0#1"]);
    assert_eq!(r.state.steps[1].status, StepStatus::Compensated);
    // A late reply to the timed-out action changes nothing.
    let late = check("late reply", &[Ok(0), Wait(10_000), StaleOk(1, 1)], Compensating, &["a0#1", "a1#1", "c1#1"]);
    assert_eq!(late.unchanged, 1);
}

#[test]
fn in_doubt_step_without_compensation_is_fenced_and_compensation_goes_on_if_it_never_ran() {
    let r = check(
        "fence prevented",
        &[Ok(0), Ok(1), Wait(10_000), Fence(2, false), CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "a2#1", "c2#1", "c1#1", "c0#1"],
    );
    assert_eq!(r.state.steps[2].status, StepStatus::Compensated);
}

#[test]
fn in_doubt_step_without_compensation_that_ran_after_all_completes_the_saga() {
    // The worker committed the confirmation, then crashed before replying:
    // the step timed out, and the fence finds the action done. It cannot be
    // undone, so the saga is completed, not compensated around it.
    let r =
        check("fence ran", &[Ok(0), Ok(1), Wait(10_000), Fence(2, true)], Completed, &["a0#1", "a1#1", "a2#1", "c2#1"]);
    assert_eq!(r.state.steps[2].status, StepStatus::Succeeded);
    assert_eq!(r.state.steps[2].output, Some(json!({"sent": true})));
    assert_eq!(r.state.steps[1].status, StepStatus::Succeeded, "nothing was compensated");
}

#[test]
fn fence_command_is_sent_in_place_of_a_missing_compensation() {
    let def = order_saga();
    let first = start(&def, "s", json!({}), 0);
    let mut state = first.state;
    for step in 0..2 {
        let reply = Event::Reply(Reply {
            step,
            phase: Phase::Action,
            attempt: 1,
            outcome: Outcome::Succeeded { output: json!({}) },
            worker: None,
        });
        state = decide(&def, &state, &reply, 1).state;
    }
    let timed_out = decide(&def, &state, &Event::Wake, 20_000);
    let [Action::Dispatch(c)] = timed_out.actions.as_slice() else { panic!("{:?}", timed_out.actions) };
    assert_eq!((c.command.as_str(), c.phase, c.step), (sqsaga_core::machine::FENCE_COMMAND, Phase::Compensation, 2));
}

#[test]
fn succeeded_steps_without_compensation_are_marked_not_compensable() {
    // reserve (compensable) → notify (not) → archive (not): archive refuses;
    // notify definitely ran and cannot be undone; reserve is compensated.
    let def = SagaDefinition {
        input_schema: None,
        steps: vec![step("reserve", true), step("notify", false), step("archive", false)],
        ..order_saga()
    };
    let r = run_with(&def, &[Ok(0), Ok(1), Refuse(2), CompOk(0)]);
    assert_eq!(r.log, ["a0#1", "a1#1", "a2#1", "c0#1"]);
    assert_eq!(r.state.status, Compensated);
    assert_eq!(r.state.steps[1].status, StepStatus::NotCompensable);
}

#[test]
fn compensation_failing_transiently_is_retried() {
    check(
        "comp retry",
        &[Ok(0), Refuse(1), CompTransient(0), Wait(100), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "c0#1", "c0#2"],
    );
}

#[test]
fn compensation_retries_exhausted_need_an_operator_and_resume_continues() {
    let stuck = check(
        "comp exhausted",
        &[Ok(0), Ok(1), Refuse(2), CompTransient(1), Wait(100), CompTransient(1)],
        NeedsOperator,
        &["a0#1", "a1#1", "a2#1", "c1#1", "c1#2"],
    );
    assert_eq!(stuck.state.steps[1].status, StepStatus::CompensationFailed);
    assert_eq!(stuck.state.next_wakeup(), None, "needs_operator waits for a human, not a timer");
    check(
        "resume",
        &[Ok(0), Ok(1), Refuse(2), CompTransient(1), Wait(100), CompTransient(1), Resume, CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "a2#1", "c1#1", "c1#2", "c1#3", "c0#1"],
    );
}

#[test]
fn compensation_refused_needs_an_operator() {
    check("comp refused", &[Ok(0), Refuse(1), CompRefuse(0)], NeedsOperator, &["a0#1", "a1#1", "c0#1"]);
}

#[test]
fn compensation_timeout_is_retried_then_needs_operator() {
    check(
        "comp timeout",
        &[Ok(0), Refuse(1), Wait(10_000), Wait(100), Wait(10_000)],
        NeedsOperator,
        &["a0#1", "a1#1", "c0#1", "c0#2"],
    );
}

#[test]
fn duplicate_and_stale_replies_change_nothing() {
    let r = check(
        "dupes",
        &[Ok(0), Ok(0), StaleOk(0, 1), Transient(1), StaleOk(1, 1), Wait(100), StaleOk(1, 1), Ok(1), Ok(1), Ok(2)],
        Completed,
        &["a0#1", "a1#1", "a1#2", "a2#1"],
    );
    // Ok(0) again, the stale ok, the duplicate transient reply (attempt 1 while
    // waiting to retry), the stale attempt-1 ok after attempt 2 went out, and Ok(1) again.
    assert_eq!(r.unchanged, 5);
}

#[test]
fn replies_for_other_steps_or_phases_are_ignored() {
    let r = check("wrong phase", &[CompOk(0), Ok(1), Ok(0)], Running, &["a0#1", "a1#1"]);
    assert_eq!(r.unchanged, 2);
}

#[test]
fn saga_deadline_passed_compensates() {
    // A 5 s saga deadline strikes while step 1 (10 s timeout) is in flight:
    // step 1 counts as possibly done and is compensated, then step 0.
    let def = SagaDefinition { deadline: Duration::from_secs(5), ..order_saga() };
    let r = run_with(&def, &[Ok(0), Wait(4_000), Wait(1_000), CompOk(1), CompOk(0)]);
    assert_eq!(r.log, ["a0#1", "a1#1", "c1#1", "c0#1"]);
    assert_eq!(r.unchanged, 1, "the wake before the deadline is a no-op");
    assert_eq!(r.state.status, Compensated);
    assert_eq!(r.state.reason.as_deref(), Some("saga deadline passed"));
    assert_eq!(r.state.steps[1].status, StepStatus::Compensated);
    // While retrying: the deadline wins over the pending retry.
    let r = run_with(&def, &[Ok(0), Transient(1), Wait(5_000), CompOk(1), CompOk(0)]);
    assert_eq!(r.log, ["a0#1", "a1#1", "c1#1", "c0#1"]);
    assert_eq!(r.state.status, Compensated);
}

#[test]
fn cancel_compensates_a_running_saga_at_once_and_is_ignored_otherwise() {
    // Step 1 in flight: it counts as possibly done and is compensated, then step 0.
    let r = check(
        "cancel in flight",
        &[Ok(0), Cancel, CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "c1#1", "c0#1"],
    );
    assert_eq!(r.state.reason.as_deref(), Some("cancelled by admin"));
    assert_eq!(r.state.steps[1].status, StepStatus::Compensated);
    // While a retry waits: the step failed, and is compensated (a null compensation).
    check("cancel retry wait", &[Transient(0), Cancel, CompOk(0)], Compensated, &["a0#1", "c0#1"]);
    // Compensating, stuck or ended: nothing to cancel.
    let r =
        check("cancel compensating", &[Ok(0), Refuse(1), Cancel, CompOk(0)], Compensated, &["a0#1", "a1#1", "c0#1"]);
    assert_eq!(r.unchanged, 1);
    let r = check("cancel completed", &[Ok(0), Ok(1), Ok(2), Cancel], Completed, &["a0#1", "a1#1", "a2#1"]);
    assert_eq!(r.unchanged, 1);
}

#[test]
fn resume_of_a_saga_that_needs_no_operator_is_ignored() {
    let r = check("resume running", &[Resume], Running, &["a0#1"]);
    assert_eq!(r.unchanged, 1);
}

#[test]
fn next_wakeup_follows_the_state() {
    let r = run(&[]);
    // Dispatched at 1000 with a 10 s timeout, deadline at 61 000.
    assert_eq!(r.state.next_wakeup(), Some(11_000));
    let r = run(&[Transient(0)]);
    assert_eq!(r.state.next_wakeup(), Some(1_001 + 100));
}

#[test]
fn command_ids_are_deterministic_and_parse_back() {
    let id = command_id("order:42", 2, Phase::Compensation, 3);
    assert_eq!(id, "order:42:2:c:3");
    assert_eq!(parse_command_id(&id), Some(("order:42", 2, Phase::Compensation, 3)));
    assert_eq!(parse_command_id("nonsense"), None);
}

#[test]
fn state_round_trips_through_json() {
    let r = run(&[Ok(0), Transient(1)]);
    let text = serde_json::to_string(&r.state).unwrap();
    let back: SagaInstance = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r.state);
}

// ---------------------------------------------------------------------------
// Backlog: queue wait is not run time.

#[test]
fn a_backlog_longer_than_the_step_timeout_but_within_the_deadline_times_nothing_out() {
    let def = order_saga_without_queue_timeout();
    // Step 1's command waits 45 s in a backlog (its timeout is 10 s), then runs.
    let r = check_with(&def, "backlog", &[Ok(0), Wait(45_000), Ok(1), Ok(2)], Completed, &["a0#1", "a1#1", "a2#1"]);
    assert_eq!(r.unchanged, 1, "the wake during the backlog is a no-op");
    // A compensation waits in a backlog too: it is not re-sent after its 10 s timeout.
    let r = check_with(
        &def,
        "comp backlog",
        &[Ok(0), Refuse(1), Wait(45_000), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "c0#1"],
    );
    assert_eq!(r.unchanged, 1, "no duplicate compensation piled into the backlog");
}

#[test]
fn with_a_queue_timeout_the_reply_timer_is_queue_wait_plus_run_time() {
    // 5 s in the queue + 5 s of run time: no timeout at 9 s, a timeout at 10 s.
    let r = check("within", &[Ok(0), Wait(9_000), Ok(1), Ok(2)], Completed, &["a0#1", "a1#1", "a2#1"]);
    assert_eq!(r.unchanged, 1);
    check("past", &[Ok(0), Wait(10_000), CompOk(1), CompOk(0)], Compensated, &["a0#1", "a1#1", "c1#1", "c0#1"]);
}

#[test]
fn queue_timeout_exceeded_the_workers_expiry_refusal_compensates_the_earlier_steps_only() {
    let r = check("expired", &[Ok(0), Wait(6_000), Expired(1), CompOk(0)], Compensated, &["a0#1", "a1#1", "c0#1"]);
    assert_eq!(r.state.steps[1].status, StepStatus::Refused, "no effect: not compensated");
    assert!(r.state.reason.as_deref().is_some_and(|why| why.contains(EXPIRED_IN_QUEUE)), "{:?}", r.state.reason);
    check("expired first", &[Expired(0)], Compensated, &["a0#1"]);
    check(
        "expired last",
        &[Ok(0), Ok(1), Expired(2), CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "a2#1", "c1#1", "c0#1"],
    );
}

#[test]
fn the_saga_deadline_still_compensates_a_backlogged_step() {
    let def = order_saga_without_queue_timeout();
    let r = check_with(
        &def,
        "deadline",
        &[Ok(0), Wait(59_000), Wait(1_000), CompOk(1), CompOk(0)],
        Compensated,
        &["a0#1", "a1#1", "c1#1", "c0#1"],
    );
    assert_eq!(r.state.reason.as_deref(), Some("saga deadline passed"));
    assert_eq!(r.unchanged, 1, "the wake before the deadline is a no-op");
}

#[test]
fn commands_carry_their_latest_start_time() {
    // (definition, steps answered before, expected not_after and reply deadline of the next action)
    let with_queue_timeout = order_saga();
    let without = order_saga_without_queue_timeout();
    let short_deadline = SagaDefinition { deadline: Duration::from_secs(7), ..order_saga() };
    let cases: [(&str, &SagaDefinition, Millis, Option<Millis>, Millis); 3] = [
        ("queue timeout: dispatch + 5 s, then 5 s to run", &with_queue_timeout, 0, Some(5_000), 10_000),
        ("no queue timeout: the saga deadline bounds both", &without, 0, Some(60_000), 60_000),
        ("queue timeout past the deadline: capped by it", &short_deadline, 3_000, Some(7_000), 7_000),
    ];
    for (name, def, at, not_after, deadline) in cases {
        let mut d = start(def, "s", json!({}), 0);
        if at > 0 {
            let ok = Outcome::Succeeded { output: json!({}) };
            let reply = Reply { step: 0, phase: Phase::Action, attempt: 1, outcome: ok, worker: None };
            d = decide(def, &d.state, &Event::Reply(reply), at);
        }
        let [Action::Dispatch(c)] = d.actions.as_slice() else { panic!("{name}: {:?}", d.actions) };
        assert_eq!((c.not_after, c.deadline), (not_after, deadline), "{name}");
    }
    // A compensation never expires.
    let def = order_saga();
    let reply = |step, outcome| Event::Reply(Reply { step, phase: Phase::Action, attempt: 1, outcome, worker: None });
    let d = start(&def, "s", json!({}), 0);
    let d = decide(&def, &d.state, &reply(0, Outcome::Succeeded { output: json!({}) }), 1);
    let d = decide(&def, &d.state, &reply(1, Outcome::Refused { reason: "no".into() }), 2);
    let [Action::Dispatch(c)] = d.actions.as_slice() else { panic!("{:?}", d.actions) };
    assert_eq!((c.phase, c.not_after), (Phase::Compensation, None));
}
