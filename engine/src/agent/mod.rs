//! The machine agent as a pure state machine, in the manner of quinn-proto: feed it inputs
//! with `handle` and `on_timeout`, take its actions with `poll_action`, and wake it at
//! `next_timeout`. The tokio driver and the simulator are thin shells around it.
//!
//! It registers, heartbeats (renewing every lease it holds), claims what fits its free GPUs,
//! disk and warm models, reports outcomes (kept in an outbox while the store is unreachable,
//! and delivered later, fenced by their tokens), stops jobs whose leases were revoked, evicts
//! cached models when its disk is short and drains itself when that is not enough, and waits
//! for a wake-up instead of polling when there is no work.

pub mod cache;
pub mod link;

use crate::core::{
    EngineConfig, Failure, JobId, JobResult, JobSpec, MachineId, MachineSpec, ModelId, ModelSet,
    Offer, Outcome, Time, Token,
};
use crate::store::{Grant, LeaseRef, LeaseStatus, Refusal, Reply, Request};
use cache::ModelCache;
use link::Link;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Most attempts one machine runs at once, whatever their GPU needs.
pub const MAX_RUNNING: usize = 64;

/// Most outcomes sent in one round trip (the store's batch limit is far above).
const MAX_OUTCOMES_PER_BATCH: usize = 32;

#[derive(Clone, Debug)]
pub enum Input {
    /// The store answered request `id`.
    Reply {
        id: u64,
        result: Result<Reply, Refusal>,
    },
    /// The store answered request `id` with an error that will repeat (a script or decode
    /// error, not a lost connection): it is dropped, not resent.
    StoreFault { id: u64, message: String },
    /// The store signalled that work this machine fits was enqueued.
    Wake,
    /// The executor finished an attempt.
    /// An attempt ended; `result` is what a succeeded job returned (checked by the driver).
    JobFinished {
        job: JobId,
        outcome: Outcome,
        result: Option<JobResult>,
    },
    /// GPU memory free per GPU, as measured (another process may hold some).
    GpuMemory { usable_gb: u32 },
    /// Disk taken by something other than Drover, as measured.
    ForeignDisk { gb: u32 },
    /// A model the agent counts as cached is not on disk after all (its fetch failed): it
    /// leaves the cache, and claims stop advertising it.
    ModelGone { model: ModelId },
    /// Stop claiming, finish what runs, deregister (SIGTERM, or a disk that cannot recover).
    Drain,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Send {
        id: u64,
        request: Request,
    },
    /// Download `download`, then run the attempt.
    Start {
        job: JobId,
        token: Token,
        attempt: u32,
        spec: Arc<JobSpec>,
        download: ModelSet,
    },
    /// Kill the attempt: its lease is no longer ours.
    Stop {
        job: JobId,
    },
    Evicted {
        model: ModelId,
    },
    /// Deregistered after draining; the machine may go.
    Left,
    /// The store could not apply `request` (a request kind, `Request::kind`) and will likely
    /// fail it again: the driver logs it and counts it. An outcome dropped so is not lost: its
    /// lease expires and the reaper runs the job again.
    StoreFault {
        request: &'static str,
        message: String,
    },
}

#[derive(Clone, Copy, Debug)]
struct Running {
    token: Token,
    gpus: u32,
    disk_gb: u32,
    models: ModelSet,
    timeout_at: Time,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub started: u64,
    pub revoked: u64,
    pub stale_outcomes: u64,
    pub registrations: u64,
    pub evictions: u64,
    pub store_faults: u64,
    /// Grants failed as `DiskFull` because the disk could not hold the job's models and
    /// scratch space, even after evicting.
    pub disk_refusals: u64,
}

#[derive(Clone, Debug)]
pub struct Agent {
    config: Arc<EngineConfig>,
    spec: MachineSpec,
    machine: Option<MachineId>,
    draining: bool,
    left: bool,
    running: BTreeMap<JobId, Running>,
    /// The earliest `timeout_at` among `running`, kept with it (next_timeout is hot).
    earliest_timeout: Option<Time>,
    used_gpus: u32,
    scratch_gb: u32,
    usable_gpu_mem_gb: u32,
    foreign_disk_gb: u32,
    cache: ModelCache,
    /// Outcomes and releases waiting to reach the store.
    outbox: VecDeque<Request>,
    link: Link,
    next_heartbeat: Time,
    /// While idle: when to claim again if no wake-up comes.
    idle_until: Option<Time>,
    claim_seq: u64,
    actions: VecDeque<Action>,
    pub stats: AgentStats,
}

