//! Contract tests every `SagaStore` adapter runs against itself: creation,
//! optimistic concurrency (no lost update), history, the due-time index,
//! listing and counts, and the transactional outbox in both of its shapes —
//! delivered with the state (`outbox_pending: false`, SQLite) or kept in the
//! record until [`SagaStore::clear_outbox`] (DynamoDB).
//!
//! Each case takes the store, a queue (for outbox deliveries) and a prefix
//! unique to the run, and returns `Err` with a sentence saying what broke.
//! [`run_all`] runs the cases one after the other; the counts case compares
//! before and after, so nothing else may write to the store meanwhile.

use std::time::Duration;

use serde_json::json;
use sqsaga_core::Millis;
use sqsaga_core::definition::{RetryPolicy, SagaDefinition, StepDefinition};
use sqsaga_core::machine::{SagaInstance, SagaStatus, StepStatus, start};
use sqsaga_queue::contract::receive_n;
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive};

use crate::{
    ConsumedMessage, Consumption, DeleteWhen, HistoryEntry, OutboxMessage, SagaStore, SagaWrite, StoreError,
    UnitOfWork, WriteOutcome,
};

/// Fails the case with a message unless the condition holds.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Adds what was being done to an adapter error.
trait Context<T> {
    fn ctx(self, doing: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, doing: &str) -> Result<T, String> {
        self.map_err(|e| format!("{doing}: {e}"))
    }
}

/// Queue wait allowed and run time of the test definition's steps: a saga
/// started at `t` is due at `t + 2 s + 3 s = t + 5 s`.
const QUEUE_TIMEOUT_MS: Millis = 2_000;
const STEP_TIMEOUT_MS: Millis = 3_000;

/// How long a case waits for an index to catch up. DynamoDB's secondary
/// indexes are eventually consistent (usually well under a second behind
/// the table), so `due`, `list`, `counts` and `pending_outboxes` may briefly
/// miss a write that just committed, or still show one just undone; SQLite's
/// never lag. Cases retry such reads until they match or this passes; a read
/// that checks a filter (nothing due yet) is not retried.
const INDEX_LAG: Duration = Duration::from_secs(5);

/// Runs `read` until `ok` holds of its result or [`INDEX_LAG`] passes, and
/// returns the last result for the case to check.
async fn settled<T, F, Fut>(mut read: F, ok: impl Fn(&T) -> bool) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + INDEX_LAG;
    loop {
        let value = read().await?;
        if ok(&value) || tokio::time::Instant::now() >= deadline {
            return Ok(value);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs every case one after the other; `Err` lists every failure.
pub async fn run_all(store: &dyn SagaStore, queue: &dyn Queue, prefix: &str) -> Result<(), String> {
    let mut failures = Vec::new();
    let mut record = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(format!("store contract `{name}` failed: {e}"));
        }
    };
    record("create_and_load", create_and_load(store, prefix).await);
    record("duplicate_create", duplicate_create(store, prefix).await);
    record("no_lost_update", no_lost_update(store, prefix).await);
    record("history_in_order", history_in_order(store, prefix).await);
    record("due_index", due_index(store, prefix).await);
    record("list_and_counts", list_and_counts(store, prefix).await);
    record("outbox", outbox(store, queue, prefix).await);
    record("outbox_to_missing_queue", outbox_to_missing_queue(store, queue, prefix).await);
    record("partial_conflict", partial_conflict(store, prefix).await);
    record("unit_of_work", unit_of_work(store, queue, prefix).await);
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}

/// A two-step saga whose steps run on `service`, 5 s per attempt (queue wait
/// and run time), 60 s overall.
pub fn definition(service: &str) -> SagaDefinition {
    let step = |name: &str| StepDefinition {
        name: name.to_string(),
        service: service.to_string(),
        action: format!("{service}.{name}"),
        compensation: Some(format!("{service}.undo_{name}")),
        timeout: Duration::from_millis(STEP_TIMEOUT_MS),
        queue_timeout: Some(Duration::from_millis(QUEUE_TIMEOUT_MS)),
        retry: RetryPolicy::default(),
        compensation_retry: RetryPolicy::default(),
        contract: format!("{service}/v1"),
    };
    SagaDefinition {
        input_schema: None,
        name: "contract_saga".to_string(),
        version: 1,
        description: None,
        deadline: Duration::from_secs(60),
        steps: vec![step("reserve"), step("charge")],
    }
}

