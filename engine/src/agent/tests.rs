use super::*;
use crate::core::{Requirements, Span, StateName};
use crate::store::MemStore;

fn config() -> EngineConfig {
    EngineConfig {
        request_timeout: Span::from_secs(1),
        breaker_failures: 3,
        breaker_cooldown: Span::from_secs(5),
        ..EngineConfig::default()
    }
}

fn spec(gpus: u32) -> MachineSpec {
    MachineSpec {
        name: "m1".into(),
        pool: "p".into(),
        gpus,
        gpu_model: "A100".into(),
        gpu_mem_gb: 80,
        disk_gb: 100,
        labels: Default::default(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    }
}

/// Runs the agent's actions against the store until it goes quiet; returns the non-send
/// actions. With `reachable` false every request is lost.
fn pump(agent: &mut Agent, store: &mut MemStore, now: Time, reachable: bool) -> Vec<Action> {
    let mut other = Vec::new();
    while let Some(action) = agent.poll_action() {
        match action {
            Action::Send { id, request } if reachable => {
                let result = store.apply(now, request);
                agent.handle(now, Input::Reply { id, result });
                let me = agent.machine();
                if store.drain_wakes().any(|m| Some(m) == me) {
                    agent.handle(now, Input::Wake);
                }
            }
            Action::Send { .. } => {}
            action => other.push(action),
        }
    }
    other
}

fn submit(store: &mut MemStore, now: Time, gpus: u32) -> JobId {
    let spec = JobSpec::new(
        "sleep",
        Arc::new(Requirements {
            gpus,
            ..Default::default()
        }),
    );
    match store.apply(now, Request::Submit(Box::new(spec))) {
        Ok(Reply::Submitted { job, .. }) => job,
        other => panic!("{other:?}"),
    }
}

fn started(actions: &[Action]) -> Vec<JobId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { job, .. } => Some(*job),
            _ => None,
        })
        .collect()
}

#[test]
fn registers_claims_runs_reports_and_waits_for_a_wake_up() {
    let config = Arc::new(config());
    let mut store = MemStore::new((*config).clone());
    let t0 = Time(0);
    let a = submit(&mut store, t0, 1);
    let b = submit(&mut store, t0, 1);
    let mut agent = Agent::new(config.clone(), spec(2), ModelSet::EMPTY, 1, t0);
    let actions = pump(&mut agent, &mut store, t0, true);
    assert_eq!(started(&actions), vec![a, b], "two GPUs, two jobs at once");
    agent.handle(
        Time(5),
        Input::JobFinished {
            job: a,
            outcome: Outcome::Succeeded,
            result: None,
        },
    );
    pump(&mut agent, &mut store, Time(5), true);
    assert_eq!(
        store.job_state(a).map(|s| s.name()),
        Some(StateName::Succeeded)
    );
    assert!(agent.is_idle(), "no work left: waiting, not polling");
    let c = submit(&mut store, Time(6), 1);
    agent.handle(Time(6), Input::Wake);
    assert_eq!(
        started(&pump(&mut agent, &mut store, Time(6), true)),
        vec![c]
    );
}

#[test]
fn outcomes_survive_an_outage_and_the_breaker_opens_then_recovers() {
    let long_leases = EngineConfig {
        lease_ttl: Span::from_secs(120),
        machine_ttl: Span::from_secs(120),
        ..config()
    };
    let config = Arc::new(long_leases);
    let mut store = MemStore::new((*config).clone());
    let j = submit(&mut store, Time(0), 1);
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, Time(0));
    pump(&mut agent, &mut store, Time(0), true);
    agent.handle(
        Time(1),
        Input::JobFinished {
            job: j,
            outcome: Outcome::Succeeded,
            result: None,
        },
    );
    pump(&mut agent, &mut store, Time(1), false);
    let mut now = Time(1);
    for _ in 0..10 {
        now = agent.next_timeout().unwrap().max(now);
        agent.on_timeout(now);
        pump(&mut agent, &mut store, now, false);
    }
    assert!(
        agent.link().breaker_opened() >= 1,
        "repeated failures open the breaker"
    );
    assert_eq!(
        store.job_state(j).map(|s| s.name()),
        Some(StateName::Leased)
    );
    // The store is back within the lease TTL: the kept outcome lands.
    for _ in 0..3 {
        now = agent.next_timeout().unwrap();
        agent.on_timeout(now);
        pump(&mut agent, &mut store, now, true);
    }
    assert!(now < Time::ZERO.plus(config.lease_ttl));
    assert_eq!(
        store.job_state(j).map(|s| s.name()),
        Some(StateName::Succeeded)
    );
}

