//! The admin API in-process (no socket) over a real embedded backend in a
//! temporary directory: roles per route (401 without a token, 403 for a
//! read token on a mutation), filters and cursor pages, one saga in full,
//! resume and cancel as messages on the orchestrator queue, the DLQ browse,
//! redrive and delete, the live stream, and the OpenAPI document checked
//! against the routes that answer.
#![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{Value, json};
use sqsaga_core::machine::{SagaStatus, StepStatus, start};
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_http::JsonSource;
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE, SagaChange};
use sqsaga_protocol::Envelope;
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive, dlq_name};
use sqsaga_runtime::admin::{self, Admin, Tokens};
use sqsaga_store::{HistoryEntry, SagaStore, SagaSummary, SagaWrite};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-tests-0123";
const READ: &str = "read-token-for-tests-01234";

struct Fleet;
impl JsonSource for Fleet {
    fn render(&self) -> Value {
        json!({"at": 1, "services": [{"service": "inventory", "verdict": "converged"}]})
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: EmbeddedBackend,
    app: axum::Router,
    changes: tokio::sync::broadcast::Sender<SagaChange>,
}

fn definitions() -> Definitions {
    let yaml = include_str!("../../../examples/order/create_order.yaml");
    let mut defs = Definitions::default();
    defs.insert(sqsaga_core::yaml::parse_definition(yaml).unwrap(), "create_order.yaml").unwrap();
    defs
}

/// A saga of the order definition in `status`, started at `at`.
async fn seed_saga(store: &dyn SagaStore, defs: &Definitions, id: &str, status: SagaStatus, at: u64) {
    let def = defs.latest("create_order").unwrap();
    let mut d = start(&def, id, json!({"order_id": id}), at);
    d.state.status = status;
    if status == SagaStatus::NeedsOperator {
        d.state.steps[0].status = StepStatus::CompensationFailed;
        d.state.reason = Some("compensation refused".into());
    }
    d.state.trace = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let history = vec![HistoryEntry { at, event: "start".into(), note: d.note.clone() }];
    let write = SagaWrite { instance: d.state, expected_revision: None, history, outbox: Vec::new() };
    store.commit(vec![write]).await.unwrap();
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let backend = EmbeddedBackend::open(dir.path(), Sync::Normal).unwrap();
    let defs = definitions();
    let queue: Arc<dyn Queue> = backend.queue();
    sqsaga_orchestrator::ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
    let store: Arc<dyn SagaStore> = backend.store();
    seed_saga(store.as_ref(), &defs, "order-stuck", SagaStatus::NeedsOperator, 1_000).await;
    seed_saga(store.as_ref(), &defs, "order-run-1", SagaStatus::Running, 2_000).await;
    seed_saga(store.as_ref(), &defs, "order-run-2", SagaStatus::Running, 3_000).await;
    seed_saga(store.as_ref(), &defs, "other-done", SagaStatus::Completed, 4_000).await;
    queue.send("inventory", OutgoingMessage::new("{\"poison\": true}")).await.unwrap();
    let poison = queue.receive("inventory", Receive::up_to(1)).await.unwrap().remove(0);
    queue.dead_letter("inventory", &poison, "body is JSON but not a known sqsaga envelope").await.unwrap();
    let changes = tokio::sync::broadcast::channel(16).0;
    let app = admin::router(Admin {
        store,
        queue,
        definitions: Arc::new(defs),
        fleet: Arc::new(Fleet),
        changes: changes.clone(),
        signing: None,
        tokens: Tokens::new(Some(ADMIN), Some(READ)),
        shutdown: tokio_util::sync::CancellationToken::new(),
    });
    Fixture { _dir: dir, backend, app, changes }
}

/// One call: status and JSON body (`Null` when not JSON).
async fn call(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let request = match body {
        Some(b) => request.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
        None => request.body(Body::empty()).unwrap(),
    };
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn orchestrator_messages(backend: &EmbeddedBackend) -> Vec<Envelope> {
    let got = backend.queue().receive(ORCHESTRATOR_QUEUE, Receive::up_to(10)).await.unwrap();
    got.iter().map(|m| Envelope::decode(&m.body).unwrap()).collect()
}

#[tokio::test]
async fn roles_per_route() {
    let f = fixture().await;
    let p = "/api/v1";
    // (method, path, token, expected status)
    let cases: Vec<(Method, String, Option<&str>, StatusCode)> = vec![
        (Method::GET, format!("{p}/sagas"), None, StatusCode::UNAUTHORIZED),
        (Method::GET, format!("{p}/sagas"), Some("not-a-token-at-all-00000"), StatusCode::UNAUTHORIZED),
        (Method::GET, format!("{p}/sagas"), Some(READ), StatusCode::OK),
        (Method::GET, format!("{p}/sagas"), Some(ADMIN), StatusCode::OK),
        (Method::GET, format!("{p}/dlq"), None, StatusCode::UNAUTHORIZED),
        (Method::POST, format!("{p}/sagas/order-stuck/resume"), None, StatusCode::UNAUTHORIZED),
        (Method::POST, format!("{p}/sagas/order-stuck/resume"), Some(READ), StatusCode::FORBIDDEN),
        (Method::POST, format!("{p}/sagas/order-run-1/cancel"), Some(READ), StatusCode::FORBIDDEN),
        (Method::POST, format!("{p}/dlq/inventory/redrive"), Some(READ), StatusCode::FORBIDDEN),
        (Method::DELETE, format!("{p}/dlq/inventory/messages/x?reason=r"), Some(READ), StatusCode::FORBIDDEN),
        (Method::GET, format!("{p}/whoami"), Some(READ), StatusCode::OK),
        // The document and the console are public: they hold no data.
        (Method::GET, admin::OPENAPI_PATH.to_string(), None, StatusCode::OK),
        (Method::GET, "/".to_string(), None, StatusCode::OK),
        (Method::GET, "/console/app.js".to_string(), None, StatusCode::OK),
    ];
    for (method, path, token, expected) in cases {
        let (status, body) = call(&f.app, method.clone(), &path, token, None).await;
        assert_eq!(status, expected, "{method} {path} with {token:?}: {body}");
    }
    let (_, me) = call(&f.app, Method::GET, &format!("{p}/whoami"), Some(READ), None).await;
    assert_eq!(me, json!({"name": "read", "admin": false}));
    assert!(orchestrator_messages(&f.backend).await.is_empty(), "a refused call sent something");
}

#[tokio::test]
async fn saga_list_filters_and_pages() {
    let f = fixture().await;
    let ids = |body: &Value| -> Vec<String> {
        body["items"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
    };
    // (query, expected ids, newest start first)
    let cases: &[(&str, &[&str])] = &[
        ("", &["other-done", "order-run-2", "order-run-1", "order-stuck"]),
        ("status=needs_operator", &["order-stuck"]),
        ("status=running", &["order-run-2", "order-run-1"]),
        ("saga=create_order&id_prefix=order-run", &["order-run-2", "order-run-1"]),
        ("started_after=2000&started_before=4000", &["order-run-2", "order-run-1"]),
        ("saga=nope", &[]),
    ];
    for (query, expected) in cases {
        let (status, body) = call(&f.app, Method::GET, &format!("/api/v1/sagas?{query}"), Some(READ), None).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(ids(&body), *expected, "{query}");
        assert_eq!(body["counts"]["running"], 2, "{body}");
        assert_eq!(body["counts"]["needs_operator"], 1, "{body}");
    }
    // Pages of one, followed by cursor, give every saga once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (_, body) = call(&f.app, Method::GET, &format!("/api/v1/sagas?limit=1{q}"), Some(READ), None).await;
        seen.extend(ids(&body));
        cursor = body["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ["other-done", "order-run-2", "order-run-1", "order-stuck"]);
    for bad in ["status=sleeping", "limit=0", "limit=501", "cursor=garbage", "surprise=1"] {
        let (status, body) = call(&f.app, Method::GET, &format!("/api/v1/sagas?{bad}"), Some(READ), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn one_saga_in_full() {
    let f = fixture().await;
    let (status, s) = call(&f.app, Method::GET, "/api/v1/sagas/order-stuck", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["status"], "needs_operator");
    assert_eq!(s["reason"], "compensation refused");
    assert_eq!(s["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(s["input"], json!({"order_id": "order-stuck"}));
    assert_eq!(s["steps"][0]["name"], "reserve_stock");
    assert_eq!(s["steps"][0]["service"], "inventory");
    assert_eq!(s["steps"][0]["status"], "compensation_failed");
    assert_eq!(s["steps"][0]["attempts"], 1);
    assert_eq!(s["history"][0]["event"], "start");
    let (status, _) = call(&f.app, Method::GET, "/api/v1/sagas/nope", Some(READ), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn resume_and_cancel_are_requests_to_the_orchestrator() {
    let f = fixture().await;
    let post = |path: &'static str| call(&f.app, Method::POST, path, Some(ADMIN), None);
    // Wrong status: 409, nothing sent.
    assert_eq!(post("/api/v1/sagas/order-run-1/resume").await.0, StatusCode::CONFLICT);
    assert_eq!(post("/api/v1/sagas/order-stuck/cancel").await.0, StatusCode::CONFLICT);
    assert_eq!(post("/api/v1/sagas/other-done/cancel").await.0, StatusCode::CONFLICT);
    assert_eq!(post("/api/v1/sagas/nope/resume").await.0, StatusCode::NOT_FOUND);
    assert!(orchestrator_messages(&f.backend).await.is_empty());
    let (status, body) = post("/api/v1/sagas/order-stuck/resume").await;
    assert_eq!((status, &body), (StatusCode::ACCEPTED, &json!({"id": "order-stuck", "status": "requested"})));
    let (status, _) = post("/api/v1/sagas/order-run-1/cancel").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let sent = orchestrator_messages(&f.backend).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.iter().any(|e| matches!(e, Envelope::Resume(r) if r.saga_id == "order-stuck")), "{sent:?}");
    assert!(
        sent.iter()
            .any(|e| matches!(e, Envelope::Cancel(c) if c.saga_id == "order-run-1" && c.requested_by == "admin")),
        "{sent:?}"
    );
    // Start: checked against the definitions first.
    let start = |body: Value| call(&f.app, Method::POST, "/api/v1/sagas", Some(ADMIN), Some(body));
    assert_eq!(start(json!({"saga": "nope", "input": {}})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(start(json!({"saga": "create_order"})).await.0, StatusCode::BAD_REQUEST);
    let input = json!({"order_id": "o-9", "sku": "s", "qty": 1, "account": "a", "amount": 2});
    let (status, body) = start(json!({"saga": "create_order", "input": input, "id": "o-9"})).await;
    assert_eq!((status, body["id"].as_str()), (StatusCode::ACCEPTED, Some("o-9")), "{body}");
    let sent = orchestrator_messages(&f.backend).await;
    assert!(matches!(&sent[..], [Envelope::Start(s)] if s.saga_id == "o-9"), "{sent:?}");
}

#[tokio::test]
async fn dead_letters_browse_redrive_and_delete() {
    let f = fixture().await;
    let (_, depths) = call(&f.app, Method::GET, "/api/v1/dlq", Some(READ), None).await;
    let depth = |d: &Value, q: &str| d.as_array().unwrap().iter().find(|r| r["queue"] == q).unwrap()["depth"].clone();
    assert_eq!(depth(&depths, "inventory"), 1, "{depths}");
    assert_eq!(depth(&depths, "orchestrator"), 0, "{depths}");
    let (_, list) = call(&f.app, Method::GET, "/api/v1/dlq/inventory/messages", Some(READ), None).await;
    let m = &list[0];
    assert_eq!(m["reason"], "body is JSON but not a known sqsaga envelope");
    assert_eq!(m["source"], "inventory");
    let id = m["message_id"].as_str().unwrap().to_string();
    let one = format!("/api/v1/dlq/inventory/messages/{id}");
    let (status, got) = call(&f.app, Method::GET, &one, Some(READ), None).await;
    assert_eq!((status, &got["body"]), (StatusCode::OK, &json!("{\"poison\": true}")));
    assert_eq!(call(&f.app, Method::GET, "/api/v1/dlq/nope/messages", Some(READ), None).await.0, StatusCode::NOT_FOUND);
    // Delete needs a reason.
    assert_eq!(call(&f.app, Method::DELETE, &one, Some(ADMIN), None).await.0, StatusCode::BAD_REQUEST);
    // Redrive it: back on `inventory`, without the dead-letter attributes; the DLQ is empty.
    let (status, r) = call(&f.app, Method::POST, &format!("{one}/redrive"), Some(ADMIN), None).await;
    assert_eq!((status, r), (StatusCode::OK, json!({"moved": 1, "refreshed": 0})));
    let back = f.backend.queue().receive("inventory", Receive::up_to(10)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert!(back[0].attributes.is_empty(), "{:?}", back[0].attributes);
    assert_eq!(f.backend.queue().depth(&dlq_name("inventory")).await.unwrap().visible, 0);
    assert_eq!(call(&f.app, Method::POST, &format!("{one}/redrive"), Some(ADMIN), None).await.0, StatusCode::NOT_FOUND);
    // Dead-letter it again, then delete it with a reason.
    f.backend.queue().dead_letter("inventory", &back[0], "again").await.unwrap();
    let (_, list) = call(&f.app, Method::GET, "/api/v1/dlq/inventory/messages", Some(READ), None).await;
    let id = list[0]["message_id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/dlq/inventory/messages/{id}?reason=duplicate%20of%20an%20order");
    assert_eq!(call(&f.app, Method::DELETE, &path, Some(ADMIN), None).await.0, StatusCode::OK);
    let (_, list) = call(&f.app, Method::GET, "/api/v1/dlq/inventory/messages", Some(READ), None).await;
    assert_eq!(list, json!([]));
    // Redrive all of an empty DLQ moves nothing.
    let (status, r) = call(&f.app, Method::POST, "/api/v1/dlq/inventory/redrive", Some(ADMIN), None).await;
    assert_eq!((status, r), (StatusCode::OK, json!({"moved": 0, "refreshed": 0})));
}

#[tokio::test]
async fn definitions_as_yaml_and_graph_and_fleet() {
    let f = fixture().await;
    let (_, defs) = call(&f.app, Method::GET, "/api/v1/definitions", Some(READ), None).await;
    assert_eq!(defs[0]["name"], "create_order");
    assert_eq!(defs[0]["unfinished"], 3, "two running and one needing an operator: {defs}");
    let (status, d) = call(&f.app, Method::GET, "/api/v1/definitions/create_order/1", Some(READ), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let yaml = d["yaml"].as_str().unwrap();
    let reparsed = sqsaga_core::yaml::parse_definition(yaml).unwrap_or_else(|p| panic!("{p:?}\n{yaml}"));
    assert_eq!(reparsed, *definitions().latest("create_order").unwrap(), "the YAML is the definition");
    let nodes: Vec<&str> = d["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(nodes.first(), Some(&"saga_start"));
    assert!(nodes.contains(&"step0") && nodes.contains(&"comp0"), "{nodes:?}");
    assert!(d["edges"].as_array().unwrap().iter().any(|e| e["from"] == "saga_start" && e["to"] == "step0"));
    assert_eq!(
        call(&f.app, Method::GET, "/api/v1/definitions/create_order/9", Some(READ), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&f.app, Method::GET, "/api/v1/definitions/create_order/x", Some(READ), None).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, fleet) = call(&f.app, Method::GET, "/api/v1/fleet", Some(READ), None).await;
    assert_eq!(fleet["services"][0]["verdict"], "converged");
}

#[tokio::test]
async fn the_live_stream_carries_saga_changes() {
    let f = fixture().await;
    let request =
        Request::get("/api/v1/events").header("authorization", format!("Bearer {READ}")).body(Body::empty()).unwrap();
    let response = f.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let summary = SagaSummary {
        id: "order-run-1".into(),
        saga: "create_order".into(),
        version: 1,
        status: SagaStatus::Compensating,
        started_at: 2_000,
        updated_at: 5_000,
    };
    f.changes.send(SagaChange { summary, note: "cancelled by admin; compensating".into() }).unwrap();
    let mut body = response.into_body().into_data_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(text.starts_with("event: saga\n"), "{text}");
    let data: Value = serde_json::from_str(text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["id"], "order-run-1");
    assert_eq!(data["status"], "compensating");
    assert_eq!(data["note"], "cancelled by admin; compensating");
}

/// Every operation of the document answers on its path and method (no 404
/// from the router, no 405), and every API route is in the document.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let f = fixture().await;
    let (status, doc) = call(&f.app, Method::GET, admin::OPENAPI_PATH, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc, serde_json::to_value(admin::openapi()).unwrap(), "the served document is the generated one");
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object(), "{}", doc["components"]);
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    operations.sort();
    let expected = [
        "DELETE /api/v1/dlq/{queue}/messages/{message_id}",
        "GET /api/v1/definitions",
        "GET /api/v1/definitions/{name}/{version}",
        "GET /api/v1/dlq",
        "GET /api/v1/dlq/{queue}/messages",
        "GET /api/v1/dlq/{queue}/messages/{message_id}",
        "GET /api/v1/events",
        "GET /api/v1/fleet",
        "GET /api/v1/sagas",
        "GET /api/v1/sagas/counts",
        "GET /api/v1/sagas/{id}",
        "GET /api/v1/whoami",
        "POST /api/v1/dlq/{queue}/messages/{message_id}/redrive",
        "POST /api/v1/dlq/{queue}/redrive",
        "POST /api/v1/sagas",
        "POST /api/v1/sagas/{id}/cancel",
        "POST /api/v1/sagas/{id}/resume",
    ];
    assert_eq!(operations, expected);
    // Each documented operation is routed: with the read token every one
    // answers 200 or, for mutations, 403 — never the router's 404 or 405.
    for op in &operations {
        let (method, path) = op.split_once(' ').unwrap();
        if path.ends_with("/events") {
            continue; // endless; checked above
        }
        let concrete = path
            .replace("{queue}", "inventory")
            .replace("{message_id}", "m-1")
            .replace("{id}", "order-stuck")
            .replace("{name}", "create_order")
            .replace("{version}", "1");
        let (status, body) = call(&f.app, method.parse().unwrap(), &concrete, Some(READ), None).await;
        let ok = if method == "GET" {
            status == StatusCode::OK || (status == StatusCode::NOT_FOUND && body["error"].is_string())
        } else {
            status == StatusCode::FORBIDDEN
        };
        assert!(ok, "{op} -> {status} {body}");
    }
    // And an undocumented API path is not served.
    assert_eq!(call(&f.app, Method::GET, "/api/v1/nope", Some(READ), None).await.0, StatusCode::NOT_FOUND);
}
