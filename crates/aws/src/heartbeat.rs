//! Visibility heartbeats: keep a long-running message hidden from other
//! consumers by extending its visibility timeout periodically, at a fraction
//! of the timeout, until the work is done.
//!
//! A handler that may outlive the queue's visibility timeout would otherwise
//! see its message delivered again to a sibling mid-work (harmless thanks to
//! the barrier, but wasted, and counted towards maxReceiveCount). The
//! heartbeat extends to `timeout` every `timeout / 3`, so two lost
//! extensions in a row still leave the message hidden.
//!
//! It uses only the `Queue` port, so it works on any adapter (the worker
//! runtime can take it as is; it would sit as well in `sqsaga-queue`).

use std::sync::Arc;
use std::time::Duration;

use sqsaga_queue::{Queue, QueueError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The shortest interval between two extensions.
const MIN_INTERVAL: Duration = Duration::from_millis(500);

/// What a heartbeat did, reported when it is stopped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatReport {
    /// Successful extensions.
    pub extensions: u32,
    /// The last failed extension, if any.
    pub last_error: Option<QueueError>,
    /// True if it stopped by itself because the receipt went stale (the
    /// message was deleted or received again elsewhere).
    pub lost: bool,
}

/// A running heartbeat for one received message; stopped by
/// [`VisibilityHeartbeat::stop`] or by dropping it.
pub struct VisibilityHeartbeat {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<HeartbeatReport>>,
}

impl VisibilityHeartbeat {
    /// Extends `receipt` on `queue` to `timeout` every `timeout / 3` (at
    /// least every 0.5 s). Must be called inside a Tokio runtime.
    pub fn start(queue: Arc<dyn Queue>, queue_name: &str, receipt: &str, timeout: Duration) -> Self {
        VisibilityHeartbeat::with_interval(queue, queue_name, receipt, timeout, (timeout / 3).max(MIN_INTERVAL))
    }

    /// Like [`VisibilityHeartbeat::start`] with an explicit interval.
    pub fn with_interval(
        queue: Arc<dyn Queue>,
        queue_name: &str,
        receipt: &str,
        timeout: Duration,
        interval: Duration,
    ) -> Self {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let queue_name = queue_name.to_string();
        let receipt = receipt.to_string();
        let interval = interval.max(MIN_INTERVAL);
        let task = tokio::spawn(async move {
            let mut report = HeartbeatReport::default();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => return report,
                    () = tokio::time::sleep(interval) => {}
                }
                match queue.change_visibility(&queue_name, &receipt, timeout).await {
                    Ok(()) => report.extensions += 1,
                    Err(e @ QueueError::StaleReceipt(_)) => {
                        tracing::warn!(queue = %queue_name, error = %e, "Visibility heartbeat stopped: the receipt is no longer current.");
                        report.last_error = Some(e);
                        report.lost = true;
                        return report;
                    }
                    Err(e) => {
                        // The timeout still has two intervals to run: try again next tick.
                        tracing::warn!(queue = %queue_name, error = %e, "Cannot extend a message's visibility; will retry.");
                        report.last_error = Some(e);
                    }
                }
            }
        });
        VisibilityHeartbeat { stop: Some(stop_tx), task: Some(task) }
    }

    /// Stops extending and reports what happened. The message keeps the
    /// visibility of the last extension; delete or release it next.
    pub async fn stop(mut self) -> HeartbeatReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => HeartbeatReport::default(),
        }
    }
}

impl Drop for VisibilityHeartbeat {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
