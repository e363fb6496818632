//! The AWS backend: [`SqsQueue`] (Amazon SQS) behind the `Queue` port and
//! [`DynamoStore`] (DynamoDB) behind the `SagaStore` port, through the
//! official AWS SDK for Rust. Provisioning lives in `sqsaga-runtime`, the
//! request-accounting benchmark in `sqsaga-bench`: this crate knows the
//! ports and the SDK, nothing of the services that use them.
//!
//! [`AwsBackend`] builds both adapters from one SDK configuration with
//! request counters attached. Everything here is an adapter: it knows the
//! ports and the SDK; the orchestrator and workers know only the ports.
//!
//! Tested against moto's server (`scripts/moto.sh`); the tests read its
//! endpoint from `AWS_TEST_ENDPOINT_URL`.

mod batch;
pub mod capacity;
mod dynamo;
mod error;
mod gate;
pub mod heartbeat;
pub mod item;
mod requests;
mod settings;
mod sqs;
mod wire;

use std::sync::Arc;

use aws_config::SdkConfig;
use sqsaga_queue::Queue;
use sqsaga_store::SagaStore;

pub use capacity::{CapacityMeter, CapacitySnapshot, Usage, with_purpose};
pub use dynamo::{DUE_INDEX, DynamoStore, END_INDEX, TableStatus};
pub use error::{AwsError, Failure, FailureKind};
pub use heartbeat::VisibilityHeartbeat;
pub use item::{INDEX_SHARDS, OUTBOX_GRACE_MS, TTL_ATTRIBUTE};
pub use requests::{DYNAMODB_REQUESTS_METRIC, RequestCounter, RequestSnapshot, SQS_REQUESTS_METRIC};
pub use settings::{
    AwsSettings, DEFAULT_BUSY_DELETE_WINDOW, DEFAULT_BUSY_FLUSH_WINDOW, DEFAULT_QUEUE_PREFIX, DEFAULT_RECEIVE_LINGER,
    DEFAULT_TABLE, SqsOptions, SqsPreset, retry_config, timeout_config,
};
pub use sqs::{DLQ_RETENTION, EnsuredQueue, SqsQueue, Sse};
pub use wire::MAX_MESSAGE_ATTRIBUTES;

/// Both adapters on one SDK configuration, with their request counters.
#[derive(Clone)]
pub struct AwsBackend {
    sqs: Arc<SqsQueue>,
    store: Arc<DynamoStore>,
    /// SQS requests by action (`sqsaga_sqs_requests_total`).
    sqs_requests: Arc<RequestCounter>,
    /// DynamoDB requests by action (`sqsaga_dynamodb_requests_total`).
    dynamodb_requests: Arc<RequestCounter>,
    /// DynamoDB capacity by purpose, when `settings.capacity` asked for it.
    capacity: Option<Arc<CapacityMeter>>,
    settings: AwsSettings,
}

impl AwsBackend {
    /// Loads the SDK configuration the AWS way (default credential chain,
    /// region chain, `AWS_ENDPOINT_URL`) and builds both adapters. Makes no
    /// request: an unreachable endpoint shows on first use, as an error.
    pub async fn connect(settings: AwsSettings) -> Result<AwsBackend, AwsError> {
        let sdk = settings.load_sdk_config().await;
        AwsBackend::from_sdk_config(&sdk, settings)
    }

