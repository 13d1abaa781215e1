//! Capacity forecasts: a scenario run over a grid of values of its numeric fields
//! (`--vary`), several seeds a point, every figure's mean and 95% interval across seeds, and
//! the cheapest point that meets every SLO at the worse end of its interval.
//!
//! - `vary`: the axes; `slo`: the objectives; `figures`: what each run yields;
//! - `stats`: means and Student-t intervals; `search`: bisection over one monotone axis
//!   (`--minimize`) instead of a grid; `human`: the table for people.

pub mod figures;
mod human;
pub mod search;
pub mod slo;
pub mod stats;
pub mod vary;

use crate::parallel::parallel_map;
use crate::run::run;
use crate::scenario::{Override, Scenario, ScenarioError};
use serde::Serialize;
use slo::Slo;
use stats::Estimate;
use std::collections::BTreeMap;
use std::sync::Arc;
use vary::Axis;

/// What to forecast: the scenario file's text, the axes, the SLOs and how many seeds a point.
pub struct Forecast {
    pub text: String,
    /// The file as named on the command line, for errors.
    pub file: String,
    pub axes: Vec<Axis>,
    pub slos: Vec<Slo>,
    pub seeds: u64,
    pub threads: usize,
}

/// One point of the grid: its values, its figures across seeds, and its verdict.
#[derive(Clone, Debug, Serialize)]
pub struct PointReport {
    /// The varied fields' values (durations in seconds), keyed as given to `--vary`.
    pub params: BTreeMap<String, f64>,
    pub metrics: BTreeMap<&'static str, Estimate>,
    /// Every SLO met at the worse end of its 95% interval.
    pub meets_slo: bool,
    /// The SLOs it fails, as written.
    pub failed_slos: Vec<String>,
    /// Mean dollars per simulated hour and per succeeded job.
    pub cost_per_hour: Option<f64>,
    pub cost_per_job: Option<f64>,
    /// Invariant violations over its seeds (0 unless the engine or simulator has a bug).
    pub violations: u64,
    pub digests: Vec<String>,
    /// The values in axis order, for sorting and charts.
    #[serde(skip)]
    pub values: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ForecastReport {
    pub scenario: String,
    /// The seeds each point ran: the same at every point, so points differ by their values.
    pub seeds: Vec<u64>,
    pub axes: Vec<String>,
    pub slos: Vec<String>,
    /// The axis searched by bisection (`--minimize`), if any.
    pub minimized: Option<String>,
    /// Simulator runs in all: points times seeds.
    pub runs: u64,
    pub points: Vec<PointReport>,
    /// The cheapest point meeting every SLO (by cost per hour, then per job): its params.
    pub recommended: Option<BTreeMap<String, f64>>,
    /// At the recommended point, the SLO with the least headroom; with none recommended, the
    /// SLO that fails at the most points.
    pub binding_slo: Option<String>,
    /// Per SLO: the points where it fails.
    pub slo_failures: BTreeMap<String, u64>,
    /// With more than one axis: for each combination of the other axes' values, the cheapest
    /// point meeting every SLO along the first axis (the searched one with `--minimize`): "what
    /// does three times today's traffic need?" answered for every traffic level at once.
    pub recommended_by: Vec<Recommendation>,
}

/// The cheapest point meeting every SLO among the points sharing `fixed` values.
#[derive(Clone, Debug, Serialize)]
pub struct Recommendation {
    pub fixed: BTreeMap<String, f64>,
    pub recommended: Option<BTreeMap<String, f64>>,
}

/// Something that stops a forecast before or while it runs.
#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("{0}")]
    Spec(String),
}

impl Forecast {
    /// The scenario at one point of the grid, as the loader validates it.
    pub fn scenario_at(&self, values: &[f64]) -> Result<Arc<Scenario>, ScenarioError> {
        let overrides: Vec<Override> = self
            .axes
            .iter()
            .zip(values)
            .map(|(axis, v)| axis.at(*v))
            .collect();
        Scenario::parse_with(&self.text, &self.file, &overrides).map(Arc::new)
    }

    /// The seeds every point runs: the scenario's own seed and the ones after it.
    pub fn seed_list(&self, base: u64) -> Vec<u64> {
        (0..self.seeds).map(|k| base.wrapping_add(k)).collect()
    }

    /// Runs every point of the grid. Every point's scenario is loaded first, so a value the
    /// loader refuses stops the forecast before anything runs.
    pub fn run_grid(&self, on_run: impl Fn() + Sync) -> Result<ForecastReport, ForecastError> {
        let grid = vary::grid(&self.axes);
        let scenarios = grid
            .iter()
            .map(|values| self.scenario_at(values))
            .collect::<Result<Vec<_>, _>>()?;
        let points = self.evaluate(&grid, &scenarios, &on_run);
        Ok(self.report(&scenarios[0], points, None))
    }

    /// Runs each point's seeds on every core and folds them into point reports.
    pub fn evaluate(
        &self,
        grid: &[Vec<f64>],
        scenarios: &[Arc<Scenario>],
        on_run: &(impl Fn() + Sync),
    ) -> Vec<PointReport> {
        let seeds = self.seed_list(scenarios.first().map_or(0, |s| s.seed));
        let work: Vec<(usize, u64)> = (0..grid.len())
            .flat_map(|p| seeds.iter().map(move |s| (p, *s)))
            .collect();
        let runs = parallel_map(
            &work,
            self.threads,
            |(point, seed)| {
                let report = run(scenarios[*point].clone(), *seed, None, |_| {});
                (figures::of(&report), report.violation_count, report.digest)
            },
            |_| on_run(),
        );
        let mut runs = runs.into_iter();
        grid.iter()
            .map(|values| {
                let mine: Vec<_> = runs.by_ref().take(seeds.len()).collect();
                self.point(values, mine)
            })
            .collect()
    }

