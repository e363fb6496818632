//! The shipping service: the example participant of `docs/participants.md`,
//! written the way a service outside this repository would write one.
//!
//! It keeps one table of its own (`shipments`) next to the barrier in its
//! own database — SQLite here, PostgreSQL in [`postgres`] when
//! `participant_db` is a `postgres://` URL, the decisions shared
//! ([`courier_for`], [`check_weight`]) — registers three commands of contract `shipping/v1` —
//! `shipping.book` with its compensation `shipping.cancel`, and
//! `shipping.dispatch` — over typed serde input and output, and runs as its
//! own binary (`shipping-worker`, `src/main.rs`) through the runtime's
//! [`run_worker`], with the standard configuration, probes and shutdown.
//! The saga that uses it is `ship_parcel.yaml` beside this crate.
//!
//! It knows the worker runtime and the runtime library, nothing of the
//! order example.

pub mod postgres;

use std::path::Path;
use std::sync::Arc;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use sqsaga_config::DatabaseUrl;
use sqsaga_runtime::{Overrides, RuntimeError, run_worker};
use sqsaga_worker::{AnyParticipant, CommandContext, HandlerError, Participant, WorkerError, typed};

/// The service name: its queue, and `service` in the saga definition.
pub const SERVICE: &str = "shipping";

/// The handler contract its commands belong to.
pub const CONTRACT: &str = "shipping/v1";

/// The saga definition that uses it (`ship_parcel.yaml`).
pub const SHIP_PARCEL: &str = include_str!("../ship_parcel.yaml");

/// The heaviest parcel a courier takes; a heavier one is refused at dispatch.
pub const MAX_WEIGHT_GRAMS: u32 = 30_000;

/// The service's own table, created next to the barrier's.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shipments (
    parcel_id    TEXT    PRIMARY KEY,
    address      TEXT    NOT NULL,
    weight_grams INTEGER NOT NULL,
    courier      TEXT    NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('booked', 'cancelled', 'dispatched'))
);";

/// The saga input, as every shipping command reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Parcel {
    pub parcel_id: String,
    pub address: String,
    pub weight_grams: u32,
}

/// What `shipping.book` returns: the step's output, which later commands receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    pub parcel_id: String,
    pub courier: String,
}

/// What `shipping.dispatch` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispatched {
    pub parcel_id: String,
    pub tracking: String,
}

/// What `shipping.cancel` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cancelled {
    pub parcel_id: String,
    /// `false` when nothing was booked any more.
    pub cancelled: bool,
}

/// A database error inside a handler: the command is rolled back and retried.
fn transient(e: rusqlite::Error) -> HandlerError {
    HandlerError::Transient(format!("shipping database: {e}"))
}

/// The courier a parcel gets: a bike up to 5 kg, a van above.
pub fn courier_for(weight_grams: u32) -> &'static str {
    if weight_grams <= 5_000 { "bike" } else { "van" }
}

/// Whether a courier takes the parcel: a refusal over [`MAX_WEIGHT_GRAMS`].
pub fn check_weight(parcel: &Parcel) -> Result<(), HandlerError> {
    if parcel.weight_grams > MAX_WEIGHT_GRAMS {
        return Err(HandlerError::Refused(format!(
            "parcel {} weighs {} g, over the courier's {MAX_WEIGHT_GRAMS} g",
            parcel.parcel_id, parcel.weight_grams
        )));
    }
    Ok(())
}

/// `shipping.book`: books a courier ([`courier_for`]).
pub fn book(tx: &Transaction<'_>, _ctx: &CommandContext, parcel: Parcel) -> Result<Booking, HandlerError> {
    let courier = courier_for(parcel.weight_grams);
    tx.execute(
        "INSERT INTO shipments (parcel_id, address, weight_grams, courier, status) VALUES (?1, ?2, ?3, ?4, 'booked')",
        params![parcel.parcel_id, parcel.address, parcel.weight_grams, courier],
    )
    .map_err(transient)?;
    Ok(Booking { parcel_id: parcel.parcel_id, courier: courier.to_string() })
}

/// `shipping.cancel`, the compensation of `shipping.book`. The barrier runs
/// it only if the booking ran, and at most once.
pub fn cancel(tx: &Transaction<'_>, _ctx: &CommandContext, parcel: Parcel) -> Result<Cancelled, HandlerError> {
    let n = tx
        .execute(
            "UPDATE shipments SET status = 'cancelled' WHERE parcel_id = ?1 AND status = 'booked'",
            [&parcel.parcel_id],
        )
        .map_err(transient)?;
    Ok(Cancelled { parcel_id: parcel.parcel_id, cancelled: n == 1 })
}

