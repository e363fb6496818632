//! The DynamoDB adapter of the participant database port
//! ([`sqsaga_worker::db::ParticipantDb`]): a service keeps its business
//! items in its own DynamoDB tables, and every command commits its writes
//! and its barrier item in **one `TransactWriteItems`**, so both happen or
//! neither does. Handlers implement [`DynamoHandler`]: they get the SDK's
//! own [`Client`] for reads and a [`DynamoTx`] to which they add their own
//! `Put`/`Update`/`Delete`/`ConditionCheck` items, so business code stays
//! plain DynamoDB calls.
//!
//! **A barrier table of its own**, not the service's table with a key
//! prefix. A transaction may span tables of one account and region, so the
//! separate table costs nothing in atomicity, and it leaves the service's
//! key schema alone: a prefixed barrier item would need the service's table
//! to have string keys of the right shape, would show up in its scans and
//! queries and share its TTL and streams. One item per (saga, step, op):
//! partition key `saga_id`, sort key `<op>#<step>`, the outcome as the same
//! JSON text the SQL adapters store (`table.rs`).
//!
//! **The barrier, conditional put in the business transaction.** DynamoDB
//! has no interactive transaction to hold while a handler runs, so a
//! command reads, then writes once:
//! 1. A consistent `GetItem` of its own barrier item: a duplicate is
//!    answered with the recorded outcome, the handler not run again.
//! 2. The handler runs, reading with the client and adding its items.
//! 3. One `TransactWriteItems`: the barrier item first, `Put` on condition
//!    `attribute_not_exists(saga_id)`, then the handler's items.
//!
//! The condition is what makes it safe, not the read: when two replicas run
//! the same command at once, both may pass step 1 and run the handler, but
//! DynamoDB's transactions are serializable, so exactly one transaction
//! commits; the other is cancelled with `ConditionalCheckFailed` as the
//! reason of the barrier item (or `TransactionConflict` while the first is
//! in flight), writes nothing, reads the recorded outcome with a consistent
//! read and answers with it (a conflict is a retryable error: the message
//! comes back and is answered from the barrier). A compensation (and a
//! fence) that finds no action item writes its own item and the action's as
//! `prevented` in one transaction, both conditional: if the action commits
//! in between, the transaction is cancelled on the action item and the
//! compensation reads again, now finding what the action did; a late action
//! is cancelled on its barrier item and reads `prevented`. A barrier item is
//! written once, whole, and never changed, so what a read finds stays true.
//!
//! **What fails how.** A handler's refusal records the barrier item alone
//! (none of its items); a transient handler error, or a panic, writes
//! nothing. A failed condition on a handler's item cancels the transaction:
//! transient, unless the handler added the item with
//! [`DynamoTx::add_or_refuse`], which makes it a recorded refusal. DynamoDB
//! refusing the handler's items (a `ValidationException`: a malformed
//! expression, an item over 400 KB) is transient too, naming the cause — the
//! SQL adapters' handlers map their database errors the same way. A
//! transaction conflict, throttling, a 5xx or an unreachable endpoint is a
//! retryable `Err`: the message is not deleted and comes back.
//!
//! **The transaction limits, and what they mean for handlers.** One
//! `TransactWriteItems` holds at most [`MAX_TRANSACTION_ITEMS`] (100)
//! items of at most [`MAX_TRANSACTION_BYTES`] (4 MB) together, each item at
//! most 400 KB, no two on the same item. The barrier takes one item (an
//! action's or a compensation's own), so a handler may add
//! [`HANDLER_ITEMS`] (99); [`DynamoTx::add`] refuses the one past the limit
//! with a refusal naming it (also recorded if the handler ignores the error
//! and returns output), and likewise items whose estimated size would pass
//! 4 MB with the barrier's. A handler must not write the barrier table, and
//! must not write one item twice. A command whose effect cannot fit one
//! transaction does not fit the barrier: split it into saga steps.
//!
//! **Costs.** An action is a consistent read (1 RCU for a small item) and a
//! transaction (2 WCU per KB per item, DynamoDB's transactional price); a
//! barrier item written alone (a refusal, an expiry, a compensation with
//! nothing to undo) is a conditional `PutItem`, 1 WCU. Each command is a
//! transaction of its own (DynamoDB has none spanning requests to share),
//! so commands of a batch on different barrier keys run at once and a
//! batch takes about its slowest command's round trips; commands on one
//! key run one after another, in the order received. The capacity used is
//! the same either way.
//!
//! [`ensure_table`] creates the barrier table (or a service's table, for
//! tests and demos); [`lookup`] and [`action_output`] read the barrier.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, Put, TransactWriteItem};
use futures_util::FutureExt;
use serde_json::Value;
use sqsaga_aws::capacity::item_size;
use sqsaga_aws::{Failure, FailureKind};
use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;
use sqsaga_core::machine::Phase;
use sqsaga_worker::barrier::{self, BarrierOutcome, Compensate, Recorded, Settle};
use sqsaga_worker::db::{Job, JobResult, ParticipantDb, Run};
use sqsaga_worker::{CommandContext, HandlerError, Participant, WorkerError};

