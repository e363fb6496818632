//! The barrier contract every participant database adapter runs against
//! itself (SQLite here in `tests/contract.rs`, PostgreSQL in
//! `sqsaga-postgres`, DynamoDB in `sqsaga-dynamodb`): the same outcomes for duplicates, null compensations,
//! fences, expiry, crashes, concurrent replicas, handler errors and outages.
//!
//! Every case runs on one "ledger" participant that the adapter builds in
//! its own writes through a [`Fixture`], with the semantics of [`ledger`]
//! below. Cases use saga ids of their own (`<prefix>-<case>-...`) and the
//! ledger keeps one row per saga, so they share one database and never see
//! each other. [`run_all`] runs every case and reports every failure at once.
//!
//! The ledger:
//! - `ledger.add` (action of step `add`, contract `ledger/v1`): counts the
//!   call in [`Probes::action_calls`]; sleeps `input.sleep_ms` inside the
//!   transaction if given; logs a run (saga, command); adds `input.amount`
//!   (default 1) to the saga's total; then refuses with `ledger closed` if
//!   `input.refuse`, fails transiently with `ledger busy` if
//!   `input.transient` or while [`Probes::fail_next`] is above zero
//!   (decrementing it), else returns `{"added": amount}`.
//! - `ledger.undo` (its compensation): counts the call in
//!   [`Probes::compensation_calls`], logs a run, subtracts what the action
//!   recorded (`added` of its barrier output) and returns `{"removed": n}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqsaga_core::machine::{EXPIRED_IN_QUEUE, FENCE_COMMAND, Outcome, Phase};

use crate::barrier::{HANGING_REASON, Recorded};
use crate::{AnyParticipant, BarrierOutcome, CommandContext, HandlerError};

/// Contract of the ledger's commands.
pub const LEDGER_CONTRACT: &str = "ledger/v1";
/// The ledger's action.
pub const ADD: &str = "ledger.add";
/// The ledger's compensation.
pub const UNDO: &str = "ledger.undo";
/// The barrier key (step name) every case uses.
pub const STEP: &str = "add";

/// How long a case waits for a database that came back.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the ledger's handlers report, shared by every participant a
/// fixture opens (so a restarted or sibling participant counts too).
#[derive(Debug, Default)]
pub struct Probes {
    /// Times `ledger.add` was called (committed or not).
    pub action_calls: AtomicU32,
    /// Times `ledger.undo` was called.
    pub compensation_calls: AtomicU32,
    /// Upcoming `ledger.add` calls that fail transiently (after writing).
    pub fail_next: AtomicU32,
}

/// The ledger's logic, for the adapters' handlers: what `ledger.add` does
/// after it wrote (`Ok(amount)` to return `{"added": amount}`).
pub fn ledger(probes: &Probes, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let input = ctx.input();
    if input["refuse"].as_bool() == Some(true) {
        return Err(HandlerError::Refused("ledger closed".into()));
    }
    if input["transient"].as_bool() == Some(true) {
        return Err(HandlerError::Transient("ledger busy".into()));
    }
    if probes.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Err(HandlerError::Transient("ledger busy".into()));
    }
    Ok(json!({"added": amount(ctx)}))
}

/// `input.amount` of a ledger command (default 1).
pub fn amount(ctx: &CommandContext) -> i64 {
    ctx.input()["amount"].as_i64().unwrap_or(1)
}

/// `input.sleep_ms` of a ledger command: how long the handler holds its transaction.
pub fn sleep(ctx: &CommandContext) -> Option<Duration> {
    ctx.input()["sleep_ms"].as_u64().map(Duration::from_millis)
}

/// What an adapter gives the suite: ledger participants over one database.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A new participant over the fixture's database with the ledger's
    /// handlers registered, reporting to `probes`. Every call opens another
    /// one on the same database: a restarted process, or a sibling replica.
    async fn participant(&self, probes: Arc<Probes>) -> Result<Arc<dyn AnyParticipant>, String>;
    /// The saga's ledger total and how many handler runs committed for it.
    async fn ledger(&self, saga: &str) -> Result<(i64, i64), String>;
    /// The barrier row of (saga, [`STEP`], op).
    async fn recorded(&self, saga: &str, op: Phase) -> Result<Option<Recorded>, String>;
    /// Makes the database unreachable (`true`) or reachable again (`false`).
    async fn outage(&self, down: bool) -> Result<(), String>;
}