/// `shipping.dispatch`: hands the parcel to the courier `book_courier`
/// booked, unless it is over [`MAX_WEIGHT_GRAMS`] — a business refusal,
/// after which the saga cancels the booking.
pub fn dispatch(tx: &Transaction<'_>, ctx: &CommandContext, parcel: Parcel) -> Result<Dispatched, HandlerError> {
    check_weight(&parcel)?;
    // The output of the earlier step, as the orchestrator sent it.
    let booking: Option<Booking> = ctx.output_of_as("book_courier")?;
    let courier = booking.map(|b| b.courier).unwrap_or_else(|| "bike".to_string());
    let status: Option<String> = tx
        .query_row("SELECT status FROM shipments WHERE parcel_id = ?1", [&parcel.parcel_id], |r| r.get(0))
        .optional()
        .map_err(transient)?;
    if status.as_deref() != Some("booked") {
        return Err(HandlerError::Refused(format!("parcel {} has no booking", parcel.parcel_id)));
    }
    tx.execute("UPDATE shipments SET status = 'dispatched' WHERE parcel_id = ?1", [&parcel.parcel_id])
        .map_err(transient)?;
    Ok(Dispatched { tracking: format!("{courier}-{}", parcel.parcel_id), parcel_id: parcel.parcel_id })
}

/// The shipping participant over the SQLite database at `path`: its
/// table, the barrier, and the three commands.
pub fn participant(path: &Path, sync: sqsaga_sqlite::Sync) -> Result<Participant, WorkerError> {
    let mut p = Participant::open_with_schema(path, sync, SCHEMA)?;
    p.register(CONTRACT, "shipping.book", typed(book), Some(("shipping.cancel", typed(cancel))));
    p.register(CONTRACT, "shipping.dispatch", typed(dispatch), None);
    Ok(p)
}

/// The status of `parcel_id`'s shipment (`booked`, `cancelled`, `dispatched`), if any.
pub async fn shipment_status(p: &Participant, parcel_id: &str) -> Result<Option<String>, WorkerError> {
    let id = parcel_id.to_string();
    p.query(move |tx| tx.query_row("SELECT status FROM shipments WHERE parcel_id = ?1", [&id], |r| r.get(0)).optional())
        .await
}

/// Where the database is: `participant_db` (`sqlite:<path>` or a
/// `postgres://` URL), else the SQLite file `<data_dir>/shipping.db`.
pub fn database(settings: &sqsaga_config::Settings) -> DatabaseUrl {
    settings
        .participant_db
        .clone()
        .unwrap_or_else(|| DatabaseUrl::Sqlite(settings.data_dir.join(format!("{SERVICE}.db"))))
}

/// The shipping participant in the database `participant_db` names
/// ([`database`]): the SQLite file (its directory created), or the schema
/// `shipping` of the PostgreSQL database with `pool_size` connections.
pub async fn open(db: &DatabaseUrl, pool_size: usize) -> Result<Arc<dyn AnyParticipant>, RuntimeError> {
    match db {
        DatabaseUrl::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| RuntimeError::File {
                    what: "cannot create the directory of",
                    path: path.clone(),
                    source,
                })?;
            }
            Ok(Arc::new(participant(path, sqsaga_sqlite::Sync::Full)?))
        }
        DatabaseUrl::Postgres(url) => Ok(Arc::new(postgres::participant(url, pool_size).await?)),
    }
}

/// The `shipping-worker` binary: settings from `overrides`, the
/// environment and the config file (service `shipping`), logging, the
/// participant, then [`run_worker`] until SIGTERM or SIGINT.
pub async fn run(overrides: Overrides) -> Result<(), RuntimeError> {
    // Before anything slow: siblings started together report the same start.
    let started_at = sqsaga_core::clock::now_ms();
    let settings = sqsaga_runtime::resolve(&Overrides { service: Some(SERVICE.to_string()), ..overrides })?;
    let otlp = settings.otlp_endpoint.as_deref().map(|endpoint| (endpoint, SERVICE));
    sqsaga_runtime::logging::init_process(settings.log_level.as_str(), otlp)
        .map_err(|e| RuntimeError::config(e.to_string()))?;
    let shutdown = sqsaga_runtime::on_signals();
    let participant = open(&database(&settings), settings.concurrency.max(1) * 2).await?;
    let listener = sqsaga_runtime::bind(settings.http_addr).await?;
    run_worker(settings, participant, listener, shutdown, started_at).await
}