mod table;
mod tx;

pub use table::{KEY, SAGA_ID, TableStatus, action_output, barrier_key, ensure_table, lookup, sort_key};
pub use tx::{DynamoTx, HANDLER_ITEMS, IntoWriteItem, MAX_TRANSACTION_BYTES, MAX_TRANSACTION_ITEMS, write_size};

/// The condition of every barrier write: the item does not exist yet.
const CLAIM: &str = "attribute_not_exists(saga_id)";
/// A key no saga has: [`ParticipantDb::ping`] reads it.
const PING_SAGA: &str = "__sqsaga_ping__";
/// Cancellation reasons that may pass: the message comes back.
const RETRYABLE_REASONS: &[&str] = &["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"];

/// A participant over DynamoDB.
pub type DynamoParticipant = Participant<DynamoDb>;

/// One command's business logic on DynamoDB: reads through
/// [`DynamoTx::client`], adds its writes to `tx`, and returns its output;
/// the adapter commits the writes with the barrier item in one transaction.
/// Return [`HandlerError::Transient`] for failed reads (the command is
/// retried; [`transient`] words an SDK error) and [`HandlerError::Refused`]
/// for business refusals (nothing the handler added is written).
///
/// ```
/// use async_trait::async_trait;
/// use aws_sdk_dynamodb::types::{AttributeValue, Update};
/// use serde_json::Value;
/// use sqsaga_dynamodb::{DynamoDb, DynamoHandler, DynamoTx};
/// use sqsaga_worker::{CommandContext, HandlerError, Participant};
///
/// #[derive(serde::Deserialize)]
/// struct Reserve { sku: String, quantity: u32 }
///
/// /// Takes `quantity` off the item's stock, refused when there is not enough.
/// struct ReserveStock;
///
/// #[async_trait]
/// impl DynamoHandler for ReserveStock {
///     async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
///         let r: Reserve = ctx.input_as()?;
///         let take = Update::builder()
///             .table_name("stock")
///             .key("sku", AttributeValue::S(r.sku.clone()))
///             .update_expression("SET available = available - :n")
///             .condition_expression("available >= :n")
///             .expression_attribute_values(":n", AttributeValue::N(r.quantity.to_string()))
///             .build();
///         tx.add_or_refuse(take, format!("not enough {} in stock", r.sku))?;
///         sqsaga_worker::output(&serde_json::json!({"reserved": r.quantity}))
///     }
/// }
///
/// /// Gives back what the action took, read from the barrier.
/// struct ReleaseStock;
///
/// #[async_trait]
/// impl DynamoHandler for ReleaseStock {
///     async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
///         let r: Reserve = ctx.input_as()?;
///         let reserved = tx.action_output().and_then(|o| o["reserved"].as_u64()).unwrap_or(0);
///         let give_back = Update::builder()
///             .table_name("stock")
///             .key("sku", AttributeValue::S(r.sku))
///             .update_expression("SET available = available + :n")
///             .expression_attribute_values(":n", AttributeValue::N(reserved.to_string()))
///             .build();
///         tx.add(give_back)?;
///         Ok(serde_json::json!({"released": reserved}))
///     }
/// }
///
/// fn participant(sdk: &aws_config::SdkConfig) -> Result<Participant<DynamoDb>, sqsaga_worker::WorkerError> {
///     let mut p = Participant::new(DynamoDb::from_sdk_config(sdk, "inventory_barrier")?);
///     p.register("inventory/v1", "inventory.reserve", Box::new(ReserveStock), Some(("inventory.release", Box::new(ReleaseStock))));
///     Ok(p)
/// }
/// ```
#[async_trait]
pub trait DynamoHandler: Send + Sync + 'static {
    async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError>;
}

