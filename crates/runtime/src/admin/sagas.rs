//! `/api/v1/sagas`: list (filters, cursor), counts, one saga, start,
//! resume, cancel.
//!
//! The list filters in the API over the store's newest-first listing
//! (through its status index), reading at most [`SCAN_LIMIT`] sagas per
//! call: the store port has no secondary index on name, start time or id
//! prefix, and an operator's question is about recent sagas. Pages are
//! ordered by start time, newest first; the cursor is the last row's
//! `(started_at, id)`, so a page is stable while sagas change status.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqsaga_core::machine::{SagaStatus, StepState, WorkerStamp};
use sqsaga_orchestrator::SagaChange;
use sqsaga_protocol::TraceParent;
use sqsaga_store::SagaSummary;
use utoipa::{IntoParams, ToSchema};

use super::{Admin, ApiError, ApiResult, ErrorBody, Role, audit};
use crate::operator::StartRequest;

/// At most this many sagas are read to answer one list call.
pub const SCAN_LIMIT: usize = 10_000;
/// Page size when the caller gives none.
const DEFAULT_LIMIT: usize = 50;
/// Largest page.
const MAX_LIMIT: usize = 500;

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Compensating,
    Completed,
    Compensated,
    NeedsOperator,
}

impl From<SagaStatus> for Status {
    fn from(s: SagaStatus) -> Self {
        match s {
            SagaStatus::Running => Status::Running,
            SagaStatus::Compensating => Status::Compensating,
            SagaStatus::Completed => Status::Completed,
            SagaStatus::Compensated => Status::Compensated,
            SagaStatus::NeedsOperator => Status::NeedsOperator,
        }
    }
}

impl From<Status> for SagaStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Running => SagaStatus::Running,
            Status::Compensating => SagaStatus::Compensating,
            Status::Completed => SagaStatus::Completed,
            Status::Compensated => SagaStatus::Compensated,
            Status::NeedsOperator => SagaStatus::NeedsOperator,
        }
    }
}

/// One saga in a list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SagaRow {
    pub id: String,
    /// Definition name.
    pub saga: String,
    pub version: u32,
    pub status: Status,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    pub updated_at: u64,
    /// The history line of the change (live events only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SagaRow {
    fn from_summary(s: &SagaSummary) -> SagaRow {
        SagaRow {
            id: s.id.clone(),
            saga: s.saga.clone(),
            version: s.version,
            status: s.status.into(),
            started_at: s.started_at,
            updated_at: s.updated_at,
            note: None,
        }
    }

    pub(super) fn from_change(c: &SagaChange) -> SagaRow {
        SagaRow { note: Some(c.note.clone()), ..SagaRow::from_summary(&c.summary) }
    }
}

/// Filters and page of a list call.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only sagas in this status.
    status: Option<Status>,
    /// Only sagas of this definition.
    saga: Option<String>,
    /// Only sagas started at or after this time (ms since the epoch).
    started_after: Option<u64>,
    /// Only sagas started before this time (ms since the epoch).
    started_before: Option<u64>,
    /// Only sagas whose id starts with this.
    id_prefix: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A page of sagas, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaPage {
    pub items: Vec<SagaRow>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// Sagas in each status (all of them, not only the filtered).
    pub counts: BTreeMap<String, u64>,
}

fn cursor_of(row: &SagaRow) -> String {
    format!("{}.{}", row.started_at, row.id)
}

fn parse_cursor(text: &str) -> Result<(u64, String), ApiError> {
    let bad = || ApiError::bad_request(format!("cursor `{text}` is not one this API gave"));
    let (at, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_string()))
}

async fn counts(admin: &Admin) -> Result<BTreeMap<String, u64>, ApiError> {
    let stored = admin.store.counts().await?;
    Ok(SagaStatus::ALL.iter().map(|s| (s.as_str().to_string(), stored.get(s).copied().unwrap_or(0))).collect())
}

