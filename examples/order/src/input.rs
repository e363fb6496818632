//! Reading an order out of a saga input, with errors that name the field.
//! A malformed order is a business refusal: retrying cannot fix it.

use serde_json::Value;
use sqsaga_worker::HandlerError;

/// The fields of a saga input the participants use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub order_id: String,
    pub sku: String,
    pub qty: i64,
    pub account: String,
    /// Cents.
    pub amount: i64,
}

pub(crate) fn text(input: &Value, field: &str) -> Result<String, String> {
    match input.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(format!("invalid order: `{field}` must be a non-empty string, got {other}")),
        None => Err(format!("invalid order: missing `{field}`")),
    }
}

pub(crate) fn positive(input: &Value, field: &str) -> Result<i64, String> {
    match input.get(field).and_then(Value::as_i64) {
        Some(n) if n > 0 => Ok(n),
        Some(n) => Err(format!("invalid order: `{field}` must be positive, got {n}")),
        None => Err(format!("invalid order: missing or non-integer `{field}`")),
    }
}

impl Order {
    /// Every field, or the first problem (for the checker, which needs all).
    pub(crate) fn parse(input: &Value) -> Result<Order, String> {
        Ok(Order {
            order_id: text(input, "order_id")?,
            sku: text(input, "sku")?,
            qty: positive(input, "qty")?,
            account: text(input, "account")?,
            amount: positive(input, "amount")?,
        })
    }
}

/// A text field of a handler's input, refusing a malformed one.
pub(crate) fn field(input: &Value, name: &str) -> Result<String, HandlerError> {
    text(input, name).map_err(HandlerError::Refused)
}

/// A positive integer field of a handler's input, refusing a malformed one.
pub(crate) fn amount(input: &Value, name: &str) -> Result<i64, HandlerError> {
    positive(input, name).map_err(HandlerError::Refused)
}
