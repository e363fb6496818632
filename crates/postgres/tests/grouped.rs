//! Grouped commits on the PostgreSQL adapter, against the machine's server
//! (`SQSAGA_TEST_POSTGRES`, default 127.0.0.1:5432; a scratch database per
//! test, dropped at the end): a batch shares one transaction, a transient
//! failure costs only its own command, and two replicas given overlapping
//! batches in opposite orders neither deadlock nor double an effect; and
//! random batches (actions, compensations, fences, duplicates, refusals,
//! transient failures, panics, expiry) get the outcomes, barrier rows and
//! effects the same commands get one transaction at a time.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqsaga_core::clock::{Clock, SystemClock};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_postgres::{PgHandler, PostgresDb, lookup};
use sqsaga_worker::db::JobResult;
use sqsaga_worker::{CommandContext, HandlerError, Participant};
use tokio_postgres::Transaction;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS effects (n BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, txid BIGINT NOT NULL);";
const CONTRACT: &str = "effects/v1";
const COMMAND: &str = "effects.write";

/// Logs one effect row with the top-level transaction id it ran in; fails
/// transiently (after writing) once for the saga named in `fail_once`.
struct Write {
    fail_saga: String,
    fail_once: AtomicBool,
}

#[async_trait]
impl PgHandler for Write {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let transient = |e: tokio_postgres::Error| HandlerError::Transient(e.to_string());
        tx.execute("INSERT INTO effects (saga_id, txid) VALUES ($1, txid_current())", &[&ctx.saga_id])
            .await
            .map_err(transient)?;
        if let Some(ms) = ctx.input()["sleep_ms"].as_u64() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if ctx.saga_id == self.fail_saga && self.fail_once.swap(false, Ordering::SeqCst) {
            return Err(HandlerError::Transient("planned failure".into()));
        }
        Ok(json!({"wrote": ctx.saga_id}))
    }
}

async fn participant(db: &ScratchDb, fail_saga: &str) -> Participant<PostgresDb> {
    let pg = PostgresDb::connect(&db.url, None, SCHEMA, 2).await.unwrap();
    let mut p = Participant::new(pg);
    let write = Write { fail_saga: fail_saga.to_string(), fail_once: AtomicBool::new(!fail_saga.is_empty()) };
    p.register(CONTRACT, COMMAND, Box::new(write), None);
    p
}

fn ctx(saga: &str, input: Value) -> CommandContext {
    CommandContext {
        saga_id: saga.to_string(),
        step: "write".to_string(),
        command: COMMAND.to_string(),
        phase: Phase::Action,
        attempt: 1,
        payload: json!({"input": input, "outputs": {}}),
        not_after: None,
        sent_at: None,
    }
}

async fn run(p: &Participant<PostgresDb>, ctxs: Vec<CommandContext>) -> Vec<JobResult> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    p.execute_batch_at(ctxs, clock).await
}

/// saga -> the transaction ids its effect rows were written in.
async fn effects(db: &ScratchDb) -> BTreeMap<String, Vec<i64>> {
    let pg = PostgresDb::connect(&db.url, None, SCHEMA, 1).await.unwrap();
    let client = pg.pool().get().await.unwrap();
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for row in client.query("SELECT saga_id, txid FROM effects ORDER BY n", &[]).await.unwrap() {
        out.entry(row.get(0)).or_default().push(row.get(1));
    }
    out
}

