//! The three participants of the order saga on SQLite, and their handlers.
//! Each owns its database; its handlers run inside the worker's local
//! transaction, together with the barrier row, so they never check for
//! duplicates themselves. What they decide is in `rules.rs`, shared with
//! the PostgreSQL handlers (`postgres.rs`); only the SQL is written here.
//!
//! Money is in integer cents; quantities are integers. A business refusal
//! (out of stock, card declined, malformed order) is `Refused`; a database
//! hiccup is `Transient`.

use std::path::Path;

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::Value;
use sqsaga_sqlite::Sync;
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{CommandContext, Handler, HandlerError, Participant};

use crate::rules::{self, Charge, Reserve};
use crate::{INVENTORY_CONTRACT, NOTIFICATION_CONTRACT, OrderError, PAYMENT_CONTRACT};

/// The inventory's tables: what is on the shelf, and what is held per order.
pub const INVENTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku       TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    sku      TEXT NOT NULL,
    qty      INTEGER NOT NULL CHECK (qty > 0),
    status   TEXT NOT NULL CHECK (status IN ('reserved', 'released'))
);";

/// The payment service's tables: customer accounts, the merchant's account
/// (one row), and one charge per order.
pub const PAYMENT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    balance INTEGER NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS charges (
    order_id TEXT PRIMARY KEY,
    account  TEXT NOT NULL,
    amount   INTEGER NOT NULL CHECK (amount > 0),
    status   TEXT NOT NULL CHECK (status IN ('charged', 'refunded'))
);
CREATE TABLE IF NOT EXISTS merchant (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    balance INTEGER NOT NULL
);
INSERT OR IGNORE INTO merchant (id, balance) VALUES (1, 0);";

/// The notification service's table: which orders were confirmed, and when.
pub const NOTIFICATION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS confirmations (
    order_id TEXT PRIMARY KEY,
    sent_at  INTEGER NOT NULL
);";

/// A database error inside a handler: rolled back, the orchestrator retries.
fn db(service: &'static str) -> impl Fn(rusqlite::Error) -> HandlerError {
    rules::transient(service)
}

