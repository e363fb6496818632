//! A backlog must not cancel orders: the order saga on the real embedded
//! backend (orchestrator, three workers, one SQLite file), its workers
//! started 30 s after the orders were loaded, ends exactly as the same orders
//! with the workers already running — no saga compensates because of a
//! timeout. Before queue wait stopped counting as run time, the same run
//! compensated every order (issue 12: 500 of 500 with workers 10 s late).
//!
//! The mix is a pure function of the seed: the notification's injected
//! failures are drawn per (seed, order, attempt), and the scarce SKU has no
//! stock at all, so which orders run out of it does not depend on the order
//! the workers happen to take them in.
#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqsaga_core::machine::SagaStatus;
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_orchestrator::{
    Definitions, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock, ensure_queues,
};
use sqsaga_order::{
    CompensationCauses, InvariantReport, SERVICES, check_invariants, compensation_causes, generate_orders,
    injected_failure, participants, seed_data,
};
use sqsaga_protocol::{Envelope, StartSaga};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec};
use sqsaga_store::SagaStore;
use sqsaga_worker::{Worker, WorkerOptions};
use tokio::sync::watch;

const ORDERS: usize = 200;
const SEED: u64 = 7;
/// High enough that many orders retry their confirmation, and (with 8
/// attempts) a few of seeds' orders may exhaust them.
const FAILURE_RATE: f64 = 0.3;
/// The acceptance criterion's lateness.
const LATENESS: Duration = Duration::from_secs(30);
/// Budget for every saga to end once the workers run.
const BUDGET: Duration = Duration::from_secs(120);
const SCARCE_SKU: &str = "sku-rare-lamp";
/// Attempts of `send_confirmation` in `create_order.yaml`.
const NOTIFY_ATTEMPTS: u32 = 8;

/// What one run ended with.
struct Ended {
    statuses: BTreeMap<String, SagaStatus>,
    causes: CompensationCauses,
    invariants: InvariantReport,
}

fn definitions() -> Arc<Definitions> {
    let yaml = include_str!("../create_order.yaml");
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(yaml).unwrap(), "create_order.yaml").unwrap();
    Arc::new(defs)
}

/// A shutdown future for one task.
fn stopped(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Loads the orders into a running orchestrator, starts the workers
/// `lateness` later, and waits (polling the store) until every saga ended.
async fn run_orders(dir: &Path, orders: &[(String, Value)], lateness: Duration) -> BTreeMap<String, SagaStatus> {
    let backend = EmbeddedBackend::open(dir, Sync::Normal).unwrap();
    let queue: Arc<dyn Queue> = backend.queue();
    let store: Arc<dyn SagaStore> = backend.store();
    let defs = definitions();
    ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let orchestrator = Orchestrator::new(
        defs,
        queue.clone(),
        store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            pollers: 4,
            wait: Duration::from_millis(500),
            timer_interval: Duration::from_millis(50),
            ..OrchestratorOptions::default()
        },
    );
    tasks.spawn(orchestrator.run(stopped(&stop_rx)));

    let now = sqsaga_orchestrator::clock::now_ms();
    for chunk in orders.chunks(10) {
        let batch = chunk
            .iter()
            .map(|(id, input)| {
                let start = StartSaga {
                    saga_id: id.clone(),
                    saga: "create_order".into(),
                    version: None,
                    input: input.clone(),
                    requested_at: now,
                };
                OutgoingMessage::new(Envelope::Start(start).encode())
            })
            .collect();
        queue.send_batch(ORCHESTRATOR_QUEUE, batch).await.unwrap();
    }

    // The deliberate lateness: the workers are not there yet (a slow
    // rollout, a traffic spike); the commands wait in their queues.
    tokio::time::sleep(lateness).await;
    for (service, participant) in participants(dir, Sync::Normal, FAILURE_RATE, SEED).unwrap() {
        let options = WorkerOptions {
            concurrency: 4,
            wait: Duration::from_millis(500),
            ..WorkerOptions::new(service, &format!("{service}-backlog-test"))
        };
        let worker = Worker::new(options, queue.clone(), Arc::new(participant));
        let shutdown = stopped(&stop_rx);
        tasks.spawn(async move { worker.run(shutdown).await.unwrap() });
    }

    let ids: Vec<String> = orders.iter().map(|(id, _)| id.clone()).collect();
    let since = Instant::now();
    let statuses = loop {
        let records = store.load(&ids).await.unwrap();
        if records.len() == ids.len() && records.iter().all(|r| r.instance.status.is_terminal()) {
            break records.into_iter().map(|r| (r.instance.id.clone(), r.instance)).collect::<BTreeMap<_, _>>();
        }
        let unfinished = ids.len() - records.iter().filter(|r| r.instance.status.is_terminal()).count();
        assert!(since.elapsed() < BUDGET, "{unfinished} of {} sagas unfinished after {BUDGET:?}", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.send(true).unwrap();
    while let Some(ended) = tasks.join_next().await {
        ended.unwrap();
    }
    let causes = compensation_causes(statuses.values());
    assert_eq!(causes.timeout, 0, "sagas compensated because of time ({lateness:?} late):\n{causes}");
    statuses.into_iter().map(|(id, s)| (id, s.status)).collect()
}

/// Runs the demo orders with workers `lateness` late, in a fresh directory.
async fn run(lateness: Duration) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let (mut initial, inputs) = generate_orders(ORDERS, SEED);
    // No stock of the scarce SKU: every order for it is refused, whatever
    // the order the workers take them in.
    for (sku, units) in &mut initial.stock {
        if sku == SCARCE_SKU {
            *units = 0;
        }
    }
    seed_data(dir.path(), &initial).unwrap();
    let orders: Vec<(String, Value)> =
        inputs.into_iter().enumerate().map(|(i, input)| (format!("order-{i:05}"), input)).collect();
    let statuses = run_orders(dir.path(), &orders, lateness).await;
    let backend = EmbeddedBackend::open(dir.path(), Sync::Normal).unwrap();
    let ids: Vec<String> = orders.iter().map(|(id, _)| id.clone()).collect();
    let records = backend.store().load(&ids).await.unwrap();
    let causes = compensation_causes(records.iter().map(|r| &r.instance));
    let sagas: Vec<(String, SagaStatus, Value)> =
        orders.iter().map(|(id, input)| (id.clone(), statuses[id], input.clone())).collect();
    let invariants = check_invariants(dir.path(), &sagas, &initial).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_started_30_s_late_end_every_order_as_workers_already_running_do() {
    let expected = predicted();
    let count = |m: &BTreeMap<String, SagaStatus>, s: SagaStatus| m.values().filter(|v| **v == s).count();
    assert!(count(&expected, SagaStatus::Completed) > ORDERS / 2, "the mix should be mostly completed orders");
    assert!(count(&expected, SagaStatus::Compensated) > ORDERS / 10, "the mix should have compensations");
    assert_eq!(SERVICES.len(), 3);

    let on_time = run(Duration::ZERO).await;
    assert!(on_time.invariants.ok, "{}", on_time.invariants);
    assert_eq!(on_time.statuses, expected, "the on-time run's mix is the seed's");

    let late = run(LATENESS).await;
    assert!(late.invariants.ok, "{}", late.invariants);
    assert_eq!(late.causes.timeout, 0, "{}", late.causes);
    assert_eq!(late.causes, on_time.causes, "same causes, late or not");
    assert_eq!(late.statuses, on_time.statuses, "every order ends as it did with the workers on time");
}
