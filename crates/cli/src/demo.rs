//! `sqsaga demo` (in one process, or `demo load` / `demo check` around
//! separate processes) and `sqsaga bench ...`: arguments in, the runtime's
//! stack and `sqsaga_order::run` / `sqsaga_bench` called, summaries printed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use sqsaga_order::run::Summary;
use sqsaga_runtime::Overrides;

use crate::parse_duration;

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    #[command(flatten)]
    run: RunArgs,
    /// Wall-clock budget for all sagas to finish.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    timeout: Duration,
    /// Keep the temporary data directory after a successful run (it is kept on failure, and always with --data-dir).
    #[arg(long)]
    keep: bool,
    /// Print the summary as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// What both `demo` and `demo load` take.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Number of order sagas to run.
    #[arg(long, default_value_t = 1000)]
    orders: usize,
    /// Seed of the order mix and of the injected failures.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Probability that one notification attempt fails transiently.
    #[arg(long, default_value_t = 0.2)]
    failure_rate: f64,
    /// Data directory; a fresh temporary one when absent. With `--backend
    /// aws` it still holds the participants' own databases and the manifest.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where queues and sagas live: `embedded` (SQLite in the data dir) or
    /// `aws` (SQS + DynamoDB at `AWS_ENDPOINT_URL`/the default AWS endpoint).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "aws"])]
    backend: String,
    /// Where the participants keep their databases: `sqlite` (files in the data dir) or `postgres` (a fresh
    /// database on the `--postgres-url` server, a schema per service).
    #[arg(long, default_value = "sqlite", value_parser = sqsaga_order::commands::ParticipantsOn::NAMES)]
    participants: String,
    /// The PostgreSQL server for `--participants postgres` (a user allowed to create databases).
    #[arg(long, default_value = sqsaga_order::commands::DEFAULT_POSTGRES_SERVER)]
    postgres_url: String,
}

