//! The store conformance suite: cases that every store must answer exactly as `MemStore`
//! does. A case is a list of steps (a store time, a request built from what earlier replies
//! said, and optionally a check). `run` applies a case to one store and runs its checks;
//! `run_paired` applies it to a `MemStore` and another store in lockstep and demands identical
//! replies, identical wake-ups and identical stored state (`store::dump`) at every step.
//! `tests/redis_conformance.rs` runs every case against Redis; the unit test below runs them
//! against MemStore, so the checks themselves stay true.

use crate::core::config::CatalogModel;
use crate::core::labels::{LabelValue, Labels};
use crate::core::{
    EngineConfig, Failure, JobId, JobResult, JobSpec, MachineId, MachineSpec, ModelId, ModelSet,
    Offer, Outcome, Requirements, Span, StateName, Time, Token,
};
use crate::store::dump::{diff, StateDump};
use crate::store::journal::JournalEntry;
use crate::store::request::{Grant, LeaseRef, LeaseStatus, ReapReport, Refusal, Reply, Request};
use crate::store::MemStore;
use std::sync::Arc;

/// A store under test, driven with the store time of each request.
pub trait Target {
    /// Applies `request` at store time `now`: the reply and the machines it woke, in order.
    fn apply_at(&mut self, now: Time, request: Request)
        -> (Result<Reply, Refusal>, Vec<MachineId>);

    /// The target's whole journal, if it keeps one: `run_paired` demands MemStore's.
    fn journal(&mut self) -> Option<Vec<JournalEntry>> {
        None
    }
    /// What the store holds now, decoded (`store::dump`): `run_paired` compares it with
    /// MemStore's after every step.
    fn dump(&mut self) -> StateDump;
}

impl Target for MemStore {
    fn apply_at(
        &mut self,
        now: Time,
        request: Request,
    ) -> (Result<Reply, Refusal>, Vec<MachineId>) {
        let reply = self.apply(now, request);
        (reply, self.drain_wakes().collect())
    }

    fn journal(&mut self) -> Option<Vec<JournalEntry>> {
        MemStore::journal(self).map(|j| j.entries().cloned().collect())
    }

    fn dump(&mut self) -> StateDump {
        MemStore::dump(self)
    }
}

/// Compares the state two stores hold after the same requests: `Err` names the first
/// difference (see `dump::diff`), or MemStore's own anomalies, which a correct MemStore never
/// has.
pub fn compare_dumps(memstore: &StateDump, target: &StateDump) -> Result<(), String> {
    if !memstore.anomalies.is_empty() {
        return Err(format!(
            "MemStore's state is inconsistent: {}",
            memstore.anomalies.join("; ")
        ));
    }
    match diff(memstore, target, "MemStore", "target  ") {
        None => Ok(()),
        Some(d) => Err(format!("stored state differs at {d}")),
    }
}

/// What the replies so far said, for building the next request.
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    /// Machine ids in the order they were first registered.
    pub machines: Vec<MachineId>,
    /// Jobs created, in submission order.
    pub jobs: Vec<JobId>,
    /// Every grant, in the order granted (repeats of a claim included).
    pub grants: Vec<Grant>,
}

impl Ctx {
    pub fn machine(&self, i: usize) -> MachineId {
        self.machines
            .get(i)
            .copied()
            .unwrap_or(MachineId(u64::MAX - i as u64))
    }
    pub fn job(&self, i: usize) -> JobId {
        self.jobs
            .get(i)
            .copied()
            .unwrap_or(JobId(u64::MAX - i as u64))
    }
    /// The `i`th grant ever made (negative: from the end).
    pub fn grant(&self, i: isize) -> Option<&Grant> {
        let n = self.grants.len() as isize;
        let at = if i < 0 { n + i } else { i };
        usize::try_from(at).ok().and_then(|at| self.grants.get(at))
    }
    /// The (job, token) of the `i`th grant, or a lease that never existed.
    pub fn lease(&self, i: isize) -> (JobId, Token) {
        self.grant(i)
            .map_or((JobId(u64::MAX), Token(1)), |g| (g.job, g.token))
    }

    /// Takes note of the ids a reply names.
    pub fn learn(&mut self, reply: &Result<Reply, Refusal>) {
        match reply {
            Ok(Reply::Registered { machine }) if !self.machines.contains(machine) => {
                self.machines.push(*machine)
            }
            Ok(Reply::Submitted { job, created: true }) => self.jobs.push(*job),
            Ok(Reply::Claimed { grants, .. }) => self.grants.extend(grants.iter().cloned()),
            Ok(Reply::Batch(results)) => results.iter().for_each(|r| self.learn(r)),
            _ => {}
        }
    }
}

type Make = Box<dyn Fn(&Ctx) -> Request + Send + Sync>;
type Check =
    Box<dyn Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String> + Send + Sync>;

pub struct Step {
    pub at: Time,
    make: Make,
    check: Option<Check>,
}

pub struct Case {
    pub name: &'static str,
    pub config: EngineConfig,
    pub steps: Vec<Step>,
    now: Time,
}

impl Case {
    pub fn new(name: &'static str) -> Case {
        Case {
            name,
            config: config(),
            steps: Vec::new(),
            now: Time(1_000_000),
        }
    }

    pub fn with_config(mut self, edit: impl FnOnce(&mut EngineConfig)) -> Case {
        edit(&mut self.config);
        self
    }

    /// Later steps happen at `secs` seconds of store time.
    pub fn at(mut self, secs: u64) -> Case {
        self.now = Time(secs * 1_000_000);
        self
    }

