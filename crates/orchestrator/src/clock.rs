//! Where time comes from: the one [`Clock`] of `sqsaga-core`, re-exported so
//! `sqsaga_orchestrator::{Clock, SystemClock}` and `clock::now_ms` keep
//! working for callers.

pub use sqsaga_core::clock::{Clock, ManualClock, SystemClock, now_ms};
