use super::*;
use std::path::PathBuf;

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn bundled() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

const MINIMAL: &str = r#"name = "t"
seed = 1
duration = "1h"

[[pool]]
name = "a"
machines = 2

[[workload]]
name = "w"
arrivals = { dist = "poisson", rate_per_s = 1.0 }
service = { dist = "constant", value = "1s" }
"#;

fn err(text: &str) -> ScenarioError {
    match Scenario::parse(text, "t.toml") {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e,
    }
}

/// `MINIMAL` with `extra` appended.
fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}")
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn every_bundled_scenario_parses() {
    let files = bundled();
    assert!(
        files.len() >= 10,
        "expected the bundled scenarios, found {}",
        files.len()
    );
    for (path, text) in &files {
        let s = Scenario::parse(text, path).unwrap_or_else(|e| panic!("{e}"));
        let stem = std::path::Path::new(path)
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(s.name, stem, "{path}: name should match the file name");
        assert!(text.starts_with("# "), "{path}: needs a comment header");
        let utilisation = s.offered_gpus() / s.total_gpus() as f64;
        if s.name != "burst" {
            assert!(
                utilisation < 0.85,
                "{path}: offered load {utilisation:.2} of the fleet"
            );
        }
        assert!(
            s.expected_jobs() <= 1.1e6,
            "{path}: {} jobs",
            s.expected_jobs()
        );
    }
}

#[test]
fn bundled_scenarios_say_what_the_brief_says() {
    let load = |name: &str| Scenario::load(&scenarios_dir().join(format!("{name}.toml"))).unwrap();
    let mmc = load("mmc-check");
    assert_eq!(mmc.total_gpus(), 10);
    assert_eq!(mmc.redis.persistence, Persistence::AofAlways);
    assert!((mmc.offered_gpus() - 8.0).abs() < 1e-9);
    assert_eq!(
        load("redis-restart").redis.persistence,
        Persistence::AofAlways
    );
    assert_eq!(
        load("redis-restart-everysec").redis.persistence,
        Persistence::AofEverysec
    );
    assert_eq!(
        load("redis-restart-none").redis.persistence,
        Persistence::None
    );
    let churn = load("churn-1k");
    assert_eq!(churn.total_machines(), 1000);
    assert!((churn.expected_jobs() - 1e6).abs() < 1.0);
    let burst = load("burst");
    assert!(burst
        .workloads
        .iter()
        .any(|w| matches!(w.arrivals, Arrivals::Burst { count: 20000, .. })));
    let spot = load("spot-churn");
    let mean = spot.pools[0].lifetime.mean().unwrap();
    assert!(mean >= Span::parse("1.5h").unwrap() && mean <= Span::parse("3h").unwrap());
    let partition = load("partition");
    assert!(matches!(
        partition.faults[0].kind,
        FaultKind::Partition { fraction, .. } if fraction == 0.5
    ));
    let steady = load("steady");
    assert_eq!(steady.warmup, Span::from_secs(600));
    assert!(steady.faults.is_empty());
    let oom = load("oom-disk");
    assert!(oom
        .workloads
        .iter()
        .any(|w| w.peak_gpu_mem() > w.gpu_mem_gb));
    assert_eq!(oom.engine.models.len(), oom.models.len());
}

#[test]
fn defaults_fill_what_is_left_out() {
    let s = Scenario::parse(MINIMAL, "t.toml").unwrap();
    assert_eq!(s.warmup, Span::ZERO);
    assert_eq!(s.drain, Span::from_secs(86_400));
    assert_eq!(s.redis, RedisSpec::default());
    assert_eq!(s.engine, EngineConfig::default());
    assert_eq!(s.pools, vec![PoolSpec::new("a", 2)]);
    let w = WorkloadSpec::new(
        "w",
        Arrivals::Poisson { rate_per_s: 1.0 },
        Dist::Constant {
            value: Span::from_secs(1),
        },
    );
    assert_eq!(s.workloads, vec![w]);
    assert!(s.faults.is_empty());
}

