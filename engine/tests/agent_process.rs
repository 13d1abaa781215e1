//! The real `drover agent` binary against a real Redis: SIGTERM drains it (the running job
//! finishes, the machine deregisters, exit 0), and a SIGKILLed agent's job runs again on
//! another agent and is recorded once.

mod api_support;

use api_support::*;
use drover_engine::core::EngineConfig;
use drover_engine::redis::RedisStore;
use drover_engine::testing::RedisServer;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

async fn redis_api(server: &RedisServer, namespace: &str) -> TestApi<RedisStore> {
    let config = fast_config();
    let store = RedisStore::connect(&server.url, namespace, config.clone())
        .await
        .expect("connect to the test Redis");
    start_api(store, config).await
}

/// Spawns `drover agent` with the fast engine config, logging to a file in `dir`.
fn spawn_agent(url: &str, namespace: &str, name: &str, dir: &std::path::Path) -> Child {
    #[derive(serde::Serialize)]
    struct File {
        engine: EngineConfig,
    }
    let config = dir.join(format!("{name}.toml"));
    let text = toml::to_string(&File {
        engine: fast_config(),
    })
    .unwrap();
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "--log-format",
            "json",
            "agent",
            "--redis",
            url,
            "--namespace",
            namespace,
        ])
        .args([
            "--pool",
            "test",
            "--name",
            name,
            "--gpus",
            "1",
            "--gpu-mem-gb",
            "16",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join(format!("{name}-state")))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn drover agent")
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let until = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < until, "the agent did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("drover-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_agent_binary() {
    let server = RedisServer::start();
    let api = redis_api(&server, "drain").await;
    let dir = temp_dir("drain");
    let mut agent = spawn_agent(&server.url, "drain", "p1", &dir);
    let body = json!({"kind": "sleep", "payload": {"seconds": 1.5}});
    let (_, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    let id = reply["id"].as_str().unwrap();
    wait_job(&api.client, id, LIMIT, state_is("leased")).await;
    signal(&agent, "-TERM");
    let status = wait_exit(&mut agent).await;
    let log = std::fs::read_to_string(dir.join("p1.log")).unwrap_or_default();
    assert!(status.success(), "{status}\n{log}");
    let job = wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 1, "{job}");
    let (_, machines) = api.client.get("/v1/machines").await.unwrap();
    assert_ne!(machines["machines"][0]["state"], "ready", "{machines}");
    assert!(log.contains("deregistered"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_job_runs_again_elsewhere_and_is_recorded_once() {
    let server = RedisServer::start();
    let api = redis_api(&server, "kill").await;
    let dir = temp_dir("kill");
    let mut first = spawn_agent(&server.url, "kill", "k1", &dir);
    let body = json!({"kind": "sleep", "payload": {"seconds": 1.0}, "max_attempts": 3});
    let (_, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    let id = reply["id"].as_str().unwrap();
    wait_job(&api.client, id, LIMIT, state_is("leased")).await;
    signal(&first, "-KILL");
    wait_exit(&mut first).await;
    let mut second = spawn_agent(&server.url, "kill", "k2", &dir);
    // The API's reaper declares k1 lost after machine_ttl and requeues its job for k2.
    let job = wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 2, "{job}");
    let (_, stats) = api.client.get("/v1/stats").await.unwrap();
    assert_eq!(stats["totals"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["totals"]["submitted"], 1, "{stats}");
    signal(&second, "-TERM");
    assert!(wait_exit(&mut second).await.success());
    let _ = std::fs::remove_dir_all(&dir);
}
