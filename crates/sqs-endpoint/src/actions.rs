//! The supported SQS actions over the `Queue` port: each takes the request
//! body (JSON) and returns the response body or an [`SqsError`].
//!
//! Where the port and SQS differ, the endpoint follows SQS: deleting with a
//! receipt handle that is no longer current succeeds without deleting (the
//! message was received again), as SQS documents. What the port cannot
//! express is refused or said: `Binary` message attributes are refused (the
//! queues store string values), `Number` attributes come back as `String`,
//! and the `MessageId` a send returns is not the id a receive shows (the
//! port does not return ids).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use sqsaga_queue::{MAX_BATCH, MAX_DELAY, MAX_MESSAGE_BYTES, MAX_WAIT, OutgoingMessage, Queue, QueueError, Receive};
use tokio_util::sync::CancellationToken;

use crate::error::SqsError;
use crate::md5;
use crate::wire::{
    AttributeValue, BatchResult, ChangeMessageVisibility, DeleteMessage, Done, Failed, GetQueueAttributes, GetQueueUrl,
    Message, ReceiptBatch, ReceiptEntry, ReceiveMessage, SendEntry, SendMessage, SendMessageBatch, Sent,
};

/// SQS: a visibility timeout is at most 12 hours.
const MAX_VISIBILITY_S: i64 = 12 * 3600;
/// SQS: at most 10 message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// SQS: queue names and batch entry ids are at most 80 characters.
const MAX_NAME: usize = 80;

/// The actions served; any other `AmazonSQS.*` action is `UnsupportedOperation`.
pub const SUPPORTED: &[&str] = &[
    "GetQueueUrl",
    "ReceiveMessage",
    "SendMessage",
    "SendMessageBatch",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "GetQueueAttributes",
];

/// Actions of the SQS API this endpoint knows but does not serve (the
/// orchestrator creates the queues; operators use `sqsaga dlq`).
const KNOWN: &[&str] = &[
    "AddPermission",
    "CancelMessageMoveTask",
    "CreateQueue",
    "DeleteQueue",
    "ListDeadLetterSourceQueues",
    "ListMessageMoveTasks",
    "ListQueueTags",
    "ListQueues",
    "PurgeQueue",
    "RemovePermission",
    "SetQueueAttributes",
    "StartMessageMoveTask",
    "TagQueue",
    "UntagQueue",
];

/// What an action needs besides its body.
pub struct Ctx {
    pub queue: Arc<dyn Queue>,
    /// `http://<host>/<account id>`: queue URLs are this plus `/<name>`.
    pub base_url: String,
    /// For queue ARNs.
    pub account_id: String,
    /// From the request's credential scope, for queue ARNs.
    pub region: String,
    /// Ends long polls early when the process stops.
    pub shutdown: CancellationToken,
}

/// A request decoded and checked as SQS checks it, before any queue is
/// touched: the pure half of [`dispatch`]. Entries of a batch that fail their
/// own checks stay in the batch with their error (SQS answers them in
/// `Failed`); anything wrong with the request as a whole is the error of
/// [`decode`].
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    GetQueueUrl {
        queue: String,
    },
    ReceiveMessage {
        queue: String,
        receive: Receive,
        /// `AttributeNames` and `MessageSystemAttributeNames` together.
        system_attributes: BTreeSet<String>,
        /// `MessageAttributeNames` (names, `All`, `.*`, `prefix.*`).
        message_attribute_names: Vec<String>,
    },
    SendMessage {
        queue: String,
        message: Checked,
    },
    SendMessageBatch {
        queue: String,
        /// By entry id, in request order.
        entries: Vec<(String, Result<Checked, SqsError>)>,
    },
    DeleteMessage {
        queue: String,
        receipt: String,
    },
    DeleteMessageBatch {
        queue: String,
        /// Entry id and receipt handle (`None`: the entry had none).
        entries: Vec<(String, Option<String>)>,
    },
    ChangeMessageVisibility {
        queue: String,
        change: VisibilityChange,
    },
    ChangeMessageVisibilityBatch {
        queue: String,
        /// Entry id and its change, or why it has none.
        entries: Vec<(String, Result<VisibilityChange, SqsError>)>,
    },
    GetQueueAttributes {
        queue: String,
        /// Every name is one of the SQS API's queue attributes.
        attribute_names: Vec<String>,
    },
}

