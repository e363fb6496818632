//! [`DynamoTx`]: what a [`crate::DynamoHandler`] writes through. DynamoDB
//! has no interactive transaction to hand a handler, so the handler gets
//! the client for its reads and this builder for its writes: it adds its
//! own `Put`/`Update`/`Delete`/`ConditionCheck` items, and the adapter sends
//! them in one `TransactWriteItems` together with the barrier item(s), or
//! not at all.
//!
//! The builder enforces DynamoDB's transaction limits as items are added
//! ([`MAX_TRANSACTION_ITEMS`] items, [`MAX_TRANSACTION_BYTES`] bytes), less
//! what the barrier takes, so a handler that would go over learns it from
//! [`DynamoTx::add`] with an error naming the limit, never from a cancelled
//! transaction at commit.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};
use serde_json::Value;
use sqsaga_aws::capacity::{item_size, value_size};
use sqsaga_worker::HandlerError;

/// Items one `TransactWriteItems` may hold (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Bytes the items of one transaction may add up to (DynamoDB's 4 MB).
pub const MAX_TRANSACTION_BYTES: u64 = 4 * 1024 * 1024;
/// Items a handler may add: the barrier takes one of the hundred (an action
/// or compensation writes only its own barrier item; the two-item barrier
/// writes — a null compensation, a fence — run no handler).
pub const HANDLER_ITEMS: usize = MAX_TRANSACTION_ITEMS - 1;

/// A handler's writes, sent with the barrier item in one transaction.
pub struct DynamoTx<'a> {
    client: &'a Client,
    /// The handler's items, in the order added.
    items: Vec<TransactWriteItem>,
    /// Per item: the refusal to record when its condition fails, if any.
    refusals: Vec<Option<String>>,
    /// Estimated bytes of `items` (see [`write_size`]).
    bytes: u64,
    /// Bytes the barrier keeps for itself (its item and the output it records
    /// are known only after the handler; this is the fixed part).
    reserved_bytes: u64,
    /// Set by the first add that went over a limit: the command is refused
    /// with it even if the handler ignored the error.
    overflow: Option<String>,
    /// For a compensation: what its action recorded.
    action_output: Option<Value>,
}

impl<'a> DynamoTx<'a> {
    pub(crate) fn new(client: &'a Client, action_output: Option<Value>, reserved_bytes: u64) -> Self {
        DynamoTx {
            client,
            items: Vec::new(),
            refusals: Vec::new(),
            bytes: 0,
            reserved_bytes,
            overflow: None,
            action_output,
        }
    }

    /// The DynamoDB client, for the handler's reads (`GetItem`, `Query`...).
    /// Reads are not part of the transaction: guard what a decision rests
    /// on with a condition on the item written (or a `ConditionCheck`).
    pub fn client(&self) -> &Client {
        self.client
    }

    /// For a compensation: the output its action recorded in the barrier
    /// (say, the reservation to release). `None` for an action.
    pub fn action_output(&self) -> Option<&Value> {
        self.action_output.as_ref()
    }

    /// Adds a write to the transaction. A failed condition on it cancels
    /// the whole transaction; the command then replies `Transient` (nothing
    /// written, the orchestrator retries): use [`DynamoTx::add_or_refuse`]
    /// when a failed condition is a business answer. `Err` (a refusal naming
    /// the limit) when the transaction would exceed DynamoDB's limits, or a
    /// transient error when the item could not be built.
    pub fn add(&mut self, item: impl IntoWriteItem) -> Result<(), HandlerError> {
        self.push(item, None)
    }

    /// Like [`DynamoTx::add`], but when this item's condition fails the
    /// command is refused with `reason` (recorded in the barrier, none of
    /// the handler's items written), as a refusal returned by the handler
    /// would be: "reserve only if `stock >= :n`, else refuse `out of stock`".
    pub fn add_or_refuse(&mut self, item: impl IntoWriteItem, reason: impl Into<String>) -> Result<(), HandlerError> {
        self.push(item, Some(reason.into()))
    }

    /// How many more items the handler may add.
    pub fn remaining(&self) -> usize {
        HANDLER_ITEMS.saturating_sub(self.items.len())
    }

    fn push(&mut self, item: impl IntoWriteItem, refusal: Option<String>) -> Result<(), HandlerError> {
        if let Some(overflow) = &self.overflow {
            return Err(HandlerError::Refused(overflow.clone()));
        }
        let item =
            item.into_write_item().map_err(|e| HandlerError::Transient(format!("cannot build the item: {e}")))?;
        if self.items.len() >= HANDLER_ITEMS {
            return Err(self.overflow(format!(
                "the handler adds more than {HANDLER_ITEMS} items to one DynamoDB transaction: TransactWriteItems \
                 holds at most {MAX_TRANSACTION_ITEMS} items and the barrier takes one"
            )));
        }
        let size = write_size(&item);
        if self.reserved_bytes + self.bytes + size > MAX_TRANSACTION_BYTES {
            return Err(self.overflow(format!(
                "the handler's items add up to more than DynamoDB's {} MB per transaction ({} bytes with this one, \
                 the barrier included)",
                MAX_TRANSACTION_BYTES / (1024 * 1024),
                self.reserved_bytes + self.bytes + size
            )));
        }
        self.bytes += size;
        self.items.push(item);
        self.refusals.push(refusal);
        Ok(())
    }

