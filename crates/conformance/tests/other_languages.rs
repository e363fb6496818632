//! The participants in other languages pass the conformance kit, each as a
//! separate process with its barrier in a scratch PostgreSQL database: on
//! the embedded backend through the orchestrator's SQS endpoint
//! (`SQSAGA_SQS_ENDPOINT_ADDR`; Debian's Go SDK speaks the query protocol to
//! it, boto3 the JSON one), with signatures required; and on the emulator
//! (moto). Each answers `/healthz` and `/readyz`, and SIGTERM ends it
//! cleanly.
//!
//! - Go (`participants/go`, the seed's worker finished): needs Go and the
//!   Debian packages of the AWS SDK for Go v2 and lib/pq;
//! - Python (`participants/python`): boto3 and psycopg in `.venv`.
//!
//! `scripts/test` installs both; the tests fail, never skip, without them.
#![allow(clippy::unwrap_used, reason = "tests: a failure is the test failing")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqsaga_conformance::{Verdict, run_configured};
use sqsaga_orchestrator::Definitions;
use sqsaga_postgres::scratch::ScratchDb;
use sqsaga_runtime::{CancellationToken, run_orchestrator};

mod support;

use support::{build, free_port, settings};

const SERVICE: &str = "conformance";
const KEY: &str = "go-conformance-test-key-0123456789abcdef";

/// `.venv/bin/python` with boto3 and psycopg.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import boto3, psycopg"]).status().is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import boto3 and psycopg: run scripts/test, or scripts/moto.sh start and \
         .venv/bin/pip install -r participants/python/requirements.txt",
        python.display()
    );
    python
}

/// Which participant runs.
#[derive(Debug, Clone, Copy)]
enum Language {
    Go,
    Python,
}

impl Language {
    fn command(self) -> Command {
        match self {
            Language::Go => Command::new(build()),
            Language::Python => {
                let mut cmd = Command::new(python());
                cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../participants/python/participant.py"));
                cmd
            }
        }
    }
}

/// The participant process; killed when the test ends, pass or fail.
struct Participant {
    child: Child,
    http: String,
}

impl Participant {
    fn start(language: Language, database_url: &str, env: &[(&str, String)]) -> Participant {
        let port = free_port();
        let mut cmd = language.command();
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SQSAGA_SERVICE", SERVICE)
            .env("DATABASE_URL", format!("{database_url}?sslmode=disable"))
            .env("SQSAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("SQSAGA_WAIT_TIME", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Participant { child: cmd.spawn().unwrap(), http: format!("127.0.0.1:{port}") }
    }

    /// The status code of GET `path` on its HTTP port, if it answers.
    fn get(&self, path: &str) -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.http).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let since = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the participant exited with {status} after SIGTERM");
                return;
            }
            assert!(since.elapsed() < Duration::from_secs(15), "the participant did not exit within 15 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_all_pass(report: &sqsaga_conformance::Report, signatures: bool) {
    assert!(report.passed(), "{}", report.table());
    let skipped = report.cases.iter().filter(|c| matches!(c.verdict, Verdict::Skip(_))).count();
    assert_eq!(skipped, if signatures { 0 } else { 3 }, "{}", report.table());
}

/// The kit against `language`'s participant on the embedded backend, through the endpoint.
async fn on_the_embedded_endpoint(language: Language) {
    let db = ScratchDb::create().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = free_port();
    let signing = [("SQSAGA_SIGNING_KEY", KEY.to_string()), ("SQSAGA_REQUIRE_SIGNATURE", "true".to_string())];
    let mut env = vec![
        ("SQSAGA_DATA_DIR", dir.path().display().to_string()),
        ("SQSAGA_SQS_ENDPOINT_ADDR", format!("127.0.0.1:{endpoint}")),
        ("SQSAGA_WAIT_TIME", "1s".to_string()),
    ];
    env.extend(signing.iter().cloned());
    let settings = settings(&env);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let orchestrator =
        tokio::spawn(run_orchestrator(settings.clone(), Arc::new(Definitions::default()), listener, shutdown.clone()));

    let mut participant_env = vec![("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{endpoint}"))];
    participant_env.extend(signing.iter().cloned());
    let participant = Participant::start(language, &db.url, &participant_env);
    let report = run_configured(&settings, SERVICE, Duration::from_secs(20)).await.unwrap();
    assert_all_pass(&report, true);
    assert_eq!(participant.get("/healthz"), Some(200));
    assert_eq!(participant.get("/readyz"), Some(200));
    participant.terminate();

    shutdown.cancel();
    orchestrator.await.unwrap().unwrap();
    db.drop_now().await.unwrap();
}

/// The kit against `language`'s participant on the emulator.
async fn on_the_emulator(language: Language) {
    let moto = std::env::var("AWS_TEST_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_TEST_ENDPOINT_URL is not set: run `scripts/test`, or `scripts/moto.sh start` and `eval \"$(scripts/moto.sh env)\"`")
    });
    let db = ScratchDb::create().await.unwrap();
    let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let aws = [
        ("AWS_ENDPOINT_URL", moto.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("SQSAGA_QUEUE_PREFIX", prefix.clone()),
    ];
    // The latency preset: no batching windows, so the kit's round trips are not padded.
    let mut env = vec![
        ("SQSAGA_BACKEND", "aws".to_string()),
        ("SQSAGA_TABLE", format!("{prefix}sagas")),
        ("SQSAGA_SQS_PRESET", "latency".to_string()),
    ];
    env.extend(aws.iter().cloned());
    let settings = settings(&env);
    let participant = Participant::start(language, &db.url, &aws);
    let report = run_configured(&settings, SERVICE, Duration::from_secs(20)).await.unwrap();
    assert_all_pass(&report, false);
    participant.terminate();
    db.drop_now().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_participant_passes_on_the_embedded_backend_through_the_sqs_endpoint() {
    build();
    on_the_embedded_endpoint(Language::Go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_participant_passes_on_the_emulator() {
    build();
    on_the_emulator(Language::Go).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_participant_passes_on_the_embedded_backend_through_the_sqs_endpoint() {
    python();
    on_the_embedded_endpoint(Language::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_participant_passes_on_the_emulator() {
    python();
    on_the_emulator(Language::Python).await;
}