#[test]
fn every_fault_kind_and_distribution_reads() {
    let text = with(
        r#"
[[model]]
name = "m"
size_gb = 4

[[pool]]
name = "b"
machines = 1
gpus = 8
labels = { region = "eu", cuda = 12.4, nvlink = true, features = ["sm90", "fp8", "fp8"] }
lifetime = { dist = "constant", value = "3h" }
cached_models = ["m"]

[[workload]]
name = "x"
arrivals = { dist = "burst", at = "10m", count = 5, spread = "1m" }
service = { dist = "lognormal", median = "30s", sigma = 1.0 }
models = ["m"]
priority = 100
stop = "30m"

[[workload]]
name = "y"
arrivals = { dist = "periodic", interval = "2s" }
service = { dist = "exponential", mean = "1s" }

[[fault]]
at = "1m"
kind = "kill"
count = 2

[[fault]]
at = "2m"
kind = "partition"
pool = "a"
duration = "5m"

[[fault]]
at = "3m"
kind = "redis_restart"

[[fault]]
at = "4m"
kind = "disk_full"
pool = "b"
fraction = 0.25
duration = "1m"
fill_gb = 100

[[fault]]
at = "5m"
kind = "gpu_oom"
duration = "1m"
leak_gb = 10

[[fault]]
at = "6m"
kind = "latency"
duration = "1m"
latency = "200ms"
"#,
    );
    let s = Scenario::parse(&text, "t.toml").unwrap();
    assert_eq!(
        s.pools[1].lifetime,
        Lifetime::Constant {
            value: Span::from_secs(3 * 3600)
        }
    );
    assert_eq!(
        s.pools[1].labels.get("features"),
        Some(&LabelValue::List(vec!["fp8".into(), "sm90".into()]))
    );
    assert_eq!(
        s.pools[1].labels.get("cuda"),
        Some(&LabelValue::Number(12.4))
    );
    assert_eq!(s.engine.models.len(), 1);
    assert_eq!(s.workloads[1].expected_jobs(s.duration), 5.0);
    assert_eq!(s.workloads[2].expected_jobs(s.duration), 1800.0);
    let kinds: Vec<&str> = s.faults.iter().map(|f| f.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "kill",
            "partition",
            "redis_restart",
            "disk_full",
            "gpu_oom",
            "latency"
        ]
    );
    assert_eq!(
        s.faults[0].kind,
        FaultKind::Kill {
            pool: None,
            fraction: 1.0,
            count: Some(2)
        }
    );
    assert_eq!(
        s.faults[2].kind,
        FaultKind::RedisRestart {
            downtime: Span::from_secs(5)
        }
    );
    assert_eq!(s.faults[1].kind.pool(), Some("a"));
}

#[test]
fn an_unknown_field_is_refused_where_it_stands() {
    let text = format!("colour = \"red\"\n{MINIMAL}");
    let e = err(&text);
    assert_eq!((e.line, e.column, e.field.as_str()), (1, 1, "colour"));
    assert!(e.message.contains("unknown field `colour`"), "{e}");

    let text = MINIMAL.replace("machines = 2", "machines = 2\ngpu = 4");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "gpu = 4"), "pool[0].gpu")
    );
    assert!(e.message.contains("did you mean `gpus`"), "{e}");

    let text = MINIMAL.replace("rate_per_s = 1.0", "rate_per_s = 1.0, burst = 3");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "burst = 3"), "workload[0].arrivals.burst")
    );

    let text = with("[redis]\nlatency = \"1ms\"\npersist = \"none\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "persist ="), "redis.persist")
    );

    let text = with("[engine]\nlease_ttl = \"30s\"\nlease_tll = \"30s\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "lease_tll"), "engine.lease_tll")
    );

    let text = with("[engine.limits]\nmax_jobz = 5\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "max_jobz"), "engine.limits.max_jobz")
    );

    let text = with("[[fault]]\nat = \"1m\"\nkind = \"redis-restart\"\npool = \"a\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "pool = \"a\""), "fault[0].pool")
    );
}

