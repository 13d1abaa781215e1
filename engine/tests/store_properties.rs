//! Property tests on `MemStore`: random sequences of requests, applied with history recording
//! on, must keep every invariant the checker knows, keep the store's counts exact, fence
//! stale tokens, answer repeats idempotently, never grant more than an offer holds, and lose
//! no job once every machine has gone silent.

use drover_engine::check::{Checker, HistoryEvent};
use drover_engine::core::{
    EngineConfig, Failure, JobId, JobSpec, JobState, MachineId, MachineSpec, Offer, Outcome,
    Requirements, Span, StateName, Time, Token,
};
use drover_engine::store::mem::JobCounts;
use drover_engine::store::{LeaseRef, LeaseStatus, MemStore, Refusal, Reply, Request};
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

const MACHINES: usize = 4;
const KEYS: u8 = 5;
/// Offers always have this much disk; jobs ask for none, so disk never decides a fit.
const DISK_GB: u32 = 100;

/// Short windows, so that unworkable judgement and purging happen within a run.
fn config() -> EngineConfig {
    let config = EngineConfig {
        retention: Span::from_secs(300),
        unworkable_after: Span::from_secs(180),
        ..EngineConfig::default()
    };
    config.validate().expect("valid test config");
    config
}

// ---------------------------------------------------------------------------------------------
// Operations, as generated: indices are resolved against the driver's model when applied.

#[derive(Clone, Copy, Debug)]
enum OutcomeKind {
    Succeeded,
    Retryable,
    Fatal,
    GpuOom(u32),
    TimedOut,
}

impl OutcomeKind {
    fn outcome(self) -> Outcome {
        match self {
            OutcomeKind::Succeeded => Outcome::Succeeded,
            OutcomeKind::Retryable => Outcome::Failed(Failure::Error {
                retryable: true,
                message: "flaky".into(),
            }),
            OutcomeKind::Fatal => Outcome::Failed(Failure::Error {
                retryable: false,
                message: "bad input".into(),
            }),
            OutcomeKind::GpuOom(needed_gb) => Outcome::Failed(Failure::GpuOom { needed_gb }),
            OutcomeKind::TimedOut => Outcome::Failed(Failure::TimedOut),
        }
    }
}

/// Which token a `Complete` or `Release` carries.
#[derive(Clone, Copy, Debug)]
enum TokenPick {
    /// A lease the driver believes some machine holds.
    Held(usize),
    /// Any token ever granted (often an old one).
    Old(usize),
    /// A token never granted for that job.
    Bogus(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Advance {
        ms: u64,
    },
    Submit {
        gpus: u32,
        mem: u32,
        priority: u8,
        max_attempts: u32,
        timeout_s: u64,
        key: Option<u8>,
    },
    Register {
        m: usize,
        gpus: u32,
        mem: u32,
    },
    Heartbeat {
        m: usize,
    },
    Claim {
        m: usize,
        repeat_seq: bool,
    },
    Complete {
        pick: TokenPick,
        outcome: OutcomeKind,
        twice: bool,
    },
    Release {
        pick: TokenPick,
        twice: bool,
    },
    Cancel {
        job: u64,
    },
    Deregister {
        m: usize,
    },
    Reap {
        max: u32,
    },
}

fn outcome_strategy() -> impl Strategy<Value = OutcomeKind> {
    prop_oneof![
        3 => Just(OutcomeKind::Succeeded),
        2 => Just(OutcomeKind::Retryable),
        1 => Just(OutcomeKind::Fatal),
        1 => prop::sample::select(vec![8u32, 24, 48, 80, 100]).prop_map(OutcomeKind::GpuOom),
        1 => Just(OutcomeKind::TimedOut),
    ]
}

fn token_pick_strategy() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        6 => any::<usize>().prop_map(TokenPick::Held),
        3 => any::<usize>().prop_map(TokenPick::Old),
        1 => any::<usize>().prop_map(TokenPick::Bogus),
    ]
}

/// How machines register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Profiles {
    /// Each machine always registers with the profile its index fixes.
    Stable,
    /// A machine registers with a random profile each time, leaving first when it changes
    /// (as a machine whose hardware changed would rejoin).
    ChangeAfterLeaving,
    /// A machine registers with a random profile each time, even while registered.
    Change,
}

fn op_strategy(profiles: Profiles) -> impl Strategy<Value = Op> {
    let machine = 0..MACHINES;
    let register = (machine.clone(), 1u32..=8, prop::bool::ANY).prop_map(move |(m, gpus, big)| {
        if profiles == Profiles::Stable {
            let (gpus, mem) = stable_profile(m);
            Op::Register { m, gpus, mem }
        } else {
            Op::Register {
                m,
                gpus,
                mem: if big { 80 } else { 24 },
            }
        }
    });
    prop_oneof![
        // Mostly within a heartbeat, sometimes past every lease and machine.
        3 => prop_oneof![4 => 0u64..=10_000, 1 => 10_000u64..=120_000]
            .prop_map(|ms| Op::Advance { ms }),
        5 => (
            0u32..=4,
            prop::sample::select(vec![0u32, 8, 24, 80]),
            0u8..=100,
            1u32..=4,
            prop_oneof![Just(0u64), 5u64..600],
            prop::option::weighted(0.5, 0..KEYS),
        )
            .prop_map(|(gpus, mem, priority, max_attempts, timeout_s, key)| Op::Submit {
                gpus,
                mem,
                priority,
                max_attempts,
                timeout_s,
                key,
            }),
        2 => register,
        4 => machine.clone().prop_map(|m| Op::Heartbeat { m }),
        6 => (machine.clone(), prop::bool::weighted(0.2))
            .prop_map(|(m, repeat_seq)| Op::Claim { m, repeat_seq }),
        5 => (token_pick_strategy(), outcome_strategy(), prop::bool::weighted(0.2))
            .prop_map(|(pick, outcome, twice)| Op::Complete { pick, outcome, twice }),
        1 => (token_pick_strategy(), prop::bool::weighted(0.2))
            .prop_map(|(pick, twice)| Op::Release { pick, twice }),
        1 => (0u64..64).prop_map(|job| Op::Cancel { job }),
        1 => machine.prop_map(|m| Op::Deregister { m }),
        2 => prop_oneof![Just(1000u32), 1u32..8].prop_map(|max| Op::Reap { max }),
    ]
}

