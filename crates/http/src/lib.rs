//! Health, readiness and metrics on one HTTP port — the endpoints the
//! seed's Kubernetes manifest probed but its Go worker never served.
//!
//! - `GET /healthz`: 200 `ok` while every registered loop keeps beating; 503
//!   with the stalled loops otherwise (Kubernetes restarts the pod).
//! - `GET /readyz`: 200 while no readiness reason is set; 503 with the
//!   reasons otherwise (Kubernetes stops routing and a rollout stalls). Both
//!   bodies carry the [`Probe`]'s info fields (the fingerprint).
//! - `GET /metrics`: the process's [`Registry`] in Prometheus text format.
//!
//! [`router`] builds the app (tests call it in-process, no socket);
//! [`serve`] binds, logs the bound address and serves until the shutdown
//! future completes. This crate knows nothing of queues, sagas or config:
//! the processes feed it through [`Probe`] and the registry they built.

pub mod metrics;
mod probe;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

/// The router type [`router`] and [`json_route`] return, for binaries that merge them.
pub use axum::Router;
pub use metrics::Registry;
pub use probe::{Probe, StalledLoop};

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = metrics::CONTENT_TYPE;

/// Liveness path served by [`router`]; `sqsaga lint-deploy` checks probes against it.
pub const HEALTHZ: &str = "/healthz";
/// Readiness path served by [`router`].
pub const READYZ: &str = "/readyz";
/// Prometheus metrics path served by [`router`].
pub const METRICS: &str = "/metrics";
/// Every path [`router`] serves, in the order of its routes.
pub const PATHS: [&str; 3] = [HEALTHZ, READYZ, METRICS];

/// Why the HTTP server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, no permission, bad interface).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

impl HttpError {
    /// Whether trying again later may help: a port still held by a previous
    /// process is, a permission problem is not.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Bind { source, .. } => source.kind() == std::io::ErrorKind::AddrInUse,
            HttpError::Serve(_) => false,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    /// Liveness and readiness, updated by the process's loops.
    probe: Probe,
    /// What /metrics encodes: every family of the process.
    metrics: Arc<Registry>,
}

/// The app: `/healthz`, `/readyz`, `/metrics`. `metrics` is the process's
/// registry, complete (the probe's own gauges included, see
/// [`Probe::register_metrics`]). Other routes (the admin API) can be merged
/// into the returned router.
pub fn router(probe: Probe, metrics: Registry) -> Router {
    let state = AppState { probe, metrics: Arc::new(metrics) };
    Router::new()
        .route(HEALTHZ, get(healthz))
        .route(READYZ, get(readyz))
        .route(METRICS, get(render_metrics))
        .with_state(state)
}

/// A read-only JSON document rendered on every request, served next to the
/// probes (the orchestrator's `/fleet`).
pub trait JsonSource: Send + Sync + 'static {
    /// The document as of now.
    fn render(&self) -> Value;
}

/// A router serving `source` at `GET path`, to [`Router::merge`] into
/// [`router`]'s.
pub fn json_route(path: &str, source: Arc<dyn JsonSource>) -> Router {
    Router::new().route(
        path,
        get(move || {
            let source = source.clone();
            async move { axum::Json(source.render()) }
        }),
    )
}

async fn healthz(State(state): State<AppState>) -> Response {
    let stalled = state.probe.stalled_loops();
    if stalled.is_empty() {
        return (StatusCode::OK, "ok").into_response();
    }
    let loops: Vec<Value> = stalled
        .iter()
        .map(|l| {
            json!({
                "name": l.name,
                "silent_for_ms": u64::try_from(l.silent_for.as_millis()).unwrap_or(u64::MAX),
                "stall_after_ms": u64::try_from(l.stall_after.as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    let body = json!({ "status": "stalled", "loops": loops });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut body: serde_json::Map<String, Value> = state.probe.info().into_iter().collect();
    let reasons = state.probe.reasons();
    let status = if reasons.is_empty() {
        body.remove("reasons");
        body.insert("status".into(), "ready".into());
        StatusCode::OK
    } else {
        body.insert("status".into(), "not_ready".into());
        body.insert("reasons".into(), json!(reasons));
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(Value::Object(body))).into_response()
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], metrics::encode(&state.metrics)).into_response()
}

/// Binds `addr` (port 0 picks a free port), logs the bound address, and
/// serves `router` in a task until `shutdown` completes; in-flight requests
/// then finish. Returns the bound address and the server task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<Result<(), HttpError>>), HttpError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })?;
    serve_on(listener, router, shutdown)
}

/// [`serve`] on a listener the caller already bound.
pub fn serve_on(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<Result<(), HttpError>>), HttpError> {
    let bound = listener.local_addr().map_err(HttpError::Serve)?;
    info!(addr = %bound, "HTTP listening.");
    let task = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(HttpError::Serve)?;
        info!(addr = %bound, "HTTP stopped.");
        Ok(())
    });
    Ok((bound, task))
}
