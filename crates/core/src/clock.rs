//! Where time comes from, shared by every crate: the [`Clock`] trait, the
//! wall clock ([`SystemClock`]) and a clock tests move by hand
//! ([`ManualClock`]).
//!
//! The core's "no clock" invariant is about the state machine and the
//! definitions: `decide` and `start` take `now` as an argument and read no
//! clock. The trait lives here only so the orchestrator, the worker and the
//! embedded backend share one definition (and tests one manual clock);
//! [`SystemClock`] is the only code in the workspace that reads the wall
//! clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Millis;

/// A source of "now" in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> Millis;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        now_ms()
    }
}

/// Wall-clock milliseconds; 0 if the clock is before 1970 (never in
/// practice). Prefer an injected [`Clock`]; this is for the edges (the CLI
/// stamping a start request) that have none.
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A clock that moves only when told to, for tests: shared between the
/// code under test and the test through an `Arc`.
#[derive(Debug, Default)]
pub struct ManualClock {
    /// Milliseconds since the epoch.
    now: AtomicU64,
}

impl ManualClock {
    /// A clock standing at `now`.
    pub fn at(now: Millis) -> ManualClock {
        ManualClock { now: AtomicU64::new(now) }
    }

    /// A clock standing at the current wall-clock time (for tests whose
    /// messages are also judged by a real clock, e.g. a signature's age).
    pub fn at_wall_clock() -> ManualClock {
        ManualClock::at(now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(u64::try_from(by.as_millis()).unwrap_or(u64::MAX), Ordering::SeqCst);
    }

    /// Sets the clock to `now` (backwards too: a skewed sibling's clock).
    pub fn set(&self, now: Millis) {
        self.now.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_000);
        assert_eq!(c.now(), 1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now(), 1_250);
        c.set(10);
        assert_eq!(c.now(), 10);
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now() > 1_577_836_800_000);
    }
}
