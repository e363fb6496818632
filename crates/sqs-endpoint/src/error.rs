//! SQS errors as the AWS JSON 1.0 protocol carries them: HTTP 400 (403 for
//! authentication, 500 for the backend), a body
//! `{"__type": "com.amazonaws.sqs#<Shape>", "message": "..."}` and the
//! `x-amzn-query-error: <code>;Sender` header. SQS is "query compatible":
//! the SDKs take the error code from that header when it is there (the Rust
//! SDK matches `AWS.SimpleQueueService.NonExistentQueue` to
//! `QueueDoesNotExist`, boto3 raises `QueueDoesNotExist` for it), so both
//! are sent, as SQS does.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sqsaga_queue::QueueError;

/// Content type of every request and response of the protocol.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// One error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsError {
    /// Error shape name (`QueueDoesNotExist`), the `__type` after `#`.
    pub shape: &'static str,
    /// The query-protocol code (`AWS.SimpleQueueService.NonExistentQueue`).
    pub code: &'static str,
    pub status: StatusCode,
    /// Names the cause.
    pub message: String,
}

macro_rules! errors {
    ($($fn:ident => $shape:literal, $code:literal, $status:ident;)*) => {
        impl SqsError {
            $(
                #[doc = concat!("`", $shape, "` (`", $code, "`).")]
                pub fn $fn(message: impl Into<String>) -> SqsError {
                    SqsError { shape: $shape, code: $code, status: StatusCode::$status, message: message.into() }
                }
            )*
        }
    };
}

errors! {
    queue_does_not_exist => "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", BAD_REQUEST;
    too_many_entries => "TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", BAD_REQUEST;
    empty_batch => "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", BAD_REQUEST;
    ids_not_distinct => "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", BAD_REQUEST;
    invalid_batch_entry_id => "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", BAD_REQUEST;
    batch_too_long => "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", BAD_REQUEST;
    unsupported_operation => "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", BAD_REQUEST;
    receipt_handle_is_invalid => "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", BAD_REQUEST;
    message_not_inflight => "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight", BAD_REQUEST;
    invalid_attribute_name => "InvalidAttributeName", "InvalidAttributeName", BAD_REQUEST;
    invalid_message_contents => "InvalidMessageContents", "InvalidMessageContents", BAD_REQUEST;
    invalid_address => "InvalidAddress", "InvalidAddress", BAD_REQUEST;
    invalid_parameter_value => "InvalidParameterValue", "InvalidParameterValue", BAD_REQUEST;
    missing_parameter => "MissingParameter", "MissingParameter", BAD_REQUEST;
    serialization => "SerializationException", "SerializationException", BAD_REQUEST;
    unknown_operation => "UnknownOperationException", "UnknownOperationException", BAD_REQUEST;
    throttled => "RequestThrottled", "RequestThrottled", BAD_REQUEST;
    missing_authentication => "MissingAuthenticationToken", "MissingAuthenticationToken", FORBIDDEN;
    incomplete_signature => "IncompleteSignature", "IncompleteSignature", FORBIDDEN;
    invalid_client_token_id => "InvalidClientTokenId", "InvalidClientTokenId", FORBIDDEN;
    signature_does_not_match => "SignatureDoesNotMatch", "SignatureDoesNotMatch", FORBIDDEN;
    internal => "InternalError", "InternalError", INTERNAL_SERVER_ERROR;
}

impl SqsError {
    /// The error of a queue port failure, for a request on `queue`.
    pub fn from_queue(queue: &str, e: QueueError) -> SqsError {
        match e {
            QueueError::NoSuchQueue(_) => {
                SqsError::queue_does_not_exist(format!("The specified queue `{queue}` does not exist."))
            }
            QueueError::BatchTooLarge(n) => {
                SqsError::too_many_entries(format!("Maximum number of entries per request are 10. You have sent {n}."))
            }
            QueueError::TooLarge { .. } | QueueError::Invalid(_) => SqsError::invalid_parameter_value(e.to_string()),
            QueueError::StaleReceipt(_) => SqsError::message_not_inflight(e.to_string()),
            QueueError::Throttled(_) => SqsError::throttled(e.to_string()),
            QueueError::Unreachable(_) | QueueError::Backend(_) => SqsError::internal(e.to_string()),
        }
    }

    /// Whether the client is at fault (`SenderFault` of a batch entry).
    pub fn sender_fault(&self) -> bool {
        self.status.is_client_error()
    }

    /// The body, `{"__type": ..., "message": ...}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "__type": format!("com.amazonaws.sqs#{}", self.shape), "message": self.message })
    }
}

impl IntoResponse for SqsError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        let kind = if self.sender_fault() { "Sender" } else { "Receiver" };
        if let Ok(value) = HeaderValue::from_str(&format!("{};{kind}", self.code)) {
            headers.insert("x-amzn-query-error", value);
        }
        response
    }
}
