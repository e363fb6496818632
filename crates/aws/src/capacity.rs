//! Capacity accounting for DynamoDB: what every call costs in read and
//! write units, for the cost benchmark (`sqsaga bench sqs`). DynamoDB
//! on-demand bills per unit, not per request, so request counts alone
//! (`requests.rs`) say little about the bill.
//!
//! Two figures per call, side by side:
//!
//! - **reported**: the `ConsumedCapacity` DynamoDB returns when asked
//!   (`ReturnConsumedCapacity=INDEXES`: the table and each index). The
//!   interceptor asks on every call that takes the parameter. moto (the
//!   emulator) answers with placeholders — 1 unit per write, 0.5 per read,
//!   0.5 per `UpdateItem`, one per key of a `BatchGetItem`, no index figures —
//!   so on moto this column counts calls rather than measuring them.
//! - **estimated**: the same by DynamoDB's documented rules, from item
//!   sizes: an item's size is the UTF-8 bytes of its attribute names and
//!   values (numbers: 1 byte per two significant digits, plus 1; lists and
//!   maps: 3 bytes, plus 1 per element); a write costs 1 WRU per KB of the
//!   larger of the item before and after, rounded up (a failed condition
//!   still costs the item's size, at least 1); each global secondary index
//!   the write touches costs its projected entry's size the same way — one
//!   write when the item enters, leaves or changes a projected attribute,
//!   two when an index key changes (delete the old entry, put the new); a
//!   read costs 1 RRU per 4 KB of the whole item (a projection does not make
//!   it cheaper), half for an eventually consistent read, at least one
//!   4 KB block; a `BatchGetItem` rounds each item, a `Query` the sum of
//!   what it read (index entries, for an index; a `Select=COUNT` reads the
//!   same as a query that returns the items).
//!
//! The estimate needs every item's size before and after each write, which
//! a request alone does not tell (`UpdateItem` names changes only). So the
//! meter keeps a copy of every item it sees written (`PutItem` inputs,
//! `UpdateItem` results — it asks for `ReturnValues=ALL_NEW` when the caller
//! asked for nothing) and learns the key and index schemas from
//! `CreateTable` and `DescribeTable`. That copy grows with the table: the
//! meter is for benchmarks, never for a production process.
//!
//! Costs are split by **purpose**, a label the caller sets around its calls
//! with [`with_purpose`] (a task-local: the code between the caller and the
//! SDK does not change; the store carries it into the tasks it spawns). The
//! benchmark labels by port method, so a purpose is what the orchestrator
//! asked the store for: commit, outbox clear, due timers, the sweeper,
//! readiness.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::operation::batch_get_item::{BatchGetItemInput, BatchGetItemOutput};
use aws_sdk_dynamodb::operation::batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput};
use aws_sdk_dynamodb::operation::create_table::CreateTableInput;
use aws_sdk_dynamodb::operation::delete_item::{DeleteItemError, DeleteItemInput, DeleteItemOutput};
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::get_item::{GetItemInput, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemInput, PutItemOutput};
use aws_sdk_dynamodb::operation::query::{QueryInput, QueryOutput};
use aws_sdk_dynamodb::operation::scan::{ScanInput, ScanOutput};
use aws_sdk_dynamodb::operation::transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput};
use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemInput, UpdateItemOutput};
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, KeySchemaElement, KeyType, Projection, ProjectionType, ReturnConsumedCapacity,
    ReturnValue,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut, Error as OperationError,
};
use aws_smithy_runtime_api::client::orchestrator::{Metadata, OrchestratorError};
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde::Serialize;

/// An item: attribute name → value.
pub type Item = HashMap<String, AttributeValue>;

/// Bytes per write unit.
pub const WRITE_UNIT_BYTES: u64 = 1024;
/// Bytes per (strongly consistent) read unit.
pub const READ_UNIT_BYTES: u64 = 4096;
/// Purpose of calls made outside any [`with_purpose`].
pub const UNLABELLED: &str = "other";

tokio::task_local! {
    /// The purpose of the DynamoDB calls the current task makes.
    static PURPOSE: &'static str;
}

/// Runs `f` with its DynamoDB calls labelled `purpose`.
pub async fn with_purpose<F: Future>(purpose: &'static str, f: F) -> F::Output {
    PURPOSE.scope(purpose, f).await
}

/// The current task's purpose, if a caller set one.
pub fn current_purpose() -> Option<&'static str> {
    PURPOSE.try_with(|p| *p).ok()
}