/// A message that passed SQS's checks, with the digest of its attributes as
/// the client computes it (with the data types it sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub message: OutgoingMessage,
    pub md5_of_message_attributes: Option<String>,
}

/// A new visibility timeout for one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibilityChange {
    pub receipt: String,
    pub timeout: Duration,
}

/// Runs `action` on `body`.
pub async fn dispatch(action: &str, body: &[u8], ctx: &Ctx) -> Result<Value, SqsError> {
    execute(decode(action, body)?, ctx).await
}

/// Decodes and checks the body of `action` (pure; see [`Request`]).
pub fn decode(action: &str, body: &[u8]) -> Result<Request, SqsError> {
    Ok(match action {
        "GetQueueUrl" => {
            let request: GetQueueUrl = parse(body)?;
            let queue = required(request.queue_name, "QueueName")?;
            if !is_name(&queue) {
                return Err(SqsError::queue_does_not_exist(format!("The specified queue `{queue}` does not exist.")));
            }
            Request::GetQueueUrl { queue }
        }
        "ReceiveMessage" => {
            let request: ReceiveMessage = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let max = in_range(request.max_number_of_messages, "MaxNumberOfMessages", 1, 10, 1)?;
            let wait = in_range(request.wait_time_seconds, "WaitTimeSeconds", 0, 20, 0)?;
            let mut receive = Receive::up_to(usize::try_from(max).unwrap_or(1)).wait(seconds(wait).min(MAX_WAIT));
            if let Some(v) = request.visibility_timeout {
                receive = receive.visibility(seconds(in_range(Some(v), "VisibilityTimeout", 0, MAX_VISIBILITY_S, 0)?));
            }
            let system_attributes =
                request.attribute_names.into_iter().chain(request.message_system_attribute_names).collect();
            Request::ReceiveMessage {
                queue,
                receive,
                system_attributes,
                message_attribute_names: request.message_attribute_names,
            }
        }
        "SendMessage" => {
            let request: SendMessage = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let message = outgoing(request.message_body, request.delay_seconds, request.message_attributes)?;
            Request::SendMessage { queue, message }
        }
        "SendMessageBatch" => {
            let request: SendMessageBatch = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let ids = check_entries(request.entries.iter().map(|e| e.id.as_ref()))?;
            let total: usize = request.entries.iter().map(entry_size).sum();
            if total > MAX_MESSAGE_BYTES {
                return Err(SqsError::batch_too_long(format!(
                    "Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes."
                )));
            }
            let entries = ids
                .into_iter()
                .zip(request.entries)
                .map(|(id, e)| (id, outgoing(e.message_body, e.delay_seconds, e.message_attributes)))
                .collect();
            Request::SendMessageBatch { queue, entries }
        }
        "DeleteMessage" => {
            let request: DeleteMessage = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let receipt = required(request.receipt_handle, "ReceiptHandle")?;
            Request::DeleteMessage { queue, receipt }
        }
        "DeleteMessageBatch" => {
            let request: ReceiptBatch = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let ids = check_entries(request.entries.iter().map(|e| e.id.as_ref()))?;
            let entries = ids.into_iter().zip(request.entries).map(|(id, e)| (id, e.receipt_handle)).collect();
            Request::DeleteMessageBatch { queue, entries }
        }
        "ChangeMessageVisibility" => {
            let request: ChangeMessageVisibility = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let change = visibility_change(request.receipt_handle, request.visibility_timeout)?;
            Request::ChangeMessageVisibility { queue, change }
        }
        "ChangeMessageVisibilityBatch" => {
            let request: ReceiptBatch = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            let ids = check_entries(request.entries.iter().map(|e| e.id.as_ref()))?;
            let entries = ids
                .into_iter()
                .zip(request.entries)
                .map(|(id, ReceiptEntry { receipt_handle, visibility_timeout, .. })| {
                    (id, visibility_change(receipt_handle, visibility_timeout))
                })
                .collect();
            Request::ChangeMessageVisibilityBatch { queue, entries }
        }
        "GetQueueAttributes" => {
            let request: GetQueueAttributes = parse(body)?;
            let queue = queue_name(request.queue_url)?;
            if let Some(bad) = request.attribute_names.iter().find(|n| !QUEUE_ATTRIBUTES.contains(&n.as_str())) {
                return Err(SqsError::invalid_attribute_name(format!("Unknown Attribute {bad}.")));
            }
            Request::GetQueueAttributes { queue, attribute_names: request.attribute_names }
        }
        known if KNOWN.contains(&known) => {
            return Err(SqsError::unsupported_operation(format!(
                "{known} is not supported by the sqsaga embedded backend's SQS endpoint (supported: {}).",
                SUPPORTED.join(", ")
            )));
        }
        other => return Err(SqsError::unknown_operation(format!("Unknown SQS action `{other}`."))),
    })
}