/// Fails the case with a message unless the condition holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

type CaseFuture<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// A case: its name and how to run it on a fixture with a saga-id prefix.
type Case = for<'a> fn(&'a dyn Fixture, &'a str) -> CaseFuture<'a>;

/// Every case, by name.
pub fn cases() -> Vec<(&'static str, Case)> {
    vec![
        ("duplicate_action", |f, p| Box::pin(duplicate_action(f, p))),
        ("null_compensation", |f, p| Box::pin(null_compensation(f, p))),
        ("refused_action", |f, p| Box::pin(refused_action(f, p))),
        ("handler_error_rolls_back", |f, p| Box::pin(handler_error_rolls_back(f, p))),
        ("compensation_undoes_once", |f, p| Box::pin(compensation_undoes_once(f, p))),
        ("fence_before_action", |f, p| Box::pin(fence_before_action(f, p))),
        ("fence_after_action", |f, p| Box::pin(fence_after_action(f, p))),
        ("expired_action", |f, p| Box::pin(expired_action(f, p))),
        ("batch_failure_is_per_command", |f, p| Box::pin(batch_failure_is_per_command(f, p))),
        ("redelivery_after_crash", |f, p| Box::pin(redelivery_after_crash(f, p))),
        ("two_replicas_at_once", |f, p| Box::pin(two_replicas_at_once(f, p))),
        ("database_unreachable", |f, p| Box::pin(database_unreachable(f, p))),
    ]
}

/// Runs every case; `Err` lists every failure.
pub async fn run_all(fixture: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let mut failures = Vec::new();
    for (name, case) in cases() {
        if let Err(e) = case(fixture, &format!("{prefix}-{name}")).await {
            failures.push(format!("barrier contract `{name}` failed: {e}"));
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// A ledger command of step [`STEP`] for `saga`.
pub fn ctx(saga: &str, phase: Phase, input: Value) -> CommandContext {
    CommandContext {
        saga_id: saga.to_string(),
        step: STEP.to_string(),
        command: match phase {
            Phase::Action => ADD,
            Phase::Compensation => UNDO,
        }
        .to_string(),
        phase,
        attempt: 1,
        payload: json!({"input": input, "outputs": {}}),
        not_after: None,
        sent_at: None,
    }
}

/// A fence of step [`STEP`]: what the orchestrator sends for an in-doubt
/// step that has no compensation.
fn fence(saga: &str) -> CommandContext {
    CommandContext { command: FENCE_COMMAND.to_string(), ..ctx(saga, Phase::Compensation, json!({})) }
}

fn succeeded(output: Value) -> Outcome {
    Outcome::Succeeded { output }
}

fn refused(reason: &str) -> Outcome {
    Outcome::Refused { reason: reason.to_string() }
}

/// Runs one command; a runtime error fails the case.
async fn run(p: &dyn AnyParticipant, c: CommandContext) -> Result<BarrierOutcome, String> {
    let what = format!("{} of saga {}", c.command, c.saga_id);
    let clock: Arc<dyn sqsaga_core::clock::Clock> = Arc::new(sqsaga_core::clock::SystemClock);
    let mut results = p.execute_batch_at(vec![c], clock).await;
    match results.pop() {
        Some((Ok(outcome), _)) => Ok(outcome),
        Some((Err(e), _)) => Err(format!("{what}: {e}")),
        None => Err(format!("{what}: no result")),
    }
}

fn calls(probes: &Probes) -> (u32, u32) {
    (probes.action_calls.load(Ordering::SeqCst), probes.compensation_calls.load(Ordering::SeqCst))
}

async fn open(f: &dyn Fixture) -> Result<(Arc<dyn AnyParticipant>, Arc<Probes>), String> {
    let probes = Arc::new(Probes::default());
    Ok((f.participant(probes.clone()).await?, probes))
}

async fn duplicate_action(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    let first = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5}))).await?;
    check!(first.outcome == succeeded(json!({"added": 5})) && !first.duplicate, "first run: {first:?}");
    let second = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5}))).await?;
    check!(second.outcome == succeeded(json!({"added": 5})) && second.duplicate, "redelivery: {second:?}");
    check!(calls(&probes) == (1, 0), "the handler ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (5, 1), "ledger {:?}, want (5, 1)", f.ledger(&saga).await?);
    Ok(())
}

