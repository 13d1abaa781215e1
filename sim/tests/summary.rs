//! The run's summary tells the whole story: per-workload rows that add up to the totals, per
//! pool figures that add up to the fleet's, each fault and the engine's answer to it, and a
//! sweep's figures aggregated across seeds.

use drover_sim::run::{run, RunReport};
use drover_sim::scenario::Scenario;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name)
}

fn run_bundled(name: &str, seed: Option<u64>, chaos: Option<f64>) -> RunReport {
    let scenario = Arc::new(Scenario::load(&scenario_path(name)).expect("bundled scenario"));
    let seed = seed.unwrap_or(scenario.seed);
    run(scenario, seed, chaos, |_| {})
}

/// The text with every run of whitespace made one space: the summary wraps its prose.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drover-sim"))
        .args(args)
        .output()
        .expect("drover-sim runs")
}

/// Every workload's states add up to its submissions, and the workloads to the run's totals.
fn assert_rows_add_up(name: &str, report: &RunReport) {
    let j = &report.jobs;
    let sum = |f: fn(&drover_sim::run::WorkloadReport) -> u64| -> u64 {
        report.workloads.iter().map(f).sum()
    };
    assert_eq!(sum(|w| w.submitted), j.submitted, "{name}: submitted");
    assert_eq!(sum(|w| w.succeeded), j.succeeded, "{name}: succeeded");
    assert_eq!(sum(|w| w.dead), j.dead, "{name}: dead");
    assert_eq!(sum(|w| w.cancelled), j.cancelled, "{name}: cancelled");
    assert_eq!(sum(|w| w.timed_out), j.timed_out, "{name}: timed_out");
    assert_eq!(sum(|w| w.unworkable), j.unworkable, "{name}: unworkable");
    assert_eq!(sum(|w| w.in_flight), j.in_flight, "{name}: in_flight");
    for w in &report.workloads {
        let states = w.succeeded + w.dead + w.cancelled + w.timed_out + w.unworkable;
        assert_eq!(
            states + w.in_flight,
            w.submitted,
            "{name}/{}: states add up to submissions",
            w.name
        );
        assert!(
            w.measured + w.warmup_excluded <= states,
            "{name}/{}: measured {} + warm-up {} > finished {states}",
            w.name,
            w.measured,
            w.warmup_excluded
        );
    }
}

/// The pools' machines and bills add up to the fleet's.
fn assert_pools_add_up(name: &str, report: &RunReport) {
    let s = &report.stats;
    let booted: u64 = report.pools.iter().map(|p| p.booted).sum();
    let lost: u64 = report.pools.iter().map(|p| p.lost).sum();
    let drained: u64 = report.pools.iter().map(|p| p.drained).sum();
    assert_eq!(booted, s.machines_booted, "{name}: booted");
    assert_eq!(lost, s.machines_lost, "{name}: lost");
    assert_eq!(drained, s.machines_drained, "{name}: drained");
    let spend: f64 = report.pools.iter().map(|p| p.spend).sum();
    assert!(
        (spend - report.spend).abs() <= 1e-6 * report.spend.max(1.0),
        "{name}: pools spend {spend}, fleet {}",
        report.spend
    );
    for p in &report.pools {
        assert!((0.0..=1.0).contains(&p.utilization), "{name}/{}", p.name);
    }
}

#[test]
fn workload_rows_and_pools_add_up_in_every_bundled_scenario() {
    for name in [
        "burst.toml",
        "chaos-mix.toml",
        "mmc-check.toml",
        "oom-disk.toml",
        "partition.toml",
        "redis-restart-everysec.toml",
        "redis-restart-none.toml",
        "redis-restart.toml",
        "spot-churn.toml",
        "steady.toml",
    ] {
        let report = run_bundled(name, None, None);
        assert_rows_add_up(name, &report);
        assert_pools_add_up(name, &report);
    }
}

#[test]
fn rows_add_up_under_chaos_with_lossy_restarts() {
    for seed in [1, 4, 9] {
        let report = run_bundled("chaos-mix.toml", Some(seed), Some(40.0));
        assert!(report.stats.redis_restarts > 0, "seed {seed}: no restart");
        assert_rows_add_up(&format!("chaos seed {seed}"), &report);
        assert_pools_add_up(&format!("chaos seed {seed}"), &report);
    }
}

#[test]
fn impossible_jobs_show_as_unworkable_in_their_row() {
    let report = run_bundled("chaos-mix.toml", None, None);
    let impossible = report
        .workloads
        .iter()
        .find(|w| w.name == "impossible")
        .expect("chaos-mix has an impossible workload");
    assert!(impossible.unworkable > 0);
    assert_eq!(impossible.unworkable, impossible.submitted);
    assert_eq!(impossible.succeeded, 0);
    let text = report.human();
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("impossible") && !l.contains('-'))
        .expect("a state row for impossible");
    let numbers: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("numbers"))
        .collect();
    // submitted, succeeded, dead, timed out, unworkable, cancelled, in flight
    assert_eq!(
        numbers,
        vec![impossible.submitted, 0, 0, 0, impossible.unworkable, 0, 0]
    );
}

