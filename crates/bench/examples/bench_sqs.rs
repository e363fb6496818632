//! Runs the SQS request-accounting benchmark against the endpoint in
//! `AWS_ENDPOINT_URL` (or real AWS with the default credential chain) and
//! prints the report as JSON — the same library call `sqsaga bench sqs`
//! makes. `cargo run --release -p sqsaga-bench --example bench_sqs -- [sagas] [idle_secs]`
//!
//! Tuning knobs for experiments, from the environment: `BENCH_IN_FLIGHT`
//! (batch requests in flight per queue), `BENCH_WINDOW_MS` (flush window),
//! `BENCH_RECEIVE_LINGER_MS`, `BENCH_BUSY_WINDOW_MS` (sends),
//! `BENCH_BUSY_DELETE_WINDOW_MS`, `BENCH_ORCH_POLLERS`, `BENCH_WORKER_POLLERS`, `BENCH_IN_FLIGHT_SAGAS`,
//! `BENCH_NO_NAIVE`.

use std::time::Duration;

use sqsaga_aws::AwsSettings;
use sqsaga_bench::{BenchSqsOptions, bench_sqs};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let sagas = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let idle = args.next().map(|a| a.parse()).transpose()?.unwrap_or(60);
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut settings = AwsSettings { region: std::env::var("AWS_REGION").ok(), ..AwsSettings::default() };
    if let Some(n) = env("BENCH_IN_FLIGHT") {
        settings.max_batches_in_flight = n as usize;
    }
    if let Some(ms) = env("BENCH_WINDOW_MS") {
        settings.flush_window = Duration::from_millis(ms);
    }
    if let Some(ms) = env("BENCH_RECEIVE_LINGER_MS") {
        settings.receive_linger = Duration::from_millis(ms);
    }
    if let Some(ms) = env("BENCH_BUSY_WINDOW_MS") {
        settings.busy_flush_window = Duration::from_millis(ms);
    }
    if let Some(ms) = env("BENCH_BUSY_DELETE_WINDOW_MS") {
        settings.busy_delete_window = Duration::from_millis(ms);
    }
    let sdk = settings.load_sdk_config().await;
    let mut options = BenchSqsOptions { sagas, idle: Duration::from_secs(idle), ..BenchSqsOptions::default() };
    if let Some(n) = env("BENCH_ORCH_POLLERS") {
        options.orchestrator_pollers = n as usize;
    }
    if let Some(n) = env("BENCH_WORKER_POLLERS") {
        options.worker_pollers = n as usize;
    }
    if let Some(n) = env("BENCH_IN_FLIGHT_SAGAS") {
        options.in_flight = n as usize;
    }
    if env("BENCH_NO_NAIVE").is_some() {
        options.naive = false;
    }
    let report = bench_sqs(&sdk, &settings, &options).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("targets met: {}", report.targets_met());
    Ok(())
}
