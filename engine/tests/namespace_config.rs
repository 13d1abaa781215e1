//! One engine configuration per namespace, on a real redis-server: the first process to connect
//! records its own, an identical one connects, a differing one is refused with each field and
//! both values, and `drover admin config set` changes it for every process started later. The
//! `drover` binary's config file has one shape for every process (`[engine]`), and an agent with
//! a machine spec the store would refuse exits at start-up, before any request.

use drover_engine::core::{EngineConfig, Span};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::{ConfigFile, StoreError};
use drover_engine::testing::RedisServer;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn retention(secs: u64) -> EngineConfig {
    EngineConfig {
        retention: Span::from_secs(secs),
        ..EngineConfig::default()
    }
}

async fn refusal(url: &str, namespace: &str, config: EngineConfig) -> String {
    match RedisStore::connect(url, namespace, config).await {
        Ok(_) => panic!("a differing configuration connected"),
        Err(StoreError::Connection(message)) => message,
        Err(other) => panic!("expected a connection error, got {other:?}"),
    }
}

#[tokio::test]
async fn first_writer_wins_identical_connects_differing_is_refused() {
    let server = RedisServer::start();
    let url = &server.url;
    let first = RedisStore::connect(url, "fleet", retention(3600))
        .await
        .expect("the first process records its configuration");
    let recorded = first.namespace_config().await.unwrap().expect("recorded");
    assert_eq!(recorded.config, retention(3600));
    assert_eq!(recorded.sha1.len(), 40);
    assert!(recorded
        .written_by
        .as_deref()
        .unwrap()
        .starts_with("first process to connect"));

    // The same configuration, and the same written another way ("60m" is "1h"), connect.
    RedisStore::connect(url, "fleet", retention(3600))
        .await
        .expect("an identical configuration connects");
    let respelled: EngineConfig = toml::from_str("retention = \"60m\"").unwrap();
    RedisStore::connect(url, "fleet", respelled)
        .await
        .expect("the same value spelled differently connects");

    // A differing one is refused, every differing field named with both values.
    let mut other = retention(3);
    other.limits.max_gpus = 8;
    let message = refusal(url, "fleet", other).await;
    assert!(
        message.contains(r#"engine.retention: namespace has "1h", this process has "3s""#),
        "{message}"
    );
    assert!(
        message.contains("engine.limits.max_gpus: namespace has 64, this process has 8"),
        "{message}"
    );
    assert!(message.contains("drover admin config"), "{message}");
    // The refused process changed nothing.
    assert_eq!(
        first.namespace_config().await.unwrap().unwrap().config,
        retention(3600)
    );

    // Another namespace on the same server has its own.
    RedisStore::connect(url, "other", retention(3))
        .await
        .expect("namespaces are independent");
}

#[tokio::test]
async fn concurrent_first_processes_agree_on_one_winner() {
    let server = RedisServer::start();
    let attempts: Vec<_> = (1..=8u64)
        .map(|i| {
            let url = server.url.clone();
            tokio::spawn(async move { RedisStore::connect(&url, "race", retention(i)).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, attempt) in attempts.into_iter().enumerate() {
        if let Ok(store) = attempt.await.unwrap() {
            winners.push((i as u64 + 1, store));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one configuration wins");
    let (secs, store) = &winners[0];
    let recorded = store.namespace_config().await.unwrap().unwrap();
    assert_eq!(recorded.config, retention(*secs));
}

#[tokio::test]
async fn admin_set_lets_the_new_configuration_connect() {
    let server = RedisServer::start();
    let url = &server.url;
    let store = RedisStore::connect(url, "roll", retention(3600))
        .await
        .unwrap();
    refusal(url, "roll", retention(3)).await;
    let previous = store
        .set_namespace_config(&retention(3))
        .await
        .unwrap()
        .expect("there was one");
    assert_eq!(previous.config, retention(3600));
    RedisStore::connect(url, "roll", retention(3))
        .await
        .expect("after `set` the new configuration connects");
    let message = refusal(url, "roll", retention(3600)).await;
    assert!(
        message.contains(r#"engine.retention: namespace has "3s", this process has "1h""#),
        "{message}"
    );
    // An invalid configuration is never recorded.
    let broken = EngineConfig {
        max_attempts: 0,
        ..EngineConfig::default()
    };
    assert!(store.set_namespace_config(&broken).await.is_err());
    assert_eq!(
        store.namespace_config().await.unwrap().unwrap().config,
        retention(3)
    );
}

// ---------------------------------------------------------------------------------------------
// The binary.

/// Runs `drover ARGS`, killing it after 30 s.
fn drover(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn drover");
    let until = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("drover {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-nsconfig-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn admin_config_show_and_set_through_the_binary() {
    let server = RedisServer::start();
    let dir = temp_dir("admin");
    let url = server.url.as_str();
    let ns = ["--redis", url, "--namespace", "cli"];

    // Nothing recorded yet: show says so and fails.
    let shown = drover(&[&["admin", "config", "show"][..], &ns].concat());
    assert!(!shown.status.success());
    assert!(
        text(&shown.stderr).contains("holds no engine configuration yet"),
        "{}",
        text(&shown.stderr)
    );

    // One file for the fleet: the agent's keys beside [engine] are fine for `set`.
    let fleet = write(
        &dir,
        "fleet.toml",
        "drain_grace = \"1m\"\n[engine]\nretention = \"2h\"\n[engine.limits]\nmax_gpus = 8\n\
         [labels]\nregion = \"eu\"\n",
    );
    let set = drover(&[&["admin", "config", "set", &fleet][..], &ns].concat());
    assert!(set.status.success(), "{}", text(&set.stderr));
    assert!(
        text(&set.stdout).contains("recorded"),
        "{}",
        text(&set.stdout)
    );

    let shown = drover(&[&["admin", "config", "show"][..], &ns].concat());
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let toml_text = text(&shown.stdout);
    assert!(toml_text.contains("[engine]"), "{toml_text}");
    assert!(toml_text.contains("# sha1 "), "{toml_text}");
    // What `show` prints is a config file every process can start with.
    let back = ConfigFile::parse("shown", &toml_text).expect("show prints a valid file");
    assert_eq!(back.engine.retention, Span::from_secs(7200));
    assert_eq!(back.engine.limits.max_gpus, 8);

    // A reaper with another configuration is refused at start, the field and values named.
    let old = write(&dir, "old.toml", "[engine]\nretention = \"1h\"\n");
    let reaper = drover(&[&["reaper", "--config", &old][..], &ns].concat());
    assert!(!reaper.status.success());
    let err = text(&reaper.stderr);
    assert!(
        err.contains(r#"engine.retention: namespace has "2h", this process has "1h""#),
        "{err}"
    );
    assert!(
        err.contains("engine.limits.max_gpus: namespace has 8, this process has 64"),
        "{err}"
    );

    // `set` again says what changed.
    let set = drover(&[&["admin", "config", "set", &old][..], &ns].concat());
    assert!(set.status.success(), "{}", text(&set.stderr));
    let out = text(&set.stdout);
    assert!(out.contains(r#"engine.retention: "2h" -> "1h""#), "{out}");
    assert!(out.contains("restart"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_file_in_the_old_api_shape_is_refused_with_its_line() {
    let dir = temp_dir("shape");
    let old = write(
        &dir,
        "api.toml",
        "# engine knobs at the top\nlease_ttl = \"30s\"\nretention = \"1h\"\n",
    );
    for process in ["api", "reaper"] {
        let out = drover(&[process, "--redis", "memory", "--config", &old]);
        assert!(!out.status.success(), "{process} started");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "{old}:2:1: lease_ttl: an engine setting at the top level"
            )),
            "{process}: {err}"
        );
        assert!(err.contains("under [engine]"), "{err}");
        assert!(err.contains("retention (line 3)"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_with_a_spec_the_store_would_refuse_exits_at_start() {
    // Port 1: nothing listens, so an agent that tried to connect would fail differently.
    let out = drover(&[
        "agent",
        "--redis",
        "redis://127.0.0.1:1",
        "--pool",
        "p",
        "--name",
        "big",
        "--gpus",
        "1000",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("invalid machine spec") && err.contains("machine.gpus: must be at most 64"),
        "{err}"
    );
    assert!(!err.contains("connecting to Redis"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let out = drover(&[
        "agent",
        "--redis",
        "redis://127.0.0.1:1",
        "--pool",
        "p",
        "--name",
        "neg",
        "--cost-per-hour=-1",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("machine.cost_per_hour"), "{err}");
}