fn stable_profile(m: usize) -> (u32, u32) {
    [(1, 24), (2, 80), (4, 24), (8, 80)][m % 4]
}

// ---------------------------------------------------------------------------------------------
// The driver: what each machine believes, and what the store must have answered.

#[derive(Clone, Copy, Debug)]
struct Held {
    job: JobId,
    token: Token,
    gpus: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Registration {
    Never,
    /// Registered; the store may have declared it lost since.
    Ready(MachineId),
    /// Deregistered by the driver.
    Gone(MachineId),
}

/// A claim's seq, the (job, token) pairs it granted, and whether it left the machine idle.
type LastClaim = (u64, Vec<(JobId, Token)>, bool);

#[derive(Clone, Debug)]
struct MachineModel {
    registration: Registration,
    gpus: u32,
    mem: u32,
    seq: u64,
    /// What the store remembers of this machine's last claim (reset by `Register`).
    last_claim: Option<LastClaim>,
    held: Vec<Held>,
}

impl MachineModel {
    fn id(&self, m: usize) -> MachineId {
        match self.registration {
            Registration::Ready(id) | Registration::Gone(id) => id,
            // Never issued: machine ids follow the store clock, which stays far below this.
            Registration::Never => MachineId(u64::MAX - m as u64),
        }
    }
}

/// What the driver learned from one grant.
#[derive(Clone, Copy, Debug)]
struct GrantInfo {
    attempt: u32,
    max_attempts: u32,
    /// When the attempt runs out of time (granted at + the job's timeout).
    attempt_deadline: Time,
}

struct Driver {
    store: MemStore,
    checker: Checker,
    now: Time,
    machines: Vec<MachineModel>,
    /// Ids issued so far are 1..next_job.
    next_job: u64,
    keys: HashMap<String, JobId>,
    /// Every (job, token) ever granted, in grant order.
    granted: Vec<(JobId, Token)>,
    grants: HashMap<(JobId, Token), GrantInfo>,
    max_token: HashMap<JobId, Token>,
    /// The token whose `Complete` or `Release` the store recorded last, per job.
    recorded: HashMap<JobId, Token>,
    lease_ttl: Span,
    profiles: Profiles,
}

type Snapshot = (Vec<Option<JobState>>, JobCounts);

impl Driver {
    fn new(profiles: Profiles) -> Driver {
        let mut store = MemStore::new(config());
        store.record_history();
        let lease_ttl = store.config().lease_ttl;
        Driver {
            store,
            checker: Checker::new(),
            now: Time::ZERO,
            machines: (0..MACHINES)
                .map(|_| MachineModel {
                    registration: Registration::Never,
                    gpus: 0,
                    mem: 0,
                    seq: 0,
                    last_claim: None,
                    held: Vec::new(),
                })
                .collect(),
            next_job: 1,
            keys: HashMap::new(),
            granted: Vec::new(),
            grants: HashMap::new(),
            max_token: HashMap::new(),
            recorded: HashMap::new(),
            lease_ttl,
            profiles,
        }
    }

    fn apply(&mut self, request: Request) -> Result<Reply, Refusal> {
        self.store.apply(self.now, request)
    }

    fn snapshot(&self) -> Snapshot {
        let states = (1..self.next_job)
            .map(|j| self.store.job_state(JobId(j)))
            .collect();
        (states, self.store.counts())
    }

    /// Feeds the store's new history to the checker; returns how many events there were.
    fn observe(&mut self) -> usize {
        let events: Vec<HistoryEvent> = self.store.drain_history().collect();
        for event in &events {
            self.checker.observe(event);
        }
        events.len()
    }

    /// Invariants 1 and 2, after every step.
    fn check_step(&mut self, what: &str) {
        self.observe();
        assert!(
            self.checker.violations().is_empty(),
            "after {what}: checker violations {:#?}",
            self.checker.violations()
        );
        let mut derived = JobCounts::default();
        for j in 1..self.next_job {
            match self.store.job_state(JobId(j)) {
                None => {}
                Some(JobState::Queued) => derived.queued += 1,
                Some(JobState::Delayed { .. }) => derived.delayed += 1,
                Some(JobState::Leased { .. }) => derived.leased += 1,
                Some(_) => derived.finished_retained += 1,
            }
        }
        assert_eq!(self.store.counts(), derived, "after {what}: counts drifted");
        // The store's indexes agree with its records (`store::dump`'s checks).
        let anomalies = self.store.dump().anomalies;
        assert!(
            anomalies.is_empty(),
            "after {what}: the store's state does not add up: {anomalies:#?}"
        );
        let registered: Vec<MachineId> = self
            .machines
            .iter()
            .filter_map(|m| match m.registration {
                Registration::Ready(id) | Registration::Gone(id) => Some(id),
                Registration::Never => None,
            })
            .collect();
        let wakes: Vec<MachineId> = self.store.drain_wakes().collect();
        for woken in wakes {
            assert!(
                registered.contains(&woken),
                "after {what}: woke {woken:?}, which never registered"
            );
        }
    }

