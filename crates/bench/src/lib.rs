//! The benchmarks, each on the order saga in one process (the runtime's
//! [`Stack`](sqsaga_runtime::Stack)) and each returning a report the binary
//! prints: [`sqs`] (SQS and DynamoDB requests per step, batched against the
//! seed's naive way), [`embedded`] (steps/s and SQLite commits per step)
//! and [`drift`] (time to a `drifted` verdict, steps a drifted worker ran).

pub mod cost;
pub mod drift;
pub mod embedded;
pub mod purpose;
pub mod scaling;
pub mod sqs;

pub use drift::{BenchDriftOptions, BenchDriftReport, bench_drift};
pub use embedded::{BenchEmbeddedOptions, BenchEmbeddedReport, bench_embedded};
pub use sqs::{BenchError, BenchSqsOptions, BenchSqsReport, bench_sqs};
