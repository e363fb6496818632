//! The invariant checker: after a run, reads the three participants'
//! databases and proves the saga guarantees held — every saga finished,
//! completed orders fully done, compensated orders fully undone, stock and
//! money conserved, no effect applied twice.
//!
//! It reads the participants' business tables only, never the barrier or the
//! orchestrator's store: what it checks is what a customer or an auditor
//! would see. The saga statuses come from the caller.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;
use sqsaga_core::machine::SagaStatus;
use sqsaga_sqlite::Sync;

use crate::demo::DemoData;
use crate::input::Order;
use crate::{OrderError, database_path};

/// The verdict, with every violation found (not just the first).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct InvariantReport {
    /// No violation.
    pub ok: bool,
    /// One sentence per broken invariant, naming the saga, order, SKU or account.
    pub violations: Vec<String>,
    pub sagas: usize,
    pub completed: usize,
    pub compensated: usize,
    /// Running, compensating or waiting for an operator.
    pub unfinished: usize,
    /// Units on the shelf at the start.
    pub stock_initial: i64,
    /// Units now: available plus held by reservations.
    pub stock_final: i64,
    /// Cents in customer accounts at the start (the merchant starts at 0).
    pub money_initial: i64,
    /// Cents now: customer balances plus the merchant's.
    pub money_final: i64,
}

impl fmt::Display for InvariantReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} sagas: {} completed, {} compensated, {} unfinished",
            self.sagas, self.completed, self.compensated, self.unfinished
        )?;
        writeln!(f, "stock: {} units at start, {} now", self.stock_initial, self.stock_final)?;
        writeln!(f, "money: {} cents at start, {} now", self.money_initial, self.money_final)?;
        if self.ok {
            write!(f, "invariants hold")
        } else {
            write!(f, "{} invariant violation(s):", self.violations.len())?;
            for v in &self.violations {
                write!(f, "\n  - {v}")?;
            }
            Ok(())
        }
    }
}

/// A reservation row.
pub(crate) struct Reservation {
    pub sku: String,
    pub qty: i64,
    pub reserved: bool,
}

/// A charge row.
pub(crate) struct Charge {
    pub account: String,
    pub amount: i64,
    pub charged: bool,
}

/// What the participants' databases hold now, whichever databases they are.
#[derive(Default)]
pub(crate) struct State {
    pub stock: BTreeMap<String, i64>,
    pub reservations: BTreeMap<String, Reservation>,
    pub accounts: BTreeMap<String, i64>,
    pub charges: BTreeMap<String, Charge>,
    pub merchant: i64,
    pub confirmations: BTreeSet<String>,
}

fn open(data_dir: &Path, service: &str) -> Result<Connection, OrderError> {
    let path = database_path(data_dir, service);
    if !path.exists() {
        return Err(OrderError::Io {
            path: path.display().to_string(),
            cause: format!("the {service} database does not exist"),
        });
    }
    sqsaga_sqlite::open(&path, Sync::Normal)
        .map_err(|e| OrderError::Sql { path: path.display().to_string(), cause: e.to_string() })
}

fn read_state(data_dir: &Path) -> Result<State, OrderError> {
    let inventory = open(data_dir, "inventory")?;
    let payment = open(data_dir, "payment")?;
    let notification = open(data_dir, "notification")?;
    read_state_from([&inventory, &payment, &notification], &|service| {
        database_path(data_dir, service).display().to_string()
    })
}

