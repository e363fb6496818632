//! [`DynamoStore`]: the `SagaStore` port on one DynamoDB table.
//!
//! One item per saga, partition key `id` (the layout and why: `item.rs`):
//!
//! | attribute | type | what |
//! |---|---|---|
//! | `revision` | N | optimistic-concurrency revision; every commit is conditional on it |
//! | `body` | B | raw-deflate JSON: the `SagaInstance`, recent history, pending outboxes |
//! | `saga`, `version`, `started_at` | S/N | written by the create only, projected into both indexes |
//! | `status` | S | written when it changes, projected into both indexes |
//! | `due_pk`, `wake_at` | S/N | while the saga needs looking at (non-terminal, or an outbox pending): the sparse `by_due` index |
//! | `end_pk`, `ended_at` | S/N | once terminal: the sparse `by_end` index |
//! | `expires_at` | N | once terminal: the TTL attribute (epoch seconds, `ended_at` + retention) |
//!
//! Indexes (no call scans the table), both with partition keys sharded by a
//! hash of the saga id (`due#<k>`, `<status>#<k>`, `k` < [`INDEX_SHARDS`]),
//! queries fanning out over the shards: `by_due` (`due_pk`, `wake_at`) for
//! timers, the outbox sweeper and listing non-terminal sagas; `by_end`
//! (`end_pk`, `ended_at`) for listing terminal ones. Index reads are
//! eventually consistent, so `due` and `pending_outboxes` re-read their
//! candidates from the table (consistent read) before answering.
//!
//! The outbox lives in the body, so state and commands commit in one
//! conditional write; every committed outbox is reported `outbox_pending`,
//! and the orchestrator sends it — a received batch's outboxes at once, so
//! the SQS batcher merges them — and calls `clear_outbox`, which only marks
//! it sent in this adapter's cache of the bodies it read or wrote: the
//! saga's next commit writes the body without it. One still in the item
//! when its grace ([`OUTBOX_GRACE_MS`]) passes brings the saga into the
//! `due` range, where the timer pass writes the clearance it knows of, and
//! the sweeper re-sends what nobody confirmed (a crash, a failed send, or
//! another replica's send: a harmless duplicate).
//!
//! Known limits: an item holds at most 400 KB; history keeps its first and
//! latest [`HISTORY_KEPT`](crate::item::HISTORY_KEPT) − 1 lines.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, ScalarAttributeType, Select, SseSpecification, SseType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use sqsaga_core::Millis;
use sqsaga_core::machine::SagaStatus;
use sqsaga_queue::OutgoingMessage;
use sqsaga_store::{
    HistoryEntry, OutboxMessage, PendingOutbox, SagaRecord, SagaStore, SagaSummary, SagaWrite, StoreError, WriteOutcome,
};
use tokio::task::JoinSet;

use crate::error::Failure;
use crate::item::{Before, Body, StoredMessage, StoredOutbox, WakePlan, plan_commit, plan_wake};
use crate::item::{INDEX_SHARDS, OUTBOX_GRACE_MS, TTL_ATTRIBUTE};

/// Sparse index of sagas to look at (timers, pending outboxes), by when.
pub const DUE_INDEX: &str = "by_due";
/// Sparse index of terminal sagas, newest first.
pub const END_INDEX: &str = "by_end";
/// Attributes both indexes project.
const PROJECTED: [&str; 4] = ["status", "saga", "version", "started_at"];
/// BatchGetItem: at most 100 keys per request.
const BATCH_GET_MAX: usize = 100;
/// Rounds for unprocessed keys and for outbox clears that raced a writer.
const ROUNDS: u32 = 8;
/// Page size of index queries.
const PAGE: usize = 500;
/// Bodies cached at most (the bodies this process read or wrote last); past
/// it, the cache keeps only the entries holding an unpersisted clearance.
const CACHE_MAX: usize = 100_000;
/// The key `reachable` reads: no saga has it, so the read costs half a
/// read unit whatever the table holds.
const REACHABILITY_KEY: &str = "__sqsaga_reachability__";
/// Attributes a read of a whole saga needs.
const ITEM: [&str; 4] = ["id", "revision", "body", "wake_at"];

