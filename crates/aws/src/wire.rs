//! The SQS wire details both the queue adapter (`sqs.rs`) and its batchers
//! (`batch.rs`) need: the client context, error codes and their mapping to
//! the port's errors, and message attributes and delays as SQS takes them.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::MessageAttributeValue;
use sqsaga_queue::{OutgoingMessage, QueueError};

use crate::error::Failure;

/// SQS: at most 10 message attributes per message.
pub const MAX_MESSAGE_ATTRIBUTES: usize = 10;
/// Error codes meaning "no such queue" (query and JSON protocols).
pub(crate) const NO_SUCH_QUEUE: &[&str] = &["AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"];
/// Error codes meaning "this receipt handle is no longer current".
pub(crate) const STALE_RECEIPT: &[&str] = &[
    "ReceiptHandleIsInvalid",
    "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
];
/// What the batcher tasks need: no reference back to the queue, so they end
/// when the queue is dropped (their channel closes).
#[derive(Clone)]
pub(crate) struct Ctx {
    pub client: Client,
    /// Where requests go, for error messages ("cannot reach SQS at ...").
    pub endpoint: Arc<str>,
}

impl Ctx {
    pub(crate) fn failure<E>(&self, e: &aws_sdk_sqs::error::SdkError<E>) -> Failure
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        Failure::of(e, "SQS", &self.endpoint)
    }
}

/// The generic mapping of a failed SQS call about `queue`.
pub(crate) fn queue_error(f: Failure, queue: &str) -> QueueError {
    if f.is(NO_SUCH_QUEUE) {
        QueueError::NoSuchQueue(queue.to_string())
    } else if f.is(STALE_RECEIPT) {
        QueueError::StaleReceipt(f.message)
    } else {
        f.into_queue()
    }
}

/// The port's limits plus SQS's own: at most 10 attributes, names SQS
/// accepts, non-empty values.
pub(crate) fn check_message(m: &OutgoingMessage) -> Result<(), QueueError> {
    m.check()?;
    if m.attributes.len() > MAX_MESSAGE_ATTRIBUTES {
        return Err(QueueError::Invalid(format!(
            "{} message attributes: SQS allows at most {MAX_MESSAGE_ATTRIBUTES}",
            m.attributes.len()
        )));
    }
    for (name, value) in &m.attributes {
        let lower = name.to_ascii_lowercase();
        let ok = !name.is_empty()
            && name.len() <= 256
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !lower.starts_with("aws.")
            && !lower.starts_with("amazon.");
        if !ok {
            return Err(QueueError::Invalid(format!(
                "message attribute name `{name}` is not valid for SQS (letters, digits, `_`, `-`, `.`; at most 256; \
                 not starting with `AWS.` or `Amazon.`)"
            )));
        }
        if value.is_empty() {
            return Err(QueueError::Invalid(format!("message attribute `{name}` is empty: SQS requires a value")));
        }
    }
    Ok(())
}

/// Our attributes as SQS String attributes.
pub(crate) fn message_attributes(m: &OutgoingMessage) -> Result<HashMap<String, MessageAttributeValue>, QueueError> {
    m.attributes
        .iter()
        .map(|(k, v)| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v.clone())
                .build()
                .map(|value| (k.clone(), value))
                .map_err(|e| QueueError::Invalid(format!("message attribute `{k}`: {e}")))
        })
        .collect()
}

pub(crate) fn delay_seconds(m: &OutgoingMessage) -> i32 {
    m.delay.as_secs().min(sqsaga_queue::MAX_DELAY.as_secs()) as i32
}
