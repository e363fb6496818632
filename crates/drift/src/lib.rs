//! The drift guard's pure parts: what a process is (its fingerprint), what
//! its fleet is expected to be (the `fleet.yaml` policy) and what the fleet
//! actually is (the fleet view and its verdicts, judged at an explicit `now`).
//!
//! No IO here except [`executable_sha256`], which reads the running binary.
//! The orchestrator feeds the view with heartbeats; workers only ever see
//! its result, the conforming set stamped on commands.

pub mod fingerprint;
pub mod fleet;
pub mod policy;

pub use fingerprint::{Fingerprint, FingerprintParts, executable_sha256};
pub use fleet::{
    Difference, FingerprintGroup, FleetOptions, FleetSnapshot, FleetView, InstanceView, PartsSummary, ServiceView,
    Verdict,
};
pub use policy::{DEFAULT_ROLLOUT_WINDOW, Expectation, FleetPolicy, Mode, ServicePolicy};
