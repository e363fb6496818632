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

use sqsaga_aws::{AwsBackend, AwsError, Sse, TableStatus};

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

/// Deletes the backend's queues and table (see [`AwsBackend::teardown`]).
pub async fn teardown(backend: &AwsBackend) -> Result<(), AwsError> {
    backend.teardown().await
}
