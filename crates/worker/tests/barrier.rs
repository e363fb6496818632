//! The sub-transaction barrier through `Participant::execute`, on a real
//! SQLite file: duplicates, null compensation, hanging actions, refusals,
//! transient errors, crashes between deliveries.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

mod support;

use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_worker::barrier::{HANGING_REASON, Recorded};
use sqsaga_worker::sqlite;
use sqsaga_worker::{BarrierOutcome, CommandContext, HandlerError, Participant, WorkerError};
use support::{ctx, ledger, ledger_state};

fn succeeded(output: Value) -> Outcome {
    Outcome::Succeeded { output }
}

fn refused(reason: &str) -> Outcome {
    Outcome::Refused { reason: reason.to_string() }
}

/// Runs `c` and returns its outcome, failing the test on a runtime error.
async fn run(p: &Participant, c: CommandContext) -> BarrierOutcome {
    p.execute(c).await.unwrap()
}

async fn recorded(p: &Participant, saga: &str, op: Phase) -> Option<Recorded> {
    let saga = saga.to_string();
    p.query(move |tx| Ok(sqlite::lookup(tx, &saga, "add", op))).await.unwrap().unwrap()
}

#[tokio::test]
async fn duplicate_action_gets_the_recorded_outcome_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let first = run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    assert_eq!(first.outcome, succeeded(json!({"added": 5})));
    assert!(!first.duplicate);
    let second = run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    assert_eq!(second.outcome, succeeded(json!({"added": 5})));
    assert!(second.duplicate);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 1);
    assert_eq!(ledger_state(&p).await, (5, 1));
}

#[tokio::test]
async fn compensation_before_action_is_null_and_the_late_action_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let comp = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 5}))).await;
    assert_eq!(comp.outcome, succeeded(Value::Null));
    assert!(comp.null_compensation);
    assert_eq!(recorded(&p, "s1", Phase::Action).await, Some(Recorded::Prevented));

    let late = run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    assert_eq!(late.outcome, refused(HANGING_REASON));
    assert!(late.hanging);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 0);
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 0);
    assert_eq!(ledger_state(&p).await, (0, 0));

    // The compensation redelivered is a duplicate of the null compensation.
    let again = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 5}))).await;
    assert!(again.duplicate);
    assert_eq!(again.outcome, succeeded(Value::Null));
}

#[tokio::test]
async fn redelivery_after_a_crash_has_no_second_effect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let (p, _) = ledger(&path);
        run(&p, ctx("s1", Phase::Action, json!({"amount": 7}))).await;
        // The process dies here: the reply was never sent, the message never
        // deleted, so the queue delivers the command again to a new process.
    }
    let (p, probes) = ledger(&path);
    let again = run(&p, ctx("s1", Phase::Action, json!({"amount": 7}))).await;
    assert!(again.duplicate);
    assert_eq!(again.outcome, succeeded(json!({"added": 7})));
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 0);
    assert_eq!(ledger_state(&p).await, (7, 1));
}

#[tokio::test]
async fn refused_action_has_no_effect_and_its_compensation_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let action = run(&p, ctx("s1", Phase::Action, json!({"amount": 5, "refuse": true}))).await;
    assert_eq!(action.outcome, refused("ledger closed"));
    // The handler wrote before refusing; the barrier rolled that back.
    assert_eq!(ledger_state(&p).await, (0, 0));
    assert_eq!(recorded(&p, "s1", Phase::Action).await, Some(Recorded::Refused { reason: "ledger closed".into() }));

    let comp = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 5}))).await;
    assert_eq!(comp.outcome, succeeded(Value::Null));
    assert!(!comp.null_compensation);
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 0);

    // The refusal is final: a redelivered action gets it again.
    let again = run(&p, ctx("s1", Phase::Action, json!({"amount": 5, "refuse": true}))).await;
    assert!(again.duplicate);
    assert_eq!(again.outcome, refused("ledger closed"));
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transient_error_records_nothing_and_the_retry_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    probes.fail_next.store(1, Ordering::SeqCst);
    let first = run(&p, ctx("s1", Phase::Action, json!({"amount": 3}))).await;
    assert_eq!(first.outcome, Outcome::Transient { error: "ledger busy".into() });
    assert_eq!(ledger_state(&p).await, (0, 0));
    assert_eq!(recorded(&p, "s1", Phase::Action).await, None);

    let mut retry = ctx("s1", Phase::Action, json!({"amount": 3}));
    retry.attempt = 2;
    let second = run(&p, retry).await;
    assert_eq!(second.outcome, succeeded(json!({"added": 3})));
    assert!(!second.duplicate);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 2);
    assert_eq!(ledger_state(&p).await, (3, 1));
}

#[tokio::test]
async fn compensation_undoes_once_using_the_recorded_output() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    run(&p, ctx("s1", Phase::Action, json!({"amount": 4}))).await;
    let comp = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 4}))).await;
    assert_eq!(comp.outcome, succeeded(json!({"removed": 4})));
    let dup = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 4}))).await;
    assert!(dup.duplicate);
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 1);
    assert_eq!(ledger_state(&p).await, (0, 2));
    // And the action, redelivered after its compensation, is not re-run.
    let late = run(&p, ctx("s1", Phase::Action, json!({"amount": 4}))).await;
    assert!(late.duplicate);
    assert_eq!(ledger_state(&p).await, (0, 2));
}

