//! Operator commands: `validate`, `graph`, `start`, `sagas list|show|resume`
//! and `dlq list|redrive`. Thin: they parse arguments, call a port, print.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sqsaga_core::machine::SagaStatus;
use sqsaga_orchestrator::ORCHESTRATOR_QUEUE;
use sqsaga_protocol::{ATTR_SIGNATURE, Envelope, ResumeSaga, StartSaga, TraceParent};
use sqsaga_queue::{ATTR_REASON, ATTR_SOURCE, MAX_BATCH, OutgoingMessage, Queue, Receive, dlq_name};

use crate::{DataDir, sealing};

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
pub enum SagasCommand {
    /// List sagas, newest first.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Only sagas in this status (running, compensating, completed, compensated, needs_operator).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one saga: state, steps (with the worker that ran each), history.
    Show {
        #[command(flatten)]
        data: DataDir,
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Ask the orchestrator to retry the compensation of a `needs_operator` saga.
    Resume {
        #[command(flatten)]
        data: DataDir,
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Show the dead-lettered messages of QUEUE with their failure reason.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Source queue (e.g. `inventory`); its DLQ is listed.
        queue: String,
        #[arg(long)]
        json: bool,
    },
    /// Move every dead-lettered message of QUEUE back to it.
    Redrive {
        #[command(flatten)]
        data: DataDir,
        queue: String,
    },
}

/// The configured backend (`SQSAGA_BACKEND`, embedded by default). An
/// embedded data dir must already exist: a typo should not create an empty one.
async fn open(data: &DataDir) -> Result<crate::serve::Opened> {
    let settings = crate::serve::settings_for(&data.data_dir, None)?;
    if settings.backend == sqsaga_config::Backend::Embedded && !data.data_dir.exists() {
        bail!("data dir {} does not exist (set --data-dir or SQSAGA_DATA_DIR)", data.data_dir.display());
    }
    crate::serve::open_backend(&settings).await
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
                Ok(p) => eprintln!("{name}: fleet policy is valid ({} service(s) listed)", p.services.len()),
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
                    eprintln!("{name}: {} v{} is valid ({} steps)", d.name, d.version, d.steps.len());
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
    let trace = match &args.traceparent {
        Some(text) => TraceParent::parse(text).context("--traceparent")?,
        None => sealing::new_trace(),
    };
    let backend = open(&args.data).await?;
    let signing = sealing::signing_for(&args.data.data_dir)?;
    let id = args.id.unwrap_or_else(|| format!("{}-{}", args.saga, uuid::Uuid::new_v4().simple()));
    let start = Envelope::Start(StartSaga {
        saga_id: id.clone(),
        saga: args.saga,
        version: args.version,
        input,
        requested_at: sqsaga_orchestrator::clock::now_ms(),
    });
    let message = sealing::seal(start.encode(), signing.as_deref(), Some(trace));
    backend.queue.send(ORCHESTRATOR_QUEUE, message).await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub async fn sagas(command: SagasCommand) -> Result<ExitCode> {
    match command {
        SagasCommand::List { data, status, limit, json } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(SagaStatus::parse(s).with_context(|| {
                    format!(
                        "unknown status `{s}`: expected running, compensating, completed, compensated or needs_operator"
                    )
                })?),
            };
            let store = open(&data).await?.store;
            let rows = store.list(status, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<40} {:<16} {:>3} {:<15}", "ID", "SAGA", "V", "STATUS");
                for r in rows {
                    println!("{:<40} {:<16} {:>3} {:<15}", r.id, r.saga, r.version, r.status);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        SagasCommand::Show { data, id, json } => {
            let store = open(&data).await?.store;
            let Some(record) = store.load(std::slice::from_ref(&id)).await?.into_iter().next() else {
                bail!("no saga `{id}`");
            };
            let history = store.history(&id).await?;
            let s = &record.instance;
            if json {
                let out = json!({ "saga": s, "revision": record.revision, "history": history });
                println!("{}", serde_json::to_string(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("saga     {} ({} v{})", s.id, s.saga, s.version);
            println!("status   {}", s.status);
            if let Some(reason) = &s.reason {
                println!("reason   {reason}");
            }
            println!("input    {}", s.input);
            println!("steps");
            for (i, st) in s.steps.iter().enumerate() {
                let worker = st
                    .worker
                    .as_ref()
                    .map(|w| format!(" by {} [{}]", w.instance, short(&w.fingerprint)))
                    .unwrap_or_default();
                let comp_worker = st
                    .comp_worker
                    .as_ref()
                    .map(|w| format!("; compensated by {} [{}]", w.instance, short(&w.fingerprint)))
                    .unwrap_or_default();
                let error = st.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
                println!(
                    "  {i}. {:?} attempts={} comp_attempts={}{worker}{comp_worker}{error}",
                    st.status, st.attempt, st.comp_attempt
                );
            }
            println!("history");
            for h in history {
                println!("  {} {:<7} {}", h.at, h.event, h.note);
            }
            Ok(ExitCode::SUCCESS)
        }
        SagasCommand::Resume { data, id } => {
            let backend = open(&data).await?;
            let signing = sealing::signing_for(&data.data_dir)?;
            // The resume joins the saga's own trace, when the saga has one.
            let record = backend.store.load(std::slice::from_ref(&id)).await?.into_iter().next();
            let trace = record
                .and_then(|r| r.instance.trace)
                .and_then(|t| TraceParent::parse(&t).ok())
                .map(|t| t.child(&format!("resume:{}", sqsaga_orchestrator::clock::now_ms())));
            let resume = Envelope::Resume(ResumeSaga {
                saga_id: id.clone(),
                requested_at: sqsaga_orchestrator::clock::now_ms(),
            });
            let message = sealing::seal(resume.encode(), signing.as_deref(), trace);
            backend.queue.send(ORCHESTRATOR_QUEUE, message).await?;
            println!("resume requested for {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

pub async fn dlq(command: DlqCommand) -> Result<ExitCode> {
    match command {
        DlqCommand::List { data, queue, json } => {
            let q = open(&data).await?.queue;
            let messages = peek_all(q.as_ref(), &dlq_name(&queue)).await?;
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
        DlqCommand::Redrive { data, queue } => {
            let q = open(&data).await?.queue;
            let signing = sealing::signing_for(&data.data_dir)?;
            // A genuine message that waited in the DLQ longer than the
            // signature's max age would be rejected as stale again: it is
            // re-signed now. Unsigned and forged ones move as they are.
            let mut refreshed = 0;
            let refresh = |m: &mut OutgoingMessage| {
                let Some(signing) = signing.as_deref() else { return };
                let attr = m.attributes.get(ATTR_SIGNATURE).map(String::as_str);
                if let Some(fresh) = signing.signer.refresh(&m.body, attr, sqsaga_orchestrator::clock::now_ms()) {
                    m.attributes.insert(ATTR_SIGNATURE.to_string(), fresh);
                    refreshed += 1;
                }
            };
            let moved = sqsaga_queue::redrive_with(q.as_ref(), &dlq_name(&queue), &queue, refresh).await?;
            println!("moved {moved} message(s) from {} back to {queue}", dlq_name(&queue));
            if refreshed > 0 {
                println!("re-signed {refreshed} genuine message(s) whose signature would have been stale");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Lists a queue without consuming it: receive with a short visibility,
/// then hand everything back at once (SQS has no peek).
async fn peek_all(queue: &dyn Queue, name: &str) -> Result<Vec<sqsaga_queue::ReceivedMessage>> {
    let mut seen = Vec::new();
    loop {
        let batch = queue.receive(name, Receive::up_to(MAX_BATCH).visibility(Duration::from_secs(30))).await?;
        if batch.is_empty() {
            break;
        }
        seen.extend(batch);
        if seen.len() >= 1000 {
            break;
        }
    }
    for m in &seen {
        queue.change_visibility(name, &m.receipt_handle, Duration::ZERO).await?;
    }
    Ok(seen)
}
