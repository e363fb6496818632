//! What a worker is configured with ([`WorkerOptions`]) and how it stamps
//! what it sends: [`seal`] signs (when signing is on) and traces every reply
//! and heartbeat. Shared by the receive loops (`runtime.rs`) and the
//! heartbeats (`drift.rs`), which otherwise know nothing of each other.

use std::sync::Arc;
use std::time::Duration;

use sqsaga_core::Millis;
use sqsaga_core::clock::{Clock, SystemClock};
use sqsaga_protocol::{ATTR_SIGNATURE, ATTR_TRACEPARENT, Envelope, Signing, TraceParent};
use sqsaga_queue::{MAX_WAIT, OutgoingMessage};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Service name, reported in every reply (`inventory`).
    pub service: String,
    /// This process among its siblings (pod name, host:pid), for the audit.
    pub instance: String,
    /// Queue to poll; by convention the service's name.
    pub queue: String,
    /// Concurrent pollers, each with up to 10 messages in flight.
    pub concurrency: usize,
    /// Long-poll time of a receive (at most 20 s, the SQS maximum).
    pub wait: Duration,
    /// How long a received message stays hidden from siblings: longer than
    /// the slowest handler, or it is delivered twice (harmless, but wasted).
    pub visibility: Duration,
    /// Budget to finish in-flight work once shutdown begins.
    pub drain_timeout: Duration,
    /// Drift-guard fingerprint of this worker, sent with every reply.
    pub fingerprint: String,
    /// Message signing (`SQSAGA_SIGNING_KEY`...): replies are signed and
    /// commands verified before they run. `None`: signing is off.
    pub signing: Option<Arc<Signing>>,
    /// Drift guard: how often a heartbeat (fingerprint and parts, in-flight
    /// count, quarantine) goes to `heartbeat_queue`; `None` sends none.
    pub heartbeat_interval: Option<Duration>,
    /// Where heartbeats go: the orchestrator's queue.
    pub heartbeat_queue: String,
    /// The machine (or pod) this worker runs on, for the fleet view.
    pub host: String,
    /// The fingerprint's parts (`sqsaga_drift::FingerprintParts` as JSON),
    /// so the fleet view can say what differs from the siblings.
    pub fingerprint_parts: serde_json::Value,
    /// When the process started (ms since the epoch), reported in
    /// heartbeats: the fleet view tells a rollout (the newer build started
    /// later) from a fleet started divergent. `None`: when the worker is built.
    pub started_at: Option<Millis>,
    /// Where "now" comes from: signature ages, reply and heartbeat
    /// times, and whether a command waited past its latest start
    /// (`not_after`). Tests pass a `ManualClock` to expire a command
    /// without waiting.
    pub clock: Arc<dyn Clock>,
}

impl WorkerOptions {
    /// Defaults from the seed: 20 s long polls, 30 s visibility; two pollers
    /// and a 25 s drain, which fits Kubernetes' 30 s default grace period.
    pub fn new(service: &str, instance: &str) -> Self {
        WorkerOptions {
            service: service.to_string(),
            instance: instance.to_string(),
            queue: service.to_string(),
            concurrency: 2,
            wait: MAX_WAIT,
            visibility: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(25),
            fingerprint: "unknown".to_string(),
            signing: None,
            heartbeat_interval: None,
            heartbeat_queue: "orchestrator".to_string(),
            host: "unknown".to_string(),
            fingerprint_parts: serde_json::Value::Null,
            started_at: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// An outgoing message: `envelope`'s body, signed when signing is on, with
/// `trace` as its `traceparent`. Every reply (and heartbeat) goes through here.
pub(crate) fn seal(options: &WorkerOptions, envelope: &Envelope, trace: Option<TraceParent>) -> OutgoingMessage {
    let body = envelope.encode();
    let mut out = OutgoingMessage::new(body);
    if let Some(signing) = &options.signing {
        let signature = signing.sign(&out.body, options.clock.now());
        out = out.with_attribute(ATTR_SIGNATURE, signature);
    }
    if let Some(tp) = trace {
        out = out.with_attribute(ATTR_TRACEPARENT, tp.to_string());
    }
    out
}
