//! The configured backend: the embedded one (SQLite files in the data dir)
//! or AWS (SQS + DynamoDB), opened from the settings behind the two ports.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqsaga_aws::{AwsBackend, AwsSettings, RequestCounter};
use sqsaga_config::{Backend, Settings, SqsPreset};
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_orchestrator::ORCHESTRATOR_QUEUE;
use sqsaga_queue::{Queue, QueueSpec};
use sqsaga_store::SagaStore;

use crate::RuntimeError;

/// The AWS request counters (SQS, DynamoDB), when the backend is AWS.
pub type Requests = Option<(Arc<RequestCounter>, Arc<RequestCounter>)>;

/// The queue and store of the configured backend.
pub struct Opened {
    pub queue: Arc<dyn Queue>,
    pub store: Arc<dyn SagaStore>,
    /// The SQLite backend, when that is the one (commit counts for benchmarks).
    pub embedded: Option<EmbeddedBackend>,
    /// The AWS backend, when that is the one (provisioning, request counts).
    pub aws: Option<AwsBackend>,
}

impl Opened {
    /// The AWS request counters (`sqsaga_sqs_requests_total`,
    /// `sqsaga_dynamodb_requests_total`), when the backend is AWS.
    pub fn requests(&self) -> Requests {
        self.aws.as_ref().map(|aws| (aws.requests(), aws.dynamodb_requests()))
    }
}

/// Opens the backend the settings name. The AWS backend makes no request
/// yet: an unreachable endpoint shows on first use, as an error naming it.
pub async fn open_backend(settings: &Settings) -> Result<Opened, RuntimeError> {
    match settings.backend {
        Backend::Embedded => {
            std::fs::create_dir_all(&settings.data_dir).map_err(|source| RuntimeError::File {
                what: "cannot create the data dir",
                path: settings.data_dir.clone(),
                source,
            })?;
            let backend = EmbeddedBackend::open(&settings.data_dir, Sync::Full)?;
            Ok(Opened { queue: backend.queue(), store: backend.store(), embedded: Some(backend), aws: None })
        }
        Backend::Aws => {
            let backend = AwsBackend::connect(aws_settings(settings)).await?;
            Ok(Opened { queue: backend.queue(), store: backend.store(), embedded: None, aws: Some(backend) })
        }
    }
}

/// The AWS backend's settings from the process configuration. Explicit
/// queue URLs map onto logical names: `queue_url` is this process's input
/// queue (its service's, or the orchestrator's when no service is set),
/// `dlq_url` that queue's DLQ, `orchestrator_queue_url` the orchestrator's.
pub fn aws_settings(settings: &Settings) -> AwsSettings {
    let mut urls = BTreeMap::new();
    let input = settings.service.clone().unwrap_or_else(|| ORCHESTRATOR_QUEUE.to_string());
    if let Some(url) = &settings.queue_url {
        urls.insert(input.clone(), url.clone());
    }
    if let Some(url) = &settings.dlq_url {
        urls.insert(sqsaga_queue::dlq_name(&input), url.clone());
    }
    if let Some(url) = &settings.orchestrator_queue_url {
        urls.insert(ORCHESTRATOR_QUEUE.to_string(), url.clone());
    }
    AwsSettings {
        region: settings.region.clone(),
        endpoint_url: settings.endpoint_url.clone(),
        queue_prefix: settings.queue_prefix.clone(),
        queue_urls: urls,
        table: settings.table.clone(),
        retention: settings.retention,
        ..AwsSettings::default()
    }
    .with_preset(sqs_preset(settings.sqs_preset))
}

/// The adapter's preset of the configured name.
pub fn sqs_preset(preset: SqsPreset) -> sqsaga_aws::SqsPreset {
    match preset {
        SqsPreset::Latency => sqsaga_aws::SqsPreset::Latency,
        SqsPreset::Balanced => sqsaga_aws::SqsPreset::Balanced,
        SqsPreset::Cost => sqsaga_aws::SqsPreset::Cost,
    }
}

/// The spec of queue `name` under the configured visibility and redrive.
pub fn queue_spec(settings: &Settings, name: &str) -> QueueSpec {
    QueueSpec {
        visibility_timeout: settings.visibility_timeout,
        max_receive_count: settings.max_receive_count,
        ..QueueSpec::named(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqs_preset_setting_picks_the_adapter_windows() {
        let ms = std::time::Duration::from_millis;
        // (SQSAGA_SQS_PRESET, receive linger, busy send window, busy delete window)
        let cases: &[(Option<&str>, u64, u64, u64)] = &[
            (None, 1000, 1000, 2000),
            (Some("cost"), 1000, 1000, 2000),
            (Some("balanced"), 200, 200, 500),
            (Some("latency"), 0, 5, 5),
        ];
        for (preset, linger, send, delete) in cases {
            let mut env = BTreeMap::new();
            env.insert("SQSAGA_BACKEND".to_string(), "aws".to_string());
            if let Some(p) = preset {
                env.insert("SQSAGA_SQS_PRESET".to_string(), p.to_string());
            }
            let settings = Settings::resolve(&sqsaga_config::Sources::new(&env)).unwrap();
            let aws = aws_settings(&settings);
            assert_eq!(
                (aws.receive_linger, aws.busy_flush_window, aws.busy_delete_window),
                (ms(*linger), ms(*send), ms(*delete)),
                "{preset:?}"
            );
        }
    }
}