const CONDITION_FAILED: &[&str] = &["ConditionalCheckFailedException"];

/// Whether `ensure_table` made the table or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableStatus {
    Created,
    Found,
}

/// The `SagaStore` port on DynamoDB. Cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: Arc<str>,
    /// Where requests go, for error messages.
    endpoint: Arc<str>,
    /// How long terminal sagas are kept (the TTL set at the terminal commit).
    retention: Duration,
    /// The last body this process read or wrote per saga: a commit after a
    /// load needs no read of its own, and a confirmed outbox is dropped
    /// from it here, to be persisted with the saga's next write.
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

/// One saga as this process last saw it.
#[derive(Debug, Clone)]
struct Cached {
    revision: u64,
    body: Body,
    /// The item's `wake_at`.
    wake_at: Option<Millis>,
    /// The body differs from the item's: outboxes confirmed sent here.
    cleared: bool,
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

/// A saga item as read: revision, decoded body, `wake_at`.
struct Read {
    id: String,
    revision: u64,
    body: Body,
    wake_at: Option<Millis>,
}

fn parse_item(item: &HashMap<String, AttributeValue>) -> Result<Read, StoreError> {
    let id = get_s(item, "id").unwrap_or("(no id)").to_string();
    let revision = get_n(item, "revision").ok_or_else(|| corrupt(&id, "missing `revision`"))?;
    let bytes = item
        .get("body")
        .and_then(|b| b.as_b().ok())
        .ok_or_else(|| corrupt(&id, "missing `body` (an item of an older layout? see `sqsaga provision`)"))?;
    let body = Body::decode(bytes.as_ref()).map_err(|e| corrupt(&id, e))?;
    Ok(Read { id, revision, body, wake_at: get_n(item, "wake_at") })
}

/// The outbox of a write, checked against the queue limits.
fn stored_outbox(write: &SagaWrite, revision: u64) -> Result<Option<StoredOutbox>, StoreError> {
    if write.outbox.is_empty() {
        return Ok(None);
    }
    let mut msgs = Vec::with_capacity(write.outbox.len());
    for m in &write.outbox {
        m.message.check()?;
        msgs.push(StoredMessage {
            queue: m.queue.clone(),
            body: m.message.body.clone(),
            attributes: m.message.attributes.clone(),
            delay: m.message.delay,
        });
    }
    Ok(Some(StoredOutbox { rev: revision, at: write.instance.updated_at, msgs }))
}

fn outbox_messages(o: &StoredOutbox) -> Vec<OutboxMessage> {
    o.msgs
        .iter()
        .map(|m| OutboxMessage {
            queue: m.queue.clone(),
            message: OutgoingMessage { body: m.body.clone(), attributes: m.attributes.clone(), delay: m.delay },
        })
        .collect()
}

fn summary(id: &str, item: &HashMap<String, AttributeValue>, updated_at: Millis) -> Result<SagaSummary, StoreError> {
    let status =
        get_s(item, "status").and_then(SagaStatus::parse).ok_or_else(|| corrupt(id, "missing or unknown `status`"))?;
    Ok(SagaSummary {
        id: id.to_string(),
        saga: get_s(item, "saga").unwrap_or_default().to_string(),
        version: get_n(item, "version").ok_or_else(|| corrupt(id, "missing `version`"))?,
        status,
        started_at: get_n(item, "started_at").unwrap_or(0),
        updated_at,
    })
}

impl DynamoStore {
    pub(crate) fn new(client: Client, endpoint: &str, table: &str, retention: Duration) -> Self {
        DynamoStore {
            client,
            table: Arc::from(table),
            endpoint: Arc::from(endpoint),
            retention,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client, for what the port does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How long terminal sagas are kept.
    pub fn retention(&self) -> Duration {
        self.retention
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

    /// Creates the table and its two indexes (on-demand billing,
    /// encryption at rest with the AWS-managed KMS key, or `kms_key`) unless
    /// it exists, waits until it is active, and turns on TTL on
    /// [`TTL_ATTRIBUTE`]. A table that exists without one of the indexes is
    /// an error naming it.
    pub async fn ensure_table(&self, kms_key: Option<&str>) -> Result<TableStatus, StoreError> {
        if self.describe_indexes().await?.is_some() {
            self.check_indexes().await?;
            self.ensure_ttl().await?;
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
        let index = |name: &str, hash: &str, range: &str| -> Result<GlobalSecondaryIndex, StoreError> {
            let mut projection = Projection::builder().projection_type(ProjectionType::Include);
            for a in PROJECTED {
                projection = projection.non_key_attributes(a);
            }
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key_el(hash, KeyType::Hash)?)
                .key_schema(key_el(range, KeyType::Range)?)
                .projection(projection.build())
                .build()
                .map_err(|e| build_error("CreateTable", e))
        };
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
            .attribute_definitions(attr("due_pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("wake_at", ScalarAttributeType::N)?)
            .attribute_definitions(attr("end_pk", ScalarAttributeType::S)?)
            .attribute_definitions(attr("ended_at", ScalarAttributeType::N)?)
            .key_schema(key_el("id", KeyType::Hash)?)
            .global_secondary_indexes(index(DUE_INDEX, "due_pk", "wake_at")?)
            .global_secondary_indexes(index(END_INDEX, "end_pk", "ended_at")?)
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
        self.ensure_ttl().await?;
        Ok(status)
    }

    /// Turns on TTL on [`TTL_ATTRIBUTE`] unless it is on (or turning on).
    /// Idempotent: DynamoDB refuses a second UpdateTimeToLive while one is
    /// in progress, so the current state is asked first.
    pub async fn ensure_ttl(&self) -> Result<(), StoreError> {
        if self.ttl_enabled().await? {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(TTL_ATTRIBUTE)
            .build()
            .map_err(|e| build_error("UpdateTimeToLive", e))?;
        match self
            .client
            .update_time_to_live()
            .table_name(self.table.as_ref())
            .time_to_live_specification(spec)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = self.failure(&e);
                // "TimeToLive is already enabled": a concurrent provision.
                if f.message.contains("already enabled") { Ok(()) } else { Err(f.into_store()) }
            }
        }
    }

    /// Whether TTL is on (or turning on) for [`TTL_ATTRIBUTE`].
    pub async fn ttl_enabled(&self) -> Result<bool, StoreError> {
        let out = self
            .client
            .describe_time_to_live()
            .table_name(self.table.as_ref())
            .send()
            .await
            .map_err(|e| self.failure(&e).into_store())?;
        let Some(d) = out.time_to_live_description else { return Ok(false) };
        let on = matches!(d.time_to_live_status, Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
        Ok(on && d.attribute_name.as_deref() == Some(TTL_ATTRIBUTE))
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
        for want in [DUE_INDEX, END_INDEX] {
            if !indexes.iter().any(|i| i == want) {
                return Err(StoreError::Backend(format!(
                    "table `{}` exists without the `{want}` index sqsaga needs (it has: {}; a table of the \
                     layout before the sharded indexes must be recreated)",
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

    /// Items of one index partition: `hash = value AND range <= upto`
    /// (ascending) or all of them (descending), paginated, at most `limit`.
    async fn query_index(
        &self,
        index: &str,
        hash: (&str, String),
        range_upto: Option<(&str, Millis)>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut expr = Expr::default();
        let mut condition = format!("{} = {}", expr.n(hash.0), expr.v("h", s(hash.1.clone())));
        if let Some((range, upto)) = range_upto {
            condition.push_str(&format!(" AND {} <= {}", expr.n(range), expr.v("r", n(upto))));
        }
        let page = limit.clamp(1, PAGE) as i32;
        // The SDK's paginator follows LastEvaluatedKey; we stop at `limit` items.
        let mut items = self
            .client
            .query()
            .table_name(self.table.as_ref())
            .index_name(index)
            .key_condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .scan_index_forward(forward)
            .limit(page)
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while out.len() < limit {
            match items.next().await {
                Some(item) => out.push(item.map_err(|e| self.failure(&e).into_store())?),
                None => break,
            }
        }
        Ok(out)
    }

    /// [`DynamoStore::query_index`] over every shard's partition at once
    /// (`partition(k)` names shard `k`'s), results concatenated.
    async fn query_shards(
        &self,
        index: &'static str,
        hash_attr: &'static str,
        partition: impl Fn(u32) -> String,
        range_upto: Option<(&'static str, Millis)>,
        forward: bool,
        limit: usize,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut tasks = JoinSet::new();
        for shard in 0..INDEX_SHARDS {
            let (me, pk) = (self.clone(), partition(shard));
            tasks.spawn(crate::capacity::inherit_purpose(async move {
                me.query_index(index, (hash_attr, pk), range_upto, forward, limit).await
            }));
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let items = joined.map_err(|e| StoreError::Backend(format!("an index query task failed: {e}")))??;
            out.extend(items);
        }
        Ok(out)
    }

    /// Ids in `by_due` whose `wake_at` is at or before `upto`, consistently
    /// re-read, merged with what this process knows (confirmed outboxes).
    async fn wake_candidates(&self, upto: Millis, limit: usize) -> Result<Vec<(Read, bool)>, StoreError> {
        let keys = self
            .query_shards(DUE_INDEX, "due_pk", crate::item::due_partition, Some(("wake_at", upto)), true, limit)
            .await?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = keys.iter().filter_map(|k| get_s(k, "id").map(str::to_string)).collect();
        let mut reads = Vec::with_capacity(ids.len());
        for item in self.batch_get(&ids, &ITEM).await? {
            reads.push(self.remember(parse_item(&item)?));
        }
        Ok(reads)
    }

    /// Caches what was read, unless the cache holds the same revision with
    /// a clearance not yet persisted, which wins; returns the merged view
    /// and whether it differs from the item (a clearance to persist).
    fn remember(&self, read: Read) -> (Read, bool) {
        let Ok(mut cache) = self.cache.lock() else { return (read, false) };
        if let Some(c) = cache.get(&read.id)
            && c.revision == read.revision
            && c.cleared
        {
            return (Read { id: read.id, revision: c.revision, body: c.body.clone(), wake_at: read.wake_at }, true);
        }
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.cleared);
        }
        cache.insert(
            read.id.clone(),
            Cached { revision: read.revision, body: read.body.clone(), wake_at: read.wake_at, cleared: false },
        );
        (read, false)
    }

    fn cached(&self, id: &str) -> Option<Cached> {
        self.cache.lock().ok()?.get(id).cloned()
    }

    fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
    }

    fn store_cached(&self, id: &str, cached: Cached) {
        if let Ok(mut cache) = self.cache.lock() {
            // A finished saga with nothing pending is not written again.
            if cached.body.state.status.is_terminal() && cached.body.outbox.is_empty() {
                cache.remove(id);
                return;
            }
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, c| c.cleared);
            }
            cache.insert(id.to_string(), cached);
        }
    }

    /// One saga item, read consistently; `None` when it does not exist.
    async fn read_item(&self, id: &str) -> Result<Option<Read>, StoreError> {
        let mut expr = Expr::default();
        let projection: Vec<String> = ITEM.iter().map(|a| expr.n(a)).collect();
        let out = self
            .client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(id)))
            .consistent_read(true)
            .projection_expression(projection.join(", "))
            .set_expression_attribute_names(expr.names())
            .send()
            .await
            .map_err(|e| self.failure(&e).into_store())?;
        out.item.map(|item| parse_item(&item)).transpose()
    }

    /// Every write at once; outcomes in order, or the first hard error.
    async fn write_all(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        if writes.len() == 1 {
            let mut writes = writes;
            let Some(w) = writes.pop() else { return Ok(Vec::new()) };
            return Ok(vec![self.write_one(w).await?]);
        }
        let mut tasks = JoinSet::new();
        let count = writes.len();
        for (i, w) in writes.into_iter().enumerate() {
            let me = self.clone();
            tasks.spawn(crate::capacity::inherit_purpose(async move { (i, me.write_one(w).await) }));
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

    async fn write_one(&self, w: SagaWrite) -> Result<WriteOutcome, StoreError> {
        let revision = w.expected_revision.map_or(1, |r| r.saturating_add(1));
        let outbox = stored_outbox(&w, revision)?;
        let outbox_pending = outbox.is_some();
        let SagaWrite { instance, expected_revision, history, .. } = w;
        let id = instance.id.clone();
        match expected_revision {
            None => {
                let mut body = Body { state: instance, history: Vec::new(), elided: 0, outbox: Vec::new() };
                body.append_history(history);
                body.outbox.extend(outbox);
                let plan = plan_commit(None, &body, self.retention, body.state.updated_at);
                let encoded = body.encode().map_err(|e| corrupt(&id, e))?;
                let st = &body.state;
                let mut item = HashMap::from([
                    ("id".to_string(), s(&id)),
                    ("revision".to_string(), n(1)),
                    ("body".to_string(), AttributeValue::B(Blob::new(encoded))),
                    ("status".to_string(), s(st.status.as_str())),
                    ("saga".to_string(), s(&st.saga)),
                    ("version".to_string(), n(st.version)),
                    ("started_at".to_string(), n(st.started_at)),
                ]);
                let mut wake_at = None;
                if let WakePlan::Set(at) = plan.wake {
                    item.insert("due_pk".to_string(), s(crate::item::due_pk(&id)));
                    item.insert("wake_at".to_string(), n(at));
                    wake_at = Some(at);
                }
                if let Some(e) = &plan.ended {
                    item.insert("end_pk".to_string(), s(&e.end_pk));
                    item.insert("ended_at".to_string(), n(e.ended_at));
                    item.insert(TTL_ATTRIBUTE.to_string(), n(e.expires_at));
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
                    Ok(_) => {
                        self.store_cached(&id, Cached { revision: 1, body, wake_at, cleared: false });
                        Ok(WriteOutcome::Committed { revision: 1, outbox_pending })
                    }
                    Err(e) => {
                        let f = self.failure(&e);
                        if f.is(CONDITION_FAILED) { Ok(WriteOutcome::AlreadyExists) } else { Err(f.into_store()) }
                    }
                }
            }
            Some(expected) => {
                // What the item holds at `expected`: cached by the load
                // before this write, or read now.
                let before = match self.cached(&id).filter(|c| c.revision == expected) {
                    Some(c) => c,
                    None => match self.read_item(&id).await?.map(|r| self.remember(r).0) {
                        Some(r) if r.revision == expected => {
                            Cached { revision: r.revision, body: r.body, wake_at: r.wake_at, cleared: false }
                        }
                        _ => return Ok(WriteOutcome::Conflict),
                    },
                };
                let mut body = Body {
                    state: instance,
                    history: before.body.history.clone(),
                    elided: before.body.elided,
                    outbox: before.body.outbox.clone(),
                };
                body.append_history(history);
                body.outbox.extend(outbox);
                let prior = Before { status: before.body.state.status, wake_at: before.wake_at };
                let plan = plan_commit(Some(prior), &body, self.retention, body.state.updated_at);
                let encoded = body.encode().map_err(|e| corrupt(&id, e))?;
                let mut expr = Expr::default();
                let mut set = vec![
                    format!("{} = {}", expr.n("revision"), expr.v("rev", n(revision))),
                    format!("{} = {}", expr.n("body"), expr.v("body", AttributeValue::B(Blob::new(encoded)))),
                ];
                if let Some(status) = plan.status {
                    set.push(format!("{} = {}", expr.n("status"), expr.v("status", s(status.as_str()))));
                }
                if let Some(e) = &plan.ended {
                    set.push(format!("{} = {}", expr.n("end_pk"), expr.v("epk", s(&e.end_pk))));
                    set.push(format!("{} = {}", expr.n("ended_at"), expr.v("eat", n(e.ended_at))));
                    set.push(format!("{} = {}", expr.n(TTL_ATTRIBUTE), expr.v("ttl", n(e.expires_at))));
                }
                let (wake_sets, remove, wake_at) = wake_update(&mut expr, &id, before.wake_at, plan.wake);
                set.extend(wake_sets);
                let mut update = format!("SET {}", set.join(", "));
                if !remove.is_empty() {
                    update.push_str(&format!(" REMOVE {}", remove.join(", ")));
                }
                let condition = format!("{} = {}", expr.n("revision"), expr.v("expected", n(expected)));
                let result = self
                    .client
                    .update_item()
                    .table_name(self.table.as_ref())
                    .set_key(Some(key(&id)))
                    .update_expression(update)
                    .condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .send()
                    .await;
                match result {
                    Ok(_) => {
                        self.store_cached(&id, Cached { revision, body, wake_at, cleared: false });
                        Ok(WriteOutcome::Committed { revision, outbox_pending })
                    }
                    Err(e) => {
                        self.forget(&id);
                        let f = self.failure(&e);
                        if f.is(CONDITION_FAILED) { Ok(WriteOutcome::Conflict) } else { Err(f.into_store()) }
                    }
                }
            }
        }
    }

    /// Writes what this process knows and the item does not — confirmed
    /// outboxes, a `wake_at` to move — without a new revision (the state
    /// is unchanged), conditional on the revision read. `Ok(false)` on a
    /// lost race (the next commit or pass sees the new item).
    async fn tidy(&self, read: &Read, cleared: bool, wake: WakePlan) -> Result<bool, StoreError> {
        if !cleared && wake == WakePlan::Keep {
            return Ok(true);
        }
        let mut expr = Expr::default();
        let mut set = Vec::new();
        if cleared {
            let encoded = read.body.encode().map_err(|e| corrupt(&read.id, e))?;
            set.push(format!("{} = {}", expr.n("body"), expr.v("body", AttributeValue::B(Blob::new(encoded)))));
        }
        let (wake_sets, remove, wake_at) = wake_update(&mut expr, &read.id, read.wake_at, wake);
        set.extend(wake_sets);
        let mut update = String::new();
        if !set.is_empty() {
            update.push_str(&format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            update.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let condition = format!("{} = {}", expr.n("revision"), expr.v("expected", n(read.revision)));
        let result = self
            .client
            .update_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(&read.id)))
            .update_expression(update.trim())
            .condition_expression(condition)
            .set_expression_attribute_names(expr.names())
            .set_expression_attribute_values(expr.values())
            .send()
            .await;
        match result {
            Ok(_) => {
                let cached = Cached { revision: read.revision, body: read.body.clone(), wake_at, cleared: false };
                self.store_cached(&read.id, cached);
                Ok(true)
            }
            Err(e) => {
                self.forget(&read.id);
                let f = self.failure(&e);
                if f.is(CONDITION_FAILED) { Ok(false) } else { Err(f.into_store()) }
            }
        }
    }

    /// Clears `revision`'s outbox in the item now: read, drop, conditional
    /// write, again if a writer raced in.
    async fn clear_now(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        for _ in 0..ROUNDS {
            let Some(mut read) = self.read_item(saga_id).await? else { return Ok(()) };
            let len = read.body.outbox.len();
            read.body.outbox.retain(|o| o.rev != revision);
            if read.body.outbox.len() == len {
                return Ok(());
            }
            let stored = read.wake_at;
            let wake = plan_wake(stored, read.body.required_wake(), read.body.state.updated_at);
            if self.tidy(&read, true, wake).await? {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "the outbox of saga `{saga_id}` kept changing while revision {revision} was being cleared"
        )))
    }
}

/// The `SET` clauses and `REMOVE` names for a [`WakePlan`], and the item's
/// `wake_at` after it. `due_pk` is written only when the saga enters the index.
fn wake_update(
    expr: &mut Expr,
    id: &str,
    stored: Option<Millis>,
    plan: WakePlan,
) -> (Vec<String>, Vec<String>, Option<Millis>) {
    match plan {
        WakePlan::Keep => (Vec::new(), Vec::new(), stored),
        WakePlan::Set(at) => {
            let mut set = vec![format!("{} = {}", expr.n("wake_at"), expr.v("wake", n(at)))];
            if stored.is_none() {
                set.push(format!("{} = {}", expr.n("due_pk"), expr.v("dpk", s(crate::item::due_pk(id)))));
            }
            (set, Vec::new(), Some(at))
        }
        WakePlan::Remove => (Vec::new(), vec![expr.n("wake_at"), expr.n("due_pk")], None),
    }
}

#[async_trait]
impl SagaStore for DynamoStore {
    async fn load(&self, ids: &[String]) -> Result<Vec<SagaRecord>, StoreError> {
        let items = self.batch_get(ids, &ITEM).await?;
        let mut records = Vec::with_capacity(items.len());
        for item in items {
            let (read, _) = self.remember(parse_item(&item)?);
            records.push(SagaRecord { instance: read.body.state, revision: read.revision });
        }
        Ok(records)
    }

    /// One conditional write per saga, all at once: each commits or
    /// conflicts on its own. If any fails outright the call fails; writes
    /// that did commit keep their outbox pending, and the orchestrator's
    /// sweeper sends it (the retried events are then recognised as applied).
    /// Every committed outbox is reported pending: the caller sends it and
    /// calls `clear_outbox`. A write after a `load` of the same revision by
    /// this process needs no read; otherwise the item is read first.
    async fn commit(&self, writes: Vec<SagaWrite>) -> Result<Vec<WriteOutcome>, StoreError> {
        self.write_all(writes).await
    }

    /// Drops the outbox from the cached body: the saga's next commit, or the
    /// timer pass that finds it past its grace, writes it. A saga this
    /// process has not cached is cleared in the item at once.
    async fn clear_outbox(&self, saga_id: &str, revision: u64) -> Result<(), StoreError> {
        if let Ok(mut cache) = self.cache.lock()
            && let Some(c) = cache.get_mut(saga_id)
            && c.body.outbox.iter().any(|o| o.rev == revision)
        {
            c.body.outbox.retain(|o| o.rev != revision);
            c.cleared = true;
            return Ok(());
        }
        self.clear_now(saga_id, revision).await
    }

    /// Sagas in `by_due` range for outboxes written at or before
    /// `written_before`; those whose outboxes this process confirmed are
    /// tidied instead of listed.
    async fn pending_outboxes(&self, written_before: Millis, limit: usize) -> Result<Vec<PendingOutbox>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let upto = written_before.saturating_add(OUTBOX_GRACE_MS);
        let mut pending = Vec::new();
        for (read, cleared) in self.wake_candidates(upto, limit).await? {
            if cleared {
                let wake = plan_wake(read.wake_at, read.body.required_wake(), written_before);
                self.tidy(&read, true, wake).await?;
            }
            for o in read.body.outbox.iter().filter(|o| o.at <= written_before) {
                pending.push(PendingOutbox { saga_id: read.id.clone(), revision: o.rev, messages: outbox_messages(o) });
            }
        }
        pending.sort_by(|a, b| (&a.saga_id, a.revision).cmp(&(&b.saga_id, b.revision)));
        pending.truncate(limit);
        Ok(pending)
    }

    /// Candidates from `by_due` (fanned out over its shards), confirmed by a
    /// consistent read, earliest first. A candidate looked at early — its
    /// timer is later than its `wake_at`, nothing pending is past its grace
    /// — has its `wake_at` moved to when it is needed.
    async fn due(&self, now: Millis, limit: usize) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut due: Vec<(Millis, String)> = Vec::new();
        for (read, cleared) in self.wake_candidates(now, limit).await? {
            let st = &read.body.state;
            if !st.status.is_terminal()
                && let Some(at) = st.next_wakeup().filter(|at| *at <= now)
            {
                due.push((at, read.id.clone()));
                continue;
            }
            let required = read.body.required_wake();
            if required.is_some_and(|r| r <= now) {
                // An outbox past its grace: the sweeper's.
                continue;
            }
            let wake = plan_wake(read.wake_at, required, now);
            if let Err(e) = self.tidy(&read, cleared, wake).await {
                tracing::debug!(saga_id = %read.id, error = %e, "Cannot move a saga's wake-up; the next pass will.");
            }
        }
        due.sort();
        due.truncate(limit);
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    /// Terminal sagas from `by_end` (newest first per shard); non-terminal
    /// ones from `by_due`, whose bodies are read for their last update.
    async fn list(&self, status: Option<SagaStatus>, limit: usize) -> Result<Vec<SagaSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let statuses = match status {
            Some(s) => vec![s],
            None => SagaStatus::ALL.to_vec(),
        };
        let mut out = Vec::new();
        for status in statuses.iter().copied().filter(|s| s.is_terminal()) {
            let items = self
                .query_shards(END_INDEX, "end_pk", |k| crate::item::end_partition(status, k), None, false, limit)
                .await?;
            for item in items {
                let id = get_s(&item, "id").unwrap_or("(no id)").to_string();
                out.push(summary(&id, &item, get_n(&item, "ended_at").unwrap_or(0))?);
            }
        }
        let open: Vec<SagaStatus> = statuses.into_iter().filter(|s| !s.is_terminal()).collect();
        if !open.is_empty() {
            let items =
                self.query_shards(DUE_INDEX, "due_pk", crate::item::due_partition, None, false, usize::MAX).await?;
            let wanted = |item: &HashMap<String, AttributeValue>| {
                get_s(item, "status").and_then(SagaStatus::parse).is_some_and(|s| open.contains(&s))
            };
            let ids: Vec<String> =
                items.iter().filter(|i| wanted(i)).filter_map(|i| get_s(i, "id").map(str::to_string)).collect();
            for item in self.batch_get(&ids, &ITEM).await? {
                let read = parse_item(&item)?;
                let st = &read.body.state;
                if open.contains(&st.status) {
                    out.push(SagaSummary::from(st));
                }
            }
        }
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then_with(|| b.id.cmp(&a.id)));
        out.truncate(limit);
        Ok(out)
    }

    async fn history(&self, saga_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(self.read_item(saga_id).await?.map(|r| r.body.full_history()).unwrap_or_default())
    }

    /// `Select=COUNT` queries of every `by_end` partition (paginated:
    /// DynamoDB counts at most 1 MB of index per page), and the non-terminal
    /// sagas of `by_due` by their projected status. Every status is present.
    async fn counts(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let mut counts: BTreeMap<SagaStatus, u64> = SagaStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        for status in SagaStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            let mut total = 0u64;
            for shard in 0..INDEX_SHARDS {
                let mut expr = Expr::default();
                let pk = crate::item::end_partition(status, shard);
                let condition = format!("{} = {}", expr.n("end_pk"), expr.v("p", s(pk)));
                let mut pages = self
                    .client
                    .query()
                    .table_name(self.table.as_ref())
                    .index_name(END_INDEX)
                    .key_condition_expression(condition)
                    .set_expression_attribute_names(expr.names())
                    .set_expression_attribute_values(expr.values())
                    .select(Select::Count)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    total += u64::try_from(page.map_err(|e| self.failure(&e).into_store())?.count).unwrap_or(0);
                }
            }
            counts.insert(status, total);
        }
        let open = self.query_shards(DUE_INDEX, "due_pk", crate::item::due_partition, None, true, usize::MAX).await?;
        for item in open {
            if let Some(status) = get_s(&item, "status").and_then(SagaStatus::parse).filter(|s| !s.is_terminal()) {
                *counts.entry(status).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// One eventually consistent GetItem of a key no saga has: half a read
    /// unit, whatever the table holds.
    async fn reachable(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(self.table.as_ref())
            .set_key(Some(key(REACHABILITY_KEY)))
            .projection_expression("id")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.failure(&e).into_store())
    }
}