    /// A refusal about the machine itself, checked against what the driver knows of it.
    fn check_machine_refusal(&mut self, m: usize, refusal: &Refusal) {
        let id = self.machines[m].id(m);
        match (self.machines[m].registration, refusal) {
            (Registration::Never, Refusal::UnknownMachine(got)) if *got == id => {}
            (
                Registration::Ready(_) | Registration::Gone(_),
                Refusal::MachineLost(got) | Refusal::UnknownMachine(got),
            ) if *got == id => {
                // Lost or gone (and, after `retention`, forgotten): the agent stops everything
                // it was running, and registers again.
                self.machines[m].held.clear();
            }
            (registration, refusal) => {
                panic!("machine {m} ({registration:?}) refused with {refusal:?}")
            }
        }
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Advance { ms } => self.now = self.now.plus(Span::from_millis(ms)),
            Op::Submit {
                gpus,
                mem,
                priority,
                max_attempts,
                timeout_s,
                key,
            } => self.submit(gpus, mem, priority, max_attempts, timeout_s, key),
            Op::Register { m, gpus, mem } => self.register(m, gpus, mem),
            Op::Heartbeat { m } => self.heartbeat(m),
            Op::Claim { m, repeat_seq } => self.claim(m, repeat_seq),
            Op::Complete {
                pick,
                outcome,
                twice,
            } => {
                if let Some((job, token)) = self.pick(pick) {
                    let outcome = outcome.outcome();
                    self.complete(job, token, outcome.clone());
                    if twice {
                        self.complete(job, token, outcome);
                    }
                }
            }
            Op::Release { pick, twice } => {
                if let Some((job, token)) = self.pick(pick) {
                    self.release(job, token);
                    if twice {
                        self.release(job, token);
                    }
                }
            }
            Op::Cancel { job } => self.cancel(JobId(job % (self.next_job + 1))),
            Op::Deregister { m } => self.deregister(m),
            Op::Reap { max } => {
                let reply = self.apply(Request::Reap { max });
                assert!(matches!(reply, Ok(Reply::Reaped(_))), "{reply:?}");
            }
        }
        self.check_step(&format!("{op:?}"));
    }

    fn pick(&self, pick: TokenPick) -> Option<(JobId, Token)> {
        let held: Vec<Held> = self.machines.iter().flat_map(|m| m.held.clone()).collect();
        match pick {
            TokenPick::Held(i) if !held.is_empty() => {
                let h = held[i % held.len()];
                Some((h.job, h.token))
            }
            TokenPick::Held(i) | TokenPick::Old(i) if !self.granted.is_empty() => {
                Some(self.granted[i % self.granted.len()])
            }
            TokenPick::Bogus(i) if !self.granted.is_empty() => {
                let (job, _) = self.granted[i % self.granted.len()];
                // Above every token granted so far for the job: never a live one.
                let max = self.max_token[&job];
                Some((job, Token(max.0 + 1 + (i as u64 % 3))))
            }
            _ => None,
        }
    }

    fn forget_held(&mut self, job: JobId, token: Token) {
        for machine in &mut self.machines {
            machine.held.retain(|h| !(h.job == job && h.token == token));
        }
    }

    fn submit(
        &mut self,
        gpus: u32,
        mem: u32,
        priority: u8,
        max_attempts: u32,
        timeout_s: u64,
        key: Option<u8>,
    ) {
        let key = key.map(|k| format!("k{k}"));
        let spec = JobSpec {
            priority,
            max_attempts,
            timeout: Span::from_secs(timeout_s),
            idempotency_key: key.clone(),
            ..JobSpec::new(
                "sleep",
                Arc::new(Requirements {
                    gpus,
                    gpu_mem_gb: mem,
                    ..Default::default()
                }),
            )
        };
        let existing = key
            .as_ref()
            .and_then(|k| self.keys.get(k).copied())
            .filter(|&j| self.store.job_state(j).is_some());
        let reply = self.apply(Request::Submit(Box::new(spec)));
        match existing {
            Some(job) => assert_eq!(
                reply,
                Ok(Reply::Submitted {
                    job,
                    created: false
                }),
                "a live idempotency key returns the first job"
            ),
            None => {
                let job = JobId(self.next_job);
                assert_eq!(reply, Ok(Reply::Submitted { job, created: true }));
                assert_eq!(self.store.job_state(job), Some(JobState::Queued));
                self.next_job += 1;
                if let Some(k) = key {
                    self.keys.insert(k, job);
                }
            }
        }
    }

