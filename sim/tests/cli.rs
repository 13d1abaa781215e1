//! The command line: JSON fields, exit status 2 with file, line and field for bad input.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover-sim"))
}

fn scenario(name: &str) -> String {
    format!("{}/../scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn run_json_has_every_field_and_exit_zero() {
    let out = sim()
        .args(["run", &scenario("partition.toml"), "--json", "--seed", "5"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for field in [
        "scenario",
        "seed",
        "digest",
        "events",
        "jobs_simulated",
        "wall_s",
        "events_per_sec",
        "jobs_per_sec",
        "utilization",
        "cost_per_job",
        "spend",
        "violations",
        "p_wait",
        "dispatch_s",
        "warmup_s",
        "little",
        "redistribution_s",
        "revoked_to_leased_s",
        "workloads",
        "pools",
        "faults",
        "fault_log",
        "redis_persistence",
        "stats",
    ] {
        assert!(report.get(field).is_some(), "missing {field}");
    }
    for field in [
        "submitted",
        "succeeded",
        "dead",
        "cancelled",
        "timed_out",
        "unworkable",
        "in_flight",
        "warmup_excluded",
        "measured",
        "wait_s",
        "jct_s",
    ] {
        assert!(
            report["workloads"][0].get(field).is_some(),
            "missing workloads[].{field}"
        );
    }
    for field in [
        "machines_declared_lost",
        "leases_revoked",
        "stale_outcomes",
        "breaker_opened",
        "machines_breaker_opened",
        "redis_restarts",
        "gpu_ooms",
    ] {
        assert!(report["stats"][field].is_u64(), "missing stats.{field}");
    }
    assert!(report["stats"]["events_by_kind"].is_object());
    for field in [
        "submitted",
        "succeeded",
        "dead",
        "cancelled",
        "timed_out",
        "unworkable",
        "in_flight",
        "lost",
    ] {
        assert!(report["jobs"].get(field).is_some(), "missing jobs.{field}");
    }
    for field in ["mean", "p50", "p90", "p99", "max"] {
        assert!(
            report["wait_s"][field].is_number() && report["jct_s"][field].is_number(),
            "missing {field}"
        );
    }
    assert_eq!(report["seed"], 5);
    assert_eq!(report["digest"].as_str().unwrap().len(), 64);
    assert_eq!(report["violations"].as_array().unwrap().len(), 0);
}

#[test]
fn bad_input_exits_2_naming_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("drover-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "name = \"x\"\nseed = 1\nduration = \"1h\"\nwarmup = \"2h\"\n",
    )
    .unwrap();
    let out = sim()
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:"), "{stderr}");
    let missing = sim().args(["run", "no/such/file.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let seeds = sim()
        .args(["sweep", &scenario("partition.toml"), "--seeds", "5..2"])
        .output()
        .unwrap();
    assert_eq!(seeds.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&seeds.stderr).contains("--seeds"));
}

#[test]
fn sweep_reports_seeds_and_passes() {
    let out = sim()
        .args([
            "sweep",
            &scenario("chaos-mix.toml"),
            "--seeds",
            "0..4",
            "--chaos",
            "30",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["results"].as_array().unwrap().len(), 4);
    assert_eq!(report["failing"].as_array().unwrap().len(), 0);
    assert_eq!(report["aggregate"]["wait_p99_s"]["seeds"], 4);
}

#[test]
fn forecast_json_has_points_recommendation_and_binding_slo() {
    let out = sim()
        .args([
            "forecast",
            &scenario("mmc-check.toml"),
            "--vary",
            "pool.gpu.machines=10..12",
            "--vary",
            "duration=2000s",
            "--slo",
            "wait_p99<=2s",
            "--slo",
            "utilization>=0.5",
            "--seeds",
            "3",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 3);
    for point in points {
        assert!(point["params"]["pool.gpu.machines"].is_number());
        assert_eq!(point["params"]["duration"], 2000.0);
        for figure in [
            "wait_p99",
            "jct_p50",
            "dead_rate",
            "utilization",
            "cost_per_job",
        ] {
            assert!(point["metrics"][figure]["mean"].is_number(), "{figure}");
            assert!(point["metrics"][figure]["ci95"].is_number(), "{figure}");
        }
        assert!(point["meets_slo"].is_boolean());
        assert!(point.get("cost_per_hour").is_some() && point.get("cost_per_job").is_some());
    }
    assert!(report["recommended"]["pool.gpu.machines"].is_number());
    assert!(report["binding_slo"].is_string());
    assert_eq!(report["seeds"].as_array().unwrap().len(), 3);
}

#[test]
fn forecast_bad_input_exits_2_naming_what_is_wrong() {
    let file = scenario("mmc-check.toml");
    for (args, says) in [
        (
            vec!["--vary", "pool.gpu.machinez=1..2"],
            "pool.gpu.machinez",
        ),
        (vec!["--vary", "pool.gpu.gpu_model=1..2"], "not numeric"),
        (
            vec!["--vary", "pool.tpu.machines=1..2"],
            "no [[pool]] is named \"tpu\"",
        ),
        (
            vec!["--vary", "pool.gpu.machines=1..2", "--slo", "wait_p99<<3s"],
            "--slo \"wait_p99<<3s\"",
        ),
        (
            vec!["--vary", "pool.gpu.machines=1..2", "--slo", "queue<=3"],
            "unknown figure \"queue\"",
        ),
        (
            vec!["--vary", "workload.mm.arrivals.rate_per_s=-1..1"],
            "workload[0].arrivals",
        ),
        (
            vec![
                "--vary",
                "pool.gpu.machines=1..2",
                "--minimize",
                "engine.lease_ttl",
            ],
            "--minimize engine.lease_ttl",
        ),
    ] {
        let out = sim()
            .args(["forecast", &file])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn speed_json_sets_the_simulator_beside_the_bare_loop() {
    let out = sim()
        .args(["speed", &scenario("mmc-check.toml"), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = report["jobs"].as_u64().unwrap();
    assert!(jobs > 100_000);
    assert_eq!(report["baseline"]["queue"]["jobs"], jobs);
    assert_eq!(report["baseline"]["queue"]["servers"], 10);
    assert_eq!(report["baseline"]["events"], 2 * jobs);
    let ratio = report["ratio"].as_f64().unwrap();
    // The bare loop does far less per job than the simulated engine.
    assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
}