impl Agent {
    /// An agent for `spec`, booted at `now` with `cached` models already on disk.
    pub fn new(
        config: Arc<EngineConfig>,
        spec: MachineSpec,
        cached: ModelSet,
        seed: u64,
        now: Time,
    ) -> Agent {
        let mut cache = ModelCache::default();
        for model in cached.iter() {
            cache.insert(model, config.model_size_gb(model), now);
        }
        let link = Link::new(&config, seed);
        let mut agent = Agent {
            usable_gpu_mem_gb: spec.gpu_mem_gb,
            config,
            spec,
            machine: None,
            draining: false,
            left: false,
            running: BTreeMap::new(),
            earliest_timeout: None,
            used_gpus: 0,
            scratch_gb: 0,
            foreign_disk_gb: 0,
            cache,
            outbox: VecDeque::new(),
            link,
            next_heartbeat: now,
            idle_until: None,
            claim_seq: 0,
            actions: VecDeque::new(),
            stats: AgentStats::default(),
        };
        agent.drive(now);
        agent
    }

    pub fn machine(&self) -> Option<MachineId> {
        self.machine
    }

    pub fn spec(&self) -> &MachineSpec {
        &self.spec
    }

    /// GPUs held by the attempts running now (each attempt holds its job's `gpus`).
    pub fn used_gpus(&self) -> u32 {
        self.used_gpus
    }

    pub fn running(&self) -> impl Iterator<Item = (JobId, Token)> + '_ {
        self.running.iter().map(|(&job, r)| (job, r.token))
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn link(&self) -> &Link {
        &self.link
    }

