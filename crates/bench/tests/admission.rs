//! Admission control on the AWS emulator (issue 12): 1000 order sagas
//! started all at once, with the default settings, end exactly as the same
//! orders started slowly, and none compensates because of time.
//!
//! Why it needs admission control: a saga's 2-minute deadline runs from its
//! start, and the emulator is slow — measured 9 steps/s (3.4 order sagas/s
//! at ~2.7 steps each) while other suites share it, 25 steps/s alone.
//! Without a limit, 1000 sagas started together all start their deadlines
//! together and the last finish about 1000 / 3.4 ≈ 290 s later. A fixed
//! limit of 200 was not enough either: 200 / 3.4 ≈ 60 s per saga, and on a
//! CI machine busy with the rest of the suite one saga in 400 passed its
//! deadline. The adaptive limit (`crates/orchestrator/src/admission.rs`)
//! follows the latency of finished sagas to a quarter of the deadline, so
//! it settles near 100 on the loaded emulator, whatever the load.
//!
//! The slow reference run is on the embedded backend: the order mix and the
//! notification failures are pure functions of the seed and the saga ids,
//! not of the backend, so each saga must end the same in both runs —
//! except orders for the scarce sku, which compete for its last units in
//! whatever order they reach the inventory worker: for those, the number
//! completed may differ by a few. (Two emulator runs of 1000 would take
//! ~10 minutes; the at-once run alone takes ~3–5.)
//!
//! `SQSAGA_ADMISSION_ORDERS` runs it with another N.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

#[path = "../../aws/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqsaga_bench::sqs::{order_participants, temp_dir};
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_embedded::EmbeddedBackend;
use sqsaga_queue::{Queue, QueueSpec};
use sqsaga_runtime::{ProvisionOptions, Stack, StackOptions, provision};
use sqsaga_sqlite::Sync;
use sqsaga_store::SagaStore;

const SEED: u64 = 12;
/// Transient notification failures: retried, a pure function of the seed.
const FAILURE_RATE: f64 = 0.1;
/// Sagas in flight in the slow run.
const SLOW_IN_FLIGHT: usize = 50;
/// Scarce-sku orders whose ends may differ between the runs.
const SCARCE_SPREAD: usize = 5;

/// How the start requests are sent.
#[derive(Clone, Copy, Debug)]
enum Pace {
    AllAtOnce,
    /// At most this many unfinished at a time.
    Slowly(usize),
}

/// Where a run's queues and saga store are.
#[derive(Clone, Copy, Debug)]
enum On {
    /// A fresh queue prefix and table on the emulator.
    Emulator,
    /// The embedded backend in the run's directory.
    Embedded,
}

