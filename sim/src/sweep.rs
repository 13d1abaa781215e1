//! Many seeds of one scenario, on every core, and their figures aggregated across seeds. Each
//! run is independent and deterministic, so the sweep's results do not depend on how the
//! seeds were spread over threads.

use crate::parallel::parallel_map;
use crate::run::{run, RunReport};
use crate::scenario::Scenario;
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub digest: String,
    pub violation_count: u64,
    pub first_violation: Option<String>,
    pub jobs: u64,
    pub succeeded: u64,
    pub wait_p50_s: f64,
    pub wait_p99_s: f64,
    pub jct_p50_s: f64,
    pub jct_p99_s: f64,
    /// Dollars per succeeded job; `None` for a seed where no job succeeded.
    pub cost_per_job: Option<f64>,
}

/// One figure across seeds: its mean, its sample standard deviation (n - 1; 0 for one seed)
/// and its range, over the `seeds` that have it.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Spread {
    pub seeds: u64,
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len();
        if n == 0 {
            return Spread::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
        Spread {
            seeds: n as u64,
            mean,
            sd: if n > 1 {
                (squares / (n - 1) as f64).sqrt()
            } else {
                0.0
            },
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// The figures a planner compares across seeds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Aggregate {
    pub wait_p50_s: Spread,
    pub wait_p99_s: Spread,
    pub jct_p50_s: Spread,
    pub jct_p99_s: Spread,
    /// Over the seeds where some job succeeded.
    pub cost_per_job: Spread,
}

impl Aggregate {
    pub fn of(results: &[SeedResult]) -> Aggregate {
        let spread = |figure: fn(&SeedResult) -> Option<f64>| {
            Spread::of(&results.iter().filter_map(figure).collect::<Vec<f64>>())
        };
        Aggregate {
            wait_p50_s: spread(|r| Some(r.wait_p50_s)),
            wait_p99_s: spread(|r| Some(r.wait_p99_s)),
            jct_p50_s: spread(|r| Some(r.jct_p50_s)),
            jct_p99_s: spread(|r| Some(r.jct_p99_s)),
            cost_per_job: spread(|r| r.cost_per_job),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepReport {
    pub scenario: String,
    pub seeds: u64,
    pub chaos: Option<f64>,
    pub failing: Vec<SeedResult>,
    pub aggregate: Aggregate,
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
    let seeds: Vec<u64> = (from..to).collect();
    let results = parallel_map(
        &seeds,
        threads,
        |seed| summarize(&run(scenario.clone(), *seed, chaos, |_| {})),
        on_done,
    );
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
        aggregate: Aggregate::of(&results),
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
        wait_p50_s: report.wait_s.p50,
        wait_p99_s: report.wait_s.p99,
        jct_p50_s: report.jct_s.p50,
        jct_p99_s: report.jct_s.p99,
        cost_per_job: report.cost_per_job,
    }
}

impl SweepReport {
    /// A summary for people: the failing seeds, each with the command that replays it, then
    /// the figures across seeds. `file` is the scenario's path as given.
    pub fn human(&self, file: &std::path::Path) -> String {
        let mut out = format!(
            "{}: {} seeds, {} failing\n",
            self.scenario,
            self.seeds,
            self.failing.len()
        );
        let chaos = self
            .chaos
            .map(|c| format!(" --chaos {c}"))
            .unwrap_or_default();
        for failing in &self.failing {
            out += &format!(
                "  seed {}: {} violation(s), first: {}\n    reproduce: drover-sim run {} --seed {}{chaos}\n",
                failing.seed,
                failing.violation_count,
                failing.first_violation.as_deref().unwrap_or("-"),
                file.display(),
                failing.seed,
            );
        }
        out += &self.aggregate.human();
        out
    }
}

impl Aggregate {
    /// One row per figure: mean, standard deviation, min and max across seeds.
    fn human(&self) -> String {
        let mut out = format!(
            "{:<22}{:>11}{:>11}{:>11}{:>11}\n",
            "across seeds", "mean", "sd", "min", "max"
        );
        let rows = [
            ("wait p50", &self.wait_p50_s, "s"),
            ("wait p99", &self.wait_p99_s, "s"),
            ("jct p50", &self.jct_p50_s, "s"),
            ("jct p99", &self.jct_p99_s, "s"),
            ("cost per job", &self.cost_per_job, "$"),
        ];
        for (name, spread, unit) in rows {
            let figure = |x: f64| match unit {
                "$" => format!("${x:.4}"),
                _ => format!("{x:.3}s"),
            };
            out += &format!(
                "  {:<20}{:>11}{:>11}{:>11}{:>11}  ({} seeds)\n",
                name,
                figure(spread.mean),
                figure(spread.sd),
                figure(spread.min),
                figure(spread.max),
                spread.seeds
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_mean_sample_sd_and_range() {
        let spread = Spread::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(spread.seeds, 8);
        assert_eq!(spread.mean, 5.0);
        // Sum of squares 32 over n - 1 = 7.
        assert!((spread.sd - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!((spread.min, spread.max), (2.0, 9.0));
    }

    #[test]
    fn spread_of_one_or_none() {
        let one = Spread::of(&[3.5]);
        assert_eq!(
            (one.seeds, one.mean, one.sd, one.min, one.max),
            (1, 3.5, 0.0, 3.5, 3.5)
        );
        assert_eq!(Spread::of(&[]), Spread::default());
    }
}
