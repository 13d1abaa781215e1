//! The store interface as data: every shared-state operation is one `Request`, answered by one
//! `Reply` or one `Refusal`. Every request is safe to apply twice (the network may duplicate
//! it, or lose its reply after it was applied): the comment on each variant says why.

use crate::core::class::InvalidJob;
use crate::core::model::JobView;
use crate::core::{
    JobId, JobResult, JobSpec, MachineId, MachineSpec, Offer, Outcome, StateName, Time, Token,
};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Enqueue a job. Retry-safe with an idempotency key (the same key returns the first id).
    Submit(Box<JobSpec>),
    /// Cancel a job that has not finished. Applying it twice finds the job already cancelled.
    Cancel { job: JobId },
    /// Read a job.
    Get { job: JobId },
    /// Register or re-register a machine by name; the same name gets the same id.
    Register(Box<MachineSpec>),
    /// A machine leaves: its leases are revoked. Idempotent.
    Deregister { machine: MachineId },
    /// The machine is alive; renew these leases. Idempotent.
    Heartbeat {
        machine: MachineId,
        leases: Vec<LeaseRef>,
    },
    /// Lease the best jobs that fit `offer`, best first, as many as fit (up to
    /// `Limits::max_grants_per_claim`). A repeated `seq` returns the first answer, so a claim
    /// whose reply was lost does not strand more leases.
    Claim {
        machine: MachineId,
        seq: u64,
        offer: Offer,
    },
    /// Record an attempt's outcome, fenced by its token. A repeat of the job's latest recorded
    /// outcome (or release) is answered `Recorded` and changes nothing; any other token that is
    /// not the live lease's is `Stale`.
    Complete {
        job: JobId,
        token: Token,
        outcome: Outcome,
        /// What the job returned; kept only with a success (`check_result` bounds it).
        result: Option<JobResult>,
    },
    /// Give a leased job back without charging an attempt (a draining machine). Fenced.
    Release { job: JobId, token: Token },
    /// One bounded reaper pass.
    Reap { max: u32 },
    /// The running attempt reports progress; fenced by its token, the latest report kept.
    Progress {
        job: JobId,
        token: Token,
        percent: u8,
        message: String,
    },
    /// Jobs in id order, those in `state` if given, at most `limit` (capped by
    /// `Limits::max_list`), starting after `after` if given.
    ListJobs {
        state: Option<StateName>,
        after: Option<JobId>,
        limit: u32,
    },
    /// Registered machines in id order, at most `limit` (capped by `Limits::max_list`).
    ListMachines { limit: u32 },
    /// Queue depth per class, jobs by state, machines by state, totals and spend.
    Stats,
    /// Several requests in one round trip, applied in order, each atomically on its own (a
    /// pipeline, not a transaction). Each is idempotent, so a repeated batch is too. An agent
    /// sends its outcomes, heartbeat and next claim together. Batches do not nest.
    Batch(Vec<Request>),
}

impl Request {
    /// The request's kind, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Submit(_) => "submit",
            Request::Cancel { .. } => "cancel",
            Request::Get { .. } => "get",
            Request::Register(_) => "register",
            Request::Deregister { .. } => "deregister",
            Request::Heartbeat { .. } => "heartbeat",
            Request::Claim { .. } => "claim",
            Request::Complete { .. } => "complete",
            Request::Release { .. } => "release",
            Request::Reap { .. } => "reap",
            Request::Progress { .. } => "progress",
            Request::ListJobs { .. } => "list_jobs",
            Request::ListMachines { .. } => "list_machines",
            Request::Stats => "stats",
            Request::Batch(_) => "batch",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRef {
    pub job: JobId,
    pub token: Token,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Submitted {
        job: JobId,
        created: bool,
    },
    Cancelled {
        job: JobId,
        previous: StateName,
    },
    Job(Box<JobView>),
    Registered {
        machine: MachineId,
    },
    Deregistered {
        revoked: u32,
    },
    /// One status per lease, in the order they were sent.
    Heartbeat {
        leases: Vec<LeaseStatus>,
    },
    /// The leases granted, best first. `idle`: the offer has room left that no queued job
    /// fits; the machine now waits for a wake-up.
    Claimed {
        grants: Vec<Grant>,
        idle: bool,
    },
    /// The outcome is recorded (now or by an earlier copy of the request); the job's state.
    Recorded {
        state: StateName,
    },
    Released,
    Reaped(ReapReport),
    /// One result per request of a `Batch`, in order.
    Batch(Vec<Result<Reply, Refusal>>),
    ProgressNoted,
    Jobs(Vec<JobView>),
    Machines(Vec<MachineView>),
    Stats(Box<StoreStats>),
}

/// A machine as the API shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MachineView {
    pub id: MachineId,
    pub name: String,
    pub pool: String,
    /// "ready", "lost" or "gone".
    pub state: &'static str,
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub cost_per_hour: f64,
    pub leases: u32,
    pub idle: bool,
    pub registered_at: Time,
    pub last_seen: Time,
    /// The job kinds it runs; empty: every kind.
    pub kinds: Vec<String>,
}

