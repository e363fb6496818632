//! `MemoryDb`: an adapter of the worker's participant database port over
//! an in-memory SQLite connection, used in the calling thread (no writer
//! thread, no linger): the participants of the harness and the simulator.
//! Its batches run the same barrier as the SQLite adapter
//! (`sqsaga_worker::sqlite::run_jobs`), so handlers written for
//! `Participant` (the order example's) run unchanged. A [`CommitGate`]
//! (the simulator's fault plan) may fail a batch before its commit
//! (nothing durable, every message comes back) or after it (durable, but
//! the process died before replying).

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::Connection;
use sqsaga_core::clock::Clock;
use sqsaga_worker::db::{Job, JobResult, ParticipantDb};
use sqsaga_worker::{Handler, WorkerError};

/// What may go wrong around a participant's local commit.
pub trait CommitGate: Send + Sync + 'static {
    /// Before the commit: `Err(cause)` fails the batch; nothing is durable.
    fn before_commit(&self) -> Result<(), String>;
    /// After the commit: `Err(cause)` reports the batch failed although it
    /// is durable (the process died before it could reply).
    fn after_commit(&self) -> Result<(), String>;
}

/// A participant's database in memory.
pub struct MemoryDb {
    name: String,
    conn: Mutex<Connection>,
    /// What may fail around each commit; `None`: nothing.
    gate: Mutex<Option<Arc<dyn CommitGate>>>,
}

impl MemoryDb {
    /// An empty in-memory database named `name`, with the barrier table
    /// and `schema` (the service's own tables) created.
    pub fn open(name: &str, schema: &str) -> Result<MemoryDb, WorkerError> {
        let sql = |e: rusqlite::Error| WorkerError::Database {
            database: format!("memory:{name}"),
            cause: e.to_string(),
            retryable: false,
        };
        let conn = Connection::open_in_memory().map_err(sql)?;
        conn.execute_batch(sqsaga_worker::sqlite::SCHEMA).map_err(sql)?;
        if !schema.trim().is_empty() {
            conn.execute_batch(schema).map_err(sql)?;
        }
        Ok(MemoryDb { name: name.to_string(), conn: Mutex::new(conn), gate: Mutex::new(None) })
    }

    /// Puts the database's commits behind `gate`.
    pub fn set_gate(&self, gate: Arc<dyn CommitGate>) {
        *self.gate.lock().unwrap_or_else(PoisonError::into_inner) = Some(gate);
    }

    /// Runs `f` on the connection (reads, seeding data, checks).
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> T) -> T {
        f(&mut self.conn.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn gate(&self) -> Option<Arc<dyn CommitGate>> {
        self.gate.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn failed(&self, n: usize, cause: &str) -> Vec<JobResult> {
        (0..n)
            .map(|_| {
                let e = WorkerError::Database {
                    database: format!("memory:{}", self.name),
                    cause: cause.to_string(),
                    retryable: true,
                };
                (Err(e), std::time::Duration::ZERO)
            })
            .collect()
    }
}

#[async_trait]
impl ParticipantDb for MemoryDb {
    type Handler = dyn Handler;

    fn describe(&self) -> String {
        format!("memory:{}", self.name)
    }

    async fn run_batch(&self, batch: Vec<Job<dyn Handler>>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        let n = batch.len();
        let gate = self.gate();
        if let Some(Err(cause)) = gate.as_ref().map(|g| g.before_commit()) {
            return self.failed(n, &cause);
        }
        let results = self.with(|conn| -> Result<Vec<JobResult>, String> {
            let tx = conn.transaction().map_err(|e| e.to_string())?;
            let results = sqsaga_worker::sqlite::run_jobs(&tx, &batch, clock.now()).map_err(|e| e.to_string())?;
            tx.commit().map_err(|e| e.to_string())?;
            Ok(results)
        });
        let results = match results {
            Ok(r) => r,
            Err(cause) => return self.failed(n, &cause),
        };
        match gate.map(|g| g.after_commit()) {
            Some(Err(cause)) => self.failed(n, &cause),
            _ => results,
        }
    }

    async fn ping(&self) -> Result<(), WorkerError> {
        Ok(())
    }
}
