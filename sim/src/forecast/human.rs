//! A forecast as text for people: one row per point, then the recommendation and which SLO
//! binds.

use super::figures::{self, Unit};
use super::slo::Slo;
use super::stats::Estimate;
use super::ForecastReport;

/// The figures each row shows besides those the SLOs bound.
const SHOWN: &[&str] = &[
    "wait_p99",
    "jct_p50",
    "utilization",
    "cost_per_hour",
    "cost_per_job",
];

impl ForecastReport {
    pub fn human(&self) -> String {
        let mut shown: Vec<&str> = SHOWN.to_vec();
        for slo in self.slos.iter().filter_map(|s| Slo::parse(s).ok()) {
            if !shown.contains(&slo.figure) {
                shown.push(slo.figure);
            }
        }
        let mut out = format!(
            "{}: {} points x {} seeds = {} runs{}\n",
            self.scenario,
            self.points.len(),
            self.seeds.len(),
            self.runs,
            self.minimized
                .as_ref()
                .map(|k| format!(" (bisection over {k})"))
                .unwrap_or_default()
        );
        out += "figures: mean ± 95% interval across seeds; SLOs judged at the worse end\n";
        let mut header: Vec<String> = self.axes.clone();
        header.extend(shown.iter().map(|s| s.to_string()));
        header.push("SLOs".into());
        let rows: Vec<Vec<String>> = self
            .points
            .iter()
            .map(|p| {
                let mut row: Vec<String> = p.values.iter().map(|v| format!("{v}")).collect();
                row.extend(shown.iter().map(|name| cell(name, &p.metrics[name])));
                row.push(match p.failed_slos.as_slice() {
                    [] => "met".into(),
                    failed => format!("fails {}", failed.join(", ")),
                });
                row
            })
            .collect();
        out += &table(&header, &rows);
        out += &self.verdict();
        out
    }

    fn verdict(&self) -> String {
        let mut out = String::new();
        match &self.recommended {
            Some(params) => {
                let at: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out += &format!(
                    "recommended: {} (the cheapest point meeting every SLO)\n",
                    at.join(" ")
                );
                if let Some(slo) = &self.binding_slo {
                    out += &format!("binding SLO there: {slo} (the least headroom)\n");
                }
            }
            None if self.slos.is_empty() => out += "no SLO given: nothing to recommend\n",
            None => {
                out += "recommended: none; no point meets every SLO\n";
                if let Some(slo) = &self.binding_slo {
                    out += &format!("binding SLO: {slo}\n");
                }
            }
        }
        if self.recommended_by.len() > 1 {
            out += "cheapest meeting every SLO, for each value of the other fields:\n";
            for r in &self.recommended_by {
                let fixed: Vec<String> = r.fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let answer = r.recommended.as_ref().map_or("none".to_string(), |params| {
                    params
                        .iter()
                        .filter(|(k, _)| !r.fixed.contains_key(*k))
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                out += &format!("  {}: {answer}\n", fixed.join(" "));
            }
        }
        for (slo, failing) in &self.slo_failures {
            out += &format!(
                "  {slo}: fails at {failing} of {} points\n",
                self.points.len()
            );
        }
        let violations: u64 = self.points.iter().map(|p| p.violations).sum();
        if violations > 0 {
            out += &format!("WARNING: {violations} invariant violation(s) across the runs\n");
        }
        out
    }
}

fn cell(name: &str, e: &Estimate) -> String {
    let Some(mean) = e.mean else {
        return "-".into();
    };
    let unit = figures::unit_of(name).unwrap_or(Unit::Ratio);
    // The interval is shown to the mean's precision.
    let places = match unit {
        Unit::Seconds => 3,
        Unit::Dollars if mean.abs() < 0.01 => 6,
        Unit::Dollars if mean.abs() < 1.0 => 4,
        Unit::Dollars => 2,
        Unit::Ratio => 4,
    };
    let show = |x: f64| match unit {
        Unit::Seconds => format!("{x:.places$}s"),
        Unit::Dollars => format!("${x:.places$}"),
        Unit::Ratio => format!("{x:.places$}"),
    };
    match e.ci95 {
        Some(ci) => format!("{}±{}", show(mean), show(ci).trim_start_matches('$')),
        None => show(mean),
    }
}

fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header);
    for row in rows {
        out += &line(row);
    }
    out
}
