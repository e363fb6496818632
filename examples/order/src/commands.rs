//! `sqsaga demo`, `demo load` and `demo check` as library calls: options in,
//! a [`Summary`] or a [`Manifest`] out. The binary parses the flags, draws
//! the progress bar and prints; everything else is here: the data dir, the
//! backend and its queues, the participants' databases (SQLite files in
//! the data dir, or a fresh PostgreSQL database with a schema per service),
//! the in-process stack, and cleaning up after a successful run.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqsaga_orchestrator::Definitions;
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_runtime::{Opened, Overrides, Stack, StackOptions};

use crate::Placement;
use crate::run::{MANIFEST, Manifest, RunError, Summary};

/// The server `--participants postgres` uses unless told otherwise: the
/// machine's, trust authentication for `postgres` on loopback.
pub const DEFAULT_POSTGRES_SERVER: &str = sqsaga_postgres::scratch::DEFAULT_SERVER;

/// Where a demo puts its participants (`--participants`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParticipantsOn {
    /// SQLite files in the data dir (the default).
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL (a URL to any
    /// database there, by a user allowed to create databases).
    Postgres { server: String },
}

impl ParticipantsOn {
    /// The names `--participants` accepts.
    pub const NAMES: [&'static str; 2] = ["sqlite", "postgres"];

    /// `name` (one of [`ParticipantsOn::NAMES`]) with the server `--postgres-url` gave.
    pub fn from_name(name: &str, server: &str) -> ParticipantsOn {
        match name {
            "postgres" => ParticipantsOn::Postgres { server: server.to_string() },
            _ => ParticipantsOn::Sqlite,
        }
    }
}

/// What both `demo` and `demo load` take.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub orders: usize,
    pub seed: u64,
    /// Probability that one notification attempt fails transiently.
    pub failure_rate: f64,
    /// `embedded` or `aws`.
    pub backend: String,
    pub participants: ParticipantsOn,
}

/// How a finished `demo` went.
pub struct DemoOutcome {
    pub summary: Summary,
    /// The temporary data dir (and database) were removed.
    pub removed: bool,
}

/// Opens the chosen backend for a demo run and creates what the definitions
/// need: queues (and, on AWS, the table), idempotently.
pub async fn open_demo_backend(dir: &Path, backend: &str, defs: &Definitions) -> Result<Opened, RunError> {
    let overrides =
        Overrides { data_dir: Some(dir.to_path_buf()), backend: Some(backend.to_string()), ..Overrides::default() };
    let settings = sqsaga_runtime::resolve(&overrides)?;
    let opened = sqsaga_runtime::open_backend(&settings).await?;
    match &opened.aws {
        Some(aws) => {
            let options = sqsaga_runtime::ProvisionOptions {
                visibility_timeout: settings.visibility_timeout,
                max_receive_count: settings.max_receive_count,
                ..sqsaga_runtime::ProvisionOptions::default()
            };
            sqsaga_runtime::provision(aws, defs, &options).await.map_err(|e| {
                RunError::Setup(format!(
                    "cannot create the demo's queues and table (is AWS_ENDPOINT_URL reachable?): {e}"
                ))
            })?;
        }
        None => {
            let spec = sqsaga_queue::QueueSpec::named("template");
            sqsaga_orchestrator::ensure_queues(opened.queue.as_ref(), defs, &spec).await?;
        }
    }
    Ok(opened)
}

