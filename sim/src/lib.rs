//! drover-sim: runs Drover's engine (the same store, agents, reaper and checker as
//! production) under virtual time, with seeded workloads and faults.
//!
//! - `scenario`: the TOML scenario files;
//! - `world`: the simulated fleet, network, Redis, producers and faults;
//! - `events`, `rng`, `trace`: the event queue, the seeded streams, the trace digest;
//! - `workload`, `metrics`: arrivals and service times; what a run measured;
//! - `run`, `sweep`: one run and its report; many seeds on every core.

pub mod events;
pub mod metrics;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod trace;
pub mod workload;
pub mod world;
