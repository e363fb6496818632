//! `sqsaga provision`: creates, idempotently, what the AWS backend runs on —
//! the orchestrator queue and one queue per service named in the saga
//! definitions, each with its DLQ (`<name>-dlq`, kept 14 days), the redrive
//! policy on the queue and the redrive-allow policy on the DLQ, encryption
//! at rest (SSE-SQS, or SSE-KMS with the given key), and the DynamoDB table
//! with its indexes. Existing queues have their attributes brought in line;
//! the result says what was created and what was found.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE};
use sqsaga_queue::QueueSpec;

use crate::dynamo::TableStatus;
use crate::{AwsBackend, AwsError, Sse};

/// What to provision, beyond the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionOptions {
    /// Receives after which a message goes to its DLQ (the queues'
    /// RedrivePolicy says this plus one: see `SqsQueue`).
    pub max_receive_count: u32,
    /// KMS key for queues and table; `None`: SSE-SQS for queues and the
    /// AWS-managed DynamoDB key for the table.
    pub kms_key: Option<String>,
    /// Default visibility timeout of the queues.
    pub visibility_timeout: Duration,
    /// Retention of the (non-DLQ) queues.
    pub retention: Duration,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        let spec = QueueSpec::named("defaults");
        ProvisionOptions {
            max_receive_count: spec.max_receive_count,
            kms_key: None,
            visibility_timeout: spec.visibility_timeout,
            retention: spec.retention,
        }
    }
}

/// Kind of resource in a [`ProvisionLine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    Queue,
    Table,
}

/// One resource provisioned: "created queue sqsaga-inventory", "found table sqsaga-sagas".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvisionLine {
    /// False when it existed already.
    pub created: bool,
    pub kind: ResourceKind,
    /// Physical name (queue name with prefix, table name).
    pub name: String,
}

impl fmt::Display for ProvisionLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.created { "created" } else { "found" };
        let kind = match self.kind {
            ResourceKind::Queue => "queue",
            ResourceKind::Table => "table",
        };
        write!(f, "{verb} {kind} {}", self.name)
    }
}

/// The logical queues `definitions` need: the orchestrator's and one per service.
pub fn queue_names(definitions: &Definitions) -> Vec<String> {
    let mut names = vec![ORCHESTRATOR_QUEUE.to_string()];
    names.extend(definitions.services());
    names
}

/// Creates (or finds and brings in line) every queue and the table.
pub async fn provision(
    backend: &AwsBackend,
    definitions: &Definitions,
    options: &ProvisionOptions,
) -> Result<Vec<ProvisionLine>, AwsError> {
    let sse = match &options.kms_key {
        Some(key) => Sse::Kms(key.clone()),
        None => Sse::SqsManaged,
    };
    let sqs = backend.sqs();
    let mut lines = Vec::new();
    for name in queue_names(definitions) {
        let spec = QueueSpec {
            name,
            visibility_timeout: options.visibility_timeout,
            max_receive_count: options.max_receive_count,
            retention: options.retention,
            with_dlq: true,
        };
        for q in sqs.ensure_detailed(&spec, &sse).await? {
            lines.push(ProvisionLine { created: q.created, kind: ResourceKind::Queue, name: q.name });
        }
    }
    let store = backend.dynamo();
    let status = store.ensure_table(options.kms_key.as_deref()).await?;
    lines.push(ProvisionLine {
        created: status == TableStatus::Created,
        kind: ResourceKind::Table,
        name: store.table().to_string(),
    });
    Ok(lines)
}

/// Deletes every queue whose name starts with the backend's queue prefix,
/// and its table: for tests and the benchmark, which make their own
/// (`bench<random>-...`). Never call it on a production prefix.
pub async fn teardown(backend: &AwsBackend) -> Result<(), AwsError> {
    let prefix = &backend.settings().queue_prefix;
    if prefix.is_empty() {
        return Err(AwsError::Settings("refusing to delete every queue: the queue prefix is empty".to_string()));
    }
    let sqs = backend.sqs();
    let client = sqs.client();
    let mut next: Option<String> = None;
    let mut urls = Vec::new();
    loop {
        let out = client
            .list_queues()
            .queue_name_prefix(prefix)
            .max_results(1000)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| AwsError::Settings(format!("cannot list queues with prefix {prefix}: {e}")))?;
        urls.extend(out.queue_urls.unwrap_or_default());
        next = out.next_token;
        if next.is_none() {
            break;
        }
    }
    for url in urls {
        if let Err(e) = client.delete_queue().queue_url(&url).send().await {
            tracing::warn!(queue_url = %url, error = %e, "Cannot delete a queue.");
        }
    }
    let store = backend.dynamo();
    if let Err(e) = store.client().delete_table().table_name(store.table()).send().await {
        tracing::warn!(table = %store.table(), error = %e, "Cannot delete the table.");
    }
    Ok(())
}
