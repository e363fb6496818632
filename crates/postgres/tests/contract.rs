//! The barrier contract (`sqsaga_worker::contract`) on the PostgreSQL
//! adapter, against the machine's server (`SQSAGA_TEST_POSTGRES`, default
//! 127.0.0.1:5432): a scratch database per run, dropped at the end; an
//! outage made by refusing connections to it and ending the open ones.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use serde_json::{Value, json};
use sqsaga_core::machine::Phase;
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_postgres::{PgHandler, PostgresDb, action_output, lookup};
use sqsaga_worker::barrier::Recorded;
use sqsaga_worker::contract::{self, Fixture, Probes};
use sqsaga_worker::{AnyParticipant, CommandContext, HandlerError, Participant};
use tokio_postgres::Transaction;

const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger (saga_id TEXT PRIMARY KEY, total BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (n BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, command TEXT NOT NULL);";

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

async fn add(tx: &Transaction<'_>, ctx: &CommandContext, amount: i64) -> Result<(), HandlerError> {
    tx.execute("INSERT INTO runs (saga_id, command) VALUES ($1, $2)", &[&ctx.saga_id, &ctx.command])
        .await
        .map_err(transient)?;
    tx.execute(
        "INSERT INTO ledger (saga_id, total) VALUES ($1, $2)
         ON CONFLICT (saga_id) DO UPDATE SET total = ledger.total + excluded.total",
        &[&ctx.saga_id, &amount],
    )
    .await
    .map_err(transient)?;
    Ok(())
}

struct Add(Arc<Probes>);

#[async_trait]
impl PgHandler for Add {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self.0.action_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = contract::sleep(ctx) {
            tokio::time::sleep(d).await;
        }
        add(tx, ctx, contract::amount(ctx)).await?;
        contract::ledger(&self.0, ctx)
    }
}

struct Undo(Arc<Probes>);

#[async_trait]
impl PgHandler for Undo {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self.0.compensation_calls.fetch_add(1, Ordering::SeqCst);
        let output = action_output(tx, &ctx.saga_id, &ctx.step).await.map_err(transient)?;
        let amount = output.and_then(|o| o["added"].as_i64()).unwrap_or(0);
        add(tx, ctx, -amount).await?;
        Ok(json!({"removed": amount}))
    }
}

struct PgLedger {
    db: ScratchDb,
    /// For the fixture's own reads.
    reader: PostgresDb,
}

#[async_trait]
impl Fixture for PgLedger {
    async fn participant(&self, probes: Arc<Probes>) -> Result<Arc<dyn AnyParticipant>, String> {
        let db = PostgresDb::connect(&self.db.url, None, LEDGER_SCHEMA, 4).await.map_err(|e| e.to_string())?;
        let mut p = Participant::new(db);
        p.register(
            contract::LEDGER_CONTRACT,
            contract::ADD,
            Box::new(Add(probes.clone())),
            Some((contract::UNDO, Box::new(Undo(probes)))),
        );
        Ok(Arc::new(p))
    }

    async fn ledger(&self, saga: &str) -> Result<(i64, i64), String> {
        let client = self.reader.pool().get().await.map_err(|e| e.to_string())?;
        let total = client
            .query_opt("SELECT total FROM ledger WHERE saga_id = $1", &[&saga])
            .await
            .map_err(|e| e.to_string())?
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        let runs: i64 = client
            .query_one("SELECT count(*) FROM runs WHERE saga_id = $1", &[&saga])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        Ok((total, runs))
    }

    async fn recorded(&self, saga: &str, op: Phase) -> Result<Option<Recorded>, String> {
        let client = self.reader.pool().get().await.map_err(|e| e.to_string())?;
        lookup(&**client, saga, contract::STEP, op).await.map_err(|e| e.to_string())
    }

    async fn outage(&self, down: bool) -> Result<(), String> {
        self.db.outage(down).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_contract_runs_all_on_postgres() {
    let db = match ScratchDb::create().await {
        Ok(db) => db,
        Err(e) => panic!("{e}"),
    };
    let reader = PostgresDb::connect(&db.url, None, LEDGER_SCHEMA, 2).await.unwrap();
    let fixture = PgLedger { db, reader };
    let result = contract::run_all(&fixture, "c").await;
    let PgLedger { db, reader } = fixture;
    drop(reader);
    db.drop_now().await.unwrap();
    if let Err(e) = result {
        panic!("{e}");
    }
}
