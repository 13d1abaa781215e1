//! drover-sim: runs Drover's engine (the same store, agents, reaper and checker as
//! production) under virtual time, with seeded workloads and faults.
//!
//! - `scenario`: the TOML scenario files;
//! - `world`: the simulated fleet, network, Redis, producers and faults;
//! - `events`, `rng`, `trace`: the event queue, the seeded streams, the trace digest;
//! - `workload`, `metrics`: arrivals and service times; what a run measured;
//! - `run`, `report`, `summary`: one run, what it reports, and that as text for people;
//! - `sweep`: many seeds on every core, and their figures aggregated.

pub mod events;
pub mod metrics;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod summary;
pub mod sweep;
pub mod trace;
pub mod workload;
pub mod world;
