//! Drover's engine: the pure core, the store interface and its stores, the machine agent and
//! reaper state machines, and the invariant checker.

pub mod agent;
#[cfg(feature = "production")]
pub mod api;
pub mod check;
pub mod core;
#[cfg(feature = "production")]
pub mod executor;
#[cfg(feature = "production")]
pub mod gpu;
pub mod reaper;
#[cfg(feature = "production")]
pub mod redis;
#[cfg(feature = "production")]
pub mod runtime;
pub mod store;
#[cfg(feature = "production")]
pub mod testing;