    fn overflow(&mut self, reason: String) -> HandlerError {
        self.overflow = Some(reason.clone());
        HandlerError::Refused(reason)
    }

    /// What the adapter sends: the items, their refusals, the estimated
    /// bytes, and the limit the handler hit, if any.
    pub(crate) fn finish(self) -> Written {
        Written { items: self.items, refusals: self.refusals, bytes: self.bytes, overflow: self.overflow }
    }
}

/// A handler's writes, once it returned.
pub(crate) struct Written {
    pub items: Vec<TransactWriteItem>,
    pub refusals: Vec<Option<String>>,
    pub bytes: u64,
    pub overflow: Option<String>,
}

/// Something a handler can add to its transaction: the four kinds of
/// transaction item (or one already wrapped), built or still a builder's
/// result.
pub trait IntoWriteItem {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError>;
}

impl IntoWriteItem for TransactWriteItem {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        Ok(self)
    }
}

impl IntoWriteItem for Put {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        Ok(TransactWriteItem::builder().put(self).build())
    }
}

impl IntoWriteItem for Update {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        Ok(TransactWriteItem::builder().update(self).build())
    }
}

impl IntoWriteItem for Delete {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        Ok(TransactWriteItem::builder().delete(self).build())
    }
}

impl IntoWriteItem for ConditionCheck {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        Ok(TransactWriteItem::builder().condition_check(self).build())
    }
}

impl<T: IntoWriteItem> IntoWriteItem for Result<T, BuildError> {
    fn into_write_item(self) -> Result<TransactWriteItem, BuildError> {
        self.and_then(IntoWriteItem::into_write_item)
    }
}

/// Estimated bytes an item puts into a transaction: what the request
/// carries of it (a `Put`'s item; an update's, delete's or check's key and
/// expression values), by DynamoDB's item-size rules. An update can grow
/// its item past this; DynamoDB enforces the real limit and the adapter
/// names it.
pub fn write_size(item: &TransactWriteItem) -> u64 {
    let values = |v: Option<&std::collections::HashMap<String, AttributeValue>>| -> u64 {
        v.map(|m| m.values().map(value_size).sum()).unwrap_or(0)
    };
    if let Some(p) = item.put() {
        item_size(p.item()) + values(p.expression_attribute_values())
    } else if let Some(u) = item.update() {
        item_size(u.key()) + values(u.expression_attribute_values())
    } else if let Some(d) = item.delete() {
        item_size(d.key()) + values(d.expression_attribute_values())
    } else if let Some(c) = item.condition_check() {
        item_size(c.key()) + values(c.expression_attribute_values())
    } else {
        0
    }
}

/// The item's table, for messages.
pub(crate) fn table_of(item: &TransactWriteItem) -> &str {
    if let Some(p) = item.put() {
        p.table_name()
    } else if let Some(u) = item.update() {
        u.table_name()
    } else if let Some(d) = item.delete() {
        d.table_name()
    } else if let Some(c) = item.condition_check() {
        c.table_name()
    } else {
        "?"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

    use super::*;

    fn client() -> Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        Client::from_conf(config)
    }

    fn put(n: usize, bytes: usize) -> Result<Put, BuildError> {
        Put::builder()
            .table_name("t")
            .item("id", AttributeValue::S(n.to_string()))
            .item("blob", AttributeValue::S("x".repeat(bytes)))
            .build()
    }

    #[test]
    fn the_hundredth_item_is_refused_naming_the_limit() {
        let client = client();
        let mut tx = DynamoTx::new(&client, None, 0);
        for n in 0..HANDLER_ITEMS {
            tx.add(put(n, 1)).unwrap();
        }
        assert_eq!(tx.remaining(), 0);
        let Err(HandlerError::Refused(reason)) = tx.add(put(99, 1)) else { panic!("the 100th item was taken") };
        assert!(reason.contains("more than 99 items") && reason.contains("at most 100"), "{reason}");
        let written = tx.finish();
        assert_eq!(written.items.len(), HANDLER_ITEMS);
        assert_eq!(written.overflow.as_deref(), Some(reason.as_str()));
    }

    #[test]
    fn items_over_four_megabytes_are_refused_naming_the_limit() {
        let client = client();
        let mut tx = DynamoTx::new(&client, None, 100);
        for n in 0..10 {
            tx.add(put(n, 400 * 1000)).unwrap();
        }
        let Err(HandlerError::Refused(reason)) = tx.add(put(10, 400 * 1000)) else { panic!("4.4 MB were taken") };
        assert!(reason.contains("4 MB"), "{reason}");
        // Once over, the command stays refused: smaller items do not sneak in.
        assert!(matches!(tx.add(put(11, 1)), Err(HandlerError::Refused(_))));
    }

    #[test]
    fn an_item_that_cannot_be_built_is_transient() {
        let client = client();
        let mut tx = DynamoTx::new(&client, None, 0);
        let Err(HandlerError::Transient(e)) = tx.add(Put::builder().build()) else { panic!("built") };
        assert!(e.contains("cannot build the item"), "{e}");
        assert_eq!(tx.finish().overflow, None);
    }
}
