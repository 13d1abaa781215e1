//! The speed baseline: a bare M/M/c queue on a binary heap (arrivals and departures as
//! events, a FIFO of waiting jobs, c identical servers) with no engine, network or checker.
//! It is the floor a discrete-event simulation of the same jobs can reach on this machine;
//! the simulator's speed is reported against it (`drover-sim speed`, `cargo bench`).

use crate::rng::{stream, Rng};
use crate::scenario::Scenario;
use rand_distr::{Distribution, Exp};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

/// An M/M/c queue: `servers`, Poisson arrivals at `arrival_rate` a second, exponential
/// service with mean `mean_service_s`, `jobs` jobs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Mmc {
    pub servers: u64,
    pub arrival_rate: f64,
    pub mean_service_s: f64,
    pub jobs: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct BaselineRun {
    pub queue: Mmc,
    pub wall_s: f64,
    pub jobs_per_sec: f64,
    pub events: u64,
    /// Mean wait in queue, seconds: a check that the loop is a real M/M/c queue.
    pub mean_wait_s: f64,
}

impl Mmc {
    /// The M/M/c queue with a scenario's size: its GPUs as servers, its expected jobs over
    /// its duration as the arrival rate, and the first workload's mean service time.
    pub fn like(scenario: &Scenario, jobs: u64) -> Mmc {
        let duration = scenario.duration.as_secs_f64();
        let servers: u64 = scenario
            .pools
            .iter()
            .map(|p| u64::from(p.machines) * u64::from(p.gpus.max(1)))
            .sum();
        let mean_service_s = scenario
            .workloads
            .first()
            .map_or(1.0, |w| w.service.mean_secs());
        Mmc {
            servers: servers.max(1),
            arrival_rate: jobs.max(1) as f64 / duration.max(1e-9),
            mean_service_s,
            jobs,
        }
    }

    /// Runs the queue to its last departure.
    pub fn run(&self, seed: u64) -> BaselineRun {
        let started = Instant::now();
        let mut rng: Rng = stream(seed, "baseline");
        let gaps = Exp::new(self.arrival_rate).expect("a positive rate");
        let service = Exp::new(1.0 / self.mean_service_s).expect("a positive mean");
        let micros = |s: f64| (s * 1e6) as u64;
        // Events keyed (time, sequence); the sequence's low bit says departure.
        let mut heap: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut waiting: VecDeque<u64> = VecDeque::new();
        let (mut busy, mut seq, mut arrived, mut events) = (0u64, 0u64, 0u64, 0u64);
        let mut wait_sum_us: u128 = 0;
        heap.push(Reverse((micros(gaps.sample(&mut rng)), 0)));
        while let Some(Reverse((now, key))) = heap.pop() {
            events += 1;
            if key & 1 == 0 {
                arrived += 1;
                if arrived < self.jobs {
                    seq += 2;
                    heap.push(Reverse((now + micros(gaps.sample(&mut rng)), seq)));
                }
                if busy < self.servers {
                    busy += 1;
                    seq += 2;
                    heap.push(Reverse((now + micros(service.sample(&mut rng)), seq | 1)));
                } else {
                    waiting.push_back(now);
                }
            } else if let Some(since) = waiting.pop_front() {
                wait_sum_us += u128::from(now - since);
                seq += 2;
                heap.push(Reverse((now + micros(service.sample(&mut rng)), seq | 1)));
            } else {
                busy -= 1;
            }
        }
        let wall_s = started.elapsed().as_secs_f64();
        BaselineRun {
            queue: *self,
            wall_s,
            jobs_per_sec: self.jobs as f64 / wall_s.max(1e-9),
            events,
            mean_wait_s: wait_sum_us as f64 / 1e6 / self.jobs.max(1) as f64,
        }
    }
}

/// A speed check: the simulator on a scenario beside the bare loop over as many jobs.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedReport {
    pub scenario: String,
    pub jobs: u64,
    pub events: u64,
    pub wall_s: f64,
    pub jobs_per_sec: f64,
    pub events_per_sec: f64,
    pub baseline: BaselineRun,
    /// The simulator's jobs per second over the bare loop's: 1/70 reads as 0.0143.
    pub ratio: f64,
}

/// Runs `scenario` with `seed`, then the bare M/M/c loop of its size over the same jobs.
pub fn speed_check(scenario: std::sync::Arc<Scenario>, seed: u64) -> SpeedReport {
    let report = crate::run::run(scenario.clone(), seed, None, |_| {});
    let baseline = Mmc::like(&scenario, report.jobs_simulated).run(seed);
    SpeedReport {
        scenario: report.scenario,
        jobs: report.jobs_simulated,
        events: report.events,
        wall_s: report.wall_s,
        jobs_per_sec: report.jobs_per_sec,
        events_per_sec: report.events_per_sec,
        ratio: report.jobs_per_sec / baseline.jobs_per_sec.max(1e-9),
        baseline,
    }
}

impl SpeedReport {
    pub fn human(&self) -> String {
        format!(
            "{}: {} jobs, {} events in {:.2}s ({:.0} jobs/s, {:.0} events/s)\n\
             bare M/M/{} loop, same jobs: {:.3}s ({:.0} jobs/s)\n\
             simulator / bare loop: 1/{:.1}\n",
            self.scenario,
            self.jobs,
            self.events,
            self.wall_s,
            self.jobs_per_sec,
            self.events_per_sec,
            self.baseline.queue.servers,
            self.baseline.wall_s,
            self.baseline.jobs_per_sec,
            1.0 / self.ratio.max(1e-12)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bare_loop_is_an_mmc_queue() {
        // M/M/1 at rho 0.8: Erlang C's mean wait is rho / (mu - lambda) = 4 s.
        let queue = Mmc {
            servers: 1,
            arrival_rate: 0.8,
            mean_service_s: 1.0,
            jobs: 400_000,
        };
        let run = queue.run(1);
        assert_eq!(run.events, 2 * queue.jobs);
        assert!(
            (run.mean_wait_s / 4.0 - 1.0).abs() < 0.1,
            "{}",
            run.mean_wait_s
        );
    }
}
