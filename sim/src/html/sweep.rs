//! A sweep's page: wait p99 and cost per job per seed, a table of the seeds, and the first
//! seed's run in full.

use super::charts::{line_chart, LineChart, Series};
use super::run::run_sections;
use super::{escape, figure, page, table};
use crate::report::RunReport;
use crate::sweep::SweepReport;

/// `first`: the sweep's first seed, run again in full for its charts.
pub fn sweep_page(sweep: &SweepReport, first: &RunReport) -> String {
    let title = format!(
        "drover-sim sweep: {}, {} seeds",
        sweep.scenario, sweep.seeds
    );
    let mut body = format!(
        "<p>{} seeds, {} failing.</p>\n",
        sweep.seeds,
        sweep.failing.len()
    );
    let per_seed = |name: &str, value: fn(&crate::sweep::SeedResult) -> Option<f64>| Series {
        name: name.to_string(),
        points: sweep
            .results
            .iter()
            .filter_map(|r| value(r).map(|v| (r.seed as f64, v)))
            .collect(),
        ..Series::default()
    };
    body += &figure(line_chart(&LineChart {
        title: "queue wait per seed".into(),
        x_label: "seed".into(),
        y_label: "seconds".into(),
        series: vec![
            per_seed("wait p50", |r| Some(r.wait_p50_s)),
            per_seed("wait p99", |r| Some(r.wait_p99_s)),
        ],
        dots: true,
        ..LineChart::default()
    }));
    body += &figure(line_chart(&LineChart {
        title: "cost per succeeded job per seed".into(),
        x_label: "seed".into(),
        y_label: "dollars".into(),
        series: vec![per_seed("cost per job", |r| r.cost_per_job)],
        dots: true,
        ..LineChart::default()
    }));
    let header = [
        "seed",
        "violations",
        "jobs",
        "succeeded",
        "wait p50",
        "wait p99",
        "jct p50",
        "jct p99",
        "cost per job",
        "digest",
    ]
    .map(String::from);
    let rows: Vec<(String, Vec<String>)> = sweep
        .results
        .iter()
        .map(|r| {
            let class = if r.violation_count > 0 { "failing" } else { "" };
            let cells = vec![
                r.seed.to_string(),
                r.violation_count.to_string(),
                r.jobs.to_string(),
                r.succeeded.to_string(),
                format!("{:.3}s", r.wait_p50_s),
                format!("{:.3}s", r.wait_p99_s),
                format!("{:.3}s", r.jct_p50_s),
                format!("{:.3}s", r.jct_p99_s),
                r.cost_per_job.map_or("-".into(), |c| format!("${c:.4}")),
                format!(
                    "<code>{}</code>",
                    escape(&r.digest[..16.min(r.digest.len())])
                ),
            ];
            (class.to_string(), cells)
        })
        .collect();
    body += &table(&header, &rows);
    body += &format!("<h2>Seed {} in full</h2>\n", first.seed);
    body += &run_sections(first);
    page(&title, &body)
}
