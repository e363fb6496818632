//! The orchestrator service: consumes its queue (start requests, replies,
//! resume requests, heartbeats), applies events through the pure state
//! machine, and commits the new state together with the commands it emits
//! (the outbox) before anything is sent.
//!
//! It knows the `Queue` and `SagaStore` ports, never an adapter; it is the
//! only writer of saga state.

pub mod admission;
pub mod clock;
pub mod definitions;
pub mod fleet;
pub mod plan;
pub mod planted;
pub mod service;
pub mod stats;

pub use clock::{Clock, ManualClock, SystemClock};
pub use definitions::{DefinitionError, Definitions};
pub use fleet::FleetMonitor;
pub use service::{
    DEFAULT_MAX_IN_FLIGHT, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorError, OrchestratorOptions, SagaChange,
    ensure_queues,
};
pub use stats::{OrchestratorStats, SagaCounts};
