//! The harness end to end: the built `drover-chaos` runs real `drover` processes on a real
//! Redis. A faulty run holds every invariant; the same run with a planted bug (successes skip
//! their fencing check) is caught; what the harness cannot play is refused before anything
//! starts.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(name)
}

/// The `drover` binary of this build profile, built first if need be (`cargo test -p
/// drover-chaos` does not build other packages' binaries; the workspace's test run does).
fn drover() -> &'static Path {
    static DROVER: OnceLock<PathBuf> = OnceLock::new();
    DROVER.get_or_init(|| {
        let chaos = Path::new(env!("CARGO_BIN_EXE_drover-chaos"));
        let dir = chaos.parent().expect("the binary's directory");
        let drover = dir.join("drover");
        if !drover.is_file() {
            let release = dir.ends_with("release");
            let mut build = Command::new(env!("CARGO"));
            build.args(["build", "-p", "drover-engine", "--bin", "drover"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo to build drover");
            assert!(status.success(), "building the drover binary failed");
        }
        drover
    })
}

/// Runs `drover-chaos` with `args`: exit code, stdout, stderr.
fn chaos(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover-chaos"))
        .args(args)
        .env("DROVER_BIN", drover())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run drover-chaos");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `file` with `--json` (a run takes little CPU: the runs of this file go in parallel).
fn run_json(file: &str, extra: &[&str]) -> (i32, Value, String) {
    let file = scenario(file);
    let mut args = vec!["run", file.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = chaos(&args);
    let report: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}); exit {code}\nstdout: {out}\nstderr: {err}"));
    (code, report, err)
}

fn count(report: &Value, path: &[&str]) -> u64 {
    let mut v = report;
    for key in path {
        v = &v[*key];
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {report:#}"))
}

/// Every pid in `pids` is gone (kill -0 fails).
fn all_gone(pids: &[u32]) -> bool {
    pids.iter()
        .all(|&pid| unsafe { libc_kill(pid as i32, 0) } != 0)
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[test]
fn a_run_under_kills_partitions_and_restarts_loses_nothing() {
    let dir = std::env::temp_dir().join(format!("drover-chaos-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, report, err) = run_json("ci-faults.toml", &["--report", dir.to_str().unwrap()]);
    let summary = format!("{report:#}\nstderr: {err}");
    assert_eq!(code, 0, "the run must pass: {summary}");
    assert_eq!(count(&report, &["violation_count"]), 0, "{summary}");
    assert_eq!(count(&report, &["jobs", "lost"]), 0, "{summary}");
    assert_eq!(count(&report, &["jobs", "in_flight"]), 0, "{summary}");
    let submitted = count(&report, &["jobs", "submitted"]);
    assert!(submitted > 150, "a real workload: {summary}");
    let terminal: u64 = ["succeeded", "dead", "cancelled", "timed_out", "unworkable"]
        .iter()
        .map(|state| count(&report, &["jobs", state]))
        .sum();
    assert_eq!(terminal, submitted, "every job terminal: {summary}");
    assert_eq!(
        count(&report, &["jobs", "succeeded"]),
        submitted,
        "{summary}"
    );
    assert!(
        count(&report, &["faults", "kill", "machines"]) >= 20,
        "{summary}"
    );
    assert!(
        count(&report, &["faults", "partition", "count"]) >= 3,
        "{summary}"
    );
    assert!(
        count(&report, &["stats", "redis_restarts"]) >= 2,
        "{summary}"
    );
    assert_eq!(report["redis_persistence"], "aof-always");
    // Killed machines' jobs ran again elsewhere, and the figures are there.
    assert!(
        count(&report, &["redistribution_s", "count"]) > 0,
        "{summary}"
    );
    assert!(report["redistribution_s"]["max"].as_f64().unwrap() > 0.0);
    assert!(report["wait_s"]["p50"].as_f64().is_some());
    assert!(report["jct_s"]["p50"].as_f64().unwrap() > 0.0, "{summary}");
    // Every process it started (Redis twice over, the API, every agent) is gone.
    assert!(dir.join("summary.json").is_file());
    let pids: Vec<u32> = std::fs::read_to_string(dir.join("pids"))
        .expect("the run lists its children's pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let started = count(&report, &["stats", "agents_started"]);
    assert!(
        pids.len() as u64 >= started + 4,
        "redis x3, the API, the agents: {pids:?}"
    );
    assert!(all_gone(&pids), "children left running: {pids:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_planted_bug_no_fencing_on_success_is_caught() {
    let (code, report, err) = run_json("ci-faults.toml", &["--test-skip-fencing"]);
    let summary = format!("{report:#}\nstderr: {err}");
    assert_eq!(code, 1, "the run must fail: {summary}");
    assert!(count(&report, &["violation_count"]) > 0, "{summary}");
    let stale = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v.as_str().unwrap().contains("NoStaleOutcome"));
    assert!(stale, "a stale outcome won: {summary}");
}

/// Without persistence each restart loses everything: the producer resubmits by key what it
/// has not seen finish, and the jobs it saw finish count once, though the server forgot them.
#[test]
fn restarts_that_lose_everything_lose_no_job() {
    let (code, report, err) = run_json("lossy-restarts-none.toml", &[]);
    let summary = format!("{report:#}\nstderr: {err}");
    assert_eq!(code, 0, "the run must pass: {summary}");
    assert_eq!(report["redis_persistence"], "none");
    assert_eq!(count(&report, &["stats", "redis_restarts"]), 2, "{summary}");
    assert!(
        count(&report, &["stats", "journal_rolled_back"]) > 0,
        "{summary}"
    );
    let submitted = count(&report, &["jobs", "submitted"]);
    assert!(submitted > 60, "{summary}");
    assert_eq!(
        count(&report, &["jobs", "succeeded"]),
        submitted,
        "{summary}"
    );
    assert_eq!(count(&report, &["jobs", "lost"]), 0, "{summary}");
}

#[test]
fn a_bad_scenario_is_refused_with_its_file_line_and_field() {
    let file = scenario("bad-field.toml");
    let (code, out, err) = chaos(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("bad-field.toml:8:1"), "{err}");
    assert!(err.contains("pool[0].gpu"), "{err}");
    let (code, _, err) = chaos(&["run", "/no/such/scenario.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/scenario.toml"), "{err}");
}

#[test]
fn fleets_above_the_limit_are_refused_naming_it() {
    let file = scenario("too-many.toml");
    let (code, out, err) = chaos(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("65 machines") && err.contains("at most 64"),
        "{err}"
    );
}

#[test]
fn a_fault_kind_the_harness_lacks_is_refused_naming_it() {
    let file = scenario("gpu-oom.toml");
    let (code, out, err) = chaos(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("fault[1].kind") && err.contains("gpu_oom"),
        "{err}"
    );
    let (code, _, err) = chaos(&["run", file.to_str().unwrap(), "--time-scale", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--time-scale"), "{err}");
    let (code, _, err) = chaos(&["compare", file.to_str().unwrap(), "--seeds", "3..1"]);
    assert_eq!(code, 2);
    assert!(err.contains("--seeds") && err.contains("A..B"), "{err}");
    // compare refuses what run refuses, before running anything.
    let (code, _, err) = chaos(&["compare", file.to_str().unwrap(), "--seeds", "1..2"]);
    assert_eq!(code, 2);
    assert!(err.contains("gpu_oom"), "{err}");
}
