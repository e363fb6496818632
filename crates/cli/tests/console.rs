//! The operator console and the admin API on a real orchestrator process
//! (embedded backend, port 0) seeded with a saga needing an operator, two
//! running sagas and a dead-lettered message:
//!
//! - the console driven in Debian's Chromium by `tests/browser/console.mjs`
//!   (playwright-core, pinned in its package-lock.json): every page opened
//!   and photographed to `target/console-screenshots/`, the saga resumed,
//!   one cancelled and the message redriven through the UI; the results
//!   are then checked through the API;
//! - schemathesis (from `.venv`) against the served OpenAPI document: no
//!   5xx, every response matching its schema, 401/403 where they belong;
//! - the security rules on the real binary: a non-loopback admin address
//!   without a token exits 2 naming the setting; a read token cannot mutate.
//!
//! `scripts/test` installs Chromium (`apt-get install chromium
//! chromium-driver`), the npm package (`npm ci` in tests/browser) and
//! schemathesis; without them these tests fail saying what is missing.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sqsaga_core::machine::{SagaStatus, StepStatus, start};
use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive};
use sqsaga_store::{HistoryEntry, SagaStore, SagaWrite};
use support::{Proc, eventually};

const ADMIN: &str = "console-admin-token-0123456789";
const READ: &str = "console-read-token-0123456789";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Seeds `data`: `order-stuck` (needs an operator), `order-run-1` and
/// `order-run-2` (running, their first step not sent yet), and one poison
/// message in the `inventory` DLQ.
fn seed(data: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend = EmbeddedBackend::open(data, Sync::Normal).unwrap();
        let defs = sqsaga_order::run::definitions().unwrap();
        let queue = backend.queue();
        sqsaga_orchestrator::ensure_queues(queue.as_ref(), &defs, &QueueSpec::named("template")).await.unwrap();
        let def = defs.latest("create_order").unwrap();
        let now = sqsaga_orchestrator::clock::now_ms();
        let mut writes = Vec::new();
        for (i, (id, status)) in [
            ("order-stuck", SagaStatus::NeedsOperator),
            ("order-run-1", SagaStatus::Running),
            ("order-run-2", SagaStatus::Running),
        ]
        .into_iter()
        .enumerate()
        {
            let input = json!({"order_id": id, "sku": "sku-1", "qty": 1, "account": "acct-1", "amount": 5});
            let mut d = start(&def, id, input, now + i as u64);
            d.state.status = status;
            let step = &mut d.state.steps[0];
            if status == SagaStatus::NeedsOperator {
                step.status = StepStatus::CompensationFailed;
                step.due_at = None;
                d.state.reason = Some("step reserve_stock refused its compensation: warehouse offline".into());
            } else {
                // Not sent yet: no timer but the deadline, so the test is not raced by a step timeout.
                step.status = StepStatus::Pending;
                (step.attempt, step.due_at, step.started_at) = (0, None, None);
            }
            let history = vec![HistoryEntry { at: now, event: "start".into(), note: d.note.clone() }];
            writes.push(SagaWrite { instance: d.state, expected_revision: None, history, outbox: Vec::new() });
        }
        backend.store().commit(writes).await.unwrap();
        queue.send("inventory", OutgoingMessage::new("{\"order\": \"not an envelope\"}")).await.unwrap();
        let poison = queue.receive("inventory", Receive::up_to(1)).await.unwrap().remove(0);
        queue.dead_letter("inventory", &poison, "body is JSON but not a known sqsaga envelope").await.unwrap();
    });
}

/// An orchestrator on a seeded data dir, with both tokens.
fn orchestrator(data: &Path) -> (Proc, SocketAddr) {
    seed(data);
    let p = Proc::spawn(
        &["orchestrator", "--data-dir", &data.display().to_string()],
        &[("SQSAGA_WAIT_TIME", "1s"), ("SQSAGA_ADMIN_TOKEN", ADMIN), ("SQSAGA_ADMIN_READ_TOKEN", READ)],
    );
    let addr = p.http_addr();
    (p, addr)
}

/// One API call over a raw socket: status and JSON body.
fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn saga(addr: SocketAddr, id: &str) -> Value {
    let (status, body) = call(addr, "GET", &format!("/api/v1/sagas/{id}"), Some(READ));
    assert_eq!(status, 200, "{body}");
    body
}