    fn point(&self, values: &[f64], runs: Vec<(Vec<Option<f64>>, u64, String)>) -> PointReport {
        let metrics: BTreeMap<&'static str, Estimate> = figures::FIGURES
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| {
                let seen: Vec<f64> = runs.iter().filter_map(|r| r.0[i]).collect();
                (*name, Estimate::of(&seen))
            })
            .collect();
        let failed_slos: Vec<String> = self
            .slos
            .iter()
            .filter(|slo| !slo.judge(&metrics[slo.figure]).met)
            .map(|slo| slo.text.clone())
            .collect();
        PointReport {
            params: self.params(values),
            meets_slo: failed_slos.is_empty(),
            failed_slos,
            cost_per_hour: metrics["cost_per_hour"].mean,
            cost_per_job: metrics["cost_per_job"].mean,
            metrics,
            violations: runs.iter().map(|r| r.1).sum(),
            digests: runs.into_iter().map(|r| r.2).collect(),
            values: values.to_vec(),
        }
    }

    fn params(&self, values: &[f64]) -> BTreeMap<String, f64> {
        self.axes
            .iter()
            .zip(values)
            .map(|(axis, v)| (axis.key().to_string(), *v))
            .collect()
    }

    /// The report over `points` (sorted into grid order), with its recommendation.
    pub fn report(
        &self,
        scenario: &Scenario,
        mut points: Vec<PointReport>,
        minimized: Option<String>,
    ) -> ForecastReport {
        points.sort_by(|a, b| {
            a.values
                .iter()
                .zip(&b.values)
                .map(|(x, y)| x.total_cmp(y))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let recommended = cheapest(&points);
        let slo_failures: BTreeMap<String, u64> = self
            .slos
            .iter()
            .map(|slo| {
                let failing = points.iter().filter(|p| p.failed_slos.contains(&slo.text));
                (slo.text.clone(), failing.count() as u64)
            })
            .collect();
        let binding_slo = match recommended {
            Some(point) => self.tightest(&points[point]),
            None => slo_failures
                .iter()
                .filter(|(_, n)| **n > 0)
                .max_by_key(|(_, n)| **n)
                .map(|(slo, _)| slo.clone()),
        };
        let recommended_by = self.recommended_by(&points, minimized.as_deref());
        ForecastReport {
            recommended_by,
            scenario: scenario.name.clone(),
            seeds: self.seed_list(scenario.seed),
            axes: self.axes.iter().map(|a| a.key().to_string()).collect(),
            slos: self.slos.iter().map(|s| s.text.clone()).collect(),
            minimized,
            runs: points.len() as u64 * self.seeds,
            recommended: recommended.map(|i| points[i].params.clone()),
            binding_slo,
            slo_failures,
            points,
        }
    }

    /// For each combination of the axes other than the main one (the searched axis, else the
    /// first), the cheapest point meeting every SLO; empty with one axis.
    fn recommended_by(
        &self,
        points: &[PointReport],
        searched: Option<&str>,
    ) -> Vec<Recommendation> {
        if self.axes.len() < 2 {
            return Vec::new();
        }
        let main = searched
            .and_then(|k| self.axes.iter().position(|a| a.key() == k))
            .unwrap_or(0);
        let fixed_of = |p: &PointReport| -> BTreeMap<String, f64> {
            let mut params = p.params.clone();
            params.remove(self.axes[main].key());
            params
        };
        let mut groups: Vec<(BTreeMap<String, f64>, Vec<PointReport>)> = Vec::new();
        for point in points {
            let fixed = fixed_of(point);
            match groups.iter_mut().find(|g| g.0 == fixed) {
                Some(group) => group.1.push(point.clone()),
                None => groups.push((fixed, vec![point.clone()])),
            }
        }
        groups
            .into_iter()
            .map(|(fixed, members)| Recommendation {
                recommended: cheapest(&members).map(|i| members[i].params.clone()),
                fixed,
            })
            .collect()
    }

    /// The SLO with the least headroom at `point`.
    fn tightest(&self, point: &PointReport) -> Option<String> {
        self.slos
            .iter()
            .map(|slo| (slo, slo.judge(&point.metrics[slo.figure]).headroom))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(slo, _)| slo.text.clone())
    }
}

/// The index of the cheapest point meeting every SLO: by cost per hour (the fleet's bill),
/// then per job, then the first in grid order (the smallest values). Cost per hour comes
/// first because it is the steadier figure: per job, the bill includes the drain after the
/// last arrival, which one slow seed stretches; with the same traffic at every point the two
/// order fleets alike.
fn cheapest(points: &[PointReport]) -> Option<usize> {
    let cost = |x: Option<f64>| x.unwrap_or(f64::INFINITY);
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.meets_slo)
        .min_by(|(i, a), (j, b)| {
            cost(a.cost_per_hour)
                .total_cmp(&cost(b.cost_per_hour))
                .then(cost(a.cost_per_job).total_cmp(&cost(b.cost_per_job)))
                .then(i.cmp(j))
        })
        .map(|(i, _)| i)
}
