//! `sqsaga`: one binary for the orchestrator, the workers, the demo and the
//! operator's tools. `main` parses arguments, sets up logging and hands over
//! to `sqsaga_runtime` (processes), `sqsaga_order` (the demo),
//! `sqsaga_bench` (benchmarks) and `sqsaga_lint_deploy`; the modules here
//! only turn arguments into calls and results into printed lines.

mod admin;
mod demo;
mod fleet;
mod lint_deploy;
mod sagas;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use sqsaga_runtime::{Overrides, RuntimeError, logging};

/// Sagas on Amazon SQS: a durable orchestrator (YAML definitions, outbox,
/// timers, retries, compensation), workers with an idempotency barrier in
/// each service's own database, and a drift guard that keeps a drifted
/// worker from running steps. Runs on an embedded SQLite backend or on SQS +
/// DynamoDB.
#[derive(Debug, Parser)]
#[command(name = "sqsaga", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the embedded backend keeps its SQLite files.
#[derive(Debug, Clone, Args)]
pub struct DataDir {
    /// Embedded data directory (one SQLite file for queues and sagas, one per participant).
    #[arg(long, env = "SQSAGA_DATA_DIR", default_value = "./.sqsaga")]
    pub data_dir: PathBuf,
}

/// `--server URL`: talk to that orchestrator's admin API (token from
/// `SQSAGA_ADMIN_TOKEN` or `SQSAGA_ADMIN_READ_TOKEN`) instead of the database.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// An orchestrator's admin API (`http://host:port`) instead of the database; token from SQSAGA_ADMIN_TOKEN.
    #[arg(long)]
    pub server: Option<String>,
}

/// Prints an API answer: as JSON, or as the text `render` makes.
pub fn print_remote(
    json: bool,
    value: &serde_json::Value,
    render: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        print!("{}", render());
    }
    Ok(ExitCode::SUCCESS)
}

