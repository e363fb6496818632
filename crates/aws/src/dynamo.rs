//! [`DynamoStore`]: the `SagaStore` port on one DynamoDB table.
//!
//! One item per saga, partition key `id`:
//!
//! | attribute | type | what |
//! |---|---|---|
//! | `revision` | N | optimistic-concurrency revision; every write is conditional on it |
//! | `state` | S | the `SagaInstance` as JSON |
//! | `status`, `saga`, `version`, `started_at`, `updated_at` | S/N | for the status index and listings |
//! | `history` | L of M `{at, event, note}` | appended with `list_append`, never rewritten |
//! | `outbox` | L of M `{rev, at, msgs}` | commands committed but not yet confirmed sent, per revision (`msgs` is JSON) |
//! | `outbox_shard`, `outbox_at` | S/N | set while `outbox` is non-empty: the sparse `by_outbox` index |
//! | `due_shard`, `next_due_at` | S/N | set while the saga is non-terminal and has a wake-up: the sparse `by_due` index |
//!
//! Indexes (no call scans the table): `by_status` (`status`, `updated_at`;
//! projects `saga`, `version`, `started_at`), `by_due` (`due_shard`,
//! `next_due_at`, keys only) and `by_outbox` (`outbox_shard`, `outbox_at`,
//! keys only). Index reads are eventually consistent, so `due` and
//! `pending_outboxes` re-read their candidates from the table (consistent
//! read) before answering.
//!
//! The outbox lives in the saga item, so state and commands commit in one
//! conditional write; every committed outbox is reported `outbox_pending`,
//! and the orchestrator sends it — the outboxes of a whole received batch
//! at once, so the SQS batcher merges them into few `SendMessageBatch`
//! requests — and then calls `clear_outbox`. The orchestrator's sweeper
//! re-sends what a failed send or a crash left behind.
//! A later write appends its own outbox instead of replacing a pending one,
//! so no command is lost to a write that raced the sender.
//!
//! Known limits: the status, due and outbox indexes use one partition key
//! value each, which caps their write rate at one index partition (about
//! 1000 writes/s); an item holds at most 400 KB (state + history + outbox).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, Select, SseSpecification, SseType,
};
use serde::{Deserialize, Serialize};
use sqsaga_core::Millis;
use sqsaga_core::machine::{SagaInstance, SagaStatus};
use sqsaga_queue::OutgoingMessage;
use sqsaga_store::{
    HistoryEntry, OutboxMessage, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError, WriteOutcome,
};
use tokio::task::JoinSet;

use crate::error::Failure;

/// Status index: all sagas of one status, newest first.
pub const STATUS_INDEX: &str = "by_status";
/// Sparse index of sagas with a wake-up.
pub const DUE_INDEX: &str = "by_due";
/// Sparse index of sagas with an unconfirmed outbox.
pub const OUTBOX_INDEX: &str = "by_outbox";
/// Value of `due_shard` while a saga has a wake-up.
const DUE_SHARD: &str = "due";
/// Value of `outbox_shard` while a saga has a pending outbox.
const OUTBOX_SHARD: &str = "outbox";
/// BatchGetItem: at most 100 keys per request.
const BATCH_GET_MAX: usize = 100;
/// Rounds for unprocessed keys and for outbox clears that raced a writer.
const ROUNDS: u32 = 8;
/// Page size of index queries.
const PAGE: usize = 500;

const CONDITION_FAILED: &[&str] = &["ConditionalCheckFailedException"];

/// Whether `ensure_table` made the table or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Created,
    Found,
}

/// The `SagaStore` port on DynamoDB. Cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    /// Where requests go, for error messages.
    endpoint: Arc<str>,
}

/// An outbox message as stored in the item (`msgs` JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredMessage {
    queue: String,
    body: String,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    #[serde(default)]
    delay: Duration,
}

/// One element of the `outbox` list.
struct StoredOutbox {
    revision: u64,
    at: Millis,
    messages: Vec<OutboxMessage>,
}

