//! The three endpoints, called in-process through the router (no socket),
//! plus one test of `serve` on a real loopback port.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Value, json};
use sqsaga_http::metrics::assert_valid_exposition;
use sqsaga_http::{Probe, Registry, router, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// A response reduced to data: status, content type, body text.
struct Got {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn get(app: &axum::Router, path: &str) -> Got {
    let request = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    Got { status, content_type, body: String::from_utf8(bytes.to_vec()).unwrap() }
}

#[tokio::test]
async fn readyz_reports_reasons_then_recovers() {
    let probe = Probe::new();
    probe.set_info("fingerprint", json!({"config_hash": "abc"}));
    let app = router(probe.clone(), Registry::default());

    let got = get(&app, "/readyz").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), json!({"status": "ready", "fingerprint": {"config_hash": "abc"}}));

    probe.set_unready("queue", "queue unreachable: connection refused");
    probe.set_unready("drift", "fingerprint not in fleet policy");
    let got = get(&app, "/readyz").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(got.content_type.starts_with("application/json"), "{}", got.content_type);
    assert_eq!(
        got.json(),
        json!({
            "status": "not_ready",
            "reasons": {"queue": "queue unreachable: connection refused", "drift": "fingerprint not in fleet policy"},
            "fingerprint": {"config_hash": "abc"},
        })
    );

    probe.set_ready("queue");
    assert_eq!(get(&app, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    probe.set_ready("drift");
    let got = get(&app, "/readyz").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["status"], "ready");
}

#[tokio::test]
async fn healthz_fails_while_a_loop_is_stalled() {
    let probe = Probe::new();
    let app = router(probe.clone(), Registry::default());
    let got = get(&app, "/healthz").await;
    assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "ok"));

    probe.register_loop("poller", Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let got = get(&app, "/healthz").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = got.json();
    assert_eq!(body["status"], "stalled");
    assert_eq!(body["loops"][0]["name"], "poller");
    assert_eq!(body["loops"][0]["stall_after_ms"], 0);

    probe.register_loop("poller", Duration::from_secs(60));
    probe.heartbeat("poller");
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
    // Not ready is not dead: liveness ignores readiness.
    probe.set_unready("queue", "down");
    assert_eq!(get(&app, "/healthz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_serve_the_registry_in_valid_text_format() {
    let probe = Probe::new();
    probe.register_loop("poller", Duration::from_secs(60));
    let mut registry = Registry::default();
    probe.register_metrics(&mut registry);
    let received = Counter::<u64>::default();
    received.inc_by(7);
    let service = registry.sub_registry_with_label(("service".into(), "inventory".into()));
    service.register("sqsaga_messages_received", "Messages received from the input queue", received.clone());
    let latency = Family::<[(&str, &str); 1], Histogram, _>::new_with_constructor(|| Histogram::new([0.01, 0.05]));
    latency.get_or_create(&[("command", "inventory.reserve")]).observe(0.03);
    service.register("sqsaga_step_duration_seconds", "Handler latency", latency);
    let app = router(probe, registry);

    let got = get(&app, "/metrics").await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.content_type.starts_with("text/plain; version=0.0.4"), "{}", got.content_type);
    assert_valid_exposition(&got.body);
    for line in [
        "sqsaga_ready 1",
        "sqsaga_messages_received_total{service=\"inventory\"} 7",
        "sqsaga_step_duration_seconds_bucket{service=\"inventory\",command=\"inventory.reserve\",le=\"0.05\"} 1",
        "sqsaga_step_duration_seconds_count{service=\"inventory\",command=\"inventory.reserve\"} 1",
    ] {
        assert!(got.body.lines().any(|l| l == line), "missing {line} in\n{}", got.body);
    }
    assert!(got.body.contains("sqsaga_loop_heartbeat_age_seconds{loop=\"poller\"} "));

    received.inc();
    let got = get(&app, "/metrics").await;
    assert!(got.body.contains("sqsaga_messages_received_total{service=\"inventory\"} 8\n"), "{}", got.body);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let app = router(Probe::new(), Registry::default());
    assert_eq!(get(&app, "/nope").await.status, StatusCode::NOT_FOUND);
}

/// A raw HTTP/1.1 GET over TCP: status line and body.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[tokio::test]
async fn serve_binds_port_zero_and_stops_on_shutdown() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let app = router(Probe::new(), Registry::default());
    let (addr, task) = serve("127.0.0.1:0".parse().unwrap(), app, shutdown).await.unwrap();
    assert_ne!(addr.port(), 0, "the bound port is reported");

    let (status, body) = raw_get(addr, "/healthz").await.unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "ok");

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(raw_get(addr, "/healthz").await.is_err(), "still serving after shutdown");
}

#[tokio::test]
async fn binding_a_taken_port_is_a_bind_error() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve(addr, router(Probe::new(), Registry::default()), std::future::pending()).await.unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot listen on {addr}")), "{err}");
    assert!(err.is_retryable());
}
