//! The AWS side of the binary: `sqsaga provision` (queues, DLQs, policies,
//! encryption and the DynamoDB table, idempotently), `sqsaga bench sqs`
//! (SQS requests per saga step, batched against naive), and [`connect`],
//! which builds the AWS backend from the process configuration for the rest
//! of the CLI.
//!
//! Configuration the AWS way: credentials from the SDK's default chain (env,
//! profile, IRSA web identity on EKS, instance profile on EC2), region from
//! `REGION`/`AWS_REGION` (resolved by `sqsaga_config`) or the SDK's chain,
//! custom endpoint from `AWS_ENDPOINT_URL`. The work lives in `sqsaga-aws`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Args;
use sqsaga_aws::{AwsBackend, AwsSettings, BenchSqsOptions, ProvisionOptions};
use sqsaga_config::{Settings, Sources};
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE};

/// Arguments of `sqsaga provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Saga definition file or directory (repeatable): one queue is made per service they name.
    #[arg(long = "definition", required = true)]
    pub definitions: Vec<PathBuf>,
    /// Receives after which a message goes to its DLQ; default `max_receive_count` of the configuration (5).
    #[arg(long)]
    pub max_receive_count: Option<u32>,
    /// KMS key (id, alias or ARN) for SSE-KMS on queues and table; SSE-SQS and the AWS-managed table key otherwise.
    #[arg(long)]
    pub kms_key: Option<String>,
    /// Queue name prefix; default `queue_prefix` of the configuration (`sqsaga-`).
    #[arg(long)]
    pub prefix: Option<String>,
    /// DynamoDB table; default `table` of the configuration (`sqsaga-sagas`).
    #[arg(long)]
    pub table: Option<String>,
    /// JSON config file (the Chef path); also `SQSAGA_CONFIG`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `sqsaga bench sqs`.
#[derive(Debug, Args)]
pub struct BenchSqsArgs {
    /// Order sagas per phase (batched, then naive); saturation needs several hundred.
    #[arg(long, default_value_t = 1000)]
    pub sagas: usize,
    /// Idle window over which long polls are counted (`0s` skips it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Skip the naive phase (one request per message).
    #[arg(long)]
    pub no_naive: bool,
    /// Orchestrator pollers.
    #[arg(long, default_value_t = BenchSqsOptions::default().orchestrator_pollers)]
    pub orchestrator_pollers: usize,
    /// Pollers per participant worker.
    #[arg(long, default_value_t = BenchSqsOptions::default().worker_pollers)]
    pub worker_pollers: usize,
    /// Sagas in flight at once; new ones start as others finish.
    #[arg(long, default_value_t = BenchSqsOptions::default().in_flight)]
    pub in_flight: usize,
    /// Receive linger of the SQS adapter (default: the adapter's, 1s):
    /// what a short receive makes the next one of its queue wait.
    #[arg(long, value_parser = parse_duration)]
    pub receive_linger: Option<Duration>,
    /// How long a send batch may wait to fill on a busy queue (default: the adapter's, 1s).
    #[arg(long, value_parser = parse_duration)]
    pub busy_flush_window: Option<Duration>,
    /// How long a delete batch may wait to fill on a busy queue (default: the adapter's, 2s).
    #[arg(long, value_parser = parse_duration)]
    pub busy_delete_window: Option<Duration>,
    /// JSON config file; also `SQSAGA_CONFIG`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    sqsaga_core::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Resolves the configuration (environment and config file), every problem named.
fn settings(config: Option<&PathBuf>) -> Result<Settings> {
    let env = sqsaga_config::env_map();
    let mut sources = Sources::new(&env);
    if let Some(path) = config {
        sources = sources.with_config_path(path.clone());
    }
    Settings::resolve(&sources).map_err(|errors| {
        let problems: Vec<String> = errors.0.iter().map(|p| format!("  {p}")).collect();
        anyhow!("invalid configuration ({} problem(s)):\n{}", problems.len(), problems.join("\n"))
    })
}

/// The AWS backend's settings from the process configuration. Explicit
/// queue URLs map onto logical names: `queue_url` is this process's input
/// queue (its service's, or the orchestrator's when no service is set),
/// `dlq_url` that queue's DLQ, `orchestrator_queue_url` the orchestrator's.
pub fn aws_settings(settings: &Settings) -> AwsSettings {
    let mut urls = std::collections::BTreeMap::new();
    let input = settings.service.clone().unwrap_or_else(|| ORCHESTRATOR_QUEUE.to_string());
    if let Some(url) = &settings.queue_url {
        urls.insert(input.clone(), url.clone());
    }
    if let Some(url) = &settings.dlq_url {
        urls.insert(sqsaga_queue::dlq_name(&input), url.clone());
    }
    if let Some(url) = &settings.orchestrator_queue_url {
        urls.insert(ORCHESTRATOR_QUEUE.to_string(), url.clone());
    }
    AwsSettings {
        region: settings.region.clone(),
        endpoint_url: settings.endpoint_url.clone(),
        queue_prefix: settings.queue_prefix.clone(),
        queue_urls: urls,
        table: settings.table.clone(),
        ..AwsSettings::default()
    }
}

/// The AWS backend (SQS queue, DynamoDB store, request counters) for the
/// rest of the CLI. Makes no request: an unreachable endpoint shows on first
/// use, as an error naming it.
pub async fn connect(settings: &Settings) -> Result<AwsBackend> {
    AwsBackend::connect(aws_settings(settings)).await.context("cannot set up the AWS backend")
}

/// `sqsaga provision`.
pub async fn provision(args: ProvisionArgs) -> Result<ExitCode> {
    let mut settings = settings(args.config.as_ref())?;
    if let Some(prefix) = &args.prefix {
        settings.queue_prefix = prefix.clone();
    }
    if let Some(table) = &args.table {
        settings.table = table.clone();
    }
    let definitions = Definitions::load(&args.definitions)?;
    let backend = connect(&settings).await?;
    let options = ProvisionOptions {
        max_receive_count: args.max_receive_count.unwrap_or(settings.max_receive_count),
        kms_key: args.kms_key.clone(),
        visibility_timeout: settings.visibility_timeout,
        ..ProvisionOptions::default()
    };
    if options.max_receive_count == 0 {
        return Err(anyhow!(
            "--max-receive-count must be at least 1: a queue without redrive never sheds a poison message"
        ));
    }
    let lines = sqsaga_aws::provision(&backend, &definitions, &options).await.context("provisioning failed")?;
    for line in &lines {
        println!("{line}");
    }
    let created = lines.iter().filter(|l| l.created).count();
    println!("{created} created, {} found", lines.len() - created);
    if args.json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "resources": lines, "created": created }))?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `sqsaga bench sqs`: exits non-zero when a target is missed or an