/// A write, serialised and ready to send.
struct Prepared {
    id: String,
    fields: Vec<(&'static str, AttributeValue)>,
    history: Option<AttributeValue>,
    outbox: Option<(AttributeValue, Millis)>,
    due: Option<Millis>,
    expected_revision: Option<u64>,
}

/// Expression attribute names and values of one request, registered as used
/// (DynamoDB rejects unused ones).
#[derive(Default)]
struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    /// `#attr`, registered.
    fn n(&mut self, attr: &str) -> String {
        let key = format!("#{attr}");
        self.names.insert(key.clone(), attr.to_string());
        key
    }

    /// `:key`, registered with `value`.
    fn v(&mut self, key: &str, value: AttributeValue) -> String {
        let key = format!(":{key}");
        self.values.insert(key.clone(), value);
        key
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, key: &str) -> Option<&'a str> {
    item.get(key)?.as_s().ok().map(String::as_str)
}

fn get_n<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, key: &str) -> Option<T> {
    item.get(key)?.as_n().ok()?.parse().ok()
}

fn key(id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("id".to_string(), s(id))])
}

fn corrupt(id: &str, cause: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { id: id.to_string(), cause: cause.to_string() }
}

fn build_error(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("cannot build the DynamoDB {what} request: {e}"))
}

impl DynamoStore {
    pub(crate) fn new(client: Client, endpoint: &str, table: &str) -> Self {
        DynamoStore { client, table: Arc::from(table), endpoint: Arc::from(endpoint) }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client, for what the port does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn failure<E>(&self, e: &aws_sdk_dynamodb::error::SdkError<E>) -> Failure
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let f = Failure::of(e, "DynamoDB", &self.endpoint);
        if f.is(&["ResourceNotFoundException"]) {
            return Failure {
                message: format!("{} (does table `{}` exist? `sqsaga provision` creates it)", f.message, self.table),
                ..f
            };
        }
        f
    }