/// A saga started at `now` (its first step dispatched, due at `now + 5 s`).
pub fn instance(id: &str, now: Millis) -> SagaInstance {
    start(&definition("contract-svc"), id, json!({ "order": id }), now).state
}

/// `saga` moved to `status` the way the state machine would leave it: a
/// finished or stuck saga has no step waiting, so no wake-up of its own.
pub fn with_status(mut saga: SagaInstance, status: SagaStatus) -> SagaInstance {
    saga.status = status;
    let step = match status {
        SagaStatus::Running | SagaStatus::Compensating => return saga,
        SagaStatus::Completed => StepStatus::Succeeded,
        SagaStatus::Compensated => StepStatus::Compensated,
        SagaStatus::NeedsOperator => StepStatus::CompensationFailed,
    };
    for st in &mut saga.steps {
        st.status = step;
        st.due_at = None;
    }
    saga
}

fn entry(at: Millis, event: &str, note: &str) -> HistoryEntry {
    HistoryEntry { at, event: event.to_string(), note: note.to_string() }
}

fn create(instance: SagaInstance) -> SagaWrite {
    let at = instance.started_at;
    SagaWrite { instance, expected_revision: None, history: vec![entry(at, "start", "started")], outbox: Vec::new() }
}

fn update(instance: SagaInstance, revision: u64, history: Vec<HistoryEntry>) -> SagaWrite {
    SagaWrite { instance, expected_revision: Some(revision), history, outbox: Vec::new() }
}

fn wall_now() -> Millis {
    sqsaga_core::clock::now_ms()
}

/// Commits one write and returns its outcome.
async fn commit_one(store: &dyn SagaStore, write: SagaWrite) -> Result<WriteOutcome, String> {
    let mut outcomes = store.commit(vec![write]).await.ctx("commit")?;
    check!(outcomes.len() == 1, "one write gave {} outcomes", outcomes.len());
    outcomes.pop().ok_or_else(|| "no outcome".to_string())
}

/// Commits one write that must succeed; returns the new revision.
async fn committed(store: &dyn SagaStore, write: SagaWrite) -> Result<u64, String> {
    let id = write.instance.id.clone();
    match commit_one(store, write).await? {
        WriteOutcome::Committed { revision, .. } => Ok(revision),
        other => Err(format!("write of {id} should commit, got {other:?}")),
    }
}

async fn load_one(store: &dyn SagaStore, id: &str) -> Result<Option<crate::SagaRecord>, String> {
    let mut got = store.load(&[id.to_string()]).await.ctx("load")?;
    check!(got.len() <= 1, "load of one id returned {} records", got.len());
    Ok(got.pop())
}

/// A created saga loads back equal, with the committed revision; missing ids
/// are left out.
pub async fn create_and_load(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let id = format!("{prefix}-create");
    let saga = instance(&id, wall_now());
    let revision = committed(store, create(saga.clone())).await?;
    let missing = format!("{prefix}-missing");
    let got = store.load(&[id.clone(), missing]).await.ctx("load")?;
    check!(got.len() == 1, "expected 1 record (missing ids left out), got {}", got.len());
    check!(got[0].instance == saga, "the saga changed in the store: {:?}", got[0].instance);
    check!(got[0].revision == revision, "loaded revision {} but the commit reported {revision}", got[0].revision);
    Ok(())
}

/// A second create of the same id is AlreadyExists and changes nothing.
pub async fn duplicate_create(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let id = format!("{prefix}-dup");
    let saga = instance(&id, wall_now());
    let revision = committed(store, create(saga.clone())).await?;
    let mut other = saga.clone();
    other.input = json!({ "order": "someone else" });
    let outcome = commit_one(store, create(other)).await?;
    check!(outcome == WriteOutcome::AlreadyExists, "duplicate create gave {outcome:?}");
    let stored = load_one(store, &id).await?.ok_or("the saga vanished")?;
    check!(stored.instance == saga && stored.revision == revision, "a duplicate create overwrote the saga: {stored:?}");
    Ok(())
}

