//! What one run reports: the data behind both the text summary (`summary.rs`) and `--json`.
//! Field names are part of the `--json` interface that README.md documents: add, don't rename.

use crate::metrics::{Little, Summary};
use crate::world::{FaultRecord, WorldStats};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize)]
pub struct JobCounts {
    pub submitted: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub unworkable: u64,
    pub in_flight: u64,
    pub lost: u64,
    /// Jobs still live at the end, by state.
    pub in_flight_states: BTreeMap<String, u64>,
}

/// One workload's jobs. The states count every job, warm-up included, so they add up to
/// `submitted`, and the workloads' rows add up to the run's `jobs`.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub submitted: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub unworkable: u64,
    pub in_flight: u64,
    /// Finished jobs submitted during the warm-up: counted in the states above, left out of
    /// the latencies.
    pub warmup_excluded: u64,
    /// Succeeded jobs submitted after the warm-up: the latencies below are over these.
    pub measured: u64,
    pub wait_s: Summary,
    pub jct_s: Summary,
    /// The measured jobs' wait as a distribution function: [seconds, share waiting at most
    /// that], 101 points (empty when none was measured).
    pub wait_cdf: Vec<[f64; 2]>,
}

/// One pool's machines, GPU time and bill.
#[derive(Clone, Debug, Serialize)]
pub struct PoolReport {
    pub name: String,
    /// Machines at full strength, and GPUs on each.
    pub machines: u32,
    pub gpus_per_machine: u32,
    pub booted: u64,
    /// Vanished: killed by a fault, or at the end of their lifetime.
    pub lost: u64,
    pub drained: u64,
    /// GPU-hours the pool's machines were up, and the share of them attempts held.
    pub gpu_hours: f64,
    pub utilization: f64,
    /// Dollars: machine-hours times the pool's `cost_per_hour`.
    pub spend: f64,
}

/// The faults of one kind: how many started, and how many machines they hit in all.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FaultTally {
    pub count: u64,
    pub machines: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub seed: u64,
    pub chaos: Option<f64>,
    pub digest: String,
    pub events: u64,
    pub jobs_simulated: u64,
    pub simulated_s: f64,
    pub wall_s: f64,
    pub events_per_sec: f64,
    pub jobs_per_sec: f64,
    /// The scenario's warm-up: jobs submitted before it are left out of the latencies.
    pub warmup_s: f64,
    pub jobs: JobCounts,
    /// Submission to the start of the attempt that succeeded, and to its success, over the
    /// succeeded jobs submitted after the warm-up.
    pub wait_s: Summary,
    pub jct_s: Summary,
    /// Share of measured jobs that waited longer than a dispatch round trip (`dispatch_s`,
    /// 2 x latency): those that found no free machine and queued. Erlang C's P(wait).
    pub p_wait: f64,
    pub dispatch_s: f64,
    pub workloads: Vec<WorkloadReport>,
    pub pools: Vec<PoolReport>,
    /// GPU time held by attempts over GPU time machines were up, the whole fleet.
    pub utilization: f64,
    /// Dollars per succeeded job, and dollars spent on machine time in all.
    pub cost_per_job: Option<f64>,
    pub spend: f64,
    pub wasted_gpu_s: f64,
    /// From a machine vanishing to its jobs' next leases.
    pub redistribution_s: Summary,
    /// From the store revoking a lease (and requeueing the job) to the job's next lease.
    pub revoked_to_leased_s: Summary,
    pub little: Little,
    /// Redis's persistence setting (what a restart keeps).
    pub redis_persistence: &'static str,
    /// Faults that started, by kind (as spelled in scenario files), and each one in order.
    pub faults: BTreeMap<&'static str, FaultTally>,
    pub fault_log: Vec<FaultRecord>,
    pub stats: WorldStats,
    /// At the end: the machines the store's registry holds (present, and those that left
    /// within `engine.retention`), and the machines alive. Endless churn keeps the first near
    /// the second.
    pub store_machines: u64,
    pub machines_alive: u64,
    pub violation_count: u64,
    pub violations: Vec<String>,
    /// Jobs waiting, GPUs busy and up, machines alive over time, in at most
    /// `timeline::MAX_SAMPLES` samples.
    pub timeline: crate::timeline::Timeline,
}

impl RunReport {
    /// Machines the faults of `kind` hit, in all.
    pub fn machines_hit(&self, kind: &str) -> u64 {
        self.faults.get(kind).map_or(0, |t| t.machines)
    }
}

/// Faults by kind, from the log.
pub fn tally_faults(log: &[FaultRecord]) -> BTreeMap<&'static str, FaultTally> {
    let mut tallies: BTreeMap<&'static str, FaultTally> = BTreeMap::new();
    for fault in log {
        let tally = tallies.entry(fault.kind).or_default();
        tally.count += 1;
        tally.machines += u64::from(fault.machines);
    }
    tallies
}