#[test]
fn a_wrong_type_is_refused_where_it_stands() {
    let text = MINIMAL.replace("machines = 2", "machines = 2\ngpus = \"eight\"");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "eight"), "pool[0].gpus")
    );
    assert!(e.message.contains("whole number"), "{e}");

    let text = MINIMAL.replace("seed = 1", "seed = -1");
    let e = err(&text);
    assert_eq!((e.line, e.field.as_str()), (2, "seed"));

    let text = with("[engine]\nmax_attempts = \"three\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "three"), "engine.max_attempts")
    );

    let text = MINIMAL.replace("rate_per_s = 1.0", "rate_per_s = \"fast\"");
    let e = err(&text);
    assert_eq!(e.field, "workload[0].arrivals.rate_per_s");
    assert_eq!(e.line, line_of(&text, "fast"));

    let text = MINIMAL.replace("[[pool]]", "pool = 3\n[[poolx]]");
    let e = err(&text);
    assert_eq!(e.field, "poolx");
}

#[test]
fn a_fraction_above_one_is_refused() {
    let text =
        with("[[fault]]\nat = \"1m\"\nkind = \"partition\"\nfraction = 1.5\nduration = \"5m\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "1.5"), "fault[0].fraction")
    );
    assert!(e.message.contains("from 0 to 1"), "{e}");

    let text = with("[redis]\nreply_loss = -0.1\n");
    assert_eq!(err(&text).field, "redis.reply_loss");
}

#[test]
fn a_fault_naming_an_unknown_pool_is_refused() {
    let text = with("[[fault]]\nat = \"1m\"\nkind = \"kill\"\npool = \"h100\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "h100"), "fault[0].pool")
    );
    assert!(e.message.contains("unknown pool \"h100\""), "{e}");
}

#[test]
fn unknown_models_are_refused() {
    let text = MINIMAL.replace("machines = 2", "machines = 2\ncached_models = [\"llama\"]");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "llama"), "pool[0].cached_models[0]")
    );
}

#[test]
fn a_duplicate_pool_name_is_refused() {
    let text = with("\n[[pool]]\nname = \"a\"\nmachines = 1\n");
    let e = err(&text);
    let lines: Vec<&str> = text.lines().collect();
    let second = lines.iter().rposition(|l| *l == "name = \"a\"").unwrap() + 1;
    assert_eq!((e.line, e.field.as_str()), (second, "pool[1].name"));
    assert!(e.message.contains("first declared on line 6"), "{e}");

    let text = with("\n[[workload]]\nname = \"w\"\narrivals = { dist = \"periodic\", interval = \"1s\" }\nservice = { dist = \"constant\", value = \"1s\" }\n");
    assert_eq!(err(&text).field, "workload[1].name");
}

#[test]
fn warmup_must_be_shorter_than_duration() {
    let text = MINIMAL.replace("duration = \"1h\"", "duration = \"1h\"\nwarmup = \"1h\"");
    let e = err(&text);
    assert_eq!((e.line, e.field.as_str()), (4, "warmup"));
}

#[test]
fn a_bad_duration_is_refused() {
    let text = MINIMAL.replace("duration = \"1h\"", "duration = \"5 minutes\"");
    let e = err(&text);
    assert_eq!((e.line, e.column, e.field.as_str()), (3, 12, "duration"));
    assert!(e.message.contains("unit"), "{e}");

    let text = MINIMAL.replace("duration = \"1h\"", "duration = 300");
    let e = err(&text);
    assert_eq!((e.line, e.field.as_str()), (3, "duration"));
    assert!(e.message.contains("duration string"), "{e}");
}