/// Carries out a decoded request on the queues.
async fn execute(request: Request, ctx: &Ctx) -> Result<Value, SqsError> {
    match request {
        Request::GetQueueUrl { queue } => get_queue_url(&queue, ctx).await,
        Request::ReceiveMessage { queue, receive, system_attributes, message_attribute_names } => {
            receive_message(&queue, receive, &system_attributes, &message_attribute_names, ctx).await
        }
        Request::SendMessage { queue, message } => send_message(&queue, message, ctx).await,
        Request::SendMessageBatch { queue, entries } => send_message_batch(&queue, entries, ctx).await,
        Request::DeleteMessage { queue, receipt } => delete_message(&queue, receipt, ctx).await,
        Request::DeleteMessageBatch { queue, entries } => delete_message_batch(&queue, entries, ctx).await,
        Request::ChangeMessageVisibility { queue, change } => {
            change_visibility(ctx, &queue, &change).await?;
            Ok(serde_json::json!({}))
        }
        Request::ChangeMessageVisibilityBatch { queue, entries } => {
            change_message_visibility_batch(&queue, entries, ctx).await
        }
        Request::GetQueueAttributes { queue, attribute_names } => {
            get_queue_attributes(&queue, &attribute_names, ctx).await
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, SqsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| SqsError::serialization(format!("Request body: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, SqsError> {
    serde_json::to_value(value).map_err(|e| SqsError::internal(format!("cannot encode the response: {e}")))
}

fn required<T>(value: Option<T>, name: &str) -> Result<T, SqsError> {
    value.ok_or_else(|| SqsError::missing_parameter(format!("The request must contain the parameter {name}.")))
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_NAME
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The queue a `QueueUrl` names: its last path segment.
fn queue_name(url: Option<String>) -> Result<String, SqsError> {
    let url = required(url, "QueueUrl")?;
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    if !is_name(name) {
        return Err(SqsError::invalid_address(format!("`{url}` is not a queue URL (…/<account>/<queue name>).")));
    }
    Ok(name.to_string())
}

fn in_range(value: Option<i64>, name: &str, min: i64, max: i64, default: i64) -> Result<i64, SqsError> {
    let v = value.unwrap_or(default);
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(SqsError::invalid_parameter_value(format!(
            "Value {v} for parameter {name} is invalid. Reason: Must be between {min} and {max}."
        )))
    }
}

fn seconds(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

async fn get_queue_url(name: &str, ctx: &Ctx) -> Result<Value, SqsError> {
    ctx.queue.depth(name).await.map_err(|e| SqsError::from_queue(name, e))?;
    Ok(serde_json::json!({ "QueueUrl": format!("{}/{name}", ctx.base_url) }))
}

/// Whether `name` is selected by `MessageAttributeNames` (`All`, `.*`,
/// `prefix.*` or the name itself).
fn selected(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.as_str() {
        "All" | ".*" => true,
        p => match p.strip_suffix(".*") {
            Some(prefix) => name.starts_with(prefix) && name[prefix.len()..].starts_with('.'),
            None => p == name,
        },
    })
}

async fn receive_message(
    name: &str,
    receive: Receive,
    system: &BTreeSet<String>,
    message_attribute_names: &[String],
    ctx: &Ctx,
) -> Result<Value, SqsError> {
    let received = tokio::select! {
        received = ctx.queue.receive(name, receive) => received.map_err(|e| SqsError::from_queue(name, e))?,
        // A long poll answers empty when the process stops, as SQS may.
        () = ctx.shutdown.cancelled() => Vec::new(),
    };
    let all = system.contains("All");
    let messages: Vec<Message> = received
        .into_iter()
        .map(|m| {
            let mut attributes = BTreeMap::new();
            if all || system.contains("ApproximateReceiveCount") {
                attributes.insert("ApproximateReceiveCount".to_string(), m.receive_count.to_string());
            }
            if all || system.contains("SentTimestamp") {
                attributes.insert("SentTimestamp".to_string(), m.sent_at.to_string());
            }
            let message_attributes: BTreeMap<String, AttributeValue> = m
                .attributes
                .into_iter()
                .filter(|(k, _)| selected(message_attribute_names, k))
                .map(|(k, v)| {
                    (k, AttributeValue { data_type: "String".to_string(), string_value: Some(v), binary_value: None })
                })
                .collect();
            let md5_of_message_attributes = md5::of_attributes(
                message_attributes.iter().map(|(k, v)| (k.as_str(), "String", v.string_value.as_deref().unwrap_or(""))),
            );
            Message {
                message_id: m.message_id,
                receipt_handle: m.receipt_handle,
                md5_of_body: md5::of_body(&m.body),
                body: m.body,
                attributes,
                md5_of_message_attributes,
                message_attributes,
            }
        })
        .collect();
    if messages.is_empty() {
        return Ok(serde_json::json!({}));
    }
    Ok(serde_json::json!({ "Messages": to_json(&messages)? }))
}

/// Characters SQS accepts in a body or attribute value.
fn allowed_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}'))
}

/// SQS's rules for message attribute names.
fn attribute_name_problem(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if name.is_empty() || name.len() > 256 {
        Some("must be 1 to 256 characters")
    } else if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
        Some("may contain only A-Z, a-z, 0-9, `_`, `-` and `.`")
    } else if lower.starts_with("aws.") || lower.starts_with("amazon.") {
        Some("must not start with `AWS.` or `Amazon.`")
    } else if name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        Some("must not start or end with `.` nor contain `..`")
    } else {
        None
    }
}