/// Sagas with filters, newest start first.
#[utoipa::path(get, path = "/api/v1/sagas", tag = "sagas", params(ListQuery),
    responses(
        (status = 200, description = "A page of sagas", body = SagaPage),
        (status = 400, description = "A bad filter or cursor", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_sagas(
    State(admin): State<Admin>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<SagaPage> {
    admin.caller(&headers, Role::Read)?;
    let Query(q) = query.map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit {limit} is not between 1 and {MAX_LIMIT}")));
    }
    let after = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut rows: Vec<SagaRow> = admin
        .store
        .list(q.status.map(SagaStatus::from), SCAN_LIMIT)
        .await?
        .iter()
        .map(SagaRow::from_summary)
        .filter(|r| q.saga.as_ref().is_none_or(|s| &r.saga == s))
        .filter(|r| q.started_after.is_none_or(|t| r.started_at >= t))
        .filter(|r| q.started_before.is_none_or(|t| r.started_at < t))
        .filter(|r| q.id_prefix.as_ref().is_none_or(|p| r.id.starts_with(p.as_str())))
        .filter(|r| after.as_ref().is_none_or(|(at, id)| (r.started_at, &r.id) < (*at, id)))
        .collect();
    rows.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
    let next_cursor = (rows.len() > limit).then(|| cursor_of(&rows[limit - 1]));
    rows.truncate(limit);
    Ok(Json(SagaPage { items: rows, next_cursor, counts: counts(&admin).await? }))
}

/// How many sagas are in each status.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counts {
    pub counts: BTreeMap<String, u64>,
}

/// Sagas in each status.
#[utoipa::path(get, path = "/api/v1/sagas/counts", tag = "sagas",
    responses(
        (status = 200, description = "Counts by status", body = Counts),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn saga_counts(State(admin): State<Admin>, headers: HeaderMap) -> ApiResult<Counts> {
    admin.caller(&headers, Role::Read)?;
    Ok(Json(Counts { counts: counts(&admin).await? }))
}

/// The worker instance that ran (or compensated) a step.
#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    pub instance: String,
    pub fingerprint: String,
}

impl From<&WorkerStamp> for Worker {
    fn from(w: &WorkerStamp) -> Self {
        Worker { instance: w.instance.clone(), fingerprint: w.fingerprint.clone() }
    }
}

/// One step of a saga.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    pub index: usize,
    /// The step's name in the definition (`step N` when the definition is not loaded).
    pub name: String,
    pub service: Option<String>,
    /// `pending`, `dispatched`, `retry_wait`, `succeeded`, `refused`, `failed`,
    /// `timed_out`, `compensating`, `compensation_retry_wait`, `compensated`,
    /// `compensation_failed`, …
    pub status: String,
    /// Attempts of the action so far.
    pub attempts: u32,
    /// Attempts of the compensation so far.
    pub compensation_attempts: u32,
    pub worker: Option<Worker>,
    pub compensation_worker: Option<Worker>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// One line of a saga's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryLine {
    pub at: u64,
    /// `start`, `reply`, `wake`, `resume`, `cancel`.
    pub event: String,
    pub note: String,
}

/// One saga in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaView {
    pub id: String,
    pub saga: String,
    pub version: u32,
    pub status: Status,
    /// Why it compensates or needs an operator.
    pub reason: Option<String>,
    #[schema(value_type = Object)]
    pub input: Value,
    /// The W3C trace id of the saga's trace.
    pub trace_id: Option<String>,
    pub started_at: u64,
    pub updated_at: u64,
    pub deadline_at: u64,
    /// Index of the active step.
    pub current: usize,
    /// The store's optimistic-concurrency revision.
    pub revision: u64,
    pub steps: Vec<StepView>,
    pub history: Vec<HistoryLine>,
}

fn step_view(admin: &Admin, saga: &str, version: u32, index: usize, st: &StepState) -> StepView {
    let def = admin.definitions.get(saga, version);
    let step = def.as_ref().and_then(|d| d.steps.get(index));
    let status = serde_json::to_value(st.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    StepView {
        index,
        name: step.map(|s| s.name.clone()).unwrap_or_else(|| format!("step {index}")),
        service: step.map(|s| s.service.clone()),
        status,
        attempts: st.attempt,
        compensation_attempts: st.comp_attempt,
        worker: st.worker.as_ref().map(Worker::from),
        compensation_worker: st.comp_worker.as_ref().map(Worker::from),
        started_at: st.started_at,
        finished_at: st.finished_at,
        output: st.output.clone(),
        error: st.error.clone(),
    }
}

/// The saga id in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SagaId {
    /// The saga id.
    id: String,
}

