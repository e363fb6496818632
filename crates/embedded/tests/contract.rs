//! The embedded backend against the shared queue and store contracts, plus
//! what only SQLite has to prove: several processes on one data directory,
//! group commit under concurrency, the outbox in the same transaction as the
//! state, idle long polls that do not write, and corrupt rows reported as
//! errors.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_queue::{OutgoingMessage, Queue, QueueError, QueueSpec, Receive};
use sqsaga_store::contract::instance;
use sqsaga_store::{DeleteWhen, HistoryEntry, OutboxMessage, SagaStore, SagaWrite, StoreError, WriteOutcome};
use tempfile::TempDir;
use tokio::time::Instant;

fn backend() -> (TempDir, EmbeddedBackend) {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    (dir, backend)
}

fn quick(name: &str) -> QueueSpec {
    QueueSpec { visibility_timeout: Duration::from_secs(30), ..QueueSpec::named(name) }
}

fn create_with(instance_id: &str, outbox: Vec<OutboxMessage>) -> SagaWrite {
    SagaWrite {
        instance: instance(instance_id, 1_000),
        expected_revision: None,
        history: vec![HistoryEntry { at: 1_000, event: "start".into(), note: "started".into() }],
        outbox,
    }
}

fn to(queue: &str, body: &str) -> OutboxMessage {
    OutboxMessage { queue: queue.to_string(), message: OutgoingMessage::new(body) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_and_store_contracts_run_all() {
    let (_dir, b) = backend();
    let queue = b.queue();
    let store = b.store();
    if let Err(e) = sqsaga_queue::contract::run_all(&*queue, "all").await {
        panic!("{e}");
    }
    if let Err(e) = sqsaga_store::contract::run_all(&*store, &*queue, "all").await {
        panic!("{e}");
    }
}

/// One test per queue case, each on its own directory, so a failure names its case.
macro_rules! queue_cases {
    ($($case:ident),* $(,)?) => {
        mod queue_contract {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (_dir, b) = backend();
                    if let Err(e) = sqsaga_queue::contract::$case(&*b.queue(), "case").await {
                        panic!("{e}");
                    }
                }
            )*
        }
    };
}