async fn null_compensation(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    let comp = run(&*p, ctx(&saga, Phase::Compensation, json!({"amount": 5}))).await?;
    check!(comp.outcome == succeeded(Value::Null) && comp.null_compensation, "compensation: {comp:?}");
    let row = f.recorded(&saga, Phase::Action).await?;
    check!(row == Some(Recorded::Prevented), "action row {row:?}, want prevented");
    let late = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5}))).await?;
    check!(late.outcome == refused(HANGING_REASON) && late.hanging, "late action: {late:?}");
    check!(calls(&probes) == (0, 0), "handlers ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (0, 0), "ledger {:?}, want untouched", f.ledger(&saga).await?);
    let again = run(&*p, ctx(&saga, Phase::Compensation, json!({"amount": 5}))).await?;
    check!(again.duplicate && again.outcome == succeeded(Value::Null), "redelivered compensation: {again:?}");
    Ok(())
}

async fn refused_action(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    let action = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5, "refuse": true}))).await?;
    check!(action.outcome == refused("ledger closed"), "action: {action:?}");
    // The handler wrote before refusing: rolled back, the row kept.
    check!(f.ledger(&saga).await? == (0, 0), "a refusal left {:?}", f.ledger(&saga).await?);
    let row = f.recorded(&saga, Phase::Action).await?;
    check!(row == Some(Recorded::Refused { reason: "ledger closed".into() }), "action row {row:?}");
    let comp = run(&*p, ctx(&saga, Phase::Compensation, json!({}))).await?;
    check!(comp.outcome == succeeded(Value::Null) && !comp.null_compensation, "compensation: {comp:?}");
    let again = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5, "refuse": true}))).await?;
    check!(again.duplicate && again.outcome == refused("ledger closed"), "redelivery: {again:?}");
    check!(calls(&probes) == (1, 0), "handlers ran {:?} times", calls(&probes));
    Ok(())
}

async fn handler_error_rolls_back(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    probes.fail_next.store(1, Ordering::SeqCst);
    let first = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 3}))).await?;
    check!(first.outcome == Outcome::Transient { error: "ledger busy".into() }, "first: {first:?}");
    check!(f.ledger(&saga).await? == (0, 0), "the failed run left {:?}", f.ledger(&saga).await?);
    let row = f.recorded(&saga, Phase::Action).await?;
    check!(row.is_none(), "a transient failure left the barrier row {row:?}");
    let retry = CommandContext { attempt: 2, ..ctx(&saga, Phase::Action, json!({"amount": 3})) };
    let second = run(&*p, retry).await?;
    check!(second.outcome == succeeded(json!({"added": 3})) && !second.duplicate, "retry: {second:?}");
    check!(f.ledger(&saga).await? == (3, 1), "ledger {:?}, want (3, 1)", f.ledger(&saga).await?);
    check!(calls(&probes) == (2, 0), "handlers ran {:?} times", calls(&probes));
    Ok(())
}

async fn compensation_undoes_once(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    run(&*p, ctx(&saga, Phase::Action, json!({"amount": 4}))).await?;
    let comp = run(&*p, ctx(&saga, Phase::Compensation, json!({}))).await?;
    check!(comp.outcome == succeeded(json!({"removed": 4})), "compensation: {comp:?}");
    let dup = run(&*p, ctx(&saga, Phase::Compensation, json!({}))).await?;
    check!(dup.duplicate && dup.outcome == comp.outcome, "redelivered compensation: {dup:?}");
    let late = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 4}))).await?;
    check!(late.duplicate, "action after its compensation: {late:?}");
    check!(calls(&probes) == (1, 1), "handlers ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (0, 2), "ledger {:?}, want (0, 2)", f.ledger(&saga).await?);
    Ok(())
}

async fn fence_before_action(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    let fenced = run(&*p, fence(&saga)).await?;
    check!(fenced.outcome == succeeded(json!({"fence": "prevented"})) && fenced.null_compensation, "fence: {fenced:?}");
    let late = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5}))).await?;
    check!(late.outcome == refused(HANGING_REASON) && late.hanging, "late action: {late:?}");
    check!(run(&*p, fence(&saga)).await?.duplicate, "a redelivered fence is not a duplicate");
    check!(calls(&probes) == (0, 0), "handlers ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (0, 0), "ledger {:?}", f.ledger(&saga).await?);
    Ok(())
}

