//! The order saga in AWS mode against the emulator (moto, started by
//! `scripts/test`): `sqsaga demo --backend aws` in one process, and the
//! multi-process form (`demo load`, `orchestrator`, three `worker`s, `demo
//! check`) with `SQSAGA_BACKEND=aws`. Both must pass the invariant check.

#![allow(clippy::unwrap_used, reason = "helpers outside #[test] fns unwrap too; a failure is the test failing")]

use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_sqsaga");

/// The emulator's endpoint; the test fails (never skips) without one.
fn endpoint() -> String {
    std::env::var("AWS_TEST_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_TEST_ENDPOINT_URL is not set: run `scripts/test`, or `scripts/moto.sh start` and `eval \"$(scripts/moto.sh env)\"`")
    })
}

/// A command with a clean environment pointing at the emulator, with its own
/// queue prefix and table so tests never collide.
fn sqsaga(prefix: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("SQSAGA_QUEUE_PREFIX", format!("{prefix}-"))
        .env("SQSAGA_TABLE", format!("{prefix}-sagas"))
        .env("SQSAGA_HTTP_ADDR", "127.0.0.1:0")
        .env("SQSAGA_WAIT_TIME", "1s")
        .env("LOG_LEVEL", "warn");
    cmd
}

/// A fresh queue prefix and table name per test.
fn prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn last_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{text}"))
}

#[test]
fn demo_on_sqs_and_dynamodb_passes_its_invariant_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = sqsaga(&prefix())
        .args(["demo", "--backend", "aws", "--orders", "40", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let summary = last_json(&out.stdout);
    assert!(out.status.success(), "{summary}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary["sagas"], 40);
    assert_eq!(summary["unfinished"], 0);
    assert_eq!(summary["invariants_ok"], true);
}

/// Kills the processes when the test ends, pass or fail.
struct Fleet(Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(prefix: &str, dir: &Path, args: &[&str]) -> Child {
    sqsaga(prefix)
        .env("SQSAGA_BACKEND", "aws")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn multi_process_demo_on_sqs_and_dynamodb_passes_its_invariant_check() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = prefix();
    let load = sqsaga(&prefix)
        .args(["demo", "load", "--backend", "aws", "--orders", "30", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(load.status.success(), "demo load: {}", String::from_utf8_lossy(&load.stderr));
    let _fleet = Fleet(vec![
        spawn(&prefix, dir.path(), &["orchestrator"]),
        spawn(&prefix, dir.path(), &["worker", "--service", "inventory"]),
        spawn(&prefix, dir.path(), &["worker", "--service", "payment"]),
        spawn(&prefix, dir.path(), &["worker", "--service", "notification"]),
    ]);
    let check = sqsaga(&prefix)
        .args(["demo", "check", "--backend", "aws", "--wait", "120", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let summary = last_json(&check.stdout);
    assert!(check.status.success(), "{summary}");
    assert_eq!(summary["sagas"], 30);
    assert_eq!(summary["unfinished"], 0);
    assert_eq!(summary["invariants_ok"], true);
}
