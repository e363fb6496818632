//! The barrier contract (`sqsaga_worker::contract`) on the DynamoDB adapter,
//! against the moto emulator (`AWS_TEST_ENDPOINT_URL`, see `tests/common`):
//! fresh barrier and ledger tables per run, deleted at the end; the
//! participants reach moto through a loopback proxy, and an outage is the
//! proxy cutting every connection and refusing new ones.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Update};
use serde_json::{Value, json};
use sqsaga_core::machine::Phase;
use sqsaga_dynamodb::{DynamoDb, DynamoHandler, DynamoTx, ensure_table, lookup};
use sqsaga_worker::barrier::Recorded;
use sqsaga_worker::contract::{self, Fixture, Probes};
use sqsaga_worker::{AnyParticipant, CommandContext, HandlerError, Participant};

/// Adds `amount` to the saga's ledger item and counts the run, in the
/// command's transaction.
fn add(tx: &mut DynamoTx<'_>, ledger: &str, ctx: &CommandContext, amount: i64) -> Result<(), HandlerError> {
    tx.add(
        Update::builder()
            .table_name(ledger)
            .key("saga_id", AttributeValue::S(ctx.saga_id.clone()))
            // `total` is a reserved word of DynamoDB's expressions.
            .update_expression("ADD #total :amount, runs :one")
            .expression_attribute_names("#total", "total")
            .expression_attribute_values(":amount", AttributeValue::N(amount.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".to_string()))
            .build(),
    )
}

struct Add {
    probes: Arc<Probes>,
    ledger: String,
}

#[async_trait]
impl DynamoHandler for Add {
    async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self.probes.action_calls.fetch_add(1, Ordering::SeqCst);
        if let Some(d) = contract::sleep(ctx) {
            tokio::time::sleep(d).await;
        }
        add(tx, &self.ledger, ctx, contract::amount(ctx))?;
        contract::ledger(&self.probes, ctx)
    }
}

struct Undo {
    probes: Arc<Probes>,
    ledger: String,
}

#[async_trait]
impl DynamoHandler for Undo {
    async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self.probes.compensation_calls.fetch_add(1, Ordering::SeqCst);
        let amount = tx.action_output().and_then(|o| o["added"].as_i64()).unwrap_or(0);
        add(tx, &self.ledger, ctx, -amount)?;
        Ok(json!({"removed": amount}))
    }
}

struct DynamoLedger {
    /// Between the participants and moto.
    proxy: common::Proxy,
    /// The participants' SDK configuration: through the proxy.
    sdk: aws_config::SdkConfig,
    /// The fixture's own reads, straight to moto.
    reader: Client,
    barrier: String,
    ledger: String,
}

#[async_trait]
impl Fixture for DynamoLedger {
    async fn participant(&self, probes: Arc<Probes>) -> Result<Arc<dyn AnyParticipant>, String> {
        let db = DynamoDb::from_sdk_config(&self.sdk, &self.barrier).map_err(|e| e.to_string())?;
        let mut p = Participant::new(db);
        p.register(
            contract::LEDGER_CONTRACT,
            contract::ADD,
            Box::new(Add { probes: probes.clone(), ledger: self.ledger.clone() }),
            Some((contract::UNDO, Box::new(Undo { probes, ledger: self.ledger.clone() }))),
        );
        Ok(Arc::new(p))
    }

    async fn ledger(&self, saga: &str) -> Result<(i64, i64), String> {
        let out = self
            .reader
            .get_item()
            .table_name(&self.ledger)
            .key("saga_id", AttributeValue::S(saga.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let number = |name: &str| -> Result<i64, String> {
            match out.item().and_then(|i| i.get(name)) {
                None => Ok(0),
                Some(AttributeValue::N(n)) => n.parse().map_err(|e| format!("{name} = {n}: {e}")),
                Some(other) => Err(format!("{name} is {other:?}")),
            }
        };
        Ok((number("total")?, number("runs")?))
    }

    async fn recorded(&self, saga: &str, op: Phase) -> Result<Option<Recorded>, String> {
        lookup(&self.reader, &self.barrier, saga, contract::STEP, op).await.map_err(|e| e.to_string())
    }

    async fn outage(&self, down: bool) -> Result<(), String> {
        self.proxy.set_down(down).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barrier_contract_runs_all_on_dynamodb() {
    let endpoint = common::endpoint().await;
    let proxy = common::Proxy::start(&endpoint).await;
    let sdk = common::sdk_config_for(&proxy.url()).await;
    let reader = Client::new(&common::sdk_config_for(&endpoint).await);
    let t = common::tag();
    let (barrier, ledger) = (format!("t{t}-barrier"), format!("t{t}-ledger"));
    DynamoDb::from_sdk_config(&sdk, &barrier).unwrap().ensure_table().await.unwrap();
    ensure_table(&reader, &ledger, "saga_id", None).await.unwrap();
    let fixture = DynamoLedger { proxy, sdk, reader, barrier, ledger };
    let result = contract::run_all(&fixture, "c").await;
    for table in [&fixture.barrier, &fixture.ledger] {
        fixture.reader.delete_table().table_name(table).send().await.unwrap();
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
