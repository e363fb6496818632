//! The request-accounting benchmark end to end on a small run: both phases
//! finish with the invariants holding, and naive mode costs more requests
//! than batching. The figures themselves (targets: ≤ 0.8 requests per step,
//! ≥ 7× fewer than naive) are measured at saturation by `sqsaga bench sqs`,
//! not asserted here: a 20-saga run on an emulator is not saturation.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

use std::time::Duration;

use sqsaga_aws::{AwsSettings, BenchSqsOptions, bench_sqs};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bench_sqs_runs_both_phases_and_naive_costs_more() {
    let sdk = common::sdk_config().await;
    let options = BenchSqsOptions {
        sagas: 20,
        idle: Duration::ZERO,
        orchestrator_pollers: 4,
        worker_pollers: 2,
        timeout: Duration::from_secs(180),
        ..BenchSqsOptions::default()
    };
    let report = bench_sqs(&sdk, &AwsSettings::default(), &options).await.unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let naive = report.naive.as_ref().unwrap();
    for phase in [&report.batched, naive] {
        assert!(phase.invariants_ok, "{}: {:?}", phase.mode, phase.violations);
        assert_eq!(phase.unfinished, 0, "{}", phase.mode);
        assert!(phase.steps >= 20, "{}: {} steps", phase.mode, phase.steps);
    }
    assert_eq!(report.batched.requests.get("SendMessage"), None, "batched mode sent single messages");
    assert_eq!(naive.requests.get("SendMessageBatch"), None, "naive mode batched");
    assert!(naive.requests_per_step > report.batched.requests_per_step, "{report:?}");
    assert!(report.reduction.is_some_and(|r| r > 1.0), "{report:?}");
}
