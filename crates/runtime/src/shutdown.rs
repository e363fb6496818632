//! The one place that handles signals. Kubernetes sends SIGTERM when it stops
//! a pod (then SIGKILL after `terminationGracePeriodSeconds`); systemd sends
//! SIGTERM on `systemctl stop` (then SIGKILL after `TimeoutStopSec`); a
//! person at a terminal sends SIGINT. All three mean: stop taking work,
//! finish what is in flight within the drain budget, exit 0.
//!
//! Shutdown is a [`CancellationToken`]: every long-running part takes a
//! clone and stops when it is cancelled; tests and the demo cancel it by
//! hand.

pub use tokio_util::sync::CancellationToken;

/// A token cancelled on SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received; draining.");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("Cannot install signal handlers; falling back to Ctrl-C only.");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
