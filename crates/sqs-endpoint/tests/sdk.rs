//! The Rust SDK (`aws-sdk-sqs`, unmodified, endpoint URL set) against the
//! endpoint on the real embedded backend: every supported action, long
//! polling, visibility expiry, batch limits, oversize messages, SQS-shaped
//! errors, the MD5 digests (checked here: the SDK only passes them on), and
//! what the endpoint verifies of credentials.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use sqsaga_sqs_endpoint::Credentials;
use support::{QUEUE, client, client_with, md5_hex, md5_of_attributes, start};

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap()
}

fn entry(id: &str, body: &str) -> SendMessageBatchRequestEntry {
    SendMessageBatchRequestEntry::builder().id(id).message_body(body).build().unwrap()
}

#[tokio::test]
async fn a_message_goes_through_send_receive_delete_with_its_attributes_and_digests() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();
    assert_eq!(url, format!("{}/000000000000/{QUEUE}", endpoint.url));

    let body = r#"{"type":"reply","saga_id":"s-1"} — UTF-8 ✓"#;
    let sent = sqs
        .send_message()
        .queue_url(&url)
        .message_body(body)
        .message_attributes("traceparent", string_attribute("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        .message_attributes(
            "count",
            MessageAttributeValue::builder().data_type("Number").string_value("3").build().unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(sent.md5_of_message_body(), Some(md5_hex(body.as_bytes()).as_str()));
    let as_sent: BTreeMap<String, (String, String)> = [
        ("count".to_string(), ("Number".to_string(), "3".to_string())),
        (
            "traceparent".to_string(),
            ("String".to_string(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string()),
        ),
    ]
    .into();
    assert_eq!(sent.md5_of_message_attributes(), Some(md5_of_attributes(&as_sent).as_str()));

    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.body(), Some(body));
    assert_eq!(m.md5_of_body(), Some(md5_hex(body.as_bytes()).as_str()));
    let attrs = m.attributes().unwrap();
    assert_eq!(attrs.get(&MessageSystemAttributeName::ApproximateReceiveCount).map(String::as_str), Some("1"));
    assert!(attrs.contains_key(&MessageSystemAttributeName::SentTimestamp));
    let message_attributes = m.message_attributes().unwrap();
    assert_eq!(message_attributes["count"].string_value(), Some("3"));
    // Numbers come back as strings: the queues store string values.
    let as_received: BTreeMap<String, (String, String)> = message_attributes
        .iter()
        .map(|(k, v)| (k.clone(), (v.data_type().to_string(), v.string_value().unwrap().to_string())))
        .collect();
    assert_eq!(m.md5_of_message_attributes(), Some(md5_of_attributes(&as_received).as_str()));

    // Only the attributes asked for.
    sqs.change_message_visibility()
        .queue_url(&url)
        .receipt_handle(m.receipt_handle().unwrap())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let again = sqs.receive_message().queue_url(&url).message_attribute_names("trace*").send().await.unwrap();
    let m2 = &again.messages()[0];
    assert!(m2.message_attributes().is_none_or(|a| a.is_empty()), "{:?}", m2.message_attributes());
    assert!(m2.attributes().is_none_or(|a| a.is_empty()));

    sqs.delete_message().queue_url(&url).receipt_handle(m2.receipt_handle().unwrap()).send().await.unwrap();
    // A stale handle deletes nothing and succeeds, as on SQS.
    sqs.delete_message().queue_url(&url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attributes[&QueueAttributeName::ApproximateNumberOfMessages], "0");
    assert_eq!(attributes[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible], "0");
    assert_eq!(attributes[&QueueAttributeName::QueueArn], format!("arn:aws:sqs:us-east-1:000000000000:{QUEUE}"));
}

#[tokio::test]
async fn a_long_poll_waits_for_a_message_and_returns_as_soon_as_it_is_sent() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();

    let started = Instant::now();
    let empty = sqs.receive_message().queue_url(&url).wait_time_seconds(1).send().await.unwrap();
    assert!(empty.messages().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "returned after {:?}", started.elapsed());

    // The message arrives 300 ms into a 20 s poll: the poll returns with it.
    let sender = {
        let (sqs, url) = (sqs.clone(), url.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            sqs.send_message().queue_url(&url).message_body("wake up").send().await.unwrap();
        })
    };
    let started = Instant::now();
    let got = sqs.receive_message().queue_url(&url).wait_time_seconds(20).send().await.unwrap();
    let waited = started.elapsed();
    sender.await.unwrap();
    assert_eq!(got.messages().len(), 1);
    assert!(waited >= Duration::from_millis(250), "returned before the message was sent: {waited:?}");
    assert!(waited < Duration::from_secs(10), "a long poll should return when a message arrives, took {waited:?}");

    let too_long = sqs.receive_message().queue_url(&url).wait_time_seconds(21).send().await.unwrap_err();
    assert_eq!(too_long.code(), Some("InvalidParameterValue"));
}