#[test]
fn missing_fields_point_at_their_table() {
    let text = MINIMAL.replace("machines = 2", "");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "[[pool]]"), "pool[0].machines")
    );

    let e = err(&MINIMAL.replace("seed = 1", ""));
    assert_eq!((e.line, e.field.as_str()), (1, "seed"));

    let text = MINIMAL.replace("service = { dist = \"constant\", value = \"1s\" }", "");
    assert_eq!(err(&text).field, "workload[0].service");

    let text = MINIMAL.replace("dist = \"poisson\", ", "");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "arrivals"), "workload[0].arrivals.dist")
    );

    let text = with("[[fault]]\nat = \"1m\"\nkind = \"gpu-oom\"\nduration = \"1m\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "[[fault]]"), "fault[0].leak_gb")
    );

    let e = err("name = \"t\"\nseed = 1\nduration = \"1h\"\n");
    assert_eq!(e.field, "pool");
}

#[test]
fn impossible_values_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "rate_per_s = 1.0",
            "rate_per_s = 0.0",
            "workload[0].arrivals.rate_per_s",
        ),
        (
            "rate_per_s = 1.0",
            "rate_per_s = nan",
            "workload[0].arrivals.rate_per_s",
        ),
        (
            "rate_per_s = 1.0",
            "rate_per_s = inf",
            "workload[0].arrivals.rate_per_s",
        ),
        (
            "rate_per_s = 1.0",
            "rate_per_s = 1e9",
            "workload[0].arrivals",
        ),
        (
            "value = \"1s\" }",
            "value = \"1s\" }\npriority = 101",
            "workload[0].priority",
        ),
        (
            "value = \"1s\" }",
            "value = \"1s\" }\nfail_rate = 2",
            "workload[0].fail_rate",
        ),
        (
            "value = \"1s\" }",
            "value = \"1s\" }\nstop = \"2h\"",
            "workload[0].stop",
        ),
        (
            "value = \"1s\" }",
            "value = \"1s\" }\nstart = \"1h\"",
            "workload[0].start",
        ),
        (
            "dist = \"constant\", value = \"1s\"",
            "dist = \"lognormal\", median = \"1s\", sigma = -1",
            "workload[0].service.sigma",
        ),
        (
            "dist = \"constant\", value = \"1s\"",
            "dist = \"exponential\", mean = \"0s\"",
            "workload[0].service.mean",
        ),
        (
            "dist = \"constant\", value = \"1s\"",
            "dist = \"gamma\", value = \"1s\"",
            "workload[0].service.dist",
        ),
        ("machines = 2", "machines = 100001", "pool[0].machines"),
        (
            "machines = 2",
            "machines = 2\ndownload_gb_per_s = 0",
            "pool[0].download_gb_per_s",
        ),
        (
            "machines = 2",
            "machines = 2\nlifetime = \"forever\"",
            "pool[0].lifetime",
        ),
        ("machines = 2", "machines = 2\nname = \"b\"", "toml"),
        ("name = \"t\"", "name = \"\"", "name"),
        ("duration = \"1h\"", "duration = \"0s\"", "duration"),
    ];
    for (from, to, field) in cases {
        let text = MINIMAL.replace(from, to);
        assert_ne!(text, MINIMAL, "{from}");
        let e = err(&text);
        assert_eq!(e.field, *field, "{to}: {e}");
        let needle = to.lines().last().unwrap();
        if *field != "toml" {
            assert_eq!(e.line, line_of(&text, needle), "{to}: {e}");
        }
    }
    let faults: &[(&str, &str)] = &[
        ("at = \"26h\"\nkind = \"kill\"", "fault[0].at"),
        (
            "at = \"1m\"\nkind = \"kill\"\ncount = 2\nfraction = 0.5",
            "fault[0].count",
        ),
        ("at = \"1m\"\nkind = \"partition\"", "fault[0].duration"),
        (
            "at = \"1m\"\nkind = \"latency\"\nduration = \"1m\"",
            "fault[0].latency",
        ),
        ("at = \"1m\"\nkind = \"meteor\"", "fault[0].kind"),
        ("kind = \"kill\"", "fault[0].at"),
        ("at = \"1m\"", "fault[0].kind"),
    ];
    for (body, field) in faults {
        let e = err(&with(&format!("[[fault]]\n{body}\n")));
        assert_eq!(e.field, *field, "{body}: {e}");
    }
}

