use super::*;
use crate::core::model::{Failure, Outcome};
use crate::core::{Span, StateName};
use crate::store::conformance::{job, machine, offer};
use crate::store::request::{LeaseRef, LeaseStatus, Refusal, Reply, Request};

fn secs(s: u64) -> Time {
    Time(s * 1_000_000)
}

fn config() -> EngineConfig {
    EngineConfig {
        backoff_base: Span::from_secs(2),
        ..EngineConfig::default()
    }
}

/// A store with machine "a" (one 80 GB GPU) registered and `spec` submitted, both at 0 s.
fn one_machine_one_job(spec: JobSpec) -> (MemStore, MachineId, JobId) {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 1, 80));
    let j = submit(&mut store, secs(0), spec);
    (store, m, j)
}

fn submit(store: &mut MemStore, now: Time, spec: JobSpec) -> JobId {
    match store.apply(now, Request::Submit(Box::new(spec))) {
        Ok(Reply::Submitted { job, .. }) => job,
        other => panic!("submit: {other:?}"),
    }
}

fn register(store: &mut MemStore, now: Time, spec: MachineSpec) -> MachineId {
    match store.apply(now, Request::Register(Box::new(spec))) {
        Ok(Reply::Registered { machine }) => machine,
        other => panic!("register: {other:?}"),
    }
}

fn claim(
    store: &mut MemStore,
    now: Time,
    m: MachineId,
    seq: u64,
    o: Offer,
) -> Option<(JobId, Token)> {
    match store.apply(
        now,
        Request::Claim {
            machine: m,
            seq,
            offer: o,
        },
    ) {
        Ok(Reply::Claimed { grants, .. }) => {
            assert!(
                grants.len() <= 1,
                "one GPU offered per claim in these tests"
            );
            grants.first().map(|g| (g.job, g.token))
        }
        other => panic!("claim: {other:?}"),
    }
}

fn complete(
    store: &mut MemStore,
    now: Time,
    job: JobId,
    token: Token,
    outcome: Outcome,
) -> Result<Reply, Refusal> {
    store.apply(
        now,
        Request::Complete {
            job,
            token,
            outcome,
            result: None,
        },
    )
}

fn state(store: &MemStore, job: JobId) -> StateName {
    store.job_state(job).expect("job is held").name()
}

#[test]
fn submit_claim_complete() {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 1, 80));
    let j = submit(&mut store, secs(1), job(1, 8));
    let (got, token) = claim(&mut store, secs(2), m, 1, offer(1, 80)).unwrap();
    assert_eq!(got, j);
    assert_eq!(state(&store, j), StateName::Leased);
    assert_eq!(
        complete(&mut store, secs(3), j, token, Outcome::Succeeded),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
    assert_eq!(
        store.counts(),
        JobCounts {
            queued: 0,
            delayed: 0,
            leased: 0,
            finished_retained: 1
        }
    );
}

#[test]
fn priority_then_fifo_within_a_class() {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 1, 80));
    let first = submit(&mut store, secs(1), job(1, 8));
    let second = submit(&mut store, secs(1), job(1, 8));
    let urgent = submit(
        &mut store,
        secs(1),
        JobSpec {
            priority: 90,
            ..job(1, 8)
        },
    );
    let order: Vec<JobId> = (1..=3)
        .map(|seq| {
            let (j, t) = claim(&mut store, secs(2), m, seq, offer(1, 80)).unwrap();
            complete(&mut store, secs(2), j, t, Outcome::Succeeded).unwrap();
            j
        })
        .collect();
    assert_eq!(order, vec![urgent, first, second]);
}

#[test]
fn claims_skip_classes_that_do_not_fit() {
    let mut store = MemStore::new(config());
    let small = register(&mut store, secs(0), machine("small", 1, 24));
    let big_job = submit(&mut store, secs(1), job(1, 80));
    let small_job = submit(&mut store, secs(1), job(1, 16));
    let (got, _) = claim(&mut store, secs(2), small, 1, offer(1, 24)).unwrap();
    assert_eq!(
        got, small_job,
        "the 80 GB job at the head does not block the 16 GB one"
    );
    assert_eq!(
        claim(&mut store, secs(2), small, 2, offer(0, 24)),
        None,
        "no free GPU"
    );
    assert_eq!(state(&store, big_job), StateName::Queued);
}

