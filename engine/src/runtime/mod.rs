//! The tokio shell around the pure core: how production talks to a store, and (later modules)
//! the drivers that run the agent and reaper state machines under real time.

pub mod store;

pub use store::{LocalStore, SharedStore, StoreError};
