//! The orchestrator's optional SQS endpoint (`SQSAGA_SQS_ENDPOINT_ADDR`):
//! the embedded backend's queues served with the SQS API, for participants
//! in other languages. Settings in, a running server out; what it serves
//! and verifies is `sqsaga-sqs-endpoint`'s business.

use std::sync::Arc;

use sqsaga_config::{Backend, Settings};
use sqsaga_core::clock::SystemClock;
use sqsaga_queue::Queue;
use sqsaga_sqs_endpoint::{Credentials, EndpointError, EndpointOptions};
use tokio::task::JoinHandle;

use crate::RuntimeError;
use crate::shutdown::CancellationToken;

/// The credentials the settings configure, if any.
pub fn credentials(settings: &Settings) -> Option<Credentials> {
    Some(Credentials {
        access_key_id: settings.sqs_endpoint_access_key_id.clone()?,
        secret_access_key: settings.sqs_endpoint_secret_access_key.as_ref().map(|s| s.expose().to_string()),
    })
}

/// Starts the endpoint on `queue` when `sqs_endpoint_addr` is set; refuses
/// it on the AWS backend (participants use SQS itself there).
pub async fn serve(
    settings: &Settings,
    queue: Arc<dyn Queue>,
    shutdown: CancellationToken,
) -> Result<Option<JoinHandle<Result<(), EndpointError>>>, RuntimeError> {
    let Some(addr) = settings.sqs_endpoint_addr else {
        return Ok(None);
    };
    if settings.backend != Backend::Embedded {
        return Err(RuntimeError::config(format!(
            "SQSAGA_SQS_ENDPOINT_ADDR={addr}: the SQS endpoint serves the embedded backend's queues; \
             with SQSAGA_BACKEND={}, participants use SQS itself",
            settings.backend.as_str()
        )));
    }
    let credentials = credentials(settings);
    let listener = sqsaga_sqs_endpoint::bind(addr, credentials.as_ref()).await?;
    let options = EndpointOptions { credentials, clock: Arc::new(SystemClock) };
    let (_, task) = sqsaga_sqs_endpoint::serve_on(listener, queue, options, shutdown)?;
    Ok(Some(task))
}
