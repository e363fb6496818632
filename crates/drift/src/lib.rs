//! The drift guard's pure parts: what a process is (its fingerprint) and,
//! later, what a fleet of them looks like (the fleet view and its verdicts).
//!
//! No IO here except [`executable_sha256`], which reads the running binary.

pub mod fingerprint;

pub use fingerprint::{Fingerprint, FingerprintParts, executable_sha256};