impl RunArgs {
    fn options(&self) -> sqsaga_order::commands::RunOptions {
        sqsaga_order::commands::RunOptions {
            orders: self.orders,
            seed: self.seed,
            failure_rate: self.failure_rate,
            backend: self.backend.clone(),
            participants: sqsaga_order::commands::ParticipantsOn::from_name(&self.participants, &self.postgres_url),
        }
    }
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Load stock and accounts and start the sagas, then exit (multi-process form).
    Load {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Wait until the loaded sagas are finished, then check the invariants.
    Check {
        #[command(flatten)]
        data: crate::DataDir,
        /// Seconds to wait for every saga to finish.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Backend the sagas were loaded on (`embedded` or `aws`).
        #[arg(long, default_value = "embedded", value_parser = ["embedded", "aws"])]
        backend: String,
        /// List every violation (by default the first 20 and a count).
        #[arg(long)]
        verbose: bool,
        /// Print the summary as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sagas at saturation on the embedded backend: steps/s and SQLite commits per step.
    Embedded {
        /// Sagas to run.
        #[arg(long, default_value_t = 4000)]
        orders: usize,
        /// Receive loops per participant worker (each up to 10 messages in flight).
        #[arg(long, default_value_t = 32)]
        worker_pollers: usize,
        /// Receive loops of the orchestrator.
        #[arg(long, default_value_t = 32)]
        orchestrator_pollers: usize,
        /// Print the result as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// One participant worker on PostgreSQL: steps/s and transactions per step against pgbench at the same client count.
    Participant(BenchParticipantArgs),
    /// Drift guard: time to a `drifted` verdict and steps run by a drifted worker, in observe and enforce mode.
    Drift(BenchDriftArgs),
    /// SQS requests per saga step against an SQS endpoint (the emulator), batched vs the seed's naive way;
    /// DynamoDB capacity and dollars per million steps; idle cost per process.
    Sqs(BenchSqsArgs),
    /// Prints docs/scaling.md: what 1k/10k/50k steps/s ask of SQS, DynamoDB and the orchestrator.
    Scaling,
}

#[derive(Debug, Args)]
pub struct BenchParticipantArgs {
    /// The participant database (only `postgres`).
    #[arg(long, default_value = "postgres")]
    db: String,
    /// Any database of the server; scratch databases are made and dropped beside it.
    #[arg(long, default_value = sqsaga_bench::participant::DEFAULT_URL)]
    url: String,
    /// Worker pollers and pool connections, and pgbench's clients.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Steps per phase (grouped, then one transaction per command).
    #[arg(long, default_value_t = 20_000)]
    steps: usize,
    /// How long pgbench runs, in seconds.
    #[arg(long, default_value_t = 10)]
    pgbench_secs: u64,
    /// Skip the one-transaction-per-command phase.
    #[arg(long)]
    grouped_only: bool,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchDriftArgs {
    /// Inventory workers, one of which is drifted (a different log level).
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Order sagas run per mode, once the verdict is in.
    #[arg(long, default_value_t = 200)]
    orders: usize,
    /// Heartbeat interval of every worker.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// Start the drifted worker two intervals after its siblings: it then looks like a rollout.
    #[arg(long)]
    late: bool,
    /// The policy's rollout window (`rolloutWindow`).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    rollout_window: Duration,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct BenchSqsArgs {
    /// Order sagas per phase (batched, then naive); saturation needs several hundred.
    #[arg(long, default_value_t = 1000)]
    sagas: usize,
    /// Idle window over which long polls are counted (`0s` skips it).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle: Duration,
    /// Skip the naive phase (one request per message).
    #[arg(long)]
    no_naive: bool,
    /// Orchestrator pollers.
    #[arg(long, default_value_t = 8)]
    orchestrator_pollers: usize,
    /// Pollers per participant worker.
    #[arg(long, default_value_t = 2)]
    worker_pollers: usize,
    /// Sagas in flight at once (new ones start as others finish).
    #[arg(long, default_value_t = 200)]
    in_flight: usize,
    /// Batching windows preset: latency, balanced or cost (the configured
    /// `sqs_preset` when absent); the window flags below override it.
    #[arg(long, value_parser = parse_preset)]
    preset: Option<sqsaga_aws::SqsPreset>,
    /// Receive linger (the adapter's default when absent).
    #[arg(long, value_parser = parse_duration)]
    receive_linger: Option<Duration>,
    /// Busy flush window for sends (the adapter's default when absent).
    #[arg(long, value_parser = parse_duration)]
    busy_flush_window: Option<Duration>,
    /// Busy flush window for deletes (the adapter's default when absent).
    #[arg(long, value_parser = parse_duration)]
    busy_delete_window: Option<Duration>,
    /// SQS list price, dollars per million requests.
    #[arg(long, default_value_t = 0.40)]
    price_sqs_per_million: f64,
    /// DynamoDB on-demand list price, dollars per million write request units.
    #[arg(long, default_value_t = 0.625)]
    price_wru_per_million: f64,
    /// DynamoDB on-demand list price, dollars per million read request units.
    #[arg(long, default_value_t = 0.125)]
    price_rru_per_million: f64,
    /// JSON config file; also `SQSAGA_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// A window preset by name.
fn parse_preset(name: &str) -> Result<sqsaga_aws::SqsPreset, String> {
    sqsaga_aws::SqsPreset::from_name(name).ok_or_else(|| format!("`{name}` is not a preset: latency, balanced or cost"))
}

fn progress(total: usize, json: bool) -> ProgressBar {
    let bar = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} sagas finished ({per_sec:.0})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_summary(s: &Summary, json: bool, verbose: bool) -> ExitCode {
    // `{:#}` lists every violation; `{}` the first 20 and a count.
    if verbose {
        println!("\n{s:#}")
    } else {
        println!("\n{s}")
    }
    if json {
        println!("{}", serde_json::to_string(s).unwrap_or_default());
    }
    if s.invariants_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

pub async fn demo(args: DemoArgs) -> Result<ExitCode> {
    match args.command {
        Some(DemoCommand::Load { run }) => return demo_load(run).await,
        Some(DemoCommand::Check { data, wait, json, verbose, backend }) => {
            let bar = progress(0, json);
            let wait = Duration::from_secs(wait);
            let summary = sqsaga_order::commands::demo_check(&data.data_dir, &backend, wait, |n, total| {
                bar.set_length(total as u64);
                bar.set_position(n as u64)
            })
            .await?;
            bar.finish_and_clear();
            return Ok(print_summary(&summary, json, verbose));
        }
        None => {}
    }
    let run = args.run;
    let dir = sqsaga_order::commands::fresh_dir(run.data_dir.as_deref())?;
    println!(
        "sqsaga demo: {} order sagas (seed {}, notification failure rate {}) on the {} backend, participants on {}, \
         data in {}",
        run.orders,
        run.seed,
        run.failure_rate,
        run.backend,
        run.participants,
        dir.display()
    );
    let bar = progress(run.orders, args.json);
    let temporary = run.data_dir.is_none();
    let outcome = sqsaga_order::commands::demo(&run.options(), &dir, temporary, args.keep, args.timeout, |n, _| {
        bar.set_position(n as u64)
    })
    .await?;
    bar.finish_and_clear();
    let code = print_summary(&outcome.summary, args.json, false);
    if outcome.removed {
        println!("(temporary data dir removed; --keep keeps it)");
    }
    Ok(code)
}

async fn demo_load(run: RunArgs) -> Result<ExitCode> {
    let dir = sqsaga_order::commands::fresh_dir(Some(run.data_dir.as_deref().unwrap_or(Path::new("./.sqsaga"))))?;
    let manifest = sqsaga_order::commands::demo_load(&run.options(), &dir).await?;
    println!(
        "loaded stock and accounts and requested {} sagas (run {}) in {}",
        manifest.sagas.len(),
        manifest.run_id,
        dir.display()
    );
    if let Some(url) = &manifest.participant_db {
        println!("participants' database (run the workers with --participant-db): {url}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a report, then (with `--json`) the same as one JSON line.
fn show(report: &(impl std::fmt::Display + serde::Serialize), json: bool) -> Result<()> {
    println!("{report}");
    if json {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(())
}

pub async fn bench(command: BenchCommand) -> Result<ExitCode> {
    match command {
        BenchCommand::Embedded { orders, worker_pollers, orchestrator_pollers, json } => {
            let options = sqsaga_bench::BenchEmbeddedOptions { orders, worker_pollers, orchestrator_pollers };
            let report = sqsaga_bench::bench_embedded(&options).await?;
            show(&report, json)?;
            Ok(if report.invariants_ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Participant(a) => {
            let options = sqsaga_bench::BenchParticipantOptions {
                db: a.db,
                url: a.url,
                clients: a.clients,
                steps: a.steps,
                pgbench_secs: a.pgbench_secs,
                per_command: !a.grouped_only,
            };
            let report = sqsaga_bench::bench_participant(&options).await?;
            show(&report, a.json)?;
            Ok(if report.effects_ok() && report.target_met { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Drift(a) => {
            let options = sqsaga_bench::BenchDriftOptions {
                workers: a.workers,
                orders: a.orders,
                heartbeat: a.heartbeat,
                late: a.late,
                rollout_window: a.rollout_window,
            };
            let report = sqsaga_bench::bench_drift(&options).await?;
            print!("{report}");
            if a.json {
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(if report.targets_met { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        BenchCommand::Sqs(a) => bench_sqs(a).await,
        BenchCommand::Scaling => {
            print!("{}", sqsaga_bench::scaling::markdown(&sqsaga_bench::scaling::Model::current()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `sqsaga bench sqs`: exits non-zero when a target is missed or an invariant broke.
async fn bench_sqs(args: BenchSqsArgs) -> Result<ExitCode> {
    let settings = sqsaga_runtime::resolve(&Overrides { config: args.config.clone(), ..Overrides::default() })?;
    let mut aws = sqsaga_runtime::aws_settings(&settings);
    let preset = args.preset.unwrap_or(sqsaga_runtime::backend::sqs_preset(settings.sqs_preset));
    aws = aws.with_preset(preset);
    let windows_given =
        args.receive_linger.is_some() || args.busy_flush_window.is_some() || args.busy_delete_window.is_some();
    aws.receive_linger = args.receive_linger.unwrap_or(aws.receive_linger);
    aws.busy_flush_window = args.busy_flush_window.unwrap_or(aws.busy_flush_window);
    aws.busy_delete_window = args.busy_delete_window.unwrap_or(aws.busy_delete_window);
    let sdk = aws.load_sdk_config().await;
    let options = sqsaga_bench::BenchSqsOptions {
        sagas: args.sagas,
        idle: args.idle,
        naive: !args.no_naive,
        orchestrator_pollers: args.orchestrator_pollers,
        worker_pollers: args.worker_pollers,
        in_flight: args.in_flight,
        prices: sqsaga_bench::cost::Prices {
            sqs_per_million: args.price_sqs_per_million,
            wru_per_million: args.price_wru_per_million,
            rru_per_million: args.price_rru_per_million,
        },
        preset: (!windows_given).then(|| preset.as_str().to_string()),
        ..sqsaga_bench::BenchSqsOptions::default()
    };
    let endpoint = aws.endpoint_url.clone().unwrap_or_else(|| "AWS".to_string());
    println!("bench sqs: {} order sagas per phase against {endpoint}", options.sagas);
    println!(
        "  adapter: preset {}, receive linger {:?}, busy windows {:?} (sends) and {:?} (deletes)",
        options.preset.as_deref().unwrap_or("(custom windows)"),
        aws.receive_linger,
        aws.busy_flush_window,
        aws.busy_delete_window
    );
    let report = sqsaga_bench::bench_sqs(&sdk, &aws, &options).await.context("the SQS benchmark failed")?;
    print!("{report}");
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(if report.targets_met() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
