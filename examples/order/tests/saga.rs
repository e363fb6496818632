//! The order saga as its author tests it: the definition
//! (`create_order.yaml`) on the time-skipping harness, every participant
//! played by the test with scripted replies, failures and lost commands,
//! time moved by hand. No worker, no sleep: each test takes milliseconds
//! even when it waits out the 2-minute deadline.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_core::machine::{Phase, SagaStatus};
use sqsaga_testing::SagaTest;

const ORDER_SAGA: &str = include_str!("../create_order.yaml");

fn order() -> Value {
    json!({"order_id": "o-1", "sku": "sku-widget", "qty": 2, "account": "acct-alice", "amount": 2598})
}

/// A harness with one order started.
async fn started() -> SagaTest {
    let mut t = SagaTest::new(ORDER_SAGA).await.unwrap();
    t.start("saga-1", "create_order", order()).await.unwrap();
    t
}

/// The command names dispatched so far, in order.
fn names(t: &SagaTest) -> Vec<String> {
    t.dispatched().into_iter().map(|c| c.command).collect()
}

async fn events(t: &SagaTest) -> Vec<String> {
    t.history("saga-1").await.unwrap().into_iter().map(|h| h.event).collect()
}

#[tokio::test]
async fn every_step_succeeding_completes_the_order() {
    let mut t = started().await;
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Running));
    let reserve = t.succeed("inventory.reserve", json!({"reservation": "o-1"})).await.unwrap();
    assert_eq!((reserve.step, reserve.phase, reserve.attempt), (0, Phase::Action, 1));
    assert_eq!(reserve.payload["input"], order(), "a command carries the saga input");
    let charge = t.succeed("payment.charge", json!({"charge": "o-1"})).await.unwrap();
    assert_eq!(charge.payload["outputs"]["reserve_stock"], json!({"reservation": "o-1"}), "and earlier outputs");
    t.succeed("notification.send", json!({"confirmation": "o-1"})).await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Completed));
    assert_eq!(names(&t), ["inventory.reserve", "payment.charge", "notification.send"]);
    assert_eq!(events(&t).await, ["start", "reply", "reply", "reply"]);
}

#[tokio::test]
async fn a_declined_charge_releases_the_reservation() {
    let mut t = started().await;
    t.succeed("inventory.reserve", json!({})).await.unwrap();
    t.refuse("payment.charge", "card declined").await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Compensating));
    let release = t.succeed("inventory.release", json!({"released": 2})).await.unwrap();
    assert_eq!((release.step, release.phase), (0, Phase::Compensation));
    let saga = t.saga("saga-1").await.unwrap().unwrap();
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert!(saga.reason.unwrap().contains("card declined"));
    assert_eq!(names(&t), ["inventory.reserve", "payment.charge", "inventory.release"]);
    assert!(t.pending("notification").is_empty(), "the confirmation is never sent");
}

#[tokio::test]
async fn a_transient_failure_is_retried_after_its_backoff() {
    let mut t = started().await;
    t.succeed("inventory.reserve", json!({})).await.unwrap();
    t.fail("payment.charge", "bank timeout").await.unwrap();
    assert!(t.pending("payment").is_empty(), "no retry before the backoff");
    // Backoff starts at 50 ms (with jitter); a second is plenty.
    t.advance(Duration::from_secs(1)).await.unwrap();
    let retry = t.pending("payment");
    assert_eq!(retry.len(), 1, "{retry:?}");
    assert_eq!(retry[0].attempt, 2);
    t.succeed("payment.charge", json!({})).await.unwrap();
    t.succeed("notification.send", json!({})).await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Completed));
}

#[tokio::test]
async fn a_confirmation_lost_for_good_is_fenced_at_the_deadline_and_the_order_undone() {
    let mut t = started().await;
    t.succeed("inventory.reserve", json!({})).await.unwrap();
    t.succeed("payment.charge", json!({})).await.unwrap();
    t.lose("notification.send").await.unwrap();
    // Nothing answers: the saga waits (no queue timeout in this definition)
    // until its 2-minute deadline, which the harness reaches at once.
    t.advance(Duration::from_secs(119)).await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Running));
    t.advance(Duration::from_secs(2)).await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Compensating));
    // The step cannot be undone, so it is fenced: the worker's barrier
    // blocks the action for good (it never ran).
    t.succeed(sqsaga_core::machine::FENCE_COMMAND, json!({"fence": "prevented"})).await.unwrap();
    t.succeed("payment.refund", json!({})).await.unwrap();
    t.succeed("inventory.release", json!({})).await.unwrap();
    assert_eq!(t.status("saga-1").await.unwrap(), Some(SagaStatus::Compensated));
    assert_eq!(
        names(&t),
        [
            "inventory.reserve",
            "payment.charge",
            "notification.send",
            sqsaga_core::machine::FENCE_COMMAND,
            "payment.refund",
            "inventory.release"
        ]
    );
    assert_eq!(events(&t).await.last().map(String::as_str), Some("reply"));
    assert!(t.now() - sqsaga_testing::harness::START >= 120_000, "two minutes passed, simulated");
}
