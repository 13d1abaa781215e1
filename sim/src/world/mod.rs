//! The simulated world: the fleet with its agents and executors, the network between each
//! machine and Redis, Redis itself, the producers, the reaper and the faults, all driven by one
//! event queue under virtual time. The engine code (store, agents, reaper, checker) is the
//! production code; only the world around it is simulated.

mod faults;
mod fleet;
mod network;
mod producer;
mod redis;
mod store_link;

use crate::events::EventQueue;
use crate::metrics::Metrics;
use crate::rng::{stream, Rng};
use crate::scenario::Scenario;
use crate::trace::Trace;
use crate::workload::ArrivalProcess;
use drover_engine::check::{Checker, HistoryEvent};
use drover_engine::core::{EngineConfig, JobId, MachineId, Requirements, Span, Time, Token};
use drover_engine::reaper::Reaper;
use drover_engine::store::{MemStore, Refusal, Reply, Request};
use faults::ActiveFault;
pub use faults::{planned_faults, FaultRecord};
use fleet::SimMachine;
use producer::Producer;
use redis::SimRedis;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Who sent a request to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Machine(u32),
    Reaper,
}

#[derive(Debug)]
pub enum Event {
    Arrival {
        workload: u16,
    },
    /// A machine finished booting: its agent starts.
    MachineUp {
        machine: u32,
    },
    /// A machine vanishes without a word (its lifetime ended).
    MachineDeath {
        machine: u32,
    },
    AgentTimer {
        machine: u32,
    },
    ToStore {
        from: Peer,
        id: u64,
        request: Box<Request>,
    },
    ToPeer {
        to: Peer,
        id: u64,
        result: Box<Result<Reply, Refusal>>,
    },
    Wake {
        machine: u32,
    },
    AttemptDone {
        machine: u32,
        job: JobId,
        serial: u64,
    },
    ReaperTimer,
    FaultStart {
        fault: u32,
    },
    FaultEnd {
        fault: u32,
    },
    RedisUp,
    /// aof-everysec: the state Redis would come back with is taken here.
    Fsync,
    RetrySubmits,
}

impl Event {
    /// The event's kind and ids, for the trace digest.
    fn trace_key(&self) -> (u8, u64, u64, u64) {
        match self {
            Event::Arrival { workload } => (1, *workload as u64, 0, 0),
            Event::MachineUp { machine } => (2, *machine as u64, 0, 0),
            Event::MachineDeath { machine } => (3, *machine as u64, 0, 0),
            Event::AgentTimer { machine } => (4, *machine as u64, 0, 0),
            Event::ToStore { from, id, request } => (5, peer_key(*from), *id, request_tag(request)),
            Event::ToPeer { to, id, result } => (6, peer_key(*to), *id, result.is_ok() as u64),
            Event::Wake { machine } => (7, *machine as u64, 0, 0),
            Event::AttemptDone {
                machine,
                job,
                serial,
            } => (8, *machine as u64, job.0, *serial),
            Event::ReaperTimer => (9, 0, 0, 0),
            Event::FaultStart { fault } => (10, *fault as u64, 0, 0),
            Event::FaultEnd { fault } => (11, *fault as u64, 0, 0),
            Event::RedisUp => (12, 0, 0, 0),
            Event::Fsync => (13, 0, 0, 0),
            Event::RetrySubmits => (14, 0, 0, 0),
        }
    }
}

/// The name of each event kind, indexed by its trace tag (`Event::trace_key`): how
/// `events_by_kind` is keyed in reports. Tags 0 and 15 are unused.
pub const EVENT_NAMES: [&str; 16] = [
    "unused_0",
    "arrival",
    "machine_up",
    "machine_death",
    "agent_timer",
    "to_store",
    "to_peer",
    "wake",
    "attempt_done",
    "reaper_timer",
    "fault_start",
    "fault_end",
    "redis_up",
    "fsync",
    "retry_submits",
    "unused_15",
];

