//! drover-chaos: the real engine under real faults. It starts a `redis-server`, a `drover api`
//! and one `drover agent` per machine of a simulator scenario, each agent behind a TCP fault
//! proxy; submits the scenario's jobs through the API; plays its faults (and random ones);
//! and judges the history (acknowledged submissions, and the journal's leases, outcomes and
//! requeues) with the simulator's checker.
//!
//! - `plan`: what a scenario asks, and what the harness refuses;
//! - `procs`, `redis_server`, `proxy`, `fleet`: the processes and the proxy;
//! - `producer`, `journal`, `faults`: the run's three actors;
//! - `judge`, `summary`: the verdict and the figures; `run` ties it together;
//! - `compare`: the simulator and the real run of a scenario, side by side.

pub mod compare;
pub mod faults;
pub mod fleet;
pub mod journal;
pub mod judge;
pub mod overheads;
pub mod plan;
pub mod procs;
pub mod producer;
pub mod proxy;
pub mod redis_server;
pub mod run;
pub mod summary;
