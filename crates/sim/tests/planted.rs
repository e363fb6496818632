//! The simulator catches bugs: each planted fault (compiled in only with
//! the `planted-faults` feature, switched on one at a time) makes some seed
//! fail its checks within a bounded number of seeds. Run with
//! `cargo nextest run -p sqsaga-sim --features planted-faults --test planted`
//! (`scripts/test` does).
#![cfg(feature = "planted-faults")]

use sqsaga_sim::SimOptions;
use sqsaga_sim::planted::{Planted, first_caught};

/// Seeds each fault may take to be caught.
const BOUND: u64 = 200;

fn caught(fault: Planted) {
    match first_caught(fault, 0, BOUND, &SimOptions::default()) {
        Some((seeds, report)) => {
            println!("{fault:?}: caught at seed {} after {seeds} seeds: {}", report.seed, report.violations[0]);
        }
        None => panic!("{fault:?} survived {BOUND} seeds"),
    }
}

#[test]
fn deleting_before_the_commit_is_caught() {
    caught(Planted::DeleteBeforeCommit);
}

#[test]
fn skipping_the_barrier_check_is_caught() {
    caught(Planted::SkipBarrierCheck);
}

#[test]
fn dropping_the_outbox_on_a_conflict_is_caught() {
    caught(Planted::DropOutboxOnConflict);
}

#[test]
fn taking_a_stale_reply_as_current_is_caught() {
    caught(Planted::StaleReplyAsCurrent);
}
