//! The one table of settings ([`SETTINGS`]): every environment variable,
//! file key and flag the processes understand, with its default, its rules
//! and its documentation.
//!
//! The parser in `resolve.rs` walks this table, and `sqsaga lint-deploy` and
//! the generated reference docs read it, so a setting exists exactly when it
//! has a row here. This file knows nothing about where values come from.

use std::time::Duration;

use crate::choices::{Backend, DriftMode, LogLevel, SqsPreset};

/// The variable that names the JSON config file (the `--config` flag wins over it).
pub const CONFIG_ENV: &str = "SQSAGA_CONFIG";

/// Prefix of our own variables: an unknown variable with this prefix is a typo
/// and an error, any other unknown variable is none of our business.
pub const ENV_PREFIX: &str = "SQSAGA_";

/// Variables read by the AWS SDK itself. Known (so `lint-deploy` accepts them
/// in manifests) but never interpreted here: the SDK's credential and region
/// chains own them.
pub const AWS_SDK_ENV_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_DEFAULT_REGION",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
];

/// One setting: how it is named in each source, what it accepts, and why it exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SettingSpec {
    /// Environment variable that sets it (the Kubernetes path).
    pub env: &'static str,
    /// Further variables consulted, in order, when `env` is unset; they rank
    /// below `env` but above the file (`AWS_REGION` behind `REGION`).
    pub env_fallbacks: &'static [&'static str],
    /// Key in the JSON config file (the Chef path) and canonical name in
    /// reports, errors and the effective configuration.
    pub key: &'static str,
    /// Command-line flag (`--data-dir`), for the few settings an operator
    /// overrides by hand; `None` means the setting has no flag.
    pub flag: Option<&'static str>,
    /// A secret is never printed: reports say `<redacted>`, the effective
    /// configuration (and so the config hash) carries only its sha256.
    pub secret: bool,
    /// Differs between replicas by design, so it is left out of the
    /// effective configuration and the config hash (else every replica
    /// would look drifted).
    pub per_instance: bool,
    /// Default, written as it would be in an environment variable; `None`
    /// means unset unless the doc says the default is computed.
    pub default: Option<&'static str>,
    /// What values are accepted; drives parsing and validation.
    pub kind: Kind,
    /// One-paragraph reference documentation.
    pub doc: &'static str,
}

/// What a setting accepts. Text sources (flags, environment) are parsed from
/// strings; the JSON file must use the matching JSON type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A string of restricted characters and length.
    Text {
        /// Characters allowed.
        chars: CharSet,
        /// Shortest accepted length in bytes.
        min_len: usize,
        /// Longest accepted length in bytes.
        max_len: usize,
    },
    /// An `http://` or `https://` URL.
    Url,
    /// An AWS region name such as `us-east-1`.
    Region,
    /// A filesystem path.
    Path,
    /// A participant database: `sqlite:<path>` or a `postgres://` URL
    /// ([`crate::DatabaseUrl`]); its password never reaches a report.
    DatabaseUrl,
    /// A socket address `ip:port`; port 0 picks a free port.
    SocketAddr,
    /// One of a fixed list of lowercase words (accepted case-insensitively).
    Choice(&'static [&'static str]),
    /// An integer in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// A duration such as `30s`, `1m30s`, `500ms`; in the file also an integer
    /// number of seconds.
    Duration {
        /// Shortest accepted duration.
        min: Duration,
        /// Longest accepted duration.
        max: Duration,
        /// SQS counts these in whole seconds; a fraction would be silently
        /// rounded by the API, so it is refused here instead.
        whole_seconds: bool,
    },
    /// `true`/`false`/`1`/`0` (in the file: a JSON boolean).
    Bool,
    /// A secret string of at least `min_bytes` bytes.
    Secret {
        /// Shortest accepted secret: a signing key shorter than the HMAC-SHA256
        /// output adds no strength and is most likely a placeholder.
        min_bytes: usize,
    },
}

/// Character sets for [`Kind::Text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CharSet {
    /// `[a-z0-9-]`: service names, which end up in queue names, metric labels
    /// and Kubernetes object names.
    LowerDash,
    /// `[A-Za-z0-9_-]`: what SQS allows in a queue name.
    QueueName,
    /// `[A-Za-z0-9_.-]`: what DynamoDB allows in a table name.
    TableName,
    /// Any printable character except whitespace.
    Printable,
}