/// `f` under the current task's purpose: for tasks a call spawns.
pub(crate) fn inherit_purpose<F: Future>(f: F) -> impl Future<Output = F::Output> {
    PURPOSE.scope(current_purpose().unwrap_or(UNLABELLED), f)
}

// ---------------------------------------------------------------- size rules

/// Bytes of a number: 1 per two significant digits (leading and trailing
/// zeros trimmed), plus 1.
pub fn number_size(n: &str) -> u64 {
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1) as u64;
    significant.div_ceil(2) + 1
}

/// Bytes of a value, its name not included.
pub fn value_size(v: &AttributeValue) -> u64 {
    match v {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len() as u64,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value_size(e)).sum::<u64>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, e)| 1 + k.len() as u64 + value_size(e)).sum::<u64>(),
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len() as u64).sum(),
        _ => 0,
    }
}

/// Bytes of an item: its attributes' names and values.
pub fn item_size(item: &Item) -> u64 {
    item.iter().map(|(k, v)| k.len() as u64 + value_size(v)).sum()
}

/// Write units of writing `bytes`: 1 per KB, rounded up, at least 1.
pub fn write_units(bytes: u64) -> f64 {
    bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as f64
}

/// Read units of reading `bytes`: 1 per 4 KB, rounded up, at least one
/// block; half for an eventually consistent read.
pub fn read_units(bytes: u64, consistent: bool) -> f64 {
    let blocks = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    if consistent { blocks } else { blocks / 2.0 }
}

/// What an index copies from the table beyond the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projected {
    KeysOnly,
    Include(Vec<String>),
    All,
}

/// A global secondary index: its keys and projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSchema {
    pub name: String,
    pub hash: String,
    pub range: Option<String>,
    pub projected: Projected,
}

impl IndexSchema {
    /// The entry `item` has in this index (table key, index keys and
    /// projected attributes), or `None` when a key attribute is missing (a
    /// sparse index leaves the item out).
    pub fn entry(&self, item: &Item, table_key: &[String]) -> Option<Item> {
        let keys: Vec<&String> = std::iter::once(&self.hash).chain(self.range.as_ref()).collect();
        if keys.iter().any(|k| !item.contains_key(k.as_str())) {
            return None;
        }
        let keep = |name: &str| {
            keys.iter().any(|k| k.as_str() == name)
                || table_key.iter().any(|k| k == name)
                || match &self.projected {
                    Projected::KeysOnly => false,
                    Projected::Include(attrs) => attrs.iter().any(|a| a == name),
                    Projected::All => true,
                }
        };
        Some(item.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Write units this index takes when a write turns `before` into `after`.
    pub fn write_units(&self, before: Option<&Item>, after: Option<&Item>, table_key: &[String]) -> f64 {
        let old = before.and_then(|i| self.entry(i, table_key));
        let new = after.and_then(|i| self.entry(i, table_key));
        match (old, new) {
            (None, None) => 0.0,
            (Some(e), None) | (None, Some(e)) => write_units(item_size(&e)),
            (Some(old), Some(new)) => {
                let key_changed = std::iter::once(&self.hash)
                    .chain(self.range.as_ref())
                    .any(|k| old.get(k.as_str()) != new.get(k.as_str()));
                if key_changed {
                    write_units(item_size(&old)) + write_units(item_size(&new))
                } else if old != new {
                    write_units(item_size(&old).max(item_size(&new)))
                } else {
                    0.0
                }
            }
        }
    }
}

/// Write units a table write takes: the larger of the item before and after.
pub fn table_write_units(before: Option<&Item>, after: Option<&Item>) -> f64 {
    write_units(before.map_or(0, item_size).max(after.map_or(0, item_size)))
}

// ---------------------------------------------------------------- the meter

/// Capacity units, on the table and per index.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Units {
    pub table_wru: f64,
    pub table_rru: f64,
    pub index_wru: BTreeMap<String, f64>,
    pub index_rru: BTreeMap<String, f64>,
}

impl Units {
    /// Write units, table and indexes.
    pub fn wru(&self) -> f64 {
        self.table_wru + self.index_wru.values().sum::<f64>()
    }

    /// Read units, table and indexes.
    pub fn rru(&self) -> f64 {
        self.table_rru + self.index_rru.values().sum::<f64>()
    }

    /// Write units of the indexes alone.
    pub fn index_wru_total(&self) -> f64 {
        self.index_wru.values().sum()
    }