/// A tool the test needs, or a failure saying how to get it.
fn require(path: &Path, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how} (scripts/test does it)", path.display());
    path.to_path_buf()
}

#[test]
fn the_console_in_chromium_resumes_cancels_and_redrives() {
    let chromium = require(Path::new("/usr/bin/chromium"), "apt-get install chromium chromium-driver");
    let browser_dir = root().join("tests/browser");
    require(&browser_dir.join("node_modules/playwright-core"), "run `npm ci` in tests/browser");
    let dir = tempfile::tempdir().unwrap();
    let (orchestrator, addr) = orchestrator(dir.path());
    let shots = root().join("target/console-screenshots");
    let out = Command::new("node")
        .arg(browser_dir.join("console.mjs"))
        .env("BASE_URL", format!("http://{addr}"))
        .env("TOKEN", ADMIN)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\n--- orchestrator logs ---\n{}",
        orchestrator.logs()
    );
    for page in ["overview", "sagas", "saga", "operator", "saga-cancelled", "dlq", "fleet", "definitions", "definition"]
    {
        let file = shots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&file).is_ok_and(|m| m.len() > 1000), "no screenshot {}", file.display());
    }
    // What the UI did, as the API and the queues see it.
    let stuck = saga(addr, "order-stuck");
    assert_eq!(stuck["status"], "compensating", "{stuck}");
    assert!(stuck["history"].as_array().unwrap().iter().any(|h| h["event"] == "resume"), "{stuck}");
    for id in ["order-run-1", "order-run-2"] {
        let s = saga(addr, id);
        assert_eq!(s["reason"], "cancelled by admin", "{s}");
        assert!(s["history"].as_array().unwrap().iter().any(|h| h["event"] == "cancel"), "{s}");
    }
    let (_, depths) = call(addr, "GET", "/api/v1/dlq", Some(READ));
    let inventory = depths.as_array().unwrap().iter().find(|d| d["queue"] == "inventory").unwrap();
    assert_eq!(inventory["depth"], 0, "{depths}");
    // The audit log names who did what.
    let logs = orchestrator.logs();
    for action in ["resume", "cancel", "dlq-redrive"] {
        assert!(
            logs.lines().any(|l| l.contains("Operator request.")
                && l.contains(&format!("\"action\":\"{action}\""))
                && l.contains("\"who\":\"admin\"")),
            "no audit line for {action}:\n{logs}"
        );
    }
}

#[test]
fn schemathesis_finds_no_error_against_the_openapi_document() {
    let st = require(&root().join(".venv/bin/schemathesis"), "pip install schemathesis into .venv");
    let dir = tempfile::tempdir().unwrap();
    let (orchestrator, addr) = orchestrator(dir.path());
    let base = format!("http://{addr}");
    let run = |token: &str, checks: &str| {
        Command::new(&st)
            .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", checks, "--max-examples", "15", "--exclude-path", "/api/v1/events"])
            .args(["--request-timeout", "20", "--no-color"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .unwrap()
    };
    for (token, what) in [(ADMIN, "admin"), (READ, "read")] {
        let out = run(
            token,
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth",
        );
        assert!(
            out.status.success(),
            "schemathesis with the {what} token:\n{}\n{}\n--- logs ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            orchestrator.logs()
        );
    }
    // Without a valid token every operation is refused.
    for op in ["GET /api/v1/sagas", "GET /api/v1/dlq", "POST /api/v1/sagas/order-stuck/resume", "GET /api/v1/fleet"] {
        let (method, path) = op.split_once(' ').unwrap();
        assert_eq!(call(addr, method, path, None).0, 401, "{op}");
        assert_eq!(call(addr, method, path, Some("guess-guess-guess-guess")).0, 401, "{op}");
    }
    assert_eq!(call(addr, "POST", "/api/v1/sagas/order-stuck/resume", Some(READ)).0, 403);
    assert_eq!(call(addr, "POST", "/api/v1/dlq/inventory/redrive", Some(READ)).0, 403);
}

#[test]
fn a_non_loopback_admin_address_without_a_token_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let mut p = Proc::spawn(&["orchestrator", "--data-dir", &data], &[("SQSAGA_ADMIN_ADDR", "0.0.0.0:0")]);
    let status = p.wait_exit(Duration::from_secs(30)).expect("the orchestrator should refuse to start");
    assert_eq!(status.code(), Some(2), "{}", p.logs());
    assert!(p.logs().contains("SQSAGA_ADMIN_ADDR") || p.logs().contains("admin_addr"), "{}", p.logs());
    assert!(p.logs().contains("SQSAGA_ADMIN_TOKEN"), "{}", p.logs());
    // With a token it starts, and serves the API there.
    let mut ok = Proc::spawn(
        &["orchestrator", "--data-dir", &data],
        &[("SQSAGA_ADMIN_ADDR", "0.0.0.0:0"), ("SQSAGA_ADMIN_TOKEN", ADMIN)],
    );
    let line = ok
        .wait_for_log(Duration::from_secs(30), |v| v["message"] == "Admin API and console listening.")
        .unwrap_or_else(|| panic!("no admin listening line:\n{}", ok.logs()));
    let port: SocketAddr = line["admin"].as_str().unwrap().parse().unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port.port()));
    eventually("the admin API", Duration::from_secs(10), || call(addr, "GET", "/api/v1/whoami", Some(ADMIN)).0 == 200);
    assert_eq!(call(addr, "GET", "/api/v1/whoami", None).0, 401);
    ok.sigterm();
    assert_eq!(ok.wait_exit(Duration::from_secs(20)).and_then(|s| s.code()), Some(0), "{}", ok.logs());
}

