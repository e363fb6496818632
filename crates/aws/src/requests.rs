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

use aws_sdk_sqs::config::interceptors::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::Input;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
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
    /// Action name → requests, and the same per queue. A lock per request
    /// is noise next to a network round trip.
    counts: Mutex<RequestSnapshot>,
}

impl RequestCounter {
    /// Counter of SQS requests.
    pub fn sqs() -> Self {
        RequestCounter {
            metric: SQS_REQUESTS_METRIC,
            help: "HTTP requests sent to Amazon SQS, by API action (retries included, as AWS bills them).",
            counts: Mutex::new(RequestSnapshot::default()),
        }
    }

    /// Counter of DynamoDB requests.
    pub fn dynamodb() -> Self {
        RequestCounter {
            metric: DYNAMODB_REQUESTS_METRIC,
            help: "HTTP requests sent to Amazon DynamoDB, by API action (retries included).",
            counts: Mutex::new(RequestSnapshot::default()),
        }
    }

    /// Counts one request of `action`.
    pub fn record(&self, action: &str) {
        self.record_on(action, None);
    }

    /// Counts one request of `action` on `queue` (a queue's name, for SQS).
    pub fn record_on(&self, action: &str, queue: Option<&str>) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        bump(&mut counts.by_action, action);
        if let Some(queue) = queue {
            let per_queue = match counts.by_queue.get_mut(queue) {
                Some(q) => q,
                None => counts.by_queue.entry(queue.to_string()).or_default(),
            };
            bump(per_queue, action);
        }
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestSnapshot {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
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

fn bump(counts: &mut BTreeMap<String, u64>, action: &str) {
    match counts.get_mut(action) {
        Some(n) => *n += 1,
        None => {
            counts.insert(action.to_string(), 1);
        }
    }
}

/// Counts at one moment, by action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestSnapshot {
    pub by_action: BTreeMap<String, u64>,
    /// Queue name → action → requests (SQS calls that name a queue).
    pub by_queue: BTreeMap<String, BTreeMap<String, u64>>,
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

    /// Requests on one queue, every action.
    pub fn on_queue(&self, queue: &str) -> u64 {
        self.by_queue.get(queue).map_or(0, |q| q.values().sum())
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &RequestSnapshot) -> RequestSnapshot {
        let minus = |now: &BTreeMap<String, u64>, then: Option<&BTreeMap<String, u64>>| -> BTreeMap<String, u64> {
            now.iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(then.and_then(|t| t.get(k)).copied().unwrap_or(0))))
                .filter(|(_, v)| *v > 0)
                .collect()
        };
        let by_queue = self
            .by_queue
            .iter()
            .map(|(q, counts)| (q.clone(), minus(counts, earlier.by_queue.get(q))))
            .filter(|(_, counts)| !counts.is_empty())
            .collect();
        RequestSnapshot { by_action: minus(&self.by_action, Some(&earlier.by_action)), by_queue }
    }
}

/// The queue a call names, kept from its input until it is sent.
#[derive(Debug, Clone)]
struct QueueOf(String);

impl Storable for QueueOf {
    type Storer = StoreReplace<Self>;
}

/// The name of the queue an SQS call names (the last segment of its URL).
fn queue_of(input: &Input) -> Option<String> {
    use aws_sdk_sqs::operation as op;
    let url = None
        .or_else(|| input.downcast_ref::<op::receive_message::ReceiveMessageInput>().map(|i| &i.queue_url))
        .or_else(|| input.downcast_ref::<op::send_message_batch::SendMessageBatchInput>().map(|i| &i.queue_url))
        .or_else(|| input.downcast_ref::<op::delete_message_batch::DeleteMessageBatchInput>().map(|i| &i.queue_url))
        .or_else(|| input.downcast_ref::<op::send_message::SendMessageInput>().map(|i| &i.queue_url))
        .or_else(|| input.downcast_ref::<op::delete_message::DeleteMessageInput>().map(|i| &i.queue_url))
        .or_else(|| {
            input.downcast_ref::<op::change_message_visibility::ChangeMessageVisibilityInput>().map(|i| &i.queue_url)
        })
        .or_else(|| {
            input
                .downcast_ref::<op::change_message_visibility_batch::ChangeMessageVisibilityBatchInput>()
                .map(|i| &i.queue_url)
        })
        .or_else(|| input.downcast_ref::<op::get_queue_attributes::GetQueueAttributesInput>().map(|i| &i.queue_url))?;
    url.as_deref().and_then(|u| u.rsplit('/').next()).map(str::to_string)
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

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(queue) = queue_of(context.input()) {
            cfg.interceptor_state().store_put(QueueOf(queue));
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let action = cfg.load::<Metadata>().map(Metadata::name).unwrap_or("unknown");
        self.counter.record_on(action, cfg.load::<QueueOf>().map(|q| q.0.as_str()));
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
        c.record_on("SendMessageBatch", Some("bench-inventory"));
        let delta = c.snapshot().since(&before);
        assert_eq!(delta.on_queue("bench-inventory"), 1);
        assert_eq!(delta.get("SendMessageBatch"), 1);
        assert_eq!(delta.get("ReceiveMessage"), 1);
        assert_eq!(delta.get("DeleteMessageBatch"), 1);
        assert_eq!(delta.total(), 3);
    }
}