    fn register(&mut self, m: usize, gpus: u32, mem: u32) {
        let model = &self.machines[m];
        let changed = (model.gpus, model.mem) != (gpus, mem);
        if self.profiles == Profiles::ChangeAfterLeaving
            && changed
            && matches!(model.registration, Registration::Ready(_))
        {
            self.deregister(m);
        }
        // A machine that left is forgotten after `retention`; until then its name keeps its id.
        let held = match self.machines[m].registration {
            Registration::Ready(old) | Registration::Gone(old) => {
                let listed = self.apply(Request::ListMachines { limit: u32::MAX });
                matches!(&listed, Ok(Reply::Machines(all)) if all.iter().any(|v| v.id == old))
                    .then_some(old)
            }
            _ => None,
        };
        let spec = machine_spec(&format!("m{m}"), gpus, mem);
        let reply = self.apply(Request::Register(Box::new(spec)));
        let Ok(Reply::Registered { machine: id }) = reply else {
            panic!("register: {reply:?}");
        };
        let model = &mut self.machines[m];
        if let Some(old) = held {
            assert_eq!(
                id, old,
                "the same name keeps its id while the registry holds it"
            );
        }
        if matches!(model.registration, Registration::Gone(_)) {
            model.held.clear();
        }
        model.registration = Registration::Ready(id);
        model.gpus = gpus;
        model.mem = mem;
        model.last_claim = None;
    }

    fn heartbeat(&mut self, m: usize) {
        let machine = self.machines[m].id(m);
        let held = self.machines[m].held.clone();
        let leases: Vec<LeaseRef> = held
            .iter()
            .map(|h| LeaseRef {
                job: h.job,
                token: h.token,
            })
            .collect();
        // What each renewal must answer, judged before the request.
        let expected: Vec<LeaseStatus> = held
            .iter()
            .map(|h| match self.store.job_state(h.job) {
                Some(JobState::Leased {
                    machine: holder,
                    token,
                    ..
                }) if holder == machine
                    && token == h.token
                    && self.now < self.grants[&(h.job, h.token)].attempt_deadline =>
                {
                    LeaseStatus::Renewed {
                        deadline: self.now.plus(self.lease_ttl),
                    }
                }
                _ => LeaseStatus::Revoked,
            })
            .collect();
        match self.apply(Request::Heartbeat { machine, leases }) {
            Ok(Reply::Heartbeat { leases: statuses }) => {
                assert!(
                    matches!(self.machines[m].registration, Registration::Ready(_)),
                    "heartbeat of {:?} accepted",
                    self.machines[m].registration
                );
                assert_eq!(statuses, expected, "heartbeat of machine {m}");
                for (h, status) in held.iter().zip(&statuses) {
                    match status {
                        LeaseStatus::Renewed { deadline } => assert_eq!(
                            self.store.job_state(h.job),
                            Some(JobState::Leased {
                                machine,
                                token: h.token,
                                deadline: *deadline
                            })
                        ),
                        LeaseStatus::Revoked => {
                            self.forget_held(h.job, h.token);
                            assert!(!matches!(
                                self.store.job_state(h.job),
                                Some(JobState::Leased { token, .. }) if token == h.token
                            ));
                        }
                    }
                }
            }
            Err(refusal) => self.check_machine_refusal(m, &refusal),
            Ok(other) => panic!("heartbeat answered {other:?}"),
        }
    }

