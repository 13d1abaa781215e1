//! The simulator must reproduce queueing theory: M/M/c queues (Poisson arrivals, exponential
//! service, c single-GPU machines, no latency, no faults) give Erlang C's probability of waiting
//! and mean wait, and Little's law holds.

mod support;

use drover_sim::run::{run, RunReport};
use drover_sim::scenario::Scenario;
use std::sync::Arc;
use support::{erlang_c, mmc_text};

fn mmc(c: u32, lambda: f64, duration_s: u64, seed: u64) -> RunReport {
    let text = mmc_text(c, lambda, duration_s, seed, 0.0);
    let scenario = Scenario::parse(&text, "mmc.toml").expect("the M/M/c scenario is valid");
    run(Arc::new(scenario), seed, None, |_| {})
}

fn assert_within(what: &str, measured: f64, expected: f64, tolerance: f64) {
    let error = (measured / expected - 1.0).abs();
    assert!(
        error <= tolerance,
        "{what}: measured {measured:.4}, expected {expected:.4} ({:.1}% off, allowed {:.0}%)",
        error * 100.0,
        tolerance * 100.0
    );
}

/// No violation; mean wait and P(wait) within 5% of Erlang C (service rate 1); L = lambda W
/// within 2%.
fn assert_matches_erlang_c_and_little(name: &str, report: &RunReport, lambda: f64, c: u32) {
    let (p_wait, wq) = erlang_c(lambda, 1.0, c);
    assert_eq!(report.violation_count, 0, "{:?}", report.violations);
    assert_within(&format!("{name} mean wait"), report.wait_s.mean, wq, 0.05);
    assert_within(&format!("{name} P(wait)"), report.p_wait, p_wait, 0.05);
    let little = report.little;
    assert_within(
        "Little's law L = lambda W",
        little.mean_in_system,
        little.arrival_rate * little.mean_time_in_system_s,
        0.02,
    );
}

#[test]
fn erlang_c_formula_matches_the_textbook_values() {
    let (p_wait, wq) = erlang_c(8.0, 1.0, 10);
    assert!((p_wait - 0.409).abs() < 0.001, "{p_wait}");
    assert!((wq - 0.2046).abs() < 0.0005, "{wq}");
    let (p1, w1) = erlang_c(0.8, 1.0, 1);
    assert!((p1 - 0.8).abs() < 1e-9 && (w1 - 4.0).abs() < 1e-9);
}

#[test]
fn mm10_lambda_8_matches_erlang_c_and_littles_law() {
    let (_, wq) = erlang_c(8.0, 1.0, 10);
    let report = mmc(10, 8.0, 60_000, 1);
    assert_matches_erlang_c_and_little("M/M/10", &report, 8.0, 10);
    let little = report.little;
    assert_within(
        "M/M/10 mean time in system",
        little.mean_time_in_system_s,
        wq + 1.0,
        0.03,
    );
}

#[test]
fn mm1_rho_0_8_matches_erlang_c() {
    let report = mmc(1, 0.8, 700_000, 2);
    assert!(report.jobs.succeeded > 500_000);
    assert_matches_erlang_c_and_little("M/M/1", &report, 0.8, 1);
}