#[test]
fn a_revoked_lease_stops_the_job_and_a_late_outcome_is_refused() {
    let config = Arc::new(config());
    let mut store = MemStore::new((*config).clone());
    let j = submit(&mut store, Time(0), 1);
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, Time(0));
    pump(&mut agent, &mut store, Time(0), true);
    store.apply(Time(1), Request::Cancel { job: j }).unwrap();
    let now = agent.next_timeout().unwrap();
    agent.on_timeout(now);
    let actions = pump(&mut agent, &mut store, now, true);
    assert!(actions.contains(&Action::Stop { job: j }), "{actions:?}");
    assert_eq!(agent.running().count(), 0);
    agent.handle(
        now,
        Input::JobFinished {
            job: j,
            outcome: Outcome::Succeeded,
            result: None,
        },
    );
    assert_eq!(
        agent.outbox_len(),
        0,
        "a stopped job's outcome is not reported"
    );
}

#[test]
fn timeouts_stop_the_job_and_report_timed_out() {
    let config = Arc::new(config());
    let mut store = MemStore::new((*config).clone());
    let mut spec_ = JobSpec::new(
        "sleep",
        Arc::new(Requirements {
            gpus: 1,
            ..Default::default()
        }),
    );
    spec_.timeout = Span::from_secs(3);
    spec_.max_attempts = 1;
    let Ok(Reply::Submitted { job, .. }) = store.apply(Time(0), Request::Submit(Box::new(spec_)))
    else {
        panic!()
    };
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, Time(0));
    pump(&mut agent, &mut store, Time(0), true);
    let at = Time(3_000_000);
    assert_eq!(agent.next_timeout(), Some(at));
    agent.on_timeout(at);
    let actions = pump(&mut agent, &mut store, at, true);
    assert!(actions.contains(&Action::Stop { job }));
    assert_eq!(
        store.job_state(job).map(|s| s.name()),
        Some(StateName::TimedOut)
    );
}

#[test]
fn a_full_disk_evicts_models_then_drains() {
    let mut config = config();
    config.models = vec![crate::core::config::CatalogModel {
        name: "sd".into(),
        size_gb: 30,
    }];
    let config = Arc::new(config);
    let mut store = MemStore::new((*config).clone());
    let cached = ModelSet::EMPTY.with(ModelId(0));
    let mut agent = Agent::new(config.clone(), spec(1), cached, 1, Time(0));
    pump(&mut agent, &mut store, Time(0), true);
    agent.handle(Time(1), Input::ForeignDisk { gb: 80 });
    let actions = pump(&mut agent, &mut store, Time(1), true);
    assert!(
        actions.contains(&Action::Evicted { model: ModelId(0) }),
        "{actions:?}"
    );
    assert!(!actions.contains(&Action::Left), "20 GB are still free");
    agent.handle(Time(2), Input::ForeignDisk { gb: 100 });
    let mut actions = pump(&mut agent, &mut store, Time(2), true);
    while !actions.contains(&Action::Left) {
        let now = agent.next_timeout().expect("draining agent has work");
        agent.on_timeout(now);
        actions = pump(&mut agent, &mut store, now, true);
    }
    assert_eq!(agent.next_timeout(), None);
}

