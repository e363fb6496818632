//! The receive gate of [`SqsQueue`](crate::SqsQueue): one per queue URL,
//! shared by every poller of that queue in the process, so they do not
//! split what the queue holds into many small `ReceiveMessage` requests.
//!
//! SQS answers a long poll as soon as it has any message. With several
//! pollers long-polling one queue, each burst of sends is picked up at once
//! by whichever poll is waiting — a burst of 4 costs a receive of 4, and the
//! next burst another receive — and an idle queue costs one long poll per
//! poller per wait. The gate changes who asks and when:
//!
//! - **One long poll at a time** while the queue is not backlogged: the
//!   other callers wait at the gate (no request) until it returns, or until
//!   their own wait is over, when they return empty — as their own long poll
//!   would have. So an idle queue costs one long poll per wait, not one per
//!   poller.
//! - **A backlog opens the gate**: a receive that came back full (as many
//!   messages as it asked for) lets one more receive run at once, up to one
//!   per caller; a short or empty one closes it back to one. Throughput is
//!   not capped by the gate when there is work queued.
//! - **Receive linger**: after a receive that got some messages but fewer
//!   than it asked for, the next receive waits the linger (bounded, see
//!   `SqsOptions::receive_linger`) so the messages that arrive meanwhile are
//!   taken in one receive. An empty receive sets no linger: on an idle queue
//!   a new message is picked up by the waiting long poll at once.
//!
//! Messages never change hands: each caller sends its own request with its
//! own size, wait and visibility, and gets exactly what that request
//! returned. A caller that goes away (its future dropped) frees its place.
//! Short polls (wait 0) do not go through the gate.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Receives at once at most, however long a backlog lasts (one per caller
/// in practice: a caller runs one receive at a time).
const MAX_OPEN: usize = 64;

/// The gate of one queue.
pub(crate) struct ReceiveGate {
    state: Mutex<State>,
    /// Signalled whenever a receive ends (a place may be free).
    changed: Notify,
    /// Pause after a short, non-empty receive.
    linger: Duration,
}

struct State {
    /// Receives sent and not yet answered (or abandoned).
    in_flight: usize,
    /// Receives allowed at once: 1, plus one per full receive in a row after the first.
    open: usize,
    /// Full receives in a row.
    full_streak: u32,
    /// No receive starts before this (the linger after a short receive).
    not_before: Instant,
}

/// A place at the gate: the holder may send one receive. Dropping it
/// without [`Admission::finish`] (a cancelled receive) frees the place and
/// changes nothing else.
pub(crate) struct Admission<'a> {
    gate: &'a ReceiveGate,
    done: bool,
}