#[tokio::test]
async fn sagas_and_steps_have_separate_barrier_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    run(&p, ctx("s1", Phase::Action, json!({"amount": 1}))).await;
    run(&p, ctx("s2", Phase::Action, json!({"amount": 2}))).await;
    let mut other_step = ctx("s1", Phase::Action, json!({"amount": 4}));
    other_step.step = "add_again".into();
    run(&p, other_step).await;
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 3);
    assert_eq!(ledger_state(&p).await, (7, 3));
}

#[tokio::test]
async fn unknown_command_and_wrong_phase_are_errors_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = ledger(&dir.path().join("ledger.db"));
    let mut unknown = ctx("s1", Phase::Action, json!({}));
    unknown.command = "ledger.explode".into();
    let e = p.execute(unknown).await.unwrap_err();
    assert_eq!(e, WorkerError::UnknownCommand("ledger.explode".into()));
    assert!(e.to_string().contains("unknown command `ledger.explode`"));
    assert!(e.is_poison());

    let mut wrong = ctx("s1", Phase::Compensation, json!({}));
    wrong.command = "ledger.add".into();
    let e = p.execute(wrong).await.unwrap_err();
    assert!(matches!(e, WorkerError::PhaseMismatch { .. }), "{e}");
}

#[tokio::test]
async fn a_panicking_handler_is_a_transient_error_and_the_participant_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Participant::open(&dir.path().join("p.db"), sqsaga_sqlite::Sync::Normal).unwrap();
    p.register(
        "boom/v1",
        "boom.go",
        Box::new(|_: &rusqlite::Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
            if ctx.input()["panic"].as_bool() == Some(true) {
                panic!("kaboom");
            }
            Ok(json!("fine"))
        }),
        None,
    );
    let mut c = ctx("s1", Phase::Action, json!({"panic": true}));
    c.command = "boom.go".into();
    let out = run(&p, c.clone()).await;
    match out.outcome {
        Outcome::Transient { error } => assert!(error.contains("kaboom"), "{error}"),
        other => panic!("unexpected {other:?}"),
    }
    c.payload = json!({"input": {"panic": false}});
    assert_eq!(run(&p, c).await.outcome, succeeded(json!("fine")));
    assert_eq!(p.contracts(), vec!["boom/v1".to_string()]);
}

#[tokio::test]
async fn concurrent_commands_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = ledger(&dir.path().join("ledger.db"));
    let p = std::sync::Arc::new(p);
    let before = p.committer().commits();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let p = p.clone();
        tasks.spawn(async move { p.execute(ctx(&format!("s{i}"), Phase::Action, json!({"amount": 1}))).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(matches!(r.unwrap().unwrap().outcome, Outcome::Succeeded { .. }));
    }
    let commits = p.committer().commits() - before;
    assert!(commits < 100, "100 commands took {commits} commits");
    assert_eq!(ledger_state(&p).await, (100, 100));
}

/// A fence for step "add": what the orchestrator sends for an in-doubt step
/// that has no compensation.
fn fence(saga: &str) -> CommandContext {
    CommandContext {
        command: sqsaga_core::machine::FENCE_COMMAND.to_string(),
        ..ctx(saga, Phase::Compensation, json!({}))
    }
}

#[tokio::test]
async fn fence_before_the_action_blocks_it_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let fenced = run(&p, fence("s1")).await;
    assert_eq!(fenced.outcome, succeeded(json!({"fence": "prevented"})));
    assert!(fenced.null_compensation);
    let late = run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    assert_eq!(late.outcome, refused(HANGING_REASON));
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 0);
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 0);
    assert_eq!(ledger_state(&p).await, (0, 0));
    assert!(run(&p, fence("s1")).await.duplicate);
}

#[tokio::test]
async fn fence_after_the_action_reports_that_it_ran_and_undoes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    let fenced = run(&p, fence("s1")).await;
    assert_eq!(fenced.outcome, succeeded(json!({"fence": "already_ran", "output": {"added": 5}})));
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 0);
    assert_eq!(ledger_state(&p).await, (5, 1), "the effect stays");
}