/// A handler that only writes can be a closure.
#[async_trait]
impl<F> DynamoHandler for F
where
    F: Fn(&mut DynamoTx<'_>, &CommandContext) -> Result<Value, HandlerError> + Send + Sync + 'static,
{
    async fn handle(&self, tx: &mut DynamoTx<'_>, ctx: &CommandContext) -> Result<Value, HandlerError> {
        self(tx, ctx)
    }
}

/// An SDK error of a handler's read as a transient handler error, with the
/// cause named ("cannot reach DynamoDB ...: connection refused", "DynamoDB
/// answered 400 ResourceNotFoundException: ...").
pub fn transient<E>(e: &SdkError<E>) -> HandlerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    HandlerError::Transient(Failure::of(e, "DynamoDB", "its endpoint").message)
}

/// A participant's DynamoDB: the client and the barrier table.
pub struct DynamoDb {
    client: Client,
    /// The barrier table.
    table: String,
    /// The endpoint URL, or the region's endpoint, for messages.
    endpoint: String,
    /// `dynamodb:<table> at <endpoint>`.
    describe: String,
}

impl DynamoDb {
    /// The adapter on `client`, its barrier in `table`; `endpoint` says
    /// where the client goes (a URL, or "the DynamoDB endpoint of
    /// us-east-1"), for messages and `/readyz`. Makes no request.
    pub fn new(client: Client, table: &str, endpoint: &str) -> Self {
        let endpoint = sqsaga_config::redact_url(endpoint);
        DynamoDb { client, table: table.to_string(), describe: format!("dynamodb:{table} at {endpoint}"), endpoint }
    }

    /// The adapter on an SDK configuration (credentials, region, optional
    /// endpoint such as an emulator's). `Err` when it has no region.
    pub fn from_sdk_config(sdk: &SdkConfig, table: &str) -> Result<Self, WorkerError> {
        let Some(region) = sdk.region() else {
            return Err(WorkerError::Database {
                database: format!("dynamodb:{table}"),
                cause: "no AWS region configured (AWS_REGION, a profile's region)".to_string(),
                retryable: false,
            });
        };
        let endpoint = match sdk.endpoint_url() {
            Some(url) => url.to_string(),
            None => format!("the DynamoDB endpoint of {region}"),
        };
        Ok(DynamoDb::new(Client::new(sdk), table, &endpoint))
    }

    /// Creates the barrier table unless it exists (see [`ensure_table`]).
    pub async fn ensure_table(&self) -> Result<TableStatus, WorkerError> {
        ensure_table(&self.client, &self.table, SAGA_ID, Some(KEY)).await
    }

    /// The SDK client, for reads and administrative writes (tests, loaders).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The barrier table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// An error of this database.
    fn error(&self, cause: String, retryable: bool) -> WorkerError {
        WorkerError::Database { database: self.describe.clone(), cause, retryable }
    }

    /// A classified SDK error: retryable unless the request was at fault.
    fn failure(&self, f: Failure) -> WorkerError {
        let retryable = f.kind != FailureKind::Client;
        let cause = if f.is(&["ResourceNotFoundException"]) {
            format!(
                "{} (does the barrier table `{}` exist? `DynamoDb::ensure_table` creates it)",
                f.message, self.table
            )
        } else {
            f.message
        };
        self.error(cause, retryable)
    }

    fn corrupt(&self, ctx: &CommandContext, cause: String) -> WorkerError {
        WorkerError::CorruptBarrier { saga_id: ctx.saga_id.clone(), step: ctx.step.clone(), cause }
    }
}

#[async_trait]
impl ParticipantDb for DynamoDb {
    type Handler = dyn DynamoHandler;

    fn describe(&self) -> String {
        self.describe.clone()
    }