#[test]
fn partition_summary_tells_the_partition_story() {
    let report = run_bundled("partition.toml", None, None);
    let s = &report.stats;
    let partition = report.faults.get("partition").expect("a partition fault");
    assert_eq!(partition.count, 1);
    assert_eq!(partition.machines, 10, "half of the 20 a10g machines");
    assert_eq!(report.fault_log.len(), 1);
    assert_eq!(report.fault_log[0].of, 20);
    assert_eq!(report.fault_log[0].at_s, 3600.0);
    assert_eq!(report.fault_log[0].duration_s, 300.0);
    assert_eq!(s.machines_lost, 0, "nothing died: machines were cut off");
    assert_eq!(
        s.machines_declared_lost, 10,
        "the store declared the cut-off machines lost"
    );
    assert!(s.leases_revoked > 0);
    assert!(
        s.stale_outcomes > 0,
        "fencing refused the returning outcomes"
    );
    assert!(s.breaker_opened > 0 && s.machines_breaker_opened <= 10);
    assert_eq!(s.machines_registered_again, 10);
    let text = flat(&report.human());
    for needle in [
        "partition     a10g: 10 of 20 machines for 5m00s",
        "10 cut off from Redis by partitions",
        "10 machines declared lost",
        &format!("{} outcomes refused as stale", s.stale_outcomes),
        &format!("{} revoked by the store", s.leases_revoked),
        &format!("circuit breakers opened {} times", s.breaker_opened),
    ] {
        assert!(
            text.contains(&flat(needle)),
            "summary lacks {needle:?}:\n{text}"
        );
    }
    assert!(!text.contains("redistribution 0.0s"), "{text}");
}

#[test]
fn summary_names_units_and_explains_p_wait() {
    let report = run_bundled("partition.toml", None, None);
    let text = report.human();
    assert!(
        text.contains(&format!("spend ${:.2}", report.spend)),
        "{text}"
    );
    assert!(text.contains("P(wait)") && text.contains("dispatch round trip (2.0ms)"));
    assert!(text.contains("warm-up"), "{text}");
    for pool in &report.pools {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(&pool.name)
                && l.contains(&format!("{:.1}%", pool.utilization * 100.0))),
            "no utilisation row for {}:\n{text}",
            pool.name
        );
    }
}

#[test]
fn json_keys_events_by_name_and_they_sum_to_the_events() {
    let out = sim(&[
        "run",
        scenario_path("partition.toml").to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_kind = report["stats"]["events_by_kind"]
        .as_object()
        .expect("an object keyed by event name");
    let total: u64 = by_kind.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, report["events"].as_u64().unwrap());
    assert_eq!(by_kind["fault_start"], 1);
    assert_eq!(by_kind["arrival"], report["jobs"]["submitted"]);
    assert_eq!(report["faults"]["partition"]["machines"], 10);
    assert_eq!(report["pools"].as_array().unwrap().len(), 2);
}

#[test]
fn sweep_aggregates_are_the_per_seed_figures_mean_and_spread() {
    let out = sim(&[
        "sweep",
        scenario_path("chaos-mix.toml").to_str().unwrap(),
        "--seeds",
        "0..5",
        "--chaos",
        "20",
        "--json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    for figure in [
        "wait_p50_s",
        "wait_p99_s",
        "jct_p50_s",
        "jct_p99_s",
        "cost_per_job",
    ] {
        let values: Vec<f64> = results.iter().filter_map(|r| r[figure].as_f64()).collect();
        assert_eq!(values.len(), 5, "{figure}");
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let spread = &report["aggregate"][figure];
        let close = |field: &str, want: f64| {
            let got = spread[field].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{figure}.{field}: {got} != {want}"
            );
        };
        close("mean", mean);
        close("sd", sd);
        close("min", min);
        close("max", max);
        assert_eq!(spread["seeds"], 5);
    }
    let text = sim(&[
        "sweep",
        scenario_path("chaos-mix.toml").to_str().unwrap(),
        "--seeds",
        "0..5",
        "--chaos",
        "20",
    ]);
    let text = String::from_utf8(text.stdout).unwrap();
    let mean_p99 = report["aggregate"]["wait_p99_s"]["mean"].as_f64().unwrap();
    assert!(text.contains("across seeds"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("wait p99") && l.contains(&format!("{mean_p99:.3}s"))),
        "{text}"
    );
}