#[test]
fn outcomes_handed_over_together_travel_in_one_batch() {
    let config = Arc::new(config());
    let mut store = MemStore::new((*config).clone());
    let t0 = Time(0);
    let jobs: Vec<JobId> = (0..8).map(|_| submit(&mut store, t0, 1)).collect();
    let mut agent = Agent::new(config.clone(), spec(4), ModelSet::EMPTY, 1, t0);
    let first = started(&pump(&mut agent, &mut store, t0, true));
    assert_eq!(first, jobs[..4], "four GPUs, four jobs");
    let finished = first.iter().map(|&job| Input::JobFinished {
        job,
        outcome: Outcome::Succeeded,
        result: None,
    });
    agent.handle_all(Time(5), finished);
    let Some(Action::Send { request, .. }) = agent.poll_action() else {
        panic!("one request after the outcomes")
    };
    let Request::Batch(batch) = request else {
        panic!("outcomes and a claim in one batch: {request:?}")
    };
    let completes = batch
        .iter()
        .filter(|r| matches!(r, Request::Complete { .. }))
        .count();
    assert_eq!(completes, 4, "every outcome in the one batch: {batch:?}");
    let offered = batch.iter().find_map(|r| match r {
        Request::Claim { offer, .. } => Some(offer.free_gpus),
        _ => None,
    });
    assert_eq!(offered, Some(4), "the claim offers every freed GPU");
    assert!(agent.poll_action().is_none(), "nothing sent on its own");
}

/// The next request the agent puts on the wire, if any.
fn next_send(agent: &mut Agent) -> Option<(u64, Request)> {
    std::iter::from_fn(|| agent.poll_action()).find_map(|a| match a {
        Action::Send { id, request } => Some((id, request)),
        _ => None,
    })
}

#[test]
fn a_fault_is_reported_once_and_not_resent_as_if_lost() {
    let config = Arc::new(config());
    let t0 = Time(0);
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, t0);
    agent.handle(t0, Input::Wake);
    let (id, request) = next_send(&mut agent).expect("the agent registers first");
    assert_eq!(request.kind(), "register");
    let fault = Input::StoreFault {
        id,
        message: "script error".into(),
    };
    agent.handle(t0, fault);
    let faults: Vec<Action> = std::iter::from_fn(|| agent.poll_action()).collect();
    assert_eq!(
        faults,
        vec![Action::StoreFault {
            request: "register",
            message: "script error".into()
        }],
        "reported once, and nothing sent at once"
    );
    assert_eq!(agent.stats.store_faults, 1);
    // Not a lost reply: a request timeout finds nothing in flight to resend...
    agent.on_timeout(t0.plus(config.request_timeout));
    assert!(
        next_send(&mut agent).is_none(),
        "no resend at the request timeout"
    );
    // ...and the next request waits out a backoff: retry_max, with equal jitter.
    let resume = agent
        .next_timeout()
        .expect("the agent waits for its backoff");
    let half = Span::from_micros(config.retry_max.as_micros() / 2);
    assert!(resume >= t0.plus(half), "{resume:?}");
    agent.on_timeout(resume);
    let (_, again) = next_send(&mut agent).expect("it tries again after the backoff");
    assert_eq!(again.kind(), "register");
}

fn catalog(sizes: &[(&str, u32)]) -> EngineConfig {
    let mut config = config();
    config.models = sizes
        .iter()
        .map(|&(name, size_gb)| crate::core::config::CatalogModel {
            name: name.into(),
            size_gb,
        })
        .collect();
    config
}

fn submit_needing(store: &mut MemStore, now: Time, models: ModelSet) -> JobId {
    let requirements = Requirements {
        gpus: 1,
        models,
        ..Default::default()
    };
    let spec = JobSpec::new("sleep", Arc::new(requirements));
    match store.apply(now, Request::Submit(Box::new(spec))) {
        Ok(Reply::Submitted { job, .. }) => job,
        other => panic!("{other:?}"),
    }
}

/// The offer of the first claim among `actions`' sends.
fn claimed_offer(agent: &mut Agent) -> Option<Offer> {
    fn offer_in(request: &Request) -> Option<Offer> {
        match request {
            Request::Claim { offer, .. } => Some(*offer),
            Request::Batch(requests) => requests.iter().find_map(offer_in),
            _ => None,
        }
    }
    std::iter::from_fn(|| agent.poll_action()).find_map(|action| match action {
        Action::Send { request, .. } => offer_in(&request),
        _ => None,
    })
}

