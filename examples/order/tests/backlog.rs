//! A backlog must not cancel orders: the order saga — the real
//! orchestrator and the three participants' real handlers — with its
//! workers started 30 s after the orders were loaded, ends exactly as the
//! same orders with the workers already running: no saga compensates
//! because of a timeout. Before queue wait stopped counting as run time, the
//! same run compensated every order (issue 12: 500 of 500 with workers 10 s
//! late).
//!
//! With a `queueTimeout` shorter than the lateness, the workers refuse every
//! expired command unrun, and the sagas compensate with no effect anywhere.
//!
//! On the time-skipping harness (`sqsaga_testing::SagaTest`: in-memory
//! queue and store, participants on in-memory SQLite, a manual clock), so
//! the 30 s of lateness and the retries' backoff take no time and nothing
//! sleeps. The mix is a pure function of the seed: the notification's
//! injected failures are drawn per (seed, order, attempt), and the scarce SKU
//! has no stock at all.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqsaga_core::machine::SagaStatus;
use sqsaga_orchestrator::{Definitions, OrchestratorOptions};
use sqsaga_order::{
    CompensationCauses, InvariantReport, SERVICES, check_invariants_in, compensation_causes, generate_orders,
    injected_failure,
};
use sqsaga_testing::SagaTest;
use sqsaga_testing::participant::MemoryDb;
use sqsaga_worker::Participant;

const ORDERS: usize = 200;
const SEED: u64 = 7;
/// High enough that many orders retry their confirmation, and (with 8
/// attempts) a few of seeds' orders may exhaust them.
const FAILURE_RATE: f64 = 0.3;
/// The acceptance criterion's lateness.
const LATENESS: Duration = Duration::from_secs(30);
/// Simulated time allowed for every saga to end once the workers run.
const BUDGET: Duration = Duration::from_secs(600);
const SCARCE_SKU: &str = "sku-rare-lamp";
/// Attempts of `send_confirmation` in `create_order.yaml`.
const NOTIFY_ATTEMPTS: u32 = 8;

/// What one run ended with.
struct Ended {
    statuses: BTreeMap<String, SagaStatus>,
    causes: CompensationCauses,
    invariants: InvariantReport,
}

/// The order saga as shipped: no `queueTimeout`.
const ORDER_SAGA: &str = include_str!("../create_order.yaml");

/// `service`'s participant on an in-memory database loaded with `initial`.
fn participant(service: &str, initial: &sqsaga_order::DemoData) -> Arc<Participant<MemoryDb>> {
    let db = MemoryDb::open(service, sqsaga_order::schema(service).unwrap()).unwrap();
    db.with(|c| sqsaga_order::fill(service, c, initial)).unwrap();
    let mut p = Participant::new(db);
    sqsaga_order::register(service, &mut p, FAILURE_RATE, SEED).unwrap();
    Arc::new(p)
}

/// Runs `n` demo orders of saga `yaml` with workers `lateness` late, in a
/// fresh directory.
async fn run(yaml: &str, n: usize, lateness: Duration, max_in_flight: Option<u64>) -> Ended {
    let (mut initial, inputs) = generate_orders(n, SEED);
    // No stock of the scarce SKU: every order for it is refused, whatever
    // the order the workers take them in.
    for (sku, units) in &mut initial.stock {
        if sku == SCARCE_SKU {
            *units = 0;
        }
    }
    let orders: Vec<(String, Value)> =
        inputs.into_iter().enumerate().map(|(i, input)| (format!("order-{i:05}"), input)).collect();
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(yaml).unwrap(), "create_order.yaml").unwrap();
    let options = OrchestratorOptions { max_in_flight, ..OrchestratorOptions::default() };
    let mut t = SagaTest::configured(defs, options).await.unwrap();
    t.start_many("create_order", &orders).await.unwrap();
    // Every start request taken in: its saga created and its first command
    // dispatched, or the request held by admission control.
    let created = t.sagas().len();
    assert_eq!(created + t.held(), n, "{created} created, {} held", t.held());
    assert_eq!(t.pending("inventory").len(), created);
    // The deliberate lateness: the workers are not there yet (a slow
    // rollout, a traffic spike); the commands wait in their queues.
    t.advance(lateness).await.unwrap();
    let mut dbs = Vec::new();
    for service in SERVICES {
        let p = participant(service, &initial);
        t.serve(service, p.clone()).await.unwrap();
        dbs.push(p);
    }
    t.run_until_terminal(BUDGET).await.unwrap();
    let ended = t.sagas();
    let causes = compensation_causes(ended.values());
    let statuses: BTreeMap<String, SagaStatus> = ended.into_iter().map(|(id, s)| (id, s.status)).collect();
    let sagas: Vec<(String, SagaStatus, Value)> =
        orders.iter().map(|(id, input)| (id.clone(), statuses[id], input.clone())).collect();
    let invariants = dbs[0]
        .db()
        .with(|i| dbs[1].db().with(|p| dbs[2].db().with(|no| check_invariants_in([i, p, no], &sagas, &initial))))
        .unwrap();
    Ended { statuses, causes, invariants }
}

