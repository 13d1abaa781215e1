//! The store interface (requests and replies as data) and its in-memory implementation.

pub mod conformance;
pub mod dump;
pub mod journal;
pub mod mem;
pub mod request;

pub use dump::StateDump;
pub use mem::MemStore;
pub use request::{
    ClassDepth, Grant, JobCounts, LeaseRef, LeaseStatus, MachineView, ReapReport, Refusal, Reply,
    Request, StoreStats, Totals,
};
