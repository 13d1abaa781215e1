//! One run of a scenario under one seed, and its report.

use crate::metrics::{Little, Summary};
use crate::scenario::Scenario;
use crate::world::{World, WorldStats};
use drover_engine::core::{StateName, Time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub succeeded: u64,
    pub wait_s: Summary,
    pub jct_s: Summary,
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
    pub jobs: JobCounts,
    pub wait_s: Summary,
    pub jct_s: Summary,
    /// Share of measured jobs that waited longer than a dispatch round trip (2 x latency).
    pub p_wait: f64,
    pub workloads: Vec<WorkloadReport>,
    pub utilization: f64,
    pub cost_per_job: Option<f64>,
    pub spend: f64,
    pub wasted_gpu_s: f64,
    pub redistribution_s: Summary,
    pub little: Little,
    pub stats: WorldStats,
    /// At the end: the machines the store's registry holds (present, and those that left
    /// within `engine.retention`), and the machines alive. Endless churn keeps the first near
    /// the second.
    pub store_machines: u64,
    pub machines_alive: u64,
    pub violation_count: u64,
    pub violations: Vec<String>,
}

/// Runs `scenario` with `seed` (and swarm faults at `chaos` per hour) to the end.
/// `progress` is called now and then with the simulated fraction done.
pub fn run(
    scenario: Arc<Scenario>,
    seed: u64,
    chaos: Option<f64>,
    mut progress: impl FnMut(f64),
) -> RunReport {
    let started = Instant::now();
    let mut world = World::new(scenario.clone(), seed, chaos);
    let horizon = world.quiet_from.plus(scenario.drain);
    let mut steps: u64 = 0;
    while world.step(horizon) {
        steps += 1;
        if steps.is_multiple_of(1 << 16) {
            progress(world.now().0 as f64 / horizon.0.max(1) as f64);
        }
    }
    let end = world.now();
    let report = finish(&mut world, end, horizon);
    let wall_s = started.elapsed().as_secs_f64();
    RunReport {
        wall_s,
        events_per_sec: report.events as f64 / wall_s.max(1e-9),
        jobs_per_sec: report.jobs_simulated as f64 / wall_s.max(1e-9),
        seed,
        chaos,
        ..report
    }
}

/// Closes the books and runs the end-of-run checks.
fn finish(world: &mut World, end: Time, horizon: Time) -> RunReport {
    world.close_books();
    world.check_end(end, horizon);
    let (store_machines, machines_alive) = world.registry_sizes();
    let in_flight_states = world.in_flight_states();
    let in_flight: u64 = in_flight_states.values().sum();
    let (events, accepted) = (world.events_taken(), world.jobs_accepted());
    let metrics = &mut world.metrics;
    let little = metrics.little();
    let (wait_s, jct_s) = metrics.overall.summary();
    let workloads = world
        .scenario
        .workloads
        .iter()
        .zip(&metrics.per_workload)
        .map(|(spec, lat)| {
            let (wait_s, jct_s) = lat.summary();
            WorkloadReport {
                name: spec.name.clone(),
                succeeded: lat.count(),
                wait_s,
                jct_s,
            }
        })
        .collect();
    let outcomes = metrics.outcomes;
    let lost = world
        .checker
        .violations()
        .iter()
        .filter(|v| v.invariant == drover_engine::check::Invariant::NoJobLost)
        .count() as u64;
    let redistribution = &metrics.redistribution;
    let redistribution_s = if redistribution.is_empty() {
        Summary::default()
    } else {
        let q = |x: f64| redistribution.value_at_quantile(x) as f64 / 1e6;
        Summary {
            mean: redistribution.mean() / 1e6,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: redistribution.max() as f64 / 1e6,
        }
    };
    let ledger = &metrics.ledger;
    RunReport {
        store_machines,
        machines_alive,
        scenario: world.scenario.name.clone(),
        seed: 0,
        chaos: None,
        digest: std::mem::take(&mut world.trace).digest(),
        events,
        jobs_simulated: accepted,
        simulated_s: end.as_secs_f64(),
        wall_s: 0.0,
        events_per_sec: 0.0,
        jobs_per_sec: 0.0,
        jobs: JobCounts {
            submitted: accepted,
            succeeded: outcomes.succeeded,
            dead: outcomes.dead,
            cancelled: outcomes.cancelled,
            timed_out: outcomes.timed_out,
            unworkable: outcomes.unworkable,
            in_flight,
            lost,
            in_flight_states,
        },
        wait_s,
        jct_s,
        p_wait: metrics.overall.waited as f64 / metrics.overall.count().max(1) as f64,
        workloads,
        utilization: ledger.utilization(),
        cost_per_job: ledger.cost_per_job(),
        spend: ledger.spend,
        wasted_gpu_s: (ledger.gpu_seconds_busy - metrics.useful_gpu_s).max(0.0),
        redistribution_s,
        little,
        stats: world.stats,
        violation_count: world.checker.violation_count(),
        violations: world
            .checker
            .violations()
            .iter()
            .map(|v| v.to_string())
            .collect(),
    }
}

