//! Why sagas compensated: time (a step timeout, the saga deadline, a command
//! that expired in a worker's queue) or business (a refusal, transient errors
//! that exhausted their retries).
//!
//! A demo whose orders compensate because of time says nothing about the
//! business and much about capacity (a backlog, workers started late, slow
//! handlers), so `sqsaga demo check` prints these counts next to the
//! invariants. Pure: it reads the reasons the state machine wrote
//! (`SagaInstance::reason`), never a database.

use std::fmt;

use serde::Serialize;
use sqsaga_core::machine::{EXPIRED_IN_QUEUE, SagaInstance, SagaStatus};

/// Compensated sagas counted by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CompensationCauses {
    /// Every compensated saga.
    pub compensated: usize,
    /// Compensated because of time: the sum of the next three. Anything
    /// but 0 is worth a look (capacity, not business).
    pub timeout: usize,
    /// A step's reply did not come within its timer (`step … timed out`).
    pub step_timeout: usize,
    /// The saga deadline passed (`saga deadline passed`).
    pub deadline: usize,
    /// A worker refused an action that waited in its queue past its latest
    /// start time (`… expired in queue …`).
    pub expired_in_queue: usize,
    /// Compensated for business reasons: the sum of the next two.
    pub business: usize,
    /// A step refused (out of stock, card declined).
    pub refused: usize,
    /// A step's transient errors exhausted its retries.
    pub retries_exhausted: usize,
    /// No reason recorded, or one this version does not know.
    pub unknown: usize,
}

/// The cause of one compensation, from the saga's recorded reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    StepTimeout,
    Deadline,
    ExpiredInQueue,
    Refused,
    RetriesExhausted,
    Unknown,
}

impl Cause {
    /// Reads a reason as [`sqsaga_core::machine`] words it: `step {name}
    /// attempt {n} timed out`, `saga deadline passed`, `step {name} refused:
    /// {why}` (an expiry in queue is such a refusal), `step {name} failed
    /// after {n} attempts: {error}`.
    pub fn of(reason: Option<&str>) -> Cause {
        let Some(reason) = reason else { return Cause::Unknown };
        if reason.starts_with("saga deadline passed") {
            return Cause::Deadline;
        }
        // Step names have no spaces: what follows the name says what happened,
        // whatever free text (a refusal, an error) comes after that.
        let Some((_name, tail)) = reason.strip_prefix("step ").and_then(|r| r.split_once(' ')) else {
            return Cause::Unknown;
        };
        if let Some(why) = tail.strip_prefix("refused: ") {
            if why.starts_with(EXPIRED_IN_QUEUE) { Cause::ExpiredInQueue } else { Cause::Refused }
        } else if tail.starts_with("failed after ") {
            Cause::RetriesExhausted
        } else if tail.starts_with("attempt ") && tail.ends_with(" timed out") {
            Cause::StepTimeout
        } else {
            Cause::Unknown
        }
    }

    /// Whether the cause is time rather than business.
    pub fn is_timeout(self) -> bool {
        matches!(self, Cause::StepTimeout | Cause::Deadline | Cause::ExpiredInQueue)
    }
}

/// Counts the compensated sagas among `sagas` by cause; sagas in any other
/// status are not counted (`needs_operator` ones have lost their first
/// reason to the compensation's failure, and are reported as such).
pub fn compensation_causes<'a>(sagas: impl IntoIterator<Item = &'a SagaInstance>) -> CompensationCauses {
    let mut c = CompensationCauses::default();
    for saga in sagas.into_iter().filter(|s| s.status == SagaStatus::Compensated) {
        c.compensated += 1;
        match Cause::of(saga.reason.as_deref()) {
            Cause::StepTimeout => c.step_timeout += 1,
            Cause::Deadline => c.deadline += 1,
            Cause::ExpiredInQueue => c.expired_in_queue += 1,
            Cause::Refused => c.refused += 1,
            Cause::RetriesExhausted => c.retries_exhausted += 1,
            Cause::Unknown => c.unknown += 1,
        }
    }
    c.timeout = c.step_timeout + c.deadline + c.expired_in_queue;
    c.business = c.refused + c.retries_exhausted;
    c
}

impl fmt::Display for CompensationCauses {
    /// Two lines, time first: `compensated because of time: 0 (…)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "compensated because of time: {} (step timeout {}, deadline {}, expired in queue {})",
            self.timeout, self.step_timeout, self.deadline, self.expired_in_queue
        )?;
        write!(
            f,
            "compensated for business reasons: {} (refused {}, retries exhausted {})",
            self.business, self.refused, self.retries_exhausted
        )?;
        if self.unknown > 0 {
            write!(f, "\ncompensated for an unknown reason: {}", self.unknown)?;
        }
        Ok(())
    }
}
