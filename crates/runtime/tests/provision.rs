//! `provision` against the emulator: everything is created once, a second
//! run finds everything and creates nothing, and what was made is checked
//! through the services' own answers (GetQueueAttributes, DescribeTable),
//! not by reading our code.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

#[path = "../../aws/tests/common/mod.rs"]
mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{BillingMode, SseStatus, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName as A;
use serde_json::Value;
use sqsaga_aws::AwsBackend;
use sqsaga_runtime::{ProvisionOptions, provision};

/// The order saga's definitions: the queues they name are what provision makes.
fn order_definitions() -> Result<sqsaga_orchestrator::Definitions, sqsaga_orchestrator::DefinitionError> {
    let yaml = include_str!("../../../examples/order/create_order.yaml");
    let def = sqsaga_core::yaml::parse_definition(yaml).unwrap();
    let mut defs = sqsaga_orchestrator::Definitions::default();
    defs.insert(def, "create_order.yaml")?;
    Ok(defs)
}

async fn attributes(b: &AwsBackend, queue: &str) -> HashMap<A, String> {
    b.sqs().attributes(queue, &[A::All]).await.unwrap()
}

/// The DLQ's RedriveAllowPolicy as the service reports it. moto 5.2.5 stores
/// it but leaves it out of GetQueueAttributes; then it is read from moto's
/// own state dump (`/moto-api/data.json`), still the emulator's word.
async fn redrive_allow_policy(b: &AwsBackend, dlq: &str, attrs: &HashMap<A, String>) -> Value {
    if attrs.contains_key(&A::RedriveAllowPolicy) {
        return json(attrs, A::RedriveAllowPolicy);
    }
    let name = b.sqs().physical_name(dlq);
    let state = moto_state().await;
    let queues = state["sqs"]["Queue"].as_array().expect("moto state has sqs queues");
    let queue = queues
        .iter()
        .rev()
        .find(|q| q["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not in moto's state"));
    let text =
        queue["redrive_allow_policy"].as_str().unwrap_or_else(|| panic!("{name} has no redrive_allow_policy: {queue}"));
    serde_json::from_str(text).unwrap()
}

/// moto's state dump, over plain HTTP/1.0. moto builds it by walking its
/// live state, and a test running beside this one can change that state
/// mid-walk (moto then answers 500): such a dump is asked for again.
async fn moto_state() -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = common::endpoint();
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut last = String::new();
    for _ in 0..5 {
        let mut stream = tokio::net::TcpStream::connect(&host).await.unwrap();
        let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        match serde_json::from_str(body) {
            Ok(state) => return state,
            Err(e) => last = format!("{}: {e}", head.lines().next().unwrap_or("no status line")),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("moto's state dump was not JSON five times; last: {last}")
}

fn json(attrs: &HashMap<A, String>, name: A) -> Value {
    let text = attrs.get(&name).unwrap_or_else(|| panic!("no {name:?} in {attrs:?}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_creates_once_and_the_services_report_what_it_made() {
    let sdk = common::sdk_config().await;
    let b = AwsBackend::from_sdk_config(&sdk, common::fresh_settings()).unwrap();
    let prefix = b.settings().queue_prefix.clone();
    let defs = order_definitions().unwrap();
    let options = ProvisionOptions { max_receive_count: 4, ..ProvisionOptions::default() };

    let first = provision(&b, &defs, &options).await.unwrap();
    let text: Vec<String> = first.iter().map(ToString::to_string).collect();
    for q in ["orchestrator", "inventory", "payment", "notification"] {
        for name in [format!("{prefix}{q}"), format!("{prefix}{q}-dlq")] {
            assert!(text.contains(&format!("created queue {name}")), "{name} not created: {text:#?}");
        }
    }
    assert!(text.contains(&format!("created table {}", b.settings().table)), "{text:#?}");
    assert_eq!(first.len(), 9, "{text:#?}");

    let second = provision(&b, &defs, &options).await.unwrap();
    assert!(second.iter().all(|l| !l.created), "the second run created something: {second:#?}");
    assert_eq!(second.len(), first.len());
    assert!(second[0].to_string().starts_with("found queue "), "{}", second[0]);

    // Through the service: the source queue's redrive policy and the DLQ's.
    for q in ["orchestrator", "inventory", "payment", "notification"] {
        let source = attributes(&b, q).await;
        let dlq = attributes(&b, &format!("{q}-dlq")).await;
        let dlq_arn = dlq.get(&A::QueueArn).unwrap();
        let redrive = json(&source, A::RedrivePolicy);
        assert_eq!(redrive["deadLetterTargetArn"].as_str(), Some(dlq_arn.as_str()), "{q}: {redrive}");
        // One above the limit: sqsaga dead-letters (with a reason) at receive 5; SQS's own at 6 is the net.
        assert_eq!(redrive["maxReceiveCount"].to_string().trim_matches('"'), "5", "{q}: {redrive}");
        let allow = redrive_allow_policy(&b, &format!("{q}-dlq"), &dlq).await;
        assert_eq!(allow["redrivePermission"].as_str(), Some("byQueue"), "{q}: {allow}");
        let sources: Vec<&str> =
            allow["sourceQueueArns"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(sources, [source.get(&A::QueueArn).unwrap().as_str()], "{q}: {allow}");
        for (name, attrs) in [(q.to_string(), &source), (format!("{q}-dlq"), &dlq)] {
            assert_eq!(attrs.get(&A::SqsManagedSseEnabled).map(String::as_str), Some("true"), "{name}: {attrs:?}");
            assert_eq!(attrs.get(&A::MaximumMessageSize).map(String::as_str), Some("1048576"), "{name}");
        }
        assert_eq!(dlq.get(&A::MessageRetentionPeriod).map(String::as_str), Some("1209600"), "{q}-dlq: 14 days");
        assert_eq!(source.get(&A::MessageRetentionPeriod).map(String::as_str), Some("345600"), "{q}: 4 days");
        assert_eq!(source.get(&A::VisibilityTimeout).map(String::as_str), Some("30"), "{q}");
    }

    // Through the service: the table, its billing, encryption and indexes.
    let store = b.dynamo();
    let table = store.client().describe_table().table_name(store.table()).send().await.unwrap().table.unwrap();
    let billing = table.billing_mode_summary.and_then(|s| s.billing_mode);
    assert_eq!(billing, Some(BillingMode::PayPerRequest));
    let sse = table.sse_description.and_then(|s| s.status);
    assert!(matches!(sse, Some(SseStatus::Enabled | SseStatus::Enabling)), "SSE: {sse:?}");
    let mut indexes: Vec<(String, Vec<String>)> = table
        .global_secondary_indexes
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let keys = i.key_schema.unwrap_or_default().into_iter().map(|k| k.attribute_name).collect();
            (i.index_name.unwrap_or_default(), keys)
        })
        .collect();
    indexes.sort();
    let want = [("by_due", vec!["due_pk", "wake_at"]), ("by_end", vec!["end_pk", "ended_at"])];
    let want: Vec<(String, Vec<String>)> =
        want.iter().map(|(n, k)| (n.to_string(), k.iter().map(|s| s.to_string()).collect())).collect();
    assert_eq!(indexes, want);
    // Retention: TTL on the attribute the terminal commit sets, and a
    // second provision finds it on (idempotent, no error).
    let ttl = store.client().describe_time_to_live().table_name(store.table()).send().await.unwrap();
    let ttl = ttl.time_to_live_description.unwrap();
    assert_eq!(ttl.attribute_name.as_deref(), Some(sqsaga_aws::TTL_ATTRIBUTE));
    assert!(matches!(ttl.time_to_live_status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)), "{ttl:?}");
    let again = provision(&b, &defs, &ProvisionOptions::default()).await.unwrap();
    assert!(again.iter().all(|l| !l.created), "{again:#?}");
    assert!(store.ttl_enabled().await.unwrap());
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_with_a_kms_key_encrypts_queues_with_it() {
    let sdk = common::sdk_config().await;
    let b = AwsBackend::from_sdk_config(&sdk, common::fresh_settings()).unwrap();
    let defs = order_definitions().unwrap();
    let key = "alias/sqsaga-test";
    let options = ProvisionOptions { kms_key: Some(key.to_string()), ..ProvisionOptions::default() };
    let lines = provision(&b, &defs, &options).await.unwrap();
    assert!(lines.iter().all(|l| l.created), "{lines:#?}");
    for q in ["orchestrator", "payment-dlq"] {
        let attrs = attributes(&b, q).await;
        assert_eq!(attrs.get(&A::KmsMasterKeyId).map(String::as_str), Some(key), "{q}: {attrs:?}");
        assert_ne!(attrs.get(&A::SqsManagedSseEnabled).map(String::as_str), Some("true"), "{q}: {attrs:?}");
    }
    b.teardown().await.unwrap();
}
