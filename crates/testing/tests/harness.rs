//! The harness itself, on a two-step definition of its own: scripted
//! replies, a lost command answered by its timeout at exactly its due time,
//! real handlers on an in-memory database, and the errors that name what a
//! test asked for.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_core::machine::{Phase, SagaStatus};
use sqsaga_testing::participant::MemoryDb;
use sqsaga_testing::{HarnessError, SagaTest};
use sqsaga_worker::{CommandContext, HandlerError, Participant};

/// Two steps on two services; each attempt may wait 1 s in its queue and
/// run 2 s, so an unanswered command is due again 3 s after it was sent.
const TRANSFER: &str = "
name: transfer
version: 1
deadline: 1m
defaults:
  timeout: 2s
  queueTimeout: 1s
  retry: { maxAttempts: 3, initialBackoff: 100ms, maxBackoff: 1s, multiplier: 2.0, jitter: 0.0 }
steps:
  - name: debit
    service: bank
    action: bank.debit
    compensation: bank.credit
    contract: bank/v1
  - name: ship
    service: shop
    action: shop.ship
    compensation: shop.cancel
    contract: shop/v1
";

async fn started() -> SagaTest {
    let mut t = SagaTest::new(TRANSFER).await.unwrap();
    t.start("t-1", "transfer", json!({"amount": 5})).await.unwrap();
    t
}

#[tokio::test]
async fn a_lost_command_times_out_when_its_timer_is_due_and_not_a_millisecond_before() {
    let mut t = started().await;
    let sent = t.now();
    t.lose("bank.debit").await.unwrap();
    t.advance(Duration::from_millis(2_999)).await.unwrap();
    assert_eq!(t.status("t-1").await.unwrap(), Some(SagaStatus::Running), "timed out before its 3 s were up");
    t.advance(Duration::from_millis(1)).await.unwrap();
    assert_eq!(t.now() - sent, 3_000);
    // In doubt (it may have run): compensated.
    let pending = t.pending("bank");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!((pending[0].command.as_str(), pending[0].phase), ("bank.credit", Phase::Compensation));
    t.succeed("bank.credit", json!({})).await.unwrap();
    let saga = t.saga("t-1").await.unwrap().unwrap();
    assert_eq!(saga.status, SagaStatus::Compensated);
    assert!(saga.reason.unwrap().contains("timed out"));
    let history: Vec<String> = t.history("t-1").await.unwrap().into_iter().map(|h| h.event).collect();
    assert_eq!(history, ["start", "wake", "reply"]);
}

#[tokio::test]
async fn transient_failures_are_retried_after_their_backoff_until_attempts_run_out() {
    let mut t = started().await;
    t.succeed("bank.debit", json!({})).await.unwrap();
    t.fail("shop.ship", "warehouse offline").await.unwrap();
    // No jitter: the first backoff is exactly 100 ms.
    t.advance(Duration::from_millis(99)).await.unwrap();
    assert!(t.pending("shop").is_empty(), "retried before its backoff");
    t.advance(Duration::from_millis(1)).await.unwrap();
    assert_eq!(t.pending("shop")[0].attempt, 2);
    t.fail("shop.ship", "warehouse offline").await.unwrap();
    t.advance(Duration::from_millis(200)).await.unwrap();
    t.fail("shop.ship", "warehouse offline").await.unwrap();
    // Out of attempts: the last one may still run from a redelivery, so it
    // is compensated too, then the debit, in reverse order.
    let cancel = t.succeed("shop.cancel", json!({})).await.unwrap();
    assert_eq!((cancel.step, cancel.phase), (1, Phase::Compensation));
    t.succeed("bank.credit", json!({})).await.unwrap();
    assert_eq!(t.status("t-1").await.unwrap(), Some(SagaStatus::Compensated));
    let attempts: Vec<u32> = t.dispatched().iter().filter(|c| c.command == "shop.ship").map(|c| c.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
}

/// A participant whose `bank.debit` refuses amounts over 10 and records
/// the others in its own table.
fn bank() -> Arc<Participant<MemoryDb>> {
    let db = MemoryDb::open("bank", "CREATE TABLE debits (saga TEXT PRIMARY KEY, amount INTEGER);").unwrap();
    let mut p = Participant::new(db);
    let debit = |tx: &rusqlite::Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
        let amount = ctx.input()["amount"].as_i64().unwrap_or(0);
        if amount > 10 {
            return Err(HandlerError::Refused(format!("{amount} is over the limit")));
        }
        tx.execute("INSERT INTO debits VALUES (?1, ?2)", rusqlite::params![ctx.saga_id, amount])
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        Ok(json!({"debited": amount}))
    };
    let credit = |tx: &rusqlite::Transaction<'_>, ctx: &CommandContext| -> Result<Value, HandlerError> {
        tx.execute("DELETE FROM debits WHERE saga = ?1", [&ctx.saga_id])
            .map_err(|e| HandlerError::Transient(e.to_string()))?;
        Ok(json!({}))
    };
    p.register("bank/v1", "bank.debit", Box::new(debit), Some(("bank.credit", Box::new(credit))));
    Arc::new(p)
}

fn debits(p: &Participant<MemoryDb>) -> i64 {
    p.db().with(|c| c.query_row("SELECT count(*) FROM debits", [], |r| r.get(0)).unwrap())
}

#[tokio::test]
async fn real_handlers_and_scripted_replies_mix() {
    let mut t = SagaTest::new(TRANSFER).await.unwrap();
    let p = bank();
    t.serve("bank", p.clone()).await.unwrap();
    t.start("small", "transfer", json!({"amount": 5})).await.unwrap();
    t.start("large", "transfer", json!({"amount": 50})).await.unwrap();
    assert_eq!(t.status("large").await.unwrap(), Some(SagaStatus::Compensated), "refused by the real handler");
    assert_eq!(debits(&p), 1);
    let ship = t.pending("shop");
    assert_eq!(ship.len(), 1);
    assert_eq!(ship[0].payload["outputs"]["debit"], json!({"debited": 5}));
    t.refuse("shop.ship", "out of boxes").await.unwrap();
    assert_eq!(t.status("small").await.unwrap(), Some(SagaStatus::Compensated));
    assert_eq!(debits(&p), 0, "the real compensation ran");
}

#[tokio::test]
async fn asking_for_a_command_nobody_sent_says_what_is_pending() {
    let mut t = started().await;
    match t.succeed("shop.ship", json!({})).await {
        Err(HarnessError::NoSuchCommand { service, command, pending }) => {
            assert_eq!((service.as_str(), command.as_str()), ("shop", "shop.ship"));
            assert!(pending.is_empty());
        }
        other => panic!("expected NoSuchCommand, got {other:?}"),
    }
    assert!(matches!(t.succeed("shop.teleport", json!({})).await, Err(HarnessError::UnknownCommand(_))));
    assert!(matches!(SagaTest::new("name: [").await, Err(HarnessError::Definition(_))));
}