/// Runs the orders with the default settings; returns each saga's final
/// state, in input order.
async fn run(inputs: &[Value], initial: &sqsaga_order::DemoData, pace: Pace, on: On) -> Vec<SagaInstance> {
    let defs = Arc::new(sqsaga_order::run::definitions().unwrap());
    let dir = temp_dir("admission").unwrap();
    sqsaga_order::seed_data(&dir, initial).unwrap();
    let participants = order_participants(&dir, FAILURE_RATE, SEED).unwrap();
    let (queue, store, aws): (Arc<dyn Queue>, Arc<dyn SagaStore>, _) = match on {
        On::Emulator => {
            let b = common::backend().await;
            provision(&b, &defs, &ProvisionOptions::default()).await.unwrap();
            (b.queue(), b.store(), Some(b))
        }
        On::Embedded => {
            let e = EmbeddedBackend::open(&dir, Sync::Normal).unwrap();
            sqsaga_orchestrator::ensure_queues(e.queue().as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
            (e.queue(), e.store(), None)
        }
    };
    let stack = Stack::start(queue.clone(), store.clone(), defs, &participants, &StackOptions::default());
    let total = inputs.len();
    let budget = Duration::from_secs(600);
    let began = Instant::now();
    // Same ids in both runs: the injected failures are keyed on them.
    let ids: Vec<String> = (0..total).map(|i| format!("order-{i:05}")).collect();
    let mut sent = 0;
    let mut held = 0;
    while (stack.finished() as usize) < total {
        assert!(began.elapsed() < budget, "{pace:?}: {} of {total} finished in {budget:?}", stack.finished());
        let room = match pace {
            Pace::AllAtOnce => total,
            Pace::Slowly(n) => (stack.finished() as usize + n).min(total),
        };
        while sent + 10 <= room || (sent < room && room == total) {
            let n = (room - sent).min(10);
            let sagas: Vec<(String, Value)> =
                ids[sent..sent + n].iter().cloned().zip(inputs[sent..sent + n].iter().cloned()).collect();
            sqsaga_order::run::start_sagas(queue.as_ref(), &sagas, None, sqsaga_core::clock::now_ms()).await.unwrap();
            sent += n;
        }
        held = stack.orchestrators.iter().map(|s| s.starts_held.get()).sum::<u64>();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{pace:?} on {on:?}: {total} sagas in {:.1} s, start requests held {held} times",
        began.elapsed().as_secs_f64()
    );
    stack.stop().await;
    let records = store.load(&ids).await.unwrap();
    let by_id: BTreeMap<String, SagaInstance> =
        records.into_iter().map(|r| (r.instance.id.clone(), r.instance)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(b) = aws {
        b.teardown().await.unwrap();
    }
    ids.iter().map(|id| by_id.get(id).cloned().unwrap_or_else(|| panic!("{pace:?}: saga {id} missing"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sagas_started_at_once_end_as_sagas_started_slowly_and_none_for_time() {
    let n: usize = std::env::var("SQSAGA_ADMISSION_ORDERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let (initial, inputs) = sqsaga_order::generate_orders(n, SEED);
    let slow = run(&inputs, &initial, Pace::Slowly(SLOW_IN_FLIGHT), On::Embedded).await;
    let burst = run(&inputs, &initial, Pace::AllAtOnce, On::Emulator).await;

    let scarce = inputs.get(1).map(|i| i["sku"].clone()).unwrap_or_default();
    let mut differ = Vec::new();
    let mut scarce_completed = (0usize, 0usize);
    for ((input, a), b) in inputs.iter().zip(&burst).zip(&slow) {
        if input["sku"] == scarce {
            scarce_completed.0 += usize::from(a.status == SagaStatus::Completed);
            scarce_completed.1 += usize::from(b.status == SagaStatus::Completed);
        } else if a.status != b.status {
            differ
                .push(format!("{}: {} at once, {} slowly ({:?} / {:?})", a.id, a.status, b.status, a.reason, b.reason));
        }
    }
    let mix = |sagas: &[SagaInstance]| {
        let mut m: BTreeMap<SagaStatus, usize> = BTreeMap::new();
        for s in sagas {
            *m.entry(s.status).or_default() += 1;
        }
        m
    };
    let causes = (sqsaga_order::compensation_causes(&burst), sqsaga_order::compensation_causes(&slow));
    eprintln!("at once: {:?}\n{}\nslowly: {:?}\n{}", mix(&burst), causes.0, mix(&slow), causes.1);
    assert!(differ.is_empty(), "{} sagas ended differently:\n{}", differ.len(), differ.join("\n"));
    assert!(
        scarce_completed.0.abs_diff(scarce_completed.1) <= SCARCE_SPREAD,
        "scarce-sku orders completed: {} at once, {} slowly",
        scarce_completed.0,
        scarce_completed.1
    );
    assert_eq!(causes.0.timeout, 0, "sagas started at once compensated because of time: {}", causes.0);
    assert_eq!(causes.1.timeout, 0, "sagas started slowly compensated because of time: {}", causes.1);
    assert!(mix(&burst).get(&SagaStatus::Completed).is_some_and(|c| *c > 0), "nothing completed");
}
