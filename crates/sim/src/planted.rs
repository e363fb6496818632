//! The planted faults, named for the simulator's tests (feature
//! `planted-faults` only): each is a bug compiled into the real
//! orchestrator or worker behind a thread-local switch, and
//! [`first_caught`] runs seeds with one switched on until a seed's checks
//! fail — proof that the simulator would catch that bug.

use crate::sim::{SeedReport, SimOptions, run_seed};

/// A bug the simulator must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The orchestrator deletes consumed messages before its commit.
    DeleteBeforeCommit,
    /// The worker's barrier runs a redelivered action again.
    SkipBarrierCheck,
    /// The orchestrator re-plans a conflicted write without its outbox.
    DropOutboxOnConflict,
    /// The orchestrator takes an earlier attempt's reply as current.
    StaleReplyAsCurrent,
}

impl Planted {
    pub const ALL: [Planted; 4] = [
        Planted::DeleteBeforeCommit,
        Planted::SkipBarrierCheck,
        Planted::DropOutboxOnConflict,
        Planted::StaleReplyAsCurrent,
    ];

    fn switch(self, on: bool) {
        use sqsaga_orchestrator::planted::{Fault, plant};
        let orchestrator = match self {
            Planted::DeleteBeforeCommit => Some(Fault::DeleteBeforeCommit),
            Planted::DropOutboxOnConflict => Some(Fault::DropOutboxOnConflict),
            Planted::StaleReplyAsCurrent => Some(Fault::StaleReplyAsCurrent),
            Planted::SkipBarrierCheck => None,
        };
        plant(orchestrator.filter(|_| on));
        sqsaga_worker::planted::plant_skip_barrier(on && self == Planted::SkipBarrierCheck);
    }
}

/// Runs seeds from `start` with `fault` planted until one fails its
/// checks, at most `limit` seeds; returns how many seeds it took and the
/// failing seed's report.
pub fn first_caught(fault: Planted, start: u64, limit: u64, options: &SimOptions) -> Option<(u64, SeedReport)> {
    fault.switch(true);
    let mut caught = None;
    for (n, seed) in (start..start.saturating_add(limit)).enumerate() {
        let report = run_seed(seed, options);
        if !report.ok() {
            caught = Some((n as u64 + 1, report));
            break;
        }
    }
    fault.switch(false);
    caught
}
