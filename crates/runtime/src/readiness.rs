//! The readiness loop of the long-running processes: every few seconds it
//! asks the queue (and, for the orchestrator, the saga store) for something
//! cheap — a queue's attributes, `SagaStore::reachable`, both at a cost that
//! does not grow with the sagas stored — and marks the [`Probe`] unready with
//! the reason while that fails and ready again once it answers. (The saga
//! counts /metrics shows are the orchestrator's own bookkeeping, not read
//! here: counting by status costs a read of every saga.)
//!
//! Kept apart from `serve.rs` so it can be tested against a queue double
//! whose `depth` fails on demand: the component under test is this logic,
//! not a backend.

use std::sync::Arc;
use std::time::Duration;

use sqsaga_http::Probe;
use sqsaga_queue::Queue;
use sqsaga_store::SagaStore;
use sqsaga_worker::AnyParticipant;

use crate::shutdown::CancellationToken;

/// How often the processes check their backend: often enough that
/// Kubernetes sees an outage within a probe period or two (its default
/// readiness period is 10 s), rarely enough to cost nothing.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// What the loop watches.
pub struct Watched {
    /// The queue the process consumes.
    pub queue: Arc<dyn Queue>,
    /// Its name, for the reason shown in /readyz.
    pub queue_name: String,
    /// The saga store (orchestrator only).
    pub store: Option<Arc<dyn SagaStore>>,
    /// The participant, whose database is pinged (workers only).
    pub participant: Option<Arc<dyn AnyParticipant>>,
}

/// Runs one check: the `queue` (and `store`) readiness reasons are set or
/// cleared, and the loop's heartbeat recorded.
pub async fn check(probe: &Probe, watched: &Watched) {
    let queue_name = &watched.queue_name;
    match watched.queue.depth(queue_name).await {
        Ok(_) => probe.set_ready("queue"),
        Err(e) => probe.set_unready("queue", format!("queue `{queue_name}` unreachable: {e}")),
    }
    if let Some(store) = &watched.store {
        match store.reachable().await {
            Ok(()) => probe.set_ready("store"),
            Err(e) => probe.set_unready("store", format!("saga store unreachable: {e}")),
        }
    }
    if let Some(participant) = &watched.participant {
        match participant.ping().await {
            Ok(()) => probe.set_ready("database"),
            Err(e) => probe
                .set_unready("database", format!("participant database {} unreachable: {e}", participant.database())),
        }
    }
    probe.heartbeat("readiness");
}

/// Checks every `interval` until `shutdown`.
pub fn spawn(
    probe: Probe,
    watched: Watched,
    interval: Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            check(&probe, &watched).await;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use serde_json::Value;
    use sqsaga_queue::{Depth, OutgoingMessage, QueueError, QueueSpec, Receive, ReceivedMessage};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A queue whose `depth` fails while `down` is set; nothing else is used.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
    }

    #[async_trait]
    impl Queue for Flaky {
        async fn ensure(&self, _: &QueueSpec) -> Result<(), QueueError> {
            Ok(())
        }
        async fn send_batch(&self, _: &str, _: Vec<OutgoingMessage>) -> Result<(), QueueError> {
            Ok(())
        }
        async fn receive(&self, _: &str, _: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
            Ok(Vec::new())
        }
        async fn delete_batch(&self, _: &str, _: &[String]) -> Result<Vec<QueueError>, QueueError> {
            Ok(Vec::new())
        }
        async fn change_visibility(&self, _: &str, _: &str, _: Duration) -> Result<(), QueueError> {
            Ok(())
        }
        async fn depth(&self, _: &str) -> Result<Depth, QueueError> {
            if self.down.load(Ordering::SeqCst) {
                Err(QueueError::Unreachable("connection refused (injected)".into()))
            } else {
                Ok(Depth::default())
            }
        }
    }

    /// `GET path` over a raw socket: status code and body.
    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// Polls until `cond` holds, up to 5 s.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_follows_the_queue_down_and_back_up() {
        let queue = Arc::new(Flaky::default());
        queue.down.store(true, Ordering::SeqCst);
        let probe = Probe::new();
        probe.register_loop("readiness", Duration::from_secs(30));
        let shutdown = CancellationToken::new();
        let app = sqsaga_http::router(probe.clone(), sqsaga_http::Registry::default());
        let addr = "127.0.0.1:0".parse().unwrap();
        let (addr, http) = sqsaga_http::serve(addr, app, shutdown.clone().cancelled_owned()).await.unwrap();
        let watched =
            Watched { queue: queue.clone(), queue_name: "orchestrator".into(), store: None, participant: None };
        let task = spawn(probe.clone(), watched, Duration::from_millis(20), shutdown.clone());

        let p = probe.clone();
        eventually("unready", move || !p.is_ready()).await;
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "not_ready");
        let reason = json["reasons"]["queue"].as_str().unwrap_or_default();
        assert!(reason.contains("queue `orchestrator` unreachable"), "{body}");
        assert!(reason.contains("connection refused"), "{body}");
        // Unreachable is not dead: liveness stays green.
        assert_eq!(get(addr, "/healthz").await.0, 200);

        queue.down.store(false, Ordering::SeqCst);
        let p = probe.clone();
        eventually("ready again", move || p.is_ready()).await;
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ready");

        shutdown.cancel();
        task.await.unwrap();
        http.await.unwrap().unwrap();
    }

    /// A participant whose database is down while `down` is set.
    #[derive(Default)]
    struct FlakyDatabase {
        down: AtomicBool,
    }

    #[async_trait]
    impl AnyParticipant for FlakyDatabase {
        fn contracts(&self) -> Vec<String> {
            Vec::new()
        }
        fn describe(&self, _: &str) -> Option<(&str, sqsaga_core::machine::Phase)> {
            None
        }
        fn compensation_of(&self, _: &str) -> Option<&str> {
            None
        }
        fn database(&self) -> String {
            "postgres://127.0.0.1:5432/inventory".into()
        }
        async fn execute_batch_at(
            &self,
            _: Vec<sqsaga_worker::CommandContext>,
            _: Arc<dyn sqsaga_core::clock::Clock>,
        ) -> Vec<sqsaga_worker::db::JobResult> {
            Vec::new()
        }
        async fn ping(&self) -> Result<(), sqsaga_worker::WorkerError> {
            if self.down.load(Ordering::SeqCst) {
                Err(sqsaga_worker::WorkerError::Database {
                    database: self.database(),
                    cause: "connection refused (injected)".into(),
                    retryable: true,
                })
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_names_the_participant_database_while_it_is_down() {
        let database = Arc::new(FlakyDatabase::default());
        database.down.store(true, Ordering::SeqCst);
        let probe = Probe::new();
        probe.register_loop("readiness", Duration::from_secs(30));
        let watched = Watched {
            queue: Arc::new(Flaky::default()),
            queue_name: "inventory".into(),
            store: None,
            participant: Some(database.clone()),
        };
        check(&probe, &watched).await;
        let app = sqsaga_http::router(probe.clone(), sqsaga_http::Registry::default());
        let shutdown = CancellationToken::new();
        let addr = "127.0.0.1:0".parse().unwrap();
        let (addr, http) = sqsaga_http::serve(addr, app, shutdown.clone().cancelled_owned()).await.unwrap();
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        let reason = json["reasons"]["database"].as_str().unwrap_or_default();
        assert!(reason.contains("participant database postgres://127.0.0.1:5432/inventory unreachable"), "{body}");

        database.down.store(false, Ordering::SeqCst);
        check(&probe, &watched).await;
        let (status, body) = get(addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        shutdown.cancel();
        http.await.unwrap().unwrap();
    }
}