    pub fn at_us(mut self, us: u64) -> Case {
        self.now = Time(us);
        self
    }

    pub fn step(mut self, make: impl Fn(&Ctx) -> Request + Send + Sync + 'static) -> Case {
        self.steps.push(Step {
            at: self.now,
            make: Box::new(make),
            check: None,
        });
        self
    }

    /// A check on the last step's reply and wake-ups.
    pub fn expect(
        mut self,
        check: impl Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String>
            + Send
            + Sync
            + 'static,
    ) -> Case {
        if let Some(step) = self.steps.last_mut() {
            step.check = Some(Box::new(check));
        }
        self
    }

    /// The last step must answer exactly `want` (built from the context).
    pub fn expect_reply(
        self,
        want: impl Fn(&Ctx) -> Result<Reply, Refusal> + Send + Sync + 'static,
    ) -> Case {
        self.expect(move |ctx, got, _| {
            let want = want(ctx);
            if *got == want {
                Ok(())
            } else {
                Err(format!("expected {want:?}, got {got:?}"))
            }
        })
    }

    /// The last step must wake exactly these machines (by registration order).
    pub fn expect_wakes(self, machines: &'static [usize]) -> Case {
        self.expect(move |ctx, _, wakes| {
            let want: Vec<MachineId> = machines.iter().map(|&i| ctx.machine(i)).collect();
            if wakes == want.as_slice() {
                Ok(())
            } else {
                Err(format!("expected wakes {want:?}, got {wakes:?}"))
            }
        })
    }

    // Shorthands for the common requests.

    /// Steps a helper shared by several cases adds.
    pub fn then(self, steps: impl FnOnce(Case) -> Case) -> Case {
        steps(self)
    }

    pub fn register(self, name: &'static str, gpus: u32, mem: u32) -> Case {
        self.step(move |_| Request::Register(Box::new(machine(name, gpus, mem))))
    }

    pub fn register_spec(self, spec: MachineSpec) -> Case {
        self.step(move |_| Request::Register(Box::new(spec.clone())))
    }

    pub fn submit(self, spec: JobSpec) -> Case {
        self.step(move |_| Request::Submit(Box::new(spec.clone())))
    }

    pub fn claim(self, m: usize, seq: u64, offer: Offer) -> Case {
        self.step(move |ctx| Request::Claim {
            machine: ctx.machine(m),
            seq,
            offer,
        })
    }

    /// Completes the `g`th grant (negative: from the end).
    pub fn complete(self, g: isize, outcome: Outcome) -> Case {
        self.step(move |ctx| {
            let (job, token) = ctx.lease(g);
            Request::Complete {
                job,
                token,
                outcome: outcome.clone(),
                result: None,
            }
        })
    }

    pub fn heartbeat(self, m: usize, grants: &'static [isize]) -> Case {
        self.step(move |ctx| Request::Heartbeat {
            machine: ctx.machine(m),
            leases: grants
                .iter()
                .map(|&g| {
                    let (job, token) = ctx.lease(g);
                    LeaseRef { job, token }
                })
                .collect(),
        })
    }

    pub fn reap(self) -> Case {
        self.step(|_| Request::Reap { max: 1000 })
    }

    pub fn get(self, j: usize) -> Case {
        self.step(move |ctx| Request::Get { job: ctx.job(j) })
    }

    pub fn stats(self) -> Case {
        self.step(|_| Request::Stats)
    }
}

/// Applies `case` to `target` alone and runs its checks.
pub fn run(case: &Case, target: &mut dyn Target) -> Result<(), String> {
    let mut ctx = Ctx::default();
    for (i, step) in case.steps.iter().enumerate() {
        let request = (step.make)(&ctx);
        let (reply, wakes) = target.apply_at(step.at, request.clone());
        if let Some(check) = &step.check {
            check(&ctx, &reply, &wakes)
                .map_err(|e| format!("{}: step {i} ({request:?}): {e}", case.name))?;
        }
        ctx.learn(&reply);
    }
    Ok(())
}

/// Applies `case` step by step through `apply` (given the step's index, store time and
/// request), learning ids from its answers as `run` does: for harnesses that do more around
/// each request than a `Target` (tests/redis_atomic.rs injects failures).
pub fn drive(case: &Case, mut apply: impl FnMut(usize, Time, &Request) -> Result<Reply, Refusal>) {
    let mut ctx = Ctx::default();
    for (i, step) in case.steps.iter().enumerate() {
        let request = (step.make)(&ctx);
        let reply = apply(i, step.at, &request);
        ctx.learn(&reply);
    }
}

