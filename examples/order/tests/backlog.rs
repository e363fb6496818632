//! A backlog must not cancel orders: the order saga on the real embedded
//! backend (orchestrator, three workers, one SQLite file), its workers
//! started 30 s after the orders were loaded, ends exactly as the same orders
//! with the workers already running — no saga compensates because of a
//! timeout. Before queue wait stopped counting as run time, the same run
//! compensated every order (issue 12: 500 of 500 with workers 10 s late).
//!
//! With a `queueTimeout` shorter than the lateness, the workers refuse every
//! expired command unrun, and the sagas compensate with no effect anywhere.
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
use sqsaga_core::machine::{SagaInstance, SagaStatus};
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

/// The order saga as shipped: no `queueTimeout`.
const ORDER_SAGA: &str = include_str!("../create_order.yaml");

fn definitions(yaml: &str) -> Arc<Definitions> {
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

/// Polls the store until `done` holds for the sagas `ids` (all of them
/// loaded), within [`BUDGET`]; returns their instances by id.
async fn wait_for(
    store: &dyn SagaStore,
    ids: &[String],
    what: &str,
    done: impl Fn(&SagaInstance) -> bool,
) -> BTreeMap<String, SagaInstance> {
    let since = Instant::now();
    loop {
        let records = store.load(ids).await.unwrap();
        let ready = records.iter().filter(|r| done(&r.instance)).count();
        if ready == ids.len() {
            return records.into_iter().map(|r| (r.instance.id.clone(), r.instance)).collect();
        }
        assert!(since.elapsed() < BUDGET, "{what}: {ready} of {} after {BUDGET:?}", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Loads the orders into a running orchestrator (saga `yaml`, admission
/// limit at most `max_in_flight`), waits until it has taken in every start
/// request (each saga created and its first command dispatched, or the
/// request held by admission control), starts the workers `lateness`
/// later, and waits (polling the store) until every saga ended.
async fn run_orders(
    dir: &Path,
    yaml: &str,
    orders: &[(String, Value)],
    lateness: Duration,
    max_in_flight: Option<u64>,
) -> BTreeMap<String, SagaInstance> {
    let backend = EmbeddedBackend::open(dir, Sync::Normal).unwrap();
    let queue: Arc<dyn Queue> = backend.queue();
    let store: Arc<dyn SagaStore> = backend.store();
    let defs = definitions(yaml);
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
            max_in_flight,
            ..OrchestratorOptions::default()
        },
    );
    tasks.spawn(orchestrator.clone().run(stopped(&stop_rx)));

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

    let ids: Vec<String> = orders.iter().map(|(id, _)| id.clone()).collect();
    let since = Instant::now();
    loop {
        let created = store.load(&ids).await.unwrap().len();
        let held = orchestrator.held();
        if created + held == ids.len() {
            break;
        }
        assert!(since.elapsed() < BUDGET, "start requests taken in: {created} created, {held} held after {BUDGET:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
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

    let ended = wait_for(store.as_ref(), &ids, "sagas ended", |s| s.status.is_terminal()).await;
    stop.send(true).unwrap();
    while let Some(task) = tasks.join_next().await {
        task.unwrap();
    }
    ended
}

/// Runs `n` demo orders of saga `yaml` with workers `lateness` late, in a
/// fresh directory.
async fn run(yaml: &str, n: usize, lateness: Duration, max_in_flight: Option<u64>) -> Ended {
    let dir = tempfile::tempdir().unwrap();
    let (mut initial, inputs) = generate_orders(n, SEED);
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
    let ended = run_orders(dir.path(), yaml, &orders, lateness, max_in_flight).await;
    let causes = compensation_causes(ended.values());
    let statuses: BTreeMap<String, SagaStatus> = ended.into_iter().map(|(id, s)| (id, s.status)).collect();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
