//! Logging set-up: structured JSON when stderr is not a terminal (log
//! collectors), human-readable otherwise. Configured processes take the level
//! from their resolved configuration (`LOG_LEVEL`/`log_level`); one-shot
//! commands from `LOG_LEVEL` with a quieter default. Long-running processes
//! may add an OTLP span exporter (`telemetry.rs`) with its own filter.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::telemetry::TelemetryError;

/// Installs the global subscriber at `LOG_LEVEL`, or `default` when unset.
pub fn init(default: &str) {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| default.to_string());
    init_level(&level);
}

/// Installs the global subscriber at exactly `level` (an `EnvFilter` directive).
pub fn init_level(level: &str) {
    // Without an exporter nothing can fail.
    let _ = init_process(level, None);
}

/// Installs the global subscriber of a long-running process: log lines at
/// `level`, and, when `otlp` names an endpoint and a service, its spans
/// exported over OTLP (see `telemetry.rs`). Each has its own filter: spans
/// of sqsaga's crates are exported at `info` even when the log level is
/// `warn`, so a quiet log still gives full traces. Inside the tokio runtime.
pub fn init_process(level: &str, otlp: Option<(&str, &str)>) -> Result<(), TelemetryError> {
    let filter = || EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = match otlp {
        Some((endpoint, service)) => {
            let spans = Targets::new().with_target("sqsaga", LevelFilter::INFO);
            Some(crate::telemetry::layer(endpoint, service)?.with_filter(spans))
        }
        None => None,
    };
    let terminal = std::io::stderr().is_terminal();
    let plain = terminal.then(|| fmt::layer().with_writer(std::io::stderr).with_filter(filter()));
    let json =
        (!terminal).then(|| fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).with_filter(filter()));
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(otel).with(plain).with(json).try_init();
    Ok(())
}
