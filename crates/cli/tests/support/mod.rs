//! Helpers for tests that run the real `sqsaga` binary: start it with a
//! clean environment, learn its HTTP address from its JSON log lines (port 0
//! picks a free one and logs it), GET over a raw socket, send SIGTERM, wait
//! for the exit with a deadline, and build wire commands for the order
//! saga's participants. A process still running when its handle drops is
//! killed, pass or fail.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqsaga_core::machine::Phase;
use sqsaga_protocol::Envelope;

pub const BIN: &str = env!("CARGO_BIN_EXE_sqsaga");

/// A running `sqsaga` process and the log lines it wrote to stderr so far.
pub struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Runs `sqsaga <args>` with only `env` set (plus `LOG_LEVEL=info` and
    /// `SQSAGA_HTTP_ADDR=127.0.0.1:0` unless given), stderr captured.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env_clear().env("LOG_LEVEL", "info").env("SQSAGA_HTTP_ADDR", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, lines }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far, one line each.
    pub fn logs(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The first JSON log line matching `pred`, waiting up to `timeout`.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| pred(v));
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the process serves HTTP on, from its `HTTP listening.` line.
    pub fn http_addr(&self) -> SocketAddr {
        let line = self.wait_for_log(Duration::from_secs(30), |v| v["message"] == "HTTP listening.");
        let Some(line) = line else { panic!("no `HTTP listening.` line; logs:\n{}", self.logs()) };
        line["addr"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad addr in {line}"))
    }

    /// Sends SIGTERM, as Kubernetes and systemd do.
    pub fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status, waiting up to `timeout`; `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response reduced to data.
pub struct Got {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` over a raw TCP connection (HTTP/1.1, `Connection: close`).
pub fn get(addr: SocketAddr, path: &str) -> Got {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Got { status, content_type, body: body.to_string() }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An `inventory.reserve` command for order `order` (one unit of `sku`).
pub fn reserve(order: &str, sku: &str) -> String {
    Envelope::Command(sqsaga_protocol::Command {
        command_id: format!("{order}:0:a:1"),
        saga_id: order.to_string(),
        saga: "create_order".to_string(),
        version: 1,
        step: 0,
        step_name: "reserve_stock".to_string(),
        command: "inventory.reserve".to_string(),
        phase: Phase::Action,
        attempt: 1,
        contract: "inventory/v1".to_string(),
        payload: json!({"input": {"order_id": order, "sku": sku, "qty": 1}, "outputs": {}}),
        deadline: u64::MAX,
        not_after: None,
        sent_at: 0,
        reply_to: "orchestrator".to_string(),
        conforming: None,
    })
    .encode()
}

/// Stock for the inventory participant in `data`, so reservations succeed.
pub fn stock(data: &Path, sku: &str, units: i64) {
    let demo = sqsaga_order::DemoData { stock: vec![(sku.to_string(), units)], accounts: Vec::new() };
    sqsaga_order::seed_data(data, &demo).unwrap();
}
