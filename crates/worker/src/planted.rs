//! Planted faults: bugs the simulator's tests switch on to prove the
//! simulator finds them (`crates/sim`, feature `planted-faults`). Compiled
//! only with this crate's `planted-faults` feature, off by default and never
//! enabled by a production build: without it [`skip_barrier`] is a constant
//! `false` and the faulty branches compile away. Thread-local, as the
//! simulator runs in one thread.

#[cfg(feature = "planted-faults")]
thread_local! {
    static SKIP_BARRIER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the barrier skips its check before an action (a redelivered
/// action runs again and overwrites the recorded outcome).
#[inline]
pub fn skip_barrier() -> bool {
    #[cfg(feature = "planted-faults")]
    {
        SKIP_BARRIER.with(std::cell::Cell::get)
    }
    #[cfg(not(feature = "planted-faults"))]
    {
        false
    }
}

/// Switches the skipped barrier check on or off in this thread.
#[cfg(feature = "planted-faults")]
pub fn plant_skip_barrier(on: bool) {
    SKIP_BARRIER.with(|s| s.set(on));
}