#[tokio::test]
async fn a_message_not_deleted_comes_back_when_its_visibility_timeout_expires() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();
    sqs.send_message().queue_url(&url).message_body("again").send().await.unwrap();

    let first = sqs.receive_message().queue_url(&url).visibility_timeout(1).send().await.unwrap();
    assert_eq!(first.messages().len(), 1);
    let hidden = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert!(hidden.messages().is_empty(), "in flight: invisible");
    let started = Instant::now();
    let back = sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(5)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap();
    assert_eq!(back.messages().len(), 1, "visible again after 1 s");
    assert!(started.elapsed() < Duration::from_secs(4));
    let m = &back.messages()[0];
    assert_eq!(m.message_id(), first.messages()[0].message_id());
    assert_eq!(
        m.attributes().unwrap().get(&MessageSystemAttributeName::ApproximateReceiveCount).map(String::as_str),
        Some("2")
    );
    // The first receipt is no longer current.
    let stale = sqs
        .change_message_visibility()
        .queue_url(&url)
        .receipt_handle(first.messages()[0].receipt_handle().unwrap())
        .visibility_timeout(10)
        .send()
        .await
        .unwrap_err();
    assert!(stale.as_service_error().is_some_and(|e| e.is_message_not_inflight()), "{stale:?}");

    let batch = sqs
        .change_message_visibility_batch()
        .queue_url(&url)
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("current")
                .receipt_handle(m.receipt_handle().unwrap())
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("garbage")
                .receipt_handle("not-a-handle")
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(batch.successful().iter().map(|e| e.id()).collect::<Vec<_>>(), ["current"]);
    assert_eq!(batch.failed()[0].code(), "ReceiptHandleIsInvalid");
    let now = sqs.receive_message().queue_url(&url).send().await.unwrap();
    assert_eq!(now.messages().len(), 1, "visibility 0 makes it visible at once");
}

#[tokio::test]
async fn batches_hold_at_most_ten_entries_with_distinct_ids() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();

    let eleven: Vec<_> = (0..11).map(|i| entry(&format!("m{i}"), &format!("body {i}"))).collect();
    let err = sqs.send_message_batch().queue_url(&url).set_entries(Some(eleven)).send().await.unwrap_err();
    assert_eq!(err.code(), Some("AWS.SimpleQueueService.TooManyEntriesInBatchRequest"));
    assert!(err.as_service_error().is_some_and(|e| e.is_too_many_entries_in_batch_request()));

    let err = sqs
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("a", "1"))
        .entries(entry("a", "2"))
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_batch_entry_ids_not_distinct()), "{err:?}");
    let err = sqs.send_message_batch().queue_url(&url).set_entries(Some(Vec::new())).send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_empty_batch_request()), "{err:?}");

    let ten: Vec<_> = (0..10).map(|i| entry(&format!("m{i}"), &format!("body {i}"))).collect();
    let sent = sqs.send_message_batch().queue_url(&url).set_entries(Some(ten)).send().await.unwrap();
    assert_eq!(sent.successful().len(), 10);
    for ok in sent.successful() {
        let i: usize = ok.id()[1..].parse().unwrap();
        assert_eq!(ok.md5_of_message_body(), md5_hex(format!("body {i}").as_bytes()));
    }
    // A bad entry fails alone.
    let mixed = sqs
        .send_message_batch()
        .queue_url(&url)
        .entries(entry("good", "fine"))
        .entries(entry("empty", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.successful().len(), 1);
    assert_eq!(mixed.failed()[0].id(), "empty");
    assert!(mixed.failed()[0].sender_fault());

    let got = sqs.receive_message().queue_url(&url).max_number_of_messages(10).send().await.unwrap();
    assert_eq!(got.messages().len(), 10);
    let err = sqs.receive_message().queue_url(&url).max_number_of_messages(11).send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));

    let deletes: Vec<_> = got
        .messages()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("d{i}"))
                .receipt_handle(m.receipt_handle().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    let deleted = sqs.delete_message_batch().queue_url(&url).set_entries(Some(deletes)).send().await.unwrap();
    assert_eq!(deleted.successful().len(), 10);
    assert!(deleted.failed().is_empty());
    let mixed = sqs
        .delete_message_batch()
        .queue_url(&url)
        .entries(DeleteMessageBatchRequestEntry::builder().id("bad").receipt_handle("nonsense").build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(mixed.failed()[0].code(), "ReceiptHandleIsInvalid");
}

#[tokio::test]
async fn a_message_over_1_mib_is_refused_and_one_of_1_mib_is_accepted() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let url = sqs.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();
    let mib = 1024 * 1024;
    let err = sqs.send_message().queue_url(&url).message_body("x".repeat(mib + 1)).send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    assert!(err.message().unwrap_or_default().contains("1048576"), "{err:?}");
    let with_attribute = sqs
        .send_message()
        .queue_url(&url)
        .message_body("x".repeat(mib - 4))
        .message_attributes("name", string_attribute("value"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(with_attribute.code(), Some("InvalidParameterValue"), "attributes count towards the limit");
    let ok = sqs.send_message().queue_url(&url).message_body("x".repeat(mib)).send().await.unwrap();
    assert_eq!(ok.md5_of_message_body(), Some(md5_hex("x".repeat(mib).as_bytes()).as_str()));
    let big: Vec<_> = (0..2).map(|i| entry(&format!("b{i}"), &"y".repeat(mib / 2 + 1))).collect();
    let err = sqs.send_message_batch().queue_url(&url).set_entries(Some(big)).send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_batch_request_too_long()), "{err:?}");
}