/// One message to send, checked as SQS checks it, with the digest of its
/// attributes as the client computes it (with the data types it sent).
fn outgoing(
    body: Option<String>,
    delay: Option<i64>,
    attributes: BTreeMap<String, AttributeValue>,
) -> Result<Checked, SqsError> {
    let body = required(body, "MessageBody")?;
    if body.is_empty() {
        return Err(SqsError::invalid_parameter_value("The message body must be at least one character long."));
    }
    if let Some(c) = body.chars().find(|c| !allowed_char(*c)) {
        return Err(SqsError::invalid_message_contents(format!(
            "Invalid binary character U+{:04X} was found in the message body; SQS accepts only XML characters.",
            u32::from(c)
        )));
    }
    let delay = in_range(delay, "DelaySeconds", 0, i64::try_from(MAX_DELAY.as_secs()).unwrap_or(900), 0)?;
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(SqsError::invalid_parameter_value(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_ATTRIBUTES}].",
            attributes.len()
        )));
    }
    let mut message = OutgoingMessage::new(body).with_delay(seconds(delay));
    for (name, value) in &attributes {
        if let Some(problem) = attribute_name_problem(name) {
            return Err(SqsError::invalid_parameter_value(format!("Message attribute name `{name}` {problem}.")));
        }
        let base = value.data_type.split('.').next().unwrap_or_default();
        let text = match (base, &value.string_value) {
            ("String" | "Number", Some(text)) if !text.is_empty() => text,
            ("String" | "Number", _) => {
                return Err(SqsError::invalid_parameter_value(format!(
                    "Message attribute `{name}` must have a non-empty StringValue."
                )));
            }
            ("Binary", _) => {
                return Err(SqsError::invalid_parameter_value(format!(
                    "Message attribute `{name}`: Binary attributes are not supported by the embedded backend \
                     (its queues store string values); send it as a String."
                )));
            }
            _ => {
                return Err(SqsError::invalid_parameter_value(format!(
                    "Message attribute `{name}` has an invalid DataType `{}` (String, Number or Binary, \
                     optionally with a `.label`).",
                    value.data_type
                )));
            }
        };
        if let Some(c) = text.chars().find(|c| !allowed_char(*c)) {
            return Err(SqsError::invalid_message_contents(format!(
                "Invalid character U+{:04X} in message attribute `{name}`.",
                u32::from(c)
            )));
        }
        message = message.with_attribute(name, text.clone());
    }
    if message.size() > MAX_MESSAGE_BYTES {
        return Err(SqsError::invalid_parameter_value(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {MAX_MESSAGE_BYTES} bytes \
             (this one is {} bytes, body plus attribute names and values).",
            message.size()
        )));
    }
    let digest = md5::of_attributes(
        attributes.iter().map(|(k, v)| (k.as_str(), v.data_type.as_str(), v.string_value.as_deref().unwrap_or(""))),
    );
    Ok(Checked { message, md5_of_message_attributes: digest })
}

