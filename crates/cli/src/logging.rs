//! Logging set-up: structured JSON when stderr is not a terminal (log
//! collectors), human-readable otherwise; level from `LOG_LEVEL`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `quiet` commands (the demo, benchmarks)
/// default to warnings only so their own output stays readable.
pub fn init(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| default.to_string());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}