/// Writes the per-tag counts as an object keyed by event name, leaving out unused tags.
fn events_by_name<S: serde::Serializer>(counts: &[u64; 16], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    for (name, count) in EVENT_NAMES.iter().zip(counts) {
        if !name.starts_with("unused") {
            map.serialize_entry(name, count)?;
        }
    }
    map.end()
}

fn peer_key(peer: Peer) -> u64 {
    match peer {
        Peer::Machine(m) => m as u64,
        Peer::Reaper => u64::MAX,
    }
}

fn request_tag(request: &Request) -> u64 {
    match request {
        Request::Submit(_) => 1,
        Request::Cancel { job } => 2 | job.0 << 8,
        Request::Get { job } => 3 | job.0 << 8,
        Request::Register(_) => 4,
        Request::Deregister { machine } => 5 | machine.0 << 8,
        Request::Heartbeat { leases, .. } => 6 | (leases.len() as u64) << 8,
        Request::Claim { seq, .. } => 7 | seq << 8,
        Request::Complete { job, token, .. } => 8 | (job.0 ^ token.0) << 8,
        Request::Release { job, .. } => 9 | job.0 << 8,
        Request::Reap { .. } => 10,
        Request::Batch(requests) => 11 | (requests.len() as u64) << 8,
        Request::Progress { job, .. } => 12 | job.0 << 8,
        Request::ListJobs { .. } => 13,
        Request::ListMachines { .. } => 14,
        Request::Stats => 15,
    }
}

/// What the simulator knows of a job the store holds: which workload made it, how long it
/// runs, and when its last lease began. Rolled back with the store on a lossy restart.
#[derive(Clone, Copy, Debug)]
pub struct SimJob {
    pub logical: u64,
    pub workload: u16,
    pub service: Span,
    pub submitted_at: Time,
    pub last_lease: Option<(Token, Time)>,
    /// GPU-seconds of the last attempt that ran to its end, by token.
    pub last_done: Option<(Token, f64)>,
}

/// The state a lossy Redis restart rolls back to: taken together, restored together.
struct Snapshot {
    store: MemStore,
    checker: Checker,
    jobs: FxHashMap<JobId, SimJob>,
    figures: crate::metrics::PerJobFigures,
}

/// Streams of randomness, one per subsystem.
struct Streams {
    arrivals: Vec<Rng>,
    service: Vec<Rng>,
    lifetimes: Vec<Rng>,
    execution: Rng,
    network: Rng,
    faults: Rng,
}

