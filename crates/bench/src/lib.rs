//! The benchmarks, each in one process and each returning a report the
//! binary prints; all but one run the order saga (the runtime's
//! [`Stack`](sqsaga_runtime::Stack)): [`sqs`] (SQS and DynamoDB requests per
//! step, batched against the seed's naive way), [`embedded`] (steps/s and
//! SQLite commits per step), [`participant`] (one PostgreSQL participant
//! worker alone: steps/s and server transactions per step against pgbench
//! on the same server) and [`drift`]
//! (time to a `drifted` verdict, steps a drifted worker ran).

pub mod cost;
pub mod drift;
pub mod embedded;
pub mod participant;
pub mod purpose;
pub mod scaling;
pub mod sqs;

pub use drift::{BenchDriftOptions, BenchDriftReport, bench_drift};
pub use embedded::{BenchEmbeddedOptions, BenchEmbeddedReport, bench_embedded};
pub use participant::{BenchParticipantOptions, BenchParticipantReport, bench_participant};
pub use sqs::{BenchError, BenchSqsOptions, BenchSqsReport, bench_sqs};
