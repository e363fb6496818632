//! `/api/v1/dlq`: the dead-letter queue of each queue the orchestrator
//! knows (its own and one per service of the definitions): depth, the
//! messages with why and where from, redrive one or all, delete one.
//! A queue name not among those is 404, so no call creates a queue.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sqsaga_orchestrator::ORCHESTRATOR_QUEUE;
use sqsaga_queue::{ATTR_REASON, ATTR_SOURCE, ReceivedMessage, dlq_name};
use utoipa::{IntoParams, ToSchema};

use super::{Admin, ApiError, ApiResult, ErrorBody, Role, audit};
use crate::operator;

/// A queue and the depth of its DLQ.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDepth {
    /// The source queue (`orchestrator` or a service).
    pub queue: String,
    /// Its dead-letter queue.
    pub dlq: String,
    /// Messages in the DLQ (visible + in flight + delayed; approximate on SQS).
    pub depth: u64,
}

/// A dead-lettered message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqMessage {
    pub message_id: String,
    /// Why it was dead-lettered, when recorded.
    pub reason: Option<String>,
    /// The queue it came from, when recorded.
    pub source: Option<String>,
    /// When it was sent to the DLQ (ms since the epoch).
    pub sent_at: u64,
    /// How often it was received from the DLQ (listing counts too).
    pub receive_count: u32,
    pub body: String,
}

impl From<&ReceivedMessage> for DlqMessage {
    fn from(m: &ReceivedMessage) -> Self {
        DlqMessage {
            message_id: m.message_id.clone(),
            reason: m.attributes.get(ATTR_REASON).cloned(),
            source: m.attributes.get(ATTR_SOURCE).cloned(),
            sent_at: m.sent_at,
            receive_count: m.receive_count,
            body: m.body.clone(),
        }
    }
}

/// What a redrive did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveResult {
    /// Messages moved back to their queue.
    pub moved: usize,
    /// Genuine messages whose signature would have been stale, re-signed.
    pub refreshed: usize,
}

/// The source queue in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueueName {
    /// The source queue (`orchestrator` or a service); its DLQ is meant.
    queue: String,
}

/// A message of a queue's DLQ in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessageKey {
    /// The source queue.
    queue: String,
    /// The message id, as the list shows it.
    message_id: String,
}

/// Why a message is deleted.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Recorded in the audit log.
    #[param(min_length = 1)]
    reason: String,
}

fn queues(admin: &Admin) -> Vec<String> {
    let mut names = vec![ORCHESTRATOR_QUEUE.to_string()];
    names.extend(admin.definitions.services());
    names
}

fn known(admin: &Admin, queue: &str) -> Result<(), ApiError> {
    if queues(admin).iter().any(|q| q == queue) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no queue `{queue}` (known: {})", queues(admin).join(", "))))
    }
}

/// Every queue's DLQ depth.
#[utoipa::path(get, path = "/api/v1/dlq", tag = "dlq",
    responses(
        (status = 200, description = "Depth per queue", body = Vec<QueueDepth>),
        (status = 401, description = "No valid token", body = ErrorBody),
    )
)]
pub async fn list_queues(State(admin): State<Admin>, headers: HeaderMap) -> ApiResult<Vec<QueueDepth>> {
    admin.caller(&headers, Role::Read)?;
    let mut out = Vec::new();
    for queue in queues(&admin) {
        let dlq = dlq_name(&queue);
        let d = admin.queue.depth(&dlq).await?;
        out.push(QueueDepth { queue, dlq, depth: d.visible + d.in_flight + d.delayed });
    }
    Ok(Json(out))
}

