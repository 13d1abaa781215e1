//! RedisStore on a real Redis Cluster (3 masters, 1 replica each): jobs run; the master that
//! owns the namespace's slot is SIGKILLed; its replica takes over; work goes on.
//!
//! What a failover can lose: replication is asynchronous, so the last writes the old master
//! acknowledged may not have reached the replica (a submission, a claim, an outcome). How the
//! engine recovers: tokens and machine ids follow the store clock (`max(last + 1, now)`), so
//! nothing issued after the failover collides with what was issued before; a lease the new
//! master never saw leaves a job queued (it runs again, as jobs are idempotent), and a lease it
//! did see expires and is reaped; producers resubmit with idempotency keys, so a lost
//! submission is made again and a kept one is not duplicated.

use drover_engine::core::{EngineConfig, Outcome, Span, StateName};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::conformance::{job_with, machine, offer};
use drover_engine::store::{Refusal, Reply, Request};
use drover_engine::testing::RedisCluster;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

async fn apply_retrying(store: &RedisStore, request: Request) -> Result<Reply, Refusal> {
    let start = Instant::now();
    loop {
        match store.apply(request.clone()).await {
            Ok(reply) => return reply,
            Err(e @ (StoreError::Connection(_) | StoreError::Timeout | StoreError::Script(_))) => {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "no recovery: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Submits the keyed jobs (again), returning key -> job.
async fn submit_all(store: &RedisStore, keys: &[String]) -> BTreeMap<String, u64> {
    let mut ids = BTreeMap::new();
    for key in keys {
        let spec = job_with(0, 0, |s| s.idempotency_key = Some(key.clone()));
        match apply_retrying(store, Request::Submit(Box::new(spec))).await {
            Ok(Reply::Submitted { job, .. }) => {
                ids.insert(key.clone(), job.0);
            }
            other => panic!("submit {key}: {other:?}"),
        }
    }
    ids
}

/// Claims and completes until nothing is left; returns how many it completed.
async fn drain(store: &RedisStore, name: &str) -> usize {
    let Ok(Reply::Registered { machine }) =
        apply_retrying(store, Request::Register(Box::new(machine(name, 8, 80)))).await
    else {
        panic!("register")
    };
    let mut done = 0;
    for seq in 1.. {
        let claim = Request::Claim {
            machine,
            seq,
            offer: offer(8, 80),
        };
        let Ok(Reply::Claimed { grants, .. }) = apply_retrying(store, claim).await else {
            panic!("claim")
        };
        if grants.is_empty() {
            break;
        }
        for g in grants {
            let complete = Request::Complete {
                job: g.job,
                token: g.token,
                outcome: Outcome::Succeeded,
                result: None,
            };
            if let Ok(Reply::Recorded { .. }) = apply_retrying(store, complete).await {
                done += 1;
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_goes_on_after_the_namespace_master_fails_over() {
    let mut cluster = RedisCluster::start(3, 1);
    let config = EngineConfig {
        lease_ttl: Span::from_secs(2),
        heartbeat: Span::from_secs(1),
        machine_ttl: Span::from_secs(3),
        backoff_base: Span::from_millis(100),
        ..EngineConfig::default()
    };
    let store = RedisStore::connect(&cluster.url(), "fleet", config)
        .await
        .expect("connect to the cluster");
    let keys: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    let before = submit_all(&store, &keys[..20]).await;
    // A machine takes some work and is then lost with the master (its leases must be reaped).
    let Ok(Reply::Registered { machine: doomed }) = apply_retrying(
        &store,
        Request::Register(Box::new(machine("doomed", 4, 80))),
    )
    .await
    else {
        panic!("register")
    };
    let claim = Request::Claim {
        machine: doomed,
        seq: 1,
        offer: offer(4, 80),
    };
    let Ok(Reply::Claimed { grants, .. }) = apply_retrying(&store, claim).await else {
        panic!("claim")
    };
    assert!(!grants.is_empty());

    let master = cluster
        .master_for("{fleet}:meta")
        .expect("a master owns the namespace's slot");
    eprintln!("killing master node {master}");
    cluster.kill_master(master);
    // Failure detection (node timeout 2 s) and the replica's election take a few seconds.
    let start = Instant::now();
    let new_master = loop {
        match cluster.master_for("{fleet}:meta") {
            Some(m) if m != master => break m,
            _ => {
                assert!(start.elapsed() < Duration::from_secs(60), "no failover");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    cluster.wait_ok(Duration::from_secs(60));
    eprintln!("node {new_master} took over after {:?}", start.elapsed());

    // Producers resubmit everything with their keys, plus new work.
    let after = submit_all(&store, &keys).await;
    for (key, job) in &before {
        // Kept jobs keep their ids; a lost one (async replication) is made anew.
        if after[key] != *job {
            eprintln!("{key} was lost in the failover and resubmitted");
        }
    }
    // The doomed machine's leases expire; the reaper requeues them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reaped = apply_retrying(&store, Request::Reap { max: 1000 }).await;
    eprintln!("reap after failover: {reaped:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    apply_retrying(&store, Request::Reap { max: 1000 })
        .await
        .ok();
    let done = drain(&store, "survivor").await;
    eprintln!("completed {done} jobs after the failover");
    // Every key's job ended succeeded.
    for (key, job) in &after {
        match apply_retrying(
            &store,
            Request::Get {
                job: drover_engine::core::JobId(*job),
            },
        )
        .await
        {
            Ok(Reply::Job(view)) => assert_eq!(view.state, StateName::Succeeded, "{key}"),
            other => panic!("{key}: {other:?}"),
        }
    }
}