    fn add(&mut self, other: &Units) {
        self.table_wru += other.table_wru;
        self.table_rru += other.table_rru;
        for (k, v) in &other.index_wru {
            *self.index_wru.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &other.index_rru {
            *self.index_rru.entry(k.clone()).or_default() += v;
        }
    }

    fn minus(&self, earlier: &Units) -> Units {
        let sub = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>| {
            now.iter()
                .map(|(k, v)| (k.clone(), v - then.get(k).copied().unwrap_or(0.0)))
                .filter(|(_, v)| v.abs() > f64::EPSILON)
                .collect()
        };
        Units {
            table_wru: self.table_wru - earlier.table_wru,
            table_rru: self.table_rru - earlier.table_rru,
            index_wru: sub(&self.index_wru, &earlier.index_wru),
            index_rru: sub(&self.index_rru, &earlier.index_rru),
        }
    }
}

/// What the calls of one purpose cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Requests by action (those that got an answer).
    pub requests: BTreeMap<String, u64>,
    /// From `ConsumedCapacity` in the responses.
    pub reported: Units,
    /// By the documented item-size rules.
    pub estimated: Units,
    /// Writes refused by their condition (they cost capacity all the same).
    pub failed_conditions: u64,
    /// Calls whose item sizes the meter could not know (their estimate is a floor).
    pub size_unknown: u64,
}

impl Usage {
    pub fn request_total(&self) -> u64 {
        self.requests.values().sum()
    }

    fn add(&mut self, other: &Usage) {
        for (k, v) in &other.requests {
            *self.requests.entry(k.clone()).or_default() += v;
        }
        self.reported.add(&other.reported);
        self.estimated.add(&other.estimated);
        self.failed_conditions += other.failed_conditions;
        self.size_unknown += other.size_unknown;
    }

    fn minus(&self, earlier: &Usage) -> Usage {
        Usage {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.requests.get(k).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect(),
            reported: self.reported.minus(&earlier.reported),
            estimated: self.estimated.minus(&earlier.estimated),
            failed_conditions: self.failed_conditions.saturating_sub(earlier.failed_conditions),
            size_unknown: self.size_unknown.saturating_sub(earlier.size_unknown),
        }
    }
}

/// Usage by purpose at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CapacitySnapshot {
    pub by_purpose: BTreeMap<String, Usage>,
}

impl CapacitySnapshot {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CapacitySnapshot) -> CapacitySnapshot {
        let empty = Usage::default();
        let by_purpose = self
            .by_purpose
            .iter()
            .map(|(k, u)| (k.clone(), u.minus(earlier.by_purpose.get(k).unwrap_or(&empty))))
            .filter(|(_, u)| u.request_total() > 0)
            .collect();
        CapacitySnapshot { by_purpose }
    }

    /// Every purpose but those in `leave_out`, summed.
    pub fn total_without(&self, leave_out: &[&str]) -> Usage {
        let mut total = Usage::default();
        for (purpose, usage) in &self.by_purpose {
            if !leave_out.contains(&purpose.as_str()) {
                total.add(usage);
            }
        }
        total
    }
}

/// What the meter knows of one table.
#[derive(Debug, Default)]
struct Table {
    /// Key attribute names (partition, then sort).
    key: Vec<String>,
    indexes: Vec<IndexSchema>,
    /// The last known version of every item written, by key.
    items: HashMap<String, Item>,
}