/// The messages of a queue's DLQ (at most 1000), oldest first as received.
#[utoipa::path(get, path = "/api/v1/dlq/{queue}/messages", tag = "dlq", params(QueueName),
    responses(
        (status = 200, description = "The dead-lettered messages", body = Vec<DlqMessage>),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn list_messages(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(QueueName { queue }): Path<QueueName>,
) -> ApiResult<Vec<DlqMessage>> {
    admin.caller(&headers, Role::Read)?;
    known(&admin, &queue)?;
    let messages = operator::peek_all(admin.queue.as_ref(), &dlq_name(&queue)).await?;
    Ok(Json(messages.iter().map(DlqMessage::from).collect()))
}

/// One dead-lettered message with its reason and source.
#[utoipa::path(get, path = "/api/v1/dlq/{queue}/messages/{message_id}", tag = "dlq", params(MessageKey),
    responses(
        (status = 200, description = "The message", body = DlqMessage),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 404, description = "No such queue or message", body = ErrorBody),
    )
)]
pub async fn get_message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(MessageKey { queue, message_id }): Path<MessageKey>,
) -> ApiResult<DlqMessage> {
    admin.caller(&headers, Role::Read)?;
    known(&admin, &queue)?;
    let messages = operator::peek_all(admin.queue.as_ref(), &dlq_name(&queue)).await?;
    messages
        .iter()
        .find(|m| m.message_id == message_id)
        .map(|m| Json(DlqMessage::from(m)))
        .ok_or_else(|| ApiError::not_found(format!("no message `{message_id}` in {}", dlq_name(&queue))))
}

/// Deletes one dead-lettered message for good; the reason goes to the audit log.
#[utoipa::path(delete, path = "/api/v1/dlq/{queue}/messages/{message_id}", tag = "dlq", params(MessageKey, DeleteQuery),
    responses(
        (status = 200, description = "The deleted message", body = DlqMessage),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such queue or message", body = ErrorBody),
    )
)]
pub async fn delete_message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(MessageKey { queue, message_id }): Path<MessageKey>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> ApiResult<DlqMessage> {
    let caller = admin.caller(&headers, Role::Admin)?;
    let Query(DeleteQuery { reason }) = query.map_err(ApiError::bad_request)?;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request("a reason is required to delete a message"));
    }
    known(&admin, &queue)?;
    let deleted = operator::delete_one(admin.queue.as_ref(), &queue, &message_id).await?;
    audit(&caller, "dlq-delete", &format!("{}/{message_id}", dlq_name(&queue)), &reason);
    Ok(Json(DlqMessage::from(&deleted)))
}

/// Moves one dead-lettered message back to its queue.
#[utoipa::path(post, path = "/api/v1/dlq/{queue}/messages/{message_id}/redrive", tag = "dlq", params(MessageKey),
    responses(
        (status = 200, description = "Moved", body = RedriveResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such queue or message", body = ErrorBody),
    )
)]
pub async fn redrive_message(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(MessageKey { queue, message_id }): Path<MessageKey>,
) -> ApiResult<RedriveResult> {
    let caller = admin.caller(&headers, Role::Admin)?;
    known(&admin, &queue)?;
    let r = operator::redrive_one(admin.queue.as_ref(), &queue, &message_id, admin.signing.as_deref()).await?;
    audit(&caller, "dlq-redrive", &format!("{}/{message_id}", dlq_name(&queue)), "");
    Ok(Json(RedriveResult { moved: r.moved, refreshed: r.refreshed }))
}

/// Moves every dead-lettered message of a queue back to it.
#[utoipa::path(post, path = "/api/v1/dlq/{queue}/redrive", tag = "dlq", params(QueueName),
    responses(
        (status = 200, description = "Moved", body = RedriveResult),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody),
    )
)]
pub async fn redrive_queue(
    State(admin): State<Admin>,
    headers: HeaderMap,
    Path(QueueName { queue }): Path<QueueName>,
) -> ApiResult<RedriveResult> {
    let caller = admin.caller(&headers, Role::Admin)?;
    known(&admin, &queue)?;
    let r = operator::redrive_all(admin.queue.as_ref(), &queue, admin.signing.as_deref()).await?;
    audit(&caller, "dlq-redrive-all", &dlq_name(&queue), &format!("{} message(s)", r.moved));
    Ok(Json(RedriveResult { moved: r.moved, refreshed: r.refreshed }))
}
