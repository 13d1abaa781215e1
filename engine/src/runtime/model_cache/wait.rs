//! What an attempt waits for before it runs: its models, some on disk, some being fetched
//! (by this attempt or another), and the download's progress, reported as the attempt's.

use super::disk::GIB;
use super::error::{FetchError, ModelError};
use crate::executor::ProgressSink;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::watch;

/// How often an attempt waiting for its models reports their download as its progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// A fetch's progress, watched by the attempts waiting for it.
#[derive(Clone, Debug, Default)]
pub(super) struct FetchProgress {
    pub(super) done: u64,
    pub(super) total: u64,
    pub(super) result: Option<Result<(), FetchError>>,
}

/// The models of one attempt: ready, being fetched, or impossible.
#[derive(Default)]
pub struct Acquired {
    pub(super) ready: Vec<(String, PathBuf)>,
    pub(super) waits: Vec<(String, PathBuf, watch::Receiver<FetchProgress>)>,
    pub(super) failed: Option<ModelError>,
}

impl Acquired {
    /// Waits for every fetch, reporting their progress as the attempt's; the models' paths
    /// by name, or the first model that could not be had.
    pub async fn wait(
        self,
        progress: &ProgressSink,
    ) -> Result<BTreeMap<String, PathBuf>, ModelError> {
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        let ends = self
            .waits
            .iter()
            .map(|(name, _, rx)| fetch_end(name.clone(), rx.clone()));
        let ends = futures_util::future::join_all(ends);
        tokio::pin!(ends);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let results = loop {
            tokio::select! {
                results = &mut ends => break results,
                _ = tick.tick() => report(&self.waits, progress),
            }
        };
        let mut paths: BTreeMap<String, PathBuf> = self.ready.into_iter().collect();
        for ((name, path, _), result) in self.waits.into_iter().zip(results) {
            result?;
            paths.insert(name, path);
        }
        Ok(paths)
    }
}

async fn fetch_end(name: String, mut rx: watch::Receiver<FetchProgress>) -> Result<(), ModelError> {
    let result = match rx.wait_for(|p| p.result.is_some()).await {
        Ok(progress) => progress
            .result
            .clone()
            .unwrap_or(Err(FetchError::Abandoned)),
        Err(_) => Err(FetchError::Abandoned),
    };
    result.map_err(|error| ModelError { model: name, error })
}

/// "fetching models: sdxl 1.2 of 6.5 GiB", as a percentage of all the bytes awaited.
fn report(waits: &[(String, PathBuf, watch::Receiver<FetchProgress>)], progress: &ProgressSink) {
    let (mut done, mut total) = (0u64, 0u64);
    let mut parts = Vec::new();
    for (name, _, rx) in waits {
        let p = rx.borrow().clone();
        done += p.done;
        total += p.total.max(p.done);
        parts.push(format!(
            "{name} {:.2} of {:.2} GiB",
            p.done as f64 / GIB as f64,
            p.total as f64 / GIB as f64
        ));
    }
    let percent = (done * 100).checked_div(total).unwrap_or(0).min(99) as u8;
    progress.report(percent, format!("fetching models: {}", parts.join(", ")));
}