#[test]
fn stale_tokens_are_refused_and_repeats_are_idempotent() {
    let mut store = MemStore::new(EngineConfig {
        lease_ttl: Span::from_secs(30),
        ..config()
    });
    let a = register(&mut store, secs(0), machine("a", 1, 80));
    let b = register(&mut store, secs(0), machine("b", 1, 80));
    let j = submit(&mut store, secs(0), job(1, 8));
    let (_, old) = claim(&mut store, secs(1), a, 1, offer(1, 80)).unwrap();
    // Machine b keeps heartbeating; a goes silent and is declared lost.
    for t in (10..=60).step_by(10) {
        store
            .apply(
                secs(t),
                Request::Heartbeat {
                    machine: b,
                    leases: vec![],
                },
            )
            .unwrap();
        store.apply(secs(t), Request::Reap { max: 100 }).unwrap();
    }
    assert_eq!(
        state(&store, j),
        StateName::Queued,
        "reaped and released after backoff"
    );
    let (again, new) = claim(&mut store, secs(61), b, 1, offer(1, 80)).unwrap();
    assert_eq!(again, j);
    assert!(new > old, "tokens only grow");
    assert_eq!(
        complete(&mut store, secs(62), j, old, Outcome::Succeeded),
        Err(Refusal::Stale { job: j, token: old })
    );
    assert_eq!(
        complete(&mut store, secs(62), j, new, Outcome::Succeeded),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
    assert_eq!(
        complete(&mut store, secs(63), j, new, Outcome::Succeeded),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
    assert_eq!(
        store.apply(
            secs(64),
            Request::Heartbeat {
                machine: a,
                leases: vec![]
            }
        ),
        Err(Refusal::MachineLost(a))
    );
}

#[test]
fn a_repeated_claim_returns_the_same_leases() {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 4, 80));
    for _ in 0..3 {
        submit(&mut store, secs(0), job(1, 8));
    }
    let claim_two = |store: &mut MemStore, seq| {
        store.apply(
            secs(1),
            Request::Claim {
                machine: m,
                seq,
                offer: offer(2, 80),
            },
        )
    };
    let first = claim_two(&mut store, 7).unwrap();
    let Reply::Claimed {
        grants,
        idle: false,
    } = &first
    else {
        panic!("{first:?}")
    };
    assert_eq!(
        grants.len(),
        2,
        "two GPUs offered, two one-GPU jobs granted"
    );
    assert_eq!(claim_two(&mut store, 7).unwrap(), first);
    assert_eq!(
        store.counts().leased,
        2,
        "the lost reply did not strand more leases"
    );
    let Ok(Reply::Claimed { grants, idle: true }) = claim_two(&mut store, 8) else {
        panic!()
    };
    assert_eq!(grants.len(), 1, "one job left; the rest of the offer waits");
}

#[test]
fn failures_retry_with_backoff_until_dead() {
    let (mut store, m, j) = one_machine_one_job(JobSpec {
        max_attempts: 2,
        ..job(1, 8)
    });
    let err = Outcome::Failed(Failure::Error {
        retryable: true,
        message: "x".into(),
    });
    let (_, t1) = claim(&mut store, secs(1), m, 1, offer(1, 80)).unwrap();
    complete(&mut store, secs(1), j, t1, err.clone()).unwrap();
    assert_eq!(state(&store, j), StateName::Delayed);
    assert_eq!(
        claim(&mut store, secs(1), m, 2, offer(1, 80)),
        None,
        "not before the backoff"
    );
    let (_, t2) = claim(&mut store, secs(4), m, 3, offer(1, 80)).expect("released within 2 s");
    assert_eq!(
        complete(&mut store, secs(4), j, t2, err),
        Ok(Reply::Recorded {
            state: StateName::Dead
        })
    );
}

#[test]
fn gpu_oom_raises_the_requirement_so_the_retry_goes_where_it_fits() {
    let mut store = MemStore::new(EngineConfig {
        backoff_base: Span::ZERO,
        ..config()
    });
    let small = register(&mut store, secs(0), machine("small", 1, 24));
    let big = register(&mut store, secs(0), machine("big", 1, 80));
    let j = submit(&mut store, secs(0), job(1, 16));
    let (_, t) = claim(&mut store, secs(1), small, 1, offer(1, 24)).unwrap();
    complete(
        &mut store,
        secs(2),
        j,
        t,
        Outcome::Failed(Failure::GpuOom { needed_gb: 40 }),
    )
    .unwrap();
    assert_eq!(claim(&mut store, secs(3), small, 2, offer(1, 24)), None);
    assert_eq!(
        claim(&mut store, secs(3), big, 1, offer(1, 80)).map(|(j, _)| j),
        Some(j)
    );
}