/// An update with the current revision commits and bumps it; one with a
/// stale revision is a Conflict and does not overwrite.
pub async fn no_lost_update(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let id = format!("{prefix}-occ");
    let saga = instance(&id, wall_now());
    let r1 = committed(store, create(saga.clone())).await?;
    let mut first = saga.clone();
    first.reason = Some("first writer".to_string());
    first.updated_at += 1;
    let r2 = committed(store, update(first.clone(), r1, vec![])).await?;
    check!(r2 > r1, "the revision did not grow: {r1} then {r2}");
    let mut second = saga.clone();
    second.reason = Some("second writer, stale".to_string());
    let outcome = commit_one(store, update(second, r1, vec![])).await?;
    check!(outcome == WriteOutcome::Conflict, "a stale revision gave {outcome:?}");
    let stored = load_one(store, &id).await?.ok_or("the saga vanished")?;
    check!(
        stored.instance == first && stored.revision == r2,
        "lost update: stored {:?} at revision {}",
        stored.instance.reason,
        stored.revision
    );
    let never = instance(&format!("{prefix}-occ-never"), wall_now());
    let outcome = commit_one(store, update(never, 1, vec![])).await?;
    check!(outcome == WriteOutcome::Conflict, "updating a saga that does not exist gave {outcome:?}");
    Ok(())
}

/// History lines are appended in order; a conflicting write adds none.
pub async fn history_in_order(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let id = format!("{prefix}-history");
    let now = wall_now();
    let saga = instance(&id, now);
    let r1 = committed(store, create(saga.clone())).await?;
    let more = vec![entry(now + 1, "reply", "step reserve succeeded"), entry(now + 2, "wake", "nothing due")];
    committed(store, update(saga.clone(), r1, more)).await?;
    let lost = commit_one(store, update(saga, r1, vec![entry(now + 3, "reply", "must not appear")])).await?;
    check!(lost == WriteOutcome::Conflict, "a stale revision gave {lost:?}");
    let got = store.history(&id).await.ctx("history")?;
    let events: Vec<(&str, &str)> = got.iter().map(|h| (h.event.as_str(), h.note.as_str())).collect();
    check!(
        events == [("start", "started"), ("reply", "step reserve succeeded"), ("wake", "nothing due")],
        "history is {events:?}"
    );
    check!(got[1].at == now + 1, "history time changed: {:?}", got[1]);
    check!(
        store.history(&format!("{prefix}-nohistory")).await.ctx("history")?.is_empty(),
        "an unknown saga has history"
    );
    Ok(())
}

/// `due` returns the non-terminal sagas whose wake-up passed, earliest first,
/// and follows updates of the wake-up.
pub async fn due_index(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    // Times near the epoch: these sagas are due before anything real.
    let a = instance(&format!("{prefix}-due-a"), 1_000); // due at 6_000
    let b = instance(&format!("{prefix}-due-b"), 2_000); // due at 7_000
    let done = with_status(instance(&format!("{prefix}-due-done"), 1_000), SagaStatus::Completed);
    let stuck = with_status(instance(&format!("{prefix}-due-stuck"), 1_000), SagaStatus::NeedsOperator);
    let ours = [&a, &b, &done, &stuck].map(|s| s.id.clone());
    let ra = committed(store, create(a.clone())).await?;
    for s in [&b, &done, &stuck] {
        committed(store, create(s.clone())).await?;
    }
    let ours = &ours;
    let due = |now: Millis| async move {
        let ids = store.due(now, 10_000).await.ctx("due")?;
        Ok::<Vec<String>, String>(ids.into_iter().filter(|id| ours.contains(id)).collect())
    };
    let got = due(5_999).await?;
    check!(got.is_empty(), "nothing is due at 5999, got {got:?}");
    let got = settled(|| due(6_500), |g| *g == [a.id.clone()]).await?;
    check!(got == [a.id.clone()], "at 6500 only {} is due, got {got:?}", a.id);
    let got = settled(|| due(7_000), |g| *g == [a.id.clone(), b.id.clone()]).await?;
    check!(got == [a.id.clone(), b.id.clone()], "at 7000 a then b are due, got {got:?}");
    let got = settled(|| due(u64::MAX / 2), |g| *g == [a.id.clone(), b.id.clone()]).await?;
    check!(got == [a.id.clone(), b.id.clone()], "terminal and needs_operator sagas must never be due, got {got:?}");
    // Push a's wake-up to 50_000: it leaves the 7_000 window.
    let mut later = a.clone();
    later.steps[0].due_at = Some(50_000);
    committed(store, update(later, ra, vec![])).await?;
    let got = settled(|| due(7_000), |g| *g == [b.id.clone()]).await?;
    check!(got == [b.id.clone()], "after moving a's wake-up, at 7000 only b is due, got {got:?}");
    Ok(())
}

