//! The order saga's participants on PostgreSQL: the same three services,
//! each in its own schema (named after the service) of one database, with
//! handlers on the plain `tokio_postgres::Transaction`. What they decide is
//! `rules.rs`, shared with the SQLite handlers; here is only the SQL, and
//! the demo's loader and reads for the invariant check.
//!
//! Rows another command may change concurrently (a sku's stock, an
//! account's balance) are read `FOR UPDATE`: at `READ COMMITTED` two orders
//! for the last units would otherwise both see them and the second would
//! fail the `CHECK` as a transient error. Charges and refunds lock the
//! account before the merchant row, so they cannot deadlock each other.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use sqsaga_postgres::{PgHandler, PgParticipant, PostgresDb};
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{CommandContext, HandlerError, Participant};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::demo::DemoData;
use crate::invariants::{Charge, Reservation, State};
use crate::rules::{self, Charge as ChargeOrder, Reserve};
use crate::{INVENTORY_CONTRACT, NOTIFICATION_CONTRACT, OrderError, PAYMENT_CONTRACT};

/// The inventory's tables (see the SQLite schema in `participants.rs`).
const INVENTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku       TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    sku      TEXT NOT NULL,
    qty      BIGINT NOT NULL CHECK (qty > 0),
    status   TEXT NOT NULL CHECK (status IN ('reserved', 'released'))
);";

/// The payment service's tables.
const PAYMENT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    balance BIGINT NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS charges (
    order_id TEXT PRIMARY KEY,
    account  TEXT NOT NULL,
    amount   BIGINT NOT NULL CHECK (amount > 0),
    status   TEXT NOT NULL CHECK (status IN ('charged', 'refunded'))
);
CREATE TABLE IF NOT EXISTS merchant (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    balance BIGINT NOT NULL
);
INSERT INTO merchant (id, balance) VALUES (1, 0) ON CONFLICT DO NOTHING;";

/// The notification service's table.
const NOTIFICATION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS confirmations (
    order_id TEXT PRIMARY KEY,
    sent_at  BIGINT NOT NULL
);";

/// The schema (and the tables in it) of `service`.
fn schema_of(service: &str) -> Result<&'static str, OrderError> {
    match service {
        "inventory" => Ok(INVENTORY_SCHEMA),
        "payment" => Ok(PAYMENT_SCHEMA),
        "notification" => Ok(NOTIFICATION_SCHEMA),
        other => Err(OrderError::UnknownService(other.to_string())),
    }
}

/// Connects to `service`'s schema of the database at `url`, creating its
/// tables and the barrier's; `pool_size` bounds its concurrent commands.
async fn connect(url: &str, service: &str, pool_size: usize) -> Result<PostgresDb, OrderError> {
    Ok(PostgresDb::connect(url, Some(service), schema_of(service)?, pool_size).await?)
}

/// The participant of `service` in its schema of the database at `url`.
pub async fn open_postgres(
    url: &str,
    service: &str,
    pool_size: usize,
    failure_rate: f64,
    seed: u64,
) -> Result<PgParticipant, OrderError> {
    crate::participants::check_failure_rate(failure_rate)?;
    let mut p = Participant::new(connect(url, service, pool_size).await?);
    match service {
        "inventory" => p.register(
            INVENTORY_CONTRACT,
            "inventory.reserve",
            Box::new(PgReserve),
            Some(("inventory.release", Box::new(PgRelease))),
        ),
        "payment" => p.register(
            PAYMENT_CONTRACT,
            "payment.charge",
            Box::new(PgCharge),
            Some(("payment.refund", Box::new(PgRefund))),
        ),
        _ => p.register(NOTIFICATION_CONTRACT, "notification.send", Box::new(PgSend { seed, failure_rate }), None),
    }
    Ok(p)
}

/// One row's first column, if the row exists.
async fn one<T>(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<T>, HandlerError>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let row = tx.query_opt(sql, params).await.map_err(rules::transient("participant"))?;
    row.map(|r| r.try_get(0)).transpose().map_err(rules::transient("participant"))
}