#[test]
fn leases_expire_without_heartbeats_and_timeouts_end_timed_out() {
    let (mut store, m, j) = one_machine_one_job(JobSpec {
        max_attempts: 1,
        timeout: Span::from_secs(20),
        ..job(1, 8)
    });
    let (_, token) = claim(&mut store, secs(0), m, 1, offer(1, 80)).unwrap();
    let renewed = store.apply(
        secs(10),
        Request::Heartbeat {
            machine: m,
            leases: vec![LeaseRef { job: j, token }],
        },
    );
    assert!(
        matches!(renewed, Ok(Reply::Heartbeat { ref leases }) if matches!(leases[0], LeaseStatus::Renewed { .. }))
    );
    let late = store.apply(
        secs(20),
        Request::Heartbeat {
            machine: m,
            leases: vec![LeaseRef { job: j, token }],
        },
    );
    assert_eq!(
        late,
        Ok(Reply::Heartbeat {
            leases: vec![LeaseStatus::Revoked]
        })
    );
    assert_eq!(state(&store, j), StateName::TimedOut);
}

#[test]
fn unworkable_only_after_the_window_and_only_with_machines_seen() {
    let window = Span::from_secs(600);
    let mut store = MemStore::new(EngineConfig {
        unworkable_after: window,
        ..config()
    });
    let early = submit(&mut store, secs(0), job(1, 8));
    store.apply(secs(700), Request::Reap { max: 100 }).unwrap();
    assert_eq!(
        state(&store, early),
        StateName::Queued,
        "no machine seen: no verdict"
    );
    let m = register(&mut store, secs(700), machine("small", 1, 24));
    let huge = submit(&mut store, secs(700), job(1, 200));
    store
        .apply(
            secs(1000),
            Request::Heartbeat {
                machine: m,
                leases: vec![],
            },
        )
        .unwrap();
    store.apply(secs(1000), Request::Reap { max: 100 }).unwrap();
    assert_eq!(
        state(&store, huge),
        StateName::Queued,
        "has not waited the window yet"
    );
    store
        .apply(
            secs(1300),
            Request::Heartbeat {
                machine: m,
                leases: vec![],
            },
        )
        .unwrap();
    store.apply(secs(1300), Request::Reap { max: 100 }).unwrap();
    assert_eq!(state(&store, huge), StateName::Unworkable);
    assert_eq!(
        state(&store, early),
        StateName::Queued,
        "an 8 GB job fits the small machine"
    );
}

#[test]
fn idle_machines_are_woken_by_a_fitting_submission() {
    let mut store = MemStore::new(config());
    let small = register(&mut store, secs(0), machine("small", 1, 24));
    let big = register(&mut store, secs(0), machine("big", 1, 80));
    assert_eq!(claim(&mut store, secs(0), small, 1, offer(1, 24)), None);
    assert_eq!(claim(&mut store, secs(0), big, 1, offer(1, 80)), None);
    submit(&mut store, secs(1), job(1, 40));
    assert_eq!(store.drain_wakes().collect::<Vec<_>>(), vec![big]);
    submit(&mut store, secs(1), job(1, 8));
    assert_eq!(store.drain_wakes().collect::<Vec<_>>(), vec![small]);
    submit(&mut store, secs(1), job(1, 8));
    assert_eq!(store.drain_wakes().count(), 0, "nobody left waiting");
}

#[test]
fn cancel_ends_any_live_state_once() {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 1, 80));
    let queued = submit(&mut store, secs(0), job(1, 8));
    let leased = submit(&mut store, secs(0), job(1, 8));
    let (got, token) = claim(&mut store, secs(0), m, 1, offer(1, 80)).unwrap();
    assert_eq!(got, queued);
    store
        .apply(secs(1), Request::Cancel { job: queued })
        .unwrap();
    assert_eq!(state(&store, queued), StateName::Cancelled);
    assert_eq!(
        complete(&mut store, secs(2), queued, token, Outcome::Succeeded),
        Err(Refusal::Stale { job: queued, token })
    );
    assert!(store
        .apply(secs(2), Request::Cancel { job: leased })
        .is_ok());
    assert!(
        store
            .apply(secs(2), Request::Cancel { job: leased })
            .is_ok(),
        "repeat is harmless"
    );
}

