//! An SQS-compatible endpoint over the `Queue` port: the orchestrator
//! process on the embedded backend serves its SQLite queues with the SQS API,
//! so that a participant in any language uses them through its unmodified
//! AWS SDK (`AWS_ENDPOINT_URL=http://127.0.0.1:<port>`), as it would use SQS
//! in production.
//!
//! The AWS JSON 1.0 protocol only (`POST /`, `X-Amz-Target:
//! AmazonSQS.<Action>`, `Content-Type: application/x-amz-json-1.0`), which
//! every current SDK speaks to SQS; the older query protocol is refused with
//! an error saying so. Actions: see [`actions::SUPPORTED`]. Errors are shaped
//! as SQS shapes them ([`error`]); queue URLs are
//! `http://<host>/000000000000/<name>`.
//!
//! Exposure: [`bind`] and [`serve_on`] refuse a non-loopback address unless
//! [`Credentials`] are configured, and with credentials every request must
//! carry a Signature Version 4 `Authorization` header naming the configured
//! access key id, and, when a secret access key is configured too, a valid
//! signature ([`auth`] says exactly what is verified).
//!
//! An adapter: it knows the `Queue` port and HTTP, never a service; the
//! runtime passes the embedded backend's queue in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use sqsaga_core::clock::Clock;
use sqsaga_queue::Queue;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub mod actions;
pub mod auth;
pub mod error;
mod md5;
mod wire;

pub use auth::Credentials;
pub use error::{CONTENT_TYPE, SqsError};

/// The account id in queue URLs and ARNs (no AWS account behind it).
pub const ACCOUNT_ID: &str = "000000000000";
/// Largest request body read: a batch of ten 1 MiB messages is refused by
/// the batch limit, but the JSON of one 1 MiB body can take up to six times
/// its size when every character is escaped.
const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// How the endpoint runs.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Who may call; `None`: anyone who reaches the address, which must then
    /// be a loopback one.
    pub credentials: Option<Credentials>,
    /// Request times of signatures are checked against it.
    pub clock: Arc<dyn Clock>,
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "the SQS endpoint may listen on {0} (not a loopback address) only with credentials: set \
         SQSAGA_SQS_ENDPOINT_ACCESS_KEY_ID (and SQSAGA_SQS_ENDPOINT_SECRET_ACCESS_KEY to verify signatures), \
         or listen on 127.0.0.1"
    )]
    OpenToTheNetwork(SocketAddr),
    #[error("cannot listen on {addr} for the SQS endpoint (SQSAGA_SQS_ENDPOINT_ADDR): {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("SQS endpoint server failed: {0}")]
    Serve(std::io::Error),
}

fn check_exposure(addr: SocketAddr, credentials: Option<&Credentials>) -> Result<(), EndpointError> {
    if addr.ip().is_loopback() || credentials.is_some() { Ok(()) } else { Err(EndpointError::OpenToTheNetwork(addr)) }
}

/// Binds `addr`, refusing a non-loopback one without credentials.
pub async fn bind(addr: SocketAddr, credentials: Option<&Credentials>) -> Result<TcpListener, EndpointError> {
    check_exposure(addr, credentials)?;
    TcpListener::bind(addr).await.map_err(|source| EndpointError::Listen { addr, source })
}

/// Shared by every request.
struct AppState {
    queue: Arc<dyn Queue>,
    options: EndpointOptions,
    shutdown: CancellationToken,
}

/// The endpoint as a router (every path and method; the action is in the
/// `X-Amz-Target` header). `shutdown` ends running long polls early.
pub fn router(queue: Arc<dyn Queue>, options: EndpointOptions, shutdown: CancellationToken) -> Router {
    Router::new().fallback(handle).with_state(Arc::new(AppState { queue, options, shutdown }))
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled; refuses a
/// non-loopback listener without credentials. Returns the bound address.
pub fn serve_on(
    listener: TcpListener,
    queue: Arc<dyn Queue>,
    options: EndpointOptions,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<Result<(), EndpointError>>), EndpointError> {
    let addr = listener.local_addr().map_err(EndpointError::Serve)?;
    check_exposure(addr, options.credentials.as_ref())?;
    let verifies = match &options.credentials {
        None => "nothing (loopback only)",
        Some(Credentials { secret_access_key: None, .. }) => "the SigV4 access key id",
        Some(_) => "SigV4 signatures",
    };
    info!(addr = %addr, url = %format!("http://{addr}"), verifies, "SQS endpoint listening.");
    let app = router(queue, options, shutdown.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(EndpointError::Serve)?;
        info!(addr = %addr, "SQS endpoint stopped.");
        Ok(())
    });
    Ok((addr, task))
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut response = match answer(&state, request).await {
        Ok(body) => {
            let mut r = body.to_string().into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            r
        }
        Err(e) => {
            debug!(error_type = e.shape, error = %e.message, "SQS endpoint request refused.");
            e.into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

async fn answer(state: &AppState, request: Request) -> Result<serde_json::Value, SqsError> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(Body::new(body), MAX_REQUEST_BYTES).await.map_err(|e| {
        SqsError::invalid_parameter_value(format!(
            "Request body could not be read (at most {MAX_REQUEST_BYTES} bytes): {e}"
        ))
    })?;
    if let Some(credentials) = &state.options.credentials {
        let signed = auth::SignedRequest {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body: &body,
        };
        auth::check(credentials, &signed, state.options.clock.now()).inspect_err(|e| {
            warn!(error_type = e.shape, error = %e.message, "SQS endpoint refused an unauthenticated request.");
        })?;
    }
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let content_type = header(header::CONTENT_TYPE);
    if content_type.starts_with("application/x-www-form-urlencoded")
        || parts.uri.query().is_some_and(|q| q.contains("Action="))
    {
        return Err(SqsError::unknown_operation(
            "The SQS query protocol is not supported: use the AWS JSON 1.0 protocol (X-Amz-Target: AmazonSQS.<Action>, \
             Content-Type: application/x-amz-json-1.0), as current AWS SDKs do.",
        ));
    }
    if parts.method != Method::POST {
        return Err(SqsError::unknown_operation(format!(
            "{} is not an SQS request: POST with X-Amz-Target.",
            parts.method
        )));
    }
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(action) = target.strip_prefix("AmazonSQS.") else {
        return Err(SqsError::unknown_operation(format!(
            "X-Amz-Target `{target}` is not an SQS action (AmazonSQS.<Action>)."
        )));
    };
    let host = match header(header::HOST) {
        "" => "localhost",
        host => host,
    };
    let ctx = actions::Ctx {
        queue: state.queue.clone(),
        base_url: format!("http://{host}/{ACCOUNT_ID}"),
        account_id: ACCOUNT_ID.to_string(),
        region: region_of(header(header::AUTHORIZATION)).unwrap_or("us-east-1").to_string(),
        shutdown: state.shutdown.clone(),
    };
    actions::dispatch(action, &body, &ctx).await
}

/// The region of a SigV4 credential scope, if the header has one.
fn region_of(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let region = credential.split(['/', ',']).nth(2)?;
    (!region.is_empty() && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then_some(region)
}