pub struct World {
    pub scenario: Arc<Scenario>,
    config: Arc<EngineConfig>,
    queue: EventQueue<Event>,
    now: Time,
    redis: SimRedis,
    snapshot: Option<Snapshot>,
    pub checker: Checker,
    jobs: FxHashMap<JobId, SimJob>,
    machines: Vec<SimMachine>,
    by_store_id: FxHashMap<MachineId, u32>,
    /// Machines alive (booting or up) per pool.
    alive_per_pool: Vec<u32>,
    reaper: Reaper,
    reaper_timer: Option<Time>,
    producer: Producer,
    arrivals: Vec<ArrivalProcess>,
    arrivals_open: usize,
    requirements: Vec<Arc<Requirements>>,
    faults: Vec<ActiveFault>,
    /// When the last fault heals (at least the end of arrivals).
    pub quiet_from: Time,
    /// Jobs a lost machine was running, with the time it was lost.
    orphans: FxHashMap<JobId, Time>,
    /// Jobs whose lease the store revoked and requeued, with when: to measure how soon they
    /// are leased again.
    revoked_at: FxHashMap<JobId, Time>,
    streams: Streams,
    history: Vec<HistoryEvent>,
    next_serial: u64,
    pub metrics: Metrics,
    /// The run over time, for charts; sampling it changes nothing else.
    pub timeline: crate::timeline::Timeline,
    pub trace: Trace,
    pub stats: WorldStats,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct WorldStats {
    pub machines_booted: u64,
    /// Machines that vanished: killed by a fault or at the end of their lifetime.
    pub machines_lost: u64,
    pub machines_drained: u64,
    /// Machines the store declared lost (their heartbeat expired: dead, or cut off), as the
    /// reaper reported.
    pub machines_declared_lost: u64,
    /// Registrations beyond each machine's first: machines that came back after the store
    /// declared them lost or forgot them.
    pub machines_registered_again: u64,
    /// Leases the store ended without their holder's outcome (expired, machine lost, over
    /// time, cancelled), from the store's history.
    pub leases_revoked: u64,
    /// Running attempts agents stopped because the store told them their lease was gone.
    pub attempts_stopped_revoked: u64,
    pub requests: u64,
    pub requests_dropped: u64,
    pub replies_lost: u64,
    pub redis_restarts: u64,
    pub jobs_dropped_by_redis: u64,
    pub resubmitted: u64,
    pub submissions_refused: u64,
    pub attempts: u64,
    /// Events taken, by kind: counted by trace tag, reported keyed by `EVENT_NAMES`.
    #[serde(serialize_with = "events_by_name")]
    pub events_by_kind: [u64; 16],
    /// Attempts of jobs a Redis restart forgot after granting them.
    pub ghost_attempts: u64,
    pub gpu_ooms: u64,
    /// Outcomes the store refused because their lease token was no longer the job's (fencing).
    pub stale_outcomes: u64,
    pub evictions: u64,
    /// Times an agent's circuit breaker opened, and on how many machines it ever did.
    pub breaker_opened: u64,
    pub machines_breaker_opened: u64,
    /// Requests an agent dropped because the store failed them in a way that would repeat
    /// (MemStore never does: a non-zero count is a bug in the simulated world).
    pub store_faults: u64,
}

impl World {
    pub fn new(scenario: Arc<Scenario>, seed: u64, chaos: Option<f64>) -> World {
        let mut config = scenario.engine.clone();
        if let Some(max_jobs) = scenario.redis.max_jobs {
            config.limits.max_jobs = max_jobs;
        }
        let config = Arc::new(config);
        let warmup = Time::ZERO.plus(scenario.warmup);
        let window_end = Time::ZERO.plus(scenario.duration);
        let streams = Streams {
            arrivals: scenario
                .workloads
                .iter()
                .map(|w| stream(seed, &format!("arrivals/{}", w.name)))
                .collect(),
            service: scenario
                .workloads
                .iter()
                .map(|w| stream(seed, &format!("service/{}", w.name)))
                .collect(),
            lifetimes: scenario
                .pools
                .iter()
                .map(|p| stream(seed, &format!("lifetime/{}", p.name)))
                .collect(),
            execution: stream(seed, "execution"),
            network: stream(seed, "network"),
            faults: stream(seed, "faults"),
        };
        let faults = faults::plan(&scenario, seed, chaos);
        let requirements = producer::requirements(&scenario, &config);
        let mut world = World {
            redis: SimRedis::new((*config).clone(), scenario.redis.persistence),
            reaper: Reaper::new(config.clone(), seed ^ 0x5EA9E5, Time::ZERO),
            producer: Producer::new(
                &faults,
                scenario.redis.persistence,
                scenario.workloads.len(),
            ),
            arrivals: scenario
                .workloads
                .iter()
                .map(|w| ArrivalProcess::new(w, scenario.duration))
                .collect(),
            arrivals_open: scenario.workloads.len(),
            metrics: Metrics::new(
                warmup,
                window_end,
                scenario.redis.latency.saturating_mul(2),
                scenario.workloads.len(),
                scenario.pools.len(),
            ),
            quiet_from: window_end,
            timeline: crate::timeline::Timeline::new(scenario.duration),
            config,
            queue: EventQueue::default(),
            now: Time::ZERO,
            snapshot: None,
            checker: Checker::new(),
            jobs: FxHashMap::default(),
            machines: Vec::new(),
            by_store_id: FxHashMap::default(),
            alive_per_pool: vec![0; scenario.pools.len()],
            reaper_timer: None,
            requirements,
            faults,
            orphans: FxHashMap::default(),
            revoked_at: FxHashMap::default(),
            streams,
            history: Vec::new(),
            next_serial: 0,
            trace: Trace::default(),
            stats: WorldStats::default(),
            scenario,
        };
        world.start();
        world
    }

