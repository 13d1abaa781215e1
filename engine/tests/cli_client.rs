//! The CLI's client commands through the built binary, against an API on a `LocalStore` with
//! an in-process agent: jobs, cancel, machines, stats, watch (exit status and output), and a
//! refusal printed as one line.

mod api_support;
#[path = "support/cli.rs"]
mod cli;

use api_support::*;
use cli::drover;
use serde_json::{json, Value};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

/// `drover COMMAND --api BASE --token TOKEN ARGS`, off the test's runtime thread.
async fn run(base: &str, command: &str, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = vec![command.into(), "--api".into(), base.into()];
    all.extend(["--token".into(), TOKEN.into()]);
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        drover(&refs)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_cancel_machines_stats_and_watch() {
    let api = local_api().await;
    let agent = start_agent(api.store.clone(), fast_config(), machine("cli-1", 1), LIMIT);
    let submit = |body: Value| {
        let client = api.client.clone();
        async move {
            let (_, reply) = client.post("/v1/jobs", &body).await.unwrap();
            reply["id"].as_str().unwrap().to_string()
        }
    };
    let ok = submit(json!({"kind": "sleep", "payload": {"seconds": 0.3}})).await;
    let (code, out, err) = run(&api.base, "watch", &[&ok]).await;
    assert_eq!(code, 0, "{out}{err}");
    for want in ["progress", "succeeded", "state succeeded", "slept_s"] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let (code, out, _) = run(&api.base, "watch", &[&ok, "--json"]).await;
    assert_eq!(code, 0);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.last().unwrap()["data"]["state"],
        "succeeded",
        "{out}"
    );

    // A job no machine can run: cancel it, and watch says how it ended (exit 1).
    let big = submit(json!({"kind": "sleep", "requirements": {"gpus": 4}})).await;
    let (code, out, err) = run(&api.base, "cancel", &[&big]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("{big} cancelled").as_str()),
        "{err}"
    );
    let (code, _, err) = run(&api.base, "watch", &[&big]).await;
    assert_eq!(code, 1);
    assert!(err.contains("ended cancelled"), "{err}");
    let (code, _, err) = run(&api.base, "cancel", &[&ok]).await;
    assert_eq!(code, 1, "cancelling a succeeded job is refused");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("409"), "{err}");

    let (code, out, _) = run(&api.base, "jobs", &["--state", "cancelled"]).await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&big) && l.contains("cancelled")),
        "{out}"
    );
    assert!(
        !out.contains(&format!("{ok} ")),
        "filtered by state:\n{out}"
    );
    let (_, out, _) = run(&api.base, "jobs", &["--limit", "1", "--json"]).await;
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().expect("a next page").to_string();
    let (_, out, _) = run(&api.base, "jobs", &["--after", &next]).await;
    assert!(out.contains(&big), "the second page:\n{out}");

    let (code, out, _) = run(&api.base, "machines", &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("cli-1") && out.contains("ready"), "{out}");
    let (code, out, _) = run(&api.base, "stats", &[]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("succeeded 1") && out.contains("cancelled 1"),
        "{out}"
    );
    let (_, out, _) = run(&api.base, "stats", &["--json"]).await;
    let stats: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["totals"]["succeeded"], 1);

    // A payload its kind cannot take is refused at submission, naming the field, in one line.
    let bad = ["sleep", "--payload", r#"{"seconds": "abc"}"#, "--wait"];
    let (code, _, err) = run(&api.base, "submit", &bad).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("payload.seconds") && err.trim().lines().count() == 1,
        "{err}"
    );

    // submit --wait says why a job failed, in one line.
    let args = [
        "sleep",
        "--payload",
        r#"{"seconds": 5}"#,
        "--timeout",
        "300ms",
        "--max-attempts",
        "1",
        "--wait",
    ];
    let (code, _, err) = run(&api.base, "submit", &args).await;
    assert_eq!(code, 1);
    let last = err.trim().lines().last().unwrap_or_default().to_string();
    assert!(last.contains("ended timed_out: timed_out"), "{err}");

    let (code, _, err) = run(&api.base, "watch", &["j999"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("404") && err.trim().lines().count() == 1,
        "{err}"
    );
    agent.task.abort();
}