    /// Commands on different barrier keys run at once (each is its own
    /// transaction, and DynamoDB has no connection to share), so a batch
    /// costs about the round trips of its slowest command, not their sum;
    /// commands on one key (say, an action and its compensation) run one
    /// after another, in the order received.
    async fn run_batch(&self, batch: Vec<Job<dyn DynamoHandler>>, clock: Arc<dyn Clock>) -> Vec<JobResult> {
        let mut lanes: Vec<Vec<usize>> = Vec::new();
        let mut lane_of: std::collections::HashMap<(&str, &str), usize> = std::collections::HashMap::new();
        for (i, job) in batch.iter().enumerate() {
            let key = (job.ctx.saga_id.as_str(), job.ctx.step.as_str());
            let lane = *lane_of.entry(key).or_insert_with(|| {
                lanes.push(Vec::new());
                lanes.len() - 1
            });
            lanes[lane].push(i);
        }
        let ran = futures_util::future::join_all(lanes.into_iter().map(|lane| {
            let (batch, clock) = (&batch, &clock);
            async move {
                let mut out = Vec::with_capacity(lane.len());
                for i in lane {
                    let started = Instant::now();
                    let result = self.run_one(&batch[i], clock.now()).await;
                    out.push((i, (result, started.elapsed())));
                }
                out
            }
        }))
        .await;
        let mut results: Vec<(usize, JobResult)> = ran.into_iter().flatten().collect();
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, result)| result).collect()
    }

    /// A `GetItem` of a key no saga has, eventually consistent (half a read
    /// unit): the table exists and DynamoDB answers.
    async fn ping(&self) -> Result<(), WorkerError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(barrier_key(PING_SAGA, PING_SAGA, Phase::Action)))
            .send()
            .await
            .map_err(|e| self.failure(Failure::of(&e, "DynamoDB", &self.endpoint)))?;
        Ok(())
    }
}

/// What became of a barrier write.
enum Committed {
    /// Written (with the handler's items, if any).
    Done,
    /// The barrier item of this op exists already: nothing was written.
    Exists(Phase),
    /// The condition of one of the handler's items failed: nothing was
    /// written. `refusal` is what the handler asked to record then.
    Condition { refusal: Option<String>, cause: String },
    /// DynamoDB refused the handler's items (a validation error): nothing
    /// was written; the handler's fault, replied as transient.
    Invalid(String),
}

/// What a handler's run comes to.
enum Ran {
    /// The barrier item to write (`Succeeded`) and the handler's items.
    Succeeded(Recorded, tx::Written),
    /// Refused (by the handler, or by a DynamoDB limit it hit) or transient.
    Failed(HandlerError),
}

/// What a compensation or fence found when it went to block the action.
enum Found {
    /// The action never ran: both barrier items are written.
    Blocked,
    /// Its own item existed: the answer.
    Answered(BarrierOutcome),
    /// The action's item, which exists.
    Action(Recorded),
}

impl DynamoDb {
    async fn run_one(&self, job: &Job<dyn DynamoHandler>, now: Millis) -> Result<BarrierOutcome, WorkerError> {
        let ctx = &job.ctx;
        match &job.run {
            Run::Fence => self.fence(ctx, now).await,
            Run::Handler { handler, delay } => {
                if !delay.is_zero() {
                    tokio::time::sleep(*delay).await;
                }
                match ctx.phase {
                    Phase::Action => self.action(handler.as_ref(), ctx, now).await,
                    Phase::Compensation => self.compensation(handler.as_ref(), ctx, now).await,
                }
            }
        }
    }

    /// The barrier item of (ctx's saga and step, `op`), read consistently.
    async fn row(&self, ctx: &CommandContext, op: Phase) -> Result<Option<Recorded>, WorkerError> {
        match table::read_row(&self.client, &self.table, &self.endpoint, &ctx.saga_id, &ctx.step, op).await {
            Ok(row) => Ok(row),
            Err(table::RowError::Sdk(f)) => Err(self.failure(f)),
            Err(table::RowError::Corrupt(cause)) => Err(self.corrupt(ctx, cause)),
        }
    }

    /// The answer from the item of `op`, which a failed condition proved exists.
    async fn answer(&self, ctx: &CommandContext, op: Phase) -> Result<BarrierOutcome, WorkerError> {
        match self.row(ctx, op).await? {
            Some(recorded) => Ok(BarrierOutcome::answered(&recorded, op)),
            None => Err(self.corrupt(ctx, "the item that failed the condition is gone".to_string())),
        }
    }

