//! Planted faults: bugs the simulator's tests switch on, one at a time, to
//! prove the simulator finds them (`crates/sim`, feature `planted-faults`).
//! Compiled only with this crate's `planted-faults` feature, off by
//! default and never enabled by a production build: without it
//! [`active`] is a constant `false` and the faulty branches compile away.
//! The switches are thread-local, as the simulator runs in one thread.

/// A bug the orchestrator can be made to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Deletes a batch's consumed messages before the unit of work commits
    /// (a crash or a failed commit in between loses them).
    DeleteBeforeCommit,
    /// Re-plans a saga whose write lost a revision conflict but commits the
    /// new write without its outbox (its commands are never sent).
    DropOutboxOnConflict,
    /// Takes a reply for an earlier attempt of the current step as the
    /// reply of the current attempt.
    StaleReplyAsCurrent,
}

#[cfg(feature = "planted-faults")]
thread_local! {
    static ON: std::cell::Cell<Option<Fault>> = const { std::cell::Cell::new(None) };
}

/// Whether `fault` is switched on (always `false` without the feature).
#[inline]
pub fn active(fault: Fault) -> bool {
    #[cfg(feature = "planted-faults")]
    {
        ON.with(|on| on.get() == Some(fault))
    }
    #[cfg(not(feature = "planted-faults"))]
    {
        let _ = fault;
        false
    }
}

/// Switches `fault` on in this thread (`None`: every fault off).
#[cfg(feature = "planted-faults")]
pub fn plant(fault: Option<Fault>) {
    ON.with(|on| on.set(fault));
}