/// `sqsaga <args>` with only `env` set: exit code, stdout, stderr.
fn sqsaga(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(support::BIN).args(args).env_clear().envs(env.iter().copied()).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn sagas_dlq_and_fleet_talk_to_a_remote_orchestrator() {
    let dir = tempfile::tempdir().unwrap();
    let (orchestrator, addr) = orchestrator(dir.path());
    let server = format!("http://{addr}");
    let read = [("SQSAGA_ADMIN_READ_TOKEN", READ)];
    let admin = [("SQSAGA_ADMIN_TOKEN", ADMIN)];
    // No database here: the data dir does not exist for this command.
    let (code, out, err) = sqsaga(&["sagas", "list", "--server", &server, "--status", "running", "--json"], &read);
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["order-run-2", "order-run-1"]);
    let (code, out, err) = sqsaga(&["sagas", "list", "--server", &server], &read);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("order-stuck") && out.contains("needs_operator") && out.contains("showing 3 of 3"), "{out}");
    let (code, out, _) = sqsaga(&["sagas", "show", "order-stuck", "--server", &server], &read);
    assert_eq!(code, 0);
    assert!(out.contains("status   needs_operator") && out.contains("compensation failed"), "{out}");
    let (code, out, _) = sqsaga(&["dlq", "list", "inventory", "--server", &server], &read);
    assert_eq!(code, 0);
    assert!(out.contains("1 message(s) in inventory-dlq") && out.contains("not a known sqsaga envelope"), "{out}");
    let (code, out, err) = sqsaga(&["fleet", "--server", &server, "--json"], &read);
    assert_eq!(code, 0, "{err}");
    assert!(serde_json::from_str::<Value>(out.trim()).unwrap()["services"].is_array(), "{out}");
    // Mutations: refused without a token and with the read token, done with the admin one.
    let (code, _, err) = sqsaga(&["sagas", "resume", "order-stuck", "--server", &server], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("SQSAGA_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = sqsaga(&["sagas", "resume", "order-stuck", "--server", &server], &read);
    assert!(code != 0 && err.contains("403"), "{err}");
    let (code, out, err) = sqsaga(&["sagas", "resume", "order-stuck", "--server", &server], &admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("resume requested for order-stuck"), "{out}");
    let (code, out, err) = sqsaga(&["dlq", "redrive", "inventory", "--server", &server], &admin);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("moved 1 message(s) from inventory-dlq back to inventory"), "{out}");
    eventually("the resume to be applied", Duration::from_secs(20), || {
        saga(addr, "order-stuck")["status"] == "compensating"
    });
    drop(orchestrator);
}