/// `list` filters by status, newest first, honours the limit; `counts` adds up.
pub async fn list_and_counts(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let before = store.counts().await.ctx("counts")?;
    // An hour ahead of the clock: newer than anything an earlier run left.
    let base = wall_now() + 3_600_000;
    let plan = [
        ("run-0", SagaStatus::Running),
        ("run-1", SagaStatus::Running),
        ("run-2", SagaStatus::Running),
        ("ok-0", SagaStatus::Completed),
        ("ok-1", SagaStatus::Completed),
        ("help-0", SagaStatus::NeedsOperator),
    ];
    for (i, (name, status)) in plan.iter().enumerate() {
        let mut s = with_status(instance(&format!("{prefix}-list-{name}"), base), *status);
        s.updated_at = base + i as Millis;
        committed(store, create(s)).await?;
    }
    let expected = |status: SagaStatus| {
        before.get(&status).copied().unwrap_or(0) + plan.iter().filter(|(_, s)| *s == status).count() as u64
    };
    let after = settled(
        || async { store.counts().await.ctx("counts") },
        |after| SagaStatus::ALL.iter().all(|s| after.get(s).copied().unwrap_or(0) == expected(*s)),
    )
    .await?;
    for status in SagaStatus::ALL {
        let (b, a) = (before.get(&status).copied().unwrap_or(0), after.get(&status).copied().unwrap_or(0));
        check!(a == expected(status), "count of {status} went from {b} to {a}, expected {}", expected(status));
    }
    let want = [format!("{prefix}-list-run-2"), format!("{prefix}-list-run-1")];
    let running = settled(
        || async { store.list(Some(SagaStatus::Running), 2).await.ctx("list running") },
        |r| r.iter().map(|s| s.id.as_str()).eq(want.iter().map(String::as_str)),
    )
    .await?;
    let ids: Vec<&str> = running.iter().map(|s| s.id.as_str()).collect();
    check!(ids == want, "the two newest running sagas should be {want:?}, got {ids:?}");
    check!(
        running.iter().all(|s| s.status == SagaStatus::Running && s.saga == "contract_saga" && s.version == 1),
        "summaries are wrong: {running:?}"
    );
    let ok_ids = [format!("{prefix}-list-ok-1"), format!("{prefix}-list-ok-0")];
    let list_prefix = format!("{prefix}-list-");
    let completed = settled(
        || async { store.list(Some(SagaStatus::Completed), 1000).await.ctx("list completed") },
        |c| {
            c.iter()
                .map(|s| s.id.as_str())
                .filter(|id| id.starts_with(&list_prefix))
                .eq(ok_ids.iter().map(String::as_str))
        },
    )
    .await?;
    check!(completed.iter().all(|s| s.status == SagaStatus::Completed), "list(completed) returned other statuses");
    let mine: Vec<&str> = completed.iter().map(|s| s.id.as_str()).filter(|id| id.starts_with(&list_prefix)).collect();
    check!(
        mine == [format!("{prefix}-list-ok-1"), format!("{prefix}-list-ok-0")],
        "completed sagas newest first, got {mine:?}"
    );
    let want: Vec<String> = plan.iter().rev().map(|(n, _)| format!("{prefix}-list-{n}")).collect();
    let all = settled(
        || async { store.list(None, 6).await.ctx("list all") },
        |all| all.iter().map(|s| &s.id).eq(want.iter()),
    )
    .await?;
    let ids: Vec<String> = all.iter().map(|s| s.id.clone()).collect();
    check!(ids == want, "list of every status, newest first, should be {want:?}, got {ids:?}");
    Ok(())
}

