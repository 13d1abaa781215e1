//! One run's page: its headline figures, the wait CDF per workload, jobs waiting, GPU
//! utilisation and machines alive over time with faults shaded, and jobs by terminal state.

use super::charts::{bar_chart, line_chart, LineChart, Series, Span};
use super::{escape, figure, page, table};
use crate::report::RunReport;

pub fn run_page(report: &RunReport) -> String {
    let title = format!("drover-sim run: {} seed {}", report.scenario, report.seed);
    page(&title, &run_sections(report))
}

/// The sections a run contributes to any page.
pub(super) fn run_sections(report: &RunReport) -> String {
    let mut body = headline(report);
    body += "<h2>Queue wait per workload</h2>\n";
    body += &figure(line_chart(&wait_cdf(report)));
    body += "<h2>Over time</h2>\n<p class=\"note\">Shaded: faults, from start to heal.</p>\n";
    for (title, label, lines) in OVER_TIME {
        let series = lines
            .iter()
            .map(|(name, value)| Series {
                name: name.to_string(),
                points: report
                    .timeline
                    .samples
                    .iter()
                    .map(|s| (s.at_s, value(s)))
                    .collect(),
                ..Series::default()
            })
            .collect();
        body += &figure(line_chart(&LineChart {
            title: title.to_string(),
            x_label: "simulated seconds".into(),
            y_label: label.to_string(),
            series,
            spans: fault_spans(report),
            ..LineChart::default()
        }));
    }
    body += "<h2>Jobs by terminal state</h2>\n";
    let j = &report.jobs;
    let bars = [
        ("succeeded", j.succeeded),
        ("dead", j.dead),
        ("timed out", j.timed_out),
        ("unworkable", j.unworkable),
        ("cancelled", j.cancelled),
        ("in flight", j.in_flight),
        ("lost", j.lost),
    ]
    .map(|(name, n)| (name, n as f64));
    body += &figure(bar_chart("jobs by terminal state", &bars));
    body += &format!("<h2>Summary</h2>\n<pre>{}</pre>\n", escape(&report.human()));
    body
}

type Sampled = fn(&crate::timeline::Sample) -> f64;
/// A chart over time: its title, its y label, and its lines (name, value).
type OverTime = (
    &'static str,
    &'static str,
    &'static [(&'static str, Sampled)],
);
const OVER_TIME: [OverTime; 3] = [
    (
        "jobs waiting (in the system, not running)",
        "jobs",
        &[("jobs waiting", |s| s.waiting)],
    ),
    (
        "GPU utilisation (busy / up)",
        "utilisation",
        &[("utilisation", |s| s.utilization())],
    ),
    (
        "machines alive",
        "machines",
        &[
            ("alive (booting included)", |s| s.machines),
            ("booted", |s| s.machines_up),
        ],
    ),
];

fn headline(report: &RunReport) -> String {
    let cost = report
        .cost_per_job
        .map_or("-".to_string(), |c| format!("${c:.4}"));
    let rows = vec![(
        String::new(),
        vec![
            report.jobs.submitted.to_string(),
            report.jobs.succeeded.to_string(),
            format!("{:.3}s", report.wait_s.p50),
            format!("{:.3}s", report.wait_s.p99),
            format!("{:.3}s", report.jct_s.p99),
            format!("{:.1}%", report.utilization * 100.0),
            format!("${:.2}", report.spend),
            cost,
            report.fault_log.len().to_string(),
            report.violation_count.to_string(),
        ],
    )];
    let header = [
        "submitted",
        "succeeded",
        "wait p50",
        "wait p99",
        "jct p99",
        "utilisation",
        "spend",
        "cost per job",
        "faults",
        "violations",
    ]
    .map(String::from);
    format!(
        "<p class=\"note\">digest <code>{}</code>; {:.0} simulated seconds</p>\n{}",
        report.digest,
        report.simulated_s,
        table(&header, &rows)
    )
}

fn wait_cdf(report: &RunReport) -> LineChart {
    LineChart {
        title: "wait CDF: share of jobs that waited at most x".into(),
        x_label: "queue wait, seconds".into(),
        y_label: "share of measured jobs".into(),
        series: report
            .workloads
            .iter()
            .map(|w| Series {
                name: w.name.clone(),
                points: w.wait_cdf.iter().map(|p| (p[0], p[1])).collect(),
                ..Series::default()
            })
            .collect(),
        ..LineChart::default()
    }
}

fn fault_spans(report: &RunReport) -> Vec<Span> {
    report
        .fault_log
        .iter()
        .map(|f| Span {
            from: f.at_s,
            to: f.at_s + f.duration_s,
        })
        .collect()
}
