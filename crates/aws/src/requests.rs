//! Request accounting: every HTTP request the SDK sends to SQS (or DynamoDB),
//! counted by API action. AWS bills SQS per request, so this is the cost
//! figure the batching in `sqs.rs` is judged by (`sqsaga bench sqs`).
//!
//! Counting happens in an SDK interceptor, once per *attempt*: a call the
//! SDK retried twice counts three times, as AWS bills it. Exposed as
//! `sqsaga_sqs_requests_total{action="SendMessageBatch"}` (and
//! `sqsaga_dynamodb_requests_total`) by the runtime, which renders the
//! [`RequestSnapshot`] under [`RequestCounter::metric`]; the benchmark reads
//! the same snapshots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use serde::Serialize;

/// Metric of SQS requests by action.
pub const SQS_REQUESTS_METRIC: &str = "sqsaga_sqs_requests_total";
/// Metric of DynamoDB requests by action.
pub const DYNAMODB_REQUESTS_METRIC: &str = "sqsaga_dynamodb_requests_total";

/// Requests sent to one AWS service, by action. Shared by the clients that
/// use it and by whoever renders or snapshots it.
#[derive(Debug)]
pub struct RequestCounter {
    /// Metric family name (`sqsaga_sqs_requests_total`).
    metric: &'static str,
    /// `# HELP` text of the family.
    help: &'static str,
    /// Action name → requests. A lock per request is noise next to a network round trip.
    counts: Mutex<BTreeMap<String, u64>>,
}

impl RequestCounter {
    /// Counter of SQS requests.
    pub fn sqs() -> Self {
        RequestCounter {
            metric: SQS_REQUESTS_METRIC,
            help: "HTTP requests sent to Amazon SQS, by API action (retries included, as AWS bills them).",
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counter of DynamoDB requests.
    pub fn dynamodb() -> Self {
        RequestCounter {
            metric: DYNAMODB_REQUESTS_METRIC,
            help: "HTTP requests sent to Amazon DynamoDB, by API action (retries included).",
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts one request of `action`.
    pub fn record(&self, action: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match counts.get_mut(action) {
            Some(n) => *n += 1,
            None => {
                counts.insert(action.to_string(), 1);
            }
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestSnapshot {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        RequestSnapshot { by_action: counts.clone() }
    }

    /// Metric family name (`sqsaga_sqs_requests_total`).
    pub fn metric(&self) -> &'static str {
        self.metric
    }

    /// `# HELP` text of the family.
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// The SDK interceptor that feeds this counter.
    pub(crate) fn interceptor(self: &Arc<Self>) -> CountingInterceptor {
        CountingInterceptor { counter: self.clone() }
    }
}

/// Counts at one moment, by action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestSnapshot {
    pub by_action: BTreeMap<String, u64>,
}

impl RequestSnapshot {
    /// Requests of every action.
    pub fn total(&self) -> u64 {
        self.by_action.values().sum()
    }

    /// Requests of one action.
    pub fn get(&self, action: &str) -> u64 {
        self.by_action.get(action).copied().unwrap_or(0)
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &RequestSnapshot) -> RequestSnapshot {
        let by_action = self
            .by_action
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(earlier.get(k))))
            .filter(|(_, v)| *v > 0)
            .collect();
        RequestSnapshot { by_action }
    }
}

/// Counts every attempt just before it is sent, by the operation name the
/// SDK keeps in the config bag (`SendMessageBatch`, `PutItem`).
#[derive(Debug)]
pub(crate) struct CountingInterceptor {
    /// Where the counts go.
    counter: Arc<RequestCounter>,
}

impl Intercept for CountingInterceptor {
    fn name(&self) -> &'static str {
        "sqsaga-request-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let action = cfg.load::<Metadata>().map(Metadata::name).unwrap_or("unknown");
        self.counter.record(action);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_subtract() {
        let c = RequestCounter::sqs();
        c.record("ReceiveMessage");
        let before = c.snapshot();
        c.record("ReceiveMessage");
        c.record("DeleteMessageBatch");
        let delta = c.snapshot().since(&before);
        assert_eq!(delta.get("ReceiveMessage"), 1);
        assert_eq!(delta.get("DeleteMessageBatch"), 1);
        assert_eq!(delta.total(), 2);
    }
}
