//! Trace export, end to end on a real worker process: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a tiny collector on loopback,
//! a traced command's span is POSTed to `/v1/traces` as OTLP protobuf, in
//! the trace of the command's `traceparent` (the trace id's 16 raw bytes are
//! in the body); the worker's log lines carry the same trace id.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use sqsaga_embedded::{EmbeddedBackend, Sync};
use sqsaga_protocol::{ATTR_TRACEPARENT, TraceParent};
use sqsaga_queue::{OutgoingMessage, Queue, QueueSpec, Receive};
use support::{Proc, eventually, reserve, stock};

const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One request the collector received.
struct Posted {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// Accepts HTTP/1.1 requests on 127.0.0.1:0, answers each `200` with an
/// empty body (an empty ExportTraceServiceResponse), and reports them.
fn collector() -> (String, mpsc::Receiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || serve_connection(stream, &tx));
        }
    });
    (url, rx)
}

fn serve_connection(stream: std::net::TcpStream, tx: &mpsc::Sender<Posted>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        let (mut length, mut content_type) = (0usize, String::new());
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(Posted { path, content_type, body });
        let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_a_traced_command_are_exported_over_otlp_in_its_trace() {
    let (endpoint, posted) = collector();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stock(&data, "A", 5);
    let data_arg = data.display().to_string();
    let mut worker = Proc::spawn(
        &["worker", "--service", "inventory", "--data-dir", &data_arg],
        // Per-command log lines are at debug.
        &[("SQSAGA_WAIT_TIME", "1s"), ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("LOG_LEVEL", "debug")],
    );
    let addr = worker.http_addr();
    eventually("the worker to be ready", Duration::from_secs(30), || support::get(addr, "/readyz").status == 200);

    let queue = EmbeddedBackend::open(&data, Sync::Full).unwrap().queue();
    // Replies go to the orchestrator's queue, which the orchestrator creates.
    queue.ensure(&QueueSpec::named("orchestrator")).await.unwrap();
    let command = OutgoingMessage::new(reserve("o-1", "A")).with_attribute(ATTR_TRACEPARENT, TRACE);
    queue.send("inventory", command).await.unwrap();
    let mut replies = Vec::new();
    for _ in 0..100 {
        replies = queue.receive("orchestrator", Receive::up_to(1)).await.unwrap();
        if !replies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(replies.len(), 1, "no reply; logs:\n{}", worker.logs());

    // Stopping flushes the batch of spans.
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "logs:\n{}", worker.logs());

    let trace = TraceParent::parse(TRACE).unwrap();
    let mut requests = Vec::new();
    while let Ok(p) = posted.recv_timeout(Duration::from_secs(10)) {
        let found = contains(&p.body, &trace.trace_id_bytes());
        requests.push(p);
        if found {
            break;
        }
    }
    assert!(!requests.is_empty(), "nothing was exported; logs:\n{}", worker.logs());
    assert!(requests.iter().all(|p| p.path == "/v1/traces"), "paths: {:?}", paths(&requests));
    assert!(requests.iter().all(|p| p.content_type == "application/x-protobuf"));
    assert!(
        requests.iter().any(|p| contains(&p.body, &trace.trace_id_bytes()) && contains(&p.body, b"command")),
        "no exported span is in the command's trace"
    );

    // The log line of the command carries the same trace id.
    let logged = worker.wait_for_log(Duration::from_secs(1), |v| v["message"] == "Command succeeded.");
    let logged = logged.unwrap_or_else(|| panic!("no `Command succeeded.` line:\n{}", worker.logs()));
    assert_eq!(logged["trace_id"], trace.trace_id(), "{logged}");
    assert_eq!(logged["saga_id"], "o-1", "{logged}");
    assert_eq!(logged["command_id"], "o-1:0:a:1", "{logged}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn paths(requests: &[Posted]) -> Vec<&str> {
    requests.iter().map(|p| p.path.as_str()).collect()
}
