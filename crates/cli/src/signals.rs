//! The one place that handles signals. Kubernetes sends SIGTERM when it stops
//! a pod (then SIGKILL after `terminationGracePeriodSeconds`); systemd sends
//! SIGTERM on `systemctl stop` (then SIGKILL after `TimeoutStopSec`); a
//! person at a terminal sends SIGINT. All three mean: stop taking work,
//! finish what is in flight within the drain budget, exit 0.

use tokio::sync::watch;

/// A shutdown signal that many tasks can wait on.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once shutdown was requested.
    pub async fn wait(mut self) {
        while !*self.rx.borrow() {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// A handle that can trigger shutdown by hand (the demo, tests).
#[derive(Clone)]
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.tx.send(true);
    }
}

/// A shutdown pair not tied to signals.
pub fn manual() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger { tx }, Shutdown { rx })
}

/// Shutdown on SIGTERM or SIGINT.
pub fn on_signals() -> Shutdown {
    let (trigger, shutdown) = manual();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received; draining.");
        trigger.fire();
    });
    shutdown
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