/// A received batch runs as one job: each command in its own savepoint, so
/// a transient failure or an unknown command costs that command only, and
/// the others' effects and barrier rows commit together.
#[tokio::test]
async fn a_batch_is_one_job_and_a_failing_command_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = ledger(&dir.path().join("ledger.db"));
    let mut unknown = ctx("b-unknown", Phase::Action, json!({"amount": 100}));
    unknown.command = "ledger.nope".to_string();
    let batch = vec![
        ctx("b-1", Phase::Action, json!({"amount": 1})),
        ctx("b-2", Phase::Action, json!({"amount": 10})),
        unknown,
        ctx("b-3", Phase::Action, json!({"amount": 1000, "refuse": true})),
        ctx("b-4", Phase::Compensation, json!({})),
        ctx("b-5", Phase::Action, json!({"amount": 10000})),
    ];
    let jobs = p.committer().jobs();
    let results = p.execute_batch(batch).await;
    assert_eq!(results.len(), 6);
    assert_eq!(p.committer().jobs(), jobs + 1, "the batch took more than one job");
    let outcomes: Vec<Option<Outcome>> =
        results.iter().map(|(r, _)| r.as_ref().ok().map(|o| o.outcome.clone())).collect();
    assert_eq!(outcomes[0], Some(succeeded(json!({"added": 1}))));
    assert_eq!(outcomes[1], Some(succeeded(json!({"added": 10}))));
    assert!(matches!(&results[2].0, Err(WorkerError::UnknownCommand(c)) if c == "ledger.nope"), "{:?}", results[2].0);
    assert_eq!(outcomes[3], Some(refused("ledger closed")));
    assert!(results[4].0.as_ref().unwrap().null_compensation);
    assert_eq!(outcomes[5], Some(succeeded(json!({"added": 10000}))));
    // The refusal's write was rolled back; everything else is there.
    assert_eq!(ledger_state(&p).await, (10011, 3));
}

#[tokio::test]
async fn a_transient_failure_in_a_batch_rolls_back_that_command_only() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    probes.fail_next.store(1, Ordering::SeqCst);
    let results = p
        .execute_batch(vec![
            ctx("t-1", Phase::Action, json!({"amount": 1})),
            ctx("t-2", Phase::Action, json!({"amount": 10})),
        ])
        .await;
    let outcomes: Vec<Outcome> = results.into_iter().map(|(r, _)| r.unwrap().outcome).collect();
    assert_eq!(outcomes, vec![Outcome::Transient { error: "ledger busy".into() }, succeeded(json!({"added": 10}))]);
    // t-1 wrote before failing: rolled back, no barrier row, so its retry runs.
    assert_eq!(ledger_state(&p).await, (10, 1));
    assert_eq!(recorded(&p, "t-1", Phase::Action).await, None);
    assert!(recorded(&p, "t-2", Phase::Action).await.is_some());
}

/// An action for step "add" whose latest start time was `not_after`.
fn action_not_after(saga: &str, not_after: u64) -> CommandContext {
    CommandContext { not_after: Some(not_after), sent_at: Some(1), ..ctx(saga, Phase::Action, json!({"amount": 5})) }
}

/// A `not_after` long past (1 ms after the epoch).
const LONG_AGO: u64 = 2;

#[tokio::test]
async fn an_expired_action_is_refused_unrun_recorded_and_refused_again_on_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let first = run(&p, action_not_after("s1", LONG_AGO)).await;
    let Outcome::Refused { reason } = &first.outcome else { panic!("{first:?}") };
    assert!(reason.starts_with(sqsaga_core::machine::EXPIRED_IN_QUEUE), "{reason}");
    assert!(first.expired && !first.duplicate);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 0, "the handler must not run");
    assert_eq!(recorded(&p, "s1", Phase::Action).await, Some(Recorded::Refused { reason: reason.clone() }));
    // A redelivery, even one that looks fresh (a sibling whose clock is behind), gets the recorded refusal.
    let again = run(&p, action_not_after("s1", u64::MAX)).await;
    assert_eq!(again.outcome, first.outcome);
    assert!(again.duplicate);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 0);
    // The refusal had no effect: the compensation has nothing to undo.
    let comp = run(&p, ctx("s1", Phase::Compensation, json!({"amount": 5}))).await;
    assert_eq!(comp.outcome, succeeded(Value::Null));
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 0);
    assert_eq!(ledger_state(&p).await, (0, 0));
}

#[tokio::test]
async fn an_action_within_its_latest_start_time_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    let ran = run(&p, action_not_after("s1", u64::MAX)).await;
    assert_eq!(ran.outcome, succeeded(json!({"added": 5})));
    assert!(!ran.expired);
    // A late redelivery of an action that ran answers with what it did, not an expiry.
    let late = run(&p, action_not_after("s1", LONG_AGO)).await;
    assert_eq!(late.outcome, succeeded(json!({"added": 5})));
    assert!(late.duplicate && !late.expired);
    assert_eq!(probes.action_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_compensation_never_expires() {
    let dir = tempfile::tempdir().unwrap();
    let (p, probes) = ledger(&dir.path().join("ledger.db"));
    run(&p, ctx("s1", Phase::Action, json!({"amount": 5}))).await;
    let comp = CommandContext { not_after: Some(LONG_AGO), ..ctx("s1", Phase::Compensation, json!({"amount": 5})) };
    let undone = run(&p, comp).await;
    assert!(matches!(undone.outcome, Outcome::Succeeded { .. }), "{undone:?}");
    assert!(!undone.expired);
    assert_eq!(probes.compensation_calls.load(Ordering::SeqCst), 1);
    assert_eq!(ledger_state(&p).await, (0, 2), "added, then undone");
}