    /// Creates the table and its three indexes (on-demand billing,
    /// encryption at rest with the AWS-managed KMS key, or `kms_key`) unless
    /// it exists; waits until it is active. A table that exists without one
    /// of the indexes is an error naming it.
    pub async fn ensure_table(&self, kms_key: Option<&str>) -> Result<TableStatus, StoreError> {
        if self.describe_indexes().await?.is_some() {
            self.check_indexes().await?;
            return Ok(TableStatus::Found);
        }
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(|e| build_error("CreateTable", e))
        };
        let key_el = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(|e| build_error("CreateTable", e))
        };
        let index =
            |name: &str, hash: &str, range: &str, projection: Projection| -> Result<GlobalSecondaryIndex, StoreError> {
                GlobalSecondaryIndex::builder()
                    .index_name(name)
                    .key_schema(key_el(hash, KeyType::Hash)?)
                    .key_schema(key_el(range, KeyType::Range)?)
                    .projection(projection)
                    .build()
                    .map_err(|e| build_error("CreateTable", e))
            };
        let status_projection = Projection::builder()
            .projection_type(ProjectionType::Include)
            .non_key_attributes("saga")
            .non_key_attributes("version")
            .non_key_attributes("started_at")
            .build();
        let keys_only = || Projection::builder().projection_type(ProjectionType::KeysOnly).build();
        let mut sse = SseSpecification::builder().enabled(true);
        if let Some(k) = kms_key {
            sse = sse.sse_type(SseType::Kms).kms_master_key_id(k);
        }
        let result = self
            .client
            .create_table()
            .table_name(self.table.as_ref())
            .billing_mode(BillingMode::PayPerRequest)
            .sse_specification(sse.build())
            .attribute_definitions(attr("id", ScalarAttributeType::S)?)
            .attribute_definitions(attr("status", ScalarAttributeType::S)?)
            .attribute_definitions(attr("updated_at", ScalarAttributeType::N)?)
            .attribute_definitions(attr("due_shard", ScalarAttributeType::S)?)
            .attribute_definitions(attr("next_due_at", ScalarAttributeType::N)?)
            .attribute_definitions(attr("outbox_shard", ScalarAttributeType::S)?)
            .attribute_definitions(attr("outbox_at", ScalarAttributeType::N)?)
            .key_schema(key_el("id", KeyType::Hash)?)
            .global_secondary_indexes(index(STATUS_INDEX, "status", "updated_at", status_projection)?)
            .global_secondary_indexes(index(DUE_INDEX, "due_shard", "next_due_at", keys_only())?)
            .global_secondary_indexes(index(OUTBOX_INDEX, "outbox_shard", "outbox_at", keys_only())?)
            .send()
            .await;
        let status = match result {
            Ok(_) => TableStatus::Created,
            Err(e) => {
                let f = self.failure(&e);
                // Created by someone else meanwhile.
                if !f.is(&["ResourceInUseException"]) {
                    return Err(f.into_store());
                }
                TableStatus::Found
            }
        };
        self.wait_active().await?;
        Ok(status)
    }

    /// The table's index names, or `None` if the table does not exist.
    async fn describe_indexes(&self) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        match self.client.describe_table().table_name(self.table.as_ref()).send().await {
            Ok(out) => {
                let table = out.table.unwrap_or_else(|| aws_sdk_dynamodb::types::TableDescription::builder().build());
                let indexes = table
                    .global_secondary_indexes
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|i| i.index_name)
                    .collect();
                let active = table.table_status == Some(aws_sdk_dynamodb::types::TableStatus::Active);
                Ok(Some((indexes, active)))
            }
            Err(e) => {
                let f = Failure::of(&e, "DynamoDB", &self.endpoint);
                if f.is(&["ResourceNotFoundException"]) { Ok(None) } else { Err(f.into_store()) }
            }
        }
    }

    async fn check_indexes(&self) -> Result<(), StoreError> {
        let Some((indexes, _)) = self.describe_indexes().await? else {
            return Err(StoreError::Backend(format!("table `{}` vanished", self.table)));
        };
        for want in [STATUS_INDEX, DUE_INDEX, OUTBOX_INDEX] {
            if !indexes.iter().any(|i| i == want) {
                return Err(StoreError::Backend(format!(
                    "table `{}` exists without the `{want}` index sqsaga needs (it has: {})",
                    self.table,
                    indexes.join(", ")
                )));
            }
        }
        Ok(())
    }

    async fn wait_active(&self) -> Result<(), StoreError> {
        for _ in 0..240 {
            if let Some((_, true)) = self.describe_indexes().await? {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(StoreError::Backend(format!("table `{}` did not become active within 60 s", self.table)))
    }

    /// Reads items by id (consistent), `projection` attributes only;
    /// unprocessed keys are retried with backoff.
    async fn batch_get(
        &self,
        ids: &[String],
        projection: &[&str],
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut unique: Vec<&String> = Vec::with_capacity(ids.len());
        let mut seen = HashSet::new();
        for id in ids {
            if seen.insert(id) {
                unique.push(id);
            }
        }
        let mut items = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(BATCH_GET_MAX) {
            let mut expr = Expr::default();
            let names: Vec<String> = projection.iter().map(|p| expr.n(p)).collect();
            let keys: Vec<_> = chunk.iter().map(|id| key(id)).collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .projection_expression(names.join(", "))
                    .set_expression_attribute_names(expr.names())
                    .build()
                    .map_err(|e| build_error("BatchGetItem", e))?,
            );
            let mut round = 0;
            while let Some(keys) = request.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(self.table.as_ref(), keys)
                    .send()
                    .await
                    .map_err(|e| self.failure(&e).into_store())?;
                if let Some(mut responses) = out.responses {
                    items.extend(responses.remove(self.table.as_ref()).unwrap_or_default());
                }
                request =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.table.as_ref())).filter(|k| !k.keys.is_empty());
                if request.is_some() {
                    round += 1;
                    if round >= ROUNDS {
                        return Err(StoreError::Throttled(format!(
                            "DynamoDB left keys of `{}` unprocessed {ROUNDS} times in a row",
                            self.table
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(25u64 << round)).await;
                }
            }
        }
        Ok(items)
    }

    /// Ids from one index: `hash = hash_value AND range <= upto` (ascending)
    /// or every item of `hash_value` (descending), paginated, at most `limit`.
    async fn query_index(
        &self,
        index: &str,
        hash: (&str, &str),
        range_upto: Option<(&str, Millis)>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut expr = Expr::default();
            let mut condition = format!("{} = {}", expr.n(hash.0), expr.v("h", s(hash.1)));
            if let Some((range, upto)) = range_upto {
                condition.push_str(&format!(" AND {} <= {}", expr.n(range), expr.v("r", n(upto))));
            }
            let page = limit.saturating_sub(out.len()).clamp(1, PAGE) as i32;
            let result = self
                .client
                .query()
                .table_name(self.table.as_ref())
                .index_name(index)
                .key_condition_expression(condition)
                .set_expression_attribute_names(expr.names())
                .set_expression_attribute_values(expr.values())
                .scan_index_forward(forward)
                .limit(page)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.failure(&e).into_store())?;
            out.extend(result.items.unwrap_or_default());
            start = result.last_evaluated_key.filter(|k| !k.is_empty());
            if out.len() >= limit || start.is_none() {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }

    /// Every write at once; outcomes in order, or the first hard error.
    async fn write_all(&self, prepared: Vec<Prepared>) -> Result<Vec<WriteOutcome>, StoreError> {
        if prepared.len() == 1 {
            let mut prepared = prepared;
            let Some(w) = prepared.pop() else { return Ok(Vec::new()) };
            return Ok(vec![self.write_one(w).await?]);
        }
        let mut tasks = JoinSet::new();
        let count = prepared.len();
        for (i, w) in prepared.into_iter().enumerate() {
            let me = self.clone();
            tasks.spawn(async move { (i, me.write_one(w).await) });
        }
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; count];
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((i, Ok(outcome))) => outcomes[i] = Some(outcome),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(StoreError::Backend(format!("a DynamoDB write task failed: {e}")));
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| StoreError::Backend("a write got no outcome".to_string())))
            .collect()
    }

    async fn write_one(&self, w: Prepared) -> Result<WriteOutcome, StoreError> {
        let outbox_pending = w.outbox.is_some();
        match w.expected_revision {
            None => {
                let mut item: HashMap<String, AttributeValue> =
                    w.fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                item.insert("id".to_string(), s(&w.id));
                item.insert("revision".to_string(), n(1));
                item.insert("history".to_string(), w.history.unwrap_or_else(|| AttributeValue::L(Vec::new())));
                if let Some((list, at)) = w.outbox {
                    item.insert("outbox".to_string(), list);
                    item.insert("outbox_shard".to_string(), s(OUTBOX_SHARD));
                    item.insert("outbox_at".to_string(), n(at));
                }
                if let Some(due) = w.due {
                    item.insert("due_shard".to_string(), s(DUE_SHARD));
                    item.insert("next_due_at".to_string(), n(due));
                }
                let mut expr = Expr::default();
                let condition = format!("attribute_not_exists({})", expr.n("id"));
                let result = self
                    .client
                    .put_item()
                    .table_name(self.table.as_ref())
                    .set_item(Some(item))
                    .condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(WriteOutcome::Committed { revision: 1, outbox_pending }),
                    Err(e) => {
                        let f = self.failure(&e);
                        if f.is(CONDITION_FAILED) { Ok(WriteOutcome::AlreadyExists) } else { Err(f.into_store()) }
                    }
                }
            }
            Some(expected) => {
                let revision = expected.saturating_add(1);
                let mut expr = Expr::default();
                let mut set = vec![format!("{} = {}", expr.n("revision"), expr.v("rev", n(revision)))];
                for (name, value) in w.fields {
                    set.push(format!("{} = {}", expr.n(name), expr.v(name, value)));
                }
                if let Some(history) = w.history {
                    let h = expr.n("history");
                    let empty = expr.v("empty", AttributeValue::L(Vec::new()));
                    let value = expr.v("hist", history);
                    set.push(format!("{h} = list_append(if_not_exists({h}, {empty}), {value})"));
                }
                if let Some((list, at)) = w.outbox {
                    let ob = expr.n("outbox");
                    let empty = expr.v("empty", AttributeValue::L(Vec::new()));
                    let value = expr.v("ob", list);
                    set.push(format!("{ob} = list_append(if_not_exists({ob}, {empty}), {value})"));
                    set.push(format!("{} = {}", expr.n("outbox_shard"), expr.v("oshard", s(OUTBOX_SHARD))));
                    let oat = expr.n("outbox_at");
                    set.push(format!("{oat} = if_not_exists({oat}, {})", expr.v("oat", n(at))));
                }
                let mut update = String::new();
                match w.due {
                    Some(due) => {
                        set.push(format!("{} = {}", expr.n("due_shard"), expr.v("dshard", s(DUE_SHARD))));
                        set.push(format!("{} = {}", expr.n("next_due_at"), expr.v("due", n(due))));
                        update.push_str(&format!("SET {}", set.join(", ")));
                    }
                    None => {
                        update.push_str(&format!("SET {}", set.join(", ")));
                        update.push_str(&format!(" REMOVE {}, {}", expr.n("due_shard"), expr.n("next_due_at")));
                    }
                }
                let condition = format!("{} = {}", expr.n("revision"), expr.v("expected", n(expected)));
                let result = self
                    .client
                    .update_item()
                    .table_name(self.table.as_ref())
                    .set_key(Some(key(&w.id)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .send()
                    .await;
                match result {
                    Ok(_) => Ok(WriteOutcome::Committed { revision, outbox_pending }),
                    Err(e) => {
                        let f = self.failure(&e);
                        if f.is(CONDITION_FAILED) { Ok(WriteOutcome::Conflict) } else { Err(f.into_store()) }
                    }
                }
            }
        }
    }

    /// Removes the outbox element of `revision`, and the index attributes
    /// with the last element, under a condition that fails if the list
    /// changed since it was read. `Ok(false)` on a lost race.
    async fn remove_outbox(&self, id: &str, revision: u64, index: usize, len: usize) -> Result<bool, StoreError> {
        let mut expr = Expr::default();
        let ob = expr.n("outbox");
        let r = expr.n("rev");
        let rev = expr.v("rev", n(revision));
        let size = expr.v("len", n(len));
        let update = if len == 1 {
            format!("REMOVE {ob}, {}, {}", expr.n("outbox_shard"), expr.n("outbox_at"))
        } else {
            format!("REMOVE {ob}[{index}]")
        };
        let condition = format!("size({ob}) = {size} AND {ob}[{index}].{r} = {rev}");
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(id)))
            .update_expression(update)
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => {
                let f = self.failure(&e);
                if f.is(CONDITION_FAILED) { Ok(false) } else { Err(f.into_store()) }
            }
        }
    }

    async fn read_outboxes(&self, id: &str) -> Result<Vec<StoredOutbox>, StoreError> {
        match self.read_attribute(id, "outbox").await? {
            Some(item) => parse_outboxes(id, &item),
            None => Ok(Vec::new()),
        }
    }

    /// One attribute of one saga item, read consistently; `None` when the
    /// item does not exist.
    async fn read_attribute(
        &self,
        id: &str,
        attribute: &'static str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let mut expr = Expr::default();
        let projection = expr.n(attribute);
        let out = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(id)))
            .consistent_read(true)
            .projection_expression(projection)
            .set_expression_attribute_names(expr.names())
            .send()
            .await
            .map_err(|e| self.failure(&e).into_store())?;
        Ok(out.item)
    }
}