/// One saga: state, steps, history, input, trace id.
#[utoipa::path(get, path = "/api/v1/sagas/{id}", tag = "sagas", params(SagaId),
    responses(
        (status = 200, description = "The saga", body = SagaView),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such saga", body = ErrorBody),
    )
)]
pub async fn get_saga(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(SagaId { id }): Path<SagaId>,
) -> ApiResult<SagaView> {
    admin.caller(&headers, Role::Read)?;
    let Some(record) = admin.store.load(std::slice::from_ref(&id)).await?.into_iter().next() else {
        return Err(ApiError::not_found(format!("no saga `{id}`")));
    };
    let history = admin.store.history(&id).await?;
    let s = record.instance;
    let steps = s.steps.iter().enumerate().map(|(i, st)| step_view(&admin, &s.saga, s.version, i, st)).collect();
    Ok(Json(SagaView {
        trace_id: s.trace.as_deref().and_then(|t| TraceParent::parse(t).ok()).map(|t| t.trace_id()),
        id: s.id,
        saga: s.saga,
        version: s.version,
        status: s.status.into(),
        reason: s.reason,
        input: s.input,
        started_at: s.started_at,
        updated_at: s.updated_at,
        deadline_at: s.deadline_at,
        current: s.current,
        revision: record.revision,
        steps,
        history: history.into_iter().map(|h| HistoryLine { at: h.at, event: h.event, note: h.note }).collect(),
    }))
}

/// A start request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Definition name.
    pub saga: String,
    /// Pin a version; the newest loaded one when absent.
    pub version: Option<u32>,
    /// The saga's input (checked against the definition's input schema).
    #[schema(value_type = Object)]
    pub input: Value,
    /// The saga id; a fresh one when absent (reuse one to make a retried start idempotent).
    pub id: Option<String>,
}

/// What an accepted request did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The saga the request is about.
    pub id: String,
    /// `requested`: the orchestrator acts on it within moments.
    pub status: String,
}

fn accepted(id: String) -> (StatusCode, Json<Accepted>) {
    (StatusCode::ACCEPTED, Json(Accepted { id, status: "requested".to_string() }))
}

/// Starts a saga (a start request on the orchestrator queue).
#[utoipa::path(post, path = "/api/v1/sagas", tag = "sagas", request_body = StartBody,
    responses(
        (status = 202, description = "Start requested", body = Accepted),
        (status = 400, description = "Unknown definition or bad input", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
    )
)]
pub async fn start_saga(
    State(admin): State<Admin>,
    headers: HeaderMap,
    body: Result<Json<StartBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let caller = admin.caller(&headers, Role::Admin)?;
    let Json(body) = body.map_err(ApiError::bad_request)?;
    if body.id.as_ref().is_some_and(|id| id.is_empty()) {
        return Err(ApiError::bad_request("id must not be empty"));
    }
    let saga = body.saga.clone();
    let request = StartRequest { saga: body.saga, version: body.version, input: body.input, id: body.id, trace: None };
    let id = admin.sender().start(&admin.definitions, request).await?;
    audit(&caller, "start", &id, &saga);
    Ok(accepted(id))
}

/// Retries the compensation of a `needs_operator` saga.
#[utoipa::path(post, path = "/api/v1/sagas/{id}/resume", tag = "sagas", params(SagaId),
    responses(
        (status = 202, description = "Resume requested", body = Accepted),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such saga", body = ErrorBody),
        (status = 409, description = "The saga does not need an operator", body = ErrorBody),
    )
)]
pub async fn resume_saga(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(SagaId { id }): Path<SagaId>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let caller = admin.caller(&headers, Role::Admin)?;
    admin.sender().resume(&id).await?;
    audit(&caller, "resume", &id, "");
    Ok(accepted(id))
}

/// Cancels a running saga: it compensates now; the history names who asked.
#[utoipa::path(post, path = "/api/v1/sagas/{id}/cancel", tag = "sagas", params(SagaId),
    responses(
        (status = 202, description = "Cancel requested", body = Accepted),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such saga", body = ErrorBody),
        (status = 409, description = "The saga is not running", body = ErrorBody),
    )
)]
pub async fn cancel_saga(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(SagaId { id }): Path<SagaId>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let caller = admin.caller(&headers, Role::Admin)?;
    admin.sender().cancel(&id, caller.name).await?;
    audit(&caller, "cancel", &id, "");
    Ok(accepted(id))
}
