//! Drover's engine: the pure core, the store interface and its stores, the machine agent and
//! reaper state machines, and the invariant checker.

pub mod agent;
pub mod check;
pub mod core;
pub mod reaper;
#[cfg(feature = "production")]
pub mod runtime;
pub mod store;
