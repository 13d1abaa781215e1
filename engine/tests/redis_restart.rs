//! Redis crash and restart with `appendfsync always`: no acknowledged submission is lost, and
//! after the restart the reaper reconciles: the leases of machines that did not come back are
//! revoked and their jobs run again elsewhere.

use drover_engine::core::{EngineConfig, JobId, MachineId, Span, StateName, Time};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::conformance::{job_with, machine, offer};
use drover_engine::store::{Grant, Refusal, Reply, Request};
use drover_engine::testing::RedisServer;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Requests that met the outage and were retried.
static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Retries a request until the store answers (every request is idempotent).
async fn apply_retrying(store: &RedisStore, request: Request) -> Result<Reply, Refusal> {
    for _ in 0..400 {
        match store.apply(request.clone()).await {
            Ok(reply) => return reply,
            Err(StoreError::Connection(_) | StoreError::Timeout) => {
                RETRIED.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the store did not come back")
}

/// `machine`'s first claim, offering four 24 GB GPUs.
async fn claim_four(store: &RedisStore, machine: MachineId) -> Vec<Grant> {
    let claim = Request::Claim {
        machine,
        seq: 1,
        offer: offer(4, 24),
    };
    match apply_retrying(store, claim).await {
        Ok(Reply::Claimed { grants, .. }) => grants,
        other => panic!("claim: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_a_kill_and_restart() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url, "restart", EngineConfig::default())
        .await
        .expect("connect");
    // Producers submit with idempotency keys and record what was acknowledged.
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut acked = BTreeMap::new();
                for i in 0..150 {
                    let key = format!("p{p}-{i}");
                    let spec = job_with(0, 0, |s| s.idempotency_key = Some(key.clone()));
                    let reply = apply_retrying(&store, Request::Submit(Box::new(spec))).await;
                    match reply {
                        Ok(Reply::Submitted { job, .. }) => {
                            acked.insert(key, job);
                        }
                        other => panic!("submit: {other:?}"),
                    }
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let mut acked = BTreeMap::new();
    for p in producers {
        acked.extend(p.await.expect("producer"));
    }
    assert_eq!(acked.len(), 600);
    let retried = RETRIED.load(Ordering::Relaxed);
    eprintln!("{retried} requests met the outage and were retried");
    assert!(
        retried > 0,
        "the kill came after the load: nothing was tested"
    );
    // Every acknowledged job is there, under the id that was acknowledged.
    for (key, job) in &acked {
        match apply_retrying(&store, Request::Get { job: *job }).await {
            Ok(Reply::Job(view)) => {
                assert_eq!(view.spec.idempotency_key.as_deref(), Some(key.as_str()))
            }
            other => panic!("{key} -> {job}: {other:?}"),
        }
    }
    let Ok(Reply::Stats(stats)) = apply_retrying(&store, Request::Stats).await else {
        panic!("stats")
    };
    assert_eq!(stats.jobs.queued, 600, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_reaper_revokes_leases_of_machines_that_are_gone() {
    let mut server = RedisServer::start();
    let config = EngineConfig {
        machine_ttl: Span::from_secs(30),
        ..EngineConfig::default()
    };
    let store = RedisStore::connect(&server.url, "reconcile", config)
        .await
        .expect("connect");
    let Ok(Reply::Registered { machine: gone }) =
        apply_retrying(&store, Request::Register(Box::new(machine("gone", 4, 24)))).await
    else {
        panic!("register")
    };
    let mut jobs: Vec<JobId> = Vec::new();
    for _ in 0..4 {
        let Ok(Reply::Submitted { job, .. }) =
            apply_retrying(&store, Request::Submit(Box::new(job_with(1, 8, |_| {})))).await
        else {
            panic!("submit")
        };
        jobs.push(job);
    }
    let grants = claim_four(&store, gone).await;
    assert_eq!(grants.len(), 4);
    server.kill();
    server.restart();
    // The machine never heartbeats again. A minute later (on the store clock, moved by the
    // test clock rather than by waiting), the reaper declares it lost.
    let now = match apply_retrying(&store, Request::Get { job: jobs[0] }).await {
        Ok(Reply::Job(view)) => view.started_at.expect("started"),
        other => panic!("{other:?}"),
    };
    store
        .set_test_clock(Some(Time(now.0 + 60_000_000)))
        .await
        .expect("clock");
    let Ok(Reply::Reaped(report)) = apply_retrying(&store, Request::Reap { max: 1000 }).await
    else {
        panic!("reap")
    };
    assert_eq!(report.machines_lost, 1, "{report:?}");
    assert_eq!(report.requeued, 4, "{report:?}");
    // Another machine runs them.
    store
        .set_test_clock(Some(Time(now.0 + 120_000_000)))
        .await
        .expect("clock");
    let Ok(Reply::Registered { machine: fresh }) =
        apply_retrying(&store, Request::Register(Box::new(machine("fresh", 4, 24)))).await
    else {
        panic!("register")
    };
    let grants = claim_four(&store, fresh).await;
    assert_eq!(grants.len(), 4);
    assert!(grants.iter().all(|g| g.attempt == 2));
    for g in grants {
        let reply = apply_retrying(
            &store,
            Request::Complete {
                job: g.job,
                token: g.token,
                outcome: drover_engine::core::Outcome::Succeeded,
                result: None,
            },
        )
        .await;
        assert_eq!(
            reply,
            Ok(Reply::Recorded {
                state: StateName::Succeeded
            })
        );
    }
}
