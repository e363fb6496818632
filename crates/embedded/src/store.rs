//! [`SqliteStore`]: the `SagaStore` port over the `sagas` and `history`
//! tables of the embedded database.
//!
//! A commit is one group-commit job: every write is checked against its
//! revision, its history appended, and its outbox inserted straight into the
//! `messages` table — same file, same transaction — so the new state and the
//! commands it emits are durable together and nothing is ever pending
//! (`outbox_pending: false`, `pending_outboxes` empty, `clear_outbox` a
//! no-op). Reads go to the read connections.
//!
//! Retention: SQLite has no TTL, so [`SqliteStore::expire`] deletes
//! terminal sagas whose last update is older than the cut-off, with their
//! history, a batch per call, through the `(status, updated_at)` index; the
//! orchestrator calls it periodically.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use sqsaga_core::Millis;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_queue::OutgoingMessage;
use sqsaga_store::{
    Consumption, DeleteWhen, HistoryEntry, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError,
    UnitOfWork, UnitOutcome, WriteOutcome,
};

use crate::db::{Fail, Shared, for_store, now_ms, to_sql};
use crate::queue::{delete_receipts, insert_messages, require_queue};

/// The `SagaStore` port on the embedded database; get it from
/// [`EmbeddedBackend::store`](crate::EmbeddedBackend::store).
pub struct SqliteStore {
    /// The database, its writer and the long-poll signals.
    shared: Arc<Shared>,
}

/// A write ready for the job: the state already serialised, the outbox
/// grouped by queue (in order of first appearance).
struct Prepared {
    id: String,
    saga: String,
    version: i64,
    status: &'static str,
    state: String,
    next_due_at: Option<i64>,
    started_at: i64,
    updated_at: i64,
    expected_revision: Option<u64>,
    history: Vec<HistoryEntry>,
    outbox: Vec<(String, Vec<OutgoingMessage>)>,
}

impl SqliteStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SqliteStore { shared }
    }
}

