//! RedisStore against MemStore: every conformance case, and proptest-generated sequences of
//! requests, applied to both with the same store clock, must get identical replies, wake the
//! same machines and leave the same state behind (`store::dump`, compared after every step).
//! Needs `redis-server` on PATH (each test starts its own on a free port).

use drover_engine::core::labels::{LabelValue, Labels};
use drover_engine::core::{
    EngineConfig, Failure, JobId, MachineId, MachineSpec, ModelSet, Offer, Outcome, Span,
    StateName, Time, Token,
};
use drover_engine::redis::RedisStore;
use drover_engine::store::conformance::{self, Ctx, Target};
use drover_engine::store::journal::JournalEntry;
use drover_engine::store::StateDump;
use drover_engine::store::{LeaseRef, MemStore, Refusal, Reply, Request};
use drover_engine::testing::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};

/// A RedisStore driven synchronously, its test clock set before every request.
struct RedisTarget {
    runtime: tokio::runtime::Runtime,
    store: RedisStore,
}

impl RedisTarget {
    fn new(url: &str, config: EngineConfig) -> RedisTarget {
        static NAMESPACE: AtomicU64 = AtomicU64::new(0);
        let ns = format!("conf{}", NAMESPACE.fetch_add(1, Ordering::Relaxed));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let store = runtime
            .block_on(RedisStore::connect(url, &ns, config))
            .expect("connect to the test redis");
        RedisTarget { runtime, store }
    }
}

impl Target for RedisTarget {
    fn apply_at(
        &mut self,
        now: Time,
        request: Request,
    ) -> (Result<Reply, Refusal>, Vec<MachineId>) {
        let store = self.store.clone();
        self.runtime.block_on(async move {
            store.set_test_clock(Some(now)).await.expect("set clock");
            store.apply_traced(request).await.expect("redis request")
        })
    }

    fn journal(&mut self) -> Option<Vec<JournalEntry>> {
        let store = self.store.clone();
        let entries = self
            .runtime
            .block_on(async move { store.read_journal(None, 1_000_000).await })
            .expect("read the journal");
        Some(entries)
    }

    fn dump(&mut self) -> StateDump {
        let store = self.store.clone();
        self.runtime
            .block_on(async move { store.dump().await })
            .expect("dump the namespace")
    }
}

