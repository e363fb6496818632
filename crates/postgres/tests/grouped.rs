//! Grouped commits on the PostgreSQL adapter, against the machine's server
//! (`SQSAGA_TEST_POSTGRES`, default 127.0.0.1:5432; a scratch database per
//! test, dropped at the end): a batch shares one transaction, a transient
//! failure costs only its own command, and two replicas given overlapping
//! batches in opposite orders neither deadlock nor double an effect.
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
