//! Executors run one attempt of a job on this machine. The agent driver picks one by the job's
//! `kind`; an attempt ends with an `Outcome`, and is stopped by dropping its future (the
//! driver aborts its task), so an executor must clean up on drop (`kill_on_drop` for
//! processes).
//!
//! Extension point: implement `Executor` and register it with `Executors::with` (the GPU
//! executor in engine/src/gpu registers itself as kind "gpu" this way).

pub mod command;
pub mod gpu;
pub mod payload;
pub mod sleep;

use crate::core::{Failure, JobId, JobResult, JobSpec, Outcome, Token};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

pub use command::{CommandExecutor, CommandTemplate};
pub use gpu::GpuExecutor;
pub use sleep::SleepExecutor;

/// An attempt in progress, as its executor is a future of its outcome.
pub type Attempt = Pin<Box<dyn Future<Output = Outcome> + Send>>;

pub trait Executor: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> Attempt;
}

/// What an executor knows of the attempt it runs.
pub struct JobContext {
    pub job: JobId,
    pub attempt: u32,
    pub spec: Arc<JobSpec>,
    pub progress: ProgressSink,
    /// Where a succeeded attempt leaves what it returns.
    pub result: ResultSlot,
    /// The job's models on this machine's disk, by catalog name (fetched before it runs).
    pub models: BTreeMap<String, PathBuf>,
    /// The attempt's scratch directory, when the job asks for `disk_gb`; removed when the
    /// attempt ends.
    pub scratch: Option<PathBuf>,
}

impl JobContext {
    /// What a process learns of its disk: `DROVER_SCRATCH`, and `DROVER_MODEL_<NAME>` for
    /// each model (the name upper-cased, anything but letters and digits as `_`: `sdxl-1.0`
    /// is `DROVER_MODEL_SDXL_1_0`).
    pub fn workspace_env(&self) -> Vec<(String, OsString)> {
        let models = self.models.iter().map(|(name, path)| {
            let key: String = name
                .chars()
                .map(|c| match c.is_ascii_alphanumeric() {
                    true => c.to_ascii_uppercase(),
                    false => '_',
                })
                .collect();
            (format!("DROVER_MODEL_{key}"), path.clone().into_os_string())
        });
        let scratch = self
            .scratch
            .iter()
            .map(|path| ("DROVER_SCRATCH".to_string(), path.clone().into_os_string()));
        scratch.chain(models).collect()
    }
}

/// Where an executor leaves what a succeeded attempt returned: JSON text. The driver takes it
/// when the attempt ends and checks it (`check_result`) before it travels with the success;
/// a failed attempt's result is dropped.
#[derive(Clone, Default)]
pub struct ResultSlot(Arc<std::sync::Mutex<Option<String>>>);

impl ResultSlot {
    pub fn set(&self, json: impl Into<String>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(json.into());
        }
    }

    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// A result an executor left, as the store may keep it: JSON, within `max_bytes`. `Err` says
/// why not, for the attempt's error.
pub fn check_result(json: String, max_bytes: u32) -> Result<JobResult, String> {
    if json.len() > max_bytes as usize {
        return Err(format!(
            "the job's result is {} bytes; limits.max_result_bytes is {max_bytes}",
            json.len()
        ));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&json) {
        return Err(format!("the job's result is not JSON: {e}"));
    }
    Ok(JobResult::new(json))
}

/// One progress report of a running attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressReport {
    pub job: JobId,
    pub token: Token,
    pub percent: u8,
    pub message: String,
}

/// Where an executor reports progress. Reports are advisory (the next one supersedes the
/// last), so a full channel drops the report rather than stall the job.
#[derive(Clone)]
pub struct ProgressSink {
    job: JobId,
    token: Token,
    tx: mpsc::Sender<ProgressReport>,
}

impl ProgressSink {
    pub fn new(job: JobId, token: Token, tx: mpsc::Sender<ProgressReport>) -> ProgressSink {
        ProgressSink { job, token, tx }
    }

    pub fn report(&self, percent: u8, message: impl Into<String>) {
        let report = ProgressReport {
            job: self.job,
            token: self.token,
            percent: percent.min(100),
            message: message.into(),
        };
        let _ = self.tx.try_send(report);
    }
}

/// A failure that no other attempt would cure: the job goes to `dead` at once.
pub fn fatal(message: impl Into<String>) -> Outcome {
    Outcome::Failed(Failure::Error {
        retryable: false,
        message: message.into(),
    })
}

/// A failure another attempt may not meet.
pub fn retryable(message: impl Into<String>) -> Outcome {
    Outcome::Failed(Failure::Error {
        retryable: true,
        message: message.into(),
    })
}

/// The executors of one agent, by job kind.
#[derive(Clone, Default)]
pub struct Executors {
    kinds: BTreeMap<String, Arc<dyn Executor>>,
}

impl Executors {
    /// The built-in `sleep` executor and one command executor per configured kind.
    pub fn from_templates(templates: &BTreeMap<String, CommandTemplate>) -> Executors {
        let mut executors = Executors::default().with("sleep", SleepExecutor);
        for (kind, template) in templates {
            executors = executors.with(kind, CommandExecutor::new(template.clone()));
        }
        executors
    }

    pub fn with(mut self, kind: impl Into<String>, executor: impl Executor) -> Executors {
        self.kinds.insert(kind.into(), Arc::new(executor));
        self
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Runs the attempt with the executor of its kind. The store brings an agent only jobs of
    /// the kinds it advertised, so a kind it lacks comes only from a class made before kinds
    /// were matched: the failure is retryable, since another machine may run it.
    pub fn run(&self, ctx: JobContext) -> Attempt {
        match self.kinds.get(&ctx.spec.kind) {
            Some(executor) => executor.run(ctx),
            None => {
                let message = format!("no executor for job kind {:?} on this agent", ctx.spec.kind);
                Box::pin(async move { retryable(message) })
            }
        }
    }
}
