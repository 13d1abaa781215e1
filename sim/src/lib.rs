//! drover-sim: runs Drover's engine (the same store, agents, reaper and checker as
//! production) under virtual time, with seeded workloads and faults.
//!
//! - `scenario`: the TOML scenario files;
//! - `world`: the simulated fleet, network, Redis, producers and faults;
//! - `events`, `rng`, `trace`: the event queue, the seeded streams, the trace digest;
//! - `workload`, `metrics`: arrivals and service times; what a run measured;
//! - `baseline`: the bare M/M/c loop the simulator's speed is measured against;
//! - `run`, `report`, `summary`: one run, what it reports, and that as text for people;
//! - `html`: `--report` pages with charts;
//! - `timeline`: the run over time in a fixed number of samples, for charts;
//! - `sweep`: many seeds on every core, and their figures aggregated;
//! - `forecast`: a grid (or a bisection) over numeric fields, SLOs and the cheapest point
//!   meeting them; `parallel`: spreading runs over every core.

pub mod baseline;
pub mod events;
pub mod forecast;
pub mod html;
pub mod metrics;
pub mod parallel;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod summary;
pub mod sweep;
pub mod timeline;
pub mod trace;
pub mod workload;
pub mod world;