#[test]
fn making_room_for_a_job_never_evicts_the_models_it_needs() {
    let config = Arc::new(catalog(&[("a", 30), ("b", 30), ("c", 50)]));
    let mut store = MemStore::new((*config).clone());
    let (a, b, c) = (ModelId(0), ModelId(1), ModelId(2));
    let job = submit_needing(&mut store, Time(0), ModelSet::EMPTY.with(a).with(c));
    let cached = ModelSet::EMPTY.with(a).with(b);
    let mut agent = Agent::new(config.clone(), spec(1), cached, 1, Time(0));
    let actions = pump(&mut agent, &mut store, Time(0), true);
    // 40 GB free, c needs 50: one of the equally old a and b must go, and a is the job's.
    assert!(
        actions.contains(&Action::Evicted { model: b }),
        "{actions:?}"
    );
    assert!(
        !actions.contains(&Action::Evicted { model: a }),
        "{actions:?}"
    );
    let download = actions.iter().find_map(|action| match action {
        Action::Start {
            job: started,
            download,
            ..
        } if *started == job => Some(*download),
        _ => None,
    });
    assert_eq!(download, Some(ModelSet::EMPTY.with(c)));
    assert_eq!(agent.stats.disk_refusals, 0);
}

#[test]
fn a_model_whose_fetch_failed_is_no_longer_advertised() {
    let config = Arc::new(catalog(&[("a", 10)]));
    let mut store = MemStore::new((*config).clone());
    let a = ModelId(0);
    let job = submit_needing(&mut store, Time(0), ModelSet::EMPTY.with(a));
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, Time(0));
    let actions = pump(&mut agent, &mut store, Time(0), true);
    assert_eq!(started(&actions), vec![job]);
    agent.take_in(Time(1), Input::ModelGone { model: a });
    let outcome = Outcome::Failed(Failure::DiskFull);
    let finished = Input::JobFinished {
        job,
        outcome,
        result: None,
    };
    agent.handle(Time(1), finished);
    let offer = claimed_offer(&mut agent).expect("a free machine claims");
    assert_eq!(offer.cached, ModelSet::EMPTY, "{offer:?}");
    assert_eq!(offer.free_disk_gb, 100, "the model's space is free again");
}

#[test]
fn a_grant_whose_models_cannot_fit_fails_as_disk_full_and_is_counted() {
    let config = Arc::new(catalog(&[("a", 60)]));
    let mut store = MemStore::new((*config).clone());
    let mut agent = Agent::new(config.clone(), spec(1), ModelSet::EMPTY, 1, Time(0));
    pump(&mut agent, &mut store, Time(0), true);
    agent.handle(Time(1), Input::Wake);
    let (id, request) = next_send(&mut agent).expect("a woken agent claims");
    assert!(matches!(request, Request::Claim { .. }), "{request:?}");
    // The disk fills while the claim is on its way: the grant made on the older offer no
    // longer fits, and the agent fails it as a full disk rather than overfill.
    agent.take_in(Time(1), Input::ForeignDisk { gb: 50 });
    let requirements = Requirements {
        gpus: 1,
        models: ModelSet::EMPTY.with(ModelId(0)),
        ..Default::default()
    };
    let grant = Grant {
        job: JobId(7),
        token: Token(1),
        attempt: 1,
        deadline: Time(1_000_000_000),
        spec: Arc::new(JobSpec::new("sleep", Arc::new(requirements))),
    };
    let result = Ok(Reply::Claimed {
        grants: vec![grant],
        idle: false,
    });
    agent.handle(Time(1), Input::Reply { id, result });
    let mut outcome = None;
    while let Some(action) = agent.poll_action() {
        assert!(!matches!(action, Action::Start { .. }), "{action:?}");
        if let Action::Send { request, .. } = action {
            outcome = outcome.or(complete_in(&request));
        }
    }
    assert_eq!(outcome, Some(Outcome::Failed(Failure::DiskFull)));
    assert_eq!(agent.stats.disk_refusals, 1);
}

fn complete_in(request: &Request) -> Option<Outcome> {
    match request {
        Request::Complete { outcome, .. } => Some(outcome.clone()),
        Request::Batch(requests) => requests.iter().find_map(complete_in),
        _ => None,
    }
}