async fn with_db<F, Fut>(test: F)
where
    F: FnOnce(Arc<ScratchDb>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let db = Arc::new(ScratchDb::create().await.unwrap_or_else(|e| panic!("{e}")));
    let result = tokio::spawn(test(db.clone())).await;
    Arc::try_unwrap(db).unwrap().drop_now().await.unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_costs_only_its_command_and_the_rest_commit_once_together() {
    with_db(|db| async move {
        let p = participant(&db, "s-c").await;
        let sagas = ["s-f", "s-e", "s-d", "s-c", "s-b", "s-a"];
        let batch: Vec<CommandContext> = sagas.iter().map(|s| ctx(s, json!({}))).collect();
        let results = run(&p, batch.clone()).await;
        for (saga, (result, _)) in sagas.iter().zip(&results) {
            let outcome = result.as_ref().unwrap();
            if *saga == "s-c" {
                assert_eq!(outcome.outcome, Outcome::Transient { error: "planned failure".into() });
            } else {
                assert_eq!(outcome.outcome, Outcome::Succeeded { output: json!({"wrote": saga}) }, "{saga}");
                assert!(!outcome.duplicate, "{saga}: {outcome:?}");
            }
        }
        let written = effects(&db).await;
        assert!(!written.contains_key("s-c"), "the failed command's write survived: {written:?}");
        let client = p_client(&db).await;
        assert!(lookup(&**client, "s-c", "write", Phase::Action).await.unwrap().is_none(), "its barrier row survived");
        let txids: Vec<i64> = written.values().flatten().copied().collect();
        assert_eq!(txids.len(), 5, "one effect per succeeded command: {written:?}");
        assert!(txids.iter().all(|t| *t == txids[0]), "the batch did not share one transaction: {written:?}");

        // Redelivered: the five are answered from the barrier, the failed one runs now.
        let again = run(&p, batch).await;
        for (saga, (result, _)) in sagas.iter().zip(&again) {
            let outcome = result.as_ref().unwrap();
            assert_eq!(outcome.outcome, Outcome::Succeeded { output: json!({"wrote": saga}) }, "{saga}");
            assert_eq!(outcome.duplicate, *saga != "s-c", "{saga}: {outcome:?}");
        }
        let written = effects(&db).await;
        assert_eq!(written.len(), 6);
        assert!(written.values().all(|t| t.len() == 1), "an effect ran twice: {written:?}");
    })
    .await;
}

async fn p_client(db: &ScratchDb) -> deadpool_postgres::Object {
    let pg = PostgresDb::connect(&db.url, None, SCHEMA, 1).await.unwrap();
    pg.pool().get().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_overlapping_batches_in_reverse_order_take_each_effect_once() {
    with_db(|db| async move {
        let a = participant(&db, "").await;
        let b = participant(&db, "").await;
        for round in 0..3 {
            // a: s0..s7; b: s9..s2 (reversed); s2..s7 reach both at once.
            let saga = |n: usize| format!("r{round}-s{n}");
            let slow = json!({"sleep_ms": 20});
            let batch_a: Vec<CommandContext> = (0..8).map(|n| ctx(&saga(n), slow.clone())).collect();
            let batch_b: Vec<CommandContext> = (2..10).rev().map(|n| ctx(&saga(n), slow.clone())).collect();
            let (ra, rb) = tokio::time::timeout(Duration::from_secs(30), async {
                tokio::join!(run(&a, batch_a.clone()), run(&b, batch_b.clone()))
            })
            .await
            .expect("the replicas did not finish");
            let mut fresh: BTreeMap<String, usize> = BTreeMap::new();
            for (c, (result, _)) in batch_a.iter().zip(&ra).chain(batch_b.iter().zip(&rb)) {
                let outcome = result.as_ref().unwrap_or_else(|e| panic!("{}: {e}", c.saga_id));
                assert_eq!(outcome.outcome, Outcome::Succeeded { output: json!({"wrote": c.saga_id}) });
                *fresh.entry(c.saga_id.clone()).or_default() += usize::from(!outcome.duplicate);
            }
            assert!(fresh.values().all(|n| *n == 1), "round {round}: fresh answers per saga {fresh:?}");
            let written = effects(&db).await;
            for n in 0..10 {
                let rows = written.get(&saga(n)).map_or(0, Vec::len);
                assert_eq!(rows, 1, "round {round}: saga {} has {rows} effects", saga(n));
            }
            // Claimed in the same key order, the groups queued instead of
            // deadlocking: each replica's fresh effects share one transaction.
            let txids: std::collections::BTreeSet<i64> =
                (0..10).filter_map(|n| written.get(&saga(n)).and_then(|t| t.first().copied())).collect();
            assert!(txids.len() <= 2, "round {round}: a group fell apart into {} transactions", txids.len());
        }
    })
    .await;
}

/// The equivalence test's schema: every handler call that commits leaves a row.
const LEDGER: &str = "CREATE TABLE IF NOT EXISTS ledger (saga_id TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL, amount BIGINT NOT NULL);";
const MIXED: &str = "mixed/v1";

/// `mixed.do`: writes a `do` row, then does what `input.then` says
/// (`refuse`, `transient`, `panic`, or succeeds with the amount).
struct Do;

#[async_trait]
impl PgHandler for Do {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let amount = ctx.input()["amount"].as_i64().unwrap_or(0);
        tx.execute(
            "INSERT INTO ledger (saga_id, step, kind, amount) VALUES ($1, $2, 'do', $3)",
            &[&ctx.saga_id, &ctx.step, &amount],
        )
        .await
        .map_err(|e| HandlerError::Transient(e.to_string()))?;
        match ctx.input()["then"].as_str() {
            Some("refuse") => Err(HandlerError::Refused("not today".into())),
            Some("transient") => Err(HandlerError::Transient("busy".into())),
            Some("panic") => panic!("handler blew up"),
            _ => Ok(json!({"amount": amount})),
        }
    }
}

/// `mixed.undo`: writes an `undo` row.
struct Undo;

#[async_trait]
impl PgHandler for Undo {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        tx.execute(
            "INSERT INTO ledger (saga_id, step, kind, amount) VALUES ($1, $2, 'undo', 0)",
            &[&ctx.saga_id, &ctx.step],
        )
        .await
        .map_err(|e| HandlerError::Transient(e.to_string()))?;
        Ok(json!({"undone": true}))
    }
}

