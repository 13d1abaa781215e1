//! The scenario file format: typed structs, a loader that refuses bad input with the file, line
//! and field at fault, and helpers. `scenarios/README.md` is the schema a user reads.
//!
//! ```no_run
//! use drover_sim::scenario::Scenario;
//! let scenario = Scenario::load(std::path::Path::new("scenarios/steady.toml"))?;
//! println!("{} runs {} machines", scenario.name, scenario.total_machines());
//! # Ok::<(), drover_sim::scenario::ScenarioError>(())
//! ```

mod edit;
mod error;
mod load;
mod read;
mod schema;
#[cfg(test)]
mod tests;

pub use drover_engine::core::labels::{LabelValue, Labels};
pub use drover_engine::core::{EngineConfig, Span};
pub use edit::{FieldPath, NumberKind, Override, PathError};
pub use error::ScenarioError;
pub use load::{
    MAX_EXPECTED_JOBS, MAX_FAULTS, MAX_FILE_BYTES, MAX_GPUS_PER_MACHINE, MAX_MACHINES_PER_POOL,
    MAX_MODELS, MAX_POOLS, MAX_SIGMA, MAX_WORKLOADS,
};
pub use schema::{
    Arrivals, Dist, FaultKind, FaultSpec, Lifetime, ModelSpec, Persistence, PoolSpec, RedisSpec,
    Scenario, WorkloadSpec,
};