impl RunReport {
    /// A summary for people at a terminal.
    pub fn human(&self) -> String {
        let j = &self.jobs;
        let mut out = format!(
            "scenario {} seed {}{}\n\
             digest   {}\n\
             events   {} in {:.2}s wall ({:.0} events/s, {:.0} jobs/s), {:.0}s simulated\n\
             jobs     {} submitted: {} succeeded, {} dead, {} timed out, {} unworkable, {} cancelled, {} in flight, {} lost\n\
             wait     mean {:.3}s  p50 {:.3}s  p90 {:.3}s  p99 {:.3}s  max {:.3}s  (P(wait) {:.3})\n\
             jct      mean {:.3}s  p50 {:.3}s  p90 {:.3}s  p99 {:.3}s  max {:.3}s\n\
             fleet    utilisation {:.1}%  spend {:.2}  cost/job {}  wasted {:.0} GPU-s\n\
             churn    {} machines lost, {} drained; redistribution p50 {:.1}s p99 {:.1}s max {:.1}s\n",
            self.scenario,
            self.seed,
            self.chaos.map(|c| format!(" chaos {c}/h")).unwrap_or_default(),
            self.digest,
            self.events,
            self.wall_s,
            self.events_per_sec,
            self.jobs_per_sec,
            self.simulated_s,
            j.submitted,
            j.succeeded,
            j.dead,
            j.timed_out,
            j.unworkable,
            j.cancelled,
            j.in_flight,
            j.lost,
            self.wait_s.mean,
            self.wait_s.p50,
            self.wait_s.p90,
            self.wait_s.p99,
            self.wait_s.max,
            self.p_wait,
            self.jct_s.mean,
            self.jct_s.p50,
            self.jct_s.p90,
            self.jct_s.p99,
            self.jct_s.max,
            self.utilization * 100.0,
            self.spend,
            self.cost_per_job.map_or("-".to_string(), |c| format!("{c:.4}")),
            self.wasted_gpu_s,
            self.stats.machines_lost,
            self.stats.machines_drained,
            self.redistribution_s.p50,
            self.redistribution_s.p99,
            self.redistribution_s.max,
        );
        for w in &self.workloads {
            out += &format!(
                "  {:<16} {:>8} ok  wait p50 {:.3}s p99 {:.3}s  jct p50 {:.3}s p99 {:.3}s\n",
                w.name, w.succeeded, w.wait_s.p50, w.wait_s.p99, w.jct_s.p50, w.jct_s.p99
            );
        }
        if !j.in_flight_states.is_empty() {
            out += &format!("in flight at the end: {:?}\n", j.in_flight_states);
        }
        if self.violation_count == 0 {
            out += "invariants: all held\n";
        } else {
            out += &format!("invariants: {} violation(s)\n", self.violation_count);
            for v in &self.violations {
                out += &format!("  {v}\n");
            }
        }
        out
    }
}

impl World {
    fn in_flight_states(&self) -> BTreeMap<String, u64> {
        let mut states = BTreeMap::new();
        for (job, _) in self.checker.live() {
            let name = self
                .store_state(job)
                .map_or("unknown", |s: StateName| s.as_str());
            *states.entry(name.to_string()).or_insert(0) += 1;
        }
        states
    }
}
