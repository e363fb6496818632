//! An SQS-compatible endpoint over the `Queue` port: the orchestrator
//! process on the embedded backend serves its SQLite queues with the SQS API,
//! so that a participant in any language uses them through its unmodified
//! AWS SDK (`AWS_ENDPOINT_URL=http://127.0.0.1:<port>`), as it would use SQS
//! in production.
//!
//! The AWS JSON 1.0 protocol (`POST /`, `X-Amz-Target:
//! AmazonSQS.<Action>`, `Content-Type: application/x-amz-json-1.0`), which
//! every current SDK speaks to SQS, and the older query protocol (a form,
//! XML answers; [`query`]), which SDKs packaged by distributions still
//! speak (Debian's AWS SDK for Go v2). Actions: see [`actions::SUPPORTED`]. Errors are shaped
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
pub mod query;
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

/// Which protocol a request speaks; the response speaks the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// AWS JSON 1.0: `X-Amz-Target`, JSON bodies.
    Json,
    /// The query protocol: a form (`Action=...`), XML responses ([`query`]).
    Query,
}

async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let protocol = if form || request.uri().query().is_some_and(|q| q.contains("Action=")) {
        Protocol::Query
    } else {
        Protocol::Json
    };
    let (action, result) = answer(&state, request, protocol).await;
    if let Err(e) = &result {
        debug!(error_type = e.shape, error = %e.message, "SQS endpoint request refused.");
    }
    let mut response = match (protocol, result) {
        (Protocol::Json, Ok(body)) => {
            let mut r = body.to_string().into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            r
        }
        (Protocol::Json, Err(e)) => e.into_response(),
        (Protocol::Query, Ok(body)) => {
            xml(axum::http::StatusCode::OK, query::render_result(&action, &body, &request_id))
        }
        (Protocol::Query, Err(e)) => xml(e.status, query::render_error(&e, &request_id)),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

fn xml(status: axum::http::StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    r
}

/// The action a request names (empty when unknown) and its result.
async fn answer(
    state: &AppState,
    request: Request,
    protocol: Protocol,
) -> (String, Result<serde_json::Value, SqsError>) {
    let (parts, body) = request.into_parts();
    let body = match read_and_authenticate(state, &parts, body).await {
        Ok(body) => body,
        Err(e) => return (String::new(), Err(e)),
    };
    let (action, body) = match protocol {
        Protocol::Query => {
            let form = if body.is_empty() { parts.uri.query().unwrap_or("").as_bytes() } else { &body[..] };
            match query::parse_form(form).and_then(|pairs| query::to_json_request(&pairs)) {
                Ok((action, json)) => (action, axum::body::Bytes::from(json)),
                Err(e) => return (String::new(), Err(e)),
            }
        }
        Protocol::Json => match json_action(&parts) {
            Ok(action) => (action, body),
            Err(e) => return (String::new(), Err(e)),
        },
    };
    let header = |name: header::HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
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
    let result = actions::dispatch(&action, &body, &ctx).await;
    (action, result)
}

/// The request body, once the request is known to come from the configured credentials.
async fn read_and_authenticate(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, SqsError> {
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
    Ok(body)
}

/// The action of an AWS JSON 1.0 request (`X-Amz-Target: AmazonSQS.<Action>`).
fn json_action(parts: &axum::http::request::Parts) -> Result<String, SqsError> {
    if parts.method != Method::POST {
        return Err(SqsError::unknown_operation(format!(
            "{} is not an SQS request: POST with X-Amz-Target, or the query protocol's Action form.",
            parts.method
        )));
    }
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    match target.strip_prefix("AmazonSQS.") {
        Some(action) => Ok(action.to_string()),
        None => Err(SqsError::unknown_operation(format!(
            "X-Amz-Target `{target}` is not an SQS action (AmazonSQS.<Action>)."
        ))),
    }
}

/// The region of a SigV4 credential scope, if the header has one.
fn region_of(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    let region = credential.split(['/', ',']).nth(2)?;
    (!region.is_empty() && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then_some(region)
}
