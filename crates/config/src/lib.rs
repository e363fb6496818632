//! Configuration of the orchestrator and the workers.
//!
//! One table, [`SETTINGS`], names every setting in each source — environment
//! variable (the Kubernetes path: `SQS_QUEUE_URL`, `REGION`, `LOG_LEVEL`,
//! `SQSAGA_*`), JSON file key (the Chef path: `/etc/<app>/config.json` with
//! `queue_url`, `dlq_url`, `region`, `log_level`, ...) and the odd flag —
//! with its default, rules and docs. [`Settings::resolve`] applies
//! flag > env > file > default and reports every problem at once
//! ([`ConfigErrors`]). `sqsaga lint-deploy` and the docs read the same table.
//!
//! The process environment is read in exactly one place, [`env_map`]; all
//! else takes a map, so tests never touch the real environment.
//!
//! This crate knows nothing of queues, stores or HTTP: it only turns strings
//! into checked, typed settings.

mod choices;
mod database;
pub mod docs;
mod error;
mod resolve;
mod secret;
mod settings;
mod spec;

use std::collections::BTreeMap;

pub use choices::{Backend, DriftMode, LogLevel, SqsPreset};
pub use database::{DatabaseUrl, redact_url};
pub use error::{ConfigErrors, ConfigProblem};
pub use resolve::{Sources, hostname};
pub use secret::Secret;
pub use settings::{Origin, Settings};
pub use spec::{
    AWS_SDK_ENV_VARS, CONFIG_ENV, CharSet, ENV_PREFIX, Kind, SETTINGS, SettingSpec, known_env_vars, known_file_keys,
    spec, suggest,
};

/// The process environment as a map: the one place this crate reads
/// `std::env`. Names that are not UTF-8 are skipped (none of ours is);
/// values are converted lossily, so a mangled value still reaches its checks
/// instead of silently counting as unset.
pub fn env_map() -> BTreeMap<String, String> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned()))).collect()
}
