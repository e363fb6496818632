//! The endpoint on a real embedded backend in a temporary directory, on a
//! free loopback port, and an unmodified Rust SDK client pointed at it.
#![allow(dead_code, reason = "each test binary uses part of the support module")]
#![allow(clippy::unwrap_used, reason = "test support: a failure is the test failing")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use sqsaga_core::clock::SystemClock;
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_queue::{Queue, QueueSpec};
use sqsaga_sqs_endpoint::{Credentials, EndpointOptions, bind, serve_on};
use tokio_util::sync::CancellationToken;

/// The queue every test uses (with its DLQ, `jobs-dlq`).
pub const QUEUE: &str = "jobs";

/// A running endpoint; stops when dropped.
pub struct Endpoint {
    pub url: String,
    pub addr: SocketAddr,
    pub queue: Arc<dyn Queue>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An endpoint over a fresh embedded backend with queue [`QUEUE`] (30 s
/// visibility, like sqsaga's), checking `credentials` if given.
pub async fn start(credentials: Option<Credentials>) -> Endpoint {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Normal).unwrap();
    let queue: Arc<dyn Queue> = backend.queue();
    queue.ensure(&QueueSpec::named(QUEUE)).await.unwrap();
    let shutdown = CancellationToken::new();
    let listener = bind("127.0.0.1:0".parse().unwrap(), credentials.as_ref()).await.unwrap();
    let options = EndpointOptions { credentials, clock: Arc::new(SystemClock) };
    let (addr, _task) = serve_on(listener, queue.clone(), options, shutdown.clone()).unwrap();
    Endpoint { url: format!("http://{addr}"), addr, queue, shutdown, _dir: dir }
}

/// An SDK client for `url` signing with the given key.
pub async fn client_with(url: &str, access_key_id: &str, secret: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(access_key_id, secret, None, None, "test"))
        .load()
        .await;
    let config = aws_sdk_sqs::config::Builder::from(&config)
        // Errors are what some tests are about: no retries hiding them.
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

pub async fn client(url: &str) -> aws_sdk_sqs::Client {
    client_with(url, "testing", "testing").await
}

/// MD5 of a body, computed here independently of the endpoint.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// MD5 of message attributes `(name -> (data type, value))` per the SQS
/// Developer Guide, computed here independently of the endpoint.
pub fn md5_of_attributes(attributes: &BTreeMap<String, (String, String)>) -> String {
    let mut bytes = Vec::new();
    for (name, (data_type, value)) in attributes {
        for part in [name.as_bytes(), data_type.as_bytes()] {
            bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bytes.extend_from_slice(part);
        }
        bytes.push(1);
        bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
        bytes.extend_from_slice(value.as_bytes());
    }
    md5_hex(&bytes)
}
