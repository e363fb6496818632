//! How an AWS SDK error becomes one of ours: every failed call is first
//! classified into a [`Failure`] (unreachable, throttled, server fault,
//! client fault, with the service's error code), and the SQS and DynamoDB
//! adapters turn that into `QueueError` / `StoreError` with the cause named —
//! e.g. "cannot reach SQS at http://127.0.0.1:1: connection refused".
//!
//! The SDK has already retried throttling, 5xx and transient I/O errors with
//! backoff (see `AwsSettings::max_attempts`) by the time a [`Failure`] exists.

use std::error::Error as StdError;

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use sqsaga_queue::QueueError;
use sqsaga_store::StoreError;

/// Errors of the AWS backend outside the two ports (connecting, provisioning).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS region configured: set REGION or AWS_REGION (or `region` in the config file, or a profile region)")]
    NoRegion,
    #[error("invalid AWS settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What kind of failure a call ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable,
    /// The service asked us to slow down (after the SDK's own retries).
    Throttled,
    /// The service failed (5xx) or answered something unreadable.
    Server,
    /// The request was wrong: a 4xx with an error code, or it could not be built.
    Client,
}

/// A classified SDK error (public for the other DynamoDB adapter,
/// `sqsaga-dynamodb`, so both name causes the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// The service's error code (`QueueDoesNotExist`, `ConditionalCheckFailedException`), if any.
    pub code: Option<String>,
    /// A sentence naming the cause.
    pub message: String,
}

/// Error codes that mean "slow down", across SQS and DynamoDB.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "RequestThrottledException",
    "OverLimit",
    "AWS.SimpleQueueService.RequestThrottled",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "KMSThrottlingException",
];

impl Failure {
    /// Classifies `err` from a call to `service` ("SQS", "DynamoDB") at `endpoint`
    /// (a URL, or a description such as "the SQS endpoint of us-east-1").
    pub fn of<E>(err: &SdkError<E, HttpResponse>, service: &str, endpoint: &str) -> Failure
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        match err {
            SdkError::ServiceError(ctx) => {
                let e = ctx.err();
                let status = ctx.raw().status().as_u16();
                let code = e.code().map(str::to_string);
                let text = e.message().unwrap_or("no message").to_string();
                let kind = if code.as_deref().is_some_and(|c| THROTTLING_CODES.contains(&c)) || status == 429 {
                    FailureKind::Throttled
                } else if status >= 500 {
                    FailureKind::Server
                } else {
                    FailureKind::Client
                };
                let message = match &code {
                    Some(c) => format!("{service} answered {status} {c}: {text}"),
                    None => format!("{service} answered {status}: {text}"),
                };
                Failure { kind, code, message }
            }
            SdkError::TimeoutError(_) => Failure {
                kind: FailureKind::Unreachable,
                code: None,
                message: format!("cannot reach {service} at {endpoint}: timed out"),
            },
            SdkError::DispatchFailure(d) => {
                let cause = root_cause(err);
                if d.is_user() {
                    Failure {
                        kind: FailureKind::Client,
                        code: None,
                        message: format!("cannot send the request to {service} at {endpoint}: {cause}"),
                    }
                } else {
                    Failure {
                        kind: FailureKind::Unreachable,
                        code: None,
                        message: format!("cannot reach {service} at {endpoint}: {cause}"),
                    }
                }
            }
            SdkError::ResponseError(_) => Failure {
                kind: FailureKind::Server,
                code: None,
                message: format!("{service} at {endpoint} sent an unreadable response: {}", root_cause(err)),
            },
            SdkError::ConstructionFailure(_) => Failure {
                kind: FailureKind::Client,
                code: None,
                message: format!("cannot build the {service} request: {}", chain(err)),
            },
            // `SdkError` is non-exhaustive.
            _ => Failure {
                kind: FailureKind::Server,
                code: None,
                message: format!("{service} call failed: {}", chain(err)),
            },
        }
    }

    /// Whether the service's error code is one of `codes`.
    pub fn is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }

    /// The generic mapping onto the queue port; callers handle the codes
    /// that mean something specific (no such queue, stale receipt) first.
    pub fn into_queue(self) -> QueueError {
        match self.kind {
            FailureKind::Unreachable => QueueError::Unreachable(self.message),
            FailureKind::Throttled => QueueError::Throttled(self.message),
            FailureKind::Server => QueueError::Backend(self.message),
            FailureKind::Client => QueueError::Invalid(self.message),
        }
    }

    /// The mapping onto the store port. A client fault (a malformed request,
    /// an item over 400 KB, a missing table) is reported as `Backend`: the
    /// port has no "invalid" case, and the message names the cause.
    pub fn into_store(self) -> StoreError {
        match self.kind {
            FailureKind::Unreachable => StoreError::Unreachable(self.message),
            FailureKind::Throttled => StoreError::Throttled(self.message),
            FailureKind::Server | FailureKind::Client => StoreError::Backend(self.message),
        }
    }
}

/// The innermost cause, as an operator would say it ("connection refused").
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current: &(dyn StdError + 'static) = err;
    let mut io_kind = None;
    while let Some(next) = current.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        current = next;
    }
    if let Some(io) = current.downcast_ref::<std::io::Error>() {
        io_kind = Some(io.kind());
    }
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        Some(std::io::ErrorKind::ConnectionReset) => "connection reset".to_string(),
        Some(std::io::ErrorKind::TimedOut) => "timed out".to_string(),
        Some(std::io::ErrorKind::AddrNotAvailable) => "address not available".to_string(),
        _ => {
            let text = current.to_string();
            if text.is_empty() { chain(err) } else { text }
        }
    }
}

/// Every message of the error chain, joined: for errors whose innermost
/// cause alone would say too little.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut current = err.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
