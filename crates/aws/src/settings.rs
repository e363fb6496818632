//! [`AwsSettings`]: what the AWS backend needs to know, and how the SDK
//! configuration is built from it — the AWS way: the default credential
//! chain (environment, profile, web identity for IRSA on EKS, container and
//! instance-profile credentials on ECS/EC2), the region from the settings or
//! the SDK's region chain, and an optional custom endpoint (an emulator).
//!
//! This file knows nothing of sqsaga's own configuration crate: the CLI maps
//! `sqsaga_config::Settings` onto these fields.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// Settings of the AWS backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSettings {
    /// AWS region; `None` leaves it to the SDK's chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// Custom endpoint for every service (an emulator such as moto); `None`
    /// uses the regional endpoints (or the SDK's own `AWS_ENDPOINT_URL`).
    pub endpoint_url: Option<String>,
    /// Prefix of SQS queue names: logical queue `inventory` is `<prefix>inventory`.
    pub queue_prefix: String,
    /// Explicit queue URLs by logical name; they win over the prefix (a
    /// Kubernetes worker is told `SQS_QUEUE_URL` rather than a name).
    pub queue_urls: BTreeMap<String, String>,
    /// DynamoDB table of saga state.
    pub table: String,
    /// How long terminal sagas are kept: the TTL the terminal commit sets.
    pub retention: Duration,
    /// KMS key (id or ARN) for server-side encryption of queues; `None` uses
    /// SQS-managed keys (SSE-SQS), which cost nothing extra.
    pub kms_key: Option<String>,
    /// Attempts per API call, first included; the SDK retries throttling,
    /// 5xx and I/O errors with jittered exponential backoff between them.
    pub max_attempts: u32,
    /// How long the send/delete batchers wait for more entries after the
    /// first one, so concurrent callers share one request.
    pub flush_window: Duration,
    /// How long a batch may wait to fill on a busy queue (its entries of the
    /// last such window would fill it); a lone message on an idle queue
    /// waits only `flush_window`.
    pub busy_flush_window: Duration,
    /// The same for delete batches (a delete holds back only its caller).
    pub busy_delete_window: Duration,
    /// Batch requests in flight at once per queue and kind (send, delete).
    /// While they are all busy, entries wait and the next batch grows.
    pub max_batches_in_flight: usize,
    /// After a long poll that got some messages but fewer than it asked
    /// for, how long the next long poll of that queue waits, so messages
    /// arriving meanwhile come in one receive. Bounds the latency it adds.
    pub receive_linger: Duration,
    /// One SQS request per message, as the seed's Go worker does: only for
    /// the request-accounting benchmark's comparison.
    pub naive: bool,
    /// Meter DynamoDB capacity: ask for `ConsumedCapacity` on every call and
    /// estimate units by the item-size rules (`capacity.rs`). For the cost
    /// benchmark only: the meter keeps a copy of every item written.
    pub capacity: bool,
}

/// Default prefix of queue names.
pub const DEFAULT_QUEUE_PREFIX: &str = "sqsaga-";
/// Default DynamoDB table.
pub const DEFAULT_TABLE: &str = "sqsaga-sagas";

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            region: None,
            endpoint_url: None,
            queue_prefix: DEFAULT_QUEUE_PREFIX.to_string(),
            queue_urls: BTreeMap::new(),
            table: DEFAULT_TABLE.to_string(),
            retention: crate::item::DEFAULT_RETENTION,
            kms_key: None,
            max_attempts: 4,
            // Long enough for the other pollers' sends of the same moment to
            // join, short enough that a lone message is not held back.
            flush_window: Duration::from_millis(5),
            busy_flush_window: DEFAULT_BUSY_FLUSH_WINDOW,
            busy_delete_window: DEFAULT_BUSY_DELETE_WINDOW,
            max_batches_in_flight: 2,
            receive_linger: DEFAULT_RECEIVE_LINGER,
            naive: false,
            capacity: false,
        }
    }
}

impl AwsSettings {
    /// The SDK configuration: default credential and region chains, our
    /// retry policy, and the endpoint override if any.
    pub async fn load_sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config(self.max_attempts))
            .timeout_config(timeout_config());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        loader.load().await
    }
}

/// Standard retry mode: throttling, 5xx and transient I/O errors are retried
/// with jittered exponential backoff from 100 ms up to 5 s. The SDK default
/// starts at 1 s, which makes an unreachable endpoint take long to report.
pub fn retry_config(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts.max(1))
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(5))
}

/// A connect timeout only: a long poll legitimately takes 20 s, so there is
/// no read or operation timeout.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(Duration::from_secs(3)).build()
}

/// Named trade-offs between step latency and SQS requests: the three
/// batching windows together. Each hop of a step on a busy queue can wait
/// up to a send window (the command or reply waits for its batch to fill)
/// and a receive linger (the poller waits for more messages); the delete
/// window holds back no message, only the caller's delete. README,
/// Benchmarks has the measured curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqsPreset {
    /// No linger, no growth on busy queues: a batch holds only what arrives
    /// within the 5 ms flush window.
    Latency,
    /// A fifth of a second at most per wait.
    Balanced,
    /// Up to 1 s per send and per receive, 2 s per delete: the fewest
    /// requests (the defaults).
    Cost,
}

