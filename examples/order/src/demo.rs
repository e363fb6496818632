//! Demo data: a reproducible mix of orders that exercises every path of the
//! saga (success, out of stock, card declined; transient notification
//! failures come from the notification participant's failure rate), and the
//! loader that puts the initial stock and balances into the participants'
//! databases.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqsaga_sqlite::Sync;

use crate::participants::{INVENTORY_SCHEMA, NOTIFICATION_SCHEMA, PAYMENT_SCHEMA};
use crate::{OrderError, database_path};

/// Initial state of the participants: the baseline the invariants compare to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DemoData {
    /// `(sku, units available)`.
    pub stock: Vec<(String, i64)>,
    /// `(account, balance in cents)`.
    pub accounts: Vec<(String, i64)>,
}

impl DemoData {
    pub fn total_stock(&self) -> i64 {
        self.stock.iter().map(|(_, n)| n).sum()
    }

    pub fn total_money(&self) -> i64 {
        self.accounts.iter().map(|(_, n)| n).sum()
    }
}

/// `(sku, unit price in cents)`; the last one is scarce.
const CATALOGUE: [(&str, i64); 5] = [
    ("sku-widget", 1_299),
    ("sku-gadget", 2_450),
    ("sku-gizmo", 799),
    ("sku-doohickey", 4_999),
    ("sku-rare-lamp", 15_000),
];
const SCARCE: usize = CATALOGUE.len() - 1;
const RICH: [&str; 4] = ["acct-alice", "acct-bob", "acct-carol", "acct-dave"];
/// Less than the cheapest possible order (one gizmo): every charge is declined.
const POOR: [(&str, i64); 2] = [("acct-poor-erin", 500), ("acct-poor-frank", 0)];
const MAX_QTY: i64 = 3;

/// `n` orders and the initial data they run against, reproducible from `seed`.
///
/// The mix, by construction (so it holds for any `n` from about 10 on):
/// every 5th order (from the 2nd) wants the scarce SKU, whose stock covers
/// only about a tenth of the orders, so most of those run out of stock; every
/// 7th order (from the 4th) pays with a poor account and is declined; the
/// rest have plenty of stock and money and succeed, unless the notification
/// failure rate exhausts their retries.
pub fn generate_orders(n: usize, seed: u64) -> (DemoData, Vec<Value>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let count = i64::try_from(n).unwrap_or(i64::MAX / 100_000);
    let mut stock: Vec<(String, i64)> =
        CATALOGUE.iter().map(|(sku, _)| (sku.to_string(), count.saturating_mul(MAX_QTY))).collect();
    stock[SCARCE].1 = (count / 10).max(1);
    // Each rich account could pay for every order at the highest price.
    let rich_balance = count.saturating_mul(MAX_QTY).saturating_mul(CATALOGUE[SCARCE].1);
    let mut accounts: Vec<(String, i64)> = RICH.iter().map(|a| (a.to_string(), rich_balance)).collect();
    accounts.extend(POOR.iter().map(|(a, b)| (a.to_string(), *b)));

    let orders = (0..n)
        .map(|i| {
            let item = if i % 5 == 1 { SCARCE } else { rng.random_range(0..SCARCE) };
            let (sku, price) = CATALOGUE[item];
            let qty = rng.random_range(1..=MAX_QTY);
            let account = if i % 7 == 3 {
                POOR[rng.random_range(0..POOR.len())].0
            } else {
                RICH[rng.random_range(0..RICH.len())]
            };
            json!({
                "order_id": format!("order-{i:05}"),
                "sku": sku,
                "qty": qty,
                "account": account,
                "amount": price * qty,
            })
        })
        .collect();
    (DemoData { stock, accounts }, orders)
}

/// Loads `data` into the participants' databases under `data_dir`, starting
/// fresh: stock, reservations, accounts, charges, the merchant balance,
/// confirmations and the barrier rows are all replaced, so a demo re-run on
/// the same directory starts from a known baseline. Do not run it while
/// sagas are in flight.
pub fn seed_data(data_dir: &Path, data: &DemoData) -> Result<(), OrderError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| OrderError::Io { path: data_dir.display().to_string(), cause: e.to_string() })?;
    let barrier = sqsaga_worker::sqlite::SCHEMA;
    let inventory = format!(
        "{INVENTORY_SCHEMA}\n{barrier}\nDELETE FROM stock; DELETE FROM reservations; DELETE FROM sqsaga_barrier;"
    );
    load(&database_path(data_dir, "inventory"), &inventory, |tx| fill_inventory(tx, data))?;
    let payment = format!(
        "{PAYMENT_SCHEMA}\n{barrier}\nDELETE FROM accounts; DELETE FROM charges; DELETE FROM sqsaga_barrier;
         UPDATE merchant SET balance = 0 WHERE id = 1;"
    );
    load(&database_path(data_dir, "payment"), &payment, |tx| fill_payment(tx, data))?;
    let notification =
        format!("{NOTIFICATION_SCHEMA}\n{barrier}\nDELETE FROM confirmations; DELETE FROM sqsaga_barrier;");
    load(&database_path(data_dir, "notification"), &notification, |_| Ok(()))
}

/// Puts `data`'s stock into an inventory database (schema
/// [`INVENTORY_SCHEMA`], no stock yet).
pub fn fill_inventory(tx: &rusqlite::Connection, data: &DemoData) -> Result<(), rusqlite::Error> {
    for (sku, qty) in &data.stock {
        tx.execute("INSERT INTO stock (sku, available) VALUES (?1, ?2)", params![sku, qty])?;
    }
    Ok(())
}

/// Puts `data`'s accounts into a payment database (schema
/// [`PAYMENT_SCHEMA`], no accounts yet).
pub fn fill_payment(tx: &rusqlite::Connection, data: &DemoData) -> Result<(), rusqlite::Error> {
    for (account, balance) in &data.accounts {
        tx.execute("INSERT INTO accounts (account, balance) VALUES (?1, ?2)", params![account, balance])?;
    }
    Ok(())
}

/// Runs `reset` then `fill` in one transaction on the database at `path`.
fn load(
    path: &Path,
    reset: &str,
    fill: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), rusqlite::Error>,
) -> Result<(), OrderError> {
    let sql = |e: rusqlite::Error| OrderError::Sql { path: path.display().to_string(), cause: e.to_string() };
    let mut conn = sqsaga_sqlite::open(path, Sync::Normal)
        .map_err(|e| OrderError::Sql { path: path.display().to_string(), cause: e.to_string() })?;
    let tx = conn.transaction().map_err(sql)?;
    tx.execute_batch(reset).map_err(sql)?;
    fill(&tx).map_err(sql)?;
    tx.commit().map_err(sql)
}
