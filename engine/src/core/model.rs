//! Jobs, their requirements and states, machines and what they offer.

use super::ids::{JobId, MachineId, ModelSet, Token};
use super::labels::Labels;
use super::time::{Span, Time};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const DEFAULT_PRIORITY: u8 = 50;
pub const MAX_PRIORITY: u8 = 100;

/// What a job needs of a machine. Two jobs with equal requirements are of one class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Requirements {
    /// GPUs, all on one machine. Zero for a CPU-only job.
    pub gpus: u32,
    /// Memory each of those GPUs must have free, in GB.
    pub gpu_mem_gb: u32,
    /// GPU models allowed, sorted; empty allows any.
    pub gpu_models: Vec<String>,
    /// Catalog models the job loads; a machine without one downloads it first.
    pub models: ModelSet,
    /// Scratch disk, in GB, besides the models.
    pub disk_gb: u32,
    /// Labels the machine must match (see `labels::label_met`).
    pub labels: Labels,
    /// Labels the machine must not match.
    pub not_labels: Labels,
    /// The job's kind, copied from `JobSpec::kind` by `validate_spec` so that it is part of
    /// the class: a machine that advertises kinds takes only jobs of those kinds. Empty in
    /// requirements that no store has validated.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
}

/// A job as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Which executor runs it ("sleep", "command", "gpu", ...).
    pub kind: String,
    /// Opaque to the scheduler, bounded by `Limits::max_payload_bytes`.
    pub payload: String,
    /// 0 to 100, higher first.
    pub priority: u8,
    pub requirements: Arc<Requirements>,
    /// Attempts allowed in all, including the first; zero means the engine default.
    pub max_attempts: u32,
    /// How long one attempt may run; zero means the engine default.
    pub timeout: Span,
    /// A resubmission with the same key returns the first job's id.
    pub idempotency_key: Option<String>,
}

impl JobSpec {
    /// A job of `kind` with every other field at its default.
    pub fn new(kind: impl Into<String>, requirements: Arc<Requirements>) -> JobSpec {
        JobSpec {
            kind: kind.into(),
            payload: String::new(),
            priority: DEFAULT_PRIORITY,
            requirements,
            max_attempts: 0,
            timeout: Span::ZERO,
            idempotency_key: None,
        }
    }
}

/// Where a job stands. The last five are terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued,
    Delayed {
        until: Time,
    },
    Leased {
        machine: MachineId,
        token: Token,
        deadline: Time,
    },
    Succeeded,
    /// Attempts exhausted, or a failure that must not be retried.
    Dead,
    Cancelled,
    /// The last attempt ran past the job's timeout.
    TimedOut,
    /// No machine seen within the unworkable window could ever run it.
    Unworkable,
}

/// A job state's name, as the API and reports spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    Queued,
    Delayed,
    Leased,
    Succeeded,
    Dead,
    Cancelled,
    TimedOut,
    Unworkable,
}

impl JobState {
    pub fn name(&self) -> StateName {
        match self {
            JobState::Queued => StateName::Queued,
            JobState::Delayed { .. } => StateName::Delayed,
            JobState::Leased { .. } => StateName::Leased,
            JobState::Succeeded => StateName::Succeeded,
            JobState::Dead => StateName::Dead,
            JobState::Cancelled => StateName::Cancelled,
            JobState::TimedOut => StateName::TimedOut,
            JobState::Unworkable => StateName::Unworkable,
        }
    }
}

impl StateName {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StateName::Succeeded
                | StateName::Dead
                | StateName::Cancelled
                | StateName::TimedOut
                | StateName::Unworkable
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Queued => "queued",
            StateName::Delayed => "delayed",
            StateName::Leased => "leased",
            StateName::Succeeded => "succeeded",
            StateName::Dead => "dead",
            StateName::Cancelled => "cancelled",
            StateName::TimedOut => "timed_out",
            StateName::Unworkable => "unworkable",
        }
    }
}

/// A machine as it registers. GPUs on one machine are alike, as on every cloud instance type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineSpec {
    /// Unique name (hostname, instance id); registering the same name again is the same machine.
    pub name: String,
    pub pool: String,
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub disk_gb: u32,
    pub labels: Labels,
    pub cost_per_hour: f64,
    /// The job kinds it runs (its executors), sorted without repeats; empty runs every kind
    /// (the simulator's machines, which run whatever they are given).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// The part of a machine that matching looks at; machines with equal profiles are
/// interchangeable, so the store judges fit once per (class, profile).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Profile {
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub disk_gb: u32,
    pub labels: Labels,
    /// As `MachineSpec::kinds`: empty runs every kind.
    pub kinds: Vec<String>,
}

impl MachineSpec {
    pub fn profile(&self) -> Profile {
        Profile {
            gpus: self.gpus,
            gpu_model: self.gpu_model.clone(),
            gpu_mem_gb: self.gpu_mem_gb,
            disk_gb: self.disk_gb,
            labels: self.labels.clone(),
            kinds: self.kinds.clone(),
        }
    }
}

impl Profile {
    /// Whether machines of this profile run jobs of `kind`. A requirement without a kind
    /// (written before kinds were matched) goes anywhere.
    pub fn runs_kind(&self, kind: &str) -> bool {
        kind.is_empty()
            || self.kinds.is_empty()
            || self
                .kinds
                .binary_search_by(|k| k.as_str().cmp(kind))
                .is_ok()
    }
}

/// What a machine can take on right now, sent with every claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub free_gpus: u32,
    /// GPU memory free on each free GPU, as measured (another process may hold some).
    pub gpu_mem_gb: u32,
    /// Disk not held by running jobs; cached models not in use count as free (evictable).
    pub free_disk_gb: u32,
    pub cached: ModelSet,
}