impl ReceiveGate {
    pub fn new(linger: Duration) -> Self {
        ReceiveGate {
            state: Mutex::new(State { in_flight: 0, open: 1, full_streak: 0, not_before: Instant::now() }),
            changed: Notify::new(),
            linger,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place until `deadline`; `None` when the deadline came first
    /// (the caller's wait is over: it answers empty without a request).
    pub async fn admit(&self, deadline: Instant) -> Option<Admission<'_>> {
        loop {
            // Registered before the state is read, so an end in between is not missed.
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let wake = {
                let mut s = self.lock();
                if s.in_flight < s.open {
                    if now >= s.not_before {
                        s.in_flight += 1;
                        return Some(Admission { gate: self, done: false });
                    }
                    s.not_before.min(deadline)
                } else {
                    deadline
                }
            };
            if now >= deadline {
                return None;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// The place is given back; `got` of `asked` messages came back.
    fn end(&self, outcome: Option<(usize, usize)>) {
        {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            match outcome {
                // Full twice in a row: a backlog; let one more receive run at once.
                Some((got, asked)) if got >= asked && got > 0 && s.full_streak >= 1 => {
                    s.full_streak += 1;
                    s.open = (s.open + 1).min(MAX_OPEN);
                }
                // Full once (one burst, whose rest a receive at once would take
                // alone), or short (drained for now): let more arrive first.
                Some((got, asked)) if got > 0 => {
                    s.full_streak = u32::from(got >= asked);
                    s.open = 1;
                    s.not_before = s.not_before.max(Instant::now() + self.linger);
                }
                // Empty, failed or abandoned: nothing is queued (or nothing is known).
                _ => {
                    s.full_streak = 0;
                    s.open = 1;
                }
            }
        }
        self.changed.notify_waiters();
    }
}

impl Admission<'_> {
    /// The receive was answered with `got` messages of the `asked` maximum.
    pub fn finish(mut self, got: usize, asked: usize) {
        self.done = true;
        self.gate.end(Some((got, asked)));
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.gate.end(None);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failure is the test failing")]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const LINGER: Duration = Duration::from_millis(200);
    const WAIT: Duration = Duration::from_secs(20);

    /// A fake queue: receives take what is there (up to `asked`), or wait
    /// for a send until their wait ends; counts requests and the most that
    /// ran at once.
    #[derive(Default)]
    struct FakeQueue {
        queued: Mutex<usize>,
        arrived: Notify,
        requests: AtomicUsize,
        /// Requests that got messages.
        fruitful: AtomicUsize,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    impl FakeQueue {
        fn send(&self, n: usize) {
            *self.queued.lock().unwrap() += n;
            self.arrived.notify_waiters();
        }

        async fn receive(&self, asked: usize, wait: Duration) -> usize {
            self.requests.fetch_add(1, Ordering::SeqCst);
            // The round trip.
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_running.fetch_max(now, Ordering::SeqCst);
            let deadline = Instant::now() + wait;
            let got = loop {
                let arrived = self.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                {
                    let mut q = self.queued.lock().unwrap();
                    if *q > 0 {
                        let got = (*q).min(asked);
                        *q -= got;
                        break got;
                    }
                }
                tokio::select! {
                    () = &mut arrived => {}
                    () = tokio::time::sleep_until(deadline) => break 0,
                }
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            if got > 0 {
                self.fruitful.fetch_add(1, Ordering::SeqCst);
            }
            got
        }
    }

    /// One receive through the gate, as `SqsQueue::receive` does it.
    async fn gated(gate: &ReceiveGate, q: &FakeQueue, asked: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        let Some(admission) = gate.admit(deadline).await else { return 0 };
        let got = q.receive(asked, deadline.saturating_duration_since(Instant::now())).await;
        admission.finish(got, asked);
        got
    }

    /// `pollers` receive loops that count what they get until `total` messages came.
    async fn pollers(gate: Arc<ReceiveGate>, q: Arc<FakeQueue>, pollers: usize, total: usize) -> Arc<AtomicUsize> {
        let received = Arc::new(AtomicUsize::new(0));
        for _ in 0..pollers {
            let (gate, q, received) = (gate.clone(), q.clone(), received.clone());
            tokio::spawn(async move {
                while received.load(Ordering::SeqCst) < total {
                    let got = gated(&gate, &q, 10).await;
                    received.fetch_add(got, Ordering::SeqCst);
                }
            });
        }
        received
    }

    #[tokio::test(start_paused = true)]
    async fn idle_pollers_share_one_long_poll() {
        let gate = Arc::new(ReceiveGate::new(LINGER));
        let q = Arc::new(FakeQueue::default());
        let _received = pollers(gate, q.clone(), 8, usize::MAX).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        // Without the gate: 8 pollers × 3 long polls of 20 s.
        let requests = q.requests.load(Ordering::SeqCst);
        assert!(requests <= 4, "{requests} requests for one idle minute");
        assert_eq!(q.most_running.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_within_the_linger_are_taken_in_one_receive() {
        let gate = Arc::new(ReceiveGate::new(LINGER));
        let q = Arc::new(FakeQueue::default());
        let received = pollers(gate, q.clone(), 4, 40).await;
        tokio::task::yield_now().await;
        // Bursts of 2 every 30 ms: without the linger, a receive per burst (20).
        for _ in 0..20 {
            q.send(2);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(received.load(Ordering::SeqCst), 40);
        let requests = q.requests.load(Ordering::SeqCst);
        assert!(requests <= 8, "{requests} receives for 20 bursts of 2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_on_an_idle_queue_is_taken_at_once() {
        let gate = Arc::new(ReceiveGate::new(LINGER));
        let q = Arc::new(FakeQueue::default());
        let received = pollers(gate, q.clone(), 4, usize::MAX).await;
        // An earlier short receive's linger is long over.
        q.send(3);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(received.load(Ordering::SeqCst), 3);
        q.send(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(received.load(Ordering::SeqCst), 4, "a lone message waited");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rest_of_a_burst_is_not_received_alone() {
        let gate = Arc::new(ReceiveGate::new(LINGER));
        let q = Arc::new(FakeQueue::default());
        // A burst of 13, then 7 more within the linger: one full receive
        // alone is no backlog, so the 3 left wait for the 7 (without the
        // linger after it: receives of 10, 3 and 7).
        q.send(13);
        let received = pollers(gate, q.clone(), 4, 20).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        q.send(7);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(received.load(Ordering::SeqCst), 20);
        assert_eq!(q.fruitful.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_backlog_opens_the_gate_to_every_poller() {
        let gate = Arc::new(ReceiveGate::new(LINGER));
        let q = Arc::new(FakeQueue::default());
        q.send(200);
        let received = pollers(gate, q.clone(), 4, 200).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(received.load(Ordering::SeqCst), 200);
        assert!(q.most_running.load(Ordering::SeqCst) > 1, "the receives ran one at a time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_whose_wait_ends_at_the_gate_answers_empty_without_a_request() {
        let gate = ReceiveGate::new(LINGER);
        let first = gate.admit(Instant::now() + WAIT).await.unwrap();
        let started = Instant::now();
        assert!(gate.admit(Instant::now() + Duration::from_secs(2)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // A dropped (cancelled) receive frees its place.
        drop(first);
        assert!(gate.admit(Instant::now() + WAIT).await.is_some());
    }
}
