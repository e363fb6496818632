//! The order participants' handlers, the demo data, and the invariant checker
//! (including that it catches planted violations). Sagas are driven here by a
//! tiny sequential stand-in for the orchestrator, straight through
//! `Participant::execute`, so these tests need no queue.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::path::Path;

use rusqlite::params;
use serde_json::{Value, json};
use sqsaga_core::machine::{Outcome, Phase, SagaStatus};
use sqsaga_order::{
    DemoData, check_invariants, generate_orders, inventory, notification, participants, payment, seed_data,
};
use sqsaga_sqlite::Sync;
use sqsaga_worker::{CommandContext, Participant};

fn ctx(saga: &str, step: &str, command: &str, phase: Phase, attempt: u32, input: &Value) -> CommandContext {
    CommandContext {
        saga_id: saga.to_string(),
        step: step.to_string(),
        command: command.to_string(),
        phase,
        attempt,
        payload: json!({"input": input, "outputs": {}}),
        not_after: None,
        sent_at: None,
    }
}

async fn act(p: &Participant, saga: &str, step: &str, command: &str, input: &Value) -> Outcome {
    p.execute(ctx(saga, step, command, Phase::Action, 1, input)).await.unwrap().outcome
}

async fn undo(p: &Participant, saga: &str, step: &str, command: &str, input: &Value) -> Outcome {
    p.execute(ctx(saga, step, command, Phase::Compensation, 1, input)).await.unwrap().outcome
}

fn refused(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Refused { reason } => Some(reason),
        _ => None,
    }
}

fn sql(dir: &Path, service: &str, statement: &str) {
    let conn = sqsaga_sqlite::open(&dir.join(format!("{service}.db")), Sync::Normal).unwrap();
    conn.execute_batch(statement).unwrap();
}

fn small_data() -> DemoData {
    DemoData {
        stock: vec![("sku-a".into(), 5), ("sku-b".into(), 1)],
        accounts: vec![("rich".into(), 10_000), ("poor".into(), 100)],
    }
}

fn order(id: &str, sku: &str, qty: i64, account: &str, amount: i64) -> Value {
    json!({"order_id": id, "sku": sku, "qty": qty, "account": account, "amount": amount})
}

