//! Deterministic simulation of the whole saga system, FoundationDB- and
//! TigerBeetle-style: the real orchestrator and workers, the order saga's
//! three participants, the queues and the store, run in one thread on
//! simulated time, with one seeded random source deciding every choice and
//! every fault, then judged by invariants. A failing seed replays exactly
//! (`sqsaga sim --seed S --trace`).
//!
//! The in-memory adapters it runs on (queue, store, participant database)
//! are `sqsaga-testing`'s, which saga authors' tests use too.
//!
//! - [`chaos`]: the fault plan and the process wrappers that consult it;
//! - [`sim`]: the simulator; [`check`]: the replay and outbox checks;
//! - [`trace`]: a seed's event trace.
//!
//! It sits above the order example (layer 7): it needs its participants and
//! invariant checker. Nothing here is used by a production process.

pub mod chaos;
pub mod check;
pub mod command;
#[cfg(feature = "planted-faults")]
pub mod planted;
pub mod sim;
pub mod trace;

pub use sim::{SeedReport, SimOptions, run_seed, run_seeds};
