//! Testing without sleeping: in-memory adapters of the ports and a
//! time-skipping harness for saga authors.
//!
//! - [`queue::MemoryQueue`], [`store::MemoryStore`]: the `Queue` and
//!   `SagaStore` ports in memory on an injected clock, held to the same
//!   contract suites as the SQLite and AWS adapters (`tests/contracts.rs`);
//! - [`participant::MemoryDb`]: a participant database in memory that runs
//!   the SQLite adapter's barrier, so real handlers run unchanged;
//! - [`harness::SagaTest`]: a saga definition, its handlers or scripted
//!   replies, and a clock the test moves (docs/testing.md);
//! - [`shell::run_block`]: a document's shell block run as written.
//!
//! The simulator (`sqsaga-sim`) runs on these same adapters. Nothing here
//! is used by a production process.

pub mod harness;
pub mod participant;
pub mod queue;
pub mod shell;
pub mod store;

pub use harness::{HarnessError, SagaTest};
