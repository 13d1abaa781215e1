//! Forecasts against queueing theory: over a grid of M/M/c fleets the forecast's mean and
//! 99th percentile wait agree with Erlang C, it recommends the machine count Erlang C gives
//! for a p99 SLO, and bisection (`--minimize`) finds the same count with far fewer runs.

mod support;

use drover_sim::forecast::slo::Slo;
use drover_sim::forecast::vary::Axis;
use drover_sim::forecast::{Forecast, ForecastReport};
use support::{erlang_c, erlang_c_wait_quantile, mmc_text};

const LAMBDA: f64 = 8.0;
/// Each machine costs a dollar an hour, so fewer machines are cheaper.
const COST: f64 = 1.0;

fn forecast(vary: &[&str], slos: &[&str], duration_s: u64) -> Forecast {
    Forecast {
        text: mmc_text(10, LAMBDA, duration_s, 11, COST),
        file: "mmc.toml".into(),
        axes: vary.iter().map(|v| Axis::parse(v).unwrap()).collect(),
        slos: slos.iter().map(|s| Slo::parse(s).unwrap()).collect(),
        seeds: 3,
        threads: 0,
    }
}

/// The smallest machine count whose Erlang C p99 wait is within `bound` seconds.
fn erlang_c_machines(bound: f64) -> u32 {
    erlang_c_machines_for(LAMBDA, bound)
}

fn erlang_c_machines_for(lambda: f64, bound: f64) -> u32 {
    (1..1000)
        .find(|c| f64::from(*c) > lambda && erlang_c_wait_quantile(lambda, 1.0, *c, 0.99) <= bound)
        .unwrap()
}

fn machines(report: &ForecastReport) -> Option<u32> {
    let params = report.recommended.as_ref()?;
    Some(params["pool.gpu.machines"] as u32)
}

#[test]
fn erlang_c_quantile_matches_the_textbook() {
    // M/M/1 at rho 0.8: P(W > t) = 0.8 e^(-0.2 t), so the p99 is ln(80) / 0.2.
    let p99 = erlang_c_wait_quantile(0.8, 1.0, 1, 0.99);
    assert!((p99 - 80f64.ln() / 0.2).abs() < 1e-9);
    assert_eq!(erlang_c_wait_quantile(1.0, 1.0, 10, 0.99), 0.0);
}

#[test]
fn mmc_grid_agrees_with_erlang_c_and_recommends_its_machine_count() {
    let bound = 1.5;
    let slo = format!("wait_p99<={bound}s");
    let report = forecast(&["pool.gpu.machines=9..13"], &[&slo], 20_000)
        .run_grid(|| {})
        .unwrap();
    assert_eq!(report.points.len(), 5);
    assert_eq!(report.runs, 15);
    for point in &report.points {
        let c = point.params["pool.gpu.machines"] as u32;
        let (_, wq) = erlang_c(LAMBDA, 1.0, c);
        let p99 = erlang_c_wait_quantile(LAMBDA, 1.0, c, 0.99);
        let mean = point.metrics["wait_mean"];
        let tail = point.metrics["wait_p99"];
        let (m, t) = (mean.mean.unwrap(), tail.mean.unwrap());
        assert!(mean.ci95.unwrap() > 0.0 && tail.ci95.unwrap() > 0.0);
        // Within 10% of theory, or (for the noisier heavy-load points) within the interval.
        let near = |measured: f64, ci: f64, expected: f64| {
            (measured / expected - 1.0).abs() <= 0.10 || (measured - expected).abs() <= ci
        };
        assert!(
            near(m, mean.ci95.unwrap(), wq),
            "c={c}: mean wait {m:.4}±{:.4}, Erlang C {wq:.4}",
            mean.ci95.unwrap()
        );
        assert!(
            near(t, tail.ci95.unwrap(), p99),
            "c={c}: p99 wait {t:.4}±{:.4}, Erlang C {p99:.4}",
            tail.ci95.unwrap()
        );
        assert_eq!(point.violations, 0);
        // A dollar per machine-hour: the fleet's hourly bill is its size.
        assert!((point.cost_per_hour.unwrap() / f64::from(c) - 1.0).abs() < 0.01);
    }
    let expected = erlang_c_machines(bound);
    assert_eq!(expected, 11, "the grid brackets Erlang C's answer");
    assert_eq!(machines(&report), Some(expected), "{}", report.human());
    assert_eq!(report.binding_slo.as_deref(), Some(slo.as_str()));
    assert_eq!(report.slo_failures[&slo], 2, "9 and 10 machines fail");
}

#[test]
fn bisection_finds_erlang_cs_machine_count_with_fewer_runs() {
    let bound = 1.0;
    let spec = forecast(&["pool.gpu.machines=9..40"], &["wait_p99<=1s"], 10_000);
    let report = spec.run_search("pool.gpu.machines", || {}).unwrap();
    assert_eq!(
        machines(&report),
        Some(erlang_c_machines(bound)),
        "{}",
        report.human()
    );
    // 32 values: both ends, then at most five halvings.
    assert!(report.points.len() <= 7, "{} points", report.points.len());
    assert_eq!(report.minimized.as_deref(), Some("pool.gpu.machines"));
}

