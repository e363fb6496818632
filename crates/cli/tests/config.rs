//! Bad configuration, on a real process: one run of `sqsaga worker` with
//! several bad environment variables and a config file with an unknown key
//! prints every problem, naming each variable and key, and exits 2 before it
//! touches a queue (the data directory is never created).
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::process::Command;

#[test]
fn every_problem_is_reported_at_once_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"queue_url": "sqs://nope", "log_level": "loud", "colour": "blue", "region": "us-east-1"}"#,
    )
    .unwrap();
    let out = Command::new(support::BIN)
        .args(["worker", "--service", "inventory", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .env_clear()
        .env("SQSAGA_CONCURRENCY", "lots")
        .env("SQSAGA_WAIT_TIME", "90s")
        .env("REGION", "moon-base")
        .env("SQSAGA_CONCURENCY", "4")
        .env("SQSAGA_REQUIRE_SIGNATURE", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    for needle in [
        "SQSAGA_CONCURRENCY=lots",
        "SQSAGA_WAIT_TIME=90s",
        "REGION=moon-base",
        "SQSAGA_CONCURENCY: unknown variable (did you mean `SQSAGA_CONCURRENCY`?)",
        "unknown key `colour`",
        "`queue_url` = \"sqs://nope\"",
        "`log_level` = \"loud\"",
        "SQSAGA_REQUIRE_SIGNATURE=true: needs a signing key",
    ] {
        assert!(stderr.contains(needle), "missing `{needle}` in:\n{stderr}");
    }
    let problems = stderr.lines().filter(|l| l.starts_with("  ")).count();
    assert_eq!(problems, 8, "one line per problem:\n{stderr}");
    assert!(stderr.starts_with("error: invalid configuration (8 problem(s)):"), "{stderr}");
    assert!(!data.exists(), "the data dir must not be created before the configuration is valid");
}

#[test]
fn an_https_trace_endpoint_is_refused_at_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(support::BIN)
        .args(["worker", "--service", "inventory", "--data-dir"])
        .arg(&data)
        .env_clear()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && stderr.contains("https is not supported"), "{stderr}");
    assert!(!data.exists());
}
