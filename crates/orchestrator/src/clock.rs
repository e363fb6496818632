//! Where time comes from. The state machine takes `now` as an argument; the
//! services read it from a [`Clock`] so tests can control it.

use std::time::{SystemTime, UNIX_EPOCH};

use sqsaga_core::Millis;

/// A source of "now" in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
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

/// Wall-clock milliseconds; 0 if the clock is before 1970 (never in practice).
pub fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}