/// Serialises a write; checks its outbox messages against the queue limits.
fn prepare(write: SagaWrite) -> Result<Prepared, StoreError> {
    let SagaWrite { instance, expected_revision, history, outbox } = write;
    let state = serde_json::to_string(&instance)
        .map_err(|e| StoreError::Backend(format!("saga `{}` cannot be serialised: {e}", instance.id)))?;
    let history = (!history.is_empty()).then(|| {
        AttributeValue::L(
            history
                .iter()
                .map(|h| {
                    AttributeValue::M(HashMap::from([
                        ("at".to_string(), n(h.at)),
                        ("event".to_string(), s(&h.event)),
                        ("note".to_string(), s(&h.note)),
                    ]))
                })
                .collect(),
        )
    });
    let outbox = if outbox.is_empty() {
        None
    } else {
        let mut stored = Vec::with_capacity(outbox.len());
        for m in outbox {
            m.message.check()?;
            stored.push(StoredMessage {
                queue: m.queue,
                body: m.message.body,
                attributes: m.message.attributes,
                delay: m.message.delay,
            });
        }
        let msgs = serde_json::to_string(&stored)
            .map_err(|e| StoreError::Backend(format!("outbox of saga `{}` cannot be serialised: {e}", instance.id)))?;
        let at = instance.updated_at;
        let revision = expected_revision.map_or(1, |r| r.saturating_add(1));
        let element = AttributeValue::M(HashMap::from([
            ("rev".to_string(), n(revision)),
            ("at".to_string(), n(at)),
            ("msgs".to_string(), s(msgs)),
        ]));
        Some((AttributeValue::L(vec![element]), at))
    };
    // Terminal sagas never wake; `needs_operator` has no wake-up of its own.
    let due = if instance.status.is_terminal() { None } else { instance.next_wakeup() };
    Ok(Prepared {
        fields: vec![
            ("state", s(state)),
            ("status", s(instance.status.as_str())),
            ("saga", s(&instance.saga)),
            ("version", n(instance.version)),
            ("started_at", n(instance.started_at)),
            ("updated_at", n(instance.updated_at)),
        ],
        id: instance.id,
        history,
        outbox,
        due,
        expected_revision,
    })
}

