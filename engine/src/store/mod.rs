//! The store interface (requests and replies as data) and its in-memory implementation.

pub mod mem;
pub mod request;

pub use mem::MemStore;
pub use request::{Grant, LeaseRef, LeaseStatus, ReapReport, Refusal, Reply, Request};
