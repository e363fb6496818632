//! The barrier contract (`sqsaga_worker::contract`) on the SQLite adapter:
//! one file, participants opened on it as restarts and sibling replicas, an
//! outage made by another process holding the write lock.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::Value;
use sqsaga_core::machine::Phase;
use sqsaga_worker::barrier::Recorded;
use sqsaga_worker::contract::{self, Fixture, Probes};
use sqsaga_worker::sqlite::{SqliteDb, action_output, lookup};
use sqsaga_worker::{AnyParticipant, CommandContext, Handler, HandlerError, Participant};

const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger (saga_id TEXT PRIMARY KEY, total INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (n INTEGER PRIMARY KEY AUTOINCREMENT, saga_id TEXT NOT NULL, command TEXT NOT NULL);";

struct SqliteLedger {
    path: PathBuf,
    /// The other process holding the write lock during an outage.
    locker: Mutex<Option<Connection>>,
}

fn add(tx: &Transaction<'_>, ctx: &CommandContext, amount: i64) -> rusqlite::Result<()> {
    tx.execute("INSERT INTO runs (saga_id, command) VALUES (?1, ?2)", params![ctx.saga_id, ctx.command])?;
    tx.execute(
        "INSERT INTO ledger (saga_id, total) VALUES (?1, ?2)
         ON CONFLICT (saga_id) DO UPDATE SET total = total + excluded.total",
        params![ctx.saga_id, amount],
    )?;
    Ok(())
}

fn transient(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

fn ledger_participant(path: &std::path::Path, probes: Arc<Probes>) -> Participant {
    let conn = sqsaga_sqlite::open(path, sqsaga_sqlite::Sync::Normal).unwrap();
    // An outage should fail a command in a moment, not after the 10 s default.
    conn.busy_timeout(Duration::from_millis(300)).unwrap();
    let mut p = Participant::new(SqliteDb::with_connection(conn, path, LEDGER_SCHEMA).unwrap());
    let (on_add, on_undo) = (probes.clone(), probes);
    p.register(
        contract::LEDGER_CONTRACT,
        contract::ADD,
        Box::new(move |tx: &Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
            on_add.action_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(d) = contract::sleep(ctx) {
                std::thread::sleep(d);
            }
            add(tx, ctx, contract::amount(ctx)).map_err(transient)?;
            contract::ledger(&on_add, ctx)
        }),
        Some((
            contract::UNDO,
            Box::new(move |tx: &Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
                on_undo.compensation_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let output = action_output(tx, &ctx.saga_id, &ctx.step).map_err(transient)?;
                let amount = output.and_then(|o| o["added"].as_i64()).unwrap_or(0);
                add(tx, ctx, -amount).map_err(transient)?;
                Ok(serde_json::json!({"removed": amount}))
            }) as Box<dyn Handler>,
        )),
    );
    p
}

impl SqliteLedger {
    fn read(&self) -> Connection {
        sqsaga_sqlite::open(&self.path, sqsaga_sqlite::Sync::Normal).unwrap()
    }
}

#[async_trait]
impl Fixture for SqliteLedger {
    async fn participant(&self, probes: Arc<Probes>) -> Result<Arc<dyn AnyParticipant>, String> {
        Ok(Arc::new(ledger_participant(&self.path, probes)))
    }

    async fn ledger(&self, saga: &str) -> Result<(i64, i64), String> {
        let conn = self.read();
        let total: Option<i64> = conn
            .query_row("SELECT total FROM ledger WHERE saga_id = ?1", [saga], |r| r.get(0))
            .optional()
            .map_err(|e| e.to_string())?;
        let runs: i64 = conn
            .query_row("SELECT count(*) FROM runs WHERE saga_id = ?1", [saga], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        Ok((total.unwrap_or(0), runs))
    }

    async fn recorded(&self, saga: &str, op: Phase) -> Result<Option<Recorded>, String> {
        lookup(&self.read(), saga, contract::STEP, op).map_err(|e| e.to_string())
    }

    async fn outage(&self, down: bool) -> Result<(), String> {
        let mut locker = self.locker.lock().unwrap();
        if down {
            let conn = self.read();
            conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
            *locker = Some(conn);
        } else if let Some(conn) = locker.take() {
            conn.execute_batch("ROLLBACK").map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_contract_runs_all_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = SqliteLedger { path: dir.path().join("ledger.db"), locker: Mutex::new(None) };
    if let Err(e) = contract::run_all(&fixture, "c").await {
        panic!("{e}");
    }
}
