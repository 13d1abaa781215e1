//! A forecast's page: cost per job and p99 wait against the varied field (one line per
//! combination of the other fields, 95% intervals as error bars), the SLO's bound and the
//! recommended point marked; a
//! table of every point; then the recommended point's run in full.

use super::charts::{line_chart, LineChart, Series};
use super::run::run_sections;
use super::{escape, figure, page, table};
use crate::forecast::slo::Slo;
use crate::forecast::{ForecastReport, PointReport};
use crate::report::RunReport;

/// The figures the table shows, with their units.
const COLUMNS: &[(&str, &str)] = &[
    ("wait_mean", "s"),
    ("wait_p99", "s"),
    ("jct_p50", "s"),
    ("jct_p99", "s"),
    ("dead_rate", ""),
    ("utilization", ""),
    ("cost_per_hour", "$"),
    ("cost_per_job", "$"),
];

/// `detail`: one run of the recommended point (or the first point), for its charts.
pub fn forecast_page(report: &ForecastReport, detail: Option<&RunReport>) -> String {
    let title = format!("drover-sim forecast: {}", report.scenario);
    let mut body = verdict(report);
    for (figure_name, title, unit) in [
        ("cost_per_job", "cost per succeeded job", "dollars"),
        ("wait_p99", "99th percentile queue wait", "seconds"),
    ] {
        body += &figure(line_chart(&chart(report, figure_name, title, unit)));
    }
    body += "<h2>Every point</h2>\n<p class=\"note\">Mean ± 95% interval across seeds \
             (Student's t); SLOs are judged at the worse end.</p>\n";
    body += &points_table(report);
    if let Some(run) = detail {
        body += &format!(
            "<h2>One run of the {} point (seed {})</h2>\n",
            if report.recommended.is_some() {
                "recommended"
            } else {
                "first"
            },
            run.seed
        );
        body += &run_sections(run);
    }
    page(&title, &body)
}

fn verdict(report: &ForecastReport) -> String {
    let mut out = format!(
        "<p>{} points × {} seeds = {} runs{}. SLOs: {}.</p>\n",
        report.points.len(),
        report.seeds.len(),
        report.runs,
        report
            .minimized
            .as_ref()
            .map(|k| format!(", bisection over {}", escape(k)))
            .unwrap_or_default(),
        escape(&report.slos.join(", "))
    );
    out += &match &report.recommended {
        Some(params) => format!(
            "<p><strong>Recommended: {}</strong> (the cheapest point meeting every SLO){}</p>\n",
            escape(&params_text(params)),
            report
                .binding_slo
                .as_ref()
                .map(|s| format!("; binding SLO there: {}", escape(s)))
                .unwrap_or_default()
        ),
        None => format!(
            "<p><strong>No point meets every SLO.</strong>{}</p>\n",
            report
                .binding_slo
                .as_ref()
                .map(|s| format!(" Binding SLO: {}.", escape(s)))
                .unwrap_or_default()
        ),
    };
    if report.recommended_by.len() > 1 {
        out += "<p>Cheapest meeting every SLO, for each value of the other fields:</p>\n<ul>\n";
        for r in &report.recommended_by {
            let answer = r.recommended.as_ref().map_or("none".to_string(), |params| {
                let own: std::collections::BTreeMap<String, f64> = params
                    .iter()
                    .filter(|(k, _)| !r.fixed.contains_key(*k))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                params_text(&own)
            });
            out += &format!(
                "<li>{}: {}</li>\n",
                escape(&params_text(&r.fixed)),
                escape(&answer)
            );
        }
        out += "</ul>\n";
    }
    out
}

fn params_text(params: &std::collections::BTreeMap<String, f64>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The axis charts put on x: the searched one, else the first.
fn x_axis(report: &ForecastReport) -> usize {
    report
        .minimized
        .as_ref()
        .and_then(|k| report.axes.iter().position(|a| a == k))
        .unwrap_or(0)
}

fn chart(report: &ForecastReport, name: &str, title: &str, unit: &str) -> LineChart {
    let x = x_axis(report);
    let x_key = report.axes.get(x).cloned().unwrap_or_default();
    // One line per combination of the other axes' values.
    let mut groups: Vec<Series> = Vec::new();
    for point in &report.points {
        let estimate = point.metrics[name];
        let Some(y) = estimate.mean else {
            continue;
        };
        let label = others(report, point, x);
        let index = match groups.iter().position(|g| g.name == label) {
            Some(i) => i,
            None => {
                groups.push(Series {
                    name: label,
                    ..Series::default()
                });
                groups.len() - 1
            }
        };
        groups[index].points.push((point.values[x], y));
        groups[index].errors.push(estimate.ci95.unwrap_or(0.0));
    }
    for group in groups.iter_mut().filter(|g| g.name.is_empty()) {
        group.name = title.to_string();
    }
    let bound = report
        .slos
        .iter()
        .filter_map(|s| Slo::parse(s).ok())
        .find(|s| s.figure == name)
        .map(|s| (s.bound, format!("SLO {}", s.text)));
    let marker = report
        .points
        .iter()
        .find(|p| Some(&p.params) == report.recommended.as_ref())
        .and_then(|p| {
            p.metrics[name]
                .mean
                .map(|y| ((p.values[x], y), "recommended".into()))
        });
    LineChart {
        title: title.to_string(),
        x_label: x_key,
        y_label: unit.to_string(),
        series: groups,
        bound,
        marker,
        dots: true,
        ..LineChart::default()
    }
}

fn others(report: &ForecastReport, point: &PointReport, x: usize) -> String {
    report
        .axes
        .iter()
        .zip(&point.values)
        .enumerate()
        .filter(|(i, _)| *i != x)
        .map(|(_, (k, v))| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn points_table(report: &ForecastReport) -> String {
    let mut header: Vec<String> = report.axes.clone();
    header.extend(COLUMNS.iter().map(|c| c.0.to_string()));
    header.extend(["meets SLOs".to_string(), "fails".to_string()]);
    let rows: Vec<(String, Vec<String>)> = report
        .points
        .iter()
        .map(|p| {
            let class = if Some(&p.params) == report.recommended.as_ref() {
                "recommended"
            } else if p.meets_slo {
                "meets"
            } else {
                ""
            };
            let mut cells: Vec<String> = p.values.iter().map(|v| v.to_string()).collect();
            cells.extend(COLUMNS.iter().map(|(name, unit)| {
                let e = p.metrics[name];
                match (e.mean, e.ci95) {
                    (None, _) => "-".into(),
                    (Some(m), None) => number(m, unit),
                    (Some(m), Some(ci)) => {
                        format!("{} ± {}", number(m, unit), number_like(ci, m, unit))
                    }
                }
            }));
            cells.push(if p.meets_slo { "yes" } else { "no" }.into());
            cells.push(escape(&p.failed_slos.join(", ")));
            (class.to_string(), cells)
        })
        .collect();
    table(&header, &rows)
}

fn number(x: f64, unit: &str) -> String {
    number_like(x, x, unit)
}

/// `x` to the precision `like` is shown with.
fn number_like(x: f64, like: f64, unit: &str) -> String {
    match unit {
        "s" => format!("{x:.3}s"),
        "$" if like.abs() < 0.01 => format!("${x:.6}"),
        "$" => format!("${x:.4}"),
        _ => format!("{x:.4}"),
    }
}
