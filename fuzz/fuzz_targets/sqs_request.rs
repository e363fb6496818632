//! The SQS-compatible endpoint's request decoding (`crates/sqs-endpoint`,
//! AWS JSON 1.0): [`actions::decode`], the pure half of every action,
//! which turns `X-Amz-Target`'s action and the JSON body into a checked
//! request before any queue is touched. Input: the action name, a newline,
//! the body.
//!
//! Properties: no panic; a refusal is a client error (4xx) naming its
//! cause; an accepted request holds SQS's limits (batch sizes and distinct
//! ids, message size and characters, delay, visibility and wait ranges);
//! and the request, written back as the JSON an SDK would send, decodes to
//! the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sqsaga_sqs_endpoint::actions::{self, Checked, Request, VisibilityChange};

/// SQS's limits, as the endpoint enforces them.
const MAX_MESSAGE_BYTES: usize = 1_048_576;
const MAX_DELAY_S: u64 = 900;
const MAX_VISIBILITY_S: u64 = 12 * 3600;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (action, body) = text.split_once('\n').unwrap_or((text, ""));
    match actions::decode(action, body.as_bytes()) {
        Ok(request) => {
            within_limits(&request);
            let (action, body) = encode(&request);
            let again = actions::decode(action, body.to_string().as_bytes());
            if round_trips(&request) {
                match again {
                    Ok(again) => assert_eq!(normal(again), normal(request), "re-encoded as {action} {body}"),
                    Err(e) => panic!("re-encoded as {action} {body}, refused: {e:?}"),
                }
            }
        }
        Err(e) => {
            assert!(e.status.is_client_error(), "decoding failed as a server error: {e:?}");
            assert!(!e.shape.is_empty() && !e.code.is_empty() && e.message.len() > 10, "{e:?}");
        }
    }
});

fn within_limits(request: &Request) {
    let checked = |c: &Checked| {
        let m = &c.message;
        assert!(!m.body.is_empty() && m.size() <= MAX_MESSAGE_BYTES, "{} bytes", m.size());
        assert!(m.delay.as_secs() <= MAX_DELAY_S && m.attributes.len() <= 10, "{m:?}");
        assert_eq!(c.md5_of_message_attributes.is_some(), !m.attributes.is_empty(), "{c:?}");
        assert!(c.md5_of_message_attributes.as_ref().is_none_or(|d| d.len() == 32), "{c:?}");
    };
    let ids = |ids: Vec<&String>| {
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert!((1..=10).contains(&ids.len()) && distinct.len() == ids.len(), "{ids:?}");
    };
    match request {
        Request::ReceiveMessage { receive, .. } => {
            assert!((1..=10).contains(&receive.max) && receive.wait.as_secs() <= 20, "{receive:?}");
            assert!(receive.visibility.is_none_or(|v| v.as_secs() <= MAX_VISIBILITY_S), "{receive:?}");
        }
        Request::SendMessage { message, .. } => checked(message),
        Request::SendMessageBatch { entries, .. } => {
            ids(entries.iter().map(|(id, _)| id).collect());
            entries.iter().filter_map(|(_, e)| e.as_ref().ok()).for_each(checked);
            let total: usize = entries.iter().filter_map(|(_, e)| e.as_ref().ok()).map(|c| c.message.size()).sum();
            assert!(total <= MAX_MESSAGE_BYTES, "batch of {total} bytes");
        }
        Request::DeleteMessageBatch { entries, .. } => ids(entries.iter().map(|(id, _)| id).collect()),
        Request::ChangeMessageVisibility { change, .. } => assert!(change.timeout.as_secs() <= MAX_VISIBILITY_S),
        Request::ChangeMessageVisibilityBatch { entries, .. } => {
            ids(entries.iter().map(|(id, _)| id).collect());
            for change in entries.iter().filter_map(|(_, e)| e.as_ref().ok()) {
                assert!(change.timeout.as_secs() <= MAX_VISIBILITY_S);
            }
        }
        Request::GetQueueUrl { .. } | Request::DeleteMessage { .. } | Request::GetQueueAttributes { .. } => {}
    }
}

