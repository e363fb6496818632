//! The participant database port: "run this batch of commands, each in a
//! local transaction of the service's own database together with its barrier
//! row, and tell me each outcome once it is durable".
//!
//! An adapter is named for its technology: [`crate::sqlite::SqliteDb`] here,
//! `PostgresDb` in `sqsaga-postgres`, `DynamoDb` in `sqsaga-dynamodb`. Each
//! brings its own handler trait ([`ParticipantDb::Handler`]), because a
//! handler receives that database's own transaction type
//! (`rusqlite::Transaction`, `tokio_postgres::Transaction`, a builder of
//! DynamoDB transaction items) and business code stays plain SQL or plain
//! DynamoDB calls. The barrier's rules are in
//! `barrier.rs`; the contract suite (`contract.rs`) holds every adapter to
//! the same outcomes.
//!
//! The worker runtime never sees this trait: it drives a
//! [`crate::AnyParticipant`], which every `Participant<D>` is.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqsaga_core::clock::Clock;

use crate::{BarrierOutcome, CommandContext, WorkerError};

/// One command of a batch and what runs it.
pub struct Job<H: ?Sized> {
    pub ctx: CommandContext,
    pub run: Run<H>,
}

/// What runs a command inside its local transaction.
pub enum Run<H: ?Sized> {
    /// A fence (`sqsaga.fence`): the barrier alone, no handler.
    Fence,
    /// The registered handler, after sleeping `delay` inside the transaction
    /// (zero but in tests and drills that need a slow handler).
    Handler { handler: Arc<H>, delay: Duration },
}

/// One command's result and the time its local transaction took.
pub type JobResult = (Result<BarrierOutcome, WorkerError>, Duration);

/// A participant's own database, as the barrier uses it.
#[async_trait]
pub trait ParticipantDb: Send + Sync + 'static {
    /// A handler of this database: it runs inside the command's local
    /// transaction and receives the database's own transaction type.
    type Handler: ?Sized + Send + Sync + 'static;

    /// Where the database is, for logs and `/readyz` (`sqlite:<path>`,
    /// `postgres://host:port/db`), never with a password.
    fn describe(&self) -> String;

    /// Runs `batch` through the barrier, "now" read from `clock` when a
    /// command runs (it decides expiry and stamps the rows). One result per
    /// command, in order, handed out only once durable. A transient handler
    /// error is `Ok` with `Outcome::Transient` (rolled back, nothing
    /// recorded); `Err` means the database failed and nothing is known to be
    /// durable: the message must come back.
    async fn run_batch(&self, batch: Vec<Job<Self::Handler>>, clock: Arc<dyn Clock>) -> Vec<JobResult>;

    /// A cheap round trip proving the database takes transactions now (the
    /// readiness loop calls it every few seconds).
    async fn ping(&self) -> Result<(), WorkerError>;
}
