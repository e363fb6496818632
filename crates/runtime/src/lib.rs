//! The composition root: from resolved settings to running processes.
//! [`run_orchestrator`] and [`run_worker`] open the configured backend,
//! serve `/healthz`, `/readyz` and `/metrics` on the listener they are
//! given, wire the drift guard (fleet view, heartbeats, quarantine), and run
//! until their [`CancellationToken`] is cancelled; [`Stack`] runs the same
//! parts as tasks of one process. Also here: provisioning the AWS
//! resources, logging and trace export, and sealing messages the operator
//! commands send.
//!
//! This crate depends on the services and the adapters and wires them; none
//! of them depends on it. It knows no particular saga or participant: the
//! binary passes the definitions and the participant in.

pub mod admin;
pub mod backend;
pub mod depths;
mod error;
pub mod fleet;
pub mod fleet_table;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod operator;
pub mod process;
pub mod provision;
pub mod readiness;
pub mod sealing;
pub mod settings;
pub mod shutdown;
pub mod sqs_endpoint;
pub mod stack;
pub mod telemetry;

pub use backend::{Opened, aws_settings, open_backend, queue_spec};
pub use error::RuntimeError;
pub use process::{bind, run_orchestrator, run_worker};
pub use provision::{ProvisionLine, ProvisionOptions, ResourceKind, provision, teardown};
pub use settings::{Overrides, resolve, signing};
pub use shutdown::{CancellationToken, on_signals};
pub use stack::{Stack, StackOptions};