fn parse_outboxes(id: &str, item: &HashMap<String, AttributeValue>) -> Result<Vec<StoredOutbox>, StoreError> {
    let Some(list) = item.get("outbox") else { return Ok(Vec::new()) };
    let list = list.as_l().map_err(|_| corrupt(id, "`outbox` is not a list"))?;
    let mut out = Vec::with_capacity(list.len());
    for element in list {
        let m = element.as_m().map_err(|_| corrupt(id, "an `outbox` element is not a map"))?;
        let revision = get_n(m, "rev").ok_or_else(|| corrupt(id, "an `outbox` element has no `rev`"))?;
        let at = get_n(m, "at").unwrap_or(0);
        let msgs = get_s(m, "msgs").ok_or_else(|| corrupt(id, "an `outbox` element has no `msgs`"))?;
        let stored: Vec<StoredMessage> =
            serde_json::from_str(msgs).map_err(|e| corrupt(id, format!("outbox of revision {revision}: {e}")))?;
        let messages = stored
            .into_iter()
            .map(|m| OutboxMessage {
                queue: m.queue,
                message: OutgoingMessage { body: m.body, attributes: m.attributes, delay: m.delay },
            })
            .collect();
        out.push(StoredOutbox { revision, at, messages });
    }
    Ok(out)
}

