//! [`Settings`]: the resolved, typed configuration, and its three views —
//! the effective map (what the drift guard hashes), the config hash, and the
//! redacted report printed by `sqsaga config check`.
//!
//! Resolution itself lives in `resolve.rs`; this file only reads fields.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqsaga_core::duration::format_duration;

use crate::choices::{Backend, DriftMode, LogLevel, SqsPreset};
use crate::database::DatabaseUrl;
use crate::secret::Secret;
use crate::spec::SETTINGS;

/// Where a setting's value came from, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--data-dir`.
    Flag(&'static str),
    /// An environment variable, e.g. `SQSAGA_CONCURRENCY` (or a fallback such as `AWS_REGION`).
    Env(&'static str),
    /// The JSON config file at this path.
    File(PathBuf),
    /// The built-in default (or, for `instance_id`, the computed one).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// The resolved configuration of one process. Built only by
/// [`Settings::resolve`](crate::Settings::resolve), so every field already passed its checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The input queue in AWS mode, when given explicitly rather than derived
    /// from `queue_prefix` and the service name.
    pub queue_url: Option<String>,
    /// The DLQ behind the input queue, where poison messages go (AWS mode).
    pub dlq_url: Option<String>,
    /// AWS region; `None` leaves the choice to the AWS SDK's region chain.
    pub region: Option<String>,
    /// Least severe level logged.
    pub log_level: LogLevel,
    /// Which queue and store implementation to run on.
    pub backend: Backend,
    /// Where the embedded backend keeps its database.
    pub data_dir: PathBuf,
    /// Where /healthz, /readyz and /metrics are served; port 0 picks one.
    pub http_addr: SocketAddr,
    /// Where the orchestrator serves the SQS API over the embedded queues, if at all.
    pub sqs_endpoint_addr: Option<SocketAddr>,
    /// The access key id SQS endpoint requests must be signed with.
    pub sqs_endpoint_access_key_id: Option<String>,
    /// Its secret: when set, SQS endpoint signatures are verified.
    pub sqs_endpoint_secret_access_key: Option<Secret>,
    /// Where the orchestrator serves the admin API and console; `None`: on
    /// the HTTP port when that is loopback.
    pub admin_addr: Option<SocketAddr>,
    /// Bearer token of the admin role.
    pub admin_token: Option<Secret>,
    /// File the admin token is read from at start.
    pub admin_token_file: Option<PathBuf>,
    /// Bearer token of the read-only role.
    pub admin_read_token: Option<Secret>,
    /// File the read-only token is read from at start.
    pub admin_read_token_file: Option<PathBuf>,
    /// A worker's service name; picks its queue and handlers.
    pub service: Option<String>,
    /// A worker's own database; `None`: `<data_dir>/<service>.db`.
    pub participant_db: Option<DatabaseUrl>,
    /// This replica's name in heartbeats; per instance, not hashed.
    pub instance_id: String,
    /// Number of concurrent pollers.
    pub concurrency: usize,
    /// How long a received message stays invisible to other consumers.
    pub visibility_timeout: Duration,
    /// Long-poll wait of one receive.
    pub wait_time: Duration,
    /// Grace budget after SIGTERM to finish in-flight work.
    pub drain_timeout: Duration,
    /// Where workers send replies and heartbeats, when not derived from the prefix.
    pub orchestrator_queue_url: Option<String>,
    /// Prefix of SQS queue names (`sqsaga-` + logical name).
    pub queue_prefix: String,
    /// DynamoDB table of saga state.
    pub table: String,
    /// How long terminal sagas are kept after they end.
    pub retention: Duration,
    /// SQS batching windows: latency against requests.
    pub sqs_preset: SqsPreset,
    /// Saga definition file or directory; `None` means the built-in order saga.
    pub definitions: Option<PathBuf>,
    /// fleet.yaml: which fingerprints each service may run.
    pub fleet_policy: Option<PathBuf>,
    /// What the drift guard does about a drifted worker.
    pub drift_mode: DriftMode,
    /// How often a worker reports its fingerprint.
    pub heartbeat_interval: Duration,
    /// Receives after which a message goes to the DLQ.
    pub max_receive_count: u32,
    /// Admission limit per definition and orchestrator replica; 0: none.
    pub max_in_flight: u64,
    /// Key that signs outgoing messages.
    pub signing_key: Option<Secret>,
    /// Key being rotated out; its signatures are still accepted.
    pub signing_key_previous: Option<Secret>,
    /// Whether unsigned or badly signed messages are rejected.
    pub require_signature: bool,
    /// Signed messages older than this are stale and rejected.
    pub signature_max_age: Duration,
    /// OpenTelemetry collector endpoint, if traces are exported.
    pub otlp_endpoint: Option<String>,
    /// Custom AWS endpoint (an emulator), if any.
    pub endpoint_url: Option<String>,
    /// The JSON file that was read, if any (from `--config` or `SQSAGA_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// Where each key's value came from; read by [`Settings::origin`] and the report.
    pub(crate) origins: BTreeMap<&'static str, Origin>,
}

/// One field seen through the table: a plain JSON value, or a secret that
/// each view treats its own way (hashed in `effective`, redacted in reports).
enum Field<'a> {
    Plain(Value),
    Secret(Option<&'a Secret>),
}

impl Settings {
    /// Where the value of `key` came from (`None` for a key not in the table).
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.origins.get(key)
    }

    /// The effective configuration: canonical key → value for every setting
    /// except per-instance ones; durations as `30s`, unset as `null`, secrets
    /// as `sha256:<hex>` of the secret (never the secret). This is what the
    /// drift guard hashes and compares between replicas.
    pub fn effective(&self) -> BTreeMap<String, Value> {
        SETTINGS
            .iter()
            .filter(|spec| !spec.per_instance)
            .map(|spec| {
                let value = match self.field(spec.key) {
                    Field::Plain(v) => v,
                    Field::Secret(Some(s)) => Value::String(s.digest()),
                    Field::Secret(None) => Value::Null,
                };
                (spec.key.to_string(), value)
            })
            .collect()
    }

    /// sha256 hex of the canonical JSON of [`Settings::effective`] (keys
    /// sorted, no whitespace): equal on every replica with the same
    /// configuration, whichever source each value came from.
    pub fn config_hash(&self) -> String {
        // A BTreeMap of scalars serializes with sorted keys and no spaces,
        // whatever serde_json features other crates turn on.
        let canonical = serde_json::to_string(&self.effective()).unwrap_or_default();
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The human report of `sqsaga config check`: one `key = value (source)`
    /// line per setting in table order, secrets `<redacted>`, then the config
    /// file read and `config_hash: <hex>`.
    pub fn redacted_report(&self) -> String {
        let width = SETTINGS.iter().map(|s| s.key.len()).max().unwrap_or(0);
        let mut out = String::new();
        for spec in SETTINGS {
            let value = match self.field(spec.key) {
                Field::Plain(Value::Null) | Field::Secret(None) => "(unset)".to_string(),
                Field::Plain(v) => v.to_string(),
                Field::Secret(Some(_)) => Secret::REDACTED.to_string(),
            };
            let origin = self.origins.get(spec.key).cloned().unwrap_or(Origin::Default);
            let note = if spec.per_instance { ", per instance: not hashed" } else { "" };
            out.push_str(&format!("{:<width$} = {value} ({origin}{note})\n", spec.key));
        }
        match &self.config_file {
            Some(path) => out.push_str(&format!("config_file: {}\n", path.display())),
            None => out.push_str("config_file: (none)\n"),
        }
        out.push_str(&format!("config_hash: {}\n", self.config_hash()));
        out
    }

    /// The field behind `key`. Every key of the table has an arm; the unit
    /// test `every_setting_reaches_the_effective_map` keeps it
    /// that way.
    fn field(&self, key: &str) -> Field<'_> {
        fn text(v: &Option<String>) -> Value {
            v.clone().map_or(Value::Null, Value::String)
        }
        fn path(v: &Option<PathBuf>) -> Value {
            v.as_ref().map_or(Value::Null, |p| Value::String(p.display().to_string()))
        }
        fn dur(d: Duration) -> Value {
            Value::String(format_duration(d))
        }
        let plain = match key {
            "queue_url" => text(&self.queue_url),
            "dlq_url" => text(&self.dlq_url),
            "region" => text(&self.region),
            "log_level" => self.log_level.as_str().into(),
            "backend" => self.backend.as_str().into(),
            "data_dir" => self.data_dir.display().to_string().into(),
            "http_addr" => self.http_addr.to_string().into(),
            "sqs_endpoint_addr" => self.sqs_endpoint_addr.map_or(Value::Null, |a| a.to_string().into()),
            "sqs_endpoint_access_key_id" => text(&self.sqs_endpoint_access_key_id),
            "sqs_endpoint_secret_access_key" => return Field::Secret(self.sqs_endpoint_secret_access_key.as_ref()),
            "admin_addr" => self.admin_addr.map_or(Value::Null, |a| a.to_string().into()),
            "admin_token" => return Field::Secret(self.admin_token.as_ref()),
            "admin_token_file" => path(&self.admin_token_file),
            "admin_read_token" => return Field::Secret(self.admin_read_token.as_ref()),
            "admin_read_token_file" => path(&self.admin_read_token_file),
            "service" => text(&self.service),
            "participant_db" => self.participant_db.as_ref().map_or(Value::Null, |d| d.redacted().into()),
            "instance_id" => self.instance_id.clone().into(),
            "concurrency" => self.concurrency.into(),
            "visibility_timeout" => dur(self.visibility_timeout),
            "wait_time" => dur(self.wait_time),
            "drain_timeout" => dur(self.drain_timeout),
            "orchestrator_queue_url" => text(&self.orchestrator_queue_url),
            "queue_prefix" => self.queue_prefix.clone().into(),
            "table" => self.table.clone().into(),
            "retention" => dur(self.retention),
            "definitions" => path(&self.definitions),
            "fleet_policy" => path(&self.fleet_policy),
            "drift_mode" => self.drift_mode.as_str().into(),
            "sqs_preset" => self.sqs_preset.as_str().into(),
            "heartbeat_interval" => dur(self.heartbeat_interval),
            "max_receive_count" => self.max_receive_count.into(),
            "max_in_flight" => self.max_in_flight.into(),
            "signing_key" => return Field::Secret(self.signing_key.as_ref()),
            "signing_key_previous" => return Field::Secret(self.signing_key_previous.as_ref()),
            "require_signature" => self.require_signature.into(),
            "signature_max_age" => dur(self.signature_max_age),
            "otlp_endpoint" => text(&self.otlp_endpoint),
            "endpoint_url" => text(&self.endpoint_url),
            _ => Value::Null,
        };
        Field::Plain(plain)
    }
}
