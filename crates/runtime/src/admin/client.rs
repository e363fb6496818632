//! The admin API from the other side: what `sqsaga sagas|dlq|fleet
//! --server URL` use to operate a remote orchestrator without database
//! credentials. The token comes from the environment
//! (`SQSAGA_ADMIN_TOKEN`, else `SQSAGA_ADMIN_READ_TOKEN`), never a flag
//! (flags show in `ps`). Also the text renderings of the API's answers the
//! binary prints.

use std::fmt::Write as _;
use std::time::Duration;

use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, Request};
use serde_json::Value;

/// Why a call to a remote admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is not a valid URL")]
    BadUrl(String),
    #[error("cannot reach the admin API at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    #[error("{url} answered {status}: {message}")]
    Refused { url: String, status: u16, message: String },
}

/// A client of one orchestrator's admin API.
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient,
}

impl Client {
    /// `server` is the API's base URL (`http://host:port`); the token is
    /// read from the environment.
    pub fn from_env(server: &str) -> Client {
        let token = ["SQSAGA_ADMIN_TOKEN", "SQSAGA_ADMIN_READ_TOKEN"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|t| !t.trim().is_empty()));
        Client::new(server, token)
    }

    pub fn new(server: &str, token: Option<String>) -> Client {
        Client {
            base: server.trim_end_matches('/').to_string(),
            token,
            http: HyperClient::with_default_connector(Duration::from_secs(30), None),
        }
    }

    /// `GET <base><path>` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path).await
    }

    /// `POST <base><path>` (no body) as JSON.
    pub async fn post(&self, path: &str) -> Result<Value, ClientError> {
        self.call("POST", path).await
    }

    async fn call(&self, method: &str, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url).header("accept", "application/json");
        if let Some(t) = &self.token {
            request = request.header("authorization", format!("Bearer {}", t.trim()));
        }
        let request = request.body(Bytes::new()).map_err(|_| ClientError::BadUrl(url.clone()))?;
        let response = self
            .http
            .send_bytes(request)
            .await
            .map_err(|e| ClientError::Unreachable { url: url.clone(), cause: e.to_string() })?;
        let status = response.status().as_u16();
        let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let mut message = body["error"].as_str().map_or_else(|| body.to_string(), str::to_string);
            if status == 401 {
                message.push_str(" (set SQSAGA_ADMIN_TOKEN, or SQSAGA_ADMIN_READ_TOKEN to read)");
            }
            return Err(ClientError::Refused { url, status, message });
        }
        Ok(body)
    }
}

/// Epoch milliseconds as RFC 3339 UTC (`2026-12-06T01:02:03.456Z`).
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn ms(v: &Value, key: &str) -> String {
    v[key].as_u64().map(rfc3339).unwrap_or_default()
}

/// A page of `GET /api/v1/sagas` as a table.
pub fn render_sagas(page: &Value) -> String {
    let mut out = format!("{:<40} {:<18} {:<15} {:<24} {:<24}\n", "ID", "SAGA", "STATUS", "STARTED", "UPDATED");
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    for r in &rows {
        let saga = format!("{} v{}", text(r, "saga"), r["version"]);
        let _ = writeln!(
            out,
            "{:<40} {:<18} {:<15} {:<24} {:<24}",
            text(r, "id"),
            saga,
            text(r, "status"),
            ms(r, "started_at"),
            ms(r, "updated_at")
        );
    }
    let total: u64 = page["counts"].as_object().map(|c| c.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    let more = if page["next_cursor"].is_string() { " (more: narrow the filters)" } else { "" };
    let _ = writeln!(out, "showing {} of {total}{more}", rows.len());
    out
}

/// `GET /api/v1/sagas/{id}` as the `sagas show` text.
pub fn render_saga(s: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "saga     {} ({} v{})", text(s, "id"), text(s, "saga"), s["version"]);
    let _ = writeln!(out, "status   {}", text(s, "status"));
    if let Some(reason) = s["reason"].as_str() {
        let _ = writeln!(out, "reason   {reason}");
    }
    let _ = writeln!(
        out,
        "started  {}\nupdated  {}\ndeadline {}",
        ms(s, "started_at"),
        ms(s, "updated_at"),
        ms(s, "deadline_at")
    );
    let _ = writeln!(out, "input    {}\nsteps", s["input"]);
    for st in s["steps"].as_array().into_iter().flatten() {
        let worker = st["worker"]["instance"].as_str().map(|w| format!(" by {w}")).unwrap_or_default();
        let error = st["error"].as_str().map(|e| format!(" ({e})")).unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}. {:<18} {:<26} attempts {} / compensations {}{worker}{error}",
            st["index"],
            text(st, "name"),
            text(st, "status").replace('_', " "),
            st["attempts"],
            st["compensation_attempts"]
        );
    }
    out.push_str("history\n");
    for h in s["history"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {} {:<7} {}", ms(h, "at"), text(h, "event"), text(h, "note"));
    }
    out
}

/// `GET /api/v1/dlq/{queue}/messages` as the `dlq list` text.
pub fn render_dlq(queue: &str, messages: &Value) -> String {
    let list = messages.as_array().cloned().unwrap_or_default();
    let mut out = format!("{} message(s) in {}\n", list.len(), sqsaga_queue::dlq_name(queue));
    for m in &list {
        let reason = m["reason"].as_str().unwrap_or("(no reason recorded)");
        let body: String = text(m, "body").chars().take(80).collect();
        let _ = writeln!(out, "  {}  {reason}\n      {body}", text(m, "message_id"));
    }
    out
}