    fn start(&mut self) {
        for w in 0..self.arrivals.len() {
            self.schedule_next_arrival(w);
        }
        for pool in 0..self.scenario.pools.len() {
            for _ in 0..self.scenario.pools[pool].machines {
                self.provision(pool);
            }
        }
        self.schedule_faults();
        self.rearm_reaper();
    }

    pub fn now(&self) -> Time {
        self.now
    }

    /// Takes and handles the next event; false when the run is over.
    pub fn step(&mut self, horizon: Time) -> bool {
        if self.finished() {
            return false;
        }
        let Some((at, event)) = self.queue.pop() else {
            return false;
        };
        if at > horizon {
            return false;
        }
        if self.timeline.due(at) {
            let state = self.sample();
            self.timeline.record(at, state);
        }
        self.now = at;
        let (tag, a, b, c) = event.trace_key();
        self.stats.events_by_kind[tag as usize] += 1;
        self.trace.record(at.0, tag, a, b, c);
        self.handle(event);
        true
    }

    /// Arrivals are over, every job is terminal, nothing waits to be resubmitted, and the
    /// last fault has healed.
    pub fn finished(&self) -> bool {
        self.arrivals_open == 0
            && self.checker.live_jobs() == 0
            && self.producer.is_idle()
            && self.now >= self.quiet_from
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Arrival { workload } => self.on_arrival(workload as usize),
            Event::MachineUp { machine } => self.on_machine_up(machine),
            Event::MachineDeath { machine } => self.on_machine_death(machine),
            Event::AgentTimer { machine } => self.on_agent_timer(machine),
            Event::ToStore { from, id, request } => self.on_store_request(from, id, *request),
            Event::ToPeer { to, id, result } => self.on_reply(to, id, *result),
            Event::Wake { machine } => self.on_wake(machine),
            Event::AttemptDone {
                machine,
                job,
                serial,
            } => self.on_attempt_done(machine, job, serial),
            Event::ReaperTimer => self.on_reaper_timer(),
            Event::FaultStart { fault } => self.on_fault_start(fault as usize),
            Event::FaultEnd { fault } => self.on_fault_end(fault as usize),
            Event::RedisUp => self.on_redis_up(),
            Event::Fsync => self.on_fsync(),
            Event::RetrySubmits => self.on_retry_submits(),
        }
    }

    /// Feeds what the store recorded to the checker, the metrics and the producer.
    fn absorb_history(&mut self) {
        let mut history = std::mem::take(&mut self.history);
        self.redis.store.append_history(&mut history);
        for event in &history {
            self.checker.observe(event);
            match *event {
                HistoryEvent::Submitted { .. } => self.metrics.on_submitted(self.now),
                HistoryEvent::Leased { job, token, at, .. } => {
                    if let Some(sim) = self.jobs.get_mut(&job) {
                        sim.last_lease = Some((token, at));
                    }
                    if let Some(lost_at) = self.orphans.remove(&job) {
                        self.metrics.on_redistributed(at.since(lost_at));
                    }
                    if let Some(revoked_at) = self.revoked_at.remove(&job) {
                        self.metrics.on_leased_after_revoke(at.since(revoked_at));
                    }
                }
                HistoryEvent::Requeued { job, at, ended } => {
                    if ended.is_some_and(|e| !e.reported) {
                        self.stats.leases_revoked += 1;
                        self.revoked_at.insert(job, at);
                    }
                }
                HistoryEvent::Finished {
                    job,
                    state,
                    at,
                    ended,
                } => {
                    if ended.is_some_and(|e| !e.reported) {
                        self.stats.leases_revoked += 1;
                    }
                    self.on_job_finished(job, state, at, ended)
                }
                // The world itself emits these (GPU use), for the checker alone.
                HistoryEvent::Started { .. } | HistoryEvent::Stopped { .. } => {}
            }
        }
        history.clear();
        self.history = history;
    }