    /// Both adapters on a given SDK configuration (tests pass static
    /// credentials and an emulator's endpoint this way).
    pub fn from_sdk_config(sdk: &SdkConfig, settings: AwsSettings) -> Result<AwsBackend, AwsError> {
        let Some(region) = sdk.region() else {
            return Err(AwsError::NoRegion);
        };
        if settings.table.is_empty() {
            return Err(AwsError::Settings("the DynamoDB table name is empty".to_string()));
        }
        let endpoint = |service: &str| match sdk.endpoint_url() {
            Some(url) => url.to_string(),
            None => format!("the {service} endpoint of {region}"),
        };
        let sqs_requests = Arc::new(RequestCounter::sqs());
        let sqs_config = aws_sdk_sqs::config::Builder::from(sdk).interceptor(sqs_requests.interceptor()).build();
        let sqs = SqsQueue::new(
            aws_sdk_sqs::Client::from_conf(sqs_config),
            &endpoint("SQS"),
            SqsOptions {
                prefix: settings.queue_prefix.clone(),
                queue_urls: settings.queue_urls.clone(),
                kms_key: settings.kms_key.clone(),
                flush_window: settings.flush_window,
                busy_flush_window: settings.busy_flush_window,
                busy_delete_window: settings.busy_delete_window,
                naive: settings.naive,
                max_in_flight: settings.max_batches_in_flight,
                receive_linger: settings.receive_linger,
            },
            sqs_requests.clone(),
        );
        let dynamodb_requests = Arc::new(RequestCounter::dynamodb());
        let mut dynamo_config =
            aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(dynamodb_requests.interceptor());
        let capacity = settings.capacity.then(|| Arc::new(CapacityMeter::new()));
        if let Some(meter) = &capacity {
            dynamo_config = dynamo_config.interceptor(meter.interceptor());
        }
        let dynamo_config = dynamo_config.build();
        let sqs = Arc::new(sqs);
        let store = DynamoStore::new(
            aws_sdk_dynamodb::Client::from_conf(dynamo_config),
            &endpoint("DynamoDB"),
            &settings.table,
            settings.retention,
        );
        Ok(AwsBackend { sqs, store: Arc::new(store), sqs_requests, dynamodb_requests, capacity, settings })
    }

    /// The queue port.
    pub fn queue(&self) -> Arc<dyn Queue> {
        self.sqs.clone()
    }

    /// The SQS adapter itself (attributes, `ensure_detailed`, the client).
    pub fn sqs(&self) -> Arc<SqsQueue> {
        self.sqs.clone()
    }

    /// The store port.
    pub fn store(&self) -> Arc<dyn SagaStore> {
        self.store.clone()
    }

    /// The DynamoDB adapter itself (`ensure_table`, the client).
    pub fn dynamo(&self) -> Arc<DynamoStore> {
        self.store.clone()
    }

    /// SQS requests by action.
    pub fn requests(&self) -> Arc<RequestCounter> {
        self.sqs_requests.clone()
    }

    /// DynamoDB requests by action.
    pub fn dynamodb_requests(&self) -> Arc<RequestCounter> {
        self.dynamodb_requests.clone()
    }

    /// DynamoDB capacity by purpose, if the settings asked for the meter.
    pub fn capacity(&self) -> Option<Arc<CapacityMeter>> {
        self.capacity.clone()
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// Deletes every queue whose name starts with the backend's queue
    /// prefix, and its table: for tests and the benchmark, which make their
    /// own (`bench<random>-...`). Never call it on a production prefix.
    pub async fn teardown(&self) -> Result<(), AwsError> {
        let prefix = &self.settings.queue_prefix;
        if prefix.is_empty() {
            return Err(AwsError::Settings("refusing to delete every queue: the queue prefix is empty".to_string()));
        }
        let client = self.sqs.client();
        let urls: Vec<String> = client
            .list_queues()
            .queue_name_prefix(prefix)
            .max_results(1000)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| AwsError::Settings(format!("cannot list queues with prefix {prefix}: {e}")))?;
        for url in urls {
            if let Err(e) = client.delete_queue().queue_url(&url).send().await {
                tracing::warn!(queue_url = %url, error = %e, "Cannot delete a queue.");
            }
        }
        if let Err(e) = self.store.client().delete_table().table_name(self.store.table()).send().await {
            tracing::warn!(table = %self.store.table(), error = %e, "Cannot delete the table.");
        }
        Ok(())
    }
}