/// Reads the three databases `[inventory, payment, notification]`; `path`
/// names a service's database in errors.
fn read_state_from(conns: [&Connection; 3], path: &dyn Fn(&str) -> String) -> Result<State, OrderError> {
    let [inventory, payment, notification] = conns;
    let read = |service: &str, e: rusqlite::Error| OrderError::Sql {
        path: path(service),
        cause: format!("cannot read the {service} tables: {e}"),
    };
    let stock = rows(inventory, "SELECT sku, available FROM stock", |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| read("inventory", e))?;
    let reservations = rows(inventory, "SELECT order_id, sku, qty, status FROM reservations", |r| {
        let status: String = r.get(3)?;
        Ok((r.get(0)?, Reservation { sku: r.get(1)?, qty: r.get(2)?, reserved: status == "reserved" }))
    })
    .map_err(|e| read("inventory", e))?;
    let accounts = rows(payment, "SELECT account, balance FROM accounts", |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(|e| read("payment", e))?;
    let charges = rows(payment, "SELECT order_id, account, amount, status FROM charges", |r| {
        let status: String = r.get(3)?;
        Ok((r.get(0)?, Charge { account: r.get(1)?, amount: r.get(2)?, charged: status == "charged" }))
    })
    .map_err(|e| read("payment", e))?;
    let merchant = payment
        .query_row("SELECT coalesce(sum(balance), 0) FROM merchant", [], |r| r.get(0))
        .map_err(|e| read("payment", e))?;
    let confirmations: BTreeMap<String, i64> =
        rows(notification, "SELECT order_id, sent_at FROM confirmations", |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| read("notification", e))?;
    Ok(State { stock, reservations, accounts, charges, merchant, confirmations: confirmations.into_keys().collect() })
}

fn rows<V>(
    conn: &Connection,
    sql: &str,
    f: impl Fn(&rusqlite::Row<'_>) -> Result<(String, V), rusqlite::Error>,
) -> Result<BTreeMap<String, V>, rusqlite::Error> {
    let mut stmt = conn.prepare(sql)?;
    let mapped = stmt.query_map([], f)?;
    mapped.collect()
}

/// Checks every invariant of the order saga against the participants'
/// SQLite databases in `data_dir`. `sagas` is `(saga id, final status,
/// input)` for every saga started; `initial` is what [`crate::seed_data`]
/// loaded. `Err` only when a database cannot be read at all; every broken
/// invariant is a line in the report.
pub fn check_invariants(
    data_dir: &Path,
    sagas: &[(String, SagaStatus, Value)],
    initial: &DemoData,
) -> Result<InvariantReport, OrderError> {
    Ok(check_state(&read_state(data_dir)?, sagas, initial))
}

/// [`check_invariants`] on open connections to the three databases,
/// `[inventory, payment, notification]` (the simulator's in-memory ones).
pub fn check_invariants_in(
    conns: [&Connection; 3],
    sagas: &[(String, SagaStatus, Value)],
    initial: &DemoData,
) -> Result<InvariantReport, OrderError> {
    Ok(check_state(&read_state_from(conns, &|service| format!("{service} (in memory)"))?, sagas, initial))
}

pub(crate) fn check_state(state: &State, sagas: &[(String, SagaStatus, Value)], initial: &DemoData) -> InvariantReport {
    let mut report = InvariantReport {
        sagas: sagas.len(),
        stock_initial: initial.total_stock(),
        money_initial: initial.total_money(),
        ..InvariantReport::default()
    };
    let v = &mut report.violations;

    // Every saga finished, and its effects match its ending.
    let mut orders: BTreeMap<String, (String, Order)> = BTreeMap::new();
    for (id, status, input) in sagas {
        match status {
            SagaStatus::Completed => report.completed += 1,
            SagaStatus::Compensated => report.compensated += 1,
            SagaStatus::Running => v.push(format!("saga {id} is still running")),
            SagaStatus::Compensating => v.push(format!("saga {id} is still compensating")),
            SagaStatus::NeedsOperator => v.push(format!("saga {id} needs an operator")),
        }
        if !status.is_terminal() {
            report.unfinished += 1;
        }
        let order = match Order::parse(input) {
            Ok(o) => o,
            Err(e) => {
                v.push(format!("saga {id}: {e}"));
                continue;
            }
        };
        check_saga(v, id, *status, &order, state);
        if let Some((other, _)) = orders.get(&order.order_id) {
            v.push(format!("order {} belongs to two sagas: {other} and {id}", order.order_id));
        } else {
            orders.insert(order.order_id.clone(), (id.clone(), order));
        }
    }

    // No effect without a saga, and none that differs from its order.
    for (order_id, r) in &state.reservations {
        match orders.get(order_id) {
            None => v.push(format!("reservation for order {order_id}, which no saga placed")),
            Some((id, o)) if o.sku != r.sku || o.qty != r.qty => v.push(format!(
                "saga {id}: reservation of {} x {} does not match the order ({} x {})",
                r.qty, r.sku, o.qty, o.sku
            )),
            Some(_) => {}
        }
    }
    for (order_id, c) in &state.charges {
        match orders.get(order_id) {
            None => v.push(format!("charge for order {order_id}, which no saga placed")),
            Some((id, o)) if o.account != c.account || o.amount != c.amount => v.push(format!(
                "saga {id}: charge of {} cents to {} does not match the order ({} cents to {})",
                c.amount, c.account, o.amount, o.account
            )),
            Some(_) => {}
        }
    }
    for order_id in &state.confirmations {
        if !orders.contains_key(order_id) {
            v.push(format!("confirmation for order {order_id}, which no saga placed"));
        }
    }

    // Stock conserved, per SKU: on the shelf plus held equals the start.
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    for r in state.reservations.values().filter(|r| r.reserved) {
        *held.entry(r.sku.as_str()).or_default() += r.qty;
    }
    let initial_stock: BTreeMap<&str, i64> = initial.stock.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    let skus: BTreeSet<&str> = initial_stock
        .keys()
        .copied()
        .chain(state.stock.keys().map(String::as_str))
        .chain(held.keys().copied())
        .collect();
    for sku in skus {
        let start = initial_stock.get(sku).copied().unwrap_or(0);
        let available = state.stock.get(sku).copied().unwrap_or(0);
        let reserved = held.get(sku).copied().unwrap_or(0);
        if available + reserved != start {
            v.push(format!(
                "stock of {sku} not conserved: {available} available + {reserved} reserved != {start} at start"
            ));
        }
    }
    report.stock_final = state.stock.values().sum::<i64>() + held.values().sum::<i64>();

    // Money conserved, per account and for the merchant.
    let mut charged: BTreeMap<&str, i64> = BTreeMap::new();
    for c in state.charges.values().filter(|c| c.charged) {
        *charged.entry(c.account.as_str()).or_default() += c.amount;
    }
    let initial_money: BTreeMap<&str, i64> = initial.accounts.iter().map(|(a, n)| (a.as_str(), *n)).collect();
    let accounts: BTreeSet<&str> = initial_money
        .keys()
        .copied()
        .chain(state.accounts.keys().map(String::as_str))
        .chain(charged.keys().copied())
        .collect();
    for account in accounts {
        let start = initial_money.get(account).copied().unwrap_or(0);
        let balance = state.accounts.get(account).copied().unwrap_or(0);
        let paid = charged.get(account).copied().unwrap_or(0);
        if balance + paid != start {
            v.push(format!("money of {account} not conserved: balance {balance} + {paid} charged != {start} at start"));
        }
    }
    let total_charged: i64 = charged.values().sum();
    if state.merchant != total_charged {
        v.push(format!("merchant holds {} cents but active charges total {total_charged}", state.merchant));
    }
    report.money_final = state.accounts.values().sum::<i64>() + state.merchant;
    if report.money_final != report.money_initial {
        v.push(format!("money not conserved: {} cents now != {} at start", report.money_final, report.money_initial));
    }
    if report.stock_final != report.stock_initial {
        v.push(format!("stock not conserved: {} units now != {} at start", report.stock_final, report.stock_initial));
    }

    report.ok = report.violations.is_empty();
    report
}

/// A finished saga's effects match how it finished.
fn check_saga(v: &mut Vec<String>, id: &str, status: SagaStatus, order: &Order, state: &State) {
    let oid = &order.order_id;
    let reservation = state.reservations.get(oid);
    let charge = state.charges.get(oid);
    let confirmed = state.confirmations.contains(oid);
    match status {
        SagaStatus::Completed => {
            match reservation {
                None => v.push(format!("saga {id} completed but order {oid} has no stock reservation")),
                Some(r) if !r.reserved => {
                    v.push(format!("saga {id} completed but the reservation of order {oid} was released"))
                }
                Some(_) => {}
            }
            match charge {
                None => v.push(format!("saga {id} completed but order {oid} was never charged")),
                Some(c) if !c.charged => v.push(format!("saga {id} completed but order {oid} was refunded")),
                Some(_) => {}
            }
            if !confirmed {
                v.push(format!("saga {id} completed but order {oid} has no confirmation"));
            }
        }
        SagaStatus::Compensated => {
            if let Some(r) = reservation.filter(|r| r.reserved) {
                v.push(format!("saga {id} compensated but order {oid} still holds {} x {}", r.qty, r.sku));
            }
            if let Some(c) = charge.filter(|c| c.charged) {
                v.push(format!(
                    "saga {id} compensated but order {oid} is still charged {} cents to {}",
                    c.amount, c.account
                ));
            }
            if confirmed {
                v.push(format!("saga {id} compensated but order {oid} was confirmed to the customer"));
            }
        }
        // Reported by the caller; a saga in flight may hold anything.
        SagaStatus::Running | SagaStatus::Compensating | SagaStatus::NeedsOperator => {}
    }
}
