//! DynamoStore beyond the shared contract, against moto: what its writes
//! cost in requests (a step after a load reads nothing more, a confirmed
//! outbox costs no write of its own), the TTL attribute on terminal sagas,
//! and idle requests that do not grow with the sagas stored.

#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqsaga_aws::{AwsBackend, INDEX_SHARDS, RequestSnapshot, TTL_ATTRIBUTE};
use sqsaga_core::Millis;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_queue::OutgoingMessage;
use sqsaga_store::contract::{instance, with_status};
use sqsaga_store::{OutboxMessage, SagaWrite, WriteOutcome};

fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap()
}

fn create(instance: SagaInstance) -> SagaWrite {
    SagaWrite { instance, expected_revision: None, history: Vec::new(), outbox: Vec::new() }
}

/// DynamoDB requests by action made by `f`.
async fn requests<F, Fut, T>(b: &AwsBackend, f: F) -> (T, BTreeMap<String, u64>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let before: RequestSnapshot = b.dynamodb_requests().snapshot();
    let out = f().await;
    (out, b.dynamodb_requests().snapshot().since(&before).by_action)
}

async fn provisioned() -> AwsBackend {
    let b = common::backend().await;
    b.dynamo().ensure_table(None).await.unwrap();
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_after_a_load_is_one_write_and_its_outbox_is_cleared_by_the_next_commit() {
    let b = provisioned().await;
    let store = b.store();
    let t = now();
    let saga = instance("step-cost", t);
    let command = |body: &str| OutboxMessage { queue: "svc".into(), message: OutgoingMessage::new(body) };
    let mut first = create(saga.clone());
    first.outbox = vec![command("cmd-1")];
    let outcome = store.commit(vec![first]).await.unwrap();
    assert_eq!(outcome, vec![WriteOutcome::Committed { revision: 1, outbox_pending: true }]);

    // Sent: confirming it makes no request.
    let ((), reqs) = requests(&b, || async { store.clear_outbox("step-cost", 1).await.unwrap() }).await;
    assert!(reqs.is_empty(), "clear_outbox made requests: {reqs:?}");

    // The orchestrator's step: a load, then one conditional write.
    let ids = ["step-cost".to_string()];
    let (loaded, reqs) = requests(&b, || store.load(&ids)).await;
    let loaded = loaded.unwrap();
    assert_eq!(reqs, BTreeMap::from([("BatchGetItem".to_string(), 1)]));
    let mut next = loaded[0].instance.clone();
    next.updated_at = t + 5;
    let write = SagaWrite {
        instance: next,
        expected_revision: Some(loaded[0].revision),
        history: Vec::new(),
        outbox: vec![command("cmd-2")],
    };
    let (outcome, reqs) = requests(&b, || store.commit(vec![write])).await;
    assert_eq!(outcome.unwrap(), vec![WriteOutcome::Committed { revision: 2, outbox_pending: true }]);
    assert_eq!(reqs, BTreeMap::from([("UpdateItem".to_string(), 1)]), "one write, no read");

    // The first outbox went with that write; the second is pending.
    let pending = store.pending_outboxes(t + 3_600_000, 100).await.unwrap();
    let revisions: Vec<u64> = pending.iter().filter(|p| p.saga_id == "step-cost").map(|p| p.revision).collect();
    assert_eq!(revisions, vec![2], "{pending:?}");
    b.teardown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminal_sagas_carry_the_ttl_attribute_and_running_ones_do_not() {
    let settings = sqsaga_aws::AwsSettings { retention: Duration::from_secs(7 * 86_400), ..common::fresh_settings() };
    let b = common::backend_with(settings).await;
    b.dynamo().ensure_table(None).await.unwrap();
    assert!(b.dynamo().ttl_enabled().await.unwrap(), "ensure_table turns TTL on");
    let store = b.store();
    let t = now();
    let mut done = with_status(instance("ttl-done", t), SagaStatus::Completed);
    done.updated_at = t + 1_000;
    let running = instance("ttl-running", t);
    store.commit(vec![create(done), create(running)]).await.unwrap();
    let ttl_of = |id: &'static str| {
        let client = b.dynamo().client().clone();
        let table = b.dynamo().table().to_string();
        async move {
            let out = client
                .get_item()
                .table_name(table)
                .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.into()))
                .consistent_read(true)
                .send()
                .await
                .unwrap();
            out.item.unwrap().get(TTL_ATTRIBUTE).map(|v| v.as_n().unwrap().parse::<u64>().unwrap())
        }
    };
    assert_eq!(ttl_of("ttl-done").await, Some((t + 1_000) / 1000 + 7 * 86_400));
    assert_eq!(ttl_of("ttl-running").await, None);
    b.teardown().await.unwrap();
}

/// The idle orchestrator's two periodic reads — the timer pass and the
/// readiness check — cost the same requests with no saga stored and with
/// thousands of finished and waiting ones: they read index ranges that
/// hold only what is due now, and one item no saga has.
///
/// 2,200 sagas by default (storing them takes ~10 s on the emulator);
/// `SQSAGA_IDLE_STORED=100000` runs the size (about 5 minutes of
/// writes on moto), 10% of them waiting and the rest finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_requests_do_not_grow_with_the_sagas_stored() {
    let stored: usize = std::env::var("SQSAGA_IDLE_STORED").ok().and_then(|v| v.parse().ok()).unwrap_or(2_200);
    let (finished, waiting) = (stored - stored / 11, stored / 11);
    let b = provisioned().await;
    let store = b.store();
    let idle = || async {
        let t = now();
        let (due, mut reqs) = requests(&b, || store.due(t, 256)).await;
        assert!(due.unwrap().is_empty());
        let (pending, more) = requests(&b, || store.pending_outboxes(t - 10_000, 100)).await;
        assert!(pending.unwrap().is_empty());
        for (k, v) in more {
            *reqs.entry(format!("sweep:{k}")).or_default() += v;
        }
        let (ok, more) = requests(&b, || store.reachable()).await;
        ok.unwrap();
        for (k, v) in more {
            *reqs.entry(format!("ready:{k}")).or_default() += v;
        }
        reqs
    };
    let empty = idle().await;
    let shards = u64::from(INDEX_SHARDS);
    assert_eq!(
        empty,
        BTreeMap::from([
            ("Query".to_string(), shards),
            ("sweep:Query".to_string(), shards),
            ("ready:GetItem".to_string(), 1)
        ])
    );

    // Thousands of finished sagas, and some waiting for a timer an hour away.
    let t = now();
    let mut writes: Vec<SagaWrite> = (0..finished)
        .map(|i| create(with_status(instance(&format!("idle-done-{i:06}"), t - 60_000), SagaStatus::Completed)))
        .collect();
    writes.extend((0..waiting).map(|i| {
        let mut s = instance(&format!("idle-wait-{i:06}"), t);
        s.steps[0].due_at = Some(t + 3_600_000);
        // And a deadline past it: storing 100,000 takes minutes.
        s.deadline_at = t + 7_200_000;
        create(s)
    }));
    for chunk in writes.chunks(100) {
        let outcomes = store.commit(chunk.to_vec()).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, WriteOutcome::Committed { .. })));
    }
    let full = idle().await;
    eprintln!("idle requests, {stored} sagas stored: {full:?}; none stored: {empty:?}");
    assert_eq!(full, empty, "idle requests with {stored} sagas stored vs none");
    // And the stored sagas are all there to list.
    let counts = store.counts().await.unwrap();
    assert_eq!(counts[&SagaStatus::Completed], finished as u64);
    assert_eq!(counts[&SagaStatus::Running], waiting as u64);
    b.teardown().await.unwrap();
}
