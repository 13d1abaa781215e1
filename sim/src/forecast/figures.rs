//! The figures a forecast takes from each run, by the names SLOs use.

use crate::run::RunReport;

/// How a figure reads: seconds (SLO bounds take durations), dollars, or a plain number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Dollars,
    Ratio,
}

/// Every figure, in report order, with its unit and what it is.
pub const FIGURES: &[(&str, Unit, &str)] = &[
    ("wait_mean", Unit::Seconds, "mean queue wait"),
    ("wait_p50", Unit::Seconds, "median queue wait"),
    ("wait_p90", Unit::Seconds, "90th percentile queue wait"),
    ("wait_p99", Unit::Seconds, "99th percentile queue wait"),
    ("jct_mean", Unit::Seconds, "mean job completion time"),
    ("jct_p50", Unit::Seconds, "median job completion time"),
    (
        "jct_p99",
        Unit::Seconds,
        "99th percentile job completion time",
    ),
    ("p_wait", Unit::Ratio, "share of jobs that queued"),
    (
        "dead_rate",
        Unit::Ratio,
        "share of submitted jobs that ended dead",
    ),
    (
        "utilization",
        Unit::Ratio,
        "share of GPU time attempts held",
    ),
    ("cost_per_hour", Unit::Dollars, "spend per simulated hour"),
    ("cost_per_job", Unit::Dollars, "spend per succeeded job"),
];

pub fn unit_of(name: &str) -> Option<Unit> {
    FIGURES.iter().find(|f| f.0 == name).map(|f| f.1)
}

/// The names, for error messages.
pub fn names() -> String {
    FIGURES.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
}

/// One run's figures, in `FIGURES` order; `None` where the run has none (no job succeeded:
/// no cost per job; nothing measured: no latencies).
pub fn of(report: &RunReport) -> Vec<Option<f64>> {
    let measured = report.workloads.iter().map(|w| w.measured).sum::<u64>() > 0;
    let latency = |x: f64| measured.then_some(x);
    let hours = report.simulated_s / 3600.0;
    let submitted = report.jobs.submitted;
    FIGURES
        .iter()
        .map(|(name, _, _)| match *name {
            "wait_mean" => latency(report.wait_s.mean),
            "wait_p50" => latency(report.wait_s.p50),
            "wait_p90" => latency(report.wait_s.p90),
            "wait_p99" => latency(report.wait_s.p99),
            "jct_mean" => latency(report.jct_s.mean),
            "jct_p50" => latency(report.jct_s.p50),
            "jct_p99" => latency(report.jct_s.p99),
            "p_wait" => latency(report.p_wait),
            "dead_rate" => (submitted > 0).then(|| report.jobs.dead as f64 / submitted as f64),
            "utilization" => Some(report.utilization),
            "cost_per_hour" => (hours > 0.0).then(|| report.spend / hours),
            "cost_per_job" => report.cost_per_job,
            _ => None,
        })
        .collect()
}