/// Applies `case` to a fresh MemStore and to `target` in lockstep: every reply and every
/// wake-up must be identical, the state each holds after every step must be the same
/// (`compare_dumps`), and the case's checks must hold.
pub fn run_paired(case: &Case, target: &mut dyn Target) -> Result<(), String> {
    let mut reference = MemStore::new(case.config.clone());
    reference.record_journal();
    let mut ctx = Ctx::default();
    for (i, step) in case.steps.iter().enumerate() {
        let request = (step.make)(&ctx);
        let (want, want_wakes) = reference.apply_at(step.at, request.clone());
        let (got, got_wakes) = target.apply_at(step.at, request.clone());
        if got != want {
            return Err(format!(
                "{}: step {i} ({request:?}):\n  MemStore: {want:?}\n  target:   {got:?}",
                case.name
            ));
        }
        if got_wakes != want_wakes {
            return Err(format!(
                "{}: step {i} ({request:?}): MemStore woke {want_wakes:?}, target woke {got_wakes:?}",
                case.name
            ));
        }
        if let Some(journal) = target.journal() {
            let want = Target::journal(&mut reference).unwrap_or_default();
            if journal != want {
                return Err(format!(
                    "{}: step {i} ({request:?}): journals differ:\n  MemStore: {:?}\n  target:   {:?}",
                    case.name,
                    want.last(),
                    journal.last()
                ));
            }
        }
        compare_dumps(&reference.dump(), &target.dump())
            .map_err(|e| format!("{}: after step {i} ({request:?}): {e}", case.name))?;
        if let Some(check) = &step.check {
            check(&ctx, &got, &got_wakes)
                .map_err(|e| format!("{}: step {i} ({request:?}): {e}", case.name))?;
        }
        ctx.learn(&got);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

/// The suite's config: two catalog models, short windows so that judgement and purging happen
/// within a case.
pub fn config() -> EngineConfig {
    EngineConfig {
        retention: Span::from_secs(300),
        unworkable_after: Span::from_secs(180),
        models: vec![
            CatalogModel {
                name: "sdxl".into(),
                size_gb: 7,
            },
            CatalogModel {
                name: "llama".into(),
                size_gb: 30,
            },
        ],
        ..EngineConfig::default()
    }
}

pub fn machine(name: &str, gpus: u32, mem: u32) -> MachineSpec {
    MachineSpec {
        name: name.into(),
        pool: "p".into(),
        gpus,
        gpu_model: "A100".into(),
        gpu_mem_gb: mem,
        disk_gb: 100,
        labels: Labels::new(),
        cost_per_hour: 1.5,
        kinds: Vec::new(),
    }
}

pub fn job(gpus: u32, mem: u32) -> JobSpec {
    JobSpec::new(
        "sleep",
        Arc::new(Requirements {
            gpus,
            gpu_mem_gb: mem,
            ..Default::default()
        }),
    )
}

pub fn job_with(gpus: u32, mem: u32, edit: impl FnOnce(&mut JobSpec)) -> JobSpec {
    let mut spec = job(gpus, mem);
    edit(&mut spec);
    spec
}

pub fn requirements(spec: &mut JobSpec, edit: impl FnOnce(&mut Requirements)) {
    let mut req = (*spec.requirements).clone();
    edit(&mut req);
    spec.requirements = Arc::new(req);
}

pub fn offer(gpus: u32, mem: u32) -> Offer {
    Offer {
        free_gpus: gpus,
        gpu_mem_gb: mem,
        free_disk_gb: 100,
        cached: ModelSet::EMPTY,
    }
}

pub fn error(retryable: bool) -> Outcome {
    Outcome::Failed(Failure::Error {
        retryable,
        message: "boom".into(),
    })
}

fn list(items: &[&str]) -> LabelValue {
    LabelValue::List(items.iter().map(|s| s.to_string()).collect())
}

fn is_state(
    ctx: &Ctx,
    j: usize,
    state: StateName,
    reply: &Result<Reply, Refusal>,
) -> Result<(), String> {
    match reply {
        Ok(Reply::Job(view)) if view.id == ctx.job(j) && view.state == state => Ok(()),
        other => Err(format!("expected job {j} {state:?}, got {other:?}")),
    }
}

fn state_is(
    j: usize,
    state: StateName,
) -> impl Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String> {
    move |ctx, reply, _| is_state(ctx, j, state, reply)
}

fn granted(n: usize) -> impl Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String> {
    move |_, reply, _| match reply {
        Ok(Reply::Claimed { grants, .. }) if grants.len() == n => Ok(()),
        other => Err(format!("expected {n} grants, got {other:?}")),
    }
}

fn purged(n: u32) -> impl Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String> {
    move |_, reply, _| match reply {
        Ok(Reply::Reaped(report)) if report.purged == n => Ok(()),
        other => Err(format!("expected {n} purged, got {other:?}")),
    }
}

/// Machine "a" with 4 GPUs holding the leases of four 1-GPU jobs.
fn four_jobs_leased(case: Case) -> Case {
    case.register("a", 4, 24)
        .submit(job(1, 8))
        .submit(job(1, 8))
        .submit(job(1, 8))
        .submit(job(1, 8))
        .claim(0, 1, offer(4, 24))
}

fn granted_jobs(
    jobs: &'static [usize],
) -> impl Fn(&Ctx, &Result<Reply, Refusal>, &[MachineId]) -> Result<(), String> {
    move |ctx, reply, _| {
        let want: Vec<JobId> = jobs.iter().map(|&j| ctx.job(j)).collect();
        match reply {
            Ok(Reply::Claimed { grants, .. }) => {
                let got: Vec<JobId> = grants.iter().map(|g| g.job).collect();
                if got == want {
                    Ok(())
                } else {
                    Err(format!("expected grants of {want:?}, got {got:?}"))
                }
            }
            other => Err(format!("expected a claim, got {other:?}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

/// A complete of lease `(job, token)` that returns `json`.
fn returned((job, token): (JobId, Token), outcome: Outcome, json: &str) -> Request {
    Request::Complete {
        job,
        token,
        outcome,
        result: Some(JobResult::new(json)),
    }
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("submit, claim, complete")
            .register("m", 1, 24)
            .submit(job(1, 16))
            .claim(0, 1, offer(1, 24))
            .expect(granted(1))
            .complete(0, Outcome::Succeeded)
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Succeeded,
                })
            })
            .get(0)
            .expect(state_is(0, StateName::Succeeded))
            .complete(0, Outcome::Succeeded)
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Succeeded,
                })
            }),
        Case::new("priority then fifo, and multi-grant")
            .register("m", 4, 80)
            .submit(job_with(1, 8, |s| s.priority = 10))
            .submit(job_with(1, 8, |s| s.priority = 90))
            .submit(job(1, 8))
            .submit(job(1, 8))
            .submit(job(1, 8))
            .at(2)
            .claim(0, 1, offer(4, 80))
            .expect(granted_jobs(&[1, 2, 3, 4])),
        Case::new("failures retry with backoff, then die")
            .register("m", 1, 24)
            .submit(job_with(1, 8, |s| s.max_attempts = 2))
            .claim(0, 1, offer(1, 24))
            .complete(-1, error(true))
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Delayed,
                })
            })
            .at_us(1_400_000)
            .claim(0, 2, offer(1, 24))
            .expect(granted(0))
            .at(5)
            .claim(0, 3, offer(1, 24))
            .expect(granted(1))
            .complete(-1, error(true))
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Dead,
                })
            })
            .submit(job(1, 8))
            .claim(0, 4, offer(1, 24))
            .complete(-1, error(false))
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Dead,
                })
            })
            .stats(),
        Case::new("reported timeouts end timed_out; disk full retries")
            .register("m", 1, 24)
            .submit(job_with(1, 8, |s| s.max_attempts = 1))
            .submit(job_with(1, 8, |s| s.max_attempts = 3))
            .claim(0, 1, offer(1, 24))
            .complete(-1, Outcome::Failed(Failure::TimedOut))
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::TimedOut,
                })
            })
            .claim(0, 2, offer(1, 24))
            .complete(-1, Outcome::Failed(Failure::DiskFull))
            .expect_reply(|_| {
                Ok(Reply::Recorded {
                    state: StateName::Delayed,
                })
            })
            .get(1),
        Case::new("leases that expire together on two machines are reaped lowest job first")
            .with_config(|c| c.machine_ttl = Span::from_secs(600))
            .register("a", 1, 24)
            .register("b", 1, 24)
            .submit(job(1, 8))
            .submit(job_with(1, 8, |s| s.priority = 90))
            // `a` (the lower machine id) takes the urgent second job, `b` the first: both leases
            // expire at the same time, and the earlier job is on the later machine.
            .claim(0, 1, offer(1, 24))
            .claim(1, 1, offer(1, 24))
            .at(100)
            .step(|_| Request::Reap { max: 1 })
            .get(0)
            .get(1)
            .step(|_| Request::Reap { max: 1 })
            .get(1),
        Case::new("stale tokens are fenced")
            .with_config(|c| c.machine_ttl = Span::from_secs(600))
            .register("a", 1, 24)
            .register("b", 1, 24)
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .at(100)
            .reap()
            .at(102)
            .claim(1, 1, offer(1, 24))
            .expect(granted(1))
            .complete(0, Outcome::Succeeded)
            .expect(|ctx, r, _| match r {
                Err(Refusal::Stale { job, .. }) if *job == ctx.job(0) => Ok(()),
                other => Err(format!("expected stale, got {other:?}")),
            })
            .step(|ctx| Request::Release {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
            })
            .step(|ctx| Request::Progress {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
                percent: 5,
                message: "old".into(),
            })
            .complete(1, Outcome::Succeeded)
            .step(|ctx| Request::Complete {
                job: ctx.lease(1).0,
                token: Token(ctx.lease(1).1 .0 + 7),
                outcome: Outcome::Succeeded,
                result: None,
            })
            .step(|_| Request::Complete {
                job: JobId(999),
                token: Token(1),
                outcome: Outcome::Succeeded,
                result: None,
            }),
        Case::new("a repeated claim seq answers the first grants")
            .register("m", 2, 24)
            .submit(job(1, 8))
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .claim(0, 1, offer(2, 24))
            .expect(granted(1))
            .complete(0, Outcome::Succeeded)
            .claim(0, 1, offer(2, 24))
            .expect(granted(0))
            .claim(0, 0, offer(2, 24))
            .claim(0, 2, offer(2, 24))
            .expect(granted(1)),
        Case::new("heartbeats renew leases and revoke others' and over-time ones")
            .register("a", 2, 24)
            .register("b", 2, 24)
            .submit(job_with(1, 8, |s| s.timeout = Span::from_secs(20)))
            .submit(job(1, 8))
            .claim(0, 1, offer(2, 24))
            .at(10)
            .heartbeat(0, &[0, 1])
            .heartbeat(1, &[0])
            .at(25)
            .heartbeat(0, &[0, 1])
            .expect(|_, r, _| match r {
                Ok(Reply::Heartbeat { leases })
                    if leases[0] == LeaseStatus::Revoked
                        && matches!(leases[1], LeaseStatus::Renewed { .. }) =>
                {
                    Ok(())
                }
                other => Err(format!("expected revoked then renewed, got {other:?}")),
            })
            .get(0)
            .heartbeat(5, &[]),
        Case::new("lost machines' jobs are requeued; the machine must register again")
            .register("a", 1, 24)
            .register("b", 1, 24)
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .at(20)
            .heartbeat(1, &[])
            .at(40)
            .reap()
            .expect(|_, r, _| match r {
                Ok(Reply::Reaped(report)) if report.machines_lost == 1 && report.requeued == 1 => {
                    Ok(())
                }
                other => Err(format!("expected one lost, one requeued: {other:?}")),
            })
            .claim(0, 2, offer(1, 24))
            .expect_reply(|ctx| Err(Refusal::MachineLost(ctx.machine(0))))
            .register("a", 1, 24)
            .at(45)
            .claim(0, 3, offer(1, 24))
            .expect(granted(1))
            .step(|_| Request::ListMachines { limit: 10 }),
        // 150 leases are 300 numbers in the machine's lease list: more than RedisStore packs
        // in one piece.
        Case::new("a machine holding hundreds of leases is lost with all of them")
            .register("a", 0, 24)
            .then(|case| (0..150).fold(case, |case, _| case.submit(job(0, 0))))
            .then(|case| (1..=10).fold(case, |case, seq| case.claim(0, seq, offer(0, 24))))
            .step(|_| Request::ListMachines { limit: 10 })
            .at(40)
            .reap()
            .expect(|_, r, _| match r {
                Ok(Reply::Reaped(report))
                    if report.machines_lost == 1 && report.requeued == 150 =>
                {
                    Ok(())
                }
                other => Err(format!("expected one lost, 150 requeued: {other:?}")),
            })
            .step(|_| Request::ListMachines { limit: 10 }),
        Case::new("expired leases are reaped; the job runs again")
            .with_config(|c| c.machine_ttl = Span::from_secs(600))
            .register("a", 1, 24)
            .submit(job_with(1, 8, |s| s.max_attempts = 2))
            .claim(0, 1, offer(1, 24))
            .at(40)
            .reap()
            .at(50)
            .reap()
            .claim(0, 2, offer(1, 24))
            .expect(granted(1))
            .at(90)
            .reap()
            .get(0)
            .expect(state_is(0, StateName::Dead)),
        Case::new("over-time leases end timed_out at the reaper")
            .register("a", 1, 24)
            .submit(job_with(1, 8, |s| {
                s.timeout = Span::from_secs(15);
                s.max_attempts = 1
            }))
            .claim(0, 1, offer(1, 24))
            .at(10)
            .heartbeat(0, &[0])
            .at(16)
            .reap()
            .expect(|_, r, _| match r {
                Ok(Reply::Reaped(report)) if report.timed_out == 1 => Ok(()),
                other => Err(format!("expected a timeout: {other:?}")),
            }),
        Case::new("release gives the job back uncharged")
            .register("a", 1, 24)
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .step(|ctx| Request::Release {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
            })
            .expect_reply(|_| Ok(Reply::Released))
            .step(|ctx| Request::Release {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
            })
            .complete(0, Outcome::Succeeded)
            .claim(0, 2, offer(1, 24))
            .expect(|_, r, _| match r {
                Ok(Reply::Claimed { grants, .. })
                    if grants.len() == 1 && grants[0].attempt == 1 =>
                {
                    Ok(())
                }
                other => Err(format!("expected attempt 1 again: {other:?}")),
            }),
        Case::new("cancel in every state")
            .register("a", 1, 24)
            .submit(job(1, 8))
            .submit(job(1, 8))
            .submit(job(4, 8))
            .claim(0, 1, offer(1, 24))
            .step(|ctx| Request::Cancel { job: ctx.job(0) })
            .step(|ctx| Request::Cancel { job: ctx.job(0) })
            .step(|ctx| Request::Cancel { job: ctx.job(1) })
            .complete(0, Outcome::Succeeded)
            .expect(|ctx, r, _| match r {
                Err(Refusal::Stale { job, .. }) if *job == ctx.job(0) => Ok(()),
                other => Err(format!("expected stale after cancel: {other:?}")),
            })
            .submit(job(1, 8))
            .claim(0, 2, offer(1, 24))
            .complete(-1, Outcome::Succeeded)
            .step(|ctx| Request::Cancel { job: ctx.job(3) })
            .expect(|ctx, r, _| match r {
                Err(Refusal::AlreadyFinished {
                    job,
                    state: StateName::Succeeded,
                }) if *job == ctx.job(3) => Ok(()),
                other => Err(format!("expected already finished: {other:?}")),
            })
            .step(|_| Request::Cancel { job: JobId(77) })
            .stats(),
        Case::new("a GPU out-of-memory retry asks for what it needed")
            .register("small", 1, 24)
            .register("big", 1, 80)
            .submit(job(1, 16))
            .claim(0, 1, offer(1, 24))
            .complete(0, Outcome::Failed(Failure::GpuOom { needed_gb: 40 }))
            .at(10)
            .claim(0, 2, offer(1, 24))
            .expect(granted(0))
            .claim(1, 1, offer(1, 80))
            .expect(|_, r, _| match r {
                Ok(Reply::Claimed { grants, .. })
                    if grants.len() == 1 && grants[0].spec.requirements.gpu_mem_gb == 40 =>
                {
                    Ok(())
                }
                other => Err(format!("expected the raised job: {other:?}")),
            })
            .get(0)
            .stats(),
        Case::new("jobs no machine can run end unworkable, naming what no machine has")
            .register("a", 1, 24)
            .submit(job(8, 80))
            .submit(job(1, 8))
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| r.gpu_models = vec!["B200".into(), "H100".into()])
            }))
            .submit(job(1, 48))
            .submit(job_with(0, 0, |s| requirements(s, |r| r.disk_gb = 500)))
            .at(100)
            .heartbeat(0, &[])
            .reap()
            .at(200)
            .heartbeat(0, &[])
            .reap()
            .expect(|_, r, _| match r {
                Ok(Reply::Reaped(report)) if report.unworkable == 4 => Ok(()),
                other => Err(format!("expected four unworkable: {other:?}")),
            })
            .get(0)
            .get(2)
            .get(3)
            .get(4)
            .at(1000)
            .reap(),
        Case::new("kinds: a machine takes only the kinds it runs; one nobody runs is unworkable")
            .register_spec(MachineSpec {
                kinds: vec!["command".into(), "sleep".into()],
                ..machine("runs-sleep", 1, 24)
            })
            .register_spec(MachineSpec {
                kinds: vec!["render".into()],
                ..machine("runs-render", 1, 24)
            })
            .submit(job_with(1, 8, |s| s.kind = "render".into()))
            .submit(job_with(1, 8, |s| s.kind = "train".into()))
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .expect(granted_jobs(&[2]))
            .claim(1, 1, offer(1, 24))
            .expect(granted_jobs(&[0]))
            .at(100)
            .heartbeat(0, &[])
            .heartbeat(1, &[])
            .at(200)
            .heartbeat(0, &[])
            .heartbeat(1, &[])
            .reap()
            .expect(|_, r, _| match r {
                Ok(Reply::Reaped(report)) if report.unworkable == 1 => Ok(()),
                other => Err(format!("expected the train job unworkable: {other:?}")),
            })
            .get(1)
            .step(|_| Request::ListMachines { limit: 10 }),
        Case::new("finished jobs and their idempotency keys are purged after retention")
            .register("a", 1, 24)
            .submit(job_with(1, 8, |s| s.idempotency_key = Some("k".into())))
            .submit(job_with(1, 8, |s| s.idempotency_key = Some("k".into())))
            .expect(|ctx, r, _| match r {
                Ok(Reply::Submitted {
                    job,
                    created: false,
                }) if *job == ctx.job(0) => Ok(()),
                other => Err(format!("expected the first job: {other:?}")),
            })
            .claim(0, 1, offer(1, 24))
            .complete(0, Outcome::Succeeded)
            .at(200)
            .heartbeat(0, &[])
            .reap()
            .at(400)
            .reap()
            .expect(purged(1))
            .get(0)
            .submit(job_with(1, 8, |s| s.idempotency_key = Some("k".into())))
            .expect(|_, r, _| match r {
                Ok(Reply::Submitted { created: true, .. }) => Ok(()),
                other => Err(format!("expected a new job: {other:?}")),
            }),
        Case::new("jobs finished together are purged oldest first, a few at a time")
            .with_config(|c| c.machine_ttl = Span::from_secs(600))
            .then(four_jobs_leased)
            .step(|ctx| {
                Request::Batch(
                    (0..3)
                        .map(|g| Request::Complete {
                            job: ctx.lease(g).0,
                            token: ctx.lease(g).1,
                            outcome: Outcome::Succeeded,
                            result: None,
                        })
                        .collect(),
                )
            })
            .at(10)
            .complete(3, Outcome::Succeeded)
            .at(400)
            .step(|_| Request::Reap { max: 1 })
            .expect(purged(1))
            .get(0)
            .get(1)
            .step(|_| Request::Reap { max: 3 })
            .get(2)
            .get(3)
            .stats(),
        Case::new("wake-ups go to the longest-waiting idle machine that fits")
            .register("a", 1, 24)
            .register("b", 1, 80)
            .register("c", 1, 80)
            .claim(1, 1, offer(1, 80))
            .claim(0, 1, offer(1, 24))
            .claim(2, 1, offer(1, 80))
            .submit(job(1, 40))
            .expect_wakes(&[1])
            .submit(job(1, 8))
            .expect_wakes(&[0])
            .submit(job(1, 8))
            .expect_wakes(&[2])
            .submit(job(1, 8))
            .expect_wakes(&[])
            .step(|_| Request::ListMachines { limit: 2 }),
        Case::new("labels: subsets, minimums, equality, negatives")
            .register_spec(MachineSpec {
                labels: [
                    ("features".to_string(), list(&["fp8", "nvlink"])),
                    ("cuda".to_string(), LabelValue::Number(12.4)),
                    ("region".to_string(), LabelValue::Text("eu".into())),
                    ("spot".to_string(), LabelValue::Bool(true)),
                ]
                .into_iter()
                .collect(),
                ..machine("l", 2, 80)
            })
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| {
                    r.labels.insert("features".into(), list(&["nvlink"]));
                    r.labels.insert("cuda".into(), LabelValue::Number(12.0));
                })
            }))
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| {
                    r.labels.insert("cuda".into(), LabelValue::Number(12.5));
                })
            }))
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| {
                    r.not_labels.insert("spot".into(), LabelValue::Bool(true));
                })
            }))
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| {
                    r.labels
                        .insert("region".into(), LabelValue::Text("eu".into()));
                    r.not_labels
                        .insert("region".into(), LabelValue::Text("us".into()));
                    r.gpu_models = vec!["H100".into(), "A100".into()];
                })
            }))
            .claim(0, 1, offer(2, 80))
            .expect(granted_jobs(&[0, 3]))
            .claim(0, 2, offer(2, 80))
            .expect(granted(0)),
        Case::new("warm models and snug fits win; downloads need disk")
            .register("m", 2, 80)
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| r.models = ModelSet::EMPTY.with(ModelId(1)))
            }))
            .submit(job_with(1, 8, |s| {
                requirements(s, |r| r.models = ModelSet::EMPTY.with(ModelId(0)))
            }))
            .submit(job(1, 80))
            .claim(
                0,
                1,
                Offer {
                    cached: ModelSet::EMPTY.with(ModelId(0)),
                    ..offer(1, 80)
                },
            )
            .claim(
                0,
                2,
                Offer {
                    free_disk_gb: 10,
                    ..offer(1, 80)
                },
            )
            .claim(
                0,
                3,
                Offer {
                    cached: ModelSet::EMPTY.with(ModelId(1)),
                    ..offer(2, 80)
                },
            ),
        Case::new("aging lets an old low-priority job pass")
            .register("m", 1, 80)
            .submit(job_with(1, 79, |s| s.priority = 50))
            .at(4000)
            .heartbeat(0, &[])
            .submit(job_with(1, 80, |s| s.priority = 55))
            .claim(0, 1, offer(1, 80))
            .expect(granted_jobs(&[0])),
        Case::new("limits: jobs, classes, machines, heartbeats, batches")
            .with_config(|c| {
                c.limits.max_jobs = 2;
                c.limits.max_classes = 2;
                c.limits.max_machines = 1;
                c.limits.max_leases_per_heartbeat = 1;
                c.limits.max_batch = 2;
            })
            .register("a", 1, 24)
            .register("b", 1, 24)
            .expect_reply(|_| {
                Err(Refusal::Full {
                    what: "machines",
                    limit: 1,
                })
            })
            .submit(job(1, 8))
            .submit(job(2, 8))
            .submit(job(3, 8))
            .submit(job_with(1, 8, |s| s.payload = "x".repeat(70_000)))
            .heartbeat(0, &[0, 1])
            .step(|_| Request::Batch(vec![Request::Stats, Request::Stats, Request::Stats]))
            .step(|_| Request::Batch(vec![Request::Batch(vec![])]))
            .step(|_| {
                Request::Register(Box::new(MachineSpec {
                    cost_per_hour: -1.0,
                    ..machine("c", 1, 8)
                }))
            }),
        Case::new(
            "machines that left are forgotten after retention; the limit counts those present",
        )
        .with_config(|c| {
            c.limits.max_machines = 2;
            c.machine_ttl = Span::from_secs(600);
        })
        .register("a", 1, 24)
        .register("b", 1, 24)
        .register("c", 1, 24)
        .expect_reply(|_| {
            Err(Refusal::Full {
                what: "machines",
                limit: 2,
            })
        })
        .step(|c| Request::Deregister {
            machine: c.machine(0),
        })
        .register("c", 1, 24)
        .expect(|_, reply, _| match reply {
            Ok(Reply::Registered { .. }) => Ok(()),
            other => Err(format!("c is refused though a left: {other:?}")),
        })
        .register("d", 1, 24)
        .expect_reply(|_| {
            Err(Refusal::Full {
                what: "machines",
                limit: 2,
            })
        })
        .at(200)
        .reap()
        .expect_reply(|_| Ok(Reply::Reaped(ReapReport::default())))
        .heartbeat(1, &[])
        .heartbeat(2, &[])
        .stats()
        .at(302)
        .reap()
        .expect_reply(|_| {
            Ok(Reply::Reaped(ReapReport {
                forgotten: 1,
                ..ReapReport::default()
            }))
        })
        .stats()
        .step(|_| Request::ListMachines { limit: 10 })
        .expect(|c, reply, _| match reply {
            Ok(Reply::Machines(list)) if list.iter().all(|m| m.id != c.machine(0)) => Ok(()),
            other => Err(format!("machine a is still listed: {other:?}")),
        })
        .step(|c| Request::Deregister {
            machine: c.machine(1),
        })
        // A forgotten machine registering again is a new one.
        .register("a", 1, 24)
        .expect(|c, reply, _| match reply {
            Ok(Reply::Registered { machine }) if *machine != c.machine(0) => Ok(()),
            other => Err(format!("a forgotten machine got its old id: {other:?}")),
        }),
        Case::new("a batch applies each request in order")
            .register("a", 2, 24)
            .step(|_| {
                Request::Batch(vec![
                    Request::Submit(Box::new(job(1, 8))),
                    Request::Submit(Box::new(job_with(1, 8, |s| s.priority = 200))),
                    Request::Submit(Box::new(job(1, 8))),
                ])
            })
            .step(|ctx| {
                Request::Batch(vec![
                    Request::Heartbeat {
                        machine: ctx.machine(0),
                        leases: vec![],
                    },
                    Request::Claim {
                        machine: ctx.machine(0),
                        seq: 1,
                        offer: offer(2, 24),
                    },
                    Request::Stats,
                ])
            })
            .step(|ctx| {
                Request::Batch(vec![
                    Request::Complete {
                        job: ctx.lease(0).0,
                        token: ctx.lease(0).1,
                        outcome: Outcome::Succeeded,
                        result: None,
                    },
                    Request::Complete {
                        job: ctx.lease(1).0,
                        token: ctx.lease(1).1,
                        outcome: error(true),
                        result: None,
                    },
                    Request::Claim {
                        machine: ctx.machine(0),
                        seq: 2,
                        offer: offer(2, 24),
                    },
                ])
            }),
        Case::new("successes in a batch: live, repeated, stale, unknown, between failures")
            .then(four_jobs_leased)
            .step(|ctx| {
                let success = |(job, token)| Request::Complete {
                    job,
                    token,
                    outcome: Outcome::Succeeded,
                    result: None,
                };
                let (job, token) = ctx.lease(2);
                Request::Batch(vec![
                    success(ctx.lease(0)),
                    success(ctx.lease(0)),
                    success((job, Token(token.0 + 1))),
                    success((JobId(424_242), Token(1))),
                    success(ctx.lease(99)),
                    Request::Complete {
                        job: ctx.lease(1).0,
                        token: ctx.lease(1).1,
                        outcome: error(true),
                        result: None,
                    },
                    success(ctx.lease(2)),
                    success(ctx.lease(1)),
                    success(ctx.lease(3)),
                    Request::Stats,
                ])
            })
            .get(0)
            .get(2),
        Case::new("results: kept with a success, bounded, dropped with a failure, purged")
            .then(four_jobs_leased)
            .step(|ctx| returned(ctx.lease(0), Outcome::Succeeded, r#"{"images":["a.png"]}"#))
            .step(|ctx| returned(ctx.lease(0), Outcome::Succeeded, r#"{"again":1}"#))
            .step(|ctx| returned(ctx.lease(1), error(false), r#"{"lost":true}"#))
            .step(|ctx| returned(ctx.lease(2), Outcome::Succeeded, &"x".repeat(70_000)))
            .expect(|_, r, _| match r {
                Err(Refusal::Invalid(invalid)) if invalid.field == "result" => Ok(()),
                other => Err(format!("expected a refused result, got {other:?}")),
            })
            .step(|ctx| {
                let ok = returned(ctx.lease(2), Outcome::Succeeded, "[1,2]");
                Request::Batch(vec![
                    returned(ctx.lease(3), Outcome::Succeeded, &"y".repeat(70_000)),
                    ok,
                ])
            })
            .get(0)
            .get(1)
            .get(2)
            .at(10_000)
            .reap()
            .get(0),
        Case::new("progress is fenced, truncated and kept")
            .register("a", 1, 24)
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .step(|ctx| Request::Progress {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
                percent: 250,
                message: "é".repeat(200),
            })
            .expect_reply(|_| Ok(Reply::ProgressNoted))
            .get(0)
            .step(|_| Request::Progress {
                job: JobId(42),
                token: Token(1),
                percent: 1,
                message: String::new(),
            })
            .complete(0, Outcome::Succeeded)
            .get(0),
        Case::new("listings and stats")
            .register("a", 2, 24)
            .register("b", 1, 80)
            .submit(job(1, 8))
            .submit(job(1, 8))
            .submit(job(1, 40))
            .submit(job_with(0, 0, |s| s.kind = "cpu".into()))
            .claim(0, 1, offer(2, 24))
            .complete(0, Outcome::Succeeded)
            .at(30)
            .heartbeat(1, &[])
            .step(|_| Request::ListJobs {
                state: None,
                after: None,
                limit: 10,
            })
            .step(|_| Request::ListJobs {
                state: Some(StateName::Queued),
                after: None,
                limit: 1,
            })
            .step(|ctx| Request::ListJobs {
                state: None,
                after: Some(ctx.job(1)),
                limit: 2,
            })
            .step(|_| Request::ListJobs {
                state: Some(StateName::Succeeded),
                after: None,
                limit: 0,
            })
            .step(|_| Request::ListMachines { limit: 10 })
            .step(|_| Request::ListMachines { limit: 0 })
            .stats(),
        Case::new("deregister revokes leases; re-register keeps the id")
            .register("a", 1, 24)
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .step(|ctx| Request::Deregister {
                machine: ctx.machine(0),
            })
            .expect_reply(|_| Ok(Reply::Deregistered { revoked: 1 }))
            .step(|ctx| Request::Deregister {
                machine: ctx.machine(0),
            })
            .expect_reply(|_| Ok(Reply::Deregistered { revoked: 0 }))
            .step(|_| Request::Deregister {
                machine: MachineId(3),
            })
            .register("a", 2, 80)
            .expect_reply(|ctx| {
                Ok(Reply::Registered {
                    machine: ctx.machine(0),
                })
            })
            .at(5)
            .claim(0, 1, offer(2, 80)),
        Case::new("store clock: ids and tokens follow it")
            .at(1_700_000_000)
            .register("a", 1, 24)
            .expect_reply(|_| {
                Ok(Reply::Registered {
                    machine: MachineId(1_700_000_000_000_000),
                })
            })
            .submit(job(1, 8))
            .claim(0, 1, offer(1, 24))
            .expect(|_, r, _| match r {
                Ok(Reply::Claimed { grants, .. })
                    if grants[0].token == Token(1_700_000_000_000_000) =>
                {
                    Ok(())
                }
                other => Err(format!("expected the clock as token: {other:?}")),
            })
            .step(|ctx| Request::Release {
                job: ctx.lease(0).0,
                token: ctx.lease(0).1,
            })
            .claim(0, 2, offer(1, 24))
            .expect(|_, r, _| match r {
                Ok(Reply::Claimed { grants, .. })
                    if grants[0].token == Token(1_700_000_000_000_001) =>
                {
                    Ok(())
                }
                other => Err(format!("expected token + 1: {other:?}")),
            })
            .at_us(1_700_000_000_123_457)
            .heartbeat(0, &[-1]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_holds_on_memstore() {
        for case in cases() {
            let mut store = MemStore::new(case.config.clone());
            run(&case, &mut store).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn memstore_conforms_to_itself() {
        for case in cases() {
            let mut store = MemStore::new(case.config.clone());
            run_paired(&case, &mut store).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
