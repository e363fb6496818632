//! [`SqsQueue`]: the `Queue` port on Amazon SQS through the official SDK.
//!
//! - **Names.** A logical queue name (`inventory`) maps to an explicit URL
//!   from the settings, else to `GetQueueUrl("<prefix>inventory")`; the
//!   answer is cached. The DLQ of `q` is `q-dlq`, like every adapter's.
//! - **Batching.** Sends and deletes go through a batcher task per queue
//!   (see `batch.rs`): it takes the first entry, waits the flush window
//!   (5 ms) for more — on a busy queue (steady recent traffic), up to the
//!   busy window (1 s for sends, 2 s for deletes) — and
//!   sends up to 10 entries — from any number of concurrent callers — as
//!   one `SendMessageBatch` / `DeleteMessageBatch`. Failed entries the
//!   service is at fault for are retried alone; entries the sender is at
//!   fault for fail their caller only. `naive` mode turns this off (one
//!   request per message, no gate) for the benchmark's comparison.
//! - **Receive.** Long polls (`Receive::wait`, ≤ 20 s), up to 10 messages,
//!   all message attributes plus `ApproximateReceiveCount` and `SentTimestamp`.
//!   The long polls of one queue take turns at a gate (see `gate.rs`): one
//!   at a time unless the queue is backlogged, and after a short receive the
//!   next one lingers (1 s), so pollers do not split a queue's messages
//!   into many small receives, and idle pollers share one long poll.
//! - **Latency.** The busy windows and the linger trade latency for
//!   requests (AWS bills per request): on a busy, not backlogged queue a
//!   message may wait up to the busy send window before it is sent and up
//!   to the linger before it is received. An idle queue's lone message waits
//!   neither (5 ms flush window; a long poll is already waiting for it).
//! - **Poison messages.** SQS's own redrive moves a message to the DLQ
//!   without saying why, and the port promises a `sqsaga-dlq-reason`. So the
//!   queue's RedrivePolicy carries `maxReceiveCount = N + 1` for sqsaga's
//!   limit N, and `receive` dead-letters (with the reason) any message whose
//!   receive count passed N — the (N+1)-th receive, which SQS still delivers.
//!   Should the process die between that receive and the move, SQS's redrive
//!   moves the message at the (N+2)-th receive: a safety net, never the
//!   normal path. (With the policy at exactly N, SQS would move the message
//!   itself before we could see it, reason-less.)
//! - **Errors.** The SDK retries throttling, 5xx and I/O errors with backoff;
//!   what is left maps to `QueueError` with the cause named.
//!
//! This file knows the `Queue` port and the SQS SDK, nothing of sagas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};
use sqsaga_queue::{
    Depth, MAX_BATCH, MAX_WAIT, OutgoingMessage, Queue, QueueError, QueueSpec, Receive, ReceivedMessage, dlq_name,
};
use tokio::sync::{mpsc, oneshot};

use crate::batch::{self, Batcher, EntryError, Pending};
use crate::error::Failure;
use crate::gate::ReceiveGate;
use crate::requests::RequestCounter;
use crate::settings::SqsOptions;
use crate::wire::{Ctx, NO_SUCH_QUEUE, check_message, delay_seconds, message_attributes, queue_error};

/// Retention of every DLQ: the SQS maximum, 14 days, so an operator has two
/// weeks to look at a poison message before it is gone.
pub const DLQ_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);
/// SQS: queue names are at most 80 characters.
const MAX_QUEUE_NAME: usize = 80;
/// SQS: visibility timeouts are at most 12 hours.
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Error codes of a CreateQueue whose name exists with other attributes.
const QUEUE_EXISTS: &[&str] = &["QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists"];

/// Server-side encryption of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// SQS-managed keys (SSE-SQS).
    SqsManaged,
    /// A customer KMS key (id, alias or ARN).
    Kms(String),
}

