//! A simulation's event trace: one line per decision of the simulator and
//! per fault, stamped with simulated time since the start. Kept in full
//! when asked for (`sqsaga sim --seed S --trace`), otherwise only folded
//! into a digest, so a seed's run can still be compared with another's
//! cheaply (same seed ⇒ same digest).

use std::sync::{Arc, Mutex, PoisonError};

use sqsaga_core::Millis;
use sqsaga_core::clock::Clock;

#[derive(Debug)]
struct Inner {
    keep: bool,
    lines: Vec<String>,
    /// FNV-1a over every line.
    digest: u64,
    count: u64,
}

/// The trace, shared by the simulator and the fault plan.
#[derive(Debug, Clone)]
pub struct Trace {
    inner: Arc<Mutex<Inner>>,
    clock: Arc<dyn Clock>,
    start: Millis,
}

impl Trace {
    /// A trace on `clock`; `keep`: hold every line, not just the digest.
    pub fn new(clock: Arc<dyn Clock>, keep: bool) -> Trace {
        let start = clock.now();
        Trace {
            inner: Arc::new(Mutex::new(Inner { keep, lines: Vec::new(), digest: 0xcbf2_9ce4_8422_2325, count: 0 })),
            clock,
            start,
        }
    }

    /// Adds a line, stamped `+<ms>` of simulated time.
    pub fn line(&self, text: impl AsRef<str>) {
        let at = self.clock.now().saturating_sub(self.start);
        let line = format!("+{at:>7}ms {}", text.as_ref());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for byte in line.bytes().chain([b'\n']) {
            inner.digest = (inner.digest ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        inner.count += 1;
        if inner.keep {
            inner.lines.push(line);
        }
    }

    /// The lines kept (none unless `keep`).
    pub fn lines(&self) -> Vec<String> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).lines.clone()
    }

    /// Digest of every line so far.
    pub fn digest(&self) -> u64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).digest
    }

    /// How many lines so far.
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).count
    }
}