    fn claim(&mut self, m: usize, repeat_seq: bool) {
        let model = &mut self.machines[m];
        let machine = model.id(m);
        if !(repeat_seq && model.seq > 0) {
            model.seq += 1;
        }
        let seq = model.seq;
        let held_gpus: u32 = model.held.iter().map(|h| h.gpus).sum();
        let offer = Offer {
            free_gpus: model.gpus.saturating_sub(held_gpus),
            gpu_mem_gb: model.mem,
            free_disk_gb: DISK_GB,
            cached: Default::default(),
        };
        let repeat = model.last_claim.clone().filter(|(last, _, _)| *last == seq);
        self.observe();
        let before = self.snapshot();
        let reply = self.apply(Request::Claim {
            machine,
            seq,
            offer,
        });
        if let Some((_, granted, idle)) = repeat {
            // A repeated claim answers the first grants that still stand, and changes nothing.
            let still_held: Vec<(JobId, Token)> = granted
                .into_iter()
                .filter(|&(job, token)| {
                    matches!(
                        self.store.job_state(job),
                        Some(JobState::Leased { machine: holder, token: live, .. })
                            if holder == machine && live == token
                    )
                })
                .collect();
            match &reply {
                Ok(Reply::Claimed {
                    grants,
                    idle: again,
                }) => {
                    let got: Vec<(JobId, Token)> =
                        grants.iter().map(|g| (g.job, g.token)).collect();
                    assert_eq!(got, still_held, "repeated claim {seq}");
                    assert_eq!(*again, idle, "repeated claim {seq}");
                }
                Err(refusal) => {
                    let refusal = refusal.clone();
                    self.check_machine_refusal(m, &refusal);
                }
                Ok(other) => panic!("repeated claim {seq} answered {other:?}"),
            }
            assert_eq!(self.snapshot(), before, "a repeated claim changed jobs");
            assert_eq!(self.observe(), 0, "a repeated claim made history");
            return;
        }
        let (grants, idle) = match reply {
            Ok(Reply::Claimed { grants, idle }) => (grants, idle),
            Err(refusal) => return self.check_machine_refusal(m, &refusal),
            Ok(other) => panic!("claim answered {other:?}"),
        };
        assert!(
            matches!(self.machines[m].registration, Registration::Ready(_)),
            "claim by {:?} accepted",
            self.machines[m].registration
        );
        let max_grants = self.store.config().limits.max_grants_per_claim as usize;
        assert!(grants.len() <= max_grants, "{} grants", grants.len());
        // Invariant 5: never more than the offer holds, all grants of the claim together.
        let granted_gpus: u32 = grants.iter().map(|g| g.spec.requirements.gpus).sum();
        assert!(
            granted_gpus <= offer.free_gpus,
            "granted {granted_gpus} GPUs on an offer of {}",
            offer.free_gpus
        );
        if !idle && grants.len() < max_grants {
            assert!(
                offer.free_gpus > 0 && granted_gpus == offer.free_gpus,
                "not idle, yet {granted_gpus} of {} GPUs granted",
                offer.free_gpus
            );
        }
        let mut seen = Vec::new();
        for grant in &grants {
            let req = &grant.spec.requirements;
            assert!(
                req.gpus == 0 || req.gpu_mem_gb <= offer.gpu_mem_gb,
                "granted {} GB GPUs on an offer of {} GB",
                req.gpu_mem_gb,
                offer.gpu_mem_gb
            );
            assert!(!seen.contains(&grant.job), "{:?} granted twice", grant.job);
            seen.push(grant.job);
            // It was waiting to run: queued, or delayed and due.
            let prior = before.0[(grant.job.0 - 1) as usize];
            assert!(
                matches!(prior, Some(JobState::Queued))
                    || matches!(prior, Some(JobState::Delayed { until }) if until <= self.now),
                "granted {:?} from {prior:?}",
                grant.job
            );
            assert_eq!(
                self.store.job_state(grant.job),
                Some(JobState::Leased {
                    machine,
                    token: grant.token,
                    deadline: grant.deadline
                })
            );
            assert_eq!(grant.deadline, self.now.plus(self.lease_ttl));
            // Invariant 4: tokens per job only grow.
            if let Some(&max) = self.max_token.get(&grant.job) {
                assert!(
                    grant.token > max,
                    "{:?}: token {:?} after {max:?}",
                    grant.job,
                    grant.token
                );
            }
            self.max_token.insert(grant.job, grant.token);
            self.granted.push((grant.job, grant.token));
            self.grants.insert(
                (grant.job, grant.token),
                GrantInfo {
                    attempt: grant.attempt,
                    max_attempts: grant.spec.max_attempts,
                    attempt_deadline: self.now.plus(grant.spec.timeout),
                },
            );
            self.machines[m].held.push(Held {
                job: grant.job,
                token: grant.token,
                gpus: req.gpus,
            });
        }
        let granted = grants.iter().map(|g| (g.job, g.token)).collect();
        self.machines[m].last_claim = Some((seq, granted, idle));
    }

    /// Invariant 3: a repeat is answered `Recorded`, a stale token `Stale`, neither changes a
    /// thing; the live token records the outcome.
    fn complete(&mut self, job: JobId, token: Token, outcome: Outcome) {
        self.observe();
        let before = self.snapshot();
        let prior = self.store.job_state(job);
        let reply = self.apply(Request::Complete {
            job,
            token,
            outcome: outcome.clone(),
            result: None,
        });
        let Some(prior) = prior else {
            assert_eq!(reply, Err(Refusal::UnknownJob(job)));
            self.forget_held(job, token);
            return;
        };
        if self.recorded.get(&job) == Some(&token) {
            assert_eq!(
                reply,
                Ok(Reply::Recorded {
                    state: prior.name()
                }),
                "repeated complete of {job:?} with {token:?}"
            );
            assert_eq!(self.snapshot(), before, "a repeated complete changed jobs");
            assert_eq!(self.observe(), 0, "a repeated complete made history");
            self.forget_held(job, token);
            return;
        }
        let live = matches!(prior, JobState::Leased { token: t, .. } if t == token);
        if !live {
            assert_eq!(reply, Err(Refusal::Stale { job, token }), "from {prior:?}");
            assert_eq!(self.snapshot(), before, "a stale complete changed jobs");
            assert_eq!(self.observe(), 0, "a stale complete made history");
            self.forget_held(job, token);
            return;
        }
        let after = self.store.job_state(job).expect("just completed").name();
        assert_eq!(reply, Ok(Reply::Recorded { state: after }));
        let info = self.grants[&(job, token)];
        let more = info.attempt < info.max_attempts;
        let retry = matches!(after, StateName::Delayed | StateName::Queued);
        match outcome {
            Outcome::Succeeded => assert_eq!(after, StateName::Succeeded),
            Outcome::Failed(Failure::Error {
                retryable: false, ..
            }) => assert_eq!(after, StateName::Dead),
            Outcome::Failed(Failure::TimedOut) => {
                assert!(if more {
                    retry
                } else {
                    after == StateName::TimedOut
                })
            }
            Outcome::Failed(_) => assert!(if more {
                retry
            } else {
                after == StateName::Dead
            }),
        }
        self.recorded.insert(job, token);
        self.forget_held(job, token);
    }

    fn release(&mut self, job: JobId, token: Token) {
        self.observe();
        let before = self.snapshot();
        let prior = self.store.job_state(job);
        let reply = self.apply(Request::Release { job, token });
        self.forget_held(job, token);
        let Some(prior) = prior else {
            assert_eq!(reply, Err(Refusal::UnknownJob(job)));
            return;
        };
        if self.recorded.get(&job) == Some(&token) {
            assert_eq!(reply, Ok(Reply::Released));
            assert_eq!(self.snapshot(), before, "a repeated release changed jobs");
            assert_eq!(self.observe(), 0, "a repeated release made history");
            return;
        }
        if !matches!(prior, JobState::Leased { token: t, .. } if t == token) {
            assert_eq!(reply, Err(Refusal::Stale { job, token }), "from {prior:?}");
            assert_eq!(self.snapshot(), before, "a stale release changed jobs");
            assert_eq!(self.observe(), 0, "a stale release made history");
            return;
        }
        assert_eq!(reply, Ok(Reply::Released));
        assert_eq!(self.store.job_state(job), Some(JobState::Queued));
        self.recorded.insert(job, token);
    }