#[tokio::test]
async fn unknown_queues_and_unsupported_actions_get_sqs_errors() {
    let endpoint = start(None).await;
    let sqs = client(&endpoint.url).await;
    let err = sqs.get_queue_url().queue_name("no-such-queue").send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "{err:?}");
    assert_eq!(err.code(), Some("AWS.SimpleQueueService.NonExistentQueue"));
    let missing = format!("{}/000000000000/no-such-queue", endpoint.url);
    let err = sqs.send_message().queue_url(&missing).message_body("x").send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "{err:?}");
    let err = sqs.receive_message().queue_url(&missing).send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_queue_does_not_exist()), "{err:?}");

    let err = sqs.purge_queue().queue_url(format!("{}/000000000000/{QUEUE}", endpoint.url)).send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_unsupported_operation()), "{err:?}");
    let err = sqs.create_queue().queue_name("new").send().await.unwrap_err();
    assert_eq!(err.code(), Some("AWS.SimpleQueueService.UnsupportedOperation"));
    let err = sqs
        .get_queue_attributes()
        .queue_url(format!("{}/000000000000/{QUEUE}", endpoint.url))
        .attribute_names(QueueAttributeName::from("Colour"))
        .send()
        .await
        .unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_invalid_attribute_name()), "{err:?}");
    let err = sqs
        .send_message()
        .queue_url(format!("{}/0/{QUEUE}", endpoint.url))
        .message_body("x")
        .message_attributes("AWS.reserved", string_attribute("v"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InvalidParameterValue"));
    let binary = MessageAttributeValue::builder()
        .data_type("Binary")
        .binary_value(aws_sdk_sqs::primitives::Blob::new(b"\x00".to_vec()))
        .build()
        .unwrap();
    let err = sqs
        .send_message()
        .queue_url(format!("{}/0/{QUEUE}", endpoint.url))
        .message_body("x")
        .message_attributes("b", binary)
        .send()
        .await
        .unwrap_err();
    assert!(err.message().unwrap_or_default().contains("Binary"), "{err:?}");
}

/// A raw request: the error shape on the wire, for an action no SDK sends.
#[tokio::test]
async fn an_unknown_action_gets_an_aws_shaped_json_error() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let endpoint = start(None).await;
    let mut stream = tokio::net::TcpStream::connect(endpoint.addr).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonSQS.FlyToTheMoon\r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
        endpoint.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.to_ascii_lowercase().contains("content-type: application/x-amz-json-1.0"), "{response}");
    let body: serde_json::Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["__type"], "com.amazonaws.sqs#UnknownOperationException");
    assert!(body["message"].as_str().unwrap().contains("FlyToTheMoon"), "{body}");
}

#[tokio::test]
async fn with_credentials_only_the_configured_key_id_gets_in_and_a_secret_makes_signatures_count() {
    let key_only = start(Some(Credentials { access_key_id: "AKIDSQSAGA".into(), secret_access_key: None })).await;
    let right = client_with(&key_only.url, "AKIDSQSAGA", "anything").await;
    right.get_queue_url().queue_name(QUEUE).send().await.unwrap();
    let wrong = client_with(&key_only.url, "AKIDOTHER", "anything").await;
    let err = wrong.get_queue_url().queue_name(QUEUE).send().await.unwrap_err();
    assert_eq!(err.code(), Some("InvalidClientTokenId"));

    let signed = start(Some(Credentials {
        access_key_id: "AKIDSQSAGA".into(),
        secret_access_key: Some("s3cr3t-s3cr3t-s3cr3t".into()),
    }))
    .await;
    let right = client_with(&signed.url, "AKIDSQSAGA", "s3cr3t-s3cr3t-s3cr3t").await;
    let url = right.get_queue_url().queue_name(QUEUE).send().await.unwrap().queue_url.unwrap();
    right.send_message().queue_url(&url).message_body("signed").send().await.unwrap();
    let got = right.receive_message().queue_url(&url).send().await.unwrap();
    assert_eq!(got.messages()[0].body(), Some("signed"));
    let forged = client_with(&signed.url, "AKIDSQSAGA", "guessed").await;
    let err = forged.send_message().queue_url(&url).message_body("forged").send().await.unwrap_err();
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_without_credentials() {
    let err = sqsaga_sqs_endpoint::bind("0.0.0.0:0".parse().unwrap(), None).await.unwrap_err();
    assert!(err.to_string().contains("SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID"), "{err}");
    let creds = Credentials { access_key_id: "AKID".into(), secret_access_key: None };
    assert!(sqsaga_sqs_endpoint::bind("0.0.0.0:0".parse().unwrap(), Some(&creds)).await.is_ok());
}
