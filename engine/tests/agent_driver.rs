//! The agent driver in-process on a `LocalStore`: draining, the grace period, the command
//! executor's outcomes, and killing an attempt whose lease was revoked.

mod api_support;

use api_support::*;
use drover_engine::agent::Agent;
use drover_engine::core::{MachineSpec, ModelSet, Time};
use drover_engine::executor::{CommandTemplate, Executors};
use drover_engine::runtime::{AgentDriver, DriverExit, DriverOptions};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

async fn submit(api: &TestApi<drover_engine::runtime::LocalStore>, body: Value) -> String {
    let (status, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    assert!(status.is_success(), "{status}: {reply}");
    reply["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_drain_lets_the_running_job_finish_then_deregisters() {
    let api = local_api().await;
    let mut agent = start_agent(api.store.clone(), fast_config(), machine("d1", 1), LIMIT);
    let id = submit(&api, json!({"kind": "sleep", "payload": {"seconds": 1.0}})).await;
    wait_job(&api.client, &id, LIMIT, state_is("leased")).await;
    let started = Instant::now();
    agent.drain.take().unwrap().send(()).unwrap();
    let exit = tokio::time::timeout(LIMIT, agent.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, DriverExit::Left);
    let job = wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["attempt"], 1);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it waited for the job"
    );
    let (_, machines) = api.client.get("/v1/machines").await.unwrap();
    assert_ne!(machines["machines"][0]["state"], "ready", "{machines}");
    // A job submitted after the drain is not claimed.
    let later = submit(&api, json!({"kind": "sleep", "payload": {"seconds": 0.1}})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_job(&api.client, &later, LIMIT, state_is("queued")).await;
}

#[tokio::test]
async fn past_the_grace_running_jobs_are_released_uncharged() {
    let api = local_api().await;
    let grace = Duration::from_millis(300);
    let mut agent = start_agent(api.store.clone(), fast_config(), machine("d2", 1), grace);
    let id = submit(&api, json!({"kind": "sleep", "payload": {"seconds": 60}})).await;
    wait_job(&api.client, &id, LIMIT, state_is("leased")).await;
    agent.drain.take().unwrap().send(()).unwrap();
    let exit = tokio::time::timeout(LIMIT, agent.task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, DriverExit::ReleasedAfterGrace { released: 1 });
    let job = wait_job(&api.client, &id, LIMIT, state_is("queued")).await;
    assert!(job["attempt"].as_u64() <= Some(1), "{job}");
}

fn template(program: &str, args: &[&str]) -> CommandTemplate {
    CommandTemplate {
        program: program.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        workdir: None,
    }
}

/// An agent whose `fail` kind prints its payload's `msg` to stderr and exits 3, whose `hold`
/// kind writes its pid to `{pidfile}` and sleeps, and whose `ok` kind succeeds.
fn command_agent(api: &TestApi<drover_engine::runtime::LocalStore>) -> TestAgent {
    let config = Arc::new(fast_config());
    let mut kinds = BTreeMap::new();
    // The payload reaches the script as "$1", never as script text.
    kinds.insert(
        "fail".into(),
        template("/bin/sh", &["-c", "echo \"$1\" >&2; exit 3", "sh", "{msg}"]),
    );
    kinds.insert(
        "hold".into(),
        template(
            "/bin/sh",
            &["-c", "echo $$ > \"$1\"; exec sleep 30", "sh", "{pidfile}"],
        ),
    );
    kinds.insert(
        "ok".into(),
        template("/bin/sh", &["-c", "echo DROVER_PROGRESS 50 half; exit 0"]),
    );
    // Returns a JSON string of 70,000 x's.
    kinds.insert(
        "returns_big".into(),
        template(
            "/bin/sh",
            &["-c", "(printf '\"'; head -c 70000 /dev/zero | tr '\\0' x; printf '\"') > \"$DROVER_RESULT\""],
        ),
    );
    // Writes its payload's `json` to $DROVER_RESULT (and says where, for the test to look).
    kinds.insert(
        "returns".into(),
        template(
            "/bin/sh",
            &[
                "-c",
                "printf '%s' \"$1\" > \"$DROVER_RESULT\"; echo \"$DROVER_RESULT\" >&2; exit 0",
                "sh",
                "{json}",
            ],
        ),
    );
    let executors = Executors::from_templates(&kinds);
    // As `drover agent` does: the machine advertises the kinds its executors run.
    let spec = MachineSpec {
        kinds: executors.kinds().map(str::to_owned).collect(),
        ..machine("c1", 2)
    };
    let agent = Agent::new(config.clone(), spec, ModelSet::EMPTY, 3, Time::ZERO);
    let driver = AgentDriver::new(
        api.store.clone(),
        agent,
        config,
        executors,
        DriverOptions::default(),
    );
    let snapshot = driver.snapshot();
    let task = tokio::spawn(driver.run(std::future::pending()));
    TestAgent {
        snapshot,
        drain: None,
        task,
    }
}

#[tokio::test]
async fn command_outcomes_succeed_retry_with_stderr_or_die() {
    let api = local_api().await;
    let agent = command_agent(&api);
    let ok = submit(&api, json!({"kind": "ok"})).await;
    wait_job(&api.client, &ok, LIMIT, state_is("succeeded")).await;

    let failing = json!({"kind": "fail", "payload": {"msg": "disk on fire"}, "max_attempts": 2});
    let failing = submit(&api, failing).await;
    let job = wait_job(&api.client, &failing, LIMIT, state_is("dead")).await;
    assert_eq!(job["attempt"], 2, "a non-zero exit is retried: {job}");
    assert_eq!(
        (&job["error"]["class"], &job["error"]["retryable"]),
        (&json!("error"), &json!(true)),
        "{job}"
    );
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk on fire"),
        "{job}"
    );

    let missing = submit(
        &api,
        json!({"kind": "fail", "payload": {}, "max_attempts": 3}),
    )
    .await;
    let job = wait_job(&api.client, &missing, LIMIT, state_is("dead")).await;
    assert_eq!(
        job["attempt"], 1,
        "a missing placeholder is not retried: {job}"
    );
    assert!(
        job["error"]["message"].as_str().unwrap().contains("msg"),
        "{job}"
    );

    // A kind the agent does not run never reaches it: the job waits for a machine that does.
    let unknown = submit(&api, json!({"kind": "teleport", "max_attempts": 3})).await;
    let ok = submit(&api, json!({"kind": "ok"})).await;
    wait_job(&api.client, &ok, LIMIT, state_is("succeeded")).await;
    let (_, job) = api
        .client
        .get(&format!("/v1/jobs/{unknown}"))
        .await
        .unwrap();
    assert_eq!(
        (&job["state"], &job["attempt"]),
        (&json!("queued"), &json!(0)),
        "{job}"
    );
    agent.task.abort();
}

