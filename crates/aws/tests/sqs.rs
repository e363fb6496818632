//! What only the SQS adapter has to prove, beyond the shared contract:
//! concurrent callers' sends and deletes merge into batch requests, naive
//! mode does one request per message, SQS's own limits are checked before
//! any request, explicit queue URLs bypass the prefix, visibility
//! heartbeats keep a message hidden, request counts render as metrics, and
//! an unreachable endpoint is an error naming it — never a panic.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use sqsaga_aws::{AwsBackend, AwsSettings, VisibilityHeartbeat};
use sqsaga_queue::contract::receive_n;
use sqsaga_queue::{OutgoingMessage, Queue, QueueError, QueueSpec, Receive};
use sqsaga_store::StoreError;
use tokio::task::JoinSet;

fn spec(name: &str) -> QueueSpec {
    QueueSpec { visibility_timeout: Duration::from_secs(30), ..QueueSpec::named(name) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_endpoint_is_an_error_naming_it() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let sdk = common::sdk_config_for("http://127.0.0.1:1").await;
    let b = AwsBackend::from_sdk_config(&sdk, AwsSettings::default()).unwrap();
    let sent = b.queue().send("orders", OutgoingMessage::new("x")).await;
    let Err(QueueError::Unreachable(msg)) = &sent else { panic!("expected Unreachable, got {sent:?}") };
    assert!(msg.contains("cannot reach SQS at http://127.0.0.1:1"), "{msg}");
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(sent.unwrap_err().is_retryable());
    let loaded = b.store().load(&["x".to_string()]).await;
    let Err(StoreError::Unreachable(msg)) = &loaded else { panic!("expected Unreachable, got {loaded:?}") };
    assert!(msg.contains("cannot reach DynamoDB at http://127.0.0.1:1: connection refused"), "{msg}");
    // Every attempt was counted, retries included.
    assert!(b.requests().snapshot().get("GetQueueUrl") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_and_deletes_merge_into_batch_requests() {
    // A wide window so the merge does not depend on scheduling luck.
    let settings = AwsSettings { flush_window: Duration::from_millis(100), ..common::fresh_settings() };
    let b = common::backend_with(settings).await;
    let q = b.queue();
    q.ensure(&spec("merge")).await.unwrap();
    let before = b.requests().snapshot();
    let mut tasks = JoinSet::new();
    for i in 0..30 {
        let q = q.clone();
        tasks.spawn(async move { q.send("merge", OutgoingMessage::new(format!("m{i:02}"))).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let sends = b.requests().snapshot().since(&before);
    assert_eq!(sends.get("SendMessage"), 0);
    assert!(sends.get("SendMessageBatch") <= 5, "30 concurrent sends took {sends:?}");

    let got = receive_n(q.as_ref(), "merge", 30, Duration::from_secs(20)).await.unwrap();
    let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), 30, "every message once: {bodies:?}");

    let before = b.requests().snapshot();
    let mut tasks = JoinSet::new();
    for m in got {
        let q = q.clone();
        tasks.spawn(async move { q.delete_batch("merge", &[m.receipt_handle]).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().unwrap().is_empty());
    }
    let deletes = b.requests().snapshot().since(&before);
    assert!(deletes.get("DeleteMessageBatch") <= 5, "30 concurrent deletes took {deletes:?}");
    let left = q.receive("merge", Receive::up_to(10).wait(Duration::from_secs(1))).await.unwrap();
    assert!(left.is_empty(), "deleted messages came back: {left:?}");
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn naive_mode_sends_and_deletes_one_message_per_request() {
    let b = common::backend_with(AwsSettings { naive: true, ..common::fresh_settings() }).await;
    let q = b.queue();
    q.ensure(&spec("naive")).await.unwrap();
    let before = b.requests().snapshot();
    let batch: Vec<OutgoingMessage> = (0..10).map(|i| OutgoingMessage::new(format!("n{i}"))).collect();
    q.send_batch("naive", batch).await.unwrap();
    let got = receive_n(q.as_ref(), "naive", 10, Duration::from_secs(20)).await.unwrap();
    assert_eq!(got.len(), 10);
    let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();
    assert!(q.delete_batch("naive", &receipts).await.unwrap().is_empty());
    let used = b.requests().snapshot().since(&before);
    assert_eq!((used.get("SendMessage"), used.get("SendMessageBatch")), (10, 0), "{used:?}");
    assert_eq!((used.get("DeleteMessage"), used.get("DeleteMessageBatch")), (10, 0), "{used:?}");
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_limits_are_checked_before_any_request() {
    let b = common::backend().await;
    let q = b.queue();
    q.ensure(&spec("limits")).await.unwrap();
    let before = b.requests().snapshot();
    let mut eleven = OutgoingMessage::new("x");
    for i in 0..11 {
        eleven = eleven.with_attribute(&format!("a{i}"), "v");
    }
    let r = q.send("limits", eleven).await;
    assert!(matches!(&r, Err(QueueError::Invalid(m)) if m.contains("at most 10")), "{r:?}");
    let r = q.send("limits", OutgoingMessage::new("x").with_attribute("k", "")).await;
    assert!(matches!(&r, Err(QueueError::Invalid(m)) if m.contains("empty")), "{r:?}");
    let r = q.send("limits", OutgoingMessage::new("x".repeat(sqsaga_queue::MAX_MESSAGE_BYTES + 1))).await;
    assert!(matches!(&r, Err(QueueError::TooLarge { .. })), "{r:?}");
    let r = q.send("a name with spaces", OutgoingMessage::new("x")).await;
    assert!(matches!(&r, Err(QueueError::Invalid(m)) if m.contains("letters, digits")), "{r:?}");
    assert_eq!(b.requests().snapshot().since(&before).total(), 0, "a request was sent");
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_queue_urls_win_over_the_prefix() {
    let made = common::backend().await;
    made.queue().ensure(&spec("real-name")).await.unwrap();
    let url = made.sqs().queue_url("real-name").await.unwrap();
    // Another process knows the queue only by URL (SQS_QUEUE_URL), under its own name.
    let settings = AwsSettings {
        queue_prefix: "unrelated-".to_string(),
        queue_urls: BTreeMap::from([("work".to_string(), url)]),
        table: made.settings().table.clone(),
        ..AwsSettings::default()
    };
    let sdk = common::sdk_config().await;
    let b = AwsBackend::from_sdk_config(&sdk, settings).unwrap();
    b.queue().send("work", OutgoingMessage::new("by url")).await.unwrap();
    let got = made.queue().receive("real-name", Receive::up_to(1).wait(Duration::from_secs(10))).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "by url");
    assert_eq!(b.requests().snapshot().get("GetQueueUrl"), 0, "the explicit URL was looked up");
    made.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visibility_heartbeat_keeps_a_long_running_message_hidden() {
    let b = common::backend().await;
    let q: Arc<dyn Queue> = b.queue();
    q.ensure(&spec("slow")).await.unwrap();
    q.send("slow", OutgoingMessage::new("slow work")).await.unwrap();
    let timeout = Duration::from_secs(2);
    let got = q.receive("slow", Receive::up_to(1).wait(Duration::from_secs(10)).visibility(timeout)).await.unwrap();
    assert_eq!(got.len(), 1);
    let beat = VisibilityHeartbeat::start(q.clone(), "slow", &got[0].receipt_handle, timeout);
    // Three visibility timeouts later the message is still hidden.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let meanwhile = q.receive("slow", Receive::up_to(1)).await.unwrap();
    assert!(meanwhile.is_empty(), "the message came back while its heartbeat ran: {meanwhile:?}");
    let report = beat.stop().await;
    assert!(report.extensions >= 3, "{report:?}");
    assert!(!report.lost, "{report:?}");
    // Without the heartbeat it comes back.
    let again = receive_n(q.as_ref(), "slow", 1, Duration::from_secs(15)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    b.teardown().await.unwrap();
}

/// Every request the SDK sends is counted by action, as AWS bills it (the
/// runtime renders these counts as `sqsaga_sqs_requests_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_action() {
    let b = common::backend().await;
    let q = b.queue();
    q.ensure(&spec("metrics")).await.unwrap();
    q.send("metrics", OutgoingMessage::new("x")).await.unwrap();
    let _ = q.receive("metrics", Receive::up_to(1).wait(Duration::from_secs(5))).await.unwrap();
    let sqs = b.requests().snapshot();
    assert_eq!(sqs.get("SendMessageBatch"), 1, "{sqs:?}");
    assert_eq!(sqs.get("ReceiveMessage"), 1, "{sqs:?}");
    assert_eq!(sqs.get("CreateQueue"), 2, "{sqs:?}");
    assert_eq!(b.dynamodb_requests().snapshot().get("CreateTable"), 1);
    assert_eq!(b.requests().metric(), "sqsaga_sqs_requests_total");
    assert_eq!(b.dynamodb_requests().metric(), "sqsaga_dynamodb_requests_total");
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_converges_an_existing_queue_and_sets_the_redrive_policy_one_above_the_limit() {
    let b = common::backend().await;
    let q = b.queue();
    q.ensure(&QueueSpec { max_receive_count: 3, ..spec("converge") }).await.unwrap();
    let spec2 = QueueSpec { visibility_timeout: Duration::from_secs(45), max_receive_count: 7, ..spec("converge") };
    q.ensure(&spec2).await.unwrap();
    let attrs = b
        .sqs()
        .attributes("converge", &[QueueAttributeName::VisibilityTimeout, QueueAttributeName::RedrivePolicy])
        .await
        .unwrap();
    assert_eq!(attrs.get(&QueueAttributeName::VisibilityTimeout).map(String::as_str), Some("45"));
    let policy: serde_json::Value =
        serde_json::from_str(attrs.get(&QueueAttributeName::RedrivePolicy).unwrap()).unwrap();
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "8", "{policy}");
    b.teardown().await.unwrap();
}