#[test]
fn no_point_meeting_every_slo_names_the_binding_one() {
    let spec = forecast(
        &["pool.gpu.machines=9..10"],
        &["wait_p99<=0.1s", "utilization>=0.5"],
        2_000,
    );
    let report = spec.run_grid(|| {}).unwrap();
    assert_eq!(report.recommended, None);
    assert_eq!(report.binding_slo.as_deref(), Some("wait_p99<=0.1s"));
    assert_eq!(report.slo_failures["utilization>=0.5"], 0);
    assert!(report.human().contains("no point meets every SLO"));
}

#[test]
fn a_value_the_loader_refuses_is_its_error_at_the_line_of_the_field() {
    let spec = forecast(&["pool.gpu.machines=99999..100001:2"], &[], 100);
    let error = spec.run_grid(|| {}).unwrap_err().to_string();
    // mmc_text writes `machines` on line 11.
    assert!(error.starts_with("mmc.toml:11:"), "{error}");
    assert!(error.contains("pool[0].machines"), "{error}");
    let missing = forecast(&["pool.cpu.machines=1..2"], &[], 100);
    let error = missing.run_grid(|| {}).unwrap_err().to_string();
    assert!(
        error.contains("pool.cpu.machines") && error.contains("the file has: gpu"),
        "{error}"
    );
}

#[test]
fn fields_the_file_leaves_out_are_added() {
    // The M/M/c file has no [engine] table: varying lease_ttl adds it.
    let spec = forecast(&["engine.lease_ttl=20s,40s"], &[], 200);
    let scenario = spec.scenario_at(&[40.0]).unwrap();
    assert_eq!(scenario.engine.lease_ttl.as_secs_f64(), 40.0);
    let bad = forecast(&["engine.heartbeat=1h"], &[], 200).scenario_at(&[3600.0]);
    let error = bad.unwrap_err().to_string();
    assert!(error.contains("heartbeat"), "{error}");
}

/// A bundled scenario with `overrides` (path, value) set.
fn bundled_with(name: &str, overrides: &[(&str, f64)]) -> drover_sim::scenario::Scenario {
    use drover_sim::scenario::{FieldPath, Override, Scenario};
    let file = format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&file).unwrap();
    let overrides: Vec<Override> = overrides
        .iter()
        .map(|(path, value)| {
            let path = FieldPath::parse(path).unwrap();
            let literal = path.literal(*value).unwrap();
            Override { path, literal }
        })
        .collect();
    Scenario::parse_with(&text, &file, &overrides).unwrap()
}

#[test]
fn paths_reach_inline_tables_named_elements_and_faults() {
    use drover_sim::scenario::{Arrivals, FaultKind, Lifetime};
    let spot = bundled_with(
        "spot-churn.toml",
        &[
            ("pool.spot-v100.lifetime.mean", 5400.0),
            ("pool[1].machines", 3.0),
            ("workload.short.arrivals.rate_per_s", 0.25),
        ],
    );
    assert!(
        matches!(spot.pools[0].lifetime, Lifetime::Exponential { mean } if mean.as_secs_f64() == 5400.0)
    );
    assert_eq!(spot.pools[1].machines, 3);
    assert!(
        matches!(spot.workloads[1].arrivals, Arrivals::Poisson { rate_per_s } if rate_per_s == 0.25)
    );
    // Untouched fields keep the file's values.
    assert_eq!(spot.pools[0].machines, 64);
    let cut = bundled_with("partition.toml", &[("fault[0].fraction", 0.25)]);
    assert!(
        matches!(cut.faults[0].kind, FaultKind::Partition { fraction, .. } if fraction == 0.25)
    );
}

#[test]
fn threads_do_not_change_the_forecast() {
    let run = |threads| {
        let mut spec = forecast(&["pool.gpu.machines=9..11"], &["wait_p99<=2s"], 1_000);
        spec.threads = threads;
        let report = spec.run_grid(|| {}).unwrap();
        serde_json::to_string(&report).unwrap()
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn bisection_per_traffic_level_finds_erlang_cs_count_for_each() {
    let spec = forecast(
        &[
            "pool.gpu.machines=9..40",
            "workload.mm.arrivals.rate_per_s=8,16",
        ],
        &["wait_p99<=1s"],
        10_000,
    );
    let report = spec.run_search("pool.gpu.machines", || {}).unwrap();
    assert_eq!(report.recommended_by.len(), 2);
    for r in &report.recommended_by {
        let lambda = r.fixed["workload.mm.arrivals.rate_per_s"];
        let machines = r
            .recommended
            .as_ref()
            .map(|p| p["pool.gpu.machines"] as u32);
        assert_eq!(
            machines,
            Some(erlang_c_machines_for(lambda, 1.0)),
            "lambda {lambda}: {}",
            report.human()
        );
    }
}