/// Flags shared by every configured process. Everything else comes from the
/// environment and the config file (see README, Configuration).
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// JSON config file (Chef's /etc/sqsaga/config.json); also `SQSAGA_CONFIG`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Embedded data directory; overrides `SQSAGA_DATA_DIR` and `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Participant service to run (inventory, payment, notification); overrides `SQSAGA_SERVICE`.
    #[arg(long)]
    pub service: Option<String>,
    /// Its own database, `sqlite:<path>` or `postgres://...` (a schema per service); overrides `SQSAGA_PARTICIPANT_DB`.
    #[arg(long)]
    pub participant_db: Option<String>,
    /// Probability that a notification attempt fails transiently (demo participant).
    #[arg(long, default_value_t = 0.2)]
    pub failure_rate: f64,
    /// Seed of the injected failures.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Test knob: every handler sleeps this long (e.g. `2s`) inside its local
    /// transaction before doing its work, so tests can stop a worker mid-step.
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub handler_delay: Option<std::time::Duration>,
    /// Drift drills: serve without this contract's handlers (repeatable), as
    /// a build lacking it would; its fingerprint says so.
    #[arg(long, hide = true)]
    pub without_contract: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the order saga end to end (1000 orders by default) with failures injected, then check the invariants.
    Demo(demo::DemoArgs),
    /// Run the orchestrator service.
    Orchestrator(OrchestratorArgs),
    /// Run a worker of one of the order saga's participant services.
    Worker(WorkerArgs),
    /// Configuration tools: `check` (the effective configuration) and `docs` (the reference).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Check saga definition files (and a `fleet.yaml` policy); prints every problem as file:line:col.
    Validate {
        /// Saga definition files (YAML); a file named `fleet.yaml` is checked as the drift guard's policy.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a saga definition as a Mermaid flowchart.
    Graph {
        /// A saga definition file (YAML).
        file: PathBuf,
    },
    /// Create the queues (with DLQs, redrive, SSE) and the DynamoDB table the definitions need, idempotently.
    Provision(admin::ProvisionArgs),
    /// Start one saga.
    Start(admin::StartArgs),
    /// Inspect and resume sagas.
    Sagas {
        #[command(subcommand)]
        command: sagas::SagasCommand,
    },
    /// Show the orchestrator's fleet view: per service the verdict, fingerprints, what differs, quarantined instances.
    Fleet(fleet::FleetArgs),
    /// List and redrive dead-lettered messages.
    Dlq {
        #[command(subcommand)]
        command: admin::DlqCommand,
    },
    /// Benchmarks: embedded (steps/s), sqs (requests per step), drift (time to a verdict).
    Bench {
        #[command(subcommand)]
        command: demo::BenchCommand,
    },
    /// Drive a running participant through the protocol's cases (conformance/v1); a pass/fail table, exit 1 on a failure.
    Conformance(admin::ConformanceArgs),
    /// Check Kubernetes manifests and the Chef cookbook against what this binary reads and serves.
    LintDeploy(lint_deploy::LintArgs),
    /// Deterministic simulation of the order saga under faults, seed by seed (docs/testing.md).
    Sim(SimArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// How many seeds to run, from --start; exit 1 if any fails.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run this one seed (it replays exactly).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the seed's event trace (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and its hash; exit 2 on any problem.
    Check(ConfigArgs),
    /// Print the configuration reference (docs/configuration.md), generated from the settings table.
    Docs,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    sqsaga_core::duration::parse_duration(text).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Configured processes set up logging once their configuration is known.
        Command::Orchestrator(_) | Command::Worker(_) | Command::Config { .. } | Command::Sim(_) => {}
        Command::Demo(_) | Command::Bench { .. } => logging::init("error"),
        _ => logging::init("warn"),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::demo(args).await,
            Command::Orchestrator(args) => orchestrator(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Config { command: ConfigCommand::Check(args) } => {
                let settings = resolve(&args)?;
                println!("{}", settings.redacted_report());
                Ok(ExitCode::SUCCESS)
            }
            Command::Config { command: ConfigCommand::Docs } => {
                print!("{}", sqsaga_config::docs::reference_markdown());
                Ok(ExitCode::SUCCESS)
            }
            Command::Validate { files } => admin::validate(&files),
            Command::Graph { file } => admin::graph(&file),
            Command::Provision(args) => admin::provision(args).await,
            Command::Start(args) => admin::start(args).await,
            Command::Sagas { command } => sagas::sagas(command).await,
            Command::Dlq { command } => admin::dlq(command).await,
            Command::Fleet(args) => fleet::fleet(args).await,
            Command::Bench { command } => demo::bench(command).await,
            Command::LintDeploy(args) => lint_deploy::run(args),
            Command::Conformance(args) => admin::conformance(args).await,
            Command::Sim(a) => Ok(sqsaga_sim::command::main(a.seeds, a.start, a.seed, a.trace)),
        }
    });
    // Spans still buffered are exported now, while the runtime that sends
    // them is alive (a no-op unless OTLP export was configured).
    sqsaga_runtime::telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<RuntimeError>() {
                Some(r) => ExitCode::from(r.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// What the shared flags set on top of the environment and the file.
fn overrides(config: &ConfigArgs) -> Overrides {
    Overrides { config: config.config.clone(), data_dir: config.data_dir.clone(), ..Overrides::default() }
}

/// Settings from flags, the environment and the config file; every problem
/// named (exit code 2 through [`RuntimeError::Config`]).
fn resolve(config: &ConfigArgs) -> Result<sqsaga_config::Settings, RuntimeError> {
    sqsaga_runtime::resolve(&overrides(config))
}

/// Logging, and trace export when an OTLP endpoint is configured.
fn init_logging(settings: &sqsaga_config::Settings, service: &str) -> Result<(), RuntimeError> {
    let otlp = settings.otlp_endpoint.as_deref().map(|endpoint| (endpoint, service));
    logging::init_process(settings.log_level.as_str(), otlp).map_err(|e| RuntimeError::config(e.to_string()))
}

/// The saga definitions the settings name, or the built-in order saga.
fn definitions(settings: &sqsaga_config::Settings) -> anyhow::Result<sqsaga_orchestrator::Definitions> {
    match &settings.definitions {
        Some(path) => Ok(sqsaga_orchestrator::Definitions::load(std::slice::from_ref(path))?),
        None => Ok(sqsaga_order::run::definitions()?),
    }
}

async fn orchestrator(args: OrchestratorArgs) -> anyhow::Result<ExitCode> {
    let settings = resolve(&args.config)?;
    init_logging(&settings, "orchestrator")?;
    // Signals first: a SIGTERM during start-up must also end in a clean exit.
    let shutdown = sqsaga_runtime::on_signals();
    let defs = Arc::new(definitions(&settings)?);
    let listener = sqsaga_runtime::bind(settings.http_addr).await?;
    sqsaga_runtime::run_orchestrator(settings, defs, listener, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn worker(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // Before hashing the executable: siblings started together report (nearly) the same start.
    let started_at = sqsaga_orchestrator::clock::now_ms();
    let settings = sqsaga_runtime::resolve(&Overrides {
        service: args.service.clone(),
        participant_db: args.participant_db.clone(),
        ..overrides(&args.config)
    })?;
    init_logging(&settings, settings.service.as_deref().unwrap_or("worker"))?;
    let shutdown = sqsaga_runtime::on_signals();
    let knobs = sqsaga_order::WorkerKnobs {
        failure_rate: args.failure_rate,
        seed: args.seed,
        handler_delay: args.handler_delay,
        without_contract: args.without_contract.clone(),
    };
    let participant = sqsaga_order::open_worker(&settings, &knobs).await?;
    let listener = sqsaga_runtime::bind(settings.http_addr).await?;
    sqsaga_runtime::run_worker(settings, participant, listener, shutdown, started_at).await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every argument says what it is for in `--help`.
    #[test]
    fn every_command_and_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("{path} {} (command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "sqsaga", &mut missing);
        assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_top_level_help_describes_the_product() {
        let about = super::Cli::command().get_about().map(|a| a.to_string()).unwrap_or_default();
        assert!(about.contains("Sagas on Amazon SQS"), "{about}");
    }
}
