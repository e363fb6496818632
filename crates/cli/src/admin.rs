//! Operator commands: `validate`, `graph`, `provision`, `start`, `sagas
//! list|show|resume`, `dlq list|redrive` and `conformance`. Thin: they
//! parse arguments, call a port or a library, print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sqsaga_protocol::TraceParent;
use sqsaga_queue::{ATTR_REASON, ATTR_SOURCE, dlq_name};
use sqsaga_runtime::admin::client::{Client, render_dlq};
use sqsaga_runtime::operator::{self, OperatorError, Sender, StartRequest};
use sqsaga_runtime::{Opened, Overrides};

use crate::{DataDir, Remote, print_remote};

/// Arguments of `sqsaga provision`.
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Saga definition file or directory (repeatable): one queue is made per service they name.
    #[arg(long = "definition", required = true)]
    definitions: Vec<PathBuf>,
    /// Receives after which a message goes to its DLQ; default `max_receive_count` of the configuration (5).
    #[arg(long)]
    max_receive_count: Option<u32>,
    /// KMS key (id, alias or ARN) for SSE-KMS on queues and table; SSE-SQS and the AWS-managed table key otherwise.
    #[arg(long)]
    kms_key: Option<String>,
    /// Queue name prefix; default `queue_prefix` of the configuration (`sqsaga-`).
    #[arg(long)]
    prefix: Option<String>,
    /// DynamoDB table; default `table` of the configuration (`sqsaga-sagas`).
    #[arg(long)]
    table: Option<String>,
    /// JSON config file (the Chef path); also `SQSAGA_CONFIG`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[command(flatten)]
    data: DataDir,
    /// Saga definition name.
    #[arg(long)]
    saga: String,
    /// Saga input, a JSON object.
    #[arg(long)]
    input: String,
    /// Saga id; a fresh one when absent (reuse one to make a retried start idempotent).
    #[arg(long)]
    id: Option<String>,
    /// Pin a definition version; the newest when absent.
    #[arg(long)]
    version: Option<u32>,
    /// W3C trace context to continue (`00-<trace id>-<span id>-01`), e.g. the
    /// request that caused this order; a fresh trace when absent.
    #[arg(long)]
    traceparent: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the dead-lettered messages of QUEUE with their failure reason.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Source queue (e.g. `inventory`); its DLQ is listed.
        queue: String,
        /// Print the messages as one JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Move every dead-lettered message of QUEUE back to it.
    Redrive {
        #[command(flatten)]
        data: DataDir,
        /// Source queue (e.g. `inventory`): the messages of its DLQ go back to it.
        queue: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// The configured backend (`SQSAGA_BACKEND`, embedded by default). An
/// embedded data dir must already exist: a typo should not create an empty one.
pub async fn open(data: &DataDir) -> Result<(Opened, sqsaga_config::Settings)> {
    let settings =
        sqsaga_runtime::resolve(&Overrides { data_dir: Some(data.data_dir.clone()), ..Overrides::default() })?;
    if settings.backend == sqsaga_config::Backend::Embedded && !data.data_dir.exists() {
        bail!("data dir {} does not exist (set --data-dir or SQSAGA_DATA_DIR)", data.data_dir.display());
    }
    Ok((sqsaga_runtime::open_backend(&settings).await?, settings))
}

/// `sqsaga provision`.
pub async fn provision(args: ProvisionArgs) -> Result<ExitCode> {
    let mut settings = sqsaga_runtime::resolve(&Overrides { config: args.config.clone(), ..Overrides::default() })?;
    settings.queue_prefix = args.prefix.unwrap_or(settings.queue_prefix);
    settings.table = args.table.unwrap_or(settings.table);
    let max_receive_count = args.max_receive_count.unwrap_or(settings.max_receive_count);
    if max_receive_count == 0 {
        bail!("--max-receive-count must be at least 1: a queue without redrive never sheds a poison message");
    }
    let definitions = sqsaga_orchestrator::Definitions::load(&args.definitions)?;
    let backend = sqsaga_aws::AwsBackend::connect(sqsaga_runtime::aws_settings(&settings)).await?;
    let options = sqsaga_runtime::ProvisionOptions {
        max_receive_count,
        kms_key: args.kms_key,
        visibility_timeout: settings.visibility_timeout,
        ..sqsaga_runtime::ProvisionOptions::default()
    };
    let lines = sqsaga_runtime::provision(&backend, &definitions, &options).await.context("provisioning failed")?;
    for line in &lines {
        println!("{line}");
    }
    let created = lines.iter().filter(|l| l.created).count();
    println!("{created} created, {} found", lines.len() - created);
    if args.json {
        println!("{}", serde_json::to_string(&json!({ "resources": lines, "created": created }))?);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut ok = true;
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                println!("{name}:1:1: cannot read file: {e}");
                ok = false;
                continue;
            }
        };
        // `fleet.yaml` next to the sagas is the drift guard's policy.
        if file.file_stem().is_some_and(|s| s == "fleet") {
            match sqsaga_drift::FleetPolicy::parse(&text, sqsaga_drift::Mode::Observe) {
                Ok(p) => println!("{name}: fleet policy is valid ({} service(s) listed)", p.services.len()),
                Err(problems) => {
                    ok = false;
                    print!("{}", sqsaga_core::yaml::format_problems(&name, &problems));
                }
            }
            continue;
        }
        match sqsaga_core::yaml::parse_definitions(&text) {
            Ok(defs) => {
                for d in defs {
                    println!("{name}: {} v{} is valid ({} steps)", d.name, d.version, d.steps.len());
                }
            }
            Err(problems) => {
                ok = false;
                print!("{}", sqsaga_core::yaml::format_problems(&name, &problems));
                if !sqsaga_core::yaml::format_problems(&name, &problems).ends_with('\n') {
                    println!();
                }
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn graph(file: &Path) -> Result<ExitCode> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
    match sqsaga_core::yaml::parse_definition(&text) {
        Ok(def) => {
            println!("{}", sqsaga_core::graph::mermaid(&def));
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            print!("{}", sqsaga_core::yaml::format_problems(&name, &problems));
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn start(args: StartArgs) -> Result<ExitCode> {
    let input: Value = serde_json::from_str(&args.input).context("--input is not valid JSON")?;
    let trace = args.traceparent.as_deref().map(TraceParent::parse).transpose().context("--traceparent")?;
    let (backend, settings) = open(&args.data).await?;
    // Refused here, at once, rather than dead-lettered by the orchestrator later.
    let definitions = crate::definitions(&settings)?;
    let signing = sqsaga_runtime::signing(&settings);
    let sender = Sender { queue: backend.queue.as_ref(), store: backend.store.as_ref(), signing: signing.as_deref() };
    let request = StartRequest { saga: args.saga, version: args.version, input, id: args.id, trace };
    let id = match sender.start(&definitions, request).await {
        Err(e @ OperatorError::NoSuchDefinition { .. }) => {
            bail!("{e}; set SQSAGA_DEFINITIONS to the orchestrator's definitions")
        }
        other => other?,
    };
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub async fn dlq(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List { remote: Remote { server: Some(server) }, queue, json, .. } => {
            let messages = Client::from_env(&server).get(&format!("/api/v1/dlq/{queue}/messages")).await?;
            print_remote(json, &messages, || render_dlq(&queue, &messages))
        }
        DlqCommand::Redrive { remote: Remote { server: Some(server) }, queue, .. } => {
            let r = Client::from_env(&server).post(&format!("/api/v1/dlq/{queue}/redrive")).await?;
            println!("moved {} message(s) from {} back to {queue}", r["moved"], dlq_name(&queue));
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::List { data, queue, json, .. } => {
            let q = open(&data).await?.0.queue;
            let messages = sqsaga_runtime::operator::peek_all(q.as_ref(), &dlq_name(&queue)).await?;
            if json {
                let rows: Vec<Value> = messages
                    .iter()
                    .map(|m| {
                        json!({
                            "message_id": m.message_id,
                            "reason": m.attributes.get(ATTR_REASON),
                            "source": m.attributes.get(ATTR_SOURCE),
                            "sent_at": m.sent_at,
                            "body": m.body,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{} message(s) in {}", messages.len(), dlq_name(&queue));
                for m in &messages {
                    let reason = m.attributes.get(ATTR_REASON).map(String::as_str).unwrap_or("(no reason recorded)");
                    let body: String = m.body.chars().take(80).collect();
                    println!("  {}  {reason}\n      {body}", m.message_id);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Redrive { data, queue, .. } => {
            let (opened, settings) = open(&data).await?;
            let signing = sqsaga_runtime::signing(&settings);
            let r = operator::redrive_all(opened.queue.as_ref(), &queue, signing.as_deref()).await?;
            println!("moved {} message(s) from {} back to {queue}", r.moved, dlq_name(&queue));
            if r.refreshed > 0 {
                println!("re-signed {} genuine message(s) whose signature would have been stale", r.refreshed);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Arguments of `sqsaga conformance`.
#[derive(Debug, Args)]
pub struct ConformanceArgs {
    #[command(flatten)]
    config: crate::ConfigArgs,
    /// The participant's service, whose queue the commands go to (e.g. `payment`).
    #[arg(long)]
    service: String,
    /// How long one reply or dead letter may take (e.g. `30s`).
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    timeout: std::time::Duration,
}

/// `sqsaga conformance`: the kit's table; exit 1 on any failed case.
pub async fn conformance(args: ConformanceArgs) -> Result<ExitCode> {
    let settings = crate::resolve(&args.config)?;
    let report = sqsaga_conformance::run_configured(&settings, &args.service, args.timeout).await?;
    print!("{}", report.table());
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