async fn fence_after_action(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    run(&*p, ctx(&saga, Phase::Action, json!({"amount": 5}))).await?;
    let fenced = run(&*p, fence(&saga)).await?;
    let want = succeeded(json!({"fence": "already_ran", "output": {"added": 5}}));
    check!(fenced.outcome == want && !fenced.null_compensation, "fence: {fenced:?}");
    check!(calls(&probes) == (1, 0), "handlers ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (5, 1), "the effect must stay: {:?}", f.ledger(&saga).await?);
    Ok(())
}

async fn expired_action(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    let late = |not_after| CommandContext {
        not_after: Some(not_after),
        sent_at: Some(1),
        ..ctx(&saga, Phase::Action, json!({"amount": 5}))
    };
    let first = run(&*p, late(2)).await?;
    let Outcome::Refused { reason } = &first.outcome else {
        return Err(format!("an expired action was not refused: {first:?}"));
    };
    check!(reason.starts_with(EXPIRED_IN_QUEUE) && first.expired, "expired action: {first:?}");
    let row = f.recorded(&saga, Phase::Action).await?;
    check!(row == Some(Recorded::Refused { reason: reason.clone() }), "action row {row:?}");
    // A redelivery that looks fresh (a sibling whose clock is behind) gets the refusal.
    let again = run(&*p, late(u64::MAX)).await?;
    check!(again.duplicate && again.outcome == first.outcome, "redelivery: {again:?}");
    // A compensation never expires; here it has nothing to undo.
    let comp = CommandContext { not_after: Some(2), ..ctx(&saga, Phase::Compensation, json!({})) };
    let comp = run(&*p, comp).await?;
    check!(comp.outcome == succeeded(Value::Null) && !comp.expired, "compensation: {comp:?}");
    check!(calls(&probes) == (0, 0), "handlers ran {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (0, 0), "ledger {:?}", f.ledger(&saga).await?);
    Ok(())
}

async fn batch_failure_is_per_command(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, _) = open(f).await?;
    let (a, b, c) = (format!("{prefix}-a"), format!("{prefix}-b"), format!("{prefix}-c"));
    // The failure is named by the input, not by call order: an adapter may
    // run a batch's keys at once (DynamoDB does).
    let clock: Arc<dyn sqsaga_core::clock::Clock> = Arc::new(sqsaga_core::clock::SystemClock);
    let results = p
        .execute_batch_at(
            vec![
                ctx(&a, Phase::Action, json!({"amount": 1, "transient": true})),
                ctx(&b, Phase::Action, json!({"amount": 10})),
                ctx(&c, Phase::Action, json!({"amount": 100, "refuse": true})),
            ],
            clock,
        )
        .await;
    let outcomes: Vec<Result<Outcome, String>> =
        results.into_iter().map(|(r, _)| r.map(|o| o.outcome).map_err(|e| e.to_string())).collect();
    let want = vec![
        Ok(Outcome::Transient { error: "ledger busy".into() }),
        Ok(succeeded(json!({"added": 10}))),
        Ok(refused("ledger closed")),
    ];
    check!(outcomes == want, "batch outcomes {outcomes:?}, want {want:?}");
    check!(f.ledger(&a).await? == (0, 0), "the failed command left {:?}", f.ledger(&a).await?);
    check!(f.recorded(&a, Phase::Action).await?.is_none(), "the failed command left its barrier row");
    check!(f.ledger(&b).await? == (10, 1), "the command beside it: {:?}", f.ledger(&b).await?);
    check!(f.ledger(&c).await? == (0, 0), "the refusal left {:?}", f.ledger(&c).await?);
    Ok(())
}

async fn redelivery_after_crash(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let saga = format!("{prefix}-1");
    {
        let (p, _) = open(f).await?;
        run(&*p, ctx(&saga, Phase::Action, json!({"amount": 7}))).await?;
        // The process dies here: committed, but the reply was never sent
        // and the message never deleted, so a new process gets it again.
    }
    let (p, probes) = open(f).await?;
    let again = run(&*p, ctx(&saga, Phase::Action, json!({"amount": 7}))).await?;
    check!(again.duplicate && again.outcome == succeeded(json!({"added": 7})), "redelivery: {again:?}");
    check!(calls(&probes) == (0, 0), "the new process ran the handler {:?} times", calls(&probes));
    check!(f.ledger(&saga).await? == (7, 1), "ledger {:?}, want (7, 1)", f.ledger(&saga).await?);
    Ok(())
}

/// The same command reaches two replicas at once (SQS delivers at least
/// once; a visibility timeout shorter than a slow handler does it too):
/// both run it concurrently on one database, the handler holding its
/// transaction open a while. Exactly one effect; each replica answers
/// with the one outcome, or fails retryably (its message comes back and
/// is answered from the barrier).
async fn two_replicas_at_once(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let probes = Arc::new(Probes::default());
    let a = f.participant(probes.clone()).await?;
    let b = f.participant(probes.clone()).await?;
    for n in 0..3 {
        let saga = format!("{prefix}-{n}");
        let c = ctx(&saga, Phase::Action, json!({"amount": 2, "sleep_ms": 200}));
        let clock: Arc<dyn sqsaga_core::clock::Clock> = Arc::new(sqsaga_core::clock::SystemClock);
        let (mut ra, mut rb) = tokio::join!(
            a.execute_batch_at(vec![c.clone()], clock.clone()),
            b.execute_batch_at(vec![c.clone()], clock)
        );
        let want = succeeded(json!({"added": 2}));
        let mut fresh = 0;
        for r in [ra.pop(), rb.pop()] {
            match r {
                Some((Ok(o), _)) if o.outcome == want => fresh += usize::from(!o.duplicate),
                Some((Ok(o), _)) => return Err(format!("saga {saga}: a replica answered {o:?}")),
                // Only a retryable failure may stand in for an answer.
                Some((Err(e), _)) if e.is_retryable() => {}
                Some((Err(e), _)) => return Err(format!("saga {saga}: a replica failed: {e}")),
                None => return Err(format!("saga {saga}: a replica gave no result")),
            }
        }
        check!(fresh <= 1, "saga {saga}: both replicas ran the command");
        let redelivered = run(&*a, c).await?;
        check!(redelivered.outcome == want, "saga {saga}: redelivery answered {redelivered:?}");
        check!(f.ledger(&saga).await? == (2, 1), "saga {saga}: ledger {:?}, want one effect", f.ledger(&saga).await?);
    }
    check!(calls(&probes).0 <= 3 + 3, "the handler ran {} times for 3 commands", calls(&probes).0);
    Ok(())
}

/// The database goes away: a command fails with a retryable error (its
/// message is not deleted and comes back), `ping` fails (readiness), and
/// once the database is back both work again and nothing ran twice.
async fn database_unreachable(f: &dyn Fixture, prefix: &str) -> Result<(), String> {
    let (p, probes) = open(f).await?;
    let saga = format!("{prefix}-1");
    p.ping().await.map_err(|e| format!("ping before the outage: {e}"))?;
    f.outage(true).await?;
    let result = async {
        let clock: Arc<dyn sqsaga_core::clock::Clock> = Arc::new(sqsaga_core::clock::SystemClock);
        let mut results = p.execute_batch_at(vec![ctx(&saga, Phase::Action, json!({"amount": 9}))], clock).await;
        match results.pop() {
            Some((Err(e), _)) if e.is_retryable() && !e.is_poison() => {}
            Some((Err(e), _)) => return Err(format!("an unreachable database must fail retryably, got: {e}")),
            other => return Err(format!("a command ran with the database unreachable: {other:?}")),
        }
        check!(p.ping().await.is_err(), "ping succeeded with the database unreachable");
        Ok(())
    }
    .await;
    f.outage(false).await?;
    result?;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Err(e) = p.ping().await {
        check!(tokio::time::Instant::now() < deadline, "ping still fails after the database came back: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = loop {
        match run(&*p, ctx(&saga, Phase::Action, json!({"amount": 9}))).await {
            Ok(o) => break o,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "Database not back yet.");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("the redelivered command still fails: {e}")),
        }
    };
    check!(back.outcome == succeeded(json!({"added": 9})), "after the outage: {back:?}");
    check!(f.ledger(&saga).await? == (9, 1), "ledger {:?}, want one effect", f.ledger(&saga).await?);
    check!(calls(&probes).0 >= 1, "the handler never ran");
    Ok(())
}