/// One row's first two columns, if the row exists.
async fn pair(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<(String, i64)>, HandlerError> {
    let row = tx.query_opt(sql, params).await.map_err(rules::transient("participant"))?;
    row.map(|r| Ok::<_, tokio_postgres::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()
        .map_err(rules::transient("participant"))
}

async fn exec(tx: &Transaction<'_>, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), HandlerError> {
    tx.execute(sql, params).await.map_err(rules::transient("participant"))?;
    Ok(())
}

/// `inventory.reserve`.
struct PgReserve;

#[async_trait]
impl PgHandler for PgReserve {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let r = Reserve::parse(ctx)?;
        let held: Option<String> =
            one(tx, "SELECT status FROM reservations WHERE order_id = $1", &[&r.order_id]).await?;
        let available: Option<i64> =
            one(tx, "SELECT available FROM stock WHERE sku = $1 FOR UPDATE", &[&r.sku]).await?;
        r.decide(held.as_deref(), available)?;
        exec(tx, "UPDATE stock SET available = available - $1 WHERE sku = $2", &[&r.qty, &r.sku]).await?;
        exec(
            tx,
            "INSERT INTO reservations (order_id, sku, qty, status) VALUES ($1, $2, $3, 'reserved')",
            &[&r.order_id, &r.sku, &r.qty],
        )
        .await?;
        Ok(r.output())
    }
}

/// `inventory.release`.
struct PgRelease;

#[async_trait]
impl PgHandler for PgRelease {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let order_id = rules::order_id(ctx)?;
        let sql = "SELECT sku, qty FROM reservations WHERE order_id = $1 AND status = 'reserved' FOR UPDATE";
        let held = pair(tx, sql, &[&order_id]).await?;
        if let Some((sku, qty)) = &held {
            exec(tx, "UPDATE stock SET available = available + $1 WHERE sku = $2", &[qty, sku]).await?;
            exec(tx, "UPDATE reservations SET status = 'released' WHERE order_id = $1", &[&order_id]).await?;
        }
        Ok(rules::released(held.as_ref()))
    }
}

/// `payment.charge`.
struct PgCharge;

#[async_trait]
impl PgHandler for PgCharge {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let c = ChargeOrder::parse(ctx)?;
        let charged: Option<String> = one(tx, "SELECT status FROM charges WHERE order_id = $1", &[&c.order_id]).await?;
        let balance: Option<i64> =
            one(tx, "SELECT balance FROM accounts WHERE account = $1 FOR UPDATE", &[&c.account]).await?;
        c.decide(charged.as_deref(), balance)?;
        exec(tx, "UPDATE accounts SET balance = balance - $1 WHERE account = $2", &[&c.cents, &c.account]).await?;
        exec(tx, "UPDATE merchant SET balance = balance + $1 WHERE id = 1", &[&c.cents]).await?;
        exec(
            tx,
            "INSERT INTO charges (order_id, account, amount, status) VALUES ($1, $2, $3, 'charged')",
            &[&c.order_id, &c.account, &c.cents],
        )
        .await?;
        Ok(c.output())
    }
}

/// `payment.refund`.
struct PgRefund;

#[async_trait]
impl PgHandler for PgRefund {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let order_id = rules::order_id(ctx)?;
        let sql = "SELECT account, amount FROM charges WHERE order_id = $1 AND status = 'charged' FOR UPDATE";
        let charged = pair(tx, sql, &[&order_id]).await?;
        if let Some((account, cents)) = &charged {
            exec(tx, "UPDATE accounts SET balance = balance + $1 WHERE account = $2", &[cents, account]).await?;
            exec(tx, "UPDATE merchant SET balance = balance - $1 WHERE id = 1", &[cents]).await?;
            exec(tx, "UPDATE charges SET status = 'refunded' WHERE order_id = $1", &[&order_id]).await?;
        }
        Ok(rules::refunded(charged.as_ref()))
    }
}

/// `notification.send`.
struct PgSend {
    seed: u64,
    failure_rate: f64,
}

#[async_trait]
impl PgHandler for PgSend {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let order_id = rules::send(ctx, self.seed, self.failure_rate)?;
        let sent_at = i64::try_from(sqsaga_core::clock::now_ms()).unwrap_or(i64::MAX);
        exec(
            tx,
            "INSERT INTO confirmations (order_id, sent_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&order_id, &sent_at],
        )
        .await?;
        Ok(rules::sent(&order_id))
    }
}