/// One queue `ensure_detailed` looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnsuredQueue {
    /// Physical queue name.
    pub name: String,
    pub url: String,
    /// False when it existed already (its attributes were brought in line).
    pub created: bool,
}

/// The `Queue` port on Amazon SQS. Cheap to clone.
#[derive(Clone)]
pub struct SqsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    /// Client and endpoint, shared with the batcher tasks.
    ctx: Ctx,
    options: SqsOptions,
    /// Logical name → queue URL, filled on first use.
    urls: RwLock<HashMap<String, String>>,
    /// Logical name → sqsaga's maxReceiveCount (the redrive policy's minus
    /// one, see the module doc); `None` = no redrive. Filled on first receive.
    limits: RwLock<HashMap<String, Option<u32>>>,
    /// Send batcher per queue URL.
    senders: Mutex<HashMap<String, Batcher<OutgoingMessage>>>,
    /// Delete batcher per queue URL.
    deleters: Mutex<HashMap<String, Batcher<String>>>,
    /// Receive gate per queue URL.
    gates: Mutex<HashMap<String, Arc<ReceiveGate>>>,
    /// Requests by action (fed by the client's interceptor).
    requests: Arc<RequestCounter>,
}

impl SqsQueue {
    /// A queue adapter on `client`. `endpoint` only names where requests go
    /// in error messages; `requests` is the counter the client's interceptor feeds.
    pub(crate) fn new(client: Client, endpoint: &str, options: SqsOptions, requests: Arc<RequestCounter>) -> Self {
        let urls = options.queue_urls.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        SqsQueue {
            inner: Arc::new(Inner {
                ctx: Ctx { client, endpoint: Arc::from(endpoint) },
                options,
                urls: RwLock::new(urls),
                limits: RwLock::new(HashMap::new()),
                senders: Mutex::new(HashMap::new()),
                deleters: Mutex::new(HashMap::new()),
                gates: Mutex::new(HashMap::new()),
                requests,
            }),
        }
    }

    /// The SDK client, for what the port does not cover.
    pub fn client(&self) -> &Client {
        &self.inner.ctx.client
    }

    /// Requests sent so far, by action.
    pub fn requests(&self) -> Arc<RequestCounter> {
        self.inner.requests.clone()
    }

    pub fn options(&self) -> &SqsOptions {
        &self.inner.options
    }

    /// The physical SQS name of logical queue `queue`.
    pub fn physical_name(&self, queue: &str) -> String {
        format!("{}{queue}", self.inner.options.prefix)
    }

    /// The URL of logical queue `queue`: explicit, cached, or looked up.
    pub async fn queue_url(&self, queue: &str) -> Result<String, QueueError> {
        if let Some(url) = read(&self.inner.urls).get(queue) {
            return Ok(url.clone());
        }
        let name = self.checked_name(queue)?;
        let url = self.lookup_url(&name).await.map_err(|f| queue_error(f, queue))?;
        match url {
            Some(url) => {
                write(&self.inner.urls).insert(queue.to_string(), url.clone());
                Ok(url)
            }
            None => Err(QueueError::NoSuchQueue(queue.to_string())),
        }
    }

    /// `GetQueueUrl` of a physical name; `Ok(None)` when it does not exist.
    async fn lookup_url(&self, name: &str) -> Result<Option<String>, Failure> {
        let ctx = &self.inner.ctx;
        match ctx.client.get_queue_url().queue_name(name).send().await {
            Ok(out) => Ok(out.queue_url),
            Err(e) => {
                let f = ctx.failure(&e);
                if f.is(NO_SUCH_QUEUE) { Ok(None) } else { Err(f) }
            }
        }
    }