/// Whether the request holds everything needed to write it again (a batch
/// entry refused on its own keeps only its error).
fn round_trips(request: &Request) -> bool {
    match request {
        Request::SendMessageBatch { entries, .. } => entries.iter().all(|(_, e)| e.is_ok()),
        Request::ChangeMessageVisibilityBatch { entries, .. } => entries.iter().all(|(_, e)| e.is_ok()),
        _ => true,
    }
}

/// The attributes' digest depends on the data types sent (`Number`,
/// `String.label`), which the request does not keep; rewritten they are all
/// `String`. Compare the rest.
fn normal(request: Request) -> Request {
    let plain = |c: Checked| Checked { md5_of_message_attributes: None, ..c };
    match request {
        Request::SendMessage { queue, message } => Request::SendMessage { queue, message: plain(message) },
        Request::SendMessageBatch { queue, entries } => Request::SendMessageBatch {
            queue,
            entries: entries.into_iter().map(|(id, e)| (id, e.map(plain))).collect(),
        },
        other => other,
    }
}

fn url(queue: &str) -> String {
    format!("http://127.0.0.1:9324/000000000000/{queue}")
}

fn message_fields(c: &Checked) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("MessageBody".into(), json!(c.message.body));
    out.insert("DelaySeconds".into(), json!(c.message.delay.as_secs()));
    if !c.message.attributes.is_empty() {
        let attributes: Map<String, Value> = c
            .message
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), json!({"DataType": "String", "StringValue": v})))
            .collect();
        out.insert("MessageAttributes".into(), Value::Object(attributes));
    }
    out
}

/// The request as an SDK would send it.
fn encode(request: &Request) -> (&'static str, Value) {
    match request {
        Request::GetQueueUrl { queue } => ("GetQueueUrl", json!({ "QueueName": queue })),
        Request::ReceiveMessage { queue, receive, system_attributes, message_attribute_names } => {
            let mut body = json!({
                "QueueUrl": url(queue),
                "MaxNumberOfMessages": receive.max,
                "WaitTimeSeconds": receive.wait.as_secs(),
                "MessageSystemAttributeNames": system_attributes,
                "MessageAttributeNames": message_attribute_names,
            });
            if let Some(v) = receive.visibility {
                body["VisibilityTimeout"] = json!(v.as_secs());
            }
            ("ReceiveMessage", body)
        }
        Request::SendMessage { queue, message } => {
            let mut body = message_fields(message);
            body.insert("QueueUrl".into(), json!(url(queue)));
            ("SendMessage", Value::Object(body))
        }
        Request::SendMessageBatch { queue, entries } => {
            let entries: Vec<Value> = entries
                .iter()
                .filter_map(|(id, e)| {
                    let mut entry = message_fields(e.as_ref().ok()?);
                    entry.insert("Id".into(), json!(id));
                    Some(Value::Object(entry))
                })
                .collect();
            ("SendMessageBatch", json!({ "QueueUrl": url(queue), "Entries": entries }))
        }
        Request::DeleteMessage { queue, receipt } => {
            ("DeleteMessage", json!({ "QueueUrl": url(queue), "ReceiptHandle": receipt }))
        }
        Request::DeleteMessageBatch { queue, entries } => {
            let entries: Vec<Value> = entries.iter().map(|(id, r)| json!({ "Id": id, "ReceiptHandle": r })).collect();
            ("DeleteMessageBatch", json!({ "QueueUrl": url(queue), "Entries": entries }))
        }
        Request::ChangeMessageVisibility { queue, change: VisibilityChange { receipt, timeout } } => (
            "ChangeMessageVisibility",
            json!({ "QueueUrl": url(queue), "ReceiptHandle": receipt, "VisibilityTimeout": timeout.as_secs() }),
        ),
        Request::ChangeMessageVisibilityBatch { queue, entries } => {
            let entries: Vec<Value> = entries
                .iter()
                .filter_map(|(id, e)| {
                    let c = e.as_ref().ok()?;
                    Some(json!({ "Id": id, "ReceiptHandle": c.receipt, "VisibilityTimeout": c.timeout.as_secs() }))
                })
                .collect();
            ("ChangeMessageVisibilityBatch", json!({ "QueueUrl": url(queue), "Entries": entries }))
        }
        Request::GetQueueAttributes { queue, attribute_names } => {
            ("GetQueueAttributes", json!({ "QueueUrl": url(queue), "AttributeNames": attribute_names }))
        }
    }
}