    fn cancel(&mut self, job: JobId) {
        self.observe();
        let before = self.snapshot();
        let prior = self.store.job_state(job);
        let reply = self.apply(Request::Cancel { job });
        match prior.map(|s| s.name()) {
            None => assert_eq!(reply, Err(Refusal::UnknownJob(job))),
            Some(StateName::Cancelled) => {
                assert_eq!(
                    reply,
                    Ok(Reply::Cancelled {
                        job,
                        previous: StateName::Cancelled
                    })
                );
                assert_eq!(self.snapshot(), before);
            }
            Some(state) if state.is_terminal() => {
                assert_eq!(reply, Err(Refusal::AlreadyFinished { job, state }));
                assert_eq!(self.snapshot(), before);
            }
            Some(previous) => {
                assert_eq!(reply, Ok(Reply::Cancelled { job, previous }));
                assert_eq!(self.store.job_state(job), Some(JobState::Cancelled));
            }
        }
    }

    fn deregister(&mut self, m: usize) {
        let machine = self.machines[m].id(m);
        let on_it = (1..self.next_job)
            .filter(|&j| {
                matches!(
                    self.store.job_state(JobId(j)),
                    Some(JobState::Leased { machine: holder, .. }) if holder == machine
                )
            })
            .count() as u32;
        let reply = self.apply(Request::Deregister { machine });
        match self.machines[m].registration {
            Registration::Never => assert_eq!(reply, Err(Refusal::UnknownMachine(machine))),
            // Gone, or forgotten after `retention`.
            Registration::Gone(_) => assert!(
                matches!(
                    reply,
                    Ok(Reply::Deregistered { revoked: 0 }) | Err(Refusal::UnknownMachine(_))
                ),
                "{reply:?}"
            ),
            Registration::Ready(_) => {
                // A machine the store declared lost holds nothing, so 0 is right for it too;
                // one lost and then forgotten after `retention` is unknown.
                if reply == Err(Refusal::UnknownMachine(machine)) {
                    assert_eq!(on_it, 0, "a forgotten machine held leases");
                } else {
                    assert_eq!(reply, Ok(Reply::Deregistered { revoked: on_it }));
                }
                let model = &mut self.machines[m];
                model.registration = Registration::Gone(machine);
                model.held.clear();
            }
        }
        assert!(
            (1..self.next_job).all(|j| !matches!(
                self.store.job_state(JobId(j)),
                Some(JobState::Leased { machine: holder, .. }) if holder == machine
            )),
            "a deregistered machine still holds a lease"
        );
    }

    /// Invariant 6: with every machine silent, ten hours on and the reaper run to a standstill,
    /// no lease is left and every job the checker thinks live is still held, live.
    fn finish(&mut self) {
        self.now = self.now.plus(Span::from_secs(10 * 3600));
        let mut passes = 0;
        loop {
            passes += 1;
            assert!(passes < 10_000, "the reaper never settles");
            let Ok(Reply::Reaped(report)) = self.apply(Request::Reap { max: 50 }) else {
                panic!("reap refused");
            };
            self.check_step("final reap");
            if !report.more {
                break;
            }
        }
        for j in 1..self.next_job {
            let state = self.store.job_state(JobId(j));
            assert!(
                !matches!(state, Some(JobState::Leased { .. })),
                "{j}: still {state:?} ten silent hours on"
            );
        }
        let store = &self.store;
        self.checker
            .check_nothing_lost(self.now, |j| store.job_state(j).map(|s| s.name()));
        assert!(
            self.checker.violations().is_empty(),
            "at the end: {:#?}",
            self.checker.violations()
        );
    }
}

