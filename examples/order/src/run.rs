//! A demo run of the order saga, as data in and data out: `load` seeds the
//! participants' databases and sends one start request per order, leaving a
//! [`Manifest`] in the data dir; `wait_terminal` waits for those sagas;
//! `summarize` reads them back and checks the invariants. The binary's
//! `demo`, `demo load` and `demo check` print what these return; the
//! benchmarks use the same pieces.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::machine::{SagaStatus, StepStatus};
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE};
use sqsaga_protocol::{Envelope, Signing, StartSaga};
use sqsaga_queue::{MAX_BATCH, Queue, QueueError};
use sqsaga_runtime::sealing::{new_trace, seal};
use sqsaga_store::{SagaStore, StoreError};

use crate::{DemoData, InvariantReport, ORDER_SAGA, OrderError, Placement};

/// File in the data dir that records what `load` started, for `demo check`.
pub const MANIFEST: &str = "demo.json";

/// The saga every start request names.
pub const SAGA_NAME: &str = "create_order";

/// Why a demo run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    #[error("saga store: {0}")]
    Store(#[from] StoreError),
    #[error("{what} {path}: {cause}")]
    File { what: &'static str, path: String, cause: String },
    #[error("the built-in saga definition: {0}")]
    Definition(String),
    #[error(transparent)]
    Runtime(#[from] sqsaga_runtime::RuntimeError),
    /// The run could not be set up (a data dir in use, no database server).
    #[error("{0}")]
    Setup(String),
}

/// What `load` leaves behind for `demo check`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub seed: u64,
    pub initial: DemoData,
    /// Saga id and input of every order started.
    pub sagas: Vec<(String, Value)>,
    /// The PostgreSQL database the participants keep their schemas in, when
    /// the run put them there (`--participants postgres`); absent: SQLite
    /// files in the data dir. `demo check` reads the invariants there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_db: Option<String>,
}

impl Manifest {
    /// Where the run's participants keep their databases.
    pub fn placement(&self, dir: &Path) -> Placement {
        match &self.participant_db {
            Some(url) => Placement::Postgres { url: url.clone() },
            None => Placement::Sqlite { dir: dir.to_path_buf() },
        }
    }

    /// The saga ids, in start order.
    pub fn ids(&self) -> Vec<String> {
        self.sagas.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Reads the manifest `load` wrote into `dir`.
    pub fn read(dir: &Path) -> Result<Manifest, RunError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| RunError::File {
            what: "no demo loaded here (run `sqsaga demo load` first):",
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| RunError::File {
            what: "the demo manifest is corrupt:",
            path: path.display().to_string(),
            cause: e.to_string(),
        })
    }
}

/// The built-in order saga definition.
pub fn definitions() -> Result<Definitions, RunError> {
    let def = sqsaga_core::yaml::parse_definition(ORDER_SAGA)
        .map_err(|p| RunError::Definition(sqsaga_core::yaml::format_problems("create_order.yaml", &p)))?;
    let mut defs = Definitions::default();
    defs.insert(def, "built-in create_order.yaml").map_err(|e| RunError::Definition(e.to_string()))?;
    Ok(defs)
}

/// Sends one start request per `(saga id, input)`, ten per batch, each with
/// a fresh trace and, when `signing` is given, signed.
pub async fn start_sagas(
    queue: &dyn Queue,
    sagas: &[(String, Value)],
    signing: Option<&Signing>,
    now: sqsaga_core::Millis,
) -> Result<(), QueueError> {
    for chunk in sagas.chunks(MAX_BATCH) {
        let batch = chunk
            .iter()
            .map(|(id, input)| {
                let start = Envelope::Start(StartSaga {
                    saga_id: id.clone(),
                    saga: SAGA_NAME.to_string(),
                    version: None,
                    input: input.clone(),
                    requested_at: now,
                });
                seal(start.encode(), signing, Some(new_trace()))
            })
            .collect();
        queue.send_batch(ORCHESTRATOR_QUEUE, batch).await?;
    }
    Ok(())
}

/// Seeds stock and accounts for `orders` orders of `seed` into the
/// participants' SQLite databases in `dir`, writes the manifest, then
/// requests the sagas.
pub async fn load(
    dir: &Path,
    orders: usize,
    seed: u64,
    queue: &dyn Queue,
    signing: Option<&Signing>,
    now: sqsaga_core::Millis,
) -> Result<Manifest, RunError> {
    let placement = Placement::Sqlite { dir: dir.to_path_buf() };
    load_at(dir, &placement, orders, seed, queue, signing, now).await
}

/// [`load`] with the participants' databases at `placement` (the manifest
/// still goes into `dir`, and says where they are).
pub async fn load_at(
    dir: &Path,
    placement: &Placement,
    orders: usize,
    seed: u64,
    queue: &dyn Queue,
    signing: Option<&Signing>,
    now: sqsaga_core::Millis,
) -> Result<Manifest, RunError> {
    let (initial, inputs) = crate::generate_orders(orders, seed);
    placement.seed(&initial).await?;
    let participant_db = match placement {
        Placement::Postgres { url } => Some(url.clone()),
        Placement::Sqlite { .. } => None,
    };
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let sagas: Vec<(String, Value)> =
        inputs.into_iter().enumerate().map(|(i, input)| (format!("order-{run_id}-{i:05}"), input)).collect();
    let manifest = Manifest { run_id, seed, initial, sagas, participant_db };
    let path = dir.join(MANIFEST);
    let text = serde_json::to_string(&manifest).map_err(|e| RunError::File {
        what: "cannot encode the manifest",
        path: path.display().to_string(),
        cause: e.to_string(),
    })?;
    std::fs::write(&path, text).map_err(|e| RunError::File {
        what: "cannot write the manifest",
        path: path.display().to_string(),
        cause: e.to_string(),
    })?;
    start_sagas(queue, &manifest.sagas, signing, now).await?;
    Ok(manifest)
}

/// Waits until every saga of `ids` is terminal or `budget` runs out;
/// `progress` hears how many are. Returns whether all finished.
pub async fn wait_terminal(
    store: &dyn SagaStore,
    ids: &[String],
    budget: Duration,
    mut progress: impl FnMut(usize),
) -> Result<bool, RunError> {
    let started = Instant::now();
    loop {
        let records = store.load(ids).await?;
        let done = records.iter().filter(|r| r.instance.status.is_terminal()).count();
        progress(done);
        if done >= ids.len() {
            return Ok(true);
        }
        if started.elapsed() >= budget {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A run's final numbers.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub sagas: usize,
    pub completed: usize,
    pub compensated: usize,
    pub needs_operator: usize,
    pub unfinished: usize,
    /// Why the compensated ones compensated: time (capacity) or business.
    pub causes: crate::CompensationCauses,
    pub invariants_ok: bool,
    pub violations: Vec<String>,
    pub elapsed_s: f64,
    pub sagas_per_s: f64,
    /// Steps (commands answered) per second, counted from the sagas'
    /// own records, so `demo check` in another process counts them too.
    pub steps: u64,
    pub steps_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub data_dir: String,
    /// Where the participants' databases are: `sqlite (data dir)` or the
    /// PostgreSQL database's URL, without a password.
    pub participants: String,
}

/// Reads the run's sagas back and checks the invariants. `elapsed` is the
/// run's wall time; `None` derives it from the sagas' own first start and
/// last update (for `demo check`, which did not see the run).
pub async fn summarize(
    dir: &Path,
    store: &dyn SagaStore,
    manifest: &Manifest,
    elapsed: Option<Duration>,
) -> Result<Summary, RunError> {
    let records = store.load(&manifest.ids()).await?;
    let mut by_id: HashMap<String, SagaStatus> =
        records.iter().map(|r| (r.instance.id.clone(), r.instance.status)).collect();
    let sagas: Vec<(String, SagaStatus, Value)> = manifest
        .sagas
        .iter()
        .map(|(id, input)| {
            // A saga the orchestrator never created counts as unfinished.
            let status = by_id.remove(id).unwrap_or(SagaStatus::Running);
            (id.clone(), status, input.clone())
        })
        .collect();
    let report: InvariantReport = manifest.placement(dir).check_invariants(&sagas, &manifest.initial).await?;
    let count = |s: SagaStatus| sagas.iter().filter(|(_, st, _)| *st == s).count();
    let steps = records.iter().flat_map(|r| r.instance.steps.iter());
    let attempts: u64 = steps.clone().map(|s| u64::from(s.attempt) + u64::from(s.comp_attempt)).sum();
    let mut latencies: Vec<u64> = steps
        .filter(|s| matches!(s.status, StepStatus::Succeeded | StepStatus::Refused | StepStatus::Compensated))
        .filter_map(|s| Some(s.finished_at?.saturating_sub(s.started_at?)))
        .collect();
    latencies.sort_unstable();
    let elapsed = elapsed.unwrap_or_else(|| {
        let first = records.iter().map(|r| r.instance.started_at).min().unwrap_or(0);
        let last = records.iter().map(|r| r.instance.updated_at).max().unwrap_or(first);
        Duration::from_millis(last.saturating_sub(first))
    });
    let secs = elapsed.as_secs_f64().max(1e-9);
    let completed = count(SagaStatus::Completed);
    let compensated = count(SagaStatus::Compensated);
    Ok(Summary {
        sagas: sagas.len(),
        completed,
        compensated,
        needs_operator: count(SagaStatus::NeedsOperator),
        unfinished: count(SagaStatus::Running) + count(SagaStatus::Compensating),
        causes: crate::compensation_causes(records.iter().map(|r| &r.instance)),
        invariants_ok: report.ok,
        violations: report.violations,
        elapsed_s: round(secs, 2),
        sagas_per_s: round((completed + compensated) as f64 / secs, 2),
        steps: attempts,
        steps_per_s: round(attempts as f64 / secs, 2),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        data_dir: dir.display().to_string(),
        participants: match &manifest.participant_db {
            Some(url) => sqsaga_config::redact_url(url),
            None => "sqlite (data dir)".to_string(),
        },
    })
}

/// The most violations `Display` lists unless `{:#}` asks for all.
const VIOLATIONS_SHOWN: usize = 20;

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self;
        writeln!(f, "  sagas            {:>8}", s.sagas)?;
        writeln!(f, "  completed        {:>8}", s.completed)?;
        writeln!(f, "  compensated      {:>8}", s.compensated)?;
        writeln!(f, "  needs_operator   {:>8}", s.needs_operator)?;
        writeln!(f, "  unfinished       {:>8}", s.unfinished)?;
        for line in s.causes.to_string().lines() {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "  elapsed          {:>8.2} s", s.elapsed_s)?;
        writeln!(f, "  sagas/s          {:>8.1}", s.sagas_per_s)?;
        writeln!(f, "  steps/s          {:>8.1}", s.steps_per_s)?;
        writeln!(f, "  step latency p50 {:>8.0} ms", s.p50_ms)?;
        writeln!(f, "  step latency p99 {:>8.0} ms", s.p99_ms)?;
        writeln!(f, "  data dir         {}", s.data_dir)?;
        writeln!(f, "  participants     {}", s.participants)?;
        writeln!(f)?;
        if s.causes.timeout > 0 {
            writeln!(
                f,
                "WARNING: {} saga(s) compensated because of time (step timeout, deadline or expired in queue): \
                 that is capacity (a backlog, late or slow workers), not business",
                s.causes.timeout
            )?;
        }
        if s.invariants_ok {
            return write!(
                f,
                "invariants: OK (every saga finished; completed orders reserved, charged and confirmed; \
                 compensated orders left no trace; stock and money conserved)"
            );
        }
        write!(f, "invariants: VIOLATED ({} violation(s))", s.violations.len())?;
        let shown = if f.alternate() { s.violations.len() } else { VIOLATIONS_SHOWN };
        for v in s.violations.iter().take(shown) {
            write!(f, "\n  - {v}")?;
        }
        if s.violations.len() > shown {
            write!(f, "\n  ... and {} more (--verbose lists all)", s.violations.len() - shown)?;
        }
        Ok(())
    }
}

/// The `q` quantile of `sorted` (nearest rank).
pub fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