/// What a succeeded job returned: JSON text (the agent checked it parses), at most
/// `limits.max_result_bytes`. The store keeps it as text, with the job, until the job is
/// purged; it is serialized as that text (a string).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobResult(pub Arc<str>);

impl JobResult {
    pub fn new(json: impl Into<Arc<str>>) -> JobResult {
        JobResult(json.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The job's own error. `retryable: false` sends it to `dead` at once.
    Error { retryable: bool, message: String },
    /// The GPU ran out of memory; the job needed at least `needed_gb` per GPU. The retry
    /// asks for that much, so it only goes where it fits.
    GpuOom { needed_gb: u32 },
    /// The machine's disk could not hold the job's models and scratch space.
    DiskFull,
    /// The agent stopped the attempt at the job's timeout.
    TimedOut,
}

/// How an attempt ended, as reported by the agent that ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed(Failure),
}

impl Failure {
    /// The failure's class, as the store and the journal name it: `fatal` (an error not to
    /// retry), `error`, `oom`, `disk_full` or `timed_out`.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Error {
                retryable: false, ..
            } => "fatal",
            Failure::Error { .. } => "error",
            Failure::GpuOom { .. } => "oom",
            Failure::DiskFull => "disk_full",
            Failure::TimedOut => "timed_out",
        }
    }
}

impl Failure {
    /// The failure as a job's error, the form the store keeps and the API shows.
    pub fn error(&self) -> JobError {
        let message = match self {
            Failure::Error { message, .. } => message.clone(),
            Failure::GpuOom { needed_gb } => {
                format!("ran out of GPU memory: needs at least {needed_gb} GB per GPU")
            }
            Failure::DiskFull => {
                "the machine's disk could not hold its models and scratch space".into()
            }
            Failure::TimedOut => "ran past its timeout".into(),
        };
        let retryable = !matches!(
            self,
            Failure::Error {
                retryable: false,
                ..
            }
        );
        JobError {
            class: self.class().into(),
            message,
            retryable,
        }
    }
}

/// Why a job's last attempt failed, or why the store gave up on it: a class (`fatal`,
/// `error`, `oom`, `disk_full`, `timed_out` as reported by agents; `unworkable` from the
/// store), a message for people, and whether another attempt could help.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub class: String,
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    /// An unworkable job's error: `unmet` is `class::first_unmet`'s verdict on the machines
    /// seen within `unworkable_after`.
    pub fn unworkable(unworkable_after: super::Span, unmet: &str) -> JobError {
        JobError {
            class: "unworkable".into(),
            message: format!("{}{unmet}", Self::unworkable_prefix(unworkable_after)),
            retryable: false,
        }
    }

    /// The start of an unworkable job's message, before the unmet requirement (sent to the Lua
    /// library in its config, which appends its own `F.first_unmet`).
    pub fn unworkable_prefix(unworkable_after: super::Span) -> String {
        format!("no machine seen within unworkable_after ({unworkable_after}) ")
    }

    /// The one stored form, in both stores (Redis: field `error` of `j:<id>`):
    /// `<class>|<retryable: 1 or 0>|<message>`.
    pub fn to_stored(&self) -> String {
        let retryable = if self.retryable { 1 } else { 0 };
        format!("{}|{retryable}|{}", self.class, self.message)
    }

    /// Reads the stored form. Text in no known form (written before this format) is kept
    /// whole as the message of class `error`.
    pub fn from_stored(text: &str) -> JobError {
        let mut parts = text.splitn(3, '|');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(class), Some(flag @ ("0" | "1")), Some(message))
                if !class.is_empty()
                    && class.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                JobError {
                    class: class.into(),
                    message: message.into(),
                    retryable: flag == "1",
                }
            }
            _ => JobError {
                class: "error".into(),
                message: text.into(),
                retryable: true,
            },
        }
    }
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(Failure::Error { .. }) => "error",
            Outcome::Failed(Failure::GpuOom { .. }) => "gpu_oom",
            Outcome::Failed(Failure::DiskFull) => "disk_full",
            Outcome::Failed(Failure::TimedOut) => "timed_out",
        }
    }
}

/// A job as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub state: StateName,
    pub attempt: u32,
    pub machine: Option<MachineId>,
    pub submitted_at: Time,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// Why the last attempt failed, or why the store gave up on the job.
    pub error: Option<JobError>,
    /// The last progress the running attempt reported.
    pub progress: Option<Progress>,
    /// What the job returned, once it succeeded (if it returned anything).
    pub result: Option<JobResult>,
    pub spec: Arc<JobSpec>,
}

/// How far a running attempt has come, as its agent reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: u8,
    pub message: String,
}

/// Longest progress message the store keeps, in bytes.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 256;

#[cfg(test)]
mod job_error_tests {
    use super::*;

    #[test]
    fn job_errors_round_trip_through_their_stored_form() {
        let failures = [
            Failure::Error {
                retryable: false,
                message: "exit 3: a|b".into(),
            },
            Failure::GpuOom { needed_gb: 40 },
            Failure::DiskFull,
            Failure::TimedOut,
        ];
        for failure in failures {
            let error = failure.error();
            assert_eq!(error.class, failure.class());
            assert_eq!(JobError::from_stored(&error.to_stored()), error);
        }
        assert!(
            !Failure::Error {
                retryable: false,
                message: String::new()
            }
            .error()
            .retryable
        );
        let old = JobError::from_stored("Error { retryable: true, message: \"x\" }");
        assert_eq!((old.class.as_str(), old.retryable), ("error", true));
        assert_eq!(old.message, "Error { retryable: true, message: \"x\" }");
    }
}
