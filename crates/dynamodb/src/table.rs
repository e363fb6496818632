//! The barrier table's layout and the table helpers: one item per (saga,
//! step, op), key `saga_id` (partition) and `key` = `<op>#<step>` (sort),
//! the outcome stored as the same JSON text the SQL adapters keep in their
//! `outcome` column. Also [`ensure_table`], which creates a table with
//! string keys (the barrier table, a service's own tables in tests and demos).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use serde_json::Value;
use sqsaga_aws::Failure;
use sqsaga_core::machine::Phase;
use sqsaga_worker::WorkerError;
use sqsaga_worker::barrier::{self, LookupError, Recorded};

/// Partition key of the barrier table: the saga id.
pub const SAGA_ID: &str = "saga_id";
/// Sort key of the barrier table: `<op>#<step>` ([`sort_key`]).
pub const KEY: &str = "key";
/// The recorded outcome, JSON text ([`Recorded::encode`]).
const OUTCOME: &str = "outcome";
/// When the row was written, ms since the epoch.
const CREATED_AT: &str = "created_at";

/// How long [`ensure_table`] waits for a new table to become active.
const ACTIVE_WITHIN: Duration = Duration::from_secs(60);

/// The sort key of (step, op): the op first, a fixed word, so the split is
/// unambiguous whatever the step name holds.
pub fn sort_key(step: &str, op: Phase) -> String {
    format!("{}#{step}", barrier::op_name(op))
}

/// The key of the barrier item of (saga, step, op).
pub fn barrier_key(saga_id: &str, step: &str, op: Phase) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (SAGA_ID.to_string(), AttributeValue::S(saga_id.to_string())),
        (KEY.to_string(), AttributeValue::S(sort_key(step, op))),
    ])
}

/// The barrier item recording `outcome` for (saga, step, op) at `now`.
pub(crate) fn barrier_item(
    saga_id: &str,
    step: &str,
    op: Phase,
    outcome: &Recorded,
    now: u64,
) -> HashMap<String, AttributeValue> {
    let mut item = barrier_key(saga_id, step, op);
    item.insert("step".to_string(), AttributeValue::S(step.to_string()));
    item.insert("op".to_string(), AttributeValue::S(barrier::op_name(op).to_string()));
    item.insert(OUTCOME.to_string(), AttributeValue::S(outcome.encode()));
    item.insert(CREATED_AT.to_string(), AttributeValue::N(now.to_string()));
    item
}

/// Reads the row of (saga, step, op) from `table` with a consistent read.
pub async fn lookup(
    client: &Client,
    table: &str,
    saga_id: &str,
    step: &str,
    op: Phase,
) -> Result<Option<Recorded>, LookupError> {
    let endpoint = format!("the endpoint of table `{table}`");
    read_row(client, table, &endpoint, saga_id, step, op).await.map_err(|e| match e {
        RowError::Sdk(f) => LookupError::Sql(f.message),
        RowError::Corrupt(cause) => {
            LookupError::Corrupt { saga_id: saga_id.to_string(), step: step.to_string(), cause }
        }
    })
}

/// Why a barrier item could not be read.
pub(crate) enum RowError {
    /// The call failed.
    Sdk(Failure),
    /// The item is not a barrier item.
    Corrupt(String),
}

/// [`lookup`] with the call's failure kept whole (`endpoint` names where
/// the client goes), for the adapter to tell what may pass.
pub(crate) async fn read_row(
    client: &Client,
    table: &str,
    endpoint: &str,
    saga_id: &str,
    step: &str,
    op: Phase,
) -> Result<Option<Recorded>, RowError> {
    let out = client
        .get_item()
        .table_name(table)
        .set_key(Some(barrier_key(saga_id, step, op)))
        .consistent_read(true)
        .projection_expression("#o")
        .expression_attribute_names("#o", OUTCOME)
        .send()
        .await
        .map_err(|e| RowError::Sdk(Failure::of(&e, "DynamoDB", endpoint)))?;
    let Some(item) = out.item else { return Ok(None) };
    match item.get(OUTCOME) {
        Some(AttributeValue::S(text)) => Recorded::decode(text).map(Some).map_err(RowError::Corrupt),
        other => Err(RowError::Corrupt(format!("`{OUTCOME}` is {other:?}, not a string"))),
    }
}

/// The output the action of (saga, step) recorded, for compensations that
/// need it outside [`crate::DynamoTx::action_output`].
pub async fn action_output(
    client: &Client,
    table: &str,
    saga_id: &str,
    step: &str,
) -> Result<Option<Value>, LookupError> {
    Ok(lookup(client, table, saga_id, step, Phase::Action).await?.and_then(Recorded::output))
}

/// Whether [`ensure_table`] made the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Created,
    Found,
}

/// Creates `table` (on-demand billing; `hash_key`, and `range_key` when
/// given, both strings) unless it exists, and waits until it is active.
/// For the barrier table ([`crate::DynamoDb::ensure_table`]) and, in tests
/// and demos, a service's own tables; production tables are provisioned
/// with the rest of the infrastructure.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    hash_key: &str,
    range_key: Option<&str>,
) -> Result<TableStatus, WorkerError> {
    let database = format!("dynamodb:{table}");
    let fail = |cause: String| WorkerError::Database { database: database.clone(), cause, retryable: false };
    let build = |e: aws_sdk_dynamodb::error::BuildError| fail(format!("cannot build CreateTable: {e}"));
    let mut create = client.create_table().table_name(table).billing_mode(BillingMode::PayPerRequest);
    for (name, key_type) in [(Some(hash_key), KeyType::Hash), (range_key, KeyType::Range)] {
        let Some(name) = name else { continue };
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build)?,
            )
            .key_schema(KeySchemaElement::builder().attribute_name(name).key_type(key_type).build().map_err(build)?);
    }
    let status = match create.send().await {
        Ok(_) => TableStatus::Created,
        Err(e) => {
            let f = Failure::of(&e, "DynamoDB", &format!("the endpoint of table `{table}`"));
            // It exists already (or a sibling created it meanwhile).
            if !f.is(&["ResourceInUseException"]) {
                return Err(fail(f.message));
            }
            TableStatus::Found
        }
    };
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(ACTIVE_WITHIN)
        .await
        .map_err(|e| fail(format!("table did not become active within {ACTIVE_WITHIN:?}: {e}")))?;
    Ok(status)
}