impl CharSet {
    /// Whether `c` belongs to the set.
    pub fn allows(self, c: char) -> bool {
        match self {
            CharSet::LowerDash => c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-',
            CharSet::QueueName => c.is_ascii_alphanumeric() || c == '-' || c == '_',
            CharSet::TableName => c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
            CharSet::Printable => !c.is_whitespace() && !c.is_control(),
        }
    }

    /// The set as written in error messages and docs.
    pub fn describe(self) -> &'static str {
        match self {
            CharSet::LowerDash => "[a-z0-9-]",
            CharSet::QueueName => "[A-Za-z0-9_-]",
            CharSet::TableName => "[A-Za-z0-9_.-]",
            CharSet::Printable => "printable characters without spaces",
        }
    }
}

impl Kind {
    /// A short description of accepted values, for docs and `--help`.
    pub fn describe(&self) -> String {
        use sqsaga_core::duration::format_duration as fmt;
        match self {
            Kind::Text { chars, min_len, max_len } => {
                format!("text, {} characters of {}", length_range(*min_len, *max_len), chars.describe())
            }
            Kind::Url => "URL (http:// or https://)".to_string(),
            Kind::Region => "AWS region (e.g. us-east-1)".to_string(),
            Kind::Path => "path".to_string(),
            Kind::DatabaseUrl => "sqlite:<path> or postgres://user@host:port/database".to_string(),
            Kind::SocketAddr => "socket address ip:port (port 0 picks a free port)".to_string(),
            Kind::Choice(words) => format!("one of {}", words.join("|")),
            Kind::Integer { min, max } => format!("integer {min}..={max}"),
            Kind::Duration { min, max, whole_seconds } => {
                let whole = if *whole_seconds { ", whole seconds" } else { "" };
                format!("duration {}..={}{whole}", fmt(*min), fmt(*max))
            }
            Kind::Bool => "boolean (true|false|1|0)".to_string(),
            Kind::Secret { min_bytes } => format!("secret, at least {min_bytes} bytes"),
        }
    }
}