#[test]
fn idempotency_keys_return_the_first_job_until_purged() {
    let mut store = MemStore::new(EngineConfig {
        retention: Span::from_secs(60),
        ..config()
    });
    let keyed = || JobSpec {
        idempotency_key: Some("k".into()),
        ..job(0, 0)
    };
    let first = submit(&mut store, secs(0), keyed());
    assert_eq!(
        store.apply(secs(1), Request::Submit(Box::new(keyed()))),
        Ok(Reply::Submitted {
            job: first,
            created: false
        })
    );
    store
        .apply(secs(2), Request::Cancel { job: first })
        .unwrap();
    store.apply(secs(100), Request::Reap { max: 100 }).unwrap();
    assert_eq!(store.job_state(first), None, "purged after retention");
    assert_ne!(submit(&mut store, secs(101), keyed()), first);
}

#[test]
fn limits_refuse_with_the_limit_named() {
    let limits = crate::core::config::Limits {
        max_jobs: 1,
        ..Default::default()
    };
    let mut store = MemStore::new(EngineConfig { limits, ..config() });
    submit(&mut store, secs(0), job(1, 8));
    assert_eq!(
        store.apply(secs(0), Request::Submit(Box::new(job(1, 8)))),
        Err(Refusal::Full {
            what: "jobs",
            limit: 1
        })
    );
}

#[test]
fn release_returns_the_job_without_charging_an_attempt() {
    let (mut store, m, j) = one_machine_one_job(JobSpec {
        max_attempts: 1,
        ..job(1, 8)
    });
    let (_, token) = claim(&mut store, secs(0), m, 1, offer(1, 80)).unwrap();
    assert_eq!(
        store.apply(secs(1), Request::Release { job: j, token }),
        Ok(Reply::Released)
    );
    assert_eq!(
        store.apply(secs(1), Request::Release { job: j, token }),
        Ok(Reply::Released)
    );
    let (_, again) = claim(&mut store, secs(2), m, 2, offer(1, 80)).unwrap();
    assert_eq!(
        complete(&mut store, secs(3), j, again, Outcome::Succeeded),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
}

#[test]
fn progress_listings_and_stats() {
    let mut store = MemStore::new(config());
    let m = register(&mut store, secs(0), machine("a", 1, 80));
    let first = submit(&mut store, secs(0), job(1, 8));
    let second = submit(&mut store, secs(0), job(1, 8));
    let (_, token) = claim(&mut store, secs(1), m, 1, offer(1, 80)).unwrap();
    let noted = store.apply(
        secs(2),
        Request::Progress {
            job: first,
            token,
            percent: 150,
            message: "x".repeat(1000),
        },
    );
    assert_eq!(noted, Ok(Reply::ProgressNoted));
    let stale = store.apply(
        secs(2),
        Request::Progress {
            job: first,
            token: Token(1),
            percent: 1,
            message: String::new(),
        },
    );
    assert_eq!(
        stale,
        Err(Refusal::Stale {
            job: first,
            token: Token(1)
        })
    );
    let Ok(Reply::Job(view)) = store.apply(secs(2), Request::Get { job: first }) else {
        panic!()
    };
    let progress = view.progress.expect("kept");
    assert_eq!((progress.percent, progress.message.len()), (100, 256));

    let Ok(Reply::Jobs(queued)) = store.apply(
        secs(2),
        Request::ListJobs {
            state: Some(StateName::Queued),
            after: None,
            limit: 10,
        },
    ) else {
        panic!()
    };
    assert_eq!(
        queued.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![second]
    );
    let Ok(Reply::Jobs(after)) = store.apply(
        secs(2),
        Request::ListJobs {
            state: None,
            after: Some(first),
            limit: 10,
        },
    ) else {
        panic!()
    };
    assert_eq!(after.len(), 1);

    complete(&mut store, secs(3602), first, token, Outcome::Succeeded).unwrap();
    let Ok(Reply::Stats(stats)) = store.apply(secs(3602), Request::Stats) else {
        panic!()
    };
    assert_eq!(stats.totals.submitted, 2);
    assert_eq!(stats.totals.retries, 0);
    assert_eq!(stats.totals.succeeded, 1);
    assert_eq!(stats.jobs.queued, 1);
    assert_eq!(stats.classes.len(), 1);
    assert_eq!(stats.classes[0].queued, 1);
    assert_eq!(
        stats.machines.get("lost").copied().unwrap_or(0) + stats.machines["ready"],
        1
    );
    assert!(
        (stats.spend - 1.5 / 3600.0).abs() < 1e-9,
        "machine a last seen at 1 s: {}",
        stats.spend
    );
    let Ok(Reply::Machines(machines)) =
        store.apply(secs(3602), Request::ListMachines { limit: 10 })
    else {
        panic!()
    };
    assert_eq!(machines[0].name, "a");
}