impl Table {
    fn key_of(&self, item: &Item) -> String {
        let key: &[String] = if self.key.is_empty() { &[] } else { &self.key };
        let names: Vec<&str> = if key.is_empty() { vec!["id"] } else { key.iter().map(String::as_str).collect() };
        names
            .iter()
            .map(|k| match item.get(*k) {
                Some(AttributeValue::S(s)) => s.clone(),
                Some(AttributeValue::N(n)) => n.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\u{1f}")
    }

    fn table_key(&self) -> Vec<String> {
        if self.key.is_empty() { vec!["id".to_string()] } else { self.key.clone() }
    }

    /// The cost of a write from `before` to `after`, table and indexes.
    fn write(&self, before: Option<&Item>, after: Option<&Item>) -> Units {
        let key = self.table_key();
        let mut units = Units { table_wru: table_write_units(before, after), ..Units::default() };
        for index in &self.indexes {
            let w = index.write_units(before, after, &key);
            if w > 0.0 {
                units.index_wru.insert(index.name.clone(), w);
            }
        }
        units
    }

    /// Bytes of the index entry of the item with `key`, if known and in the index.
    fn entry_size(&self, index: &IndexSchema, key: &str) -> Option<u64> {
        self.items.get(key).and_then(|i| index.entry(i, &self.table_key())).map(|e| item_size(&e))
    }
}

/// Capacity by purpose, for every call of the client it is attached to.
#[derive(Debug, Default)]
pub struct CapacityMeter {
    state: Mutex<MeterState>,
}

#[derive(Debug, Default)]
struct MeterState {
    tables: HashMap<String, Table>,
    usage: BTreeMap<String, Usage>,
}

impl CapacityMeter {
    pub fn new() -> Self {
        CapacityMeter::default()
    }

    /// The usage so far.
    pub fn snapshot(&self) -> CapacitySnapshot {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        CapacitySnapshot { by_purpose: state.usage.clone() }
    }

    /// The SDK interceptor that feeds this meter.
    pub(crate) fn interceptor(self: &Arc<Self>) -> CapacityInterceptor {
        CapacityInterceptor { meter: self.clone() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut MeterState) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }
}

// ---------------------------------------------------------------- the interceptor

/// What a call was, kept from its input (which the SDK consumes when it
/// serialises) until its output arrives.
#[derive(Debug, Clone)]
struct Pending {
    purpose: &'static str,
    call: Call,
}

impl Storable for Pending {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug, Clone)]
enum Call {
    Put { table: String, item: Item },
    Update { table: String, key: Item, all_new: bool },
    Delete { table: String, key: Item },
    Get { table: String, key: Item, consistent: bool },
    BatchGet { requests: Vec<(String, Vec<Item>, bool)> },
    BatchWrite { requests: Vec<(String, Vec<(Item, bool)>)> },
    Query { table: String, index: Option<String>, consistent: bool },
    CreateTable { table: String, key: Vec<String>, indexes: Vec<IndexSchema> },
    Other,
}

/// Asks for `ConsumedCapacity` (and, on updates, the new item) before a
/// call is serialised; books reported and estimated units when its answer
/// is deserialised.
#[derive(Debug)]
pub(crate) struct CapacityInterceptor {
    meter: Arc<CapacityMeter>,
}

fn key_names(schema: &[KeySchemaElement]) -> Vec<String> {
    let mut hash: Vec<String> =
        schema.iter().filter(|k| k.key_type == KeyType::Hash).map(|k| k.attribute_name.clone()).collect();
    hash.extend(schema.iter().filter(|k| k.key_type == KeyType::Range).map(|k| k.attribute_name.clone()));
    hash
}

fn index_schema(name: &str, schema: &[KeySchemaElement], projection: Option<&Projection>) -> IndexSchema {
    let keys = key_names(schema);
    let projected = match projection.and_then(|p| p.projection_type.as_ref()) {
        Some(ProjectionType::All) => Projected::All,
        Some(ProjectionType::Include) => {
            Projected::Include(projection.and_then(|p| p.non_key_attributes.clone()).unwrap_or_default())
        }
        _ => Projected::KeysOnly,
    };
    IndexSchema {
        name: name.to_string(),
        hash: keys.first().cloned().unwrap_or_default(),
        range: keys.get(1).cloned(),
        projected,
    }
}

impl CapacityInterceptor {
    /// Reads what the answer will need from the input and asks for the capacity.
    fn prepare(input: &mut aws_smithy_runtime_api::client::interceptors::context::Input) -> Call {
        if let Some(i) = input.downcast_mut::<PutItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Put {
                table: i.table_name.clone().unwrap_or_default(),
                item: i.item.clone().unwrap_or_default(),
            };
        }
        if let Some(i) = input.downcast_mut::<UpdateItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            let all_new = match &i.return_values {
                None => {
                    i.return_values = Some(ReturnValue::AllNew);
                    true
                }
                Some(r) => *r == ReturnValue::AllNew,
            };
            return Call::Update {
                table: i.table_name.clone().unwrap_or_default(),
                key: i.key.clone().unwrap_or_default(),
                all_new,
            };
        }
        if let Some(i) = input.downcast_mut::<DeleteItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Delete {
                table: i.table_name.clone().unwrap_or_default(),
                key: i.key.clone().unwrap_or_default(),
            };
        }
        if let Some(i) = input.downcast_mut::<GetItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Get {
                table: i.table_name.clone().unwrap_or_default(),
                key: i.key.clone().unwrap_or_default(),
                consistent: i.consistent_read.unwrap_or(false),
            };
        }
        if let Some(i) = input.downcast_mut::<BatchGetItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            let requests = i
                .request_items
                .iter()
                .flatten()
                .map(|(table, k)| (table.clone(), k.keys.clone(), k.consistent_read.unwrap_or(false)))
                .collect();
            return Call::BatchGet { requests };
        }
        if let Some(i) = input.downcast_mut::<BatchWriteItemInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            let requests = i
                .request_items
                .iter()
                .flatten()
                .map(|(table, writes)| {
                    let writes = writes
                        .iter()
                        .filter_map(|w| match (&w.put_request, &w.delete_request) {
                            (Some(p), _) => Some((p.item.clone(), true)),
                            (None, Some(d)) => Some((d.key.clone(), false)),
                            (None, None) => None,
                        })
                        .collect();
                    (table.clone(), writes)
                })
                .collect();
            return Call::BatchWrite { requests };
        }
        if let Some(i) = input.downcast_mut::<QueryInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Query {
                table: i.table_name.clone().unwrap_or_default(),
                index: i.index_name.clone(),
                consistent: i.consistent_read.unwrap_or(false),
            };
        }
        if let Some(i) = input.downcast_mut::<ScanInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Other;
        }
        if let Some(i) = input.downcast_mut::<TransactWriteItemsInput>() {
            i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
            return Call::Other;
        }
        if let Some(i) = input.downcast_ref::<CreateTableInput>() {
            let indexes = i
                .global_secondary_indexes
                .iter()
                .flatten()
                .map(|g| index_schema(&g.index_name, &g.key_schema, g.projection.as_ref()))
                .collect();
            return Call::CreateTable {
                table: i.table_name.clone().unwrap_or_default(),
                key: key_names(i.key_schema.as_deref().unwrap_or_default()),
                indexes,
            };
        }
        Call::Other
    }
}