fn length_range(min: usize, max: usize) -> String {
    if min <= 1 { format!("up to {max}") } else { format!("{min} to {max}") }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every setting, in the order reports and docs list them.
pub static SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        env: "SQS_QUEUE_URL",
        env_fallbacks: &[],
        key: "queue_url",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Url,
        doc: "URL of this process's input queue (AWS mode). Unset: the queue is named \
              `queue_prefix` + the service name (or `orchestrator` for the orchestrator).",
    },
    SettingSpec {
        env: "SQSAGA_DLQ_URL",
        env_fallbacks: &[],
        key: "dlq_url",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Url,
        doc: "URL of the dead-letter queue behind the input queue (AWS mode): where poison \
              messages go, with the reason attached.",
    },
    SettingSpec {
        env: "REGION",
        env_fallbacks: &["AWS_REGION"],
        key: "region",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Region,
        doc: "AWS region of the queues and the table. `REGION` wins over `AWS_REGION`; unset, \
              the AWS SDK's own chain decides (AWS_DEFAULT_REGION, profile, instance metadata).",
    },
    SettingSpec {
        env: "LOG_LEVEL",
        env_fallbacks: &[],
        key: "log_level",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("info"),
        kind: Kind::Choice(LogLevel::NAMES),
        doc: "Least severe log level written. Part of the config hash: a worker that logs \
              less than its siblings is drifted.",
    },
    SettingSpec {
        env: "SQSAGA_BACKEND",
        env_fallbacks: &[],
        key: "backend",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("embedded"),
        kind: Kind::Choice(Backend::NAMES),
        doc: "`embedded`: SQLite queues and store in `data_dir`, one machine. `aws`: Amazon SQS \
              and DynamoDB.",
    },
    SettingSpec {
        env: "SQSAGA_DATA_DIR",
        env_fallbacks: &[],
        key: "data_dir",
        flag: Some("--data-dir"),
        secret: false,
        per_instance: false,
        default: Some("./.sqsaga"),
        kind: Kind::Path,
        doc: "Directory of the embedded backend's database, shared by every process of one \
              embedded deployment.",
    },
    SettingSpec {
        env: "SQSAGA_HTTP_ADDR",
        env_fallbacks: &[],
        key: "http_addr",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("127.0.0.1:8080"),
        kind: Kind::SocketAddr,
        doc: "Address of the HTTP port serving /healthz, /readyz and /metrics. Port 0 picks a \
              free port and logs it; containers use 0.0.0.0:8080.",
    },
    SettingSpec {
        env: "SQSAGA_SQS_ENDPOINT_ADDR",
        env_fallbacks: &[],
        key: "sqs_endpoint_addr",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::SocketAddr,
        doc: "Orchestrator on the embedded backend: also serve its queues with the SQS API (AWS JSON 1.0 and the \
              query protocol) at this address, so participants in any language use them through an unmodified AWS SDK \
              (`AWS_ENDPOINT_URL=http://<address>`). Unset: not served. A non-loopback address is refused \
              unless SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID is set. Port 0 picks a free port and logs it.",
    },
    SettingSpec {
        env: "SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID",
        env_fallbacks: &[],
        key: "sqs_endpoint_access_key_id",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Text { chars: CharSet::Printable, min_len: 1, max_len: 128 },
        doc: "The only access key id the SQS endpoint accepts: every request must carry a Signature Version 4 \
              Authorization header naming it. Alone it is an identifier, not a secret (it keeps out clients \
              not given it); with SQSAGA_SQS_ENDPOINT_SECRET_ACCESS_KEY signatures are verified.",
    },
    SettingSpec {
        env: "SQSAGA_SQS_ENDPOINT_SECRET_ACCESS_KEY",
        env_fallbacks: &[],
        key: "sqs_endpoint_secret_access_key",
        flag: None,
        secret: true,
        per_instance: false,
        default: None,
        kind: Kind::Secret { min_bytes: 16 },
        doc: "Secret access key of SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID: with it the SQS endpoint verifies every \
              request's SigV4 signature (body included, request time within 15 minutes). Secret: never logged.",
    },
    SettingSpec {
        env: "SQSAGA_ADMIN_ADDR",
        env_fallbacks: &[],
        key: "admin_addr",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::SocketAddr,
        doc: "Orchestrator: where the admin API (`/api/v1`, its OpenAPI document at `/api/v1/openapi.json`) \
              and the web console (`/`) are served. Unset: on the HTTP port (SQSAGA_HTTP_ADDR) when that \
              is a loopback address, else not at all. A non-loopback address is refused unless \
              SQSAGA_ADMIN_TOKEN (or SQSAGA_ADMIN_TOKEN_FILE) is set. Port 0 picks a free port and logs it.",
    },
    SettingSpec {
        env: "SQSAGA_ADMIN_TOKEN",
        env_fallbacks: &[],
        key: "admin_token",
        flag: None,
        secret: true,
        per_instance: false,
        default: None,
        kind: Kind::Secret { min_bytes: 16 },
        doc: "Bearer token of the admin API's `admin` role (reads and mutations: start, resume, cancel, \
              redrive, delete). With any token set, a request without a valid one gets 401. Unset with no \
              read token either (loopback only): every caller is admin. Secret: never logged.",
    },
    SettingSpec {
        env: "SQSAGA_ADMIN_TOKEN_FILE",
        env_fallbacks: &[],
        key: "admin_token_file",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Path,
        doc: "File holding the admin token (a mounted Kubernetes secret), read at start; surrounding \
              whitespace is ignored. Instead of SQSAGA_ADMIN_TOKEN (which wins when both are set).",
    },
    SettingSpec {
        env: "SQSAGA_ADMIN_READ_TOKEN",
        env_fallbacks: &[],
        key: "admin_read_token",
        flag: None,
        secret: true,
        per_instance: false,
        default: None,
        kind: Kind::Secret { min_bytes: 16 },
        doc: "Bearer token of the admin API's `read` role: every GET; mutations get 403. Secret: never logged.",
    },
    SettingSpec {
        env: "SQSAGA_ADMIN_READ_TOKEN_FILE",
        env_fallbacks: &[],
        key: "admin_read_token_file",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Path,
        doc: "File holding the read-only token, read at start. Instead of SQSAGA_ADMIN_READ_TOKEN (which wins \
              when both are set).",
    },
    SettingSpec {
        env: "SQSAGA_SERVICE",
        env_fallbacks: &[],
        key: "service",
        flag: Some("--service"),
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Text { chars: CharSet::LowerDash, min_len: 1, max_len: 64 },
        doc: "Name of the service a worker runs (`inventory`): picks its queue and its \
              handlers. Unused by the orchestrator.",
    },
    SettingSpec {
        env: "SQSAGA_PARTICIPANT_DB",
        env_fallbacks: &[],
        key: "participant_db",
        flag: Some("--participant-db"),
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::DatabaseUrl,
        doc: "A worker's own database, where its business tables and the barrier live: `sqlite:<path>` or \
              `postgres://user@host:port/database` (each order service keeps its tables in a schema named \
              after it). Unset: `<data_dir>/<service>.db`. A password in the URL is redacted in reports and \
              the config hash. Unused by the orchestrator.",
    },
    SettingSpec {
        env: "SQSAGA_INSTANCE_ID",
        env_fallbacks: &[],
        key: "instance_id",
        flag: None,
        secret: false,
        per_instance: true,
        default: None,
        kind: Kind::Text { chars: CharSet::Printable, min_len: 1, max_len: 128 },
        doc: "Name of this replica in heartbeats and the fleet view. Default: \
              `<hostname>-<pid>`. Per instance, so not part of the config hash.",
    },
    SettingSpec {
        env: "SQSAGA_CONCURRENCY",
        env_fallbacks: &[],
        key: "concurrency",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("4"),
        kind: Kind::Integer { min: 1, max: 256 },
        doc: "Number of concurrent pollers, each taking up to 10 messages per receive.",
    },
    SettingSpec {
        env: "SQSAGA_VISIBILITY_TIMEOUT",
        env_fallbacks: &[],
        key: "visibility_timeout",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("30s"),
        kind: Kind::Duration { min: secs(1), max: secs(12 * 3600), whole_seconds: true },
        doc: "How long a received message stays hidden from other consumers before it comes \
              back; longer than the slowest handler (SQS allows at most 12h).",
    },
    SettingSpec {
        env: "SQSAGA_WAIT_TIME",
        env_fallbacks: &[],
        key: "wait_time",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("20s"),
        kind: Kind::Duration { min: secs(0), max: secs(20), whole_seconds: true },
        doc: "Long-poll wait of one receive (SQS allows at most 20s; 20s costs the fewest \
              empty receives).",
    },
    SettingSpec {
        env: "SQSAGA_DRAIN_TIMEOUT",
        env_fallbacks: &[],
        key: "drain_timeout",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("30s"),
        kind: Kind::Duration { min: secs(0), max: secs(3600), whole_seconds: false },
        doc: "Grace budget after SIGTERM/SIGINT to finish in-flight work; keep it below \
              Kubernetes' terminationGracePeriodSeconds.",
    },
    SettingSpec {
        env: "SQSAGA_ORCHESTRATOR_QUEUE_URL",
        env_fallbacks: &[],
        key: "orchestrator_queue_url",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Url,
        doc: "URL of the orchestrator's queue, where workers send replies and heartbeats (AWS \
              mode). Unset: `queue_prefix` + `orchestrator`.",
    },
    SettingSpec {
        env: "SQSAGA_QUEUE_PREFIX",
        env_fallbacks: &[],
        key: "queue_prefix",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("sqsaga-"),
        kind: Kind::Text { chars: CharSet::QueueName, min_len: 1, max_len: 40 },
        doc: "Prefix of queue names in AWS: a logical queue `inventory` is the SQS queue \
              `<prefix>inventory`.",
    },
    SettingSpec {
        env: "SQSAGA_TABLE",
        env_fallbacks: &[],
        key: "table",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("sqsaga-sagas"),
        kind: Kind::Text { chars: CharSet::TableName, min_len: 3, max_len: 255 },
        doc: "DynamoDB table of saga state and outbox (AWS mode).",
    },
    SettingSpec {
        env: "SQSAGA_RETENTION",
        env_fallbacks: &[],
        key: "retention",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("30d"),
        kind: Kind::Duration { min: secs(3600), max: secs(3650 * 86_400), whole_seconds: true },
        doc: "How long completed and compensated sagas are kept after they end: AWS mode sets \
              the DynamoDB TTL attribute `expires_at` at the terminal commit (TTL is turned on by \
              `sqsaga provision` and the CloudFormation template); the embedded backend's \
              orchestrator deletes them in batches. Sagas still running or needing an operator \
              are never expired.",
    },
    SettingSpec {
        env: "SQSAGA_SQS_PRESET",
        env_fallbacks: &[],
        key: "sqs_preset",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("cost"),
        kind: Kind::Choice(SqsPreset::NAMES),
        doc: "SQS batching windows, step latency against requests (AWS mode). `latency`: no waiting \
              for batches to fill. `balanced`: waits of up to 0.2 s per send and receive, 0.5 s per \
              delete. `cost`: up to 1 s per send and receive, 2 s per delete, on busy queues only. \
              README, Benchmarks has the measured curve.",
    },
    SettingSpec {
        env: "SQSAGA_DEFINITIONS",
        env_fallbacks: &[],
        key: "definitions",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Path,
        doc: "Saga definition file, or directory of them. Unset: the built-in order saga.",
    },
    SettingSpec {
        env: "SQSAGA_FLEET_POLICY",
        env_fallbacks: &[],
        key: "fleet_policy",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Path,
        doc: "Path of fleet.yaml: the fingerprints each service may run (drift guard). Optional.",
    },
    SettingSpec {
        env: "SQSAGA_DRIFT_MODE",
        env_fallbacks: &[],
        key: "drift_mode",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("observe"),
        kind: Kind::Choice(DriftMode::NAMES),
        doc: "`observe`: drifted workers are reported. `enforce`: commands carry the \
              conforming fingerprints and a drifted worker refuses them and fails /readyz.",
    },
    SettingSpec {
        env: "SQSAGA_HEARTBEAT_INTERVAL",
        env_fallbacks: &[],
        key: "heartbeat_interval",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("10s"),
        kind: Kind::Duration { min: secs(1), max: secs(3600), whole_seconds: false },
        doc: "How often a worker reports its fingerprint to the orchestrator.",
    },
    SettingSpec {
        env: "SQSAGA_MAX_RECEIVE_COUNT",
        env_fallbacks: &[],
        key: "max_receive_count",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("5"),
        kind: Kind::Integer { min: 1, max: 1000 },
        doc: "Receives after which a message is moved to the DLQ (the redrive policy's \
              maxReceiveCount; SQS allows 1 to 1000).",
    },
    SettingSpec {
        env: "SQSAGA_MAX_IN_FLIGHT",
        env_fallbacks: &[],
        key: "max_in_flight",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("200"),
        kind: Kind::Integer { min: 0, max: 1_000_000 },
        doc: "Admission control: the most sagas of one definition an orchestrator replica lets run \
              at once (running or compensating); start requests beyond the limit wait in the queue, \
              not created, so their deadline has not started. The limit in force adapts below this \
              maximum: it starts at 20 and follows the latency of finished sagas, aiming at a quarter \
              of their deadline (never below 10). With N replicas each admits up to this many. \
              0: no limit.",
    },
    SettingSpec {
        env: "SQSAGA_SIGNING_KEY",
        env_fallbacks: &[],
        key: "signing_key",
        flag: None,
        secret: true,
        per_instance: false,
        default: None,
        kind: Kind::Secret { min_bytes: 32 },
        doc: "HMAC key that signs every message sent. Secret: never logged, only its sha256 \
              enters the config hash.",
    },
    SettingSpec {
        env: "SQSAGA_SIGNING_KEY_PREVIOUS",
        env_fallbacks: &[],
        key: "signing_key_previous",
        flag: None,
        secret: true,
        per_instance: false,
        default: None,
        kind: Kind::Secret { min_bytes: 32 },
        doc: "The key being rotated out: signatures made with it are still accepted. Needs \
              `signing_key`.",
    },
    SettingSpec {
        env: "SQSAGA_REQUIRE_SIGNATURE",
        env_fallbacks: &[],
        key: "require_signature",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("false"),
        kind: Kind::Bool,
        doc: "Reject (to the DLQ) every message without a valid signature. Needs `signing_key`.",
    },
    SettingSpec {
        env: "SQSAGA_SIGNATURE_MAX_AGE",
        env_fallbacks: &[],
        key: "signature_max_age",
        flag: None,
        secret: false,
        per_instance: false,
        default: Some("5m"),
        kind: Kind::Duration { min: secs(1), max: secs(24 * 3600), whole_seconds: false },
        doc: "Signed messages older than this are rejected as stale (replay protection). Keep it \
              above the longest backlog a queue may hold while its consumers are down: an older \
              command is dead-lettered, and the orchestrator's step timeout retries or compensates.",
    },
    SettingSpec {
        env: "OTEL_EXPORTER_OTLP_ENDPOINT",
        env_fallbacks: &[],
        key: "otlp_endpoint",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Url,
        doc: "Base URL of an OpenTelemetry collector's OTLP/HTTP port (`http://otel-collector:4318`): \
              when set, the spans of every command and saga event are exported as protobuf to \
              `<endpoint>/v1/traces`, in the trace of their saga; unset, nothing is exported. \
              Plain http:// only (a node-local or in-cluster collector).",
    },
    SettingSpec {
        env: "AWS_ENDPOINT_URL",
        env_fallbacks: &[],
        key: "endpoint_url",
        flag: None,
        secret: false,
        per_instance: false,
        default: None,
        kind: Kind::Url,
        doc: "Custom endpoint for every AWS service (an emulator on loopback). Optional.",
    },
];

