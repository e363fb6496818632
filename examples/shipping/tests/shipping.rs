//! The shipping participant's handlers through the barrier, without
//! queues: commands in, outcomes and the `shipments` table out.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use serde_json::{Value, json};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_shipping::{participant, shipment_status};
use sqsaga_worker::{CommandContext, Participant};

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
async fn run(p: &Participant, ctx: CommandContext) -> String {
    match p.execute(ctx).await.unwrap().outcome {
        Outcome::Succeeded { output } => format!("ok {output}"),
        Outcome::Refused { reason } => format!("refused {reason}"),
        Outcome::Transient { error } => format!("transient {error}"),
    }
}

#[tokio::test]
async fn book_dispatch_refuse_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let p = participant(&dir.path().join("shipping.db"), sqsaga_sqlite::Sync::Normal).unwrap();
    let book = |saga: &str, grams| command(saga, "book_courier", "shipping.book", Phase::Action, parcel(saga, grams));
    let dispatch =
        |saga: &str, grams| command(saga, "dispatch", "shipping.dispatch", Phase::Action, parcel(saga, grams));
    let cancel =
        |saga: &str, grams| command(saga, "book_courier", "shipping.cancel", Phase::Compensation, parcel(saga, grams));

    let booked = r#"ok {"courier":"bike","parcel_id":"p-1"}"#;
    assert_eq!(run(&p, book("p-1", 1200)).await, booked);
    // A redelivery is answered from the barrier: no second row, same output.
    assert_eq!(run(&p, book("p-1", 1200)).await, booked);
    assert_eq!(run(&p, dispatch("p-1", 1200)).await, r#"ok {"parcel_id":"p-1","tracking":"bike-p-1"}"#);
    assert_eq!(shipment_status(&p, "p-1").await.unwrap().as_deref(), Some("dispatched"));

    assert_eq!(run(&p, book("p-2", 45_000)).await, r#"ok {"courier":"van","parcel_id":"p-2"}"#);
    assert_eq!(run(&p, dispatch("p-2", 45_000)).await, "refused parcel p-2 weighs 45000 g, over the courier's 30000 g");
    assert_eq!(run(&p, cancel("p-2", 45_000)).await, r#"ok {"cancelled":true,"parcel_id":"p-2"}"#);
    assert_eq!(shipment_status(&p, "p-2").await.unwrap().as_deref(), Some("cancelled"));

    // A compensation before its action: nothing to undo, and the late
    // booking is refused by the barrier, so nothing is booked.
    assert!(run(&p, cancel("p-3", 900)).await.starts_with("ok "));
    assert!(run(&p, book("p-3", 900)).await.starts_with("refused "));
    assert_eq!(shipment_status(&p, "p-3").await.unwrap(), None);

    // A malformed input is refused, naming the field.
    let bad = command("p-4", "book_courier", "shipping.book", Phase::Action, json!({"parcel_id": "p-4"}));
    let out = run(&p, bad).await;
    assert!(out.starts_with("refused invalid input of `shipping.book`") && out.contains("address"), "{out}");
}