fn run(profiles: Profiles, ops: &[Op]) {
    let mut driver = Driver::new(profiles);
    for op in ops {
        driver.step(op);
    }
    driver.finish();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs to keep regressions beside; keep the tree clean.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Machines keep one profile each; every other request is random.
    #[test]
    fn random_requests_keep_every_invariant(
        ops in prop::collection::vec(op_strategy(Profiles::Stable), 0..200)
    ) {
        run(Profiles::Stable, &ops);
    }

    /// Machines change profile, leaving before they re-register with the new one.
    #[test]
    fn random_requests_with_profile_changes_keep_every_invariant(
        ops in prop::collection::vec(op_strategy(Profiles::ChangeAfterLeaving), 0..200)
    ) {
        run(Profiles::ChangeAfterLeaving, &ops);
    }

    /// Machines change profile while registered. See
    /// `reregistering_an_idle_machine_with_a_new_profile_does_not_panic`.
    #[test]
    fn random_requests_with_live_profile_changes_keep_every_invariant(
        ops in prop::collection::vec(op_strategy(Profiles::Change), 0..200)
    ) {
        run(Profiles::Change, &ops);
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic cases for the subtle paths the properties run through.

fn secs(s: u64) -> Time {
    Time(s * 1_000_000)
}

fn machine_spec(name: &str, gpus: u32, mem: u32) -> MachineSpec {
    MachineSpec {
        name: name.into(),
        pool: "p".into(),
        gpus,
        gpu_model: "A100".into(),
        gpu_mem_gb: mem,
        disk_gb: DISK_GB,
        labels: Default::default(),
        cost_per_hour: 1.0,
        kinds: Vec::new(),
    }
}

fn gpu_job(gpus: u32, mem: u32) -> JobSpec {
    JobSpec::new(
        "sleep",
        Arc::new(Requirements {
            gpus,
            gpu_mem_gb: mem,
            ..Default::default()
        }),
    )
}

fn full_offer(gpus: u32, mem: u32) -> Offer {
    Offer {
        free_gpus: gpus,
        gpu_mem_gb: mem,
        free_disk_gb: DISK_GB,
        cached: Default::default(),
    }
}

fn register_at(store: &mut MemStore, now: Time, spec: MachineSpec) -> MachineId {
    match store.apply(now, Request::Register(Box::new(spec))) {
        Ok(Reply::Registered { machine }) => machine,
        other => panic!("register: {other:?}"),
    }
}

fn submit_at(store: &mut MemStore, now: Time, spec: JobSpec) -> JobId {
    match store.apply(now, Request::Submit(Box::new(spec))) {
        Ok(Reply::Submitted { job, .. }) => job,
        other => panic!("submit: {other:?}"),
    }
}

/// The (job, token) pairs a claim granted, and its idle flag.
fn claim_at(
    store: &mut MemStore,
    now: Time,
    machine: MachineId,
    seq: u64,
    offer: Offer,
) -> (Vec<(JobId, Token)>, bool) {
    match store.apply(
        now,
        Request::Claim {
            machine,
            seq,
            offer,
        },
    ) {
        Ok(Reply::Claimed { grants, idle }) => {
            (grants.iter().map(|g| (g.job, g.token)).collect(), idle)
        }
        other => panic!("claim: {other:?}"),
    }
}

fn recording_store() -> MemStore {
    let mut store = MemStore::new(config());
    store.record_history();
    store
}

/// Store bug, found by `random_requests_with_live_profile_changes_keep_every_invariant`.
/// `register` gives a known machine its new profile without taking it out of the waiting line
/// of its old profile, so `stop_waiting` looks in the new profile's line: it panics when that
/// line does not exist ("waiting machine has a line"), and when it does, leaves a stale entry
/// in the old line that a later wake-up trips over ("in line, so waiting").
#[test]
fn reregistering_an_idle_machine_with_a_new_profile_does_not_panic() {
    let mut store = recording_store();
    let m = register_at(&mut store, secs(0), machine_spec("a", 1, 24));
    let (grants, idle) = claim_at(&mut store, secs(1), m, 1, full_offer(1, 24));
    assert!(
        grants.is_empty() && idle,
        "nothing queued: the machine waits"
    );
    // The same machine comes back with bigger GPUs (a new profile) without leaving first.
    assert_eq!(
        register_at(&mut store, secs(2), machine_spec("a", 1, 80)),
        m
    );
    // Its next claim (or the reaper declaring it lost) takes it out of the waiting line.
    let (grants, _) = claim_at(&mut store, secs(3), m, 1, full_offer(1, 80));
    assert!(grants.is_empty());
    let j = submit_at(&mut store, secs(4), gpu_job(1, 24));
    let (grants, _) = claim_at(&mut store, secs(5), m, 2, full_offer(1, 80));
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].0, j);
}

/// The same bug's other face: when the new profile already has a waiting line, the machine
/// is left behind in its old profile's line, and a later submission that would wake it panics
/// ("in line, so waiting") inside a client's `Submit`.
#[test]
fn a_submission_after_an_idle_machine_changed_profile_does_not_panic() {
    let mut store = recording_store();
    let n = register_at(&mut store, secs(0), machine_spec("n", 1, 80));
    assert!(claim_at(&mut store, secs(0), n, 1, full_offer(1, 80)).1);
    let m = register_at(&mut store, secs(0), machine_spec("m", 1, 24));
    assert!(claim_at(&mut store, secs(0), m, 1, full_offer(1, 24)).1);
    register_at(&mut store, secs(1), machine_spec("m", 1, 80));
    assert!(claim_at(&mut store, secs(1), m, 1, full_offer(1, 80)).1);
    // The first two wake n and m from the 80 GB line; the third finds m's stale entry.
    for _ in 0..3 {
        submit_at(&mut store, secs(2), gpu_job(1, 24));
    }
    assert_eq!(store.counts().queued, 3);
}

