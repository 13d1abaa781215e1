//! The journal and the registry on a real redis-server: `drover journal export` tells a job's
//! story; machines that come and go are forgotten, so an endless churn of host names under a
//! small `max_machines` still registers the next one. Needs `redis-server` on PATH.

use drover_engine::core::{EngineConfig, JobId, Offer, Outcome, Span, Time};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::SharedStore;
use drover_engine::store::conformance;
use drover_engine::store::{Reply, Request};
use drover_engine::testing::RedisServer;
use std::process::Command;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn offer() -> Offer {
    conformance::offer(1, 24)
}

#[test]
fn journal_export_tells_what_happened_in_order() {
    let server = RedisServer::start();
    let rt = runtime();
    let store = rt
        .block_on(RedisStore::connect(
            &server.url,
            "jx",
            EngineConfig::default(),
        ))
        .expect("connect");
    let apply = |r: Request| rt.block_on(store.apply(r)).expect("reach redis");
    let Ok(Reply::Registered { machine }) = apply(Request::Register(Box::new(
        conformance::machine("m", 1, 24),
    ))) else {
        panic!("register")
    };
    let mut jobs = Vec::new();
    for _ in 0..2 {
        let Ok(Reply::Submitted { job, .. }) =
            apply(Request::Submit(Box::new(conformance::job(1, 8))))
        else {
            panic!("submit")
        };
        jobs.push(job);
    }
    for seq in 1..=2 {
        let Ok(Reply::Claimed { grants, .. }) = apply(Request::Claim {
            machine,
            seq,
            offer: offer(),
        }) else {
            panic!("claim")
        };
        let outcome = if seq == 1 {
            Outcome::Succeeded
        } else {
            conformance::error(false)
        };
        apply(Request::Complete {
            job: grants[0].job,
            token: grants[0].token,
            outcome,
            result: None,
        })
        .expect("complete");
    }
    let export = |extra: &[&str]| -> Vec<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_drover"))
            .args([
                "journal",
                "export",
                "--redis",
                &server.url,
                "--namespace",
                "jx",
            ])
            .args(extra)
            .output()
            .expect("run drover journal export");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    let all = export(&[]);
    let events: Vec<&str> = all.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        [
            "registered",
            "submitted",
            "submitted",
            "leased",
            "succeeded",
            "leased",
            "failed",
            "dead"
        ]
    );
    assert!(all.iter().all(
        |l| l["schema"] == drover_engine::store::journal::SCHEMA && l["at"].as_u64().is_some()
    ));
    assert_eq!(all[3]["machine"], machine.0);
    assert_eq!(all[6]["class"], "fatal");
    let second = export(&["--job", &jobs[1].0.to_string()]);
    let events: Vec<&str> = second
        .iter()
        .map(|l| l["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["submitted", "leased", "failed", "dead"]);
    assert!(second.iter().all(|l| l["job"] == jobs[1].0));
    let none = export(&["--since", "0s", "--until", "0"]);
    assert!(none.is_empty(), "nothing before the epoch: {none:?}");
    let bad = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "journal",
            "export",
            "--redis",
            &server.url,
            "--since",
            "yesterday",
        ])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--since \"yesterday\""));
}

#[test]
fn endless_churn_under_a_small_limit_still_registers_the_next_machine() {
    let server = RedisServer::start();
    let rt = runtime();
    let config = EngineConfig {
        retention: Span::from_secs(60),
        limits: drover_engine::core::config::Limits {
            max_machines: 50,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let store = rt
        .block_on(RedisStore::connect(&server.url, "churn", config))
        .expect("connect");
    let at = |secs: u64, r: Request| {
        rt.block_on(async {
            store.set_test_clock(Some(Time(secs * 1_000_000))).await?;
            store.apply(r).await
        })
        .expect("reach redis")
    };
    // 200 machines, each with a name of its own, register and leave one after another, ten
    // seconds apart; the reaper runs as they go.
    for i in 0..200u64 {
        let now = 1_000 + i * 10;
        let name = format!("spot-{i}");
        let reply = at(
            now,
            Request::Register(Box::new(conformance::machine(&name, 1, 24))),
        );
        let Ok(Reply::Registered { machine }) = reply else {
            panic!("machine {i} was refused: {reply:?}")
        };
        at(now, Request::Deregister { machine }).expect("deregister");
        at(now, Request::Reap { max: 1000 }).expect("reap");
    }
    // The registry holds the machines of the last minute, not all 200.
    let Ok(Reply::Stats(stats)) = at(3_000, Request::Stats) else {
        panic!("stats")
    };
    let held: u64 = stats.machines.values().sum();
    assert!(
        held <= 7,
        "the registry holds {held} machines: {:?}",
        stats.machines
    );
    // The next one registers and runs a job.
    let Ok(Reply::Registered { machine }) = at(
        3_000,
        Request::Register(Box::new(conformance::machine("last", 1, 24))),
    ) else {
        panic!("the last machine was refused")
    };
    let Ok(Reply::Submitted { job, .. }) =
        at(3_000, Request::Submit(Box::new(conformance::job(1, 8))))
    else {
        panic!("submit")
    };
    let Ok(Reply::Claimed { grants, .. }) = at(
        3_000,
        Request::Claim {
            machine,
            seq: 1,
            offer: offer(),
        },
    ) else {
        panic!("claim")
    };
    assert_eq!(grants.iter().map(|g| g.job).collect::<Vec<JobId>>(), [job]);
    let done = at(
        3_001,
        Request::Complete {
            job,
            token: grants[0].token,
            outcome: Outcome::Succeeded,
            result: None,
        },
    );
    assert!(done.is_ok(), "{done:?}");
}