    pub fn is_idle(&self) -> bool {
        self.idle_until.is_some()
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn handle(&mut self, now: Time, input: Input) {
        self.handle_all(now, [input]);
    }

    /// Inputs that arrived together, taken in before the agent decides what to send: outcomes
    /// ready at the same moment then travel in one batch, not the first alone.
    pub fn handle_all(&mut self, now: Time, inputs: impl IntoIterator<Item = Input>) {
        if self.left {
            return;
        }
        for input in inputs {
            self.take_in(now, input);
        }
        self.drive(now);
    }

    /// `input`, without deciding yet what to send: the caller lets the jobs this starts run a
    /// moment, then hands over what they did with `handle_all`, which decides once.
    pub fn take_in(&mut self, now: Time, input: Input) {
        if self.left {
            return;
        }
        match input {
            Input::Reply { id, result } => {
                if let Some(request) = self.link.on_reply(id) {
                    self.on_reply(now, request, result);
                }
            }
            Input::StoreFault { id, message } => {
                if let Some(request) = self.link.on_fault(id, now, &self.config) {
                    self.fault(&request, message);
                }
            }
            Input::Wake => self.idle_until = None,
            Input::JobFinished {
                job,
                outcome,
                result,
            } => {
                if let Some(run) = self.release_resources(now, job) {
                    self.outbox.push_back(Request::Complete {
                        job,
                        token: run.token,
                        outcome,
                        result,
                    });
                }
            }
            Input::GpuMemory { usable_gb } => {
                self.usable_gpu_mem_gb = usable_gb.min(self.spec.gpu_mem_gb)
            }
            Input::ForeignDisk { gb } => {
                self.foreign_disk_gb = gb;
                self.make_disk_room(0, ModelSet::EMPTY);
                if self.free_disk_gb() <= 0 {
                    self.draining = true;
                }
            }
            Input::ModelGone { model } => {
                self.cache.remove(model);
            }
            Input::Drain => self.draining = true,
        }
    }

    pub fn on_timeout(&mut self, now: Time) {
        if self.left {
            return;
        }
        self.link.on_timeout(now, &self.config);
        if self.idle_until.is_some_and(|t| now >= t) {
            self.idle_until = None;
        }
        let overdue: Vec<JobId> = self
            .running
            .iter()
            .filter(|(_, r)| now >= r.timeout_at)
            .map(|(&job, _)| job)
            .collect();
        for job in overdue {
            let run = self
                .release_resources(now, job)
                .expect("overdue job is running");
            self.actions.push_back(Action::Stop { job });
            let outcome = Outcome::Failed(Failure::TimedOut);
            self.outbox.push_back(Request::Complete {
                job,
                token: run.token,
                outcome,
                result: None,
            });
        }
        self.drive(now);
    }

    /// When the agent next needs `on_timeout`. Never in the past unless something is due.
    pub fn next_timeout(&self) -> Option<Time> {
        if self.left {
            return None;
        }
        let heartbeat =
            (self.link.is_free() && self.machine.is_some()).then_some(self.next_heartbeat);
        [
            self.link.next_timeout(),
            heartbeat,
            self.idle_until.filter(|_| self.link.is_free()),
            self.earliest_timeout,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn drive(&mut self, now: Time) {
        if self.left {
            return;
        }
        if self.link.is_free() {
            if let Some(request) = self.next_request(now) {
                self.link.start(request);
            }
        }
        if let Some(send) = self.link.poll_send(now, &self.config) {
            self.actions.push_back(Action::Send {
                id: send.id,
                request: send.request,
            });
        }
    }

    /// What to say to the store next, in one round trip: outcomes first, then the heartbeat
    /// if due, then a claim if there is room (or the goodbye of a drained machine).
    fn next_request(&mut self, now: Time) -> Option<Request> {
        let Some(machine) = self.machine else {
            return Some(Request::Register(Box::new(self.spec.clone())));
        };
        let take = self.outbox.len().min(MAX_OUTCOMES_PER_BATCH);
        let mut batch: Vec<Request> = self.outbox.drain(..take).collect();
        if now >= self.next_heartbeat {
            self.next_heartbeat = now.plus(self.config.heartbeat);
            let leases = self
                .running
                .iter()
                .map(|(&job, r)| LeaseRef {
                    job,
                    token: r.token,
                })
                .collect();
            batch.push(Request::Heartbeat { machine, leases });
        }
        if self.draining {
            if self.running.is_empty() && self.outbox.is_empty() {
                batch.push(Request::Deregister { machine });
            }
        } else if self.idle_until.is_none() && self.has_capacity() {
            self.claim_seq += 1;
            batch.push(Request::Claim {
                machine,
                seq: self.claim_seq,
                offer: self.offer(),
            });
        }
        match batch.len() {
            0 => None,
            1 => batch.pop(),
            _ => Some(Request::Batch(batch)),
        }
    }

    fn on_reply(&mut self, now: Time, request: Request, result: Result<Reply, Refusal>) {
        match (request, result) {
            (Request::Batch(requests), Ok(Reply::Batch(results))) => {
                for (request, result) in requests.into_iter().zip(results) {
                    self.on_reply(now, request, result);
                }
            }
            (Request::Batch(requests), Err(refusal)) => {
                for request in requests {
                    self.on_reply(now, request, Err(refusal.clone()));
                }
            }
            (request, Err(Refusal::Failed(message))) => self.fault(&request, message),
            (_, Err(Refusal::MachineLost(_) | Refusal::UnknownMachine(_))) => self.machine = None,
            (Request::Register(_), Ok(Reply::Registered { machine })) => {
                self.machine = Some(machine);
                self.stats.registrations += 1;
                self.idle_until = None;
                // Learn at once which of the running jobs are still ours.
                self.next_heartbeat = now;
            }
            (Request::Heartbeat { leases, .. }, Ok(Reply::Heartbeat { leases: statuses })) => {
                for (lease, status) in leases.iter().zip(statuses) {
                    let ours = self
                        .running
                        .get(&lease.job)
                        .is_some_and(|r| r.token == lease.token);
                    if status == LeaseStatus::Revoked && ours {
                        self.release_resources(now, lease.job);
                        self.actions.push_back(Action::Stop { job: lease.job });
                        self.stats.revoked += 1;
                    }
                }
            }
            (Request::Claim { .. }, Ok(Reply::Claimed { grants, idle })) => {
                for grant in grants {
                    self.start(now, grant);
                }
                if idle {
                    self.idle_until = Some(now.plus(self.config.idle_recheck));
                }
            }
            (Request::Complete { .. } | Request::Release { .. }, Err(_)) => {
                self.stats.stale_outcomes += 1
            }
            (Request::Deregister { .. }, Ok(_)) => {
                self.left = true;
                self.actions.push_back(Action::Left);
            }
            _ => {}
        }
    }

    fn fault(&mut self, request: &Request, message: String) {
        self.stats.store_faults += 1;
        self.actions.push_back(Action::StoreFault {
            request: request.kind(),
            message,
        });
    }

    fn start(&mut self, now: Time, grant: Grant) {
        // A new lease on a job whose older attempt still runs here (its lease was revoked
        // while the store could not tell us): that attempt is dead, stop it first.
        let running_token = self.running.get(&grant.job).map(|r| r.token);
        if running_token == Some(grant.token) {
            return; // The same lease again (a repeated claim's answer): it already runs.
        }
        if running_token.is_some() {
            self.release_resources(now, grant.job);
            self.actions.push_back(Action::Stop { job: grant.job });
            self.stats.revoked += 1;
        }
        let req = grant.spec.requirements.clone();
        if self.draining || req.gpus > self.spec.gpus - self.used_gpus {
            self.outbox.push_back(Request::Release {
                job: grant.job,
                token: grant.token,
            });
            return;
        }
        let download = req.models.minus(self.cache.models());
        let need = req.disk_gb + self.config.download_gb(download);
        // The job's own cached models stay: evicting one to make room would leave it short.
        if !self.make_disk_room(need, req.models) {
            self.stats.disk_refusals += 1;
            let outcome = Outcome::Failed(Failure::DiskFull);
            self.outbox.push_back(Request::Complete {
                job: grant.job,
                token: grant.token,
                outcome,
                result: None,
            });
            return;
        }
        for model in download.iter() {
            self.cache
                .insert(model, self.config.model_size_gb(model), now);
        }
        self.cache.pin(req.models, now);
        self.used_gpus += req.gpus;
        self.scratch_gb += req.disk_gb;
        let timeout_at = now.plus(grant.spec.timeout);
        let run = Running {
            token: grant.token,
            gpus: req.gpus,
            disk_gb: req.disk_gb,
            models: req.models,
            timeout_at,
        };
        self.running.insert(grant.job, run);
        self.earliest_timeout = Some(
            self.earliest_timeout
                .map_or(timeout_at, |t| t.min(timeout_at)),
        );
        self.stats.started += 1;
        self.idle_until = None;
        self.actions.push_back(Action::Start {
            job: grant.job,
            token: grant.token,
            attempt: grant.attempt,
            spec: grant.spec,
            download,
        });
    }

    /// Frees what an attempt held; `None` if it was not running.
    fn release_resources(&mut self, now: Time, job: JobId) -> Option<Running> {
        let run = self.running.remove(&job)?;
        if self.earliest_timeout == Some(run.timeout_at) {
            self.earliest_timeout = self.running.values().map(|r| r.timeout_at).min();
        }
        self.used_gpus -= run.gpus;
        self.scratch_gb -= run.disk_gb;
        self.cache.unpin(run.models, now);
        Some(run)
    }

    /// Disk free for new work: not foreign, not scratch, not cached models.
    fn free_disk_gb(&self) -> i64 {
        self.spec.disk_gb as i64
            - self.foreign_disk_gb as i64
            - self.scratch_gb as i64
            - self.cache.used_gb() as i64
    }

    /// Evicts cached models other than `keep` until `need` GB are free; false if that is not
    /// possible.
    fn make_disk_room(&mut self, need: u32, keep: ModelSet) -> bool {
        let short = need as i64 - self.free_disk_gb();
        if short > 0 {
            let (evicted, _) = self.cache.evict_for(short as u32, keep);
            self.stats.evictions += evicted.len() as u64;
            self.actions
                .extend(evicted.into_iter().map(|model| Action::Evicted { model }));
        }
        self.free_disk_gb() >= need as i64
    }

    fn has_capacity(&self) -> bool {
        self.running.len() < MAX_RUNNING
            && (self.used_gpus < self.spec.gpus || (self.spec.gpus == 0 && self.running.is_empty()))
    }

    fn offer(&self) -> Offer {
        let evictable = self.cache.used_gb() - self.cache.pinned_gb();
        Offer {
            free_gpus: self.spec.gpus - self.used_gpus,
            gpu_mem_gb: self.usable_gpu_mem_gb,
            free_disk_gb: (self.free_disk_gb() + evictable as i64).max(0) as u32,
            cached: self.cache.models(),
        }
    }
}

#[cfg(test)]
mod tests;
