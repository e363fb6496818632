//! `sqsaga sagas list|show|resume`: what an operator reads about sagas —
//! aligned columns, step names from the definition, RFC 3339 times,
//! statuses in words — and `show --follow`, which streams a saga's history
//! until it is terminal.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::json;
use sqsaga_core::definition::SagaDefinition;
use sqsaga_core::machine::{SagaInstance, SagaStatus, StepState};
use sqsaga_runtime::admin::client::{Client, render_saga, render_sagas, rfc3339};
use sqsaga_runtime::identity::short;
use sqsaga_runtime::operator::Sender;
use sqsaga_store::{HistoryEntry, SagaRecord, SagaStore};

use crate::admin::open;
use crate::{DataDir, Remote, print_remote};

#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// List sagas, newest first: status, current step, start and last update, reason.
    List {
        #[command(flatten)]
        data: DataDir,
        /// Only sagas in this status (running, compensating, completed, compensated, needs_operator).
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the rows as one JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one saga: state, steps (with the worker that ran each), history.
    Show {
        #[command(flatten)]
        data: DataDir,
        /// The saga id (as `sagas list` or `start` printed it).
        id: String,
        /// Print the saga, its revision and history as one JSON object.
        #[arg(long)]
        json: bool,
        /// Keep printing new history lines until the saga is terminal (waiting up to a minute for one just started).
        #[arg(long, conflicts_with = "json")]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Ask the orchestrator to retry the compensation of a `needs_operator` saga.
    Resume {
        #[command(flatten)]
        data: DataDir,
        /// The saga id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// A step status in words (`compensation retry wait`).
fn words<T: serde::Serialize>(status: &T) -> String {
    serde_json::to_value(status).ok().and_then(|v| v.as_str().map(|s| s.replace('_', " "))).unwrap_or_default()
}

/// The saga's definition, when the configured definitions have it.
fn definition_of(settings: &sqsaga_config::Settings, s: &SagaInstance) -> Option<std::sync::Arc<SagaDefinition>> {
    crate::definitions(settings).ok()?.get(&s.saga, s.version)
}

fn step_name(def: Option<&SagaDefinition>, i: usize) -> String {
    def.and_then(|d| d.steps.get(i)).map(|s| s.name.clone()).unwrap_or_else(|| format!("step {i}"))
}

fn print_step(def: Option<&SagaDefinition>, i: usize, st: &StepState) {
    let worker = st.worker.as_ref().map(|w| format!(" by {} [{}]", w.instance, short(&w.fingerprint)));
    let comp = st.comp_worker.as_ref().map(|w| format!("; compensated by {} [{}]", w.instance, short(&w.fingerprint)));
    let error = st.error.as_ref().map(|e| format!(" ({e})"));
    let times = match (st.started_at, st.finished_at) {
        (Some(a), Some(b)) => format!(" {} .. {}", rfc3339(a), rfc3339(b)),
        (Some(a), None) => format!(" since {}", rfc3339(a)),
        _ => String::new(),
    };
    println!(
        "  {i}. {:<18} {:<26} attempts {} / compensations {}{times}{}{}{}",
        step_name(def, i),
        words(&st.status),
        st.attempt,
        st.comp_attempt,
        worker.unwrap_or_default(),
        comp.unwrap_or_default(),
        error.unwrap_or_default()
    );
}

fn print_history(entries: &[HistoryEntry]) {
    for h in entries {
        println!("  {} {:<7} {}", rfc3339(h.at), h.event, h.note);
    }
}

pub async fn sagas(command: SagasCommand) -> Result<ExitCode> {
    match command {
        SagasCommand::List { remote: Remote { server: Some(server) }, status, limit, json, .. } => {
            let q = status.map(|s| format!("&status={s}")).unwrap_or_default();
            let page = Client::from_env(&server).get(&format!("/api/v1/sagas?limit={}{q}", limit.min(500))).await?;
            print_remote(json, &page["items"], || render_sagas(&page))
        }
        SagasCommand::Show { remote: Remote { server: Some(server) }, id, json, .. } => {
            let saga = Client::from_env(&server).get(&format!("/api/v1/sagas/{id}")).await?;
            print_remote(json, &saga, || render_saga(&saga))
        }
        SagasCommand::Resume { remote: Remote { server: Some(server) }, id, .. } => {
            Client::from_env(&server).post(&format!("/api/v1/sagas/{id}/resume")).await?;
            println!("resume requested for {id}");
            Ok(ExitCode::SUCCESS)
        }
        SagasCommand::List { data, status, limit, json, .. } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(SagaStatus::parse(s).with_context(|| {
                    format!(
                        "unknown status `{s}`: expected running, compensating, completed, compensated or needs_operator"
                    )
                })?),
            };
            let (opened, settings) = open(&data).await?;
            let rows = opened.store.list(status, limit).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            let records = opened.store.load(&ids).await?;
            let counts = opened.store.counts().await?;
            let total: u64 = match status {
                Some(s) => counts.get(&s).copied().unwrap_or(0),
                None => counts.values().sum(),
            };
            println!(
                "{:<40} {:<14} {:<15} {:<18} {:<24} {:<24} REASON",
                "ID", "SAGA", "STATUS", "STEP", "STARTED", "UPDATED"
            );
            for r in &records {
                let s = &r.instance;
                let def = definition_of(&settings, s);
                println!(
                    "{:<40} {:<14} {:<15} {:<18} {:<24} {:<24} {}",
                    s.id,
                    format!("{} v{}", s.saga, s.version),
                    s.status.as_str(),
                    step_name(def.as_deref(), s.current),
                    rfc3339(s.started_at),
                    rfc3339(s.updated_at),
                    s.reason.as_deref().unwrap_or("")
                );
            }
            println!("showing {} of {total}", records.len());
            Ok(ExitCode::SUCCESS)
        }
        SagasCommand::Show { data, id, json, follow, .. } => {
            let (opened, settings) = open(&data).await?;
            let store = opened.store.as_ref();
            let Some(record) = load_or_wait(store, &id, follow).await? else {
                bail!("no saga `{id}`");
            };
            let history = store.history(&id).await?;
            if json {
                let out = json!({ "saga": record.instance, "revision": record.revision, "history": history });
                println!("{}", serde_json::to_string(&out)?);
                return Ok(ExitCode::SUCCESS);
            }
            let s = &record.instance;
            let def = definition_of(&settings, s);
            println!("saga     {} ({} v{})", s.id, s.saga, s.version);
            println!("status   {}", s.status);
            if let Some(reason) = &s.reason {
                println!("reason   {reason}");
            }
            println!("started  {}", rfc3339(s.started_at));
            println!("updated  {}", rfc3339(s.updated_at));
            println!("deadline {}", rfc3339(s.deadline_at));
            println!("input    {}", s.input);
            println!("steps");
            for (i, st) in s.steps.iter().enumerate() {
                print_step(def.as_deref(), i, st);
            }
            println!("history");
            print_history(&history);
            if follow && !s.status.is_terminal() {
                follow_saga(store, &id, history.len()).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        SagasCommand::Resume { data, id, .. } => {
            let (backend, settings) = open(&data).await?;
            let signing = sqsaga_runtime::signing(&settings);
            let sender =
                Sender { queue: backend.queue.as_ref(), store: backend.store.as_ref(), signing: signing.as_deref() };
            sender.resume(&id).await?;
            println!("resume requested for {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The saga `id`; with `wait`, one just requested appears once the
/// orchestrator takes its start (up to a minute).
async fn load_or_wait(store: &dyn SagaStore, id: &str, wait: bool) -> Result<Option<SagaRecord>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(if wait { 60 } else { 0 });
    loop {
        let found = store.load(&[id.to_string()]).await?.into_iter().next();
        if found.is_some() || std::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints history lines after the first `seen` as they appear, then the
/// final status once the saga is terminal.
async fn follow_saga(store: &dyn SagaStore, id: &str, mut seen: usize) -> Result<()> {
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let history = store.history(id).await?;
        if history.len() > seen {
            print_history(&history[seen..]);
            seen = history.len();
        }
        let Some(record) = store.load(&[id.to_string()]).await?.into_iter().next() else {
            bail!("saga `{id}` is gone (expired by retention?)");
        };
        if record.instance.status.is_terminal() {
            println!("status   {}", record.instance.status);
            return Ok(());
        }
    }
}