/// Counts of jobs by live state, kept exact on every transition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobCounts {
    pub queued: u64,
    pub delayed: u64,
    pub leased: u64,
    pub finished_retained: u64,
}

/// Jobs that reached each outcome since the store began (or last lost its data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub submitted: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub unworkable: u64,
    /// Attempts that ended without success and were retried.
    pub retries: u64,
    /// Leases the store revoked (expired, machine lost, over time).
    pub revoked: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassDepth {
    pub class: u32,
    pub requirements: Arc<crate::core::Requirements>,
    pub queued: u64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StoreStats {
    pub jobs: JobCounts,
    /// Classes with queued jobs, by class id.
    pub classes: Vec<ClassDepth>,
    /// Machines by state name.
    pub machines: std::collections::BTreeMap<String, u64>,
    pub totals: Totals,
    /// Machine time bought so far: registered to last seen, times cost per hour.
    pub spend: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    Renewed {
        deadline: Time,
    },
    /// The lease is no longer this holder's (expired, reaped, cancelled, timed out): stop.
    Revoked,
}

/// A lease on a job, with what the agent needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    pub job: JobId,
    pub token: Token,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub deadline: Time,
    pub spec: Arc<JobSpec>,
}

/// What one reaper pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Delayed retries released to their queues.
    pub promoted: u32,
    pub machines_lost: u32,
    /// Leases revoked (expired, machine lost, over time) whose jobs will run again.
    pub requeued: u32,
    pub dead: u32,
    pub timed_out: u32,
    pub unworkable: u32,
    /// Finished jobs forgotten after the retention period.
    pub purged: u32,
    /// Machines forgotten after the retention period (they had left).
    pub forgotten: u32,
    /// The pass stopped at its bound; run another.
    pub more: bool,
}

impl ReapReport {
    /// Adds another pass's counts to these totals.
    pub fn add(&mut self, pass: &ReapReport) {
        self.promoted += pass.promoted;
        self.machines_lost += pass.machines_lost;
        self.requeued += pass.requeued;
        self.dead += pass.dead;
        self.timed_out += pass.timed_out;
        self.unworkable += pass.unworkable;
        self.purged += pass.purged;
        self.forgotten += pass.forgotten;
    }
}

/// Whether a complete's result can be kept: within `limits.max_result_bytes`. Every store
/// checks this before applying the complete.
pub fn check_result(
    result: Option<&JobResult>,
    limits: &crate::core::config::Limits,
) -> Result<(), Refusal> {
    match result {
        Some(r) if r.as_str().len() > limits.max_result_bytes as usize => {
            Err(Refusal::Invalid(InvalidJob {
                field: "result".into(),
                reason: format!(
                    "{} bytes; limits.max_result_bytes is {}",
                    r.as_str().len(),
                    limits.max_result_bytes
                ),
            }))
        }
        _ => Ok(()),
    }
}

/// Whether a batch can be applied at all: not too long, and not nested. Every store checks
/// this before applying any of it.
pub fn check_batch(
    requests: &[Request],
    limits: &crate::core::config::Limits,
) -> Result<(), Refusal> {
    if requests.len() > limits.max_batch as usize {
        return Err(Refusal::Full {
            what: "requests per batch",
            limit: limits.max_batch as u64,
        });
    }
    if requests.iter().any(|r| matches!(r, Request::Batch(_))) {
        return Err(Refusal::Invalid(InvalidJob {
            field: "batch".into(),
            reason: "batches do not nest".into(),
        }));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    #[error("unknown machine {0}")]
    UnknownMachine(MachineId),
    /// The machine was declared lost (or deregistered); it must register again.
    #[error("machine {0} was declared lost; register again")]
    MachineLost(MachineId),
    /// The token is not the job's live lease: a newer attempt owns the job.
    #[error("stale token {token:?} for job {job}")]
    Stale { job: JobId, token: Token },
    #[error("job {job} is already {state:?}")]
    AlreadyFinished { job: JobId, state: StateName },
    #[error("store full: {what} is at its limit of {limit}")]
    Full { what: &'static str, limit: u64 },
    /// The store failed while applying this request (a script error: a bug, or data it cannot
    /// read) and undid everything the request had written: nothing of it was applied. Sent
    /// again, it will most likely fail the same way. MemStore never answers this.
    #[error("the store failed applying the request and undid it: {0}")]
    Failed(String),
}
