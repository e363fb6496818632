//! Helpers of the DynamoDB adapter's tests: the emulator's endpoint (from
//! `AWS_TEST_ENDPOINT_URL`, which `scripts/test` and `scripts/moto.sh`
//! provide — a missing or silent emulator fails the test, never skips it),
//! SDK configuration with its static credentials, fresh table names, and
//! [`Proxy`], a loopback TCP proxy a test can cut to make the database
//! unreachable and bring back.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::net::SocketAddr;
use std::sync::Mutex;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use sqsaga_aws::{retry_config, timeout_config};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// The variable naming the emulator's endpoint.
pub const ENDPOINT_VAR: &str = "AWS_TEST_ENDPOINT_URL";

const HOW: &str = "Run `scripts/test` (it starts moto and sets it), or `scripts/moto.sh start && eval \
                   \"$(scripts/moto.sh env)\"` and run the tests again.";

/// The emulator's endpoint, checked to accept connections; panics with
/// what to do when it is not set or does not answer.
pub async fn endpoint() -> String {
    let endpoint = match std::env::var(ENDPOINT_VAR) {
        Ok(e) if !e.trim().is_empty() => e.trim().to_string(),
        _ => panic!("{ENDPOINT_VAR} is not set: the DynamoDB adapter's tests run against the moto emulator. {HOW}"),
    };
    if let Err(e) = TcpStream::connect(upstream(&endpoint)).await {
        panic!("the moto emulator at {endpoint} ({ENDPOINT_VAR}) does not answer: {e}. {HOW}");
    }
    endpoint
}

/// `host:port` of an `http://host:port` endpoint.
fn upstream(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map(|(_, r)| r).unwrap_or(endpoint);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// SDK configuration for `endpoint` with static test credentials.
pub async fn sdk_config_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "sqsaga-tests"))
        .retry_config(retry_config(3))
        .timeout_config(timeout_config())
        .load()
        .await
}

/// A short random tag, for table names.
pub fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// A loopback TCP proxy to the emulator: while down, it refuses
/// connections and has cut the open ones, as an unreachable DynamoDB would.
pub struct Proxy {
    /// Where clients connect.
    addr: SocketAddr,
    /// The emulator's `host:port`.
    upstream: String,
    /// The accept loop, which owns every connection: aborting it cuts them all.
    serving: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// A proxy on a free loopback port to `endpoint`'s host and port, up.
    pub async fn start(endpoint: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy =
            Proxy { addr: listener.local_addr().unwrap(), upstream: upstream(endpoint), serving: Mutex::new(None) };
        proxy.serve(listener);
        proxy
    }

    /// The proxy's endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cuts every connection and refuses new ones (`true`), or listens
    /// again on the same port (`false`).
    pub async fn set_down(&self, down: bool) -> Result<(), String> {
        if let Some(serving) = self.serving.lock().unwrap().take() {
            serving.abort();
        }
        if !down {
            // tokio sets SO_REUSEADDR: the port is ours again at once.
            let listener = TcpListener::bind(self.addr).await.map_err(|e| format!("rebinding {}: {e}", self.addr))?;
            self.serve(listener);
        }
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.serving.lock().unwrap() = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(mut serving) = self.serving.lock()
            && let Some(task) = serving.take()
        {
            task.abort();
        }
    }
}
