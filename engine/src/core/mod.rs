//! The pure core: everything that decides. No clocks, sockets, global randomness or tasks;
//! callers pass `now` and inputs and get outputs.

pub mod backoff;
pub mod breaker;
pub mod class;
pub mod config;
pub mod cost;
pub mod ids;
pub mod labels;
pub mod lifecycle;
pub mod model;
pub mod policy;
pub mod time;

pub use config::EngineConfig;
pub use ids::{ClassId, JobId, MachineId, ModelId, ModelSet, ProfileId, Token};
pub use model::{
    Failure, JobError, JobResult, JobSpec, JobState, MachineSpec, Offer, Outcome, Requirements,
    StateName,
};
pub use time::{Span, Time};
