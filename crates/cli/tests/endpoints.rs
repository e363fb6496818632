//! `/healthz`, `/readyz` and `/metrics` served by a real orchestrator and a
//! real worker process (port 0, found in their logs), read over raw TCP; the
//! metrics must be valid Prometheus text and name what docs/operations.md
//! lists. Both processes then stop on SIGTERM with exit code 0.
#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::time::Duration;

use serde_json::Value;
use sqsaga_http::metrics::assert_valid_exposition;
use support::{Proc, eventually, get};

/// Checks the three endpoints of one process and returns its metrics text.
fn check_endpoints(p: &Proc, service: &str) -> String {
    let addr = p.http_addr();
    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"), "{service} /healthz");

    eventually(&format!("{service} to be ready"), Duration::from_secs(30), || get(addr, "/readyz").status == 200);
    let ready = get(addr, "/readyz");
    assert!(ready.content_type.starts_with("application/json"), "{}", ready.content_type);
    let body: Value = serde_json::from_str(&ready.body).unwrap();
    assert_eq!(body["status"], "ready", "{body}");
    assert_eq!(body["service"], service, "{body}");
    assert!(body["fingerprint"].as_str().is_some_and(|f| !f.is_empty()), "{body}");

    let metrics = get(addr, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain; version=0.0.4"), "{}", metrics.content_type);
    assert_valid_exposition(&metrics.body);
    assert_eq!(get(addr, "/nope").status, 404);
    metrics.body
}

fn has_family(text: &str, name: &str) -> bool {
    text.lines().any(|l| l.starts_with(&format!("# TYPE {name} ")))
}

#[test]
fn orchestrator_and_worker_serve_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let mut orchestrator = Proc::spawn(&["orchestrator", "--data-dir", &data], &[("SQSAGA_WAIT_TIME", "1s")]);
    let text = check_endpoints(&orchestrator, "orchestrator");
    for name in [
        "sqsaga_ready",
        "sqsaga_loop_heartbeat_age_seconds",
        "sqsaga_build_info",
        "sqsaga_messages_received_total",
        "sqsaga_events_applied_total",
        "sqsaga_sagas_started_total",
        "sqsaga_commands_sent_total",
        "sqsaga_sagas",
        "sqsaga_sagas_needing_operator",
    ] {
        assert!(has_family(&text, name), "orchestrator metrics lack {name}:\n{text}");
    }
    assert!(text.contains("sqsaga_ready 1"), "{text}");

    let mut worker =
        Proc::spawn(&["worker", "--service", "payment", "--data-dir", &data], &[("SQSAGA_WAIT_TIME", "1s")]);
    let text = check_endpoints(&worker, "payment");
    for name in [
        "sqsaga_ready",
        "sqsaga_build_info",
        "sqsaga_messages_received_total",
        "sqsaga_messages_processed_total",
        "sqsaga_messages_dead_lettered_total",
        "sqsaga_messages_in_flight",
        "sqsaga_barrier_duplicates_total",
    ] {
        assert!(has_family(&text, name), "worker metrics lack {name}:\n{text}");
    }
    assert!(text.contains("service=\"payment\""), "{text}");

    for (name, p) in [("worker", &mut worker), ("orchestrator", &mut orchestrator)] {
        p.sigterm();
        let status = p.wait_exit(Duration::from_secs(30));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "{name} did not exit 0; logs:\n{}", p.logs());
    }
}
