//! `MemStore`: the store in memory, for the simulator and unit tests. It applies each request
//! to completion before the next, as a Redis script would, using the time it is given as the
//! store's clock.

mod claim;
mod dump;
mod jobs;
mod machines;
mod reap;
mod views;

use super::journal::{Journal, JournalEvent};
use super::request::{Refusal, Reply, Request};
use crate::check::history::HistoryEvent;
use crate::core::model::Profile;
use crate::core::{
    ClassId, EngineConfig, JobId, JobResult, JobSpec, JobState, MachineId, MachineSpec, Offer,
    ProfileId, Requirements, Time, Token,
};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// A job's place in its class queue: priority first, then submission order.
type QueueKey = (Reverse<u8>, u64);

#[derive(Clone, Debug)]
struct JobRecord {
    spec: Arc<JobSpec>,
    class: ClassId,
    state: JobState,
    /// Attempts started so far.
    attempt: u32,
    /// The newest token issued for this job.
    token: Token,
    /// The token whose outcome was recorded last, to answer a repeated `Complete`.
    recorded: Option<Token>,
    /// Where it sits in its class queue while queued.
    queue_key: Option<QueueKey>,
    submitted_at: Time,
    started_at: Option<Time>,
    finished_at: Option<Time>,
    /// When the current attempt runs out of time.
    attempt_deadline: Time,
    /// When the lease expires. `lease_expiry` holds an entry at or before this time (renewals
    /// do not move it; the reaper does, lazily).
    expiry: Time,
    // Boxed: rare, and a smaller record keeps the hot job map dense.
    error: Option<Box<str>>,
    progress: Option<Box<crate::core::model::Progress>>,
}

#[derive(Clone, Debug)]
struct ClassRecord {
    req: Arc<Requirements>,
    /// Queued jobs with their submission times (for aging).
    queue: BTreeMap<QueueKey, (JobId, Time)>,
    /// Per profile: 0 not judged yet, 1 never fits, 2 fits when free.
    allows: Vec<u8>,
}