/// A loader or reader error, naming the database (no password).
fn sql(db: &PostgresDb) -> impl Fn(tokio_postgres::Error) -> OrderError + '_ {
    move |e| OrderError::Sql { path: db.describe(), cause: e.to_string() }
}

/// Loads `data` into the three schemas of the database at `url`, starting
/// fresh (see [`crate::seed_data`], its SQLite twin).
pub async fn seed_postgres(url: &str, data: &DemoData) -> Result<(), OrderError> {
    for service in crate::SERVICES {
        let db = connect(url, service, 1).await?;
        let mut client =
            db.pool().get().await.map_err(|e| OrderError::Sql { path: db.describe(), cause: e.to_string() })?;
        let tx = client.transaction().await.map_err(sql(&db))?;
        let reset = match service {
            "inventory" => "TRUNCATE stock, reservations, sqsaga_barrier",
            "payment" => "TRUNCATE accounts, charges, sqsaga_barrier; UPDATE merchant SET balance = 0 WHERE id = 1",
            _ => "TRUNCATE confirmations, sqsaga_barrier",
        };
        tx.batch_execute(reset).await.map_err(sql(&db))?;
        let (insert, rows) = match service {
            "inventory" => ("INSERT INTO stock (sku, available) VALUES ($1, $2)", &data.stock),
            "payment" => ("INSERT INTO accounts (account, balance) VALUES ($1, $2)", &data.accounts),
            _ => ("", &Vec::new()),
        };
        for (key, n) in rows {
            tx.execute(insert, &[key, n]).await.map_err(sql(&db))?;
        }
        tx.commit().await.map_err(sql(&db))?;
    }
    Ok(())
}

/// What the three schemas of the database at `url` hold now.
pub(crate) async fn read_state_postgres(url: &str) -> Result<State, OrderError> {
    let mut state = State::default();
    for service in crate::SERVICES {
        let db = connect(url, service, 1).await?;
        let client =
            db.pool().get().await.map_err(|e| OrderError::Sql { path: db.describe(), cause: e.to_string() })?;
        let rows = |sql: &'static str| {
            let client = &client;
            let db = &db;
            async move { client.query(sql, &[]).await.map_err(self::sql(db)) }
        };
        let get = |e: tokio_postgres::Error| OrderError::Sql {
            path: db.describe(),
            cause: format!("cannot read the {service} tables: {e}"),
        };
        match service {
            "inventory" => {
                for r in rows("SELECT sku, available FROM stock").await? {
                    state.stock.insert(r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?);
                }
                for r in rows("SELECT order_id, sku, qty, status FROM reservations").await? {
                    let status: String = r.try_get(3).map_err(get)?;
                    let reservation = Reservation {
                        sku: r.try_get(1).map_err(get)?,
                        qty: r.try_get(2).map_err(get)?,
                        reserved: status == "reserved",
                    };
                    state.reservations.insert(r.try_get(0).map_err(get)?, reservation);
                }
            }
            "payment" => {
                for r in rows("SELECT account, balance FROM accounts").await? {
                    state.accounts.insert(r.try_get(0).map_err(get)?, r.try_get(1).map_err(get)?);
                }
                for r in rows("SELECT order_id, account, amount, status FROM charges").await? {
                    let status: String = r.try_get(3).map_err(get)?;
                    let charge = Charge {
                        account: r.try_get(1).map_err(get)?,
                        amount: r.try_get(2).map_err(get)?,
                        charged: status == "charged",
                    };
                    state.charges.insert(r.try_get(0).map_err(get)?, charge);
                }
                for r in rows("SELECT coalesce(sum(balance), 0)::BIGINT FROM merchant").await? {
                    state.merchant = r.try_get(0).map_err(get)?;
                }
            }
            _ => {
                let confirmed: BTreeMap<String, ()> = rows("SELECT order_id FROM confirmations")
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, ())))
                    .collect::<Result<_, tokio_postgres::Error>>()
                    .map_err(get)?;
                state.confirmations = confirmed.into_keys().collect();
            }
        }
    }
    Ok(state)
}
