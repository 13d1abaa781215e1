//! Many seeds of one scenario, on every core. Each run is independent and deterministic, so
//! the sweep's results do not depend on how the seeds were spread over threads.

use crate::run::{run, RunReport};
use crate::scenario::Scenario;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub digest: String,
    pub violation_count: u64,
    pub first_violation: Option<String>,
    pub jobs: u64,
    pub succeeded: u64,
    pub wait_p99_s: f64,
    pub cost_per_job: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub scenario: String,
    pub seeds: u64,
    pub chaos: Option<f64>,
    pub failing: Vec<SeedResult>,
    pub results: Vec<SeedResult>,
}

/// Runs seeds `from..to` on `threads` threads (0: every core); `on_done` is told of each
/// finished seed.
pub fn sweep(
    scenario: Arc<Scenario>,
    from: u64,
    to: u64,
    chaos: Option<f64>,
    threads: usize,
    on_done: impl Fn(&SeedResult) + Sync,
) -> SweepReport {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let next = AtomicU64::new(from);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= to {
                    break;
                }
                let report = run(scenario.clone(), seed, chaos, |_| {});
                let result = summarize(&report);
                on_done(&result);
                results
                    .lock()
                    .expect("no thread panics holding the lock")
                    .push(result);
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|r| r.seed);
    let failing = results
        .iter()
        .filter(|r| r.violation_count > 0)
        .cloned()
        .collect();
    SweepReport {
        scenario: scenario.name.clone(),
        seeds: to - from,
        chaos,
        failing,
        results,
    }
}

fn summarize(report: &RunReport) -> SeedResult {
    SeedResult {
        seed: report.seed,
        digest: report.digest.clone(),
        violation_count: report.violation_count,
        first_violation: report.violations.first().cloned(),
        jobs: report.jobs.submitted,
        succeeded: report.jobs.succeeded,
        wait_p99_s: report.wait_s.p99,
        cost_per_job: report.cost_per_job,
    }
}