#[derive(Clone, Debug)]
struct ProfileRecord {
    profile: Profile,
    /// When a machine of this profile last heartbeated, registered or claimed.
    last_seen: Option<Time>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MachineState {
    Ready,
    Lost,
    Gone,
}

#[derive(Clone, Debug)]
struct MachineRecord {
    spec: Arc<MachineSpec>,
    profile: ProfileId,
    state: MachineState,
    expires: Time,
    leases: Vec<JobId>,
    last_claim: Option<LastClaim>,
    /// While idle and waiting for a wake-up: the offer it last made and its place in line.
    waiting: Option<(u64, Offer)>,
    registered_at: Time,
    last_seen: Time,
    /// When it last left (lost or deregistered); its place in `departed` while it is gone.
    last_left: Time,
}

/// A machine's last claim: its sequence number, what it granted, and whether it left the
/// machine idle. A repeat of that claim is answered from here.
type LastClaim = (u64, Vec<(JobId, Token)>, bool);

pub use super::request::JobCounts;
pub use machines::check_machine_spec;

#[derive(Clone, Debug)]
pub struct MemStore {
    config: Arc<EngineConfig>,
    now: Time,
    next_job: u64,
    seq: u64,
    jobs: FxHashMap<JobId, JobRecord>,
    idempotency: FxHashMap<String, JobId>,
    classes: Vec<ClassRecord>,
    class_index: FxHashMap<Arc<Requirements>, ClassId>,
    /// Classes with a non-empty queue.
    nonempty: BTreeSet<ClassId>,
    profiles: Vec<ProfileRecord>,
    profile_index: BTreeMap<Profile, ProfileId>,
    machines: FxHashMap<MachineId, MachineRecord>,
    /// The last machine id issued; ids follow the store clock so none is ever reissued.
    last_machine: u64,
    machine_names: FxHashMap<String, MachineId>,
    machine_expiry: BTreeSet<(Time, MachineId)>,
    /// Machines that left (lost or deregistered, holding no lease), by when: forgotten after
    /// `retention`. They do not count against `max_machines`.
    departed: BTreeSet<(Time, MachineId)>,
    /// What forgotten machines cost, summed in the order they were forgotten (stats' spend).
    spend_forgotten: f64,
    delayed: BTreeSet<(Time, JobId)>,
    lease_expiry: BTreeSet<(Time, JobId)>,
    finished: VecDeque<(Time, JobId)>,
    /// Idle machines by profile, in the order they started waiting.
    waiting: BTreeMap<ProfileId, BTreeSet<(u64, MachineId)>>,
    wakes: Vec<MachineId>,
    /// What succeeded jobs returned, until they are purged (beside the records, which stay
    /// dense: few jobs return anything).
    results: FxHashMap<JobId, JobResult>,
    history: Option<Vec<HistoryEvent>>,
    journal: Option<Journal>,
    counts: JobCounts,
    totals: super::request::Totals,
}

impl MemStore {
    pub fn new(config: EngineConfig) -> MemStore {
        MemStore {
            config: Arc::new(config),
            now: Time::ZERO,
            next_job: 1,
            seq: 0,
            jobs: FxHashMap::default(),
            idempotency: FxHashMap::default(),
            classes: Vec::new(),
            class_index: FxHashMap::default(),
            nonempty: BTreeSet::new(),
            profiles: Vec::new(),
            profile_index: BTreeMap::new(),
            machines: FxHashMap::default(),
            last_machine: 0,
            machine_names: FxHashMap::default(),
            machine_expiry: BTreeSet::new(),
            departed: BTreeSet::new(),
            spend_forgotten: 0.0,
            delayed: BTreeSet::new(),
            lease_expiry: BTreeSet::new(),
            finished: VecDeque::new(),
            waiting: BTreeMap::new(),
            wakes: Vec::new(),
            results: FxHashMap::default(),
            history: None,
            journal: None,
            counts: JobCounts::default(),
            totals: Default::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Record lifecycle events for the checker; take them with `drain_history`.
    pub fn record_history(&mut self) {
        self.history.get_or_insert_with(Vec::new);
    }

    /// Keep the journal (store/journal.rs), as RedisStore does; read it with `journal`.
    pub fn record_journal(&mut self) {
        self.journal.get_or_insert_with(Journal::default);
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    pub fn drain_history(&mut self) -> impl Iterator<Item = HistoryEvent> + '_ {
        self.history.iter_mut().flat_map(|h| h.drain(..))
    }

    /// Moves the recorded events to the end of `into` in one copy (the simulator's hot path).
    pub fn append_history(&mut self, into: &mut Vec<HistoryEvent>) {
        if let Some(history) = &mut self.history {
            into.append(history);
        }
    }

    /// Machines to wake: each was idle and a job it fits was enqueued.
    pub fn drain_wakes(&mut self) -> impl Iterator<Item = MachineId> + '_ {
        self.wakes.drain(..)
    }

    pub fn counts(&self) -> JobCounts {
        self.counts
    }

    /// Machines the registry holds: those present, and those that left within `retention`.
    pub fn machine_count(&self) -> usize {
        self.machines.len()
    }

    /// The live state of a job the store still holds.
    pub fn job_state(&self, job: JobId) -> Option<JobState> {
        self.jobs.get(&job).map(|j| j.state)
    }

    /// Apply one request at store time `now`. Time never runs backwards for a store. The
    /// journal gets one entry for the call.
    pub fn apply(&mut self, now: Time, request: Request) -> Result<Reply, Refusal> {
        let reply = self.apply_one(now, request);
        if let Some(journal) = &mut self.journal {
            journal.end_call(self.now, self.config.journal.max_len);
        }
        reply
    }

    fn apply_one(&mut self, now: Time, request: Request) -> Result<Reply, Refusal> {
        debug_assert!(
            now >= self.now,
            "store clock ran backwards: {now:?} < {:?}",
            self.now
        );
        self.now = self.now.max(now);
        match request {
            Request::Submit(spec) => self.submit(*spec),
            Request::Cancel { job } => self.cancel(job),
            Request::Get { job } => self.get(job),
            Request::Register(spec) => self.register(*spec),
            Request::Deregister { machine } => self.deregister(machine),
            Request::Heartbeat { machine, leases } => self.heartbeat(machine, &leases),
            Request::Claim {
                machine,
                seq,
                offer,
            } => self.claim(machine, seq, offer),
            Request::Complete {
                job,
                token,
                outcome,
                result,
            } => self.complete(job, token, &outcome, result),
            Request::Release { job, token } => self.release(job, token),
            Request::Reap { max } => Ok(Reply::Reaped(self.reap(max))),
            Request::Batch(requests) => self.batch(now, requests),
            Request::Progress {
                job,
                token,
                percent,
                message,
            } => self.progress(job, token, percent, message),
            Request::ListJobs {
                state,
                after,
                limit,
            } => Ok(self.list_jobs(state, after, limit)),
            Request::ListMachines { limit } => Ok(self.list_machines(limit)),
            Request::Stats => Ok(self.stats()),
        }
    }

    fn batch(&mut self, now: Time, requests: Vec<Request>) -> Result<Reply, Refusal> {
        super::request::check_batch(&requests, &self.config.limits)?;
        let results = requests
            .into_iter()
            .map(|r| self.apply_one(now, r))
            .collect();
        Ok(Reply::Batch(results))
    }

    fn emit(&mut self, event: HistoryEvent) {
        if let Some(history) = &mut self.history {
            history.push(event);
        }
    }

    fn jot(&mut self, event: JournalEvent) {
        if let Some(journal) = &mut self.journal {
            journal.note(event);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

#[cfg(test)]
mod tests;