impl SqsPreset {
    /// Every preset, cheapest in latency first.
    pub const ALL: [SqsPreset; 3] = [SqsPreset::Latency, SqsPreset::Balanced, SqsPreset::Cost];

    /// The name used in settings and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            SqsPreset::Latency => "latency",
            SqsPreset::Balanced => "balanced",
            SqsPreset::Cost => "cost",
        }
    }

    /// Parses a name, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<SqsPreset> {
        SqsPreset::ALL.into_iter().find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// `(receive_linger, busy_flush_window, busy_delete_window)`.
    pub fn windows(self) -> (Duration, Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            SqsPreset::Latency => (Duration::ZERO, ms(5), ms(5)),
            SqsPreset::Balanced => (ms(200), ms(200), ms(500)),
            SqsPreset::Cost => (DEFAULT_RECEIVE_LINGER, DEFAULT_BUSY_FLUSH_WINDOW, DEFAULT_BUSY_DELETE_WINDOW),
        }
    }
}

impl AwsSettings {
    /// These settings with the windows of `preset`.
    pub fn with_preset(self, preset: SqsPreset) -> AwsSettings {
        let (receive_linger, busy_flush_window, busy_delete_window) = preset.windows();
        AwsSettings { receive_linger, busy_flush_window, busy_delete_window, ..self }
    }
}

/// Default [`SqsOptions::busy_flush_window`].
pub const DEFAULT_BUSY_FLUSH_WINDOW: Duration = Duration::from_millis(1000);
/// Default [`SqsOptions::busy_delete_window`].
pub const DEFAULT_BUSY_DELETE_WINDOW: Duration = Duration::from_millis(2000);
/// Default [`SqsOptions::receive_linger`].
pub const DEFAULT_RECEIVE_LINGER: Duration = Duration::from_millis(1000);

/// How an [`SqsQueue`](crate::SqsQueue) behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsOptions {
    /// Prefix of physical queue names: logical `inventory` is `<prefix>inventory`.
    pub prefix: String,
    /// Explicit logical name → queue URL, ahead of the prefix.
    pub queue_urls: BTreeMap<String, String>,
    /// KMS key for SSE-KMS on queues `ensure` creates; `None` = SSE-SQS.
    pub kms_key: Option<String>,
    /// How long a batcher waits for more entries after the first.
    pub flush_window: Duration,
    /// How long a send batch may wait to fill on a busy queue: one whose
    /// entries of the last such window would fill it (batch.rs). An idle
    /// queue's lone message waits only `flush_window`.
    pub busy_flush_window: Duration,
    /// The same for delete batches. Longer than for sends: a delete holds
    /// back no message, only its caller.
    pub busy_delete_window: Duration,
    /// One request per message (no batching, no merging): the benchmark's baseline.
    pub naive: bool,
    /// Batch requests in flight at once per queue and kind (send, delete).
    pub max_in_flight: usize,
    /// After a long poll that got some messages but fewer than it asked
    /// for, how long the next one waits so what arrives meanwhile comes in
    /// one receive (see `gate.rs`). Zero turns the linger off (the gate
    /// still lets one long poll run at a time on a queue that is not backlogged).
    pub receive_linger: Duration,
}

impl Default for SqsOptions {
    fn default() -> Self {
        SqsOptions {
            prefix: DEFAULT_QUEUE_PREFIX.to_string(),
            queue_urls: BTreeMap::new(),
            kms_key: None,
            flush_window: Duration::from_millis(5),
            busy_flush_window: DEFAULT_BUSY_FLUSH_WINDOW,
            busy_delete_window: DEFAULT_BUSY_DELETE_WINDOW,
            naive: false,
            max_in_flight: 2,
            receive_linger: DEFAULT_RECEIVE_LINGER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_map_onto_the_windows() {
        let ms = Duration::from_millis;
        // (name, receive linger, busy send window, busy delete window)
        let cases: &[(&str, Duration, Duration, Duration)] = &[
            ("latency", Duration::ZERO, ms(5), ms(5)),
            ("balanced", ms(200), ms(200), ms(500)),
            ("cost", ms(1000), ms(1000), ms(2000)),
            ("COST", ms(1000), ms(1000), ms(2000)),
        ];
        for (name, linger, send, delete) in cases {
            let preset = SqsPreset::from_name(name).unwrap_or_else(|| panic!("{name} is a preset"));
            let s = AwsSettings::default().with_preset(preset);
            assert_eq!(
                (s.receive_linger, s.busy_flush_window, s.busy_delete_window),
                (*linger, *send, *delete),
                "{name}"
            );
            assert_eq!(s.flush_window, AwsSettings::default().flush_window, "{name} keeps the flush window");
        }
        assert_eq!(SqsPreset::from_name("fast"), None);
        // The defaults are the cost preset.
        assert_eq!(AwsSettings::default().with_preset(SqsPreset::Cost), AwsSettings::default());
    }
}
