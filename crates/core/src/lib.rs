//! The pure heart of sqsaga: saga definitions, their validation, and the saga
//! state machine `(state, event, now) -> (state, actions)`.
//!
//! This crate must not know about queues, databases, threads or async, and
//! the state machine reads no clock: everything here is a function of its
//! arguments, so it is tested with plain data in and data out. Time is passed
//! in as milliseconds since the Unix epoch.
//!
//! The one exception is [`clock`]: the `Clock` trait lives here so every
//! crate shares one (and tests one `ManualClock`); its `SystemClock` is the
//! only reader of the wall clock in the workspace, and nothing else in this
//! crate calls it.

pub mod clock;
pub mod definition;
pub mod duration;
pub mod graph;
pub mod machine;
pub mod marked;
pub mod yaml;

/// Milliseconds since the Unix epoch. The only notion of time the core knows;
/// the caller reads the clock and passes it in.
pub type Millis = u64;
