//! `drover-chaos compare`: the same scenario in the simulator and for real, seed by seed, side
//! by side. A few minutes of real traffic is a small sample, so each figure is given as the
//! mean over the seeds with its range, and each ratio (real / simulated) with the interval the
//! two ranges allow: a ratio whose interval holds 1 is within the noise of this many seeds.

use crate::procs::Children;
use crate::run::{run, RunOptions};
use crate::summary::Report;
use anyhow::Result;
use drover_sim::report::RunReport;
use drover_sim::scenario::Scenario;
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::Arc;

/// One figure over the seeds: mean, least and most.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Spread {
        if values.is_empty() {
            return Spread {
                mean: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        Spread {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One row: the simulator's figure, the real one, and their ratio with its interval.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub sim: Spread,
    pub real: Spread,
    /// real mean / simulated mean; `None` when the simulated mean is 0.
    pub ratio: Option<f64>,
    /// The ratio's interval: least real over most simulated, most real over least simulated.
    pub ratio_low: Option<f64>,
    pub ratio_high: Option<f64>,
    /// The ratio is outside 0.8..1.25 and its interval does not hold 1.
    pub differs: bool,
}

fn row(figure: &'static str, sim: &[f64], real: &[f64]) -> Row {
    let (s, r) = (Spread::of(sim), Spread::of(real));
    let div = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    let ratio = div(r.mean, s.mean);
    let (low, high) = (div(r.min, s.max), div(r.max, s.min));
    let holds_one = low.is_some_and(|l| l <= 1.0) && high.is_none_or(|h| h >= 1.0);
    let differs = ratio.is_some_and(|q| !(0.8..=1.25).contains(&q)) && !holds_one;
    Row {
        figure,
        sim: s,
        real: r,
        ratio,
        ratio_low: low,
        ratio_high: high,
        differs,
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub seeds: Vec<u64>,
    pub time_scale: f64,
    pub rows: Vec<Row>,
    /// The engine's overheads (real runs only, p50 in seconds): what the simulator must model.
    pub overheads: Vec<(&'static str, Spread)>,
    /// Real runs whose checker found a violation (the comparison is void for them).
    pub real_violations: u64,
}

/// The figures compared, from each side's report.
fn figures(sim: &[RunReport], real: &[Report]) -> Vec<Row> {
    let s = |f: fn(&RunReport) -> f64| sim.iter().map(f).collect::<Vec<f64>>();
    let r = |f: fn(&Report) -> f64| real.iter().map(f).collect::<Vec<f64>>();
    vec![
        row("wait p50 (s)", &s(|x| x.wait_s.p50), &r(|x| x.wait_s.p50)),
        row("wait p99 (s)", &s(|x| x.wait_s.p99), &r(|x| x.wait_s.p99)),
        row("JCT p50 (s)", &s(|x| x.jct_s.p50), &r(|x| x.jct_s.p50)),
        row(
            "throughput (jobs/s)",
            &s(|x| x.jobs.succeeded as f64 / x.simulated_s.max(1e-9)),
            &r(|x| x.jobs.succeeded as f64 / (x.wall_s * x.time_scale).max(1e-9)),
        ),
        row(
            "redistribution p50 (s)",
            &s(|x| x.redistribution_s.p50),
            &r(|x| x.redistribution_s.p50),
        ),
        row(
            "redistribution max (s)",
            &s(|x| x.redistribution_s.max),
            &r(|x| x.redistribution_s.max),
        ),
        row(
            "jobs submitted",
            &s(|x| x.jobs.submitted as f64),
            &r(|x| x.jobs.submitted as f64),
        ),
        row(
            "jobs succeeded",
            &s(|x| x.jobs.succeeded as f64),
            &r(|x| x.jobs.succeeded as f64),
        ),
        row(
            "jobs dead",
            &s(|x| x.jobs.dead as f64),
            &r(|x| x.jobs.dead as f64),
        ),
        row(
            "jobs timed out",
            &s(|x| x.jobs.timed_out as f64),
            &r(|x| x.jobs.timed_out as f64),
        ),
        row(
            "jobs unworkable",
            &s(|x| x.jobs.unworkable as f64),
            &r(|x| x.jobs.unworkable as f64),
        ),
        row(
            "jobs lost",
            &s(|x| x.jobs.lost as f64),
            &r(|x| x.jobs.lost as f64),
        ),
    ]
}

fn overheads(real: &[Report]) -> Vec<(&'static str, Spread)> {
    let p50 = |f: fn(&Report) -> f64| Spread::of(&real.iter().map(f).collect::<Vec<f64>>());
    vec![
        (
            "submission to lease, GPU free",
            p50(|r| r.overheads.submit_to_lease_idle_s.p50),
        ),
        (
            "lease to outcome less the job",
            p50(|r| r.overheads.end_to_outcome_s.p50),
        ),
        (
            "outcome to the GPU's next lease",
            p50(|r| r.overheads.outcome_to_next_lease_s.p50),
        ),
    ]
}

/// Runs `template` (its file and options; the seed is set per run) for every seed, in the
/// simulator and for real.
pub async fn compare(
    template: RunOptions,
    seeds: std::ops::Range<u64>,
    children: &Children,
) -> Result<Comparison> {
    let scenario = Arc::new(Scenario::load(&template.file)?);
    // Refuse what the real run cannot play before the simulator runs at all.
    crate::plan::check(
        &scenario,
        &template.file.display().to_string(),
        template.time_scale,
    )?;
    let (mut sims, mut reals) = (Vec::new(), Vec::new());
    for seed in seeds.clone() {
        let sim_scenario = scenario.clone();
        let chaos = template.chaos;
        let sim = tokio::task::spawn_blocking(move || {
            drover_sim::run::run(sim_scenario, seed, chaos, |_| {})
        })
        .await?;
        sims.push(sim);
        let options = RunOptions {
            seed: Some(seed),
            file: template.file.clone(),
            report: template
                .report
                .as_ref()
                .map(|dir| dir.join(format!("seed-{seed}"))),
            ..template.clone()
        };
        reals.push(run(options, children).await?);
    }
    Ok(Comparison {
        scenario: scenario.name.clone(),
        seeds: seeds.collect(),
        time_scale: template.time_scale,
        rows: figures(&sims, &reals),
        overheads: overheads(&reals),
        real_violations: reals.iter().filter(|r| !r.passed()).count() as u64,
    })
}

impl Comparison {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "scenario {}, seeds {:?}, time scale {}x: simulator vs real (mean [min..max] over seeds)",
            self.scenario, self.seeds, self.time_scale
        );
        let _ = writeln!(
            out,
            "{:<24} {:>28} {:>28} {:>8}  ratio interval",
            "figure", "simulator", "real", "ratio"
        );
        let spread = |s: &Spread| format!("{:.3} [{:.3}..{:.3}]", s.mean, s.min, s.max);
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<24} {:>28} {:>28} {:>8}  [{}..{}]{}",
                r.figure,
                spread(&r.sim),
                spread(&r.real),
                opt(r.ratio),
                opt(r.ratio_low),
                opt(r.ratio_high),
                if r.differs { "  DIFFERS" } else { "" }
            );
        }
        let _ = writeln!(
            out,
            "engine overheads, real runs (p50, ms; mean [min..max] over seeds):"
        );
        for (name, s) in &self.overheads {
            let _ = writeln!(
                out,
                "  {name:<34} {:.1} [{:.1}..{:.1}]",
                s.mean * 1e3,
                s.min * 1e3,
                s.max * 1e3
            );
        }
        if self.real_violations > 0 {
            let _ = writeln!(
                out,
                "{} real runs broke an invariant: see `drover-chaos run` for them",
                self.real_violations
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_within_the_noise_is_not_flagged() {
        let noisy = row("w", &[1.0, 2.0], &[1.5, 3.0]);
        assert_eq!(noisy.ratio, Some(1.5));
        assert!(!noisy.differs, "the interval [0.75..3] holds 1");
        let far = row("w", &[1.0, 1.1], &[2.0, 2.2]);
        assert!(far.differs, "{far:?}");
        let zero = row("w", &[0.0], &[0.0]);
        assert_eq!(zero.ratio, None);
        assert!(!zero.differs);
    }
}