impl Intercept for CapacityInterceptor {
    fn name(&self) -> &'static str {
        "sqsaga-capacity-meter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let call = Self::prepare(context.input_mut());
        let purpose = current_purpose().unwrap_or(UNLABELLED);
        cfg.interceptor_state().store_put(Pending { purpose, call });
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let action = cfg.load::<Metadata>().map(Metadata::name).unwrap_or("unknown").to_string();
        let Some(pending) = cfg.load::<Pending>().cloned() else { return Ok(()) };
        let outcome = context.output_or_error();
        self.meter.with(|state| {
            let usage_delta = book(state, &pending.call, outcome);
            let usage = state.usage.entry(pending.purpose.to_string()).or_default();
            *usage.requests.entry(action).or_default() += 1;
            usage.add(&usage_delta);
        });
        Ok(())
    }
}

type Outcome<'a> =
    Result<&'a aws_smithy_runtime_api::client::interceptors::context::Output, &'a OrchestratorError<OperationError>>;

/// Whether a failed call is a write its condition refused.
fn condition_failed(outcome: &Outcome<'_>) -> bool {
    let Err(e) = outcome else { return false };
    let Some(op) = e.as_operation_error() else { return false };
    op.downcast_ref::<PutItemError>().is_some_and(PutItemError::is_conditional_check_failed_exception)
        || op.downcast_ref::<UpdateItemError>().is_some_and(UpdateItemError::is_conditional_check_failed_exception)
        || op.downcast_ref::<DeleteItemError>().is_some_and(DeleteItemError::is_conditional_check_failed_exception)
}

/// Reported units of one `ConsumedCapacity`, as writes or reads.
fn reported(cc: &ConsumedCapacity, write: bool) -> Units {
    let mut units = Units::default();
    let table = cc.table.as_ref().and_then(|t| t.capacity_units).or(cc.capacity_units).unwrap_or(0.0);
    let indexes: BTreeMap<String, f64> = cc
        .global_secondary_indexes
        .iter()
        .chain(cc.local_secondary_indexes.iter())
        .flatten()
        .map(|(k, c)| (k.clone(), c.capacity_units.unwrap_or(0.0)))
        .collect();
    if write {
        units.table_wru = table;
        units.index_wru = indexes;
    } else {
        units.table_rru = table;
        units.index_rru = indexes;
    }
    units
}