/// `execute` through the connection's statement cache: handlers run the
/// same few statements thousands of times, and parsing SQL each time costs
/// more than running it.
fn exec(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

/// `query_row` through the statement cache, see [`exec`].
fn one<T>(
    tx: &Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    tx.prepare_cached(sql)?.query_row(params, f)
}

fn boxed(h: impl Handler) -> Box<dyn Handler> {
    Box::new(h)
}

/// Inventory (`inventory/v1`): `inventory.reserve` holds `qty` of `sku` for
/// `order_id`, `inventory.release` puts it back.
pub fn inventory(path: &Path, sync: Sync) -> Result<Participant, OrderError> {
    let mut p = Participant::open_with_schema(path, sync, INVENTORY_SCHEMA)?;
    register_inventory(&mut p);
    Ok(p)
}

/// Registers the inventory's handlers on a participant over any SQLite
/// holder (the simulator's in-memory database); its schema is
/// [`INVENTORY_SCHEMA`].
pub fn register_inventory<D: ParticipantDb<Handler = dyn Handler>>(p: &mut Participant<D>) {
    p.register(INVENTORY_CONTRACT, "inventory.reserve", boxed(reserve), Some(("inventory.release", boxed(release))));
}

fn reserve(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let r = Reserve::parse(ctx)?;
    let err = db("inventory");
    let held: Option<String> =
        one(tx, "SELECT status FROM reservations WHERE order_id = ?1", params![r.order_id], |r| r.get(0))
            .optional()
            .map_err(&err)?;
    let available: Option<i64> =
        one(tx, "SELECT available FROM stock WHERE sku = ?1", params![r.sku], |r| r.get(0)).optional().map_err(&err)?;
    r.decide(held.as_deref(), available)?;
    exec(tx, "UPDATE stock SET available = available - ?1 WHERE sku = ?2", params![r.qty, r.sku]).map_err(&err)?;
    exec(
        tx,
        "INSERT INTO reservations (order_id, sku, qty, status) VALUES (?1, ?2, ?3, 'reserved')",
        params![r.order_id, r.sku, r.qty],
    )
    .map_err(&err)?;
    Ok(r.output())
}

fn release(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let order_id = rules::order_id(ctx)?;
    let err = db("inventory");
    let held: Option<(String, i64)> = one(
        tx,
        "SELECT sku, qty FROM reservations WHERE order_id = ?1 AND status = 'reserved'",
        params![order_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(&err)?;
    if let Some((sku, qty)) = &held {
        exec(tx, "UPDATE stock SET available = available + ?1 WHERE sku = ?2", params![qty, sku]).map_err(&err)?;
        exec(tx, "UPDATE reservations SET status = 'released' WHERE order_id = ?1", params![order_id]).map_err(&err)?;
    }
    Ok(rules::released(held.as_ref()))
}

/// Payment (`payment/v1`): `payment.charge` moves `amount` cents from
/// `account` to the merchant, `payment.refund` moves them back.
pub fn payment(path: &Path, sync: Sync) -> Result<Participant, OrderError> {
    let mut p = Participant::open_with_schema(path, sync, PAYMENT_SCHEMA)?;
    register_payment(&mut p);
    Ok(p)
}

/// Registers the payment service's handlers (schema: [`PAYMENT_SCHEMA`]).
pub fn register_payment<D: ParticipantDb<Handler = dyn Handler>>(p: &mut Participant<D>) {
    p.register(PAYMENT_CONTRACT, "payment.charge", boxed(charge), Some(("payment.refund", boxed(refund))));
}

fn charge(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let c = Charge::parse(ctx)?;
    let err = db("payment");
    let charged: Option<String> =
        one(tx, "SELECT status FROM charges WHERE order_id = ?1", params![c.order_id], |r| r.get(0))
            .optional()
            .map_err(&err)?;
    let balance: Option<i64> =
        one(tx, "SELECT balance FROM accounts WHERE account = ?1", params![c.account], |r| r.get(0))
            .optional()
            .map_err(&err)?;
    c.decide(charged.as_deref(), balance)?;
    exec(tx, "UPDATE accounts SET balance = balance - ?1 WHERE account = ?2", params![c.cents, c.account])
        .map_err(&err)?;
    exec(tx, "UPDATE merchant SET balance = balance + ?1 WHERE id = 1", params![c.cents]).map_err(&err)?;
    exec(
        tx,
        "INSERT INTO charges (order_id, account, amount, status) VALUES (?1, ?2, ?3, 'charged')",
        params![c.order_id, c.account, c.cents],
    )
    .map_err(&err)?;
    Ok(c.output())
}

fn refund(tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
    let order_id = rules::order_id(ctx)?;
    let err = db("payment");
    let charged: Option<(String, i64)> = one(
        tx,
        "SELECT account, amount FROM charges WHERE order_id = ?1 AND status = 'charged'",
        params![order_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(&err)?;
    if let Some((account, cents)) = &charged {
        exec(tx, "UPDATE accounts SET balance = balance + ?1 WHERE account = ?2", params![cents, account])
            .map_err(&err)?;
        exec(tx, "UPDATE merchant SET balance = balance - ?1 WHERE id = 1", params![cents]).map_err(&err)?;
        exec(tx, "UPDATE charges SET status = 'refunded' WHERE order_id = ?1", params![order_id]).map_err(&err)?;
    }
    Ok(rules::refunded(charged.as_ref()))
}

/// Notification (`notification/v1`): `notification.send` records the order
/// confirmation. It fails transiently at `failure_rate` (0.0 to 1.0); it has
/// no compensation (an e-mail cannot be unsent).
///
/// Whether an attempt fails is a pure function of `seed`, the order and the
/// attempt ([`crate::injected_failure`]), not of the order in which commands happen
/// to arrive: the same seed gives the same failures, hence the same
/// completed/compensated mix, however the run is scheduled (the backlog test
/// compares a run with late workers to one without).
pub fn notification(path: &Path, sync: Sync, failure_rate: f64, seed: u64) -> Result<Participant, OrderError> {
    check_failure_rate(failure_rate)?;
    let mut p = Participant::open_with_schema(path, sync, NOTIFICATION_SCHEMA)?;
    register_notification(&mut p, failure_rate, seed);
    Ok(p)
}

/// Registers the notification service's handler (schema:
/// [`NOTIFICATION_SCHEMA`]), failing transiently at `failure_rate` as
/// [`notification`] describes. The rate is not checked here.
pub fn register_notification<D: ParticipantDb<Handler = dyn Handler>>(
    p: &mut Participant<D>,
    failure_rate: f64,
    seed: u64,
) {
    p.register(
        NOTIFICATION_CONTRACT,
        "notification.send",
        boxed(move |tx: &Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
            let order_id = rules::send(ctx, seed, failure_rate)?;
            let sent_at = i64::try_from(sqsaga_core::clock::now_ms()).unwrap_or(i64::MAX);
            exec(
                tx,
                "INSERT OR IGNORE INTO confirmations (order_id, sent_at) VALUES (?1, ?2)",
                params![order_id, sent_at],
            )
            .map_err(db("notification"))?;
            Ok(rules::sent(&order_id))
        }),
        None,
    );
}

/// A failure rate must be a probability.
pub(crate) fn check_failure_rate(failure_rate: f64) -> Result<(), OrderError> {
    if (0.0..=1.0).contains(&failure_rate) { Ok(()) } else { Err(OrderError::BadFailureRate(failure_rate)) }
}
