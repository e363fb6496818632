//! Typed handlers: a handler written over its own serde input and output
//! types instead of raw JSON. The saga input is deserialized before the
//! handler runs — a malformed one is a business refusal, since no retry can
//! fix it — and the output serialized after.
//!
//! [`typed`] wraps such a function as a SQLite [`Handler`]; handlers of other
//! databases (PostgreSQL's `PgHandler`) call [`CommandContext::input_as`]
//! and [`output`] themselves.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{CommandContext, Handler, HandlerError};

impl CommandContext {
    /// The saga input as a `T`. A malformed input is [`HandlerError::Refused`],
    /// naming the problem: retrying the same input cannot fix it.
    ///
    /// ```
    /// # use sqsaga_core::machine::Phase;
    /// # use sqsaga_worker::{CommandContext, HandlerError};
    /// #[derive(serde::Deserialize)]
    /// struct Parcel { parcel_id: String, weight_grams: u32 }
    ///
    /// # let ctx = |payload| CommandContext { saga_id: "s".into(), step: "book".into(), command: "shipping.book".into(),
    /// #     phase: Phase::Action, attempt: 1, payload, not_after: None, sent_at: None };
    /// let ok = ctx(serde_json::json!({"input": {"parcel_id": "p-1", "weight_grams": 900}}));
    /// let parcel: Parcel = ok.input_as()?;
    /// assert_eq!((parcel.parcel_id.as_str(), parcel.weight_grams), ("p-1", 900));
    ///
    /// let bad = ctx(serde_json::json!({"input": {"parcel_id": "p-1"}}));
    /// assert!(matches!(bad.input_as::<Parcel>(), Err(HandlerError::Refused(why)) if why.contains("weight_grams")));
    /// # Ok::<(), HandlerError>(())
    /// ```
    pub fn input_as<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        T::deserialize(self.input())
            .map_err(|e| HandlerError::Refused(format!("invalid input of `{}`: {e}", self.command)))
    }

    /// The output of an earlier step as a `T`, when the orchestrator sent it
    /// (`None` if it did not); a malformed one is a refusal.
    pub fn output_of_as<T: DeserializeOwned>(&self, step: &str) -> Result<Option<T>, HandlerError> {
        self.output_of(step)
            .map(|v| {
                T::deserialize(v).map_err(|e| {
                    HandlerError::Refused(format!("invalid output of step `{step}` for `{}`: {e}", self.command))
                })
            })
            .transpose()
    }
}

/// A handler's typed output as the JSON the barrier records and the reply
/// carries. Serialization fails only for types serde cannot represent as
/// JSON (a map with non-string keys): a bug, refused rather than retried.
pub fn output<O: Serialize>(value: &O) -> Result<Value, HandlerError> {
    serde_json::to_value(value).map_err(|e| HandlerError::Refused(format!("cannot encode the output: {e}")))
}

/// A SQLite handler over typed input and output: `f` gets the command's
/// local transaction, its context, and the saga input as an `I`; what it
/// returns is recorded in the barrier and sent back as the step's output.
///
/// ```
/// use rusqlite::{Transaction, params};
/// use serde::{Deserialize, Serialize};
/// use sqsaga_worker::{CommandContext, HandlerError, Participant, typed};
///
/// #[derive(Deserialize)]
/// struct Parcel { parcel_id: String, weight_grams: u32 }
///
/// #[derive(Serialize)]
/// struct Booking { courier: String }
///
/// fn book(tx: &Transaction<'_>, _ctx: &CommandContext, parcel: Parcel) -> Result<Booking, HandlerError> {
///     tx.execute("INSERT INTO bookings (parcel_id, grams) VALUES (?1, ?2)", params![parcel.parcel_id, parcel.weight_grams])
///         .map_err(|e| HandlerError::Transient(e.to_string()))?;
///     Ok(Booking { courier: "bike".into() })
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let schema = "CREATE TABLE IF NOT EXISTS bookings (parcel_id TEXT PRIMARY KEY, grams INTEGER NOT NULL);";
/// let mut p = Participant::open_with_schema(&dir.path().join("shipping.db"), sqsaga_sqlite::Sync::Normal, schema)?;
/// p.register("shipping/v1", "shipping.book", typed(book), None);
/// # Ok::<(), sqsaga_worker::WorkerError>(())
/// ```
pub fn typed<I, O, F>(f: F) -> Box<dyn Handler>
where
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
    F: Fn(&rusqlite::Transaction<'_>, &CommandContext, I) -> Result<O, HandlerError> + Send + Sync + 'static,
{
    Box::new(move |tx: &rusqlite::Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
        let input = ctx.input_as::<I>()?;
        output(&f(tx, ctx, input)?)
    })
}
