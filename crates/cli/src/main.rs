//! `sqsaga`: one binary for the orchestrator, the workers, the demo and the
//! operator's tools. `main` only parses arguments, sets up logging and hands
//! over to a subcommand module; the work lives in the library crates.

mod admin;
mod aws_cmd;
mod demo;
mod fleet;
mod lint_deploy;
mod logging;
mod readiness;
mod sealing;
mod serve;
mod signals;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Sagas on Amazon SQS: orchestrator, workers, demo and tools.
#[derive(Debug, Parser)]
#[command(name = "sqsaga", version, about, long_about = None)]
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the order saga end to end on the embedded backend, with failures injected.
    Demo(demo::DemoArgs),
    /// Run the orchestrator service.
    Orchestrator(serve::OrchestratorArgs),
    /// Run a worker of one of the order saga's participant services.
    Worker(serve::WorkerArgs),
    /// Configuration tools.
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
    Provision(aws_cmd::ProvisionArgs),
    /// Start one saga.
    Start(admin::StartArgs),
    /// Inspect and resume sagas.
    Sagas {
        #[command(subcommand)]
        command: admin::SagasCommand,
    },
    /// Show the orchestrator's fleet view: per service the verdict, fingerprints, what differs, quarantined instances.
    Fleet(fleet::FleetArgs),
    /// List and redrive dead-lettered messages.
    Dlq {
        #[command(subcommand)]
        command: admin::DlqCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: demo::BenchCommand,
    },
    /// Check Kubernetes manifests and the Chef cookbook against what this binary reads and serves.
    LintDeploy(lint_deploy::LintArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets redacted) and its hash; exit 2 on any problem.
    Check(serve::ConfigArgs),
    /// Print the configuration reference (docs/configuration.md), generated from the settings table.
    #[command(hide = true)]
    Docs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Configured processes set up logging once their configuration is known.
        Command::Orchestrator(_) | Command::Worker(_) | Command::Config { .. } => {}
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
            Command::Orchestrator(args) => serve::orchestrator(args).await,
            Command::Worker(args) => serve::worker(args).await,
            Command::Config { command: ConfigCommand::Check(args) } => serve::config_check(args),
            Command::Config { command: ConfigCommand::Docs } => {
                print!("{}", sqsaga_config::docs::reference_markdown());
                Ok(ExitCode::SUCCESS)
            }
            Command::Validate { files } => admin::validate(&files),
            Command::Graph { file } => admin::graph(&file),
            Command::Provision(args) => aws_cmd::provision(args).await,
            Command::Start(args) => admin::start(args).await,
            Command::Sagas { command } => admin::sagas(command).await,
            Command::Dlq { command } => admin::dlq(command).await,
            Command::Fleet(args) => fleet::fleet(args).await,
            Command::Bench { command } => demo::bench(command).await,
            Command::LintDeploy(args) => lint_deploy::run(args),
        }
    });
    // Spans still buffered are exported now, while the runtime that sends
    // them is alive (a no-op unless OTLP export was configured).
    telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
