//! The order saga's participants: inventory, payment and notification, each
//! a [`Participant`] over its own database — a SQLite file in the data
//! directory, or a schema of a PostgreSQL database ([`Placement`],
//! [`open_worker`]; the business decisions are shared, only the SQL
//! differs) — plus the demo's data generator and the invariant checker that
//! proves every order ended fully done or fully undone.
//!
//! The saga definition itself is `create_order.yaml` beside this crate; the
//! command and contract names here must match it. Saga inputs carry the
//! fields `order_id`, `sku`, `qty`, `account` and `amount` (cents).
//!
//! The participants know the worker runtime's `Participant` and nothing of
//! queues, the orchestrator or its store; [`run`] drives a demo run through
//! the ports (start requests in, saga records out), on a stack the binary
//! or a benchmark wires.

use std::path::{Path, PathBuf};

use sqsaga_sqlite::Sync;
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{Handler, Participant, WorkerError};

mod causes;
pub mod commands;
mod demo;
mod input;
mod invariants;
mod participants;
mod placement;
mod postgres;
mod rules;
pub mod run;

pub use causes::{Cause, CompensationCauses, compensation_causes};
pub use demo::{DemoData, fill_inventory, fill_payment, generate_orders, seed_data};
pub use invariants::{InvariantReport, check_invariants, check_invariants_in};
pub use participants::{
    INVENTORY_SCHEMA, NOTIFICATION_SCHEMA, PAYMENT_SCHEMA, inventory, notification, payment, register_inventory,
    register_notification, register_payment,
};
pub use placement::{Participants, Placement, WorkerKnobs, open_worker};
pub use postgres::{open_postgres, seed_postgres};
pub use rules::injected_failure;

/// Contracts, as the saga definition names them.
pub const INVENTORY_CONTRACT: &str = "inventory/v1";
pub const PAYMENT_CONTRACT: &str = "payment/v1";
pub const NOTIFICATION_CONTRACT: &str = "notification/v1";

/// The order saga definition, built in so the demo and benchmarks need no files.
pub const ORDER_SAGA: &str = include_str!("../create_order.yaml");

/// Service names: also their queue names and database file stems.
pub const SERVICES: [&str; 3] = ["inventory", "payment", "notification"];

/// `<data_dir>/<service>.db`.
pub fn database_path(data_dir: &Path, service: &str) -> PathBuf {
    data_dir.join(format!("{service}.db"))
}

/// Opens the participant of `service` in `data_dir`.
pub fn open_participant(
    data_dir: &Path,
    service: &str,
    sync: Sync,
    notification_failure_rate: f64,
    seed: u64,
) -> Result<Participant, OrderError> {
    placement::open_sqlite(&database_path(data_dir, service), service, sync, notification_failure_rate, seed)
}

/// The schema of `service`'s own tables (the barrier's is the adapter's).
pub fn schema(service: &str) -> Result<&'static str, OrderError> {
    match service {
        "inventory" => Ok(INVENTORY_SCHEMA),
        "payment" => Ok(PAYMENT_SCHEMA),
        "notification" => Ok(NOTIFICATION_SCHEMA),
        other => Err(OrderError::UnknownService(other.to_string())),
    }
}

/// Registers `service`'s handlers on a participant over any SQLite holder
/// (an in-memory database in tests and the simulator); the notification
/// fails at `notification_failure_rate`, drawn from `seed`.
pub fn register<D: ParticipantDb<Handler = dyn Handler>>(
    service: &str,
    participant: &mut Participant<D>,
    notification_failure_rate: f64,
    seed: u64,
) -> Result<(), OrderError> {
    match service {
        "inventory" => register_inventory(participant),
        "payment" => register_payment(participant),
        "notification" => register_notification(participant, notification_failure_rate, seed),
        other => return Err(OrderError::UnknownService(other.to_string())),
    }
    Ok(())
}

/// Loads `data`'s share for `service` (stock, accounts; nothing for the
/// notification) into its database, whose schema is [`schema`]`(service)`.
pub fn fill(service: &str, conn: &rusqlite::Connection, data: &DemoData) -> Result<(), rusqlite::Error> {
    match service {
        "inventory" => fill_inventory(conn, data),
        "payment" => fill_payment(conn, data),
        _ => Ok(()),
    }
}

/// Opens all three participants in `data_dir`, as `(service, participant)`.
pub fn participants(
    data_dir: &Path,
    sync: Sync,
    notification_failure_rate: f64,
    seed: u64,
) -> Result<Vec<(&'static str, Participant)>, OrderError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| OrderError::Io { path: data_dir.display().to_string(), cause: e.to_string() })?;
    SERVICES
        .iter()
        .map(|service| Ok((*service, open_participant(data_dir, service, sync, notification_failure_rate, seed)?)))
        .collect()
}

/// Errors of the order example.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("participant: {0}")]
    Worker(#[from] WorkerError),
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
    #[error("{path}: {cause}")]
    Sql { path: String, cause: String },
    #[error("unknown service `{0}`: the order saga's participants are inventory, payment, notification")]
    UnknownService(String),
    #[error("failure rate {0} is not a probability (0.0 to 1.0)")]
    BadFailureRate(f64),
}

impl OrderError {
    /// Only a busy database may pass on its own.
    pub fn is_retryable(&self) -> bool {
        match self {
            OrderError::Worker(e) => e.is_retryable(),
            _ => false,
        }
    }
}