#[test]
fn engine_relations_are_checked_at_their_key() {
    let text = with("[engine]\nlease_ttl = \"30s\"\nheartbeat = \"60s\"\n");
    let e = err(&text);
    assert_eq!(
        (e.line, e.field.as_str()),
        (line_of(&text, "heartbeat"), "engine.heartbeat")
    );
    let text = with("[engine]\nmodels = []\n");
    assert_eq!(err(&text).field, "engine.models");
    let text = with("[engine]\nmax_attempts = 7\n");
    assert_eq!(
        Scenario::parse(&text, "t.toml")
            .unwrap()
            .engine
            .max_attempts,
        7
    );
}

#[test]
fn syntax_errors_have_a_line_and_column() {
    let text = "name = \"t\"\nseed = = 1\n";
    let e = err(text);
    assert_eq!((e.line, e.field.as_str()), (2, "toml"));
    assert!(e.column > 1);
    let e = err("name = \"t\"\nname = \"u\"\n");
    assert_eq!((e.line, e.field.as_str()), (2, "toml"));
}

#[test]
fn errors_display_file_line_column_field_message() {
    let text = MINIMAL.replace("duration = \"1h\"", "duration = \"5 minutes\"");
    let e = Scenario::parse(&text, "scenarios/x.toml").unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("scenarios/x.toml:3:12: duration: {}", e.message)
    );
    let e = Scenario::load(std::path::Path::new("/nonexistent/x.toml")).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.field.as_str()),
        ("/nonexistent/x.toml", "file")
    );
}

#[test]
fn unworkable_workloads_are_not_refused() {
    // No pool has 16 GPUs or an H100: the engine must judge these jobs unworkable, not the loader.
    let text = MINIMAL.replace(
        "value = \"1s\" }",
        "value = \"1s\" }\ngpus = 16\ngpu_models = [\"H100\"]",
    );
    let s = Scenario::parse(&text, "t.toml").unwrap();
    assert_eq!(s.workloads[0].gpus, 16);
}

/// Deterministic byte mutations of every bundled file: the loader may refuse them, never panic.
#[test]
fn mutated_inputs_never_panic() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const ALPHABET: &[u8] = b" \n\"'=[]{},.0123456789-+_#abcdefghsmnxz\\\t";
    for (_, text) in bundled() {
        let bytes = text.into_bytes();
        for _ in 0..150 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % b.len();
                let c = ALPHABET[(next() as usize) % ALPHABET.len()];
                match next() % 3 {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    _ => {
                        b.remove(at);
                    }
                }
                if b.is_empty() {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Err(e) = Scenario::parse(&text, "m.toml") {
                assert!(e.line >= 1 && e.column >= 1, "{e}");
                if std::env::var_os("SHOW_ERRORS").is_some() {
                    println!("{e}");
                }
            }
        }
    }
}

#[test]
fn fault_kinds_read_with_underscores_or_hyphens() {
    for spelling in ["redis_restart", "redis-restart"] {
        let text = with(&format!("[[fault]]\nat = \"1m\"\nkind = \"{spelling}\"\n"));
        let scenario = Scenario::parse(&text, "t.toml").expect(spelling);
        assert_eq!(scenario.faults[0].kind.name(), "redis_restart");
    }
    let text = with("[[fault]]\nat = \"1m\"\nkind = \"gpu_oom\"\nduration = \"1m\"\nleak_gb = 4\n");
    assert_eq!(
        Scenario::parse(&text, "t.toml").unwrap().faults[0]
            .kind
            .name(),
        "gpu_oom"
    );
}