async fn mixed(db: &ScratchDb, grouped: bool) -> Participant<PostgresDb> {
    let pg = PostgresDb::connect(&db.url, None, LEDGER, 1).await.unwrap().with_grouping(grouped);
    let mut p = Participant::new(pg);
    p.register(MIXED, "mixed.do", Box::new(Do), Some(("mixed.undo", Box::new(Undo))));
    p
}

/// A random command on one of a few (saga, step) keys.
fn random_command(rng: &mut impl rand::Rng, now: u64) -> CommandContext {
    let saga = format!("m-{}", rng.random_range(0..5));
    let step = ["a", "b"][rng.random_range(0..2)].to_string();
    let roll = rng.random_range(0..100);
    let (command, phase) = match roll {
        0..80 => ("mixed.do", Phase::Action),
        80..93 => ("mixed.undo", Phase::Compensation),
        _ => (sqsaga_core::machine::FENCE_COMMAND, Phase::Compensation),
    };
    let then = ["ok", "ok", "ok", "ok", "refuse", "transient", "panic"][rng.random_range(0..7)];
    let expired = phase == Phase::Action && rng.random_range(0..10) == 0;
    CommandContext {
        saga_id: saga,
        step,
        command: command.to_string(),
        phase,
        attempt: 1,
        payload: json!({"input": {"amount": rng.random_range(1..100), "then": then}, "outputs": {}}),
        not_after: (phase == Phase::Action).then(|| if expired { now - 5_000 } else { now + 60_000 }),
        sent_at: Some(now - 10_000),
    }
}

/// Every barrier row and every ledger row, in a stable order.
async fn contents(
    p: &Participant<PostgresDb>,
) -> (Vec<(String, String, String, Option<String>)>, Vec<(String, String, String, i64)>) {
    let client = p.db().pool().get().await.unwrap();
    let barrier = client
        .query("SELECT saga_id, step, op, outcome FROM sqsaga_barrier ORDER BY 1, 2, 3", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let ledger = client
        .query("SELECT saga_id, step, kind, amount FROM ledger ORDER BY 1, 2, 3, 4", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    (barrier, ledger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_batches_decide_exactly_as_the_same_commands_one_transaction_each() {
    use rand::{Rng, SeedableRng};
    let one_by_one = Arc::new(ScratchDb::create().await.unwrap_or_else(|e| panic!("{e}")));
    let single_db = one_by_one.clone();
    with_db(|grouped_db| async move {
        let one_by_one = single_db;
        let now = 1_767_225_600_000;
        let clock: Arc<dyn Clock> = Arc::new(sqsaga_core::clock::ManualClock::at(now));
        for seed in 0..12u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // A fresh key space per seed: the saga ids carry the seed.
            let grouped = mixed(&grouped_db, true).await;
            let single = mixed(&one_by_one, false).await;
            for round in 0..6 {
                let size = rng.random_range(2..=10);
                let mut batch: Vec<CommandContext> = (0..size)
                    .map(|_| {
                        let mut c = random_command(&mut rng, now);
                        c.saga_id = format!("s{seed}-{}", c.saga_id);
                        c
                    })
                    .collect();
                if round % 2 == 0 {
                    // Actions on distinct keys: the batch of one claim and one settle.
                    batch.retain(|c| c.phase == Phase::Action);
                    let mut seen = std::collections::HashSet::new();
                    batch.retain(|c| seen.insert((c.saga_id.clone(), c.step.clone())));
                }
                let got = grouped.execute_batch_at(batch.clone(), clock.clone()).await;
                let mut want = Vec::new();
                for c in &batch {
                    want.extend(single.execute_batch_at(vec![c.clone()], clock.clone()).await);
                }
                for ((c, (g, _)), (w, _)) in batch.iter().zip(&got).zip(&want) {
                    let (g, w) = (g.as_ref().unwrap(), w.as_ref().unwrap());
                    assert_eq!(
                        g, w,
                        "seed {seed} round {round}: {} {} of {} step {}",
                        c.command, c.payload, c.saga_id, c.step
                    );
                }
            }
            assert_eq!(contents(&grouped).await, contents(&single).await, "seed {seed}: the databases differ");
        }
    })
    .await;
    Arc::try_unwrap(one_by_one).unwrap().drop_now().await.unwrap();
}
