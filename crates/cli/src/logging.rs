//! Logging set-up: structured JSON when stderr is not a terminal (log
//! collectors), human-readable otherwise. Configured processes take the level
//! from their resolved configuration (`LOG_LEVEL`/`log_level`); one-shot
//! commands from `LOG_LEVEL` with a quieter default.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber at `LOG_LEVEL`, or `default` when unset.
pub fn init(default: &str) {
    let level = std::env::var("LOG_LEVEL").unwrap_or_else(|_| default.to_string());
    init_level(&level);
}

/// Installs the global subscriber at exactly `level` (an `EnvFilter` directive).
pub fn init_level(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    // A second call (tests) keeps the first subscriber.
    drop(result);
}