    /// The conditional put of one barrier item.
    fn claim(&self, ctx: &CommandContext, op: Phase, recorded: &Recorded, now: Millis) -> Result<Put, WorkerError> {
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(table::barrier_item(&ctx.saga_id, &ctx.step, op, recorded, now)))
            .condition_expression(CLAIM)
            .build()
            .map_err(|e| self.error(format!("cannot build the barrier item: {e}"), false))
    }

    /// Writes the barrier items `rows` (each only if absent) and the
    /// handler's `written` items, all or nothing: one conditional `PutItem`
    /// for a lone barrier item, else one `TransactWriteItems`.
    async fn commit(
        &self,
        ctx: &CommandContext,
        rows: &[(Phase, &Recorded)],
        written: Option<tx::Written>,
        now: Millis,
    ) -> Result<Committed, WorkerError> {
        let (handler_items, refusals) = written.map(|w| (w.items, w.refusals)).unwrap_or_default();
        if let ([(op, recorded)], true) = (rows, handler_items.is_empty()) {
            let put = self.claim(ctx, *op, recorded, now)?;
            let result = self
                .client
                .put_item()
                .table_name(put.table_name())
                .set_item(Some(put.item().clone()))
                .condition_expression(CLAIM)
                .send()
                .await;
            return match result {
                Ok(_) => Ok(Committed::Done),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    Ok(Committed::Exists(*op))
                }
                Err(e) => Err(self.failure(Failure::of(&e, "DynamoDB", &self.endpoint))),
            };
        }
        let mut items = Vec::with_capacity(rows.len() + handler_items.len());
        for (op, recorded) in rows {
            items.push(TransactWriteItem::builder().put(self.claim(ctx, *op, recorded, now)?).build());
        }
        let has_handler_items = !handler_items.is_empty();
        items.extend(handler_items);
        let result = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
        match result {
            Ok(_) => Ok(Committed::Done),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() {
                    return self.cancelled(c.cancellation_reasons(), rows, &items, &refusals);
                }
                let f = Failure::of(&e, "DynamoDB", &self.endpoint);
                if has_handler_items && f.kind == FailureKind::Client && f.is(&["ValidationException"]) {
                    return Ok(Committed::Invalid(format!("DynamoDB refused the handler's writes: {}", f.message)));
                }
                Err(self.failure(f))
            }
        }
    }

    /// A cancelled transaction, by its reasons (one per item, in order:
    /// the barrier items first, then the handler's).
    fn cancelled(
        &self,
        reasons: &[CancellationReason],
        rows: &[(Phase, &Recorded)],
        items: &[TransactWriteItem],
        refusals: &[Option<String>],
    ) -> Result<Committed, WorkerError> {
        let code = |i: usize| reasons.get(i).and_then(CancellationReason::code).unwrap_or("None");
        let say = |i: usize| {
            let what = if i < rows.len() { "the barrier item".to_string() } else { format!("item {}", i - rows.len()) };
            let table = items.get(i).map(tx::table_of).unwrap_or("?");
            let message = reasons.get(i).and_then(CancellationReason::message).unwrap_or("no message");
            format!("{what} (table `{table}`): {}: {message}", code(i))
        };
        // Someone recorded this first: definite, whatever else failed.
        if let Some((op, _)) =
            rows.iter().enumerate().find(|&(i, _)| code(i) == "ConditionalCheckFailed").map(|(_, r)| r)
        {
            return Ok(Committed::Exists(*op));
        }
        if let Some(i) = (0..reasons.len()).find(|&i| RETRYABLE_REASONS.contains(&code(i))) {
            return Err(self.error(format!("DynamoDB cancelled the transaction: {}", say(i)), true));
        }
        if let Some(i) = (rows.len()..reasons.len()).find(|&i| code(i) == "ConditionalCheckFailed") {
            let refusal = refusals.get(i - rows.len()).cloned().flatten();
            return Ok(Committed::Condition {
                refusal,
                cause: format!("condition failed on the handler's {}", say(i)),
            });
        }
        if let Some(i) = (rows.len()..reasons.len()).find(|&i| code(i) != "None") {
            return Ok(Committed::Invalid(format!("DynamoDB refused the handler's {}", say(i))));
        }
        let all: Vec<String> = (0..reasons.len()).filter(|&i| code(i) != "None").map(say).collect();
        Err(self.error(format!("DynamoDB cancelled the transaction: {}", all.join("; ")), false))
    }

    /// Records one barrier item alone: `fresh` if this call wrote it, else
    /// the answer from the item found.
    async fn record_alone(
        &self,
        ctx: &CommandContext,
        op: Phase,
        recorded: &Recorded,
        now: Millis,
        fresh: BarrierOutcome,
    ) -> Result<BarrierOutcome, WorkerError> {
        match self.commit(ctx, &[(op, recorded)], None, now).await? {
            Committed::Done => Ok(fresh),
            Committed::Exists(op) => self.answer(ctx, op).await,
            Committed::Condition { cause, .. } | Committed::Invalid(cause) => Err(self.error(cause, false)),
        }
    }

    /// Runs the handler: its output and writes, or why not. A panic is a
    /// transient error; a limit the handler hit refuses the command.
    async fn call(
        &self,
        handler: &dyn DynamoHandler,
        ctx: &CommandContext,
        op: Phase,
        action_output: Option<Value>,
        now: Millis,
    ) -> Ran {
        let reserved = item_size(&table::barrier_item(&ctx.saga_id, &ctx.step, op, &Recorded::Prevented, now));
        let mut tx = DynamoTx::new(&self.client, action_output, reserved);
        let result = match AssertUnwindSafe(handler.handle(&mut tx, ctx)).catch_unwind().await {
            Ok(r) => r,
            Err(panic) => Err(HandlerError::Transient(format!(
                "handler `{}` panicked: {}",
                ctx.command,
                barrier::panic_message(panic.as_ref())
            ))),
        };
        let mut written = tx.finish();
        match (result, written.overflow.take()) {
            (Err(e), _) => Ran::Failed(e),
            (Ok(_), Some(overflow)) => Ran::Failed(HandlerError::Refused(overflow)),
            (Ok(output), None) => {
                let row = Recorded::Succeeded { output };
                let bytes = written.bytes + item_size(&table::barrier_item(&ctx.saga_id, &ctx.step, op, &row, now));
                if bytes > MAX_TRANSACTION_BYTES {
                    return Ran::Failed(HandlerError::Refused(format!(
                        "the handler's output and items add up to {bytes} bytes, more than DynamoDB's {} MB per \
                         transaction",
                        MAX_TRANSACTION_BYTES / (1024 * 1024)
                    )));
                }
                Ran::Succeeded(row, written)
            }
        }
    }

    async fn action(
        &self,
        handler: &dyn DynamoHandler,
        ctx: &CommandContext,
        now: Millis,
    ) -> Result<BarrierOutcome, WorkerError> {
        if let Some(recorded) = self.row(ctx, Phase::Action).await? {
            // An action that already ran answers with what it did, however
            // late its redelivery comes.
            return Ok(BarrierOutcome::answered(&recorded, Phase::Action));
        }
        if let Some((recorded, outcome)) = barrier::expired_action(ctx, now) {
            return self.record_alone(ctx, Phase::Action, &recorded, now, outcome).await;
        }
        self.run_handler(handler, ctx, Phase::Action, None, now).await
    }

    /// Runs the handler of `op` and commits its items with the barrier
    /// item, or records (or not) what the barrier decides for its failure.
    async fn run_handler(
        &self,
        handler: &dyn DynamoHandler,
        ctx: &CommandContext,
        op: Phase,
        action_output: Option<Value>,
        now: Millis,
    ) -> Result<BarrierOutcome, WorkerError> {
        let after = match op {
            Phase::Action => barrier::after_action,
            Phase::Compensation => barrier::after_compensation,
        };
        let (recorded, written) = match self.call(handler, ctx, op, action_output, now).await {
            Ran::Failed(e) => return self.settle_alone(ctx, op, after(Err(e)), now).await,
            Ran::Succeeded(recorded, written) => (recorded, written),
        };
        match self.commit(ctx, &[(op, &recorded)], Some(written), now).await? {
            Committed::Done => Ok(BarrierOutcome::fresh(recorded.to_outcome())),
            Committed::Exists(op) => self.answer(ctx, op).await,
            Committed::Condition { refusal: Some(reason), .. } => {
                self.settle_alone(ctx, op, after(Err(HandlerError::Refused(reason))), now).await
            }
            Committed::Condition { refusal: None, cause } | Committed::Invalid(cause) => {
                Ok(BarrierOutcome::transient(cause))
            }
        }
    }

    /// What the barrier decided for a handler with no items to keep: the
    /// barrier item alone, or nothing.
    async fn settle_alone(
        &self,
        ctx: &CommandContext,
        op: Phase,
        settle: Settle,
        now: Millis,
    ) -> Result<BarrierOutcome, WorkerError> {
        match settle {
            Settle::Record(recorded, outcome) => self.record_alone(ctx, op, &recorded, now, outcome).await,
            Settle::Discard(outcome) => Ok(outcome),
        }
    }

    /// For a compensation or fence whose own item does not exist yet:
    /// if the action never ran, writes `own` and the action's item as
    /// `prevented` together; else returns what the action did.
    async fn block_action(&self, ctx: &CommandContext, own: &Recorded, now: Millis) -> Result<Found, WorkerError> {
        // An action item, once written, never changes: when the action
        // commits between the read and the write, the second read sees it.
        for _ in 0..2 {
            if let Some(action) = self.row(ctx, Phase::Action).await? {
                return Ok(Found::Action(action));
            }
            let rows = [(Phase::Compensation, own), (Phase::Action, &Recorded::Prevented)];
            match self.commit(ctx, &rows, None, now).await? {
                Committed::Done => return Ok(Found::Blocked),
                Committed::Exists(Phase::Compensation) => {
                    return Ok(Found::Answered(self.answer(ctx, Phase::Compensation).await?));
                }
                Committed::Exists(Phase::Action) => {}
                Committed::Condition { cause, .. } | Committed::Invalid(cause) => return Err(self.error(cause, false)),
            }
        }
        Err(self.error(
            format!(
                "the action's barrier item of saga {} step {} failed a condition but cannot be read",
                ctx.saga_id, ctx.step
            ),
            true,
        ))
    }

    async fn compensation(
        &self,
        handler: &dyn DynamoHandler,
        ctx: &CommandContext,
        now: Millis,
    ) -> Result<BarrierOutcome, WorkerError> {
        if let Some(recorded) = self.row(ctx, Phase::Compensation).await? {
            return Ok(BarrierOutcome::answered(&recorded, Phase::Compensation));
        }
        let (nothing, null) = barrier::null_compensation();
        let action = match self.block_action(ctx, &nothing, now).await? {
            Found::Blocked => return Ok(null),
            Found::Answered(outcome) => return Ok(outcome),
            Found::Action(action) => action,
        };
        if let Compensate::Nothing(recorded, outcome) = barrier::compensation_plan(Some(&action)) {
            return self.record_alone(ctx, Phase::Compensation, &recorded, now, outcome).await;
        }
        self.run_handler(handler, ctx, Phase::Compensation, action.output(), now).await
    }

    /// Resolves an in-doubt step without compensation (see the SQLite
    /// adapter's `fence`): blocks the action for good if it never ran, else
    /// reports whether it ran.
    async fn fence(&self, ctx: &CommandContext, now: Millis) -> Result<BarrierOutcome, WorkerError> {
        if let Some(recorded) = self.row(ctx, Phase::Compensation).await? {
            return Ok(BarrierOutcome::answered(&recorded, Phase::Compensation));
        }
        let (prevented, null) = barrier::fence_plan(None);
        match self.block_action(ctx, &prevented, now).await? {
            Found::Blocked => Ok(null),
            Found::Answered(outcome) => Ok(outcome),
            Found::Action(action) => {
                let (recorded, outcome) = barrier::fence_plan(Some(action));
                self.record_alone(ctx, Phase::Compensation, &recorded, now, outcome).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_table_and_endpoint_without_credentials() {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        let db = DynamoDb::new(Client::from_conf(config), "shipping_barrier", "http://k:s@localhost:4566");
        assert_eq!(db.describe(), "dynamodb:shipping_barrier at http://k:<redacted>@localhost:4566");
    }
}