/// The outbox of a committed write is delivered with it (or kept pending
/// until cleared); the outbox of a conflicting write is never delivered.
pub async fn outbox(store: &dyn SagaStore, queue: &dyn Queue, prefix: &str) -> Result<(), String> {
    let q = format!("{prefix}-outbox");
    queue.ensure(&QueueSpec::named(&q)).await.ctx("ensure")?;
    let id = format!("{prefix}-outbox");
    let saga = instance(&id, wall_now());
    let messages: Vec<OutboxMessage> = ["cmd-1", "cmd-2"]
        .iter()
        .map(|b| OutboxMessage {
            queue: q.clone(),
            message: OutgoingMessage::new(*b).with_attribute("saga", id.clone()),
        })
        .collect();
    let mut write = create(saga.clone());
    write.outbox = messages.clone();
    let outcome = commit_one(store, write).await?;
    let WriteOutcome::Committed { revision, outbox_pending } = outcome else {
        return Err(format!("create with an outbox gave {outcome:?}"));
    };
    let pending_for = |id: String| async move {
        let pending = store.pending_outboxes(wall_now() + 3_600_000, 10_000).await.ctx("pending_outboxes")?;
        Ok::<_, String>(pending.into_iter().filter(|p| p.saga_id == id).collect::<Vec<_>>())
    };
    if outbox_pending {
        let pending = settled(|| pending_for(id.clone()), |p| p.len() == 1).await?;
        check!(pending.len() == 1, "a pending outbox must be listed once, got {pending:?}");
        check!(
            pending[0].revision == revision && pending[0].messages == messages,
            "pending outbox differs from what was written: {pending:?}"
        );
        store.clear_outbox(&id, revision).await.ctx("clear_outbox")?;
        let pending = settled(|| pending_for(id.clone()), Vec::is_empty).await?;
        check!(pending.is_empty(), "a cleared outbox is still pending: {pending:?}");
    } else {
        let got = receive_n(queue, &q, 2, Duration::from_secs(10)).await?;
        let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_unstable();
        check!(bodies == ["cmd-1", "cmd-2"], "the outbox was not delivered with the state: {bodies:?}");
        check!(got.iter().all(|m| m.attributes.get("saga") == Some(&id)), "outbox attributes lost: {got:?}");
        let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
        queue.delete_batch(&q, &receipts).await.ctx("delete")?;
        let pending = settled(|| pending_for(id.clone()), Vec::is_empty).await?;
        check!(pending.is_empty(), "a delivered outbox is also pending: {pending:?}");
    }
    // A write that conflicts must not emit its commands.
    let mut stale = update(saga, revision + 7, vec![]);
    stale.outbox = vec![OutboxMessage { queue: q.clone(), message: OutgoingMessage::new("must-not-be-sent") }];
    let outcome = commit_one(store, stale).await?;
    check!(outcome == WriteOutcome::Conflict, "a stale revision gave {outcome:?}");
    let leaked = queue.receive(&q, Receive::up_to(10).wait(Duration::from_secs(2))).await.ctx("receive")?;
    check!(leaked.is_empty(), "a conflicting write sent {leaked:?}");
    let pending = pending_for(id.clone()).await?;
    check!(pending.is_empty(), "a conflicting write left an outbox: {pending:?}");
    Ok(())
}

/// An outbox message to a queue that does not exist is never silently
/// dropped: either the write fails naming the queue (and nothing is
/// committed), or the outbox is kept pending for the sender to fail on.
pub async fn outbox_to_missing_queue(store: &dyn SagaStore, _queue: &dyn Queue, prefix: &str) -> Result<(), String> {
    let id = format!("{prefix}-nowhere");
    let missing = format!("{prefix}-no-such-queue");
    let mut write = create(instance(&id, wall_now()));
    write.outbox = vec![OutboxMessage { queue: missing.clone(), message: OutgoingMessage::new("lost?") }];
    match store.commit(vec![write]).await {
        Err(e) => {
            check!(e.to_string().contains(&missing), "the error should name {missing}: {e}");
            check!(matches!(e, StoreError::Queue(_)), "expected a queue error, got {e:?}");
            check!(load_one(store, &id).await?.is_none(), "the saga was committed without its outbox");
        }
        Ok(outcomes) => check!(
            matches!(outcomes.as_slice(), [WriteOutcome::Committed { outbox_pending: true, .. }]),
            "an outbox to a missing queue was reported delivered: {outcomes:?}"
        ),
    }
    Ok(())
}