#[tokio::test]
async fn a_command_returns_json_through_drover_result() {
    let api = local_api().await;
    let agent = command_agent(&api);
    let sleep = submit(&api, json!({"kind": "sleep", "payload": {"seconds": 0.1}})).await;
    let job = wait_job(&api.client, &sleep, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["result"], json!({"slept_s": 0.1}), "{job}");

    let body = json!({"kind": "returns", "payload": {"json": r#"{"images": ["a.png"], "n": 2}"#}});
    let id = submit(&api, body).await;
    let job = wait_job(&api.client, &id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["result"], json!({"images": ["a.png"], "n": 2}), "{job}");
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("drover-result-{}-", std::process::id()))
        })
        .count();
    assert_eq!(leftovers, 0, "result files are removed when attempts end");

    // Not JSON, or over limits.max_result_bytes (64 KiB): the attempt fails for good.
    let body = json!({"kind": "returns", "payload": {"json": "not json"}, "max_attempts": 3});
    let id = submit(&api, body).await;
    let job = wait_job(&api.client, &id, LIMIT, state_is("dead")).await;
    assert_eq!(job["attempt"], 1, "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{job}"
    );
    assert_eq!(job["error"]["class"], "fatal", "{job}");
    assert_eq!(job["result"], Value::Null);
    let id = submit(&api, json!({"kind": "returns_big"})).await;
    let job = wait_job(&api.client, &id, LIMIT, state_is("dead")).await;
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_result_bytes"),
        "{job}"
    );
    agent.task.abort();
}

#[tokio::test]
async fn a_cancelled_job_has_its_process_killed() {
    let api = local_api().await;
    let agent = command_agent(&api);
    let dir = std::env::temp_dir().join(format!("drover-hold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("pid");
    let _ = std::fs::remove_file(&pidfile);
    let body = json!({"kind": "hold", "payload": {"pidfile": pidfile}});
    let id = submit(&api, body).await;
    wait_job(&api.client, &id, LIMIT, state_is("leased")).await;
    let pid = read_pid(&pidfile).await;
    assert!(alive(pid), "the command runs");
    api.client
        .post(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await
        .unwrap();
    let until = Instant::now() + LIMIT;
    while alive(pid) {
        assert!(
            Instant::now() < until,
            "process {pid} outlived its revoked lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(agent.snapshot.borrow().revoked, 1);
    agent.task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

async fn read_pid(path: &std::path::Path) -> u32 {
    let until = Instant::now() + LIMIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < until, "the command never wrote its pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Running, and not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_refused_registration_is_logged_by_reason_and_paced() {
    // A store full of machines refuses this one: a reason that can change, so the agent keeps
    // registering, but paced (not as fast as the store answers), and says why.
    let mut store_config = fast_config();
    store_config.limits.max_machines = 0;
    let store = drover_engine::runtime::LocalStore::new(store_config);
    let mut agent = start_agent(store, fast_config(), machine("r1", 1), LIMIT);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let seen = agent.snapshot.borrow().clone();
    let reason = seen.registration_refused.expect("the refusal is kept");
    assert!(reason.contains("machines"), "{reason}");
    // fast_config pauses 50, 100, 200, 200... ms between attempts: a handful in a second.
    assert!(
        (2..=12).contains(&seen.registrations_refused),
        "{} registrations in a second",
        seen.registrations_refused
    );
    assert_eq!(seen.machine, None);
    // Never registered and running nothing, it leaves at once instead of waiting out its grace.
    agent.drain.take().unwrap().send(()).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(2), agent.task)
        .await
        .expect("it leaves without waiting for the grace")
        .unwrap();
    assert_eq!(exit, DriverExit::Left);
}