/// The setting with file key `key`.
pub fn spec(key: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// Every environment variable this program knows: its own (primary and
/// fallback), `SQSAGA_CONFIG`, and the AWS SDK's. `lint-deploy` accepts
/// exactly these in manifests.
pub fn known_env_vars() -> Vec<&'static str> {
    let mut out = vec![CONFIG_ENV];
    for spec in SETTINGS {
        out.push(spec.env);
        out.extend_from_slice(spec.env_fallbacks);
    }
    out.extend_from_slice(AWS_SDK_ENV_VARS);
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|name| seen.insert(*name));
    out
}

/// Every key the JSON config file may contain.
pub fn known_file_keys() -> Vec<&'static str> {
    SETTINGS.iter().map(|s| s.key).collect()
}

/// The closest of `candidates` to `word`, if close enough to be a plausible
/// typo (the "did you mean" of config errors and `sqsaga lint-deploy`).
pub fn suggest<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.len() / 4).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&word, &c.to_ascii_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut keys = std::collections::BTreeSet::new();
        let mut envs = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(keys.insert(s.key), "duplicate key {}", s.key);
            assert!(envs.insert(s.env), "duplicate env {}", s.env);
            assert!(s.key.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", s.key);
            assert!(s.env.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{}", s.env);
            if let Some(flag) = s.flag {
                assert_eq!(flag, format!("--{}", s.key.replace('_', "-")), "flag of {}", s.key);
            }
            assert_eq!(s.secret, matches!(s.kind, Kind::Secret { .. }), "{}", s.key);
            assert!(!s.doc.is_empty(), "{}", s.key);
        }
    }

    #[test]
    fn known_env_vars_cover_ours_and_the_sdk() {
        let known = known_env_vars();
        for name in ["SQS_QUEUE_URL", "REGION", "AWS_REGION", "LOG_LEVEL", "SQSAGA_CONFIG", "AWS_ROLE_ARN"] {
            assert!(known.contains(&name), "{name}");
        }
        let unique: std::collections::BTreeSet<_> = known.iter().collect();
        assert_eq!(unique.len(), known.len());
        assert_eq!(known_file_keys().len(), SETTINGS.len());
    }

    #[test]
    fn suggestions_find_plausible_typos_only() {
        let cases = [
            ("queue_ur", Some("queue_url")),
            ("concurency", Some("concurrency")),
            ("wait_tim", Some("wait_time")),
            ("colour", None),
        ];
        for (word, expected) in cases {
            assert_eq!(suggest(word, known_file_keys()), expected, "{word}");
        }
    }

    #[test]
    fn kinds_describe_themselves() {
        let described: Vec<String> = SETTINGS.iter().map(|s| s.kind.describe()).collect();
        assert!(described.contains(&"integer 1..=256".to_string()));
        assert!(described.contains(&"duration 0s..=20s, whole seconds".to_string()));
    }
}