#[test]
fn every_conformance_case_matches_memstore() {
    let server = RedisServer::start();
    let mut failures = Vec::new();
    for case in conformance::cases() {
        let mut target = RedisTarget::new(&server.url, case.config.clone());
        if let Err(e) = conformance::run_paired(&case, &mut target) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Random sequences. Indices are resolved against what the replies so far said.

const MACHINES: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    Submit {
        gpus: u32,
        mem: u32,
        priority: u8,
        attempts: u32,
        timeout_s: u64,
        key: Option<u8>,
        models: u8,
        labels: u8,
    },
    Register {
        m: usize,
        gpus: u32,
        mem: u32,
        labels: u8,
    },
    Heartbeat {
        m: usize,
        grants: Vec<usize>,
    },
    Claim {
        m: usize,
        repeat: bool,
        gpus: u32,
        mem: u32,
        disk: u32,
        cached: u8,
    },
    Complete {
        grant: usize,
        outcome: u8,
        bogus: bool,
    },
    Release {
        grant: usize,
    },
    Progress {
        grant: usize,
        percent: u8,
    },
    Cancel {
        job: usize,
    },
    Deregister {
        m: usize,
    },
    Reap {
        max: u32,
    },
    ListJobs {
        state: Option<u8>,
        after: Option<usize>,
        limit: u32,
    },
    ListMachines {
        limit: u32,
    },
    Stats,
    Batch(Vec<Op>),
}

fn leaf() -> impl Strategy<Value = Op> {
    let m = 0..MACHINES;
    prop_oneof![
        3 => prop_oneof![4 => 0u64..=10_000, 1 => 10_000u64..=200_000].prop_map(Op::Advance),
        5 => (0u32..=3, prop::sample::select(vec![0u32, 8, 24, 40, 80]), 0u8..=100, 1u32..=3,
              prop_oneof![Just(0u64), 5u64..120], prop::option::weighted(0.4, 0u8..4), 0u8..4, 0u8..6)
            .prop_map(|(gpus, mem, priority, attempts, timeout_s, key, models, labels)| Op::Submit {
                gpus, mem, priority, attempts, timeout_s, key, models, labels,
            }),
        2 => (m.clone(), 1u32..=8, prop::sample::select(vec![24u32, 80]), 0u8..4)
            .prop_map(|(m, gpus, mem, labels)| Op::Register { m, gpus, mem, labels }),
        3 => (m.clone(), prop::collection::vec(any::<usize>(), 0..4))
            .prop_map(|(m, grants)| Op::Heartbeat { m, grants }),
        6 => (m.clone(), prop::bool::weighted(0.15), 0u32..=8, prop::sample::select(vec![24u32, 80]),
              prop::sample::select(vec![5u32, 40, 100]), 0u8..4)
            .prop_map(|(m, repeat, gpus, mem, disk, cached)| Op::Claim { m, repeat, gpus, mem, disk, cached }),
        5 => (any::<usize>(), 0u8..6, prop::bool::weighted(0.1))
            .prop_map(|(grant, outcome, bogus)| Op::Complete { grant, outcome, bogus }),
        1 => any::<usize>().prop_map(|grant| Op::Release { grant }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(grant, percent)| Op::Progress { grant, percent }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => m.prop_map(|m| Op::Deregister { m }),
        2 => prop_oneof![Just(1000u32), 0u32..6].prop_map(|max| Op::Reap { max }),
        1 => (prop::option::of(0u8..8), prop::option::of(any::<usize>()), 0u32..6)
            .prop_map(|(state, after, limit)| Op::ListJobs { state, after, limit }),
        1 => (0u32..6).prop_map(|limit| Op::ListMachines { limit }),
        1 => Just(Op::Stats),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => leaf(),
        1 => prop::collection::vec(leaf(), 0..4).prop_map(Op::Batch),
    ]
}

fn labels(choice: u8, machine: bool) -> Labels {
    let list = |items: &[&str]| LabelValue::List(items.iter().map(|s| s.to_string()).collect());
    let pairs: Vec<(&str, LabelValue)> = match (machine, choice) {
        (true, 0) => vec![],
        (true, 1) => vec![
            ("f", list(&["fp8", "nvlink"])),
            ("cuda", LabelValue::Number(12.4)),
        ],
        (true, 2) => vec![
            ("region", LabelValue::Text("eu".into())),
            ("spot", LabelValue::Bool(true)),
        ],
        (true, _) => vec![
            ("f", list(&["fp8"])),
            ("cuda", LabelValue::Number(11.0)),
            ("region", LabelValue::Text("us".into())),
        ],
        (false, 0 | 1) => vec![],
        (false, 2) => vec![("f", list(&["fp8"]))],
        (false, 3) => vec![("cuda", LabelValue::Number(12.0))],
        (false, 4) => vec![("region", LabelValue::Text("eu".into()))],
        (false, _) => vec![("spot", LabelValue::Bool(true))],
    };
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn models(bits: u8) -> ModelSet {
    ModelSet(bits as u128 & 0b11)
}

fn outcome(kind: u8) -> Outcome {
    match kind {
        0 | 1 => Outcome::Succeeded,
        2 => Outcome::Failed(Failure::Error {
            retryable: true,
            message: "flaky".into(),
        }),
        3 => Outcome::Failed(Failure::Error {
            retryable: false,
            message: "bad".into(),
        }),
        4 => Outcome::Failed(Failure::GpuOom { needed_gb: 48 }),
        _ => Outcome::Failed(Failure::TimedOut),
    }
}

const STATES: [StateName; 8] = [
    StateName::Queued,
    StateName::Delayed,
    StateName::Leased,
    StateName::Succeeded,
    StateName::Dead,
    StateName::Cancelled,
    StateName::TimedOut,
    StateName::Unworkable,
];

/// What the driver knows: machine ids by index, claim seqs, and the shared reply context.
struct Driver {
    ctx: Ctx,
    ids: [Option<MachineId>; MACHINES],
    seqs: [u64; MACHINES],
    now: Time,
}

impl Driver {
    fn machine(&self, m: usize) -> MachineId {
        self.ids[m].unwrap_or(MachineId(u64::MAX - m as u64))
    }

    fn lease(&self, i: usize) -> (JobId, Token) {
        if self.ctx.grants.is_empty() {
            return (JobId(1), Token(1));
        }
        let g = &self.ctx.grants[i % self.ctx.grants.len()];
        (g.job, g.token)
    }

    fn request(&mut self, op: &Op) -> Option<Request> {
        Some(match op {
            Op::Advance(ms) => {
                self.now = self.now.plus(Span::from_millis(*ms));
                return None;
            }
            Op::Submit {
                gpus,
                mem,
                priority,
                attempts,
                timeout_s,
                key,
                models: bits,
                labels: l,
            } => {
                let mut spec = conformance::job(*gpus, *mem);
                spec.priority = *priority;
                spec.max_attempts = *attempts;
                spec.timeout = Span::from_secs(*timeout_s);
                spec.idempotency_key = key.map(|k| format!("k{k}"));
                conformance::requirements(&mut spec, |r| {
                    r.models = models(*bits);
                    if *l == 5 {
                        r.not_labels = labels(2, false);
                    } else {
                        r.labels = labels(*l, false);
                    }
                });
                Request::Submit(Box::new(spec))
            }
            Op::Register {
                m,
                gpus,
                mem,
                labels: l,
            } => Request::Register(Box::new(MachineSpec {
                labels: labels(*l, true),
                cost_per_hour: 0.1 + *m as f64 / 3.0,
                ..conformance::machine(&format!("m{m}"), *gpus, *mem)
            })),
            Op::Heartbeat { m, grants } => Request::Heartbeat {
                machine: self.machine(*m),
                leases: grants
                    .iter()
                    .map(|&g| {
                        let (job, token) = self.lease(g);
                        LeaseRef { job, token }
                    })
                    .collect(),
            },
            Op::Claim {
                m,
                repeat,
                gpus,
                mem,
                disk,
                cached,
            } => {
                if !(*repeat && self.seqs[*m] > 0) {
                    self.seqs[*m] += 1;
                }
                Request::Claim {
                    machine: self.machine(*m),
                    seq: self.seqs[*m],
                    offer: Offer {
                        free_gpus: *gpus,
                        gpu_mem_gb: *mem,
                        free_disk_gb: *disk,
                        cached: models(*cached),
                    },
                }
            }
            Op::Complete {
                grant,
                outcome: kind,
                bogus,
            } => {
                let (job, token) = self.lease(*grant);
                let token = if *bogus { Token(token.0 + 3) } else { token };
                Request::Complete {
                    job,
                    token,
                    outcome: outcome(*kind),
                    result: None,
                }
            }
            Op::Release { grant } => {
                let (job, token) = self.lease(*grant);
                Request::Release { job, token }
            }
            Op::Progress { grant, percent } => {
                let (job, token) = self.lease(*grant);
                Request::Progress {
                    job,
                    token,
                    percent: *percent,
                    message: format!("p{percent}"),
                }
            }
            Op::Cancel { job } => Request::Cancel {
                job: JobId(*job as u64 % (self.ctx.jobs.len() as u64 + 2)),
            },
            Op::Deregister { m } => Request::Deregister {
                machine: self.machine(*m),
            },
            Op::Reap { max } => Request::Reap { max: *max },
            Op::ListJobs {
                state,
                after,
                limit,
            } => Request::ListJobs {
                state: state.map(|s| STATES[s as usize % 8]),
                after: after.map(|a| JobId(a as u64 % (self.ctx.jobs.len() as u64 + 2))),
                limit: *limit,
            },
            Op::ListMachines { limit } => Request::ListMachines { limit: *limit },
            Op::Stats => Request::Stats,
            Op::Batch(ops) => Request::Batch(ops.iter().filter_map(|o| self.request(o)).collect()),
        })
    }

    fn learn(&mut self, request: &Request, reply: &Result<Reply, Refusal>) {
        match (request, reply) {
            (Request::Register(spec), Ok(Reply::Registered { machine })) => {
                let m: usize = spec.name[1..].parse().unwrap_or(0);
                self.ids[m] = Some(*machine);
                self.seqs[m] = 0;
            }
            (Request::Batch(requests), Ok(Reply::Batch(replies))) => {
                for (r, reply) in requests.iter().zip(replies) {
                    self.learn(r, reply);
                }
                return;
            }
            _ => {}
        }
        if !matches!(request, Request::Batch(_)) {
            self.ctx.learn(reply);
        }
    }
}

fn run_sequence(url: &str, ops: &[Op]) -> Result<(), TestCaseError> {
    let config = conformance::config();
    let mut mem = MemStore::new(config.clone());
    mem.record_journal();
    let mut redis = RedisTarget::new(url, config);
    let mut driver = Driver {
        ctx: Ctx::default(),
        ids: [None; MACHINES],
        seqs: [0; MACHINES],
        now: Time(1_000_000),
    };
    for (i, op) in ops.iter().enumerate() {
        let Some(request) = driver.request(op) else {
            continue;
        };
        let (want, want_wakes) = mem.apply_at(driver.now, request.clone());
        let (got, got_wakes) = redis.apply_at(driver.now, request.clone());
        prop_assert_eq!(&got, &want, "step {}: {:?}", i, request);
        prop_assert_eq!(
            &got_wakes,
            &want_wakes,
            "wakes at step {}: {:?}",
            i,
            request
        );
        if let Err(e) = conformance::compare_dumps(&mem.dump(), &redis.dump()) {
            prop_assert!(false, "after step {}: {:?}: {}", i, request, e);
        }
        driver.learn(&request, &got);
    }
    // The journals agree entry by entry, and say what happened.
    let want = Target::journal(&mut mem).unwrap_or_default();
    let got = redis.journal().unwrap_or_default();
    prop_assert_eq!(got.len(), want.len(), "journal lengths");
    for (got, want) in got.iter().zip(&want) {
        prop_assert_eq!(got, want);
    }
    let events = want.iter().map(|e| e.events.len()).sum::<usize>();
    prop_assert!(
        ops.len() < 20 || events > 0,
        "a long sequence journals something"
    );
    Ok(())
}

#[test]
fn random_request_sequences_match_memstore() {
    let server = RedisServer::start();
    let cases = std::env::var("DROVER_REDIS_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let url = server.url.clone();
    runner
        .run(&prop::collection::vec(op(), 1..150), |ops| {
            run_sequence(&url, &ops)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// One claim at `t` on both stores (their answers must agree), then every grant failed on both.
fn claim_and_fail_on_both(
    mem: &mut MemStore,
    redis: &mut RedisTarget,
    machine: drover_engine::core::MachineId,
    seq: u64,
    t: Time,
) {
    let claim = Request::Claim {
        machine,
        seq,
        offer: conformance::offer(64, 80),
    };
    let a = mem.apply_at(t, claim.clone());
    let b = redis.apply_at(t, claim);
    assert_eq!(a, b, "claim {seq} at {t:?}");
    let Ok(Reply::Claimed { grants, .. }) = a.0 else {
        panic!("claim: {:?}", a.0)
    };
    for g in &grants {
        let fail = Request::Complete {
            job: g.job,
            token: g.token,
            outcome: outcome(2),
            result: None,
        };
        assert_eq!(mem.apply_at(t, fail.clone()), redis.apply_at(t, fail));
    }
}

#[test]
fn lua_retry_jitter_matches_the_rust_reference() {
    // Checked through the store: a job failing at a known time is released exactly when
    // `lifecycle::retry_delay` says, for many job ids and attempts.
    let server = RedisServer::start();
    let config = EngineConfig {
        backoff_base: Span::from_secs(7),
        ..conformance::config()
    };
    let mut mem = MemStore::new(config.clone());
    let mut redis = RedisTarget::new(&server.url, config.clone());
    let now = Time(1_000_000);
    let register = Request::Register(Box::new(conformance::machine("m", 64, 80)));
    let (registered, _) = mem.apply_at(now, register.clone());
    assert_eq!(redis.apply_at(now, register).0, registered);
    let Ok(Reply::Registered { machine }) = registered else {
        panic!("register: {registered:?}")
    };
    let mut store_jobs = Vec::new();
    for _ in 0..60 {
        let spec = conformance::job_with(0, 0, |s| s.max_attempts = 10);
        let a = mem.apply_at(now, Request::Submit(Box::new(spec.clone())));
        let b = redis.apply_at(now, Request::Submit(Box::new(spec)));
        assert_eq!(a, b);
        if let (Ok(Reply::Submitted { job, .. }), _) = a {
            store_jobs.push(job);
        }
    }
    // Delays are visible as the exact moment each job becomes claimable again: claim at fine
    // steps and fail every grant, so each job walks through its backoffs.
    let mut seq = 0;
    let mut t = now;
    for _round in 0..4u64 {
        seq += 1;
        claim_and_fail_on_both(&mut mem, &mut redis, machine, seq, t);
        for _ in 0..400 {
            t = t.plus(Span::from_millis(250));
            seq += 1;
            claim_and_fail_on_both(&mut mem, &mut redis, machine, seq, t);
        }
    }
    assert_eq!(store_jobs.len(), 60);
}