    fn on_job_finished(
        &mut self,
        job: JobId,
        state: drover_engine::core::StateName,
        at: Time,
        ended: Option<drover_engine::check::LeaseEnd>,
    ) {
        self.orphans.remove(&job);
        self.revoked_at.remove(&job);
        let Some(sim) = self.jobs.remove(&job) else {
            return;
        };
        let lease_at = sim.last_lease.map(|(_, t)| t);
        if debug_enabled()
            && lease_at.is_some_and(|l| l.since(sim.submitted_at).as_secs_f64() > 100.0)
        {
            eprintln!(
                "job {job} logical {} submitted {:?} leased {:?} finished {at:?}",
                sim.logical, sim.submitted_at, lease_at
            );
        }
        self.metrics
            .on_finished(at, state, sim.submitted_at, lease_at, sim.workload as usize);
        if state == drover_engine::core::StateName::Succeeded {
            self.metrics.ledger.jobs_succeeded += 1;
            if let (Some((token, gpu_s)), Some(end)) = (sim.last_done, ended) {
                if token == end.token {
                    self.metrics.useful_gpu_s += gpu_s;
                }
            }
        }
        self.producer.on_finished(sim.logical);
    }
}

/// Whether DROVER_DEBUG is set, read once: reading the environment on every finished job took
/// about 1% of churn-1k's instructions (libc's getenv, under a lock).
fn debug_enabled() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("DROVER_DEBUG").is_some())
}

impl World {
    /// End-of-run checks: no job lost; and if the run stopped at its horizon with jobs still
    /// live, liveness failed for those submitted before the last fault healed.
    pub fn check_end(&mut self, end: Time, horizon: Time) {
        let store = &self.redis.store;
        self.checker
            .check_nothing_lost(end, |job| store.job_state(job).map(|s| s.name()));
        if !self.finished() {
            self.checker
                .check_liveness(horizon.max(end), self.quiet_from, self.scenario.drain);
        }
    }

    /// The machines the store holds, and the machines alive.
    pub fn registry_sizes(&self) -> (u64, u64) {
        let alive: u32 = self.alive_per_pool.iter().sum();
        (self.redis.store.machine_count() as u64, u64::from(alive))
    }

    pub fn store_state(&self, job: JobId) -> Option<drover_engine::core::StateName> {
        self.redis.store.job_state(job).map(|s| s.name())
    }

    /// Machines the store declared lost, over every reaper pass.
    pub fn machines_declared_lost(&self) -> u64 {
        u64::from(self.reaper.totals.machines_lost)
    }

    pub fn events_taken(&self) -> u64 {
        self.trace.events
    }

    /// Jobs the producers got accepted (each counted once, however often resubmitted).
    pub fn jobs_accepted(&self) -> u64 {
        self.producer.accepted
    }

    /// The same, per workload.
    pub fn jobs_accepted_per_workload(&self) -> &[u64] {
        &self.producer.accepted_per_workload
    }

    /// Jobs still live at the end, per workload.
    pub fn in_flight_per_workload(&self) -> Vec<u64> {
        let mut counts = vec![0; self.scenario.workloads.len()];
        for (job, _) in self.checker.live() {
            if let Some(sim) = self.jobs.get(&job) {
                counts[sim.workload as usize] += 1;
            }
        }
        counts
    }
}