/// `Release` and `Complete` share the store's one "recorded" token, so once a lease was
/// released, a `Complete` with its token is answered `Recorded` although no outcome was
/// recorded (the reply names the job's real state, `Queued`), and a `Release` after a
/// `Complete` is answered `Released` although the job finished. Neither changes anything.
#[test]
fn release_and_complete_of_one_token_answer_each_other_without_effect() {
    let mut store = recording_store();
    let m = register_at(&mut store, secs(0), machine_spec("a", 2, 80));
    let released = submit_at(&mut store, secs(0), gpu_job(1, 8));
    let completed = submit_at(&mut store, secs(0), gpu_job(1, 8));
    let (grants, _) = claim_at(&mut store, secs(1), m, 1, full_offer(2, 80));
    assert_eq!(grants.len(), 2);
    let token_of = |job| grants.iter().find(|g| g.0 == job).expect("granted").1;
    let (t_released, t_completed) = (token_of(released), token_of(completed));

    let release = Request::Release {
        job: released,
        token: t_released,
    };
    assert_eq!(store.apply(secs(2), release), Ok(Reply::Released));
    assert_eq!(store.job_state(released), Some(JobState::Queued));
    let before = store.drain_history().count();
    assert!(before > 0);
    assert_eq!(
        store.apply(
            secs(3),
            Request::Complete {
                job: released,
                token: t_released,
                outcome: Outcome::Succeeded,
                result: None,
            }
        ),
        Ok(Reply::Recorded {
            state: StateName::Queued
        }),
        "answered as a repeat, naming the real state"
    );
    assert_eq!(store.job_state(released), Some(JobState::Queued));
    assert_eq!(store.drain_history().count(), 0, "nothing recorded");

    let complete = Request::Complete {
        job: completed,
        token: t_completed,
        outcome: Outcome::Succeeded,
        result: None,
    };
    assert_eq!(
        store.apply(secs(4), complete),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
    store.drain_history().for_each(drop);
    assert_eq!(
        store.apply(
            secs(5),
            Request::Release {
                job: completed,
                token: t_completed,
            }
        ),
        Ok(Reply::Released)
    );
    assert_eq!(store.job_state(completed), Some(JobState::Succeeded));
    assert_eq!(store.drain_history().count(), 0);
}

/// Only the last recorded token is remembered: a duplicate `Complete` of attempt 1 that
/// arrives after attempt 2's outcome was recorded is answered `Stale`, not `Recorded`, and
/// changes nothing. While attempt 2 is still running, the duplicate is answered `Recorded`.
#[test]
fn a_late_duplicate_complete_of_an_earlier_attempt_is_stale() {
    let mut store = recording_store();
    let mut checker = Checker::new();
    let m = register_at(&mut store, secs(0), machine_spec("a", 1, 80));
    let j = submit_at(&mut store, secs(0), gpu_job(1, 8));
    let (grants, _) = claim_at(&mut store, secs(1), m, 1, full_offer(1, 80));
    let first = grants[0].1;
    let fail = Request::Complete {
        job: j,
        token: first,
        outcome: Outcome::Failed(Failure::Error {
            retryable: true,
            message: "flaky".into(),
        }),
        result: None,
    };
    assert_eq!(
        store.apply(secs(2), fail.clone()),
        Ok(Reply::Recorded {
            state: StateName::Delayed
        })
    );
    // Past the backoff, the retry is leased with a larger token.
    let (grants, _) = claim_at(&mut store, secs(600), m, 2, full_offer(1, 80));
    let second = grants[0].1;
    assert_eq!(grants[0].0, j);
    assert!(second > first);
    assert_eq!(
        store.apply(secs(601), fail.clone()),
        Ok(Reply::Recorded {
            state: StateName::Leased
        }),
        "a repeat of the last recorded outcome, while attempt 2 runs"
    );
    assert_eq!(
        store.apply(
            secs(602),
            Request::Complete {
                job: j,
                token: second,
                outcome: Outcome::Succeeded,
                result: None,
            }
        ),
        Ok(Reply::Recorded {
            state: StateName::Succeeded
        })
    );
    store.drain_history().for_each(|e| checker.observe(&e));
    let counts = store.counts();
    assert_eq!(
        store.apply(secs(603), fail),
        Err(Refusal::Stale {
            job: j,
            token: first
        })
    );
    assert_eq!(store.job_state(j), Some(JobState::Succeeded));
    assert_eq!(store.counts(), counts);
    assert_eq!(store.drain_history().count(), 0);
    assert!(
        checker.violations().is_empty(),
        "{:?}",
        checker.violations()
    );
}

/// A repeated claim answers only the grants of the first that still stand, with the same idle
/// flag, and leases nothing new even when fitting work has been queued since.
#[test]
fn a_repeated_claim_returns_only_standing_grants_and_grants_nothing_new() {
    let mut store = recording_store();
    let m = register_at(&mut store, secs(0), machine_spec("a", 4, 80));
    let a = submit_at(&mut store, secs(0), gpu_job(2, 8));
    let b = submit_at(&mut store, secs(0), gpu_job(1, 8));
    let (grants, idle) = claim_at(&mut store, secs(1), m, 7, full_offer(4, 80));
    assert_eq!(grants.iter().map(|g| g.0).collect::<Vec<_>>(), vec![a, b]);
    assert!(idle, "a GPU is left that no queued job fits");
    let token_a = grants[0].1;
    store
        .apply(
            secs(2),
            Request::Complete {
                job: a,
                token: token_a,
                outcome: Outcome::Succeeded,
                result: None,
            },
        )
        .unwrap();
    let c = submit_at(&mut store, secs(3), gpu_job(1, 8));
    let counts = store.counts();
    let (again, idle_again) = claim_at(&mut store, secs(4), m, 7, full_offer(4, 80));
    assert_eq!(again, vec![grants[1]], "only b's lease still stands");
    assert!(idle_again);
    assert_eq!(store.job_state(c), Some(JobState::Queued));
    assert_eq!(store.counts(), counts);
    // An older seq is answered with nothing at all.
    assert_eq!(
        claim_at(&mut store, secs(5), m, 6, full_offer(4, 80)),
        (vec![], false)
    );
    assert_eq!(store.job_state(c), Some(JobState::Queued));
}
