//! The orchestrator's admin API (`/api/v1`, JSON) and the web console
//! (`/`) that uses it.
//!
//! Every route is a handler annotated with `#[utoipa::path]` and collected
//! by `utoipa_axum::routes!`, so the OpenAPI 3.1 document served at
//! [`OPENAPI_PATH`] is built from the same list as the router: a route
//! cannot exist undocumented (`tests/admin_api.rs` walks the document and
//! calls every operation).
//!
//! The API reads through the ports (store, queue, the fleet view) and
//! writes only by sending requests to the orchestrator queue
//! ([`crate::operator`]): the orchestrator stays the only writer of saga
//! state. Mutations need the admin role ([`auth`]) and leave an audit line
//! (target `sqsaga::audit`: who, what, which saga or message).

pub mod auth;
mod catalog;
pub mod client;
mod console;
mod dlq;
mod sagas;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use sqsaga_http::JsonSource;
use sqsaga_orchestrator::{Definitions, SagaChange};
use sqsaga_protocol::Signing;
use sqsaga_queue::Queue;
use sqsaga_store::SagaStore;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, Refusal, Role, Tokens};

use crate::operator::OperatorError;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";
/// Prefix of every API route.
pub const API_PREFIX: &str = "/api/v1";

/// What the handlers share.
#[derive(Clone)]
pub struct Admin {
    pub store: Arc<dyn SagaStore>,
    pub queue: Arc<dyn Queue>,
    pub definitions: Arc<Definitions>,
    /// The orchestrator's fleet view, as `GET /fleet` renders it.
    pub fleet: Arc<dyn JsonSource>,
    /// The orchestrator's change feed (the live stream subscribes to it).
    pub changes: broadcast::Sender<SagaChange>,
    /// How requests sent to the orchestrator are signed, if at all.
    pub signing: Option<Arc<Signing>>,
    pub tokens: Tokens,
    /// Ends the live streams at shutdown (else a graceful shutdown would wait for them).
    pub shutdown: CancellationToken,
}

impl Admin {
    /// Authenticates a request needing `role`.
    fn caller(&self, headers: &HeaderMap, role: Role) -> Result<Caller, ApiError> {
        self.tokens.check(headers, role).map_err(|r| match r {
            Refusal::Unauthenticated => ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required"),
            Refusal::Forbidden => ApiError::new(StatusCode::FORBIDDEN, "this call needs the admin token"),
        })
    }

    fn sender(&self) -> crate::operator::Sender<'_> {
        crate::operator::Sender {
            queue: self.queue.as_ref(),
            store: self.store.as_ref(),
            signing: self.signing.as_deref(),
        }
    }
}

/// Writes the audit line of a mutation.
fn audit(caller: &Caller, action: &str, subject: &str, detail: &str) {
    tracing::info!(target: "sqsaga::audit", who = caller.name, action, subject, detail, "Operator request.");
}

/// An error answer: `{"error": "..."}` with its status.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
}

/// A failed call.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }

    fn bad_request(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message.to_string())
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn backend(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %e, "Admin API call failed in the backend.");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<OperatorError> for ApiError {
    fn from(e: OperatorError) -> Self {
        let status = match &e {
            OperatorError::NoSuchSaga(_) | OperatorError::NoSuchMessage { .. } => StatusCode::NOT_FOUND,
            OperatorError::WrongStatus { .. } => StatusCode::CONFLICT,
            OperatorError::NoSuchDefinition { .. } | OperatorError::BadInput(_) => StatusCode::BAD_REQUEST,
            OperatorError::Store(_) | OperatorError::Queue(_) => return ApiError::backend(e),
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<sqsaga_store::StoreError> for ApiError {
    fn from(e: sqsaga_store::StoreError) -> Self {
        ApiError::backend(e)
    }
}

impl From<sqsaga_queue::QueueError> for ApiError {
    fn from(e: sqsaga_queue::QueueError) -> Self {
        ApiError::backend(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

/// The result of a handler.
type ApiResult<T> = Result<Json<T>, ApiError>;

/// The bearer scheme every operation requires.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sqsaga admin API",
        description = "Operate sagas, dead-letter queues and the fleet of an sqsaga orchestrator. \
                       Bearer tokens: the read token for GETs, the admin token for everything.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "sagas", description = "Saga instances: list, inspect, start, resume, cancel, live changes"),
        (name = "definitions", description = "Loaded saga definitions"),
        (name = "dlq", description = "Dead-letter queues"),
        (name = "fleet", description = "The drift guard's view of the workers"),
    )
)]
struct ApiDoc;

/// Every route of the API, with its OpenAPI operation.
fn routes() -> OpenApiRouter<Admin> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sagas::list_sagas, sagas::start_saga))
        .routes(routes!(sagas::saga_counts))
        .routes(routes!(sagas::get_saga))
        .routes(routes!(sagas::resume_saga))
        .routes(routes!(sagas::cancel_saga))
        .routes(routes!(saga_events))
        .routes(routes!(whoami))
        .routes(routes!(catalog::list_definitions))
        .routes(routes!(catalog::get_definition))
        .routes(routes!(catalog::fleet))
        .routes(routes!(dlq::list_queues))
        .routes(routes!(dlq::list_messages))
        .routes(routes!(dlq::get_message, dlq::delete_message))
        .routes(routes!(dlq::redrive_message))
        .routes(routes!(dlq::redrive_queue))
}

/// The OpenAPI 3.1 document of the admin API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = routes().split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The admin API, its OpenAPI document and the console, to merge into the
/// orchestrator's HTTP router (or serve on their own address).
pub fn router(admin: Admin) -> axum::Router {
    let (api, mut doc) = routes().with_state(admin).split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let doc = Arc::new(doc);
    api.route(
        OPENAPI_PATH,
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { Json(doc.as_ref().clone()) }
        }),
    )
    .merge(console::router())
}

/// The caller as the API sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// `admin`, `read`, or `local` (no token configured).
    pub name: String,
    /// Whether mutations are allowed.
    pub admin: bool,
}

/// Who the token belongs to (the console hides what the role may not do).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "sagas",
    responses(
        (status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
async fn whoami(State(admin): State<Admin>, headers: HeaderMap) -> ApiResult<WhoAmI> {
    let caller = admin.caller(&headers, Role::Read)?;
    Ok(Json(WhoAmI { name: caller.name.to_string(), admin: caller.role == Role::Admin }))
}

/// Server-sent events: one `saga` event per committed change of a saga
/// (data: a [`sagas::SagaRow`] with the history `note`), `resync` when this
/// listener fell behind and should re-read. The changes are this replica's.
#[utoipa::path(get, path = "/api/v1/events", tag = "sagas",
    responses(
        (status = 200, description = "An endless text/event-stream of saga changes", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
async fn saga_events(State(admin): State<Admin>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.caller(&headers, Role::Read)?;
    let rx = admin.changes.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = match rx.recv().await {
            Ok(change) => {
                let row = sagas::SagaRow::from_change(&change);
                Event::default().event("saga").json_data(row).unwrap_or_else(|_| Event::default().event("resync"))
            }
            Err(broadcast::error::RecvError::Lagged(n)) => Event::default().event("resync").data(n.to_string()),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok::<Event, Infallible>(event), rx))
    })
    .take_until(admin.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}
