//! The agent's disk: its model cache and its jobs' scratch directories, the I/O half of what
//! the pure agent decides (`agent::cache` picks what to evict and accounts the budget; this
//! fetches, verifies, deletes and measures).
//!
//! Before an attempt runs, `Workspace::prepare` makes its models ready (fetching what is
//! missing, once however many attempts need it) and, if the job asks for `disk_gb`, gives it
//! a scratch directory. A fetch that cannot complete fails the attempt: `DiskFull` when the
//! disk is full, a retryable error otherwise.
//!
//! Layout: `<state-dir>/models/` (or `--cache-dir`) holds `<name>--<hash>` per model (the
//! hash follows its source, so a changed URL or digest is a new entry); `<state-dir>/scratch/`
//! holds `job-<id>-<attempt>` per attempt.

pub mod cache;
pub mod disk;
pub mod error;
pub mod fetch;
pub mod layout;
pub mod scratch;
pub mod source;
pub mod wait;

pub use cache::{CacheEvent, DiskCache, ModelCacheStats, OpenError};
pub use error::{FetchError, ModelError};
pub use scratch::{ScratchDir, ScratchRoot};
pub use source::{validate_sources, ModelSource, SourceError};
pub use wait::Acquired;

use crate::core::{EngineConfig, JobId, JobSpec, ModelId, ModelSet, Outcome};
use crate::executor::ProgressSink;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Where the agent keeps its disk, and how much of it Drover may use.
#[derive(Clone, Debug)]
pub struct WorkspaceConfig {
    pub cache_dir: PathBuf,
    pub scratch_dir: PathBuf,
    /// The budget for models and scratch together, in GiB (`--disk-gb`, the machine's
    /// `disk_gb`).
    pub disk_gb: u32,
    pub sources: BTreeMap<String, ModelSource>,
}

/// The agent's model cache and scratch directories.
#[derive(Clone)]
pub struct Workspace {
    cache: DiskCache,
    scratch: ScratchRoot,
    budget_bytes: u64,
}

impl Workspace {
    /// Opens both directories, sweeping what a crash left; also returns the models already
    /// cached (the pure agent starts with them).
    pub fn open(
        config: &WorkspaceConfig,
        engine: &EngineConfig,
    ) -> Result<(Workspace, ModelSet), OpenError> {
        let (cache, cached) = DiskCache::open(config.cache_dir.clone(), engine, &config.sources)?;
        let (scratch, swept) =
            ScratchRoot::open(config.scratch_dir.clone()).map_err(|error| OpenError::Io {
                path: config.scratch_dir.clone(),
                error,
            })?;
        if swept > 0 {
            tracing::info!(swept, dir = %config.scratch_dir.display(), "removed scratch directories a crash left");
        }
        let workspace = Workspace {
            cache,
            scratch,
            budget_bytes: config.disk_gb as u64 * disk::GIB,
        };
        Ok((workspace, cached))
    }

    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// Starts making an attempt's models ready (at once, so that two attempts started one
    /// after the other share one fetch); `ready` then waits for them.
    pub fn prepare(
        &self,
        job: JobId,
        attempt: u32,
        spec: &JobSpec,
        events: &mpsc::Sender<CacheEvent>,
    ) -> Preparation {
        let req = &spec.requirements;
        Preparation {
            models: self.cache.acquire(req.models, events),
            scratch: (req.disk_gb > 0).then(|| (self.scratch.clone(), job, attempt)),
            events: events.clone(),
        }
    }

    pub fn evict(&self, model: ModelId) {
        self.cache.evict(model)
    }

    /// Disk within the budget that something other than Drover holds, in GiB: the budget
    /// less what the filesystem has free and what the cache and scratch take. Rounded down
    /// at start (a fraction of a GiB is not worth refusing work for), up after the disk
    /// proved full.
    pub fn foreign_disk_gb(&self, round_up: bool) -> std::io::Result<u32> {
        let available = disk::available_bytes(self.cache.dir())?;
        let mut ours = self.cache.used_bytes();
        if disk::same_filesystem(self.cache.dir(), self.scratch.path()) {
            ours += self.scratch.used_bytes();
        }
        let foreign = self
            .budget_bytes
            .saturating_sub(available)
            .saturating_sub(ours);
        Ok(disk::gib(foreign, round_up))
    }

    pub fn stats(&self) -> ModelCacheStats {
        self.cache.stats()
    }
}

/// An attempt's models on their way, and its scratch directory to be made.
pub struct Preparation {
    models: Acquired,
    scratch: Option<(ScratchRoot, JobId, u32)>,
    events: mpsc::Sender<CacheEvent>,
}

/// What an attempt gets: its models' paths by name, and its scratch directory (removed when
/// this is dropped).
#[derive(Debug, Default)]
pub struct Prepared {
    pub models: BTreeMap<String, PathBuf>,
    pub scratch: Option<ScratchDir>,
}

/// Why an attempt could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("scratch directory: {0}")]
    Scratch(FetchError),
}

impl PrepareError {
    pub fn outcome(&self) -> Outcome {
        match self {
            PrepareError::Model(e) => e.outcome(),
            PrepareError::Scratch(FetchError::DiskFull(_)) => {
                Outcome::Failed(crate::core::Failure::DiskFull)
            }
            PrepareError::Scratch(e) => crate::executor::retryable(format!("scratch: {e}")),
        }
    }
}

impl Preparation {
    pub async fn ready(self, progress: &ProgressSink) -> Result<Prepared, PrepareError> {
        let models = self.models.wait(progress).await?;
        let scratch = match self.scratch {
            None => None,
            Some((root, job, attempt)) => match root.create(job, attempt) {
                Ok(dir) => Some(dir),
                Err(e) => {
                    if matches!(e, FetchError::DiskFull(_)) {
                        let _ = self.events.send(CacheEvent::ScratchFull).await;
                    }
                    return Err(PrepareError::Scratch(e));
                }
            },
        };
        Ok(Prepared { models, scratch })
    }
}
