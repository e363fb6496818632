//! The shipping participant's handlers through the barrier, without
//! queues: commands in, outcomes and the `shipments` table out.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use sqsaga_config::DatabaseUrl;
use sqsaga_core::clock::SystemClock;
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_shipping::{open, participant, postgres, shipment_status};
use sqsaga_worker::{AnyParticipant, CommandContext};

fn command(saga: &str, step: &str, command: &str, phase: Phase, input: Value) -> CommandContext {
    CommandContext {
        saga_id: saga.to_string(),
        step: step.to_string(),
        command: command.to_string(),
        phase,
        attempt: 1,
        payload: json!({"input": input, "outputs": {}}),
        not_after: None,
        sent_at: None,
    }
}

fn parcel(id: &str, grams: u32) -> Value {
    json!({"parcel_id": id, "address": "1 Main St", "weight_grams": grams})
}

/// The outcome of `ctx`, as `ok <output>`, `refused <reason>` or `transient <error>`.
async fn run(p: &dyn AnyParticipant, ctx: CommandContext) -> String {
    let (result, _) = p.execute_batch_at(vec![ctx], Arc::new(SystemClock)).await.pop().unwrap();
    match result.unwrap().outcome {
        Outcome::Succeeded { output } => format!("ok {output}"),
        Outcome::Refused { reason } => format!("refused {reason}"),
        Outcome::Transient { error } => format!("transient {error}"),
    }
}

/// The shipping service's behaviour, the same on every database:
/// `status(parcel)` reads its `shipments` table.
async fn scenario<F, Fut>(p: &dyn AnyParticipant, status: F)
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let book = |saga: &str, grams| command(saga, "book_courier", "shipping.book", Phase::Action, parcel(saga, grams));
    let dispatch =
        |saga: &str, grams| command(saga, "dispatch", "shipping.dispatch", Phase::Action, parcel(saga, grams));
    let cancel =
        |saga: &str, grams| command(saga, "book_courier", "shipping.cancel", Phase::Compensation, parcel(saga, grams));

    let booked = r#"ok {"courier":"bike","parcel_id":"p-1"}"#;
    assert_eq!(run(p, book("p-1", 1200)).await, booked);
    // A redelivery is answered from the barrier: no second row, same output.
    assert_eq!(run(p, book("p-1", 1200)).await, booked);
    assert_eq!(run(p, dispatch("p-1", 1200)).await, r#"ok {"parcel_id":"p-1","tracking":"bike-p-1"}"#);
    assert_eq!(status("p-1").await.as_deref(), Some("dispatched"));

    assert_eq!(run(p, book("p-2", 45_000)).await, r#"ok {"courier":"van","parcel_id":"p-2"}"#);
    assert_eq!(run(p, dispatch("p-2", 45_000)).await, "refused parcel p-2 weighs 45000 g, over the courier's 30000 g");
    assert_eq!(run(p, cancel("p-2", 45_000)).await, r#"ok {"cancelled":true,"parcel_id":"p-2"}"#);
    assert_eq!(status("p-2").await.as_deref(), Some("cancelled"));

    // A compensation before its action: nothing to undo, and the late
    // booking is refused by the barrier, so nothing is booked.
    assert!(run(p, cancel("p-3", 900)).await.starts_with("ok "));
    assert!(run(p, book("p-3", 900)).await.starts_with("refused "));
    assert_eq!(status("p-3").await, None);

    // A malformed input is refused, naming the field.
    let bad = command("p-4", "book_courier", "shipping.book", Phase::Action, json!({"parcel_id": "p-4"}));
    let out = run(p, bad).await;
    assert!(out.starts_with("refused invalid input of `shipping.book`") && out.contains("address"), "{out}");
}

#[tokio::test]
async fn book_dispatch_refuse_and_cancel_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let p = participant(&dir.path().join("shipping.db"), sqsaga_sqlite::Sync::Normal).unwrap();
    scenario(&p, |parcel| async { shipment_status(&p, parcel).await.unwrap() }).await;
}

/// The same commands as `PgHandler`s, in the schema `shipping` of a scratch
/// database on the machine's server, chosen by a `postgres://` URL as
/// `participant_db` would give it.
#[tokio::test]
async fn book_dispatch_refuse_and_cancel_on_postgres() {
    let scratch = ScratchDb::create().await.unwrap();
    let opened = open(&DatabaseUrl::Postgres(scratch.url.clone()), 4).await.unwrap();
    assert!(opened.database().starts_with("postgres://"), "{}", opened.database());
    let p = postgres::participant(&scratch.url, 4).await.unwrap();
    scenario(&p, |parcel| async { postgres::shipment_status(&p, parcel).await.unwrap() }).await;
    drop(p);
    drop(opened);
    scratch.drop_now().await.unwrap();
}
