//! One run of a scenario under one seed, and its report (`report.rs`; the text summary is
//! `summary.rs`).

use crate::metrics::{Metrics, Summary};
use crate::report::tally_faults;
pub use crate::report::{JobCounts, PoolReport, RunReport, WorkloadReport};
use crate::scenario::Scenario;
use crate::world::World;
use drover_engine::core::{StateName, Time};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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
    world.stats.machines_declared_lost = world.machines_declared_lost();
    let (store_machines, machines_alive) = world.registry_sizes();
    let in_flight_states = world.in_flight_states();
    let in_flight: u64 = in_flight_states.values().sum();
    let (events, accepted) = (world.events_taken(), world.jobs_accepted());
    let workloads = workload_reports(world);
    let pools = pool_reports(world);
    let fault_log = world.fault_log();
    let metrics = &mut world.metrics;
    let little = metrics.little();
    let (wait_s, jct_s) = metrics.overall.summary();
    let outcomes = metrics.outcomes.total;
    let lost = world
        .checker
        .violations()
        .iter()
        .filter(|v| v.invariant == drover_engine::check::Invariant::NoJobLost)
        .count() as u64;
    let ledger = &metrics.ledger;
    let scenario = &world.scenario;
    RunReport {
        store_machines,
        machines_alive,
        scenario: scenario.name.clone(),
        seed: 0,
        chaos: None,
        digest: std::mem::take(&mut world.trace).digest(),
        events,
        jobs_simulated: accepted,
        simulated_s: end.as_secs_f64(),
        wall_s: 0.0,
        events_per_sec: 0.0,
        jobs_per_sec: 0.0,
        warmup_s: scenario.warmup.as_secs_f64(),
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
        dispatch_s: metrics.dispatch().as_secs_f64(),
        workloads,
        pools,
        utilization: ledger.utilization(),
        cost_per_job: ledger.cost_per_job(),
        spend: ledger.spend,
        wasted_gpu_s: (ledger.gpu_seconds_busy - metrics.useful_gpu_s).max(0.0),
        redistribution_s: Summary::of_histogram(&metrics.redistribution),
        revoked_to_leased_s: Summary::of_histogram(&metrics.revoke_to_lease),
        little,
        redis_persistence: scenario.redis.persistence.as_str(),
        faults: tally_faults(&fault_log),
        fault_log,
        stats: world.stats,
        timeline: world.timeline.clone(),
        violation_count: world.checker.violation_count(),
        violations: world
            .checker
            .violations()
            .iter()
            .map(|v| v.to_string())
            .collect(),
    }
}

/// Every workload's jobs by state (warm-up included) and latencies (after it).
fn workload_reports(world: &World) -> Vec<WorkloadReport> {
    let metrics: &Metrics = &world.metrics;
    let in_flight = world.in_flight_per_workload();
    let submitted = world.jobs_accepted_per_workload();
    let book = &metrics.outcomes;
    world
        .scenario
        .workloads
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let latencies = &metrics.per_workload[i];
            let (wait_s, jct_s) = latencies.summary();
            let outcomes = book.per_workload[i];
            WorkloadReport {
                name: spec.name.clone(),
                submitted: submitted[i],
                succeeded: outcomes.succeeded,
                dead: outcomes.dead,
                cancelled: outcomes.cancelled,
                timed_out: outcomes.timed_out,
                unworkable: outcomes.unworkable,
                in_flight: in_flight[i],
                warmup_excluded: book.in_warmup[i],
                measured: latencies.count(),
                wait_s,
                jct_s,
                wait_cdf: crate::metrics::cdf(&latencies.wait, 101),
            }
        })
        .collect()
}

/// Every pool's machines, GPU time and bill.
fn pool_reports(world: &World) -> Vec<PoolReport> {
    world
        .scenario
        .pools
        .iter()
        .zip(&world.metrics.pools)
        .map(|(spec, tally)| PoolReport {
            name: spec.name.clone(),
            machines: spec.machines,
            gpus_per_machine: spec.gpus,
            booted: tally.booted,
            lost: tally.lost,
            drained: tally.drained,
            gpu_hours: tally.ledger.gpu_seconds_available / 3600.0,
            utilization: tally.ledger.utilization(),
            spend: tally.ledger.spend,
        })
        .collect()
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
