//! The shipping service on PostgreSQL: the same three commands as the
//! SQLite handlers in `lib.rs`, with the same decisions ([`crate::courier_for`],
//! [`crate::check_weight`]), written as [`PgHandler`]s over the driver's own
//! transaction. Chosen when `participant_db` is a `postgres://` URL; the
//! table lives in the schema `shipping` of that database.

use async_trait::async_trait;
use serde_json::Value;
use sqsaga_postgres::{PgHandler, PostgresDb};
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{CommandContext, HandlerError, Participant, WorkerError, output};
use tokio_postgres::Transaction;

use crate::{Booking, CONTRACT, Cancelled, Dispatched, Parcel, SERVICE, check_weight, courier_for};

/// The service's table in PostgreSQL (the SQLite one's columns, PostgreSQL types).
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shipments (
    parcel_id    TEXT   PRIMARY KEY,
    address      TEXT   NOT NULL,
    weight_grams BIGINT NOT NULL,
    courier      TEXT   NOT NULL,
    status       TEXT   NOT NULL CHECK (status IN ('booked', 'cancelled', 'dispatched'))
);";

/// A database error inside a handler: the command is rolled back and retried.
fn transient(e: tokio_postgres::Error) -> HandlerError {
    HandlerError::Transient(format!("shipping database: {e}"))
}

/// `shipping.book` (see [`crate::book`]).
pub struct Book;

#[async_trait]
impl PgHandler for Book {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let parcel: Parcel = ctx.input_as()?;
        let courier = courier_for(parcel.weight_grams);
        tx.execute(
            "INSERT INTO shipments (parcel_id, address, weight_grams, courier, status) \
             VALUES ($1, $2, $3, $4, 'booked')",
            &[&parcel.parcel_id, &parcel.address, &i64::from(parcel.weight_grams), &courier],
        )
        .await
        .map_err(transient)?;
        output(&Booking { parcel_id: parcel.parcel_id, courier: courier.to_string() })
    }
}

/// `shipping.cancel` (see [`crate::cancel`]).
pub struct Cancel;

#[async_trait]
impl PgHandler for Cancel {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let parcel: Parcel = ctx.input_as()?;
        let n = tx
            .execute(
                "UPDATE shipments SET status = 'cancelled' WHERE parcel_id = $1 AND status = 'booked'",
                &[&parcel.parcel_id],
            )
            .await
            .map_err(transient)?;
        output(&Cancelled { parcel_id: parcel.parcel_id, cancelled: n == 1 })
    }
}

/// `shipping.dispatch` (see [`crate::dispatch`]).
pub struct Dispatch;

#[async_trait]
impl PgHandler for Dispatch {
    async fn handle(&self, tx: &Transaction<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        let parcel: Parcel = ctx.input_as()?;
        check_weight(&parcel)?;
        let booking: Option<Booking> = ctx.output_of_as("book_courier")?;
        let courier = booking.map(|b| b.courier).unwrap_or_else(|| "bike".to_string());
        // Locked: a cancellation of the same parcel waits for this dispatch.
        let row = tx
            .query_opt("SELECT status FROM shipments WHERE parcel_id = $1 FOR UPDATE", &[&parcel.parcel_id])
            .await
            .map_err(transient)?;
        let status: Option<String> = row.map(|r| r.try_get(0)).transpose().map_err(transient)?;
        if status.as_deref() != Some("booked") {
            return Err(HandlerError::Refused(format!("parcel {} has no booking", parcel.parcel_id)));
        }
        tx.execute("UPDATE shipments SET status = 'dispatched' WHERE parcel_id = $1", &[&parcel.parcel_id])
            .await
            .map_err(transient)?;
        output(&Dispatched { tracking: format!("{courier}-{}", parcel.parcel_id), parcel_id: parcel.parcel_id })
    }
}

/// The shipping participant in the schema `shipping` of the PostgreSQL
/// database at `url` (its table and the barrier's created if missing);
/// `pool_size` bounds its concurrent commands.
pub async fn participant(url: &str, pool_size: usize) -> Result<Participant<PostgresDb>, WorkerError> {
    let db = PostgresDb::connect(url, Some(SERVICE), SCHEMA, pool_size).await?;
    let mut p = Participant::new(db);
    p.register(CONTRACT, "shipping.book", Box::new(Book), Some(("shipping.cancel", Box::new(Cancel))));
    p.register(CONTRACT, "shipping.dispatch", Box::new(Dispatch), None);
    Ok(p)
}

/// The status of `parcel_id`'s shipment, if any.
pub async fn shipment_status(p: &Participant<PostgresDb>, parcel_id: &str) -> Result<Option<String>, WorkerError> {
    let describe = || p.db().describe();
    let client = p.db().pool().get().await.map_err(|e| WorkerError::Database {
        database: describe(),
        cause: e.to_string(),
        retryable: true,
    })?;
    let row = client
        .query_opt("SELECT status FROM shipments WHERE parcel_id = $1", &[&parcel_id])
        .await
        .map_err(|e| sqsaga_postgres::db_error(&describe(), &e))?;
    row.map(|r| r.try_get(0)).transpose().map_err(|e| sqsaga_postgres::db_error(&describe(), &e))
}
