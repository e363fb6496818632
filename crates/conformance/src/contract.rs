//! The `conformance/v1` contract (docs/protocol.md, "The conformance
//! contract"): a counter per key, with commands whose effects the kit can
//! observe through replies alone — `conformance.apply` adds `amount` to the
//! key's counter, its compensation `conformance.undo` subtracts it, and
//! `conformance.read` answers the current value. Two optional input fields
//! make the other outcomes reachable: `refuse` (a business refusal with that
//! reason) and `transient_below_attempt` (a transient failure while the
//! attempt number is below it).
//!
//! Also the contract's reference participant in Rust, on the worker
//! runtime's SQLite participant database: the kit's own self-test runs it.

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};
use sqsaga_sqlite::Sync;
use sqsaga_worker::{CommandContext, Handler, HandlerError, Participant, WorkerError};

/// The contract's name, as commands carry it.
pub const CONTRACT: &str = "conformance/v1";
/// Adds `amount` to the counter of `key` (action).
pub const APPLY: &str = "conformance.apply";
/// Subtracts `amount` from the counter of `key` (compensation of [`APPLY`]).
pub const UNDO: &str = "conformance.undo";
/// Answers the counter of `key` (action, no compensation).
pub const READ: &str = "conformance.read";

/// The reference participant's table.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS conformance_counters (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);";

/// What a command of the contract asks, from its saga input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub key: String,
    /// 0 when absent (reads).
    pub amount: i64,
    /// Refuse with this reason instead of applying.
    pub refuse: Option<String>,
    /// Fail transiently while the attempt is below this.
    pub transient_below_attempt: Option<u32>,
}

impl Input {
    /// Reads the input of `ctx`; a malformed one is a refusal, as the contract says.
    pub fn of(ctx: &CommandContext) -> Result<Input, HandlerError> {
        let input = ctx.input();
        let key = input
            .get("key")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| HandlerError::Refused("conformance/v1: input.key must be a non-empty string".into()))?;
        let amount = match input.get("amount") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| HandlerError::Refused("conformance/v1: input.amount must be an integer".into()))?,
        };
        let refuse = input.get("refuse").and_then(Value::as_str).map(str::to_string);
        let transient_below_attempt =
            input.get("transient_below_attempt").and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(Input { key: key.to_string(), amount, refuse, transient_below_attempt })
    }

    /// The refusal or transient failure the input asks for at `attempt`, if any.
    pub fn requested_failure(&self, attempt: u32) -> Option<HandlerError> {
        if let Some(reason) = &self.refuse {
            return Some(HandlerError::Refused(reason.clone()));
        }
        match self.transient_below_attempt {
            Some(below) if attempt < below => Some(HandlerError::Transient(format!(
                "conformance/v1: transient failure requested for attempts below {below} (this is attempt {attempt})"
            ))),
            _ => None,
        }
    }
}

/// The reply output of every command: the key and its counter after the command.
pub fn output(key: &str, value: i64) -> Value {
    json!({"key": key, "value": value})
}

fn db(e: rusqlite::Error) -> HandlerError {
    HandlerError::Transient(format!("conformance database: {e}"))
}

fn current(tx: &Transaction<'_>, key: &str) -> Result<i64, HandlerError> {
    let value: Option<i64> = tx
        .query_row("SELECT value FROM conformance_counters WHERE key = ?1", params![key], |r| r.get(0))
        .optional()
        .map_err(db)?;
    Ok(value.unwrap_or(0))
}

fn add(tx: &Transaction<'_>, key: &str, delta: i64) -> Result<i64, HandlerError> {
    tx.execute(
        "INSERT INTO conformance_counters (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
        params![key, delta],
    )
    .map_err(db)?;
    current(tx, key)
}

fn apply(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let input = Input::of(ctx)?;
    if let Some(failure) = input.requested_failure(ctx.attempt) {
        return Err(failure);
    }
    Ok(output(&input.key, add(tx, &input.key, input.amount)?))
}

fn undo(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let input = Input::of(ctx)?;
    Ok(output(&input.key, add(tx, &input.key, -input.amount)?))
}

fn read(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let input = Input::of(ctx)?;
    Ok(output(&input.key, current(tx, &input.key)?))
}

fn boxed(h: impl Handler) -> Box<dyn Handler> {
    Box::new(h)
}

/// The reference participant of `conformance/v1` over the SQLite database at `path`.
pub fn participant(path: &Path, sync: Sync) -> Result<Participant, WorkerError> {
    let mut p = Participant::open_with_schema(path, sync, SCHEMA)?;
    p.register(CONTRACT, APPLY, boxed(apply), Some((UNDO, boxed(undo))));
    p.register(CONTRACT, READ, boxed(read), None);
    Ok(p)
}