#[tokio::test]
async fn inventory_reserves_refuses_when_short_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    seed_data(dir.path(), &small_data()).unwrap();
    let inv = inventory(&dir.path().join("inventory.db"), Sync::Normal).unwrap();
    let o1 = order("o1", "sku-a", 3, "rich", 300);
    let out = act(&inv, "s1", "reserve_stock", "inventory.reserve", &o1).await;
    assert_eq!(out, Outcome::Succeeded { output: json!({"reservation": "o1", "sku": "sku-a", "qty": 3}) });
    let o2 = order("o2", "sku-a", 3, "rich", 300);
    let out = act(&inv, "s2", "reserve_stock", "inventory.reserve", &o2).await;
    assert_eq!(refused(&out), Some("out of stock: sku sku-a has 2, order wants 3"));
    let out = undo(&inv, "s1", "reserve_stock", "inventory.release", &o1).await;
    assert!(matches!(out, Outcome::Succeeded { .. }));
    let available: i64 = inv
        .query(|tx| tx.query_row("SELECT available FROM stock WHERE sku = 'sku-a'", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(available, 5);
    let bad = json!({"order_id": "o3", "sku": "sku-a"});
    let out = act(&inv, "s3", "reserve_stock", "inventory.reserve", &bad).await;
    assert_eq!(refused(&out), Some("invalid order: missing or non-integer `qty`"));
}

async fn balances(p: &Participant) -> (i64, i64) {
    p.query(|tx| {
        let rich: i64 = tx.query_row("SELECT balance FROM accounts WHERE account = 'rich'", [], |r| r.get(0))?;
        let merchant: i64 = tx.query_row("SELECT balance FROM merchant", [], |r| r.get(0))?;
        Ok((rich, merchant))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn payment_charges_declines_and_refunds() {
    let dir = tempfile::tempdir().unwrap();
    seed_data(dir.path(), &small_data()).unwrap();
    let pay = payment(&dir.path().join("payment.db"), Sync::Normal).unwrap();
    let o1 = order("o1", "sku-a", 1, "rich", 2_500);
    assert!(matches!(act(&pay, "s1", "charge_payment", "payment.charge", &o1).await, Outcome::Succeeded { .. }));
    let o2 = order("o2", "sku-a", 1, "poor", 2_500);
    let out = act(&pay, "s2", "charge_payment", "payment.charge", &o2).await;
    assert_eq!(refused(&out), Some("card declined: insufficient funds"));
    assert_eq!(balances(&pay).await, (7_500, 2_500));
    assert!(matches!(undo(&pay, "s1", "charge_payment", "payment.refund", &o1).await, Outcome::Succeeded { .. }));
    assert_eq!(balances(&pay).await, (10_000, 0));
}

#[tokio::test]
async fn notification_fails_at_its_rate_and_records_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let always = notification(&dir.path().join("a.db"), Sync::Normal, 1.0, 7).unwrap();
    let o1 = order("o1", "sku-a", 1, "rich", 1);
    let out = act(&always, "s1", "send_confirmation", "notification.send", &o1).await;
    assert!(matches!(out, Outcome::Transient { .. }), "{out:?}");
    let never = notification(&dir.path().join("n.db"), Sync::Normal, 0.0, 7).unwrap();
    let out = act(&never, "s1", "send_confirmation", "notification.send", &o1).await;
    assert_eq!(out, Outcome::Succeeded { output: json!({"confirmation": "o1"}) });
    assert!(notification(&dir.path().join("x.db"), Sync::Normal, 1.5, 7).is_err());
    assert!(never.compensation_of("notification.send").is_none());
    assert_eq!(never.contracts(), vec!["notification/v1".to_string()]);
}

#[test]
fn generated_orders_are_reproducible_and_mixed() {
    let (data, orders) = generate_orders(60, 42);
    let (data2, orders2) = generate_orders(60, 42);
    assert_eq!((&data, &orders), (&data2, &orders2));
    assert_ne!(orders, generate_orders(60, 43).1);
    assert_eq!(orders.len(), 60);
    for o in &orders {
        for field in ["order_id", "sku", "qty", "account", "amount"] {
            assert!(o.get(field).is_some(), "{o} lacks {field}");
        }
    }
    let scarce = data.stock.iter().min_by_key(|(_, n)| *n).unwrap();
    let wanted: i64 = orders.iter().filter(|o| o["sku"] == scarce.0.as_str()).map(|o| o["qty"].as_i64().unwrap()).sum();
    assert!(wanted > scarce.1, "scarce sku never runs out: {wanted} wanted, {} in stock", scarce.1);
    let poor: Vec<&(String, i64)> = data.accounts.iter().filter(|(_, b)| *b < 799).collect();
    assert!(!poor.is_empty());
    assert!(orders.iter().any(|o| poor.iter().any(|(a, _)| o["account"] == a.as_str())));
}

/// Runs every order through the three steps in order, the way the
/// orchestrator would (transient errors retried up to `attempts`, completed
/// steps compensated in reverse on failure). Returns the sagas as
/// `check_invariants` wants them.
async fn drive(
    dir: &Path,
    n: usize,
    seed: u64,
    failure_rate: f64,
    attempts: u32,
) -> (DemoData, Vec<(String, SagaStatus, Value)>) {
    let (data, orders) = generate_orders(n, seed);
    seed_data(dir, &data).unwrap();
    let ps = participants(dir, Sync::Normal, failure_rate, seed).unwrap();
    let get = |name: &str| &ps.iter().find(|(s, _)| *s == name).unwrap().1;
    let steps = [
        ("reserve_stock", "inventory", "inventory.reserve", Some("inventory.release")),
        ("charge_payment", "payment", "payment.charge", Some("payment.refund")),
        ("send_confirmation", "notification", "notification.send", None),
    ];
    let mut sagas = Vec::new();
    for (i, input) in orders.into_iter().enumerate() {
        let saga = format!("saga-{i}");
        let mut done = Vec::new();
        let mut failed = false;
        for (step, service, action, compensation) in steps {
            let mut outcome = Outcome::Transient { error: String::new() };
            for attempt in 1..=attempts {
                let c = ctx(&saga, step, action, Phase::Action, attempt, &input);
                outcome = get(service).execute(c).await.unwrap().outcome;
                if !matches!(outcome, Outcome::Transient { .. }) {
                    break;
                }
            }
            match outcome {
                Outcome::Succeeded { .. } => done.push((step, service, compensation)),
                Outcome::Refused { .. } => {
                    failed = true;
                    break;
                }
                Outcome::Transient { .. } => {
                    // Exhausted: compensated too (a null compensation here).
                    done.push((step, service, compensation));
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            for (step, service, compensation) in done.into_iter().rev() {
                if let Some(comp) = compensation {
                    let out = undo(get(service), &saga, step, comp, &input).await;
                    assert!(matches!(out, Outcome::Succeeded { .. }), "{out:?}");
                }
            }
        }
        let status = if failed { SagaStatus::Compensated } else { SagaStatus::Completed };
        sagas.push((saga, status, input));
    }
    (data, sagas)
}

#[tokio::test]
async fn a_clean_run_satisfies_every_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sagas) = drive(dir.path(), 80, 1, 0.3, 3).await;
    let report = check_invariants(dir.path(), &sagas, &data).unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.sagas, 80);
    assert!(report.completed > 0 && report.compensated > 0, "{report}");
    assert_eq!(report.stock_final, report.stock_initial);
    assert_eq!(report.money_final, report.money_initial);
}

/// A compensated saga whose charge was refunded (notification exhausted).
fn refunded_order(dir: &Path) -> (String, i64, String) {
    let conn = sqsaga_sqlite::open(&dir.join("payment.db"), Sync::Normal).unwrap();
    conn.query_row(
        "SELECT order_id, amount, account FROM charges WHERE status = 'refunded' ORDER BY order_id LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

#[tokio::test]
async fn checker_catches_a_deleted_refund() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sagas) = drive(dir.path(), 40, 3, 0.5, 2).await;
    assert!(check_invariants(dir.path(), &sagas, &data).unwrap().ok);
    let (order_id, amount, account) = refunded_order(dir.path());
    // Undo the refund as if it had never happened.
    let conn = sqsaga_sqlite::open(&dir.path().join("payment.db"), Sync::Normal).unwrap();
    conn.execute("UPDATE charges SET status = 'charged' WHERE order_id = ?1", params![order_id]).unwrap();
    conn.execute("UPDATE accounts SET balance = balance - ?1 WHERE account = ?2", params![amount, account]).unwrap();
    conn.execute("UPDATE merchant SET balance = balance + ?1", params![amount]).unwrap();
    let report = check_invariants(dir.path(), &sagas, &data).unwrap();
    assert!(!report.ok);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("compensated but order") && v.contains(&order_id) && v.contains("still charged")),
        "{report}"
    );
}

