//! A participant outside Rust, as the orchestrator process sees it: the
//! orchestrator on the embedded backend with `SQSAGA_SQS_ENDPOINT_ADDR`,
//! and a "participant" that is nothing but the unmodified Rust SDK pointed
//! at that address, speaking the protocol of docs/protocol.md. It starts a
//! saga, receives the command from its service queue, replies, and the saga
//! completes.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqsaga_config::{Settings, Sources};
use sqsaga_core::machine::{Outcome, SagaStatus};
use sqsaga_orchestrator::Definitions;
use sqsaga_protocol::{Envelope, ReplyMessage, StartSaga, WorkerInfo, WorkerMessage, decode_worker_message};
use sqsaga_runtime::{CancellationToken, run_orchestrator};

const SAGA: &str = "name: pay
version: 1
deadline: 1m
steps:
  - name: charge
    service: payment
    action: payment.charge
    compensation: payment.refund
    contract: payment/v1
    timeout: 10s
";

fn settings(env: &[(&str, String)]) -> Result<Settings, String> {
    let env: BTreeMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    Settings::resolve(&Sources::new(&env)).map_err(|e| e.to_string())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn sdk(url: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_using_only_the_aws_sdk_takes_part_in_a_saga_through_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let settings = settings(&[
        ("SQSAGA_DATA_DIR", dir.path().display().to_string()),
        ("SQSAGA_SQS_ENDPOINT_ADDR", format!("127.0.0.1:{port}")),
        ("SQSAGA_WAIT_TIME", "1s".to_string()),
    ])
    .unwrap();
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(SAGA).unwrap(), "pay.yaml").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let orchestrator = tokio::spawn(run_orchestrator(settings, Arc::new(defs), listener, shutdown.clone()));

    let sqs = sdk(&format!("http://127.0.0.1:{port}")).await;
    let since = Instant::now();
    let orchestrator_url = loop {
        match sqs.get_queue_url().queue_name("orchestrator").send().await {
            Ok(out) => break out.queue_url.unwrap(),
            Err(e) => assert!(since.elapsed() < Duration::from_secs(30), "endpoint not up: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let start = StartSaga {
        saga_id: "pay-1".into(),
        saga: "pay".into(),
        version: None,
        input: serde_json::json!({"amount": 5}),
        requested_at: 1,
    };
    sqs.send_message().queue_url(&orchestrator_url).message_body(Envelope::Start(start).encode()).send().await.unwrap();

    let payment_url = sqs.get_queue_url().queue_name("payment").send().await.unwrap().queue_url.unwrap();
    let received = sqs
        .receive_message()
        .queue_url(&payment_url)
        .wait_time_seconds(20)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let message = &received.messages()[0];
    let Ok(WorkerMessage::Command(command)) = decode_worker_message(message.body().unwrap()) else {
        panic!("not a command: {:?}", message.body());
    };
    assert_eq!((command.saga_id.as_str(), command.step_name.as_str()), ("pay-1", "charge"));
    assert!(message.message_attributes().unwrap().contains_key("traceparent"), "the saga's trace travels along");

    let reply = ReplyMessage {
        command_id: command.command_id.clone(),
        saga_id: command.saga_id.clone(),
        step: command.step,
        phase: command.phase,
        attempt: command.attempt,
        outcome: Outcome::Succeeded { output: serde_json::json!({"charge": "c-1"}) },
        worker: WorkerInfo { service: "payment".into(), instance: "sdk-1".into(), fingerprint: "unknown".into() },
        replied_at: 2,
    };
    let reply_url = sqs.get_queue_url().queue_name(&command.reply_to).send().await.unwrap().queue_url.unwrap();
    sqs.send_message().queue_url(&reply_url).message_body(Envelope::Reply(reply).encode()).send().await.unwrap();
    sqs.delete_message()
        .queue_url(&payment_url)
        .receipt_handle(message.receipt_handle().unwrap())
        .send()
        .await
        .unwrap();

    let store = sqsaga_embedded::EmbeddedBackend::open(dir.path(), sqsaga_embedded::Sync::Normal).unwrap().store();
    loop {
        let records = sqsaga_store::SagaStore::load(store.as_ref(), &["pay-1".to_string()]).await.unwrap();
        if records.first().is_some_and(|r| r.instance.status == SagaStatus::Completed) {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(30), "saga did not complete: {records:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    orchestrator.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_endpoint_is_refused_on_the_aws_backend() {
    let dir = tempfile::tempdir().unwrap();
    let queue = sqsaga_embedded::EmbeddedBackend::open(dir.path(), sqsaga_embedded::Sync::Normal).unwrap().queue();
    let aws =
        settings(&[("SQSAGA_BACKEND", "aws".to_string()), ("SQSAGA_SQS_ENDPOINT_ADDR", "127.0.0.1:0".to_string())])
            .unwrap();
    let err = sqsaga_runtime::sqs_endpoint::serve(&aws, queue, CancellationToken::new()).await.unwrap_err();
    assert!(err.to_string().contains("participants use SQS itself"), "{err}");
}