/// In one commit of several writes, a conflicting one does not stop the others.
pub async fn partial_conflict(store: &dyn SagaStore, prefix: &str) -> Result<(), String> {
    let now = wall_now();
    let x = instance(&format!("{prefix}-multi-x"), now);
    let y = instance(&format!("{prefix}-multi-y"), now);
    let z = instance(&format!("{prefix}-multi-z"), now);
    let rx = committed(store, create(x.clone())).await?;
    let ry = committed(store, create(y.clone())).await?;
    let mut x2 = x.clone();
    x2.reason = Some("x moved on".to_string());
    let mut y2 = y.clone();
    y2.reason = Some("stale".to_string());
    let outcomes = store
        .commit(vec![update(x2.clone(), rx, vec![]), update(y2, ry + 7, vec![]), create(z.clone())])
        .await
        .ctx("commit")?;
    check!(outcomes.len() == 3, "three writes gave {} outcomes", outcomes.len());
    check!(
        matches!(outcomes[0], WriteOutcome::Committed { .. })
            && outcomes[1] == WriteOutcome::Conflict
            && matches!(outcomes[2], WriteOutcome::Committed { .. }),
        "expected committed, conflict, committed; got {outcomes:?}"
    );
    let loaded = store.load(&[x.id.clone(), y.id.clone(), z.id.clone()]).await.ctx("load")?;
    check!(loaded.len() == 3, "expected 3 sagas, got {}", loaded.len());
    let find = |id: &str| loaded.iter().find(|r| r.instance.id == id);
    check!(find(&x.id).is_some_and(|r| r.instance == x2), "x lost its update");
    check!(find(&y.id).is_some_and(|r| r.instance == y && r.revision == ry), "y was changed by a conflicting write");
    check!(find(&z.id).is_some_and(|r| r.instance == z), "z was not created");
    Ok(())
}

/// A unit of work: each write commits or conflicts on its own, and its
/// consumed messages are deleted only with a committed write (`Always` ones
/// regardless) — by the store in the same transaction (`Deleted`), or by no
/// one yet (`LeftToCaller`: the store deleted nothing, and
/// [`UnitOfWork::deletable`] names what the caller must delete).
pub async fn unit_of_work(store: &dyn SagaStore, queue: &dyn Queue, prefix: &str) -> Result<(), String> {
    let q = format!("{prefix}-consumed");
    queue.ensure(&QueueSpec::named(&q)).await.ctx("ensure")?;
    for body in ["for-ok", "for-conflict", "heartbeat"] {
        queue.send(&q, OutgoingMessage::new(body)).await.ctx("send")?;
    }
    let got = receive_n(queue, &q, 3, Duration::from_secs(10)).await?;
    check!(got.len() == 3, "received {} of 3 messages", got.len());
    let receipt =
        |body: &str| got.iter().find(|m| m.body == body).map(|m| m.receipt_handle.clone()).unwrap_or_default();
    let consumed = |body: &str, when| ConsumedMessage { queue: q.clone(), receipt: receipt(body), when };
    let now = wall_now();
    let ok = instance(&format!("{prefix}-unit-ok"), now);
    let lost = instance(&format!("{prefix}-unit-lost"), now);
    let unit = UnitOfWork {
        writes: vec![create(ok.clone()), update(lost.clone(), 41, vec![])],
        consumed: vec![
            consumed("for-ok", DeleteWhen::Committed(0)),
            consumed("for-conflict", DeleteWhen::Committed(1)),
            consumed("heartbeat", DeleteWhen::Always),
        ],
    };
    let done = store.commit_unit(unit.clone()).await.ctx("commit_unit")?;
    check!(
        matches!(done.outcomes.as_slice(), [WriteOutcome::Committed { .. }, WriteOutcome::Conflict]),
        "expected committed, conflict; got {:?}",
        done.outcomes
    );
    check!(load_one(store, &ok.id).await?.is_some(), "the committed write of a unit is not stored");
    let deletable: Vec<&str> = unit.deletable(&done.outcomes).map(|m| m.receipt.as_str()).collect();
    check!(
        deletable == [receipt("for-ok"), receipt("heartbeat")],
        "deletable should be the committed write's message and the heartbeat, got {deletable:?}"
    );
    let in_flight = |want: u64| {
        let q = q.clone();
        async move {
            settled(
                || {
                    let q = q.clone();
                    async move { queue.depth(&q).await.ctx("depth") }
                },
                |d| d.in_flight == want,
            )
            .await
        }
    };
    match done.consumption {
        Consumption::Deleted { failed } => {
            check!(failed.is_empty(), "fresh receipts failed to delete: {failed:?}");
            let depth = in_flight(1).await?;
            check!(depth.in_flight == 1, "only the conflicting write's message may be left, got {depth:?}");
        }
        Consumption::LeftToCaller => {
            let depth = in_flight(3).await?;
            check!(depth.in_flight == 3, "a store that leaves deletes to the caller deleted some: {depth:?}");
        }
    }
    let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    queue.delete_batch(&q, &receipts).await.ctx("delete")?;
    Ok(())
}