queue_cases!(
    round_trip,
    batch_limits,
    size_limit,
    delay,
    visibility_expiry,
    stale_receipt_loses_nothing,
    change_visibility_zero,
    max_receive_count_to_dlq,
    dead_letter,
    redrive_moves_once,
    long_poll_wakes,
    depth,
    missing_queue,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_on_one_dir_see_each_other_and_long_polls_wake_via_data_version() {
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    let b = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    a.queue().ensure(&quick("shared")).await.unwrap();

    // B sees a queue A created and a message A sent.
    a.queue().send("shared", OutgoingMessage::new("from a")).await.unwrap();
    let got = b.queue().receive("shared", Receive::up_to(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "from a");
    b.queue().delete_batch("shared", &[got[0].receipt_handle.clone()]).await.unwrap();

    // A long poll in B wakes when A sends: no local Notify crosses processes,
    // so this goes through the data_version watcher.
    let mut latencies = Vec::new();
    for round in 0..5 {
        let bq = b.queue();
        let poll = tokio::spawn(async move {
            let got = bq.receive("shared", Receive::up_to(1).wait(Duration::from_secs(10))).await.unwrap();
            (got, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.queue().send("shared", OutgoingMessage::new(format!("wake {round}"))).await.unwrap();
        let sent_at = Instant::now();
        let (got, woke_at) = poll.await.unwrap();
        assert_eq!(got.len(), 1, "round {round}: the long poll returned nothing");
        latencies.push(woke_at.saturating_duration_since(sent_at));
        b.queue().delete_batch("shared", &[got[0].receipt_handle.clone()]).await.unwrap();
    }
    eprintln!("cross-process long-poll wake latencies: {latencies:?}");
    for l in &latencies {
        assert!(*l < Duration::from_millis(200), "cross-process wake took {l:?}: {latencies:?}");
    }

    // A saga written by A is visible to B.
    let write = create_with("shared-saga", vec![]);
    a.store().commit(vec![write]).await.unwrap();
    let loaded = b.store().load(&["shared-saga".to_string()]).await.unwrap();
    assert_eq!(loaded.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_sends_share_commits() {
    let (_dir, b) = backend();
    b.queue().ensure(&quick("busy")).await.unwrap();
    let (jobs0, commits0) = (b.jobs(), b.commits());
    const TASKS: usize = 50;
    const SENDS: usize = 20;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let q = b.queue();
        tasks.push(tokio::spawn(async move {
            for i in 0..SENDS {
                q.send("busy", OutgoingMessage::new(format!("{t}-{i}"))).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed();
    let jobs = b.jobs() - jobs0;
    let commits = b.commits() - commits0;
    eprintln!(
        "{jobs} send jobs in {commits} commits ({:.3} commits per job) in {took:?}",
        commits as f64 / jobs as f64
    );
    assert_eq!(jobs, (TASKS * SENDS) as u64);
    assert!(commits < jobs / 2, "group commit is not batching: {commits} commits for {jobs} jobs");
    let depth = b.queue().depth("busy").await.unwrap();
    assert_eq!(depth.visible, (TASKS * SENDS) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_is_atomic_with_the_state() {
    let (_dir, b) = backend();
    let (q, s) = (b.queue(), b.store());
    q.ensure(&quick("svc")).await.unwrap();

    // Committed: the message is in the queue at once, nothing to sweep.
    let out = s.commit(vec![create_with("atomic", vec![to("svc", "cmd-1")])]).await.unwrap();
    assert_eq!(out, vec![WriteOutcome::Committed { revision: 1, outbox_pending: false }]);
    assert_eq!(q.depth("svc").await.unwrap().visible, 1);
    assert!(s.pending_outboxes(u64::MAX, 100).await.unwrap().is_empty());

    // Conflict: the message is not.
    let mut stale = create_with("atomic", vec![to("svc", "cmd-stale")]);
    stale.expected_revision = Some(7);
    assert_eq!(s.commit(vec![stale]).await.unwrap(), vec![WriteOutcome::Conflict]);
    assert_eq!(q.depth("svc").await.unwrap().visible, 1);

    // A duplicate create does not send either.
    let dup = create_with("atomic", vec![to("svc", "cmd-dup")]);
    assert_eq!(s.commit(vec![dup]).await.unwrap(), vec![WriteOutcome::AlreadyExists]);
    assert_eq!(q.depth("svc").await.unwrap().visible, 1);

    // An outbox to a missing queue fails the whole call, naming the queue.
    let err = s
        .commit(vec![
            create_with("atomic-ok", vec![to("svc", "cmd-ok")]),
            create_with("atomic-bad", vec![to("nowhere", "cmd-bad")]),
        ])
        .await
        .unwrap_err();
    assert!(matches!(&err, StoreError::Queue(QueueError::NoSuchQueue(q)) if q == "nowhere"), "{err:?}");
    assert!(err.to_string().contains("nowhere"), "{err}");
    let ids = ["atomic-ok".to_string(), "atomic-bad".to_string()];
    assert!(s.load(&ids).await.unwrap().is_empty());
    assert_eq!(q.depth("svc").await.unwrap().visible, 1);

    // The outbox wakes a long poll waiting on its queue.
    let qq = q.clone();
    q.receive("svc", Receive::up_to(10)).await.unwrap();
    let poll =
        tokio::spawn(async move { qq.receive("svc", Receive::up_to(1).wait(Duration::from_secs(10))).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut next = create_with("atomic", vec![to("svc", "cmd-2")]);
    next.expected_revision = Some(1);
    let started = Instant::now();
    s.commit(vec![next]).await.unwrap();
    let got = poll.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "cmd-2");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_long_poll_does_not_write() {
    let (_dir, b) = backend();
    b.queue().ensure(&quick("idle")).await.unwrap();
    let (jobs, commits) = (b.jobs(), b.commits());
    let got = b.queue().receive("idle", Receive::up_to(10).wait(Duration::from_millis(1500))).await.unwrap();
    assert!(got.is_empty());
    assert_eq!((b.jobs(), b.commits()), (jobs, commits), "an idle long poll wrote");
    // Ensuring an unchanged queue again does not write either.
    b.queue().ensure(&quick("idle")).await.unwrap();
    assert_eq!(b.jobs(), jobs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_when_a_delayed_message_becomes_visible() {
    let (_dir, b) = backend();
    b.queue().ensure(&quick("timer")).await.unwrap();
    b.queue().send("timer", OutgoingMessage::new("later").with_delay(Duration::from_secs(1))).await.unwrap();
    let start = Instant::now();
    let got = b.queue().receive("timer", Receive::up_to(1).wait(Duration::from_secs(10))).await.unwrap();
    let took = start.elapsed();
    assert_eq!(got.len(), 1);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(1500), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_policy_records_reason_and_dead_letter_is_one_job() {
    let (_dir, b) = backend();
    let q = b.queue();
    q.ensure(&QueueSpec { max_receive_count: 1, ..quick("pois") }).await.unwrap();
    q.send("pois", OutgoingMessage::new("p")).await.unwrap();
    let m = q.receive("pois", Receive::up_to(1)).await.unwrap();
    q.change_visibility("pois", &m[0].receipt_handle, Duration::ZERO).await.unwrap();
    assert!(q.receive("pois", Receive::up_to(1)).await.unwrap().is_empty());
    let dead = q.receive("pois-dlq", Receive::up_to(1)).await.unwrap();
    assert_eq!(dead[0].attributes["sqsaga-dlq-reason"], "maxReceiveCount (1) exceeded");
    assert_eq!(dead[0].attributes["sqsaga-dlq-source"], "pois");
    assert_eq!(dead[0].receive_count, 1, "the receive count restarts in the DLQ");

    q.send("pois", OutgoingMessage::new("q")).await.unwrap();
    let m = q.receive("pois", Receive::up_to(1)).await.unwrap();
    let jobs = b.jobs();
    q.dead_letter("pois", &m[0], "bad").await.unwrap();
    assert_eq!(b.jobs() - jobs, 1, "dead_letter should be one job");
    // The old receipt is now stale.
    let failed = q.delete_batch("pois", &[m[0].receipt_handle.clone()]).await.unwrap();
    assert!(matches!(failed.as_slice(), [QueueError::StaleReceipt(_)]), "{failed:?}");
    let again = q.dead_letter("pois", &m[0], "bad").await;
    assert!(matches!(again, Err(QueueError::StaleReceipt(_))), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(sqsaga_core::clock::ManualClock::at_wall_clock());
    let b = EmbeddedBackend::open_with_clock(dir.path(), Sync::Full, clock.clone()).unwrap();
    let q = b.queue();
    q.ensure(&QueueSpec { retention: Duration::from_millis(500), ..quick("short") }).await.unwrap();
    q.send("short", OutgoingMessage::new("stale")).await.unwrap();
    clock.advance(Duration::from_millis(800));
    assert_eq!(q.depth("short").await.unwrap(), Default::default());
    let got = q.receive("short", Receive::up_to(10).wait(Duration::from_millis(300))).await.unwrap();
    assert!(got.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_is_an_error_not_a_panic() {
    let (dir, b) = backend();
    b.store().commit(vec![create_with("broken", vec![])]).await.unwrap();
    let conn = rusqlite::Connection::open(b.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute("UPDATE sagas SET state = '{not json' WHERE id = 'broken'", []).unwrap();
    let err = b.store().load(&["broken".to_string()]).await.unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { id, .. } if id == "broken"), "{err:?}");
    assert!(!err.is_retryable());
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_messages_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let b = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
        b.queue().ensure(&quick("keep")).await.unwrap();
        b.store().commit(vec![create_with("kept", vec![to("keep", "cmd")])]).await.unwrap();
        assert!(b.path().ends_with("sqsaga.db"));
    }
    let b = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    let loaded = b.store().load(&["kept".to_string()]).await.unwrap();
    assert_eq!(loaded[0].revision, 1);
    assert_eq!(loaded[0].instance.input, json!({ "order": "kept" }));
    let got = b.queue().receive("keep", Receive::up_to(1)).await.unwrap();
    assert_eq!(got[0].body, "cmd");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_is_shareable() {
    fn assert_send_sync<T: Send + std::marker::Sync + Clone>() {}
    assert_send_sync::<EmbeddedBackend>();
    let (_dir, b) = backend();
    let q: Arc<dyn Queue> = b.queue();
    let s: Arc<dyn SagaStore> = b.store();
    assert!(matches!(q.receive("nope", Receive::up_to(1)).await, Err(QueueError::NoSuchQueue(_))));
    assert!(s.counts().await.unwrap().values().all(|n| *n == 0));
}

/// A directory written by the first schema (a UNIQUE index on message ids,
/// a rowid history table) opens under the current one with its messages,
/// sagas and history intact, and works on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_directory_is_migrated_with_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("sqsaga.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE queues (name TEXT PRIMARY KEY, visibility_ms INTEGER NOT NULL, \
               max_receive_count INTEGER NOT NULL, retention_ms INTEGER NOT NULL, dlq TEXT);
             CREATE TABLE messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, queue TEXT NOT NULL, \
               message_id TEXT NOT NULL UNIQUE, body TEXT NOT NULL, attributes TEXT NOT NULL, \
               sent_at INTEGER NOT NULL, visible_at INTEGER NOT NULL, receive_count INTEGER NOT NULL DEFAULT 0, \
               receipt TEXT, expires_at INTEGER NOT NULL);
             CREATE INDEX messages_by_visibility ON messages (queue, visible_at, seq);
             CREATE TABLE sagas (id TEXT PRIMARY KEY, saga TEXT NOT NULL, version INTEGER NOT NULL, \
               status TEXT NOT NULL, revision INTEGER NOT NULL, state TEXT NOT NULL, next_due_at INTEGER, \
               outbox TEXT, started_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
             CREATE TABLE history (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL, \
               event TEXT NOT NULL, note TEXT NOT NULL, PRIMARY KEY (saga_id, seq));
             INSERT INTO queues VALUES ('old', 30000, 0, 345600000, NULL);
             INSERT INTO messages (queue, message_id, body, attributes, sent_at, visible_at, expires_at) \
               VALUES ('old', 'm-1', 'kept', '{}', 1, 1, 9999999999999);
             INSERT INTO history VALUES ('s-1', 1, 5, 'start', 'kept too');
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let b = EmbeddedBackend::open(dir.path(), Sync::Full).unwrap();
    let got = b.queue().receive("old", Receive::up_to(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].message_id.as_str(), got[0].body.as_str()), ("m-1", "kept"));
    let history = b.store().history("s-1").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].note, "kept too");
    // New rows go in, and the message id index is gone.
    b.queue().send("old", OutgoingMessage::new("new")).await.unwrap();
    assert_eq!(b.queue().depth("old").await.unwrap().visible, 1);
    drop(b);
    let conn = rusqlite::Connection::open(dir.path().join("sqsaga.db")).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 2);
    let unique: i64 = conn
        .query_row("SELECT COUNT(*) FROM pragma_index_list('messages') WHERE \"unique\" = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(unique, 0, "the message id index survived the migration");
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM pragma_index_list('messages') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(indexes, vec!["messages_by_visibility".to_string()]);
    let leftovers: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name LIKE '%_v1'", [], |r| r.get(0)).unwrap();
    assert_eq!(leftovers, 0);
}

/// Consumed messages go with the write they caused: deleted when it
/// commits, kept (to come back) when it conflicts; `always` regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_of_work_deletes_only_with_a_committed_write() {
    let (_dir, b) = backend();
    let (q, s) = (b.queue(), b.store());
    q.ensure(&quick("orch")).await.unwrap();
    for body in ["for-ok", "for-conflict", "heartbeat"] {
        q.send("orch", OutgoingMessage::new(body)).await.unwrap();
    }
    let got = q.receive("orch", Receive::up_to(10)).await.unwrap();
    assert_eq!(got.len(), 3);
    let receipt = |body: &str| got.iter().find(|m| m.body == body).unwrap().receipt_handle.clone();
    let mut conflicting = create_with("consumer-b", Vec::new());
    conflicting.expected_revision = Some(9);
    let consumed =
        |body: &str, when| sqsaga_store::ConsumedMessage { queue: "orch".to_string(), receipt: receipt(body), when };
    let unit = sqsaga_store::UnitOfWork {
        writes: vec![create_with("consumer-a", Vec::new()), conflicting],
        consumed: vec![
            consumed("for-ok", DeleteWhen::Committed(0)),
            consumed("for-conflict", DeleteWhen::Committed(1)),
            consumed("heartbeat", DeleteWhen::Always),
        ],
    };
    let done = s.commit_unit(unit).await.unwrap();
    assert_eq!(
        done.outcomes,
        vec![WriteOutcome::Committed { revision: 1, outbox_pending: false }, WriteOutcome::Conflict]
    );
    assert_eq!(done.consumption, sqsaga_store::Consumption::Deleted { failed: Vec::new() });
    let depth = q.depth("orch").await.unwrap();
    assert_eq!((depth.visible, depth.in_flight), (0, 1), "only the conflicting write's message is left");
    // What is left is that one: its receipt still deletes it.
    assert!(q.delete_batch("orch", &[receipt("for-conflict")]).await.unwrap().is_empty());
}

/// A worker's replies and the deletes of its commands commit together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_then_delete_is_one_job_and_deletes_nothing_when_the_send_fails() {
    let (_dir, b) = backend();
    let q = b.queue();
    q.ensure(&quick("svc")).await.unwrap();
    q.ensure(&quick("replies")).await.unwrap();
    q.send_batch("svc", vec![OutgoingMessage::new("c1"), OutgoingMessage::new("c2")]).await.unwrap();
    let got = q.receive("svc", Receive::up_to(10)).await.unwrap();
    let receipts: Vec<String> = got.iter().map(|m| m.receipt_handle.clone()).collect();

    // The reply queue is missing: nothing is deleted.
    let err = q.send_then_delete("nowhere", vec![OutgoingMessage::new("r")], "svc", &receipts).await.unwrap_err();
    assert!(matches!(&err, QueueError::NoSuchQueue(name) if name == "nowhere"), "{err:?}");
    assert_eq!(q.depth("svc").await.unwrap().in_flight, 2);
    // The queue the commands came from is missing: nothing is sent.
    let err = q.send_then_delete("replies", vec![OutgoingMessage::new("r")], "gone", &receipts).await.unwrap_err();
    assert!(matches!(&err, QueueError::NoSuchQueue(name) if name == "gone"), "{err:?}");
    assert_eq!(q.depth("replies").await.unwrap().visible, 0);

    // One job for both (a failed job's error can come back before its batch
    // is counted, so count from a job that succeeded).
    q.send("replies", OutgoingMessage::new("r0")).await.unwrap();
    let jobs = b.jobs();
    let replies = vec![OutgoingMessage::new("r1"), OutgoingMessage::new("r2")];
    let failed = q.send_then_delete("replies", replies, "svc", &receipts).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(b.jobs(), jobs + 1, "replies and deletes took more than one job");
    assert_eq!(q.depth("svc").await.unwrap(), sqsaga_queue::Depth { visible: 0, in_flight: 0, delayed: 0 });
    assert_eq!(q.depth("replies").await.unwrap().visible, 3);
    // A stale receipt fails alone.
    let failed = q.send_then_delete("replies", Vec::new(), "svc", &receipts[..1]).await.unwrap();
    assert!(matches!(failed.as_slice(), [QueueError::StaleReceipt(_)]), "{failed:?}");
}