fn new_message_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn send_message(name: &str, checked: Checked, ctx: &Ctx) -> Result<Value, SqsError> {
    let Checked { message, md5_of_message_attributes } = checked;
    let md5_of_message_body = md5::of_body(&message.body);
    ctx.queue.send(name, message).await.map_err(|e| SqsError::from_queue(name, e))?;
    to_json(&Sent { id: None, message_id: new_message_id(), md5_of_message_body, md5_of_message_attributes })
}

/// The batch rules every batch action shares: 1 to 10 entries, each id
/// `[A-Za-z0-9_-]{1,80}`, all distinct. Returns the ids.
fn check_entries<'a>(ids: impl ExactSizeIterator<Item = Option<&'a String>>) -> Result<Vec<String>, SqsError> {
    match ids.len() {
        0 => return Err(SqsError::empty_batch("There should be at least one entry in the request.")),
        n if n > MAX_BATCH => {
            return Err(SqsError::too_many_entries(format!(
                "Maximum number of entries per request are {MAX_BATCH}. You have sent {n}."
            )));
        }
        _ => {}
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for id in ids {
        let id = required(id, "Id (of every entry)")?;
        if !is_name(id) {
            return Err(SqsError::invalid_batch_entry_id(format!(
                "Entry id `{id}` is invalid: use 1 to 80 of A-Z, a-z, 0-9, `-` and `_`."
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(SqsError::ids_not_distinct(format!("Id `{id}` repeated.")));
        }
        out.push(id.clone());
    }
    Ok(out)
}

fn failed(id: &str, e: &SqsError) -> Failed {
    Failed { id: id.to_string(), sender_fault: e.sender_fault(), code: e.code.to_string(), message: e.message.clone() }
}

async fn send_message_batch(
    name: &str,
    entries: Vec<(String, Result<Checked, SqsError>)>,
    ctx: &Ctx,
) -> Result<Value, SqsError> {
    let mut result = BatchResult { successful: Vec::new(), failed: Vec::new() };
    let mut batch = Vec::new();
    for (id, entry) in entries {
        match entry {
            Ok(Checked { message, md5_of_message_attributes }) => {
                result.successful.push(Sent {
                    id: Some(id),
                    message_id: new_message_id(),
                    md5_of_message_body: md5::of_body(&message.body),
                    md5_of_message_attributes,
                });
                batch.push(message);
            }
            Err(e) => result.failed.push(failed(&id, &e)),
        }
    }
    let sent = if batch.is_empty() {
        ctx.queue.depth(name).await.map(|_| ())
    } else {
        ctx.queue.send_batch(name, batch).await
    };
    sent.map_err(|e| SqsError::from_queue(name, e))?;
    to_json(&result)
}

/// Size of an entry as SQS counts a batch: bodies plus attribute names,
/// types and values.
fn entry_size(entry: &SendEntry) -> usize {
    entry.message_body.as_ref().map_or(0, String::len)
        + entry
            .message_attributes
            .iter()
            .map(|(k, v)| k.len() + v.data_type.len() + v.string_value.as_ref().map_or(0, String::len))
            .sum::<usize>()
}

/// What deleting `receipt` came to: stale handles count as deleted (SQS:
/// the request succeeds, the message stays if it was received again).
fn delete_outcome(failures: Vec<QueueError>) -> Result<(), SqsError> {
    match failures.into_iter().find(|e| !matches!(e, QueueError::StaleReceipt(_))) {
        None => Ok(()),
        Some(QueueError::Invalid(why)) => Err(SqsError::receipt_handle_is_invalid(why)),
        Some(other) => Err(SqsError::from_queue("", other)),
    }
}

async fn delete_message(name: &str, receipt: String, ctx: &Ctx) -> Result<Value, SqsError> {
    let failures = ctx.queue.delete_batch(name, &[receipt]).await.map_err(|e| SqsError::from_queue(name, e))?;
    delete_outcome(failures)?;
    Ok(serde_json::json!({}))
}

async fn delete_message_batch(
    name: &str,
    entries: Vec<(String, Option<String>)>,
    ctx: &Ctx,
) -> Result<Value, SqsError> {
    let mut result = BatchResult { successful: Vec::new(), failed: Vec::new() };
    let mut todo: Vec<(String, String)> = Vec::new();
    for (id, receipt) in entries {
        match receipt {
            Some(receipt) => todo.push((id, receipt)),
            None => result.failed.push(failed(&id, &SqsError::missing_parameter("The entry has no ReceiptHandle."))),
        }
    }
    if !todo.is_empty() {
        let receipts: Vec<String> = todo.iter().map(|(_, r)| r.clone()).collect();
        let failures = ctx.queue.delete_batch(name, &receipts).await.map_err(|e| SqsError::from_queue(name, e))?;
        if delete_outcome(failures).is_ok() {
            result.successful.extend(todo.into_iter().map(|(id, _)| Done { id }));
        } else {
            // The port does not say which handle failed: ask one by one
            // (those already deleted by the batch are now stale: success).
            for (id, receipt) in todo {
                let outcome =
                    ctx.queue.delete_batch(name, &[receipt]).await.map_err(|e| SqsError::from_queue(name, e))?;
                match delete_outcome(outcome) {
                    Ok(()) => result.successful.push(Done { id }),
                    Err(e) => result.failed.push(failed(&id, &e)),
                }
            }
        }
    }
    to_json(&result)
}

/// The receipt handle and timeout of a visibility change, both required.
fn visibility_change(receipt: Option<String>, timeout: Option<i64>) -> Result<VisibilityChange, SqsError> {
    let receipt = required(receipt, "ReceiptHandle")?;
    let timeout =
        seconds(in_range(Some(required(timeout, "VisibilityTimeout")?), "VisibilityTimeout", 0, MAX_VISIBILITY_S, 0)?);
    Ok(VisibilityChange { receipt, timeout })
}

async fn change_visibility(ctx: &Ctx, name: &str, change: &VisibilityChange) -> Result<(), SqsError> {
    let VisibilityChange { receipt, timeout } = change;
    ctx.queue.change_visibility(name, receipt, *timeout).await.map_err(|e| match e {
        QueueError::Invalid(why) => SqsError::receipt_handle_is_invalid(why),
        QueueError::StaleReceipt(_) => SqsError::message_not_inflight(format!(
            "Message with receipt handle `{receipt}` is not in flight (deleted, or received again since)."
        )),
        other => SqsError::from_queue(name, other),
    })
}

async fn change_message_visibility_batch(
    name: &str,
    entries: Vec<(String, Result<VisibilityChange, SqsError>)>,
    ctx: &Ctx,
) -> Result<Value, SqsError> {
    let mut result = BatchResult { successful: Vec::new(), failed: Vec::new() };
    // One after the other: each is a point update, and a queue that does not
    // exist fails the first the same as all.
    for (id, entry) in entries {
        let outcome = match entry {
            Ok(change) => change_visibility(ctx, name, &change).await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => result.successful.push(Done { id }),
            Err(e) if e.shape == "QueueDoesNotExist" || !e.sender_fault() => return Err(e),
            Err(e) => result.failed.push(failed(&id, &e)),
        }
    }
    to_json(&result)
}

/// Every queue attribute name of the SQS API (others are `InvalidAttributeName`).
const QUEUE_ATTRIBUTES: &[&str] = &[
    "All",
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

async fn get_queue_attributes(name: &str, attribute_names: &[String], ctx: &Ctx) -> Result<Value, SqsError> {
    let depth = ctx.queue.depth(name).await.map_err(|e| SqsError::from_queue(name, e))?;
    // What the port knows; the rest (visibility, retention, redrive) is the
    // queue's spec, which only the process that created it holds.
    let known: [(&str, String); 7] = [
        ("ApproximateNumberOfMessages", depth.visible.to_string()),
        ("ApproximateNumberOfMessagesNotVisible", depth.in_flight.to_string()),
        ("ApproximateNumberOfMessagesDelayed", depth.delayed.to_string()),
        ("QueueArn", format!("arn:aws:sqs:{}:{}:{name}", ctx.region, ctx.account_id)),
        ("MaximumMessageSize", MAX_MESSAGE_BYTES.to_string()),
        ("DelaySeconds", "0".to_string()),
        ("ReceiveMessageWaitTimeSeconds", "0".to_string()),
    ];
    let all = attribute_names.iter().any(|n| n == "All");
    let attributes: BTreeMap<&str, String> =
        known.into_iter().filter(|(k, _)| all || attribute_names.iter().any(|n| n == k)).collect();
    if attributes.is_empty() {
        return Ok(serde_json::json!({}));
    }
    Ok(serde_json::json!({ "Attributes": attributes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_name_their_queue() {
        assert_eq!(queue_name(Some("http://127.0.0.1:9/000000000000/orders".into())), Ok("orders".into()));
        assert_eq!(queue_name(Some("https://sqs.us-east-1.amazonaws.com/1/q-dlq/".into())), Ok("q-dlq".into()));
        assert_eq!(queue_name(Some("http://h/1/bad name".into())).unwrap_err().shape, "InvalidAddress");
        assert_eq!(queue_name(None).unwrap_err().shape, "MissingParameter");
    }

    #[test]
    fn attribute_name_patterns() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selected(&p(&["All"]), "x"));
        assert!(selected(&p(&[".*"]), "x"));
        assert!(selected(&p(&["sqsaga.*"]), "sqsaga.signature"));
        assert!(!selected(&p(&["sqsaga.*"]), "sqsaga-signature"));
        assert!(selected(&p(&["traceparent"]), "traceparent"));
        assert!(!selected(&p(&[]), "traceparent"));
    }

    #[test]
    fn attribute_names_follow_the_sqs_rules() {
        for ok in ["traceparent", "sqsaga-signature", "a.b_c-1"] {
            assert_eq!(attribute_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "AWS.x", "amazon.y", ".a", "a.", "a..b", "a b", &"n".repeat(257)] {
            assert!(attribute_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn bodies_outside_the_xml_character_set_are_refused() {
        let err = outgoing(Some("a\u{0}b".into()), None, BTreeMap::new()).unwrap_err();
        assert_eq!(err.shape, "InvalidMessageContents");
        assert!(outgoing(Some("tab\tand é and 😀".into()), None, BTreeMap::new()).is_ok());
    }
}