/// Books one answered call against the meter's tables; returns its usage
/// (requests left to the caller).
fn book(state: &mut MeterState, call: &Call, outcome: Outcome<'_>) -> Usage {
    let mut usage = Usage::default();
    let failed_condition = condition_failed(&outcome);
    let output = outcome.ok();
    match call {
        Call::CreateTable { table, key, indexes } => {
            let t = state.tables.entry(table.clone()).or_default();
            t.key = key.clone();
            t.indexes = indexes.clone();
        }
        Call::Other => {
            if let Some(d) = output.and_then(|o| o.downcast_ref::<DescribeTableOutput>())
                && let Some(desc) = &d.table
                && let Some(name) = &desc.table_name
            {
                let t = state.tables.entry(name.clone()).or_default();
                t.key = key_names(desc.key_schema.as_deref().unwrap_or_default());
                t.indexes = desc
                    .global_secondary_indexes
                    .iter()
                    .flatten()
                    .map(|g| {
                        index_schema(
                            g.index_name.as_deref().unwrap_or_default(),
                            g.key_schema.as_deref().unwrap_or_default(),
                            g.projection.as_ref(),
                        )
                    })
                    .collect();
            }
            if let Some(o) = output.and_then(|o| o.downcast_ref::<ScanOutput>())
                && let Some(cc) = &o.consumed_capacity
            {
                usage.reported.add(&reported(cc, false));
                usage.size_unknown += 1;
            }
            if let Some(o) = output.and_then(|o| o.downcast_ref::<TransactWriteItemsOutput>()) {
                for cc in o.consumed_capacity.iter().flatten() {
                    usage.reported.add(&reported(cc, true));
                }
                usage.size_unknown += 1;
            }
        }
        Call::Put { table, item } => {
            let t = state.tables.entry(table.clone()).or_default();
            let key = t.key_of(item);
            if let Some(o) = output.and_then(|o| o.downcast_ref::<PutItemOutput>()) {
                if let Some(cc) = &o.consumed_capacity {
                    usage.reported.add(&reported(cc, true));
                }
                usage.estimated.add(&t.write(t.items.get(&key), Some(item)));
                t.items.insert(key, item.clone());
            } else if failed_condition {
                usage.failed_conditions += 1;
                usage.estimated.table_wru += table_write_units(t.items.get(&key), None);
            }
        }
        Call::Update { table, key, all_new } => {
            let t = state.tables.entry(table.clone()).or_default();
            let key = t.key_of(key);
            if let Some(o) = output.and_then(|o| o.downcast_ref::<UpdateItemOutput>()) {
                if let Some(cc) = &o.consumed_capacity {
                    usage.reported.add(&reported(cc, true));
                }
                match (&o.attributes, all_new) {
                    (Some(after), true) => {
                        usage.estimated.add(&t.write(t.items.get(&key), Some(after)));
                        t.items.insert(key, after.clone());
                    }
                    _ => {
                        usage.size_unknown += 1;
                        usage.estimated.add(&t.write(t.items.get(&key), None));
                        t.items.remove(&key);
                    }
                }
            } else if failed_condition {
                usage.failed_conditions += 1;
                usage.estimated.table_wru += table_write_units(t.items.get(&key), None);
            }
        }
        Call::Delete { table, key } => {
            let t = state.tables.entry(table.clone()).or_default();
            let key = t.key_of(key);
            if let Some(o) = output.and_then(|o| o.downcast_ref::<DeleteItemOutput>()) {
                if let Some(cc) = &o.consumed_capacity {
                    usage.reported.add(&reported(cc, true));
                }
                usage.estimated.add(&t.write(t.items.get(&key), None));
                t.items.remove(&key);
            } else if failed_condition {
                usage.failed_conditions += 1;
                usage.estimated.table_wru += table_write_units(t.items.get(&key), None);
            }
        }
        Call::Get { table, key, consistent } => {
            if let Some(o) = output.and_then(|o| o.downcast_ref::<GetItemOutput>()) {
                if let Some(cc) = &o.consumed_capacity {
                    usage.reported.add(&reported(cc, false));
                }
                let t = state.tables.entry(table.clone()).or_default();
                // The whole item counts, whatever the projection returned.
                let size = t.items.get(&t.key_of(key)).or(o.item.as_ref()).map_or(0, item_size);
                usage.estimated.table_rru += read_units(size, *consistent);
            }
        }
        Call::BatchGet { requests } => {
            if let Some(o) = output.and_then(|o| o.downcast_ref::<BatchGetItemOutput>()) {
                for cc in o.consumed_capacity.iter().flatten() {
                    usage.reported.add(&reported(cc, false));
                }
                for (table, keys, consistent) in requests {
                    let t = state.tables.entry(table.clone()).or_default();
                    let unprocessed: Vec<String> = o
                        .unprocessed_keys
                        .as_ref()
                        .and_then(|u| u.get(table))
                        .map(|k| k.keys.iter().map(|k| t.key_of(k)).collect())
                        .unwrap_or_default();
                    let returned: HashMap<String, u64> = o
                        .responses
                        .as_ref()
                        .and_then(|r| r.get(table))
                        .map(|items| items.iter().map(|i| (t.key_of(i), item_size(i))).collect())
                        .unwrap_or_default();
                    for k in keys {
                        let k = t.key_of(k);
                        if unprocessed.contains(&k) {
                            continue;
                        }
                        let size = t.items.get(&k).map(item_size).or(returned.get(&k).copied()).unwrap_or(0);
                        usage.estimated.table_rru += read_units(size, *consistent);
                    }
                }
            }
        }
        Call::BatchWrite { requests } => {
            if let Some(o) = output.and_then(|o| o.downcast_ref::<BatchWriteItemOutput>()) {
                for cc in o.consumed_capacity.iter().flatten() {
                    usage.reported.add(&reported(cc, true));
                }
                for (table, writes) in requests {
                    let t = state.tables.entry(table.clone()).or_default();
                    let unprocessed: Vec<String> = o
                        .unprocessed_items
                        .as_ref()
                        .and_then(|u| u.get(table))
                        .map(|ws| {
                            ws.iter()
                                .filter_map(|w| {
                                    w.put_request
                                        .as_ref()
                                        .map(|p| &p.item)
                                        .or(w.delete_request.as_ref().map(|d| &d.key))
                                })
                                .map(|i| t.key_of(i))
                                .collect()
                        })
                        .unwrap_or_default();
                    for (item, put) in writes {
                        let k = t.key_of(item);
                        if unprocessed.contains(&k) {
                            continue;
                        }
                        let after = put.then_some(item);
                        usage.estimated.add(&t.write(t.items.get(&k), after));
                        if *put {
                            t.items.insert(k, item.clone());
                        } else {
                            t.items.remove(&k);
                        }
                    }
                }
            }
        }
        Call::Query { table, index, consistent } => {
            if let Some(o) = output.and_then(|o| o.downcast_ref::<QueryOutput>()) {
                if let Some(cc) = &o.consumed_capacity {
                    usage.reported.add(&reported(cc, false));
                }
                let t = state.tables.entry(table.clone()).or_default();
                let schema = index.as_ref().and_then(|name| t.indexes.iter().find(|i| &i.name == name));
                // What the query read: each returned item's entry (or whole
                // item, on the table); a count query returns none, so its
                // matches are priced at the index's mean entry size.
                let size_of = |i: &Item| -> u64 {
                    let k = t.key_of(i);
                    match schema {
                        Some(s) => t.entry_size(s, &k).unwrap_or_else(|| item_size(i)),
                        None => t.items.get(&k).map_or_else(|| item_size(i), item_size),
                    }
                };
                let returned = o.items.as_deref().unwrap_or_default();
                let bytes = if returned.is_empty() && o.count > 0 {
                    let sizes: Vec<u64> = match schema {
                        Some(s) => {
                            t.items.values().filter_map(|i| s.entry(i, &t.table_key())).map(|e| item_size(&e)).collect()
                        }
                        None => t.items.values().map(item_size).collect(),
                    };
                    let mean = if sizes.is_empty() { 0 } else { sizes.iter().sum::<u64>() / sizes.len() as u64 };
                    mean * o.count.max(0) as u64
                } else {
                    returned.iter().map(size_of).sum()
                };
                // Index reads are eventually consistent.
                let units = read_units(bytes, *consistent && index.is_none());
                match index {
                    Some(name) => *usage.estimated.index_rru.entry(name.clone()).or_default() += units,
                    None => usage.estimated.table_rru += units,
                }
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_string())
    }

    fn n(v: &str) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    fn item(attrs: &[(&str, AttributeValue)]) -> Item {
        attrs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn sizes_follow_the_documented_rules() {
        let cases: &[(&str, AttributeValue, u64)] = &[
            // name + UTF-8 bytes
            ("id", s("order-1"), 2 + 7),
            ("é", s("ü"), 2 + 2),
            // name + 1 per two significant digits + 1
            ("n", n("7"), 1 + 2),
            ("n", n("1234567890123"), 1 + 7 + 1),
            ("n", n("100"), 1 + 2),
            ("n", n("-0.0012"), 1 + 2),
            ("b", AttributeValue::Bool(true), 1 + 1),
            // list: 3 + (1 + element) each
            ("l", AttributeValue::L(vec![s("ab"), n("12")]), 1 + 3 + (1 + 2) + (1 + 2)),
            // map: 3 + (1 + key + value) each
            ("m", AttributeValue::M(HashMap::from([("at".to_string(), n("5"))])), 1 + 3 + (1 + 2 + 2)),
            ("l", AttributeValue::L(vec![]), 1 + 3),
        ];
        for (name, value, want) in cases {
            let got = item_size(&item(&[(name, value.clone())]));
            assert_eq!(got, *want, "{name} = {value:?}");
        }
    }

    #[test]
    fn units_round_up_per_block() {
        let writes: &[(u64, f64)] = &[(0, 1.0), (1, 1.0), (1024, 1.0), (1025, 2.0), (4700, 5.0)];
        for (bytes, want) in writes {
            assert_eq!(write_units(*bytes), *want, "write {bytes} B");
        }
        let reads: &[(u64, bool, f64)] =
            &[(0, true, 1.0), (0, false, 0.5), (4096, true, 1.0), (4097, true, 2.0), (4097, false, 1.0)];
        for (bytes, consistent, want) in reads {
            assert_eq!(read_units(*bytes, *consistent), *want, "read {bytes} B consistent={consistent}");
        }
    }

    fn due_index() -> IndexSchema {
        IndexSchema {
            name: "by_due".into(),
            hash: "shard".into(),
            range: Some("at".into()),
            projected: Projected::KeysOnly,
        }
    }

    #[test]
    fn index_writes_depend_on_what_changed() {
        let key = vec!["id".to_string()];
        let big = "x".repeat(3000);
        let without = item(&[("id", s("a")), ("state", s(&big))]);
        let due_1 = item(&[("id", s("a")), ("state", s(&big)), ("shard", s("d")), ("at", n("1"))]);
        let due_2 = item(&[("id", s("a")), ("state", s(&big)), ("shard", s("d")), ("at", n("2"))]);
        let due_1_other_state = item(&[("id", s("a")), ("state", s("y")), ("shard", s("d")), ("at", n("1"))]);
        let cases: &[(&str, Option<&Item>, Option<&Item>, f64)] = &[
            ("not in the index before or after", Some(&without), Some(&without), 0.0),
            ("enters the index: one put", Some(&without), Some(&due_1), 1.0),
            ("leaves the index: one delete", Some(&due_1), Some(&without), 1.0),
            ("new item in the index", None, Some(&due_1), 1.0),
            ("index key changes: delete and put", Some(&due_1), Some(&due_2), 2.0),
            ("only an unprojected attribute changes", Some(&due_1), Some(&due_1_other_state), 0.0),
        ];
        for (what, before, after, want) in cases {
            assert_eq!(due_index().write_units(*before, *after, &key), *want, "{what}");
        }
        // The table write costs the larger side, rounded up per KB.
        assert_eq!(table_write_units(Some(&due_1), Some(&due_1_other_state)), 3.0);
    }

    #[test]
    fn an_index_entry_holds_keys_and_projected_attributes_only() {
        let index = IndexSchema {
            name: "by_status".into(),
            hash: "status".into(),
            range: Some("updated_at".into()),
            projected: Projected::Include(vec!["saga".into()]),
        };
        let full = item(&[
            ("id", s("a")),
            ("status", s("running")),
            ("updated_at", n("12")),
            ("saga", s("order")),
            ("state", s("big")),
        ]);
        let entry = index.entry(&full, &["id".to_string()]).unwrap();
        let mut names: Vec<&str> = entry.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["id", "saga", "status", "updated_at"]);
        assert!(index.entry(&item(&[("id", s("a"))]), &["id".to_string()]).is_none());
    }

    #[tokio::test]
    async fn purposes_are_task_local_and_inherited_by_spawned_tasks() {
        assert_eq!(current_purpose(), None);
        let inner = with_purpose("timers", async {
            let spawned = tokio::spawn(inherit_purpose(async { current_purpose() })).await.unwrap();
            (current_purpose(), spawned)
        })
        .await;
        assert_eq!(inner, (Some("timers"), Some("timers")));
    }
}