#[tokio::test]
async fn checker_catches_a_double_effect_and_lost_money() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sagas) = drive(dir.path(), 20, 5, 0.0, 1).await;
    assert!(check_invariants(dir.path(), &sagas, &data).unwrap().ok);
    sql(dir.path(), "inventory", "UPDATE stock SET available = available - 1 WHERE sku = 'sku-widget';");
    sql(dir.path(), "payment", "UPDATE merchant SET balance = balance + 1;");
    let report = check_invariants(dir.path(), &sagas, &data).unwrap();
    assert!(report.violations.iter().any(|v| v.starts_with("stock of sku-widget not conserved")), "{report}");
    assert!(report.violations.iter().any(|v| v.starts_with("merchant holds")), "{report}");
    assert!(report.violations.iter().any(|v| v.starts_with("money not conserved")), "{report}");
    assert_eq!(report.stock_final, report.stock_initial - 1);
}

#[tokio::test]
async fn checker_catches_unfinished_sagas_and_missing_effects() {
    let dir = tempfile::tempdir().unwrap();
    let (data, mut sagas) = drive(dir.path(), 20, 5, 0.0, 1).await;
    // Sagas 0 and 1 are marked unfinished below; plant in a later one.
    let completed = sagas.iter().enumerate().position(|(i, (_, s, _))| i >= 2 && *s == SagaStatus::Completed).unwrap();
    let order_id = sagas[completed].2["order_id"].as_str().unwrap().to_string();
    sql(dir.path(), "notification", &format!("DELETE FROM confirmations WHERE order_id = '{order_id}';"));
    sagas[0].1 = SagaStatus::Running;
    sagas[1].1 = SagaStatus::NeedsOperator;
    let (id0, id1) = (sagas[0].0.clone(), sagas[1].0.clone());
    let report = check_invariants(dir.path(), &sagas, &data).unwrap();
    assert_eq!(report.unfinished, 2);
    assert!(report.violations.contains(&format!("saga {id0} is still running")), "{report}");
    assert!(report.violations.contains(&format!("saga {id1} needs an operator")), "{report}");
    assert!(report.violations.iter().any(|v| v.contains(&format!("order {order_id} has no confirmation"))), "{report}");
}

#[tokio::test]
async fn checker_catches_an_effect_no_saga_placed_and_a_mismatched_quantity() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sagas) = drive(dir.path(), 20, 5, 0.0, 1).await;
    sql(
        dir.path(),
        "inventory",
        "INSERT INTO reservations VALUES ('order-ghost', 'sku-gizmo', 1, 'reserved');
         UPDATE stock SET available = available - 1 WHERE sku = 'sku-gizmo';",
    );
    let (_, status, input) = sagas.iter().find(|(_, s, _)| *s == SagaStatus::Completed).unwrap();
    assert_eq!(*status, SagaStatus::Completed);
    let oid = input["order_id"].as_str().unwrap();
    sql(dir.path(), "inventory", &format!("UPDATE reservations SET qty = qty + 1 WHERE order_id = '{oid}';"));
    let report = check_invariants(dir.path(), &sagas, &data).unwrap();
    assert!(
        report.violations.contains(&"reservation for order order-ghost, which no saga placed".to_string()),
        "{report}"
    );
    assert!(
        report.violations.iter().any(|v| v.contains("reservation of") && v.contains("does not match the order")),
        "{report}"
    );
}

#[test]
fn checker_reports_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let e = check_invariants(dir.path(), &[], &DemoData::default()).unwrap_err();
    assert!(e.to_string().contains("inventory.db: the inventory database does not exist"), "{e}");
}

#[tokio::test]
async fn seed_data_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let (data, sagas) = drive(dir.path(), 10, 9, 0.0, 1).await;
    assert!(check_invariants(dir.path(), &sagas, &data).unwrap().ok);
    seed_data(dir.path(), &data).unwrap();
    // The effects are gone, so no saga is "completed" any more: but nothing
    // is left either, and stock and money are back at the start.
    let report = check_invariants(dir.path(), &[], &data).unwrap();
    assert!(report.ok, "{report}");
}
