//! What the DynamoDB adapter adds to the barrier contract, against moto
//! (`tests/common`): a failed condition on a handler's item (a recorded
//! refusal when the handler asked for one, else transient), the transaction
//! item limit end to end, DynamoDB refusing a handler's item, errors that
//! name the database when it is unreachable or its table missing, and a
//! batch running its keys at once but one key's commands in order.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use serde_json::{Value, json};
use sqsaga_core::machine::{Outcome, Phase};
use sqsaga_dynamodb::{DynamoDb, DynamoTx, HANDLER_ITEMS, ensure_table, lookup};
use sqsaga_worker::barrier::Recorded;
use sqsaga_worker::contract::{self, ctx};
use sqsaga_worker::db::ParticipantDb;
use sqsaga_worker::{BarrierOutcome, CommandContext, HandlerError, Participant};

struct Env {
    sdk: aws_config::SdkConfig,
    client: Client,
    barrier: String,
    items: String,
}

async fn env() -> Env {
    let sdk = common::sdk_config_for(&common::endpoint().await).await;
    let client = Client::new(&sdk);
    let t = common::tag();
    let (barrier, items) = (format!("t{t}-barrier"), format!("t{t}-items"));
    DynamoDb::from_sdk_config(&sdk, &barrier).unwrap().ensure_table().await.unwrap();
    ensure_table(&client, &items, "id", None).await.unwrap();
    Env { sdk, client, barrier, items }
}