#[async_trait]
impl SagaStore for SqliteStore {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        let ids = ids.to_vec();
        let read = self.shared.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT revision, state FROM sagas WHERE id = ?1")?;
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                let row: Option<(i64, String)> = stmt.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
                let Some((revision, state)) = row else { continue };
                let instance: SagaInstance = serde_json::from_str(&state).map_err(|e| corrupt(&id, e))?;
                let revision = u64::try_from(revision).map_err(|_| corrupt(&id, format!("revision {revision}")))?;
                records.push(SagaRecord { instance, revision });
            }
            Ok(records)
        });
        for_store(read.await)
    }

    /// One job for the whole call. A conflict or duplicate create touches
    /// nothing and is reported in its slot; a hard error (an outbox message
    /// to a queue that does not exist) fails the call and commits none of it.
    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        Ok(self.commit_unit(UnitOfWork { writes, consumed: Vec::new() }).await?.outcomes)
    }

    /// Same file, same transaction: the consumed messages are deleted by
    /// the job that commits the writes they caused, so a consumed message
    /// costs the orchestrator no job of its own.
    async fn commit_unit(&self, unit: UnitOfWork) -> Result<UnitOutcome, StoreError> {
        if unit.is_empty() {
            return Ok(UnitOutcome { outcomes: Vec::new(), consumption: Consumption::Deleted { failed: Vec::new() } });
        }
        let UnitOfWork { writes, consumed } = unit;
        let prepared = writes.into_iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        let clock = self.shared.clock.clone();
        let job = self.shared.writer.run_in_batch(move |txn| -> Result<_, Fail> {
            // Every queue the job will write to is checked before the first
            // write: the job has no savepoint of its own.
            let mut queues: Vec<&str> =
                prepared.iter().flat_map(|w| w.outbox.iter().map(|(q, _)| q.as_str())).collect();
            queues.extend(consumed.iter().map(|m| m.queue.as_str()));
            queues.sort_unstable();
            queues.dedup();
            for q in queues {
                require_queue(txn, q)?;
            }
            let now = now_ms(&*clock);
            let mut outcomes = Vec::with_capacity(prepared.len());
            let mut touched: BTreeMap<String, usize> = BTreeMap::new();
            for write in &prepared {
                let outcome = apply(txn, write, now)?;
                if matches!(outcome, WriteOutcome::Committed { .. }) {
                    for (q, _) in &write.outbox {
                        *touched.entry(q.clone()).or_default() += 1;
                    }
                }
                outcomes.push(outcome);
            }
            // The deletable receipts, by queue.
            let mut receipts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for m in &consumed {
                let deletable = match m.when {
                    DeleteWhen::Always => true,
                    DeleteWhen::Committed(i) => matches!(outcomes.get(i), Some(WriteOutcome::Committed { .. })),
                };
                if deletable {
                    receipts.entry(m.queue.as_str()).or_default().push(m.receipt.clone());
                }
            }
            let mut failed = Vec::new();
            for (queue, receipts) in receipts {
                failed.extend(delete_receipts(txn, queue, &receipts)?);
            }
            Ok((outcomes, touched, failed))
        });
        let (outcomes, touched, failed) = for_store(job.await)?;
        self.shared.wake(touched.iter().map(|(q, n)| (q.as_str(), *n)));
        Ok(UnitOutcome { outcomes, consumption: Consumption::Deleted { failed } })
    }

    /// Nothing is ever pending here: the outbox went into the queues with the state.
    async fn clear_outbox(&self, _saga_id: &str, _revision: u64) -> Result<(), StoreError> {
        Ok(())
    }

    /// Always empty, see [`SqliteStore::clear_outbox`].
    async fn pending_outboxes(&self, _written_before: Millis, _limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        Ok(Vec::new())
    }

    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        let read = self.shared.read(move |conn| {
            let ids = conn
                .prepare_cached(
                    "SELECT id FROM sagas WHERE next_due_at IS NOT NULL AND next_due_at <= ?1 \
                     ORDER BY next_due_at LIMIT ?2",
                )?
                .query_map(params![to_sql(now), sql_limit(limit)], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(ids)
        });
        for_store(read.await)
    }

    /// Newest first. Without a status, each status is read through the
    /// `(status, updated_at)` index and the results merged, so no call scans
    /// the table.
    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        let read = self.shared.read(move |conn| {
            let statuses = match status {
                Some(s) => vec![s],
                None => SagaStatus::ALL.to_vec(),
            };
            let mut stmt = conn.prepare_cached(
                "SELECT id, saga, version, started_at, updated_at FROM sagas \
                 WHERE status = ?1 ORDER BY updated_at DESC, id DESC LIMIT ?2",
            )?;
            let mut out = Vec::new();
            for status in statuses {
                let rows = stmt
                    .query_map(params![status.as_str(), sql_limit(limit)], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, i64>(4)?,
                        ))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                for (id, saga, version, started_at, updated_at) in rows {
                    let version = u32::try_from(version).map_err(|_| corrupt(&id, format!("version {version}")))?;
                    out.push(SagaSummary {
                        id,
                        saga,
                        version,
                        status,
                        started_at: u64::try_from(started_at).unwrap_or(0),
                        updated_at: u64::try_from(updated_at).unwrap_or(0),
                    });
                }
            }
            out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| b.id.cmp(&a.id)));
            out.truncate(limit);
            Ok(out)
        });
        for_store(read.await)
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let id = saga_id.to_string();
        let read = self.shared.read(move |conn| {
            let entries = conn
                .prepare_cached("SELECT at, event, note FROM history WHERE saga_id = ?1 ORDER BY seq")?
                .query_map([&id], |r| {
                    Ok(HistoryEntry {
                        at: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                        event: r.get(1)?,
                        note: r.get(2)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(entries)
        });
        for_store(read.await)
    }

    /// A read of nothing: the connection answers.
    async fn reachable(&self) -> Result<(), StoreError> {
        let read = self.shared.read(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?));
        for_store(read.await).map(|_| ())
    }

    /// One job: the oldest `limit` terminal sagas last updated at or
    /// before `ended_before`, and their history lines.
    async fn expire(&self, ended_before: Millis, limit: usize) -> Result<usize, StoreError> {
        if limit == 0 {
            return Ok(0);
        }
        let job = self.shared.writer.run(move |txn| -> Result<usize, Fail> {
            let mut ids: Vec<String> = Vec::new();
            let mut select = txn.prepare_cached(
                "SELECT id FROM sagas WHERE status = ?1 AND updated_at <= ?2 ORDER BY updated_at LIMIT ?3",
            )?;
            for status in SagaStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
                let more = select
                    .query_map(params![status.as_str(), to_sql(ended_before), sql_limit(limit - ids.len())], |r| {
                        r.get(0)
                    })?
                    .collect::<Result<Vec<String>, _>>()?;
                ids.extend(more);
                if ids.len() >= limit {
                    break;
                }
            }
            let mut saga = txn.prepare_cached("DELETE FROM sagas WHERE id = ?1")?;
            let mut history = txn.prepare_cached("DELETE FROM history WHERE saga_id = ?1")?;
            for id in &ids {
                saga.execute([id])?;
                history.execute([id])?;
            }
            Ok(ids.len())
        });
        for_store(job.await)
    }

    /// Every status is present, zero included.
    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let read = self.shared.read(|conn| {
            let mut counts: BTreeMap<SagaStatus, u64> = SagaStatus::ALL.into_iter().map(|s| (s, 0)).collect();
            let rows = conn
                .prepare_cached("SELECT status, COUNT(*) FROM sagas GROUP BY status")?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            for (status, n) in rows {
                let Some(status) = SagaStatus::parse(&status) else {
                    return Err(StoreError::Corrupt {
                        id: format!("({n} sagas)"),
                        cause: format!("unknown status `{status}`"),
                    }
                    .into());
                };
                counts.insert(status, u64::try_from(n).unwrap_or(0));
            }
            Ok(counts)
        });
        for_store(read.await)
    }
}