/// `dir` (a fresh temporary one when not given), refusing one that already holds a run.
pub fn fresh_dir(given: Option<&Path>) -> Result<PathBuf, RunError> {
    let dir = match given {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("sqsaga-demo-{}", uuid::Uuid::new_v4().simple())),
    };
    if dir.join(MANIFEST).exists() {
        return Err(RunError::Setup(format!(
            "{} already holds a demo run ({MANIFEST} exists); use a new --data-dir or delete it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| RunError::File {
        what: "cannot create data dir",
        path: dir.display().to_string(),
        cause: e.to_string(),
    })?;
    Ok(dir)
}

/// Where the participants go: the data dir, or a database created for
/// this run (returned too, so a successful run can drop it).
async fn placement(dir: &Path, on: &ParticipantsOn) -> Result<(Placement, Option<ScratchDb>), RunError> {
    match on {
        ParticipantsOn::Sqlite => Ok((Placement::Sqlite { dir: dir.to_path_buf() }, None)),
        ParticipantsOn::Postgres { server } => {
            let db = ScratchDb::create_named(server, "sqsaga_demo").await.map_err(RunError::Setup)?;
            Ok((Placement::Postgres { url: db.url.clone() }, Some(db)))
        }
    }
}

/// The whole demo in this process: participants, orchestrator and workers
/// on one stack, `o.orders` sagas, then the summary. `dir` is the data dir
/// ([`fresh_dir`]); `temporary` says it was made for this run, so a
/// successful run without `keep` removes it (and its PostgreSQL database).
/// `progress` hears `(finished, total)`.
pub async fn demo(
    o: &RunOptions,
    dir: &Path,
    temporary: bool,
    keep: bool,
    timeout: Duration,
    mut progress: impl FnMut(usize, usize),
) -> Result<DemoOutcome, RunError> {
    let defs = Arc::new(crate::run::definitions()?);
    let opened = open_demo_backend(dir, &o.backend, &defs).await?;
    let (placement, scratch) = placement(dir, &o.participants).await?;
    let options = StackOptions::default();
    let participants =
        placement.open_all(sqsaga_sqlite::Sync::Full, options.worker_pollers, o.failure_rate, o.seed).await?;
    let stack = Stack::start_any(opened.queue.clone(), opened.store.clone(), defs, &participants, &options);
    let started = Instant::now();
    let now = sqsaga_orchestrator::clock::now_ms();
    let manifest = crate::run::load_at(dir, &placement, o.orders, o.seed, opened.queue.as_ref(), None, now).await?;
    let total = manifest.sagas.len();
    crate::run::wait_terminal(opened.store.as_ref(), &manifest.ids(), timeout, |n| progress(n, total)).await?;
    let elapsed = started.elapsed();
    stack.stop().await;
    let summary = crate::run::summarize(dir, opened.store.as_ref(), &manifest, Some(elapsed)).await?;
    let removed = summary.invariants_ok && temporary && !keep;
    if removed {
        drop(participants);
        drop(opened);
        if let Some(db) = scratch {
            db.drop_now().await.map_err(RunError::Setup)?;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(DemoOutcome { summary, removed })
}

/// `demo load`: seeds the participants' databases (a PostgreSQL database
/// is created for the run) and requests the sagas, signed when a key is
/// configured; the manifest in `dir` says where everything is.
pub async fn demo_load(o: &RunOptions, dir: &Path) -> Result<Manifest, RunError> {
    let defs = crate::run::definitions()?;
    let opened = open_demo_backend(dir, &o.backend, &defs).await?;
    let overrides = Overrides { data_dir: Some(dir.to_path_buf()), ..Overrides::default() };
    let signing = sqsaga_runtime::signing(&sqsaga_runtime::resolve(&overrides)?);
    let (placement, _kept) = placement(dir, &o.participants).await?;
    let now = sqsaga_orchestrator::clock::now_ms();
    crate::run::load_at(dir, &placement, o.orders, o.seed, opened.queue.as_ref(), signing.as_deref(), now).await
}

/// `demo check`: waits up to `wait` for the sagas `demo load` requested in
/// `dir`, then checks the invariants where the participants are.
pub async fn demo_check(
    dir: &Path,
    backend: &str,
    wait: Duration,
    mut progress: impl FnMut(usize, usize),
) -> Result<Summary, RunError> {
    let manifest = Manifest::read(dir)?;
    let overrides =
        Overrides { data_dir: Some(dir.to_path_buf()), backend: Some(backend.to_string()), ..Overrides::default() };
    let store = sqsaga_runtime::open_backend(&sqsaga_runtime::resolve(&overrides)?).await?.store;
    let total = manifest.sagas.len();
    crate::run::wait_terminal(store.as_ref(), &manifest.ids(), wait, |n| progress(n, total)).await?;
    // The run's own span (first start to last update), not the check's.
    crate::run::summarize(dir, store.as_ref(), &manifest, None).await
}