fn parse_summary(item: &HashMap<String, AttributeValue>) -> Result<SagaSummary, StoreError> {
    let id = get_s(item, "id").unwrap_or("(no id)").to_string();
    let status =
        get_s(item, "status").and_then(SagaStatus::parse).ok_or_else(|| corrupt(&id, "missing or unknown `status`"))?;
    Ok(SagaSummary {
        saga: get_s(item, "saga").unwrap_or_default().to_string(),
        version: get_n(item, "version").ok_or_else(|| corrupt(&id, "missing `version`"))?,
        status,
        started_at: get_n(item, "started_at").unwrap_or(0),
        updated_at: get_n(item, "updated_at").unwrap_or(0),
        id,
    })
}

#[async_trait]
impl SagaStore for DynamoStore {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        let items = self.batch_get(ids, &["id", "revision", "state"]).await?;
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let id = get_s(&item, "id").unwrap_or("(no id)").to_string();
            let revision = get_n(&item, "revision").ok_or_else(|| corrupt(&id, "missing `revision`"))?;
            let state = get_s(&item, "state").ok_or_else(|| corrupt(&id, "missing `state`"))?;
            let instance: SagaInstance = serde_json::from_str(state).map_err(|e| corrupt(&id, e))?;
            records.push(SagaRecord { instance, revision });
        }
        Ok(records)
    }

    /// One conditional write per saga, all at once: each commits or
    /// conflicts on its own. If any fails outright the call fails; writes
    /// that did commit keep their outbox pending, and the orchestrator's
    /// sweeper sends it (the retried events are then recognised as applied).
    /// Every committed outbox is reported pending: the caller sends it and
    /// calls `clear_outbox`.
    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        let prepared = writes.into_iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        self.write_all(prepared).await
    }

    /// Fast path: one conditional update that removes the outbox when it
    /// holds just this revision's element. Otherwise read, and remove this
    /// revision's element by index under a condition, retrying if a writer
    /// raced in. Clearing what is not there is not an error.
    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        if self.remove_outbox(saga_id, revision, 0, 1).await? {
            return Ok(());
        }
        for _ in 0..ROUNDS {
            let outboxes = self.read_outboxes(saga_id).await?;
            let Some(index) = outboxes.iter().position(|o| o.revision == revision) else {
                return Ok(());
            };
            if self.remove_outbox(saga_id, revision, index, outboxes.len()).await? {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "the outbox of saga `{saga_id}` kept changing while revision {revision} was being cleared"
        )))
    }

    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self
            .query_index(OUTBOX_INDEX, ("outbox_shard", OUTBOX_SHARD), Some(("outbox_at", written_before)), true, limit)
            .await?;
        let ids: Vec<String> = keys.iter().filter_map(|k| get_s(k, "id").map(str::to_string)).collect();
        let items = self.batch_get(&ids, &["id", "outbox"]).await?;
        let mut pending = Vec::new();
        for item in items {
            let id = get_s(&item, "id").unwrap_or("(no id)").to_string();
            for o in parse_outboxes(&id, &item)? {
                if o.at <= written_before {
                    pending.push(PendingOutbox { saga_id: id.clone(), revision: o.revision, messages: o.messages });
                }
            }
        }
        pending.sort_by(|a, b| (&a.saga_id, a.revision).cmp(&(&b.saga_id, b.revision)));
        pending.truncate(limit);
        Ok(pending)
    }

    /// Candidates from the `by_due` index, confirmed by a consistent read
    /// (the index lags the table), earliest first.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys =
            self.query_index(DUE_INDEX, ("due_shard", DUE_SHARD), Some(("next_due_at", now)), true, limit).await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = keys.iter().filter_map(|k| get_s(k, "id").map(str::to_string)).collect();
        let items = self.batch_get(&ids, &["id", "due_shard", "next_due_at"]).await?;
        let mut due: Vec<(Millis, String)> = items
            .iter()
            .filter(|item| item.contains_key("due_shard"))
            .filter_map(|item| Some((get_n::<Millis>(item, "next_due_at")?, get_s(item, "id")?.to_string())))
            .filter(|(at, _)| *at <= now)
            .collect();
        due.sort();
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let statuses = match status {
            Some(s) => vec![s],
            None => SagaStatus::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for status in statuses {
            for item in self.query_index(STATUS_INDEX, ("status", status.as_str()), None, false, limit).await? {
                out.push(parse_summary(&item)?);
            }
        }
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| b.id.cmp(&a.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let item = self.read_attribute(saga_id, "history").await?;
        let Some(list) = item.and_then(|mut item| item.remove("history")) else {
            return Ok(Vec::new());
        };
        let list = list.as_l().map_err(|_| corrupt(saga_id, "`history` is not a list"))?;
        list.iter()
            .map(|e| {
                let m = e.as_m().map_err(|_| corrupt(saga_id, "a `history` entry is not a map"))?;
                Ok(HistoryEntry {
                    at: get_n(m, "at").unwrap_or(0),
                    event: get_s(m, "event").unwrap_or_default().to_string(),
                    note: get_s(m, "note").unwrap_or_default().to_string(),
                })
            })
            .collect()
    }

    /// One `Select=COUNT` query of the status index per status (paginated:
    /// DynamoDB counts at most 1 MB of index per page). Every status is present.
    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for status in SagaStatus::ALL {
            let mut total = 0u64;
            let mut start: Option<HashMap<String, AttributeValue>> = None;
            loop {
                let mut expr = Expr::default();
                let condition = format!("{} = {}", expr.n("status"), expr.v("s", s(status.as_str())));
                let out = self
                    .client
                    .query()
                    .table_name(self.table.as_ref())
                    .index_name(STATUS_INDEX)
                    .key_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .select(Select::Count)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| self.failure(&e).into_store())?;
                total += u64::try_from(out.count).unwrap_or(0);
                start = out.last_evaluated_key.filter(|k| !k.is_empty());
                if start.is_none() {
                    break;
                }
            }
            counts.insert(status, total);
        }
        Ok(counts)
    }
}