impl Env {
    /// A participant whose action (`ledger.add`) is `handler`.
    fn participant<F>(&self, handler: F) -> Participant<DynamoDb>
    where
        F: Fn(&mut DynamoTx<'_>, &CommandContext) -> Result<Value, HandlerError> + Send + Sync + 'static,
    {
        let mut p = Participant::new(DynamoDb::from_sdk_config(&self.sdk, &self.barrier).unwrap());
        p.register(contract::LEDGER_CONTRACT, contract::ADD, Box::new(handler), None);
        p
    }

    async fn exists(&self, id: &str) -> bool {
        let out = self
            .client
            .get_item()
            .table_name(&self.items)
            .key("id", AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.item.is_some()
    }

    async fn recorded(&self, saga: &str) -> Option<Recorded> {
        lookup(&self.client, &self.barrier, saga, contract::STEP, Phase::Action).await.unwrap()
    }

    async fn teardown(self) {
        for table in [&self.barrier, &self.items] {
            self.client.delete_table().table_name(table).send().await.unwrap();
        }
    }
}

fn put(table: &str, id: &str) -> Put {
    Put::builder().table_name(table).item("id", AttributeValue::S(id.to_string())).build().unwrap()
}

/// A put of `id` that holds only while no item has it.
fn put_new(table: &str, id: &str) -> Put {
    Put::builder()
        .table_name(table)
        .item("id", AttributeValue::S(id.to_string()))
        .condition_expression("attribute_not_exists(id)")
        .build()
        .unwrap()
}

async fn run(p: &Participant<DynamoDb>, saga: &str) -> BarrierOutcome {
    p.execute(ctx(saga, Phase::Action, json!({}))).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_condition_refuses_when_asked_to_and_is_transient_otherwise() {
    let env = env().await;
    env.client.put_item().table_name(&env.items).set_item(Some(put(&env.items, "taken").item)).send().await.unwrap();
    let table = env.items.clone();
    let refusing = env.participant(move |tx, ctx| {
        tx.add(put(&table, &format!("{}-log", ctx.saga_id)))?;
        tx.add_or_refuse(put_new(&table, "taken"), "already taken")?;
        Ok(json!({"took": "taken"}))
    });
    let first = run(&refusing, "refuse-1").await;
    assert_eq!(first.outcome, Outcome::Refused { reason: "already taken".into() }, "{first:?}");
    assert_eq!(env.recorded("refuse-1").await, Some(Recorded::Refused { reason: "already taken".into() }));
    assert!(!env.exists("refuse-1-log").await, "a refused command wrote the handler's other item");
    let again = run(&refusing, "refuse-1").await;
    assert!(again.duplicate && again.outcome == first.outcome, "redelivery: {again:?}");

    let table = env.items.clone();
    let plain = env.participant(move |tx, ctx| {
        tx.add(put(&table, &format!("{}-log", ctx.saga_id)))?;
        tx.add(put_new(&table, "taken"))?;
        Ok(Value::Null)
    });
    let failed = run(&plain, "plain-1").await;
    let Outcome::Transient { error } = &failed.outcome else { panic!("a failed condition answered {failed:?}") };
    assert!(error.contains("condition failed on the handler's item 1") && error.contains(&env.items), "{error}");
    assert_eq!(env.recorded("plain-1").await, None, "a transient failure left a barrier item");
    assert!(!env.exists("plain-1-log").await);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_fills_the_transaction_to_the_limit_and_is_refused_past_it() {
    let env = env().await;
    let table = env.items.clone();
    let writer = env.participant(move |tx, ctx| {
        let n = ctx.input()["items"].as_u64().unwrap_or(0);
        for i in 0..n {
            // Ignores the error: the adapter refuses the command anyway.
            let _ = tx.add(put(&table, &format!("{}-{i}", ctx.saga_id)));
        }
        Ok(json!({"wrote": n}))
    });
    let full = writer.execute(ctx("full", Phase::Action, json!({"items": HANDLER_ITEMS}))).await.unwrap();
    assert_eq!(full.outcome, Outcome::Succeeded { output: json!({"wrote": HANDLER_ITEMS}) }, "{full:?}");
    assert!(env.exists("full-0").await && env.exists(&format!("full-{}", HANDLER_ITEMS - 1)).await);

    let over = writer.execute(ctx("over", Phase::Action, json!({"items": HANDLER_ITEMS + 1}))).await.unwrap();
    let Outcome::Refused { reason } = &over.outcome else { panic!("100 handler items answered {over:?}") };
    assert!(reason.contains("more than 99 items") && reason.contains("at most 100"), "{reason}");
    assert_eq!(env.recorded("over").await, Some(Recorded::Refused { reason: reason.clone() }));
    assert!(!env.exists("over-0").await, "a refused command wrote the handler's items");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_dynamodb_refuses_is_transient_naming_the_cause() {
    let env = env().await;
    let table = env.items.clone();
    let broken = env.participant(move |tx, ctx| {
        let update = Update::builder()
            .table_name(&table)
            .key("id", AttributeValue::S(ctx.saga_id.clone()))
            .update_expression("SET total = :n")
            .expression_attribute_values(":n", AttributeValue::N("1".into()))
            .build();
        tx.add(update)?;
        Ok(Value::Null)
    });
    let outcome = run(&broken, "broken-1").await;
    let Outcome::Transient { error } = &outcome.outcome else { panic!("an invalid item answered {outcome:?}") };
    assert!(error.contains("ValidationException") && error.contains("total"), "{error}");
    assert_eq!(env.recorded("broken-1").await, None);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_database_when_it_is_unreachable_or_its_table_missing() {
    let endpoint = common::endpoint().await;
    // Nothing listens on port 1.
    let closed = common::sdk_config_for("http://127.0.0.1:1").await;
    let mut p = Participant::new(DynamoDb::from_sdk_config(&closed, "shipping_barrier").unwrap());
    p.register(
        contract::LEDGER_CONTRACT,
        contract::ADD,
        Box::new(|_: &mut DynamoTx<'_>, _: &CommandContext| Ok(Value::Null)),
        None,
    );
    let e = p.ping().await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("dynamodb:shipping_barrier at http://127.0.0.1:1") && text.contains("connection refused"),
        "{text}"
    );
    let e = p.execute(ctx("unreachable-1", Phase::Action, json!({}))).await.unwrap_err();
    assert!(e.is_retryable() && !e.is_poison(), "{e}");
    // A handler's failed read, worded for its transient error.
    let read = p.db().client().get_item().table_name("shipments").key("id", AttributeValue::S("x".into())).send().await;
    let HandlerError::Transient(why) = sqsaga_dynamodb::transient(&read.unwrap_err()) else { panic!("not transient") };
    assert!(why.contains("cannot reach DynamoDB") && why.contains("connection refused"), "{why}");

    let sdk = common::sdk_config_for(&endpoint).await;
    let missing = format!("t{}-missing", common::tag());
    let e = DynamoDb::from_sdk_config(&sdk, &missing).unwrap().ping().await.unwrap_err();
    assert!(e.to_string().contains(&format!("does the barrier table `{missing}` exist?")), "{e}");
}

/// `ledger.add` that waits until every command of the batch is inside its
/// handler: it can only finish if the batch runs its keys at once.
struct AllAtOnce(tokio::sync::Barrier);

#[async_trait::async_trait]
impl sqsaga_dynamodb::DynamoHandler for AllAtOnce {
    async fn handle(&self, _tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self.0.wait().await;
        Ok(json!({"saga": ctx.saga_id}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_its_keys_at_once_and_one_keys_commands_in_order() {
    let env = env().await;
    let t = common::tag();
    let mut p = Participant::new(DynamoDb::from_sdk_config(&env.sdk, &env.barrier).unwrap());
    p.register(
        contract::LEDGER_CONTRACT,
        contract::ADD,
        Box::new(AllAtOnce(tokio::sync::Barrier::new(4))),
        Some((contract::UNDO, Box::new(|_: &mut DynamoTx<'_>, _: &CommandContext| Ok(json!({"undone": true}))))),
    );
    let sagas: Vec<String> = (0..4).map(|n| format!("t{t}-at-once-{n}")).collect();
    let mut batch: Vec<CommandContext> = sagas.iter().map(|s| ctx(s, Phase::Action, json!({}))).collect();
    // After its action, in the same batch: must see the action's item and undo it.
    batch.insert(1, ctx(&sagas[0], Phase::Compensation, json!({})));
    let clock: std::sync::Arc<dyn sqsaga_core::clock::Clock> = std::sync::Arc::new(sqsaga_core::clock::SystemClock);
    let results = tokio::time::timeout(std::time::Duration::from_secs(20), p.execute_batch_at(batch, clock))
        .await
        .expect("the batch ran its keys one after another (the handlers wait for each other)");
    let outcomes: Vec<Outcome> = results.into_iter().map(|(r, _)| r.unwrap().outcome).collect();
    let want: Vec<Outcome> = vec![
        Outcome::Succeeded { output: json!({"saga": sagas[0]}) },
        Outcome::Succeeded { output: json!({"undone": true}) },
        Outcome::Succeeded { output: json!({"saga": sagas[1]}) },
        Outcome::Succeeded { output: json!({"saga": sagas[2]}) },
        Outcome::Succeeded { output: json!({"saga": sagas[3]}) },
    ];
    assert_eq!(outcomes, want);
    env.teardown().await;
}