    /// `<prefix><queue>`, checked against SQS's naming rules.
    fn checked_name(&self, queue: &str) -> Result<String, QueueError> {
        let name = self.physical_name(queue);
        if name.is_empty()
            || name.len() > MAX_QUEUE_NAME
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(QueueError::Invalid(format!(
                "SQS queue name `{name}` (prefix `{}` + queue `{queue}`) must be 1 to {MAX_QUEUE_NAME} characters of \
                 letters, digits, `-` and `_`",
                self.inner.options.prefix
            )));
        }
        Ok(name)
    }

    /// Creates `spec`'s queue and its DLQ if missing, or brings an existing
    /// one's attributes in line: visibility, retention, 1 MiB messages,
    /// encryption, RedrivePolicy on the source (maxReceiveCount + 1, see the
    /// module doc) and RedriveAllowPolicy on the DLQ (only its source may
    /// use it). Returns what was created or found, DLQ first.
    pub async fn ensure_detailed(&self, spec: &QueueSpec, sse: &Sse) -> Result<Vec<EnsuredQueue>, QueueError> {
        let mut ensured = Vec::new();
        let source_name = self.checked_name(&spec.name)?;
        let dlq = if spec.with_dlq {
            let dlq_logical = dlq_name(&spec.name);
            let name = self.checked_name(&dlq_logical)?;
            let mut attrs = sse_attributes(sse);
            attrs.insert(QueueAttributeName::MessageRetentionPeriod, DLQ_RETENTION.as_secs().to_string());
            attrs.insert(QueueAttributeName::MaximumMessageSize, sqsaga_queue::MAX_MESSAGE_BYTES.to_string());
            let q = self.create_or_update(&name, attrs, &dlq_logical).await?;
            let arn = self.queue_arn(&q.url, &dlq_logical).await?;
            write(&self.inner.urls).insert(dlq_logical.clone(), q.url.clone());
            ensured.push(q);
            Some((dlq_logical, arn))
        } else {
            None
        };

        let mut attrs = sse_attributes(sse);
        attrs.insert(
            QueueAttributeName::VisibilityTimeout,
            spec.visibility_timeout.as_secs().min(MAX_VISIBILITY_SECS).to_string(),
        );
        attrs.insert(
            QueueAttributeName::MessageRetentionPeriod,
            spec.retention.as_secs().clamp(60, 1_209_600).to_string(),
        );
        attrs.insert(QueueAttributeName::MaximumMessageSize, sqsaga_queue::MAX_MESSAGE_BYTES.to_string());
        let limit = match &dlq {
            Some((_, arn)) if spec.max_receive_count > 0 => {
                let policy = json!({
                    "deadLetterTargetArn": arn,
                    "maxReceiveCount": spec.max_receive_count.saturating_add(1),
                });
                attrs.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
                Some(spec.max_receive_count)
            }
            _ => None,
        };
        let source = self.create_or_update(&source_name, attrs, &spec.name).await?;
        if limit.is_none() && !source.created {
            // An existing queue may carry a redrive policy we no longer want.
            self.set_attributes(
                &source.url,
                HashMap::from([(QueueAttributeName::RedrivePolicy, String::new())]),
                &spec.name,
            )
            .await?;
        }
        write(&self.inner.urls).insert(spec.name.clone(), source.url.clone());
        write(&self.inner.limits).insert(spec.name.clone(), limit);

        if let Some((dlq_logical, _)) = &dlq {
            let source_arn = self.queue_arn(&source.url, &spec.name).await?;
            let allow = json!({ "redrivePermission": "byQueue", "sourceQueueArns": [source_arn] });
            let dlq_url = self.queue_url(dlq_logical).await?;
            self.set_attributes(
                &dlq_url,
                HashMap::from([(QueueAttributeName::RedriveAllowPolicy, allow.to_string())]),
                dlq_logical,
            )
            .await?;
        }
        ensured.push(source);
        Ok(ensured)
    }

    /// Creates a queue with `attrs`, or sets them on the existing one.
    async fn create_or_update(
        &self,
        name: &str,
        attrs: HashMap<QueueAttributeName, String>,
        logical: &str,
    ) -> Result<EnsuredQueue, QueueError> {
        let ctx = &self.inner.ctx;
        if let Some(url) = self.lookup_url(name).await.map_err(|f| queue_error(f, logical))? {
            self.set_attributes(&url, attrs, logical).await?;
            return Ok(EnsuredQueue { name: name.to_string(), url, created: false });
        }
        match ctx.client.create_queue().queue_name(name).set_attributes(Some(attrs.clone())).send().await {
            Ok(out) => match out.queue_url {
                Some(url) => Ok(EnsuredQueue { name: name.to_string(), url, created: true }),
                None => Err(QueueError::Backend(format!("CreateQueue of {name} returned no queue URL"))),
            },
            Err(e) => {
                let f = ctx.failure(&e);
                if !f.is(QUEUE_EXISTS) {
                    return Err(queue_error(f, logical));
                }
                // Created meanwhile by someone else, with other attributes.
                let url = self
                    .lookup_url(name)
                    .await
                    .map_err(|f| queue_error(f, logical))?
                    .ok_or_else(|| QueueError::NoSuchQueue(logical.to_string()))?;
                self.set_attributes(&url, attrs, logical).await?;
                Ok(EnsuredQueue { name: name.to_string(), url, created: false })
            }
        }
    }

    async fn set_attributes(
        &self,
        url: &str,
        attrs: HashMap<QueueAttributeName, String>,
        logical: &str,
    ) -> Result<(), QueueError> {
        let ctx = &self.inner.ctx;
        ctx.client
            .set_queue_attributes()
            .queue_url(url)
            .set_attributes(Some(attrs))
            .send()
            .await
            .map_err(|e| queue_error(ctx.failure(&e), logical))?;
        Ok(())
    }

    /// Queue attributes by name, as SQS reports them.
    pub async fn attributes(
        &self,
        queue: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>, QueueError> {
        let url = self.queue_url(queue).await?;
        self.attributes_of(&url, names, queue).await
    }

    async fn attributes_of(
        &self,
        url: &str,
        names: &[QueueAttributeName],
        logical: &str,
    ) -> Result<HashMap<QueueAttributeName, String>, QueueError> {
        let ctx = &self.inner.ctx;
        let out = ctx
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| queue_error(ctx.failure(&e), logical))?;
        Ok(out.attributes.unwrap_or_default())
    }

    async fn queue_arn(&self, url: &str, logical: &str) -> Result<String, QueueError> {
        let attrs = self.attributes_of(url, &[QueueAttributeName::QueueArn], logical).await?;
        attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .ok_or_else(|| QueueError::Backend(format!("SQS reported no QueueArn for {url}")))
    }

    /// sqsaga's maxReceiveCount of `queue` (`None`: no redrive), from the
    /// cache or the queue's RedrivePolicy.
    async fn limit(&self, queue: &str, url: &str) -> Result<Option<u32>, QueueError> {
        if let Some(limit) = read(&self.inner.limits).get(queue) {
            return Ok(*limit);
        }
        let attrs = self.attributes_of(url, &[QueueAttributeName::RedrivePolicy], queue).await?;
        let limit = attrs.get(&QueueAttributeName::RedrivePolicy).and_then(|p| limit_from_policy(p));
        write(&self.inner.limits).insert(queue.to_string(), limit);
        Ok(limit)
    }

    /// The batcher of `url` in `map`, started (again) if missing or stopped.
    fn batcher<T: batch::Entry>(&self, map: &Mutex<HashMap<String, Batcher<T>>>, url: &str, queue: &str) -> Batcher<T> {
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get(url).filter(|b| !b.is_closed()) {
            return b.clone();
        }
        let b = Batcher::start(
            self.inner.ctx.clone(),
            url.to_string(),
            queue.to_string(),
            batch::Window { base: self.inner.options.flush_window, busy: T::busy_window(&self.inner.options) },
            self.inner.options.max_in_flight,
        );
        map.insert(url.to_string(), b.clone());
        b
    }

    /// The receive gate of `url`, created on first use.
    fn gate(&self, url: &str) -> Arc<ReceiveGate> {
        let mut map = self.inner.gates.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(url.to_string())
            .or_insert_with(|| Arc::new(ReceiveGate::new(self.inner.options.receive_linger)))
            .clone()
    }

    /// Hands `items` to the batcher and waits for each one's result.
    async fn submit<T: batch::Entry>(
        &self,
        map: &Mutex<HashMap<String, Batcher<T>>>,
        url: &str,
        queue: &str,
        items: Vec<T>,
    ) -> Vec<Result<(), EntryError>> {
        let mut waiting: Vec<oneshot::Receiver<Result<(), EntryError>>> = Vec::with_capacity(items.len());
        let mut batcher = self.batcher(map, url, queue);
        for item in items {
            let (reply, rx) = oneshot::channel();
            let mut pending = Pending { item, reply, at: tokio::time::Instant::now() };
            // A batcher whose runtime is gone has a closed channel: start a new one.
            for _ in 0..2 {
                match batcher.send(pending) {
                    Ok(()) => break,
                    Err(mpsc::error::SendError(back)) => {
                        pending = back;
                        batcher = self.batcher(map, url, queue);
                    }
                }
            }
            waiting.push(rx);
        }
        let mut results = Vec::with_capacity(waiting.len());
        for rx in waiting {
            results.push(rx.await.unwrap_or_else(|_| {
                Err(EntryError::Request(QueueError::Backend(format!("the SQS batcher of `{queue}` stopped"))))
            }));
        }
        results
    }

    async fn send_naive(&self, url: &str, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        let ctx = &self.inner.ctx;
        for m in messages {
            ctx.client
                .send_message()
                .queue_url(url)
                .message_body(m.body.clone())
                .set_message_attributes(Some(message_attributes(&m)?))
                .delay_seconds(delay_seconds(&m))
                .send()
                .await
                .map_err(|e| queue_error(ctx.failure(&e), queue))?;
        }
        Ok(())
    }

    async fn delete_naive(&self, url: &str, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        let ctx = &self.inner.ctx;
        let mut failed = Vec::new();
        for r in receipts {
            if let Err(e) = ctx.client.delete_message().queue_url(url).receipt_handle(r).send().await {
                match queue_error(ctx.failure(&e), queue) {
                    e @ (QueueError::StaleReceipt(_) | QueueError::Invalid(_)) => failed.push(e),
                    e => return Err(e),
                }
            }
        }
        Ok(failed)
    }

    /// Moves messages received more than `limit` times to the DLQ with the
    /// reason; returns the others.
    async fn dead_letter_exhausted(
        &self,
        queue: &str,
        limit: u32,
        messages: Vec<ReceivedMessage>,
    ) -> Vec<ReceivedMessage> {
        let mut keep = Vec::with_capacity(messages.len());
        for m in messages {
            if m.receive_count <= limit {
                keep.push(m);
                continue;
            }
            let reason = format!("received {} times, more than maxReceiveCount {limit}", m.receive_count);
            match self.dead_letter(queue, &m, &reason).await {
                Ok(()) => {
                    tracing::warn!(queue, message_id = %m.message_id, reason = %reason, "Message moved to the dead-letter queue.")
                }
                Err(e) => tracing::warn!(
                    queue,
                    message_id = %m.message_id,
                    error = %e,
                    "Cannot dead-letter an exhausted message; it comes back after its visibility timeout (SQS's redrive policy is the safety net)."
                ),
            }
        }
        keep
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn ensure(&self, spec: &QueueSpec) -> Result<(), QueueError> {
        let sse = match &self.inner.options.kms_key {
            Some(k) => Sse::Kms(k.clone()),
            None => Sse::SqsManaged,
        };
        self.ensure_detailed(spec, &sse).await.map(|_| ())
    }

    async fn send_batch(&self, queue: &str, messages: Vec<OutgoingMessage>) -> Result<(), QueueError> {
        if messages.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(messages.len()));
        }
        for m in &messages {
            check_message(m)?;
        }
        if messages.is_empty() {
            return Ok(());
        }
        let url = self.queue_url(queue).await?;
        if self.inner.options.naive {
            return self.send_naive(&url, queue, messages).await;
        }
        let results = self.submit(&self.inner.senders, &url, queue, messages).await;
        match results.into_iter().find_map(Result::err) {
            Some(EntryError::Entry(e) | EntryError::Request(e)) => Err(e),
            None => Ok(()),
        }
    }

    async fn receive(&self, queue: &str, r: Receive) -> Result<Vec<ReceivedMessage>, QueueError> {
        if r.max == 0 || r.max > MAX_BATCH {
            return Err(QueueError::Invalid(format!("receive of {} messages: SQS takes 1 to {MAX_BATCH}", r.max)));
        }
        let url = self.queue_url(queue).await?;
        let limit = self.limit(queue, &url).await?;
        let wait = r.wait.min(MAX_WAIT);
        // Long polls take turns at the queue's gate (gate.rs); short polls and naive mode do not.
        let gate = (!wait.is_zero() && !self.inner.options.naive).then(|| self.gate(&url));
        let deadline = tokio::time::Instant::now() + wait;
        let admission = match &gate {
            Some(gate) => match gate.admit(deadline).await {
                Some(a) => Some(a),
                // The wait ended while other pollers covered the queue: empty, as a long poll would be.
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        // What is left of the wait after the gate; SQS takes whole seconds:
        // round a sub-second wait up rather than to a short poll.
        let wait =
            if admission.is_some() { deadline.saturating_duration_since(tokio::time::Instant::now()) } else { wait };
        let wait_secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(u64::from(admission.is_some()));
        let ctx = &self.inner.ctx;
        let mut request = ctx
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(r.max as i32)
            .wait_time_seconds(wait_secs as i32)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp);
        if let Some(v) = r.visibility {
            request = request.visibility_timeout(v.as_secs().min(MAX_VISIBILITY_SECS) as i32);
        }
        let out = request.send().await.map_err(|e| queue_error(ctx.failure(&e), queue))?;
        let messages: Vec<ReceivedMessage> = out.messages.unwrap_or_default().into_iter().filter_map(convert).collect();
        if let Some(admission) = admission {
            admission.finish(messages.len(), r.max);
        }
        Ok(match limit {
            Some(limit) => self.dead_letter_exhausted(queue, limit, messages).await,
            None => messages,
        })
    }

    async fn delete_batch(&self, queue: &str, receipts: &[String]) -> Result<Vec<QueueError>, QueueError> {
        if receipts.len() > MAX_BATCH {
            return Err(QueueError::BatchTooLarge(receipts.len()));
        }
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let url = self.queue_url(queue).await?;
        if self.inner.options.naive {
            return self.delete_naive(&url, queue, receipts).await;
        }
        let results = self.submit(&self.inner.deleters, &url, queue, receipts.to_vec()).await;
        let mut failed = Vec::new();
        for r in results {
            match r {
                Ok(()) => {}
                Err(EntryError::Entry(e)) => failed.push(e),
                Err(EntryError::Request(e)) => return Err(e),
            }
        }
        Ok(failed)
    }

    async fn change_visibility(&self, queue: &str, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        let url = self.queue_url(queue).await?;
        let ctx = &self.inner.ctx;
        let result = ctx
            .client
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(receipt)
            .visibility_timeout(timeout.as_secs().min(MAX_VISIBILITY_SECS) as i32)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = ctx.failure(&e);
                // SQS says InvalidParameterValue "... ReceiptHandle ... is invalid" for an expired handle.
                if f.is(&["InvalidParameterValue"]) && f.message.contains("eceipt") {
                    return Err(QueueError::StaleReceipt(f.message));
                }
                Err(queue_error(f, queue))
            }
        }
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        let attrs = self
            .attributes(
                queue,
                &[
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                ],
            )
            .await?;
        let get = |name: QueueAttributeName| attrs.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(Depth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

/// The encryption attributes of a queue.
fn sse_attributes(sse: &Sse) -> HashMap<QueueAttributeName, String> {
    match sse {
        Sse::SqsManaged => HashMap::from([(QueueAttributeName::SqsManagedSseEnabled, "true".to_string())]),
        Sse::Kms(key) => HashMap::from([
            (QueueAttributeName::KmsMasterKeyId, key.clone()),
            (QueueAttributeName::SqsManagedSseEnabled, "false".to_string()),
        ]),
    }
}

/// sqsaga's limit from a RedrivePolicy: its maxReceiveCount minus the one
/// receive reserved for our own dead-lettering (module doc). A policy of 1
/// leaves nothing for us: SQS's redrive alone handles such a queue.
fn limit_from_policy(policy: &str) -> Option<u32> {
    let v: Value = serde_json::from_str(policy).ok()?;
    let n = match v.get("maxReceiveCount")? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let n = u32::try_from(n).ok()?;
    (n >= 2).then(|| n - 1)
}

/// An SQS message as the port's; messages without id, receipt or body
/// (never seen in practice) are skipped.
fn convert(m: aws_sdk_sqs::types::Message) -> Option<ReceivedMessage> {
    let system = m.attributes.unwrap_or_default();
    let number = |name: MessageSystemAttributeName| system.get(&name).and_then(|v| v.parse::<u64>().ok());
    let attributes =
        m.message_attributes.unwrap_or_default().into_iter().filter_map(|(k, v)| Some((k, v.string_value?))).collect();
    Some(ReceivedMessage {
        message_id: m.message_id?,
        receipt_handle: m.receipt_handle?,
        body: m.body.unwrap_or_default(),
        attributes,
        receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        sent_at: number(MessageSystemAttributeName::SentTimestamp).unwrap_or(0),
    })
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_the_redrive_policy_minus_one() {
        assert_eq!(limit_from_policy(r#"{"deadLetterTargetArn":"arn","maxReceiveCount":6}"#), Some(5));
        assert_eq!(limit_from_policy(r#"{"deadLetterTargetArn":"arn","maxReceiveCount":"3"}"#), Some(2));
        assert_eq!(limit_from_policy(r#"{"maxReceiveCount":1}"#), None);
        assert_eq!(limit_from_policy("not json"), None);
    }

    #[test]
    fn sqs_attribute_rules_are_checked_before_sending() {
        let ok = OutgoingMessage::new("x").with_attribute("sqsaga-dlq-reason", "r").with_attribute("trace.id", "t");
        assert!(check_message(&ok).is_ok());
        let mut eleven = OutgoingMessage::new("x");
        for i in 0..11 {
            eleven = eleven.with_attribute(&format!("a{i}"), "v");
        }
        assert!(matches!(check_message(&eleven), Err(QueueError::Invalid(m)) if m.contains("at most 10")));
        let reserved = OutgoingMessage::new("x").with_attribute("AWS.trace", "v");
        assert!(matches!(check_message(&reserved), Err(QueueError::Invalid(_))));
        let empty = OutgoingMessage::new("x").with_attribute("k", "");
        assert!(matches!(check_message(&empty), Err(QueueError::Invalid(m)) if m.contains("empty")));
        let big = OutgoingMessage::new("x".repeat(sqsaga_queue::MAX_MESSAGE_BYTES + 1));
        assert!(matches!(check_message(&big), Err(QueueError::TooLarge { .. })));
    }
}