/// Serialises a write and checks its outbox against the queue limits, before
/// it takes a place in the writer's transaction.
fn prepare(write: SagaWrite) -> Result<Prepared, StoreError> {
    let SagaWrite { instance, expected_revision, history, outbox } = write;
    let state = serde_json::to_string(&instance)
        .map_err(|e| StoreError::Backend(format!("saga `{}` cannot be serialised: {e}", instance.id)))?;
    let mut grouped: Vec<(String, Vec<OutgoingMessage>)> = Vec::new();
    for m in outbox {
        m.message.check()?;
        match grouped.iter_mut().find(|(q, _)| *q == m.queue) {
            Some((_, messages)) => messages.push(m.message),
            None => grouped.push((m.queue, vec![m.message])),
        }
    }
    // `needs_operator` has no wake-up of its own; terminal sagas never wake.
    let next_due_at = if instance.status.is_terminal() { None } else { instance.next_wakeup().map(to_sql) };
    Ok(Prepared {
        saga: instance.saga.clone(),
        version: i64::from(instance.version),
        status: instance.status.as_str(),
        state,
        next_due_at,
        started_at: to_sql(instance.started_at),
        updated_at: to_sql(instance.updated_at),
        id: instance.id,
        expected_revision,
        history,
        outbox: grouped,
    })
}

/// Applies one write inside the job. The revision check is the first
/// statement, so a conflict or duplicate writes nothing.
fn apply(conn: &Connection, w: &Prepared, now: i64) -> Result<WriteOutcome, Fail> {
    let revision = match w.expected_revision {
        None => {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO sagas (id, saga, version, status, revision, state, next_due_at, outbox, started_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, NULL, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![w.id, w.saga, w.version, w.status, w.state, w.next_due_at, w.started_at, w.updated_at])?;
            if inserted == 0 {
                return Ok(WriteOutcome::AlreadyExists);
            }
            1
        }
        Some(expected) => {
            let updated = conn
                .prepare_cached(
                    "UPDATE sagas SET saga = ?1, version = ?2, status = ?3, revision = revision + 1, state = ?4, \
                     next_due_at = ?5, updated_at = ?6 WHERE id = ?7 AND revision = ?8",
                )?
                .execute(params![
                    w.saga,
                    w.version,
                    w.status,
                    w.state,
                    w.next_due_at,
                    w.updated_at,
                    w.id,
                    to_sql(expected)
                ])?;
            if updated == 0 {
                return Ok(WriteOutcome::Conflict);
            }
            expected.saturating_add(1)
        }
    };
    if !w.history.is_empty() {
        let last: i64 = conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM history WHERE saga_id = ?1")?
            .query_row([&w.id], |r| r.get(0))?;
        let mut insert =
            conn.prepare_cached("INSERT INTO history (saga_id, seq, at, event, note) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (i, entry) in w.history.iter().enumerate() {
            let seq = last.saturating_add(1).saturating_add(i as i64);
            insert.execute(params![w.id, seq, to_sql(entry.at), entry.event, entry.note])?;
        }
    }
    for (queue, messages) in &w.outbox {
        insert_messages(conn, queue, messages, now)?;
    }
    Ok(WriteOutcome::Committed { revision, outbox_pending: false })
}

fn corrupt(id: &str, cause: impl std::fmt::Display) -> Fail {
    Fail::Store(StoreError::Corrupt { id: id.to_string(), cause: cause.to_string() })
}

/// `LIMIT` takes an `i64`; anything larger than that is "all".
fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