/// invariant broke.
pub async fn bench_sqs(args: BenchSqsArgs) -> Result<ExitCode> {
    let settings = settings(args.config.as_ref())?;
    let mut aws = aws_settings(&settings);
    if let Some(d) = args.receive_linger {
        aws.receive_linger = d;
    }
    if let Some(d) = args.busy_flush_window {
        aws.busy_flush_window = d;
    }
    if let Some(d) = args.busy_delete_window {
        aws.busy_delete_window = d;
    }
    let sdk = aws.load_sdk_config().await;
    let options = BenchSqsOptions {
        sagas: args.sagas,
        idle: args.idle,
        naive: !args.no_naive,
        orchestrator_pollers: args.orchestrator_pollers,
        worker_pollers: args.worker_pollers,
        in_flight: args.in_flight,
        ..BenchSqsOptions::default()
    };
    let endpoint = aws.endpoint_url.clone().unwrap_or_else(|| "AWS".to_string());
    println!("bench sqs: {} order sagas per phase against {endpoint}", options.sagas);
    println!(
        "  adapter: receive linger {:?}, busy windows {:?} (sends) and {:?} (deletes)",
        aws.receive_linger, aws.busy_flush_window, aws.busy_delete_window
    );
    let report = sqsaga_aws::bench_sqs(&sdk, &aws, &options).await.context("the SQS benchmark failed")?;
    let b = &report.batched;
    println!(
        "  batched: {} steps, {} SQS requests: {:.3} per step   (target <= 0.8)",
        b.steps, b.total_requests, b.requests_per_step
    );
    println!("           {:?}", b.requests);
    if let Some(n) = &report.naive {
        println!(
            "  naive:   {} steps, {} SQS requests: {:.3} per step",
            n.steps, n.total_requests, n.requests_per_step
        );
        println!("           {:?}", n.requests);
    }
    if let Some(r) = report.reduction {
        println!("  naive / batched: {r:.2}x fewer requests   (target >= 7)");
    }
    if let Some(i) = &report.idle {
        println!(
            "  idle:    {} long polls by {} pollers in {:.0} s: {:.2} per poller per minute   (target <= 3)",
            i.receives, i.pollers, i.window_s, i.requests_per_poller_per_minute
        );
    }
    let invariants = b.invariants_ok && report.naive.as_ref().is_none_or(|n| n.invariants_ok);
    println!("  invariants: {}", if invariants { "ok" } else { "VIOLATED" });
    let met = report.targets_met();
    println!("  targets: {}", if met { "met" } else { "MISSED" });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
