//! The order participants' business decisions, shared by every database:
//! each command reads a few facts (what a handler looks up in its own
//! tables), decides here, and writes what the decision says. The SQLite
//! handlers (`participants.rs`) and the PostgreSQL ones (`postgres.rs`)
//! differ only in SQL text; a refusal, its wording and every output are
//! decided once, in this file, which does no IO.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqsaga_worker::{CommandContext, HandlerError};

use crate::input::{amount, field};

/// `inventory.reserve`: hold `qty` of `sku` for `order_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reserve {
    pub order_id: String,
    pub sku: String,
    pub qty: i64,
}

impl Reserve {
    pub fn parse(ctx: &CommandContext) -> Result<Reserve, HandlerError> {
        let input = ctx.input();
        Ok(Reserve { order_id: field(input, "order_id")?, sku: field(input, "sku")?, qty: amount(input, "qty")? })
    }

    /// `held`: the status of this order's reservation, if it has one;
    /// `available`: the sku's stock, if the sku exists. `Ok` means: take
    /// `qty` off the shelf and record the reservation.
    pub fn decide(&self, held: Option<&str>, available: Option<i64>) -> Result<(), HandlerError> {
        let (order_id, sku, qty) = (&self.order_id, &self.sku, self.qty);
        if let Some(status) = held {
            return Err(HandlerError::Refused(format!("order {order_id} already has a reservation ({status})")));
        }
        let Some(available) = available else {
            return Err(HandlerError::Refused(format!("unknown sku {sku}")));
        };
        if available < qty {
            return Err(HandlerError::Refused(format!("out of stock: sku {sku} has {available}, order wants {qty}")));
        }
        Ok(())
    }

    pub fn output(&self) -> Value {
        json!({"reservation": self.order_id, "sku": self.sku, "qty": self.qty})
    }
}

/// `inventory.release` and `payment.refund` undo what their order holds,
/// if anything: the order id is all they read from the input.
pub(crate) fn order_id(ctx: &CommandContext) -> Result<String, HandlerError> {
    field(ctx.input(), "order_id")
}

/// `inventory.release`'s output: `held` is the order's active reservation
/// `(sku, qty)`, if any (none: nothing to put back).
pub(crate) fn released(held: Option<&(String, i64)>) -> Value {
    match held {
        Some((sku, qty)) => json!({"released": qty, "sku": sku}),
        None => json!({"released": 0}),
    }
}

/// `payment.charge`: move `cents` from `account` to the merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    pub order_id: String,
    pub account: String,
    pub cents: i64,
}

impl Charge {
    pub fn parse(ctx: &CommandContext) -> Result<Charge, HandlerError> {
        let input = ctx.input();
        Ok(Charge {
            order_id: field(input, "order_id")?,
            account: field(input, "account")?,
            cents: amount(input, "amount")?,
        })
    }

    /// `charged`: the status of this order's charge, if it has one;
    /// `balance`: the account's, if the account exists. `Ok` means: debit
    /// the account, credit the merchant, record the charge.
    pub fn decide(&self, charged: Option<&str>, balance: Option<i64>) -> Result<(), HandlerError> {
        if let Some(status) = charged {
            return Err(HandlerError::Refused(format!("order {} already has a charge ({status})", self.order_id)));
        }
        let Some(balance) = balance else {
            return Err(HandlerError::Refused(format!("card declined: unknown account {}", self.account)));
        };
        if balance < self.cents {
            return Err(HandlerError::Refused("card declined: insufficient funds".to_string()));
        }
        Ok(())
    }

    pub fn output(&self) -> Value {
        json!({"charge": self.order_id, "amount": self.cents})
    }
}

/// `payment.refund`'s output: `charged` is the order's active charge
/// `(account, cents)`, if any.
pub(crate) fn refunded(charged: Option<&(String, i64)>) -> Value {
    json!({"refunded": charged.map_or(0, |(_, cents)| *cents)})
}

/// `notification.send`: the order to confirm, unless this attempt is one
/// the run's failure rate makes fail ([`injected_failure`]).
pub(crate) fn send(ctx: &CommandContext, seed: u64, failure_rate: f64) -> Result<String, HandlerError> {
    let order_id = order_id(ctx)?;
    if injected_failure(seed, &order_id, ctx.attempt, failure_rate) {
        return Err(HandlerError::Transient("mail server unavailable (injected failure)".to_string()));
    }
    Ok(order_id)
}

/// `notification.send`'s output.
pub(crate) fn sent(order_id: &str) -> Value {
    json!({"confirmation": order_id})
}

/// Whether attempt `attempt` of order `order_id`'s notification fails, at
/// `rate`, for the run seeded with `seed`: a draw from an RNG seeded with the
/// three, so it depends on nothing else.
pub fn injected_failure(seed: u64, order_id: &str, attempt: u32, rate: f64) -> bool {
    // FNV-1a over the order id and attempt, mixed with the run's seed: a
    // stable value (std's hasher may change between Rust releases).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in order_id.bytes().chain(attempt.to_le_bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let draw: f64 = StdRng::seed_from_u64(seed ^ h).random();
    draw < rate
}

/// A database error inside a handler: rolled back, the orchestrator retries.
pub(crate) fn transient<E: std::fmt::Display>(service: &'static str) -> impl Fn(E) -> HandlerError {
    move |e| HandlerError::Transient(format!("{service} database: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(r: Result<(), HandlerError>) -> String {
        match r {
            Err(HandlerError::Refused(reason)) => reason,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn reserve_refuses_duplicates_unknown_skus_and_short_stock() {
        let r = Reserve { order_id: "o-1".into(), sku: "sku-a".into(), qty: 3 };
        assert_eq!(r.decide(None, Some(3)), Ok(()));
        assert_eq!(refusal(r.decide(Some("released"), Some(9))), "order o-1 already has a reservation (released)");
        assert_eq!(refusal(r.decide(None, None)), "unknown sku sku-a");
        assert_eq!(refusal(r.decide(None, Some(2))), "out of stock: sku sku-a has 2, order wants 3");
    }

    #[test]
    fn charge_refuses_duplicates_unknown_accounts_and_short_balances() {
        let c = Charge { order_id: "o-1".into(), account: "acct-x".into(), cents: 500 };
        assert_eq!(c.decide(None, Some(500)), Ok(()));
        assert_eq!(refusal(c.decide(Some("charged"), Some(900))), "order o-1 already has a charge (charged)");
        assert_eq!(refusal(c.decide(None, None)), "card declined: unknown account acct-x");
        assert_eq!(refusal(c.decide(None, Some(499))), "card declined: insufficient funds");
    }

    #[test]
    fn undo_outputs_say_what_was_put_back() {
        assert_eq!(released(None), json!({"released": 0}));
        assert_eq!(released(Some(&("sku-a".into(), 2))), json!({"released": 2, "sku": "sku-a"}));
        assert_eq!(refunded(None), json!({"refunded": 0}));
        assert_eq!(refunded(Some(&("acct-x".into(), 700))), json!({"refunded": 700}));
    }
}
