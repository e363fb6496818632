//! Where the order participants keep their databases, and opening them
//! there: [`Placement`] for the three of a demo run (SQLite files in the
//! data dir, or one PostgreSQL database with a schema per service), and
//! [`open_worker`] for the one a `sqsaga worker` process runs, chosen by
//! the `participant_db` setting.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqsaga_config::{DatabaseUrl, Settings};
use sqsaga_core::machine::SagaStatus;
use sqsaga_runtime::RuntimeError;
use sqsaga_sqlite::Sync;
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{AnyParticipant, Participant};

use crate::demo::DemoData;
use crate::invariants::check_state;
use crate::{InvariantReport, OrderError, SERVICES, database_path, inventory, notification, payment};

/// Where a demo run's three participants keep their databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `<dir>/<service>.db`.
    Sqlite { dir: PathBuf },
    /// One PostgreSQL database at `url`, each service in a schema named after it.
    Postgres { url: String },
}

/// The participants of a demo run, as the runtime's stack takes them.
pub type Participants = Vec<(String, Arc<dyn AnyParticipant>)>;

impl Placement {
    /// All three participants. `pollers` bounds each one's concurrent
    /// commands (the size of a PostgreSQL pool).
    pub async fn open_all(
        &self,
        sync: Sync,
        pollers: usize,
        failure_rate: f64,
        seed: u64,
    ) -> Result<Participants, OrderError> {
        let mut out = Participants::new();
        match self {
            Placement::Sqlite { dir } => {
                for (service, p) in crate::participants(dir, sync, failure_rate, seed)? {
                    out.push((service.to_string(), Arc::new(p)));
                }
            }
            Placement::Postgres { url } => {
                for service in SERVICES {
                    let p = crate::postgres::open_postgres(url, service, pollers, failure_rate, seed).await?;
                    out.push((service.to_string(), Arc::new(p)));
                }
            }
        }
        Ok(out)
    }

    /// Loads a run's initial data, starting fresh.
    pub async fn seed(&self, data: &DemoData) -> Result<(), OrderError> {
        match self {
            Placement::Sqlite { dir } => crate::seed_data(dir, data),
            Placement::Postgres { url } => crate::postgres::seed_postgres(url, data).await,
        }
    }

    /// [`crate::check_invariants`] against the databases here.
    pub async fn check_invariants(
        &self,
        sagas: &[(String, SagaStatus, Value)],
        initial: &DemoData,
    ) -> Result<InvariantReport, OrderError> {
        match self {
            Placement::Sqlite { dir } => crate::check_invariants(dir, sagas, initial),
            Placement::Postgres { url } => {
                Ok(check_state(&crate::postgres::read_state_postgres(url).await?, sagas, initial))
            }
        }
    }
}

/// Test and drill knobs of `sqsaga worker` (the demo participants' own).
#[derive(Debug, Clone, Default)]
pub struct WorkerKnobs {
    /// Probability that a notification attempt fails transiently.
    pub failure_rate: f64,
    /// Seed of those failures.
    pub seed: u64,
    /// Every handler sleeps this long inside its transaction first.
    pub handler_delay: Option<Duration>,
    /// Contracts whose handlers are not served.
    pub without_contract: Vec<String>,
}

/// The participant `sqsaga worker` runs: the order service `settings`
/// names, in the database `participant_db` names (a SQLite file; a
/// PostgreSQL database, in the service's schema) or else
/// `<data_dir>/<service>.db`, with `knobs` applied.
pub async fn open_worker(settings: &Settings, knobs: &WorkerKnobs) -> Result<Arc<dyn AnyParticipant>, RuntimeError> {
    let Some(service) = settings.service.as_deref() else {
        return Err(RuntimeError::config("no service: set --service, SQSAGA_SERVICE or `service` in the config file"));
    };
    if !SERVICES.contains(&service) {
        return Err(RuntimeError::config(format!(
            "service `{service}`: this binary implements {}",
            SERVICES.join(", ")
        )));
    }
    let failed = |e: OrderError| RuntimeError::Participant(e.to_string());
    let (rate, seed) = (knobs.failure_rate, knobs.seed);
    match &settings.participant_db {
        Some(DatabaseUrl::Postgres(url)) => {
            let p = crate::postgres::open_postgres(url, service, settings.concurrency, rate, seed).await;
            Ok(apply(p.map_err(failed)?, knobs))
        }
        Some(DatabaseUrl::Sqlite(path)) => {
            Ok(apply(open_sqlite(path, service, Sync::Full, rate, seed).map_err(failed)?, knobs))
        }
        None => {
            let path = database_path(&settings.data_dir, service);
            Ok(apply(open_sqlite(&path, service, Sync::Full, rate, seed).map_err(failed)?, knobs))
        }
    }
}

/// The SQLite participant of `service` in the file at `path`.
pub(crate) fn open_sqlite(
    path: &Path,
    service: &str,
    sync: Sync,
    failure_rate: f64,
    seed: u64,
) -> Result<Participant, OrderError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| OrderError::Io { path: dir.display().to_string(), cause: e.to_string() })?;
    }
    match service {
        "inventory" => inventory(path, sync),
        "payment" => payment(path, sync),
        "notification" => notification(path, sync, failure_rate, seed),
        other => Err(OrderError::UnknownService(other.to_string())),
    }
}

/// `knobs` applied to `p`, which then serves as any participant.
fn apply<D: ParticipantDb>(mut p: Participant<D>, knobs: &WorkerKnobs) -> Arc<dyn AnyParticipant> {
    if let Some(delay) = knobs.handler_delay {
        tracing::warn!(delay_ms = delay.as_millis() as u64, "Test knob --handler-delay: every handler sleeps first.");
        p.delay_handlers(delay);
    }
    for contract in &knobs.without_contract {
        let removed = p.remove_contract(contract);
        tracing::warn!(contract = %contract, removed, "Drill knob --without-contract: handlers of this contract are not served.");
    }
    tracing::info!(database = %p.db().describe(), "Participant database opened.");
    Arc::new(p)
}