/// The mix the seed implies: an order compensates if it wants the scarce
/// SKU (out of stock), pays from a poor account (declined), or its
/// confirmation fails every attempt; all others complete.
fn predicted() -> BTreeMap<String, SagaStatus> {
    let (_, inputs) = generate_orders(ORDERS, SEED);
    inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let id = format!("order-{i:05}");
            let order_id = input["order_id"].as_str().unwrap();
            let scarce = input["sku"] == SCARCE_SKU;
            let poor = input["account"].as_str().unwrap().starts_with("acct-poor-");
            let unsent = (1..=NOTIFY_ATTEMPTS).all(|a| injected_failure(SEED, order_id, a, FAILURE_RATE));
            let status = if scarce || poor || unsent { SagaStatus::Compensated } else { SagaStatus::Completed };
            (id, status)
        })
        .collect()
}

#[tokio::test]
async fn workers_started_30_s_late_end_every_order_as_workers_already_running_do() {
    let expected = predicted();
    let count = |m: &BTreeMap<String, SagaStatus>, s: SagaStatus| m.values().filter(|v| **v == s).count();
    assert!(count(&expected, SagaStatus::Completed) > ORDERS / 2, "the mix should be mostly completed orders");
    assert!(count(&expected, SagaStatus::Compensated) > ORDERS / 10, "the mix should have compensations");
    assert_eq!(SERVICES.len(), 3);

    // The default admission control: most start requests are held while the
    // workers are missing, and admitted as sagas finish.
    let admission = OrchestratorOptions::default().max_in_flight;
    let on_time = run(ORDER_SAGA, ORDERS, Duration::ZERO, admission).await;
    assert!(on_time.invariants.ok, "{}", on_time.invariants);
    assert_eq!(on_time.statuses, expected, "the on-time run's mix is the seed's");

    let late = run(ORDER_SAGA, ORDERS, LATENESS, admission).await;
    assert!(late.invariants.ok, "{}", late.invariants);
    assert_eq!(late.causes.timeout, 0, "{}", late.causes);
    assert_eq!(late.causes, on_time.causes, "same causes, late or not");
    assert_eq!(late.statuses, on_time.statuses, "every order ends as it did with the workers on time");
}

#[tokio::test]
async fn with_a_queue_timeout_late_workers_refuse_every_expired_command_and_nothing_takes_effect() {
    // The same saga with 1 s allowed in the queue; the workers come 2 s after
    // every saga dispatched its first step.
    let yaml = ORDER_SAGA.replacen("defaults:\n", "defaults:\n  queueTimeout: 1s\n", 1);
    assert_ne!(yaml, ORDER_SAGA);
    let n = 40;
    // No admission limit: every saga dispatches before the workers come
    // (this is about commands expiring in a queue, not about holding starts).
    let late = run(&yaml, n, Duration::from_secs(2), None).await;
    assert!(late.invariants.ok, "{}", late.invariants);
    assert_eq!(late.invariants.stock_final, late.invariants.stock_initial, "no stock moved");
    assert!(late.statuses.values().all(|s| *s == SagaStatus::Compensated), "{:?}", late.statuses);
    let expected =
        CompensationCauses { compensated: n, timeout: n, expired_in_queue: n, ..CompensationCauses::default() };
    assert_eq!(late.causes, expected, "{}", late.causes);
}
