//! The models on this machine's disk, and the fetches under way: one fetch per model however
//! many attempts wait for it (single-flight), each in a task of its own so that an attempt
//! stopped half-way does not cancel it for the others. What to evict is the pure agent's
//! decision (`agent::cache`); this only carries it out.

use super::disk::{remove_path, tree_size, GIB};
use super::error::{FetchError, ModelError};
use super::fetch::{fetch, install, FetchSpec, PartPath};
use super::layout::{entry_name, scan, EVICTED_PREFIX, PART_PREFIX};
use super::source::ModelSource;
use super::wait::{Acquired, FetchProgress};
use crate::core::{EngineConfig, ModelId, ModelSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// A connection that cannot be made in this long fails the try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A download that receives nothing for this long fails the try.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What the cache has done, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelCacheStats {
    /// An attempt's model was on disk already.
    pub hits: u64,
    /// An attempt's model was not: it was fetched, or the attempt joined a fetch under way.
    pub misses: u64,
    /// Fetches started (two attempts needing one missing model make one).
    pub fetches: u64,
    pub bytes_downloaded: u64,
    pub evictions: u64,
    /// Fetches that failed, by `FetchError::reason` (and `budget`: the agent refused a job
    /// whose models its disk budget could not hold).
    pub failures: BTreeMap<&'static str, u64>,
    pub cached_models: u64,
    /// Disk the cached models take.
    pub cached_bytes: u64,
}

/// A fetch ended (the driver keeps the pure agent's view in step with the disk).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheEvent {
    Fetched {
        model: ModelId,
        result: Result<(), FetchError>,
    },
    /// Creating an attempt's scratch directory met a full disk.
    ScratchFull,
}

/// A model this agent knows how to fetch.
struct Known {
    name: String,
    source: ModelSource,
    entry: String,
    size_gb: u32,
}

struct Inflight {
    progress: watch::Receiver<FetchProgress>,
    task: AbortHandle,
    generation: u64,
}

#[derive(Default)]
struct State {
    /// Models on disk, with the disk they take.
    present: BTreeMap<ModelId, u64>,
    inflight: BTreeMap<ModelId, Inflight>,
    stats: ModelCacheStats,
    generation: u64,
}

struct Inner {
    dir: PathBuf,
    /// Every catalog model's name, by id (a job may need one this agent cannot fetch).
    names: BTreeMap<ModelId, String>,
    known: BTreeMap<ModelId, Known>,
    client: reqwest::Client,
    state: Mutex<State>,
    downloaded: AtomicU64,
    serial: AtomicU64,
}

/// The cache directory and its fetches. Cheap to clone.
#[derive(Clone)]
pub struct DiskCache {
    inner: Arc<Inner>,
}

/// The cache cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

impl DiskCache {
    /// Opens `dir` (creating it), removes what a crash left half-done and stale copies, and
    /// returns the cache with the models found on disk.
    pub fn open(
        dir: PathBuf,
        engine: &EngineConfig,
        sources: &BTreeMap<String, ModelSource>,
    ) -> Result<(DiskCache, ModelSet), OpenError> {
        let io = |error| OpenError::Io {
            path: dir.clone(),
            error,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let known = known_models(engine, sources);
        let expected = known
            .values()
            .map(|k| (k.entry.clone(), k.size_gb as u64 * GIB))
            .collect();
        let found = scan(&dir, &expected).map_err(io)?;
        log_scan(&dir, &found);
        let mut state = State::default();
        for (id, k) in &known {
            if let Some(&(_, allocated)) = found.present.get(&k.entry) {
                state.present.insert(*id, allocated);
            }
        }
        let cached = state
            .present
            .keys()
            .fold(ModelSet::EMPTY, |set, &m| set.with(m));
        let names = engine
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (ModelId(i as u8), m.name.clone()))
            .collect();
        let inner = Inner {
            dir,
            names,
            known,
            client: http_client()?,
            state: Mutex::new(state),
            downloaded: AtomicU64::new(0),
            serial: AtomicU64::new(0),
        };
        let cache = DiskCache {
            inner: Arc::new(inner),
        };
        Ok((cache, cached))
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The catalog name of `model`.
    pub fn name(&self, model: ModelId) -> String {
        self.inner.name(model)
    }

    /// Starts making `models` ready for an attempt: those on disk are ready, those being
    /// fetched are joined, the others are fetched now. `events` hears of each fetch's end.
    pub fn acquire(&self, models: ModelSet, events: &mpsc::Sender<CacheEvent>) -> Acquired {
        let mut acquired = Acquired::default();
        let mut state = self.inner.lock();
        for model in models.iter() {
            let name = self.inner.name(model);
            let path = self.inner.path(model);
            if state.present.contains_key(&model) {
                state.stats.hits += 1;
                acquired.ready.push((name, path.unwrap_or_default()));
                continue;
            }
            state.stats.misses += 1;
            let (progress, path) = match (state.inflight.get(&model), path) {
                (Some(fetch), Some(path)) => (fetch.progress.clone(), path),
                (None, Some(path)) => (self.start_fetch(&mut state, model, events), path),
                (_, None) => {
                    *state.stats.failures.entry("no_source").or_default() += 1;
                    acquired.failed.get_or_insert(ModelError {
                        model: name,
                        error: FetchError::NoSource,
                    });
                    continue;
                }
            };
            acquired.waits.push((name, path, progress));
        }
        acquired
    }

    fn start_fetch(
        &self,
        state: &mut State,
        model: ModelId,
        events: &mpsc::Sender<CacheEvent>,
    ) -> watch::Receiver<FetchProgress> {
        state.stats.fetches += 1;
        state.generation += 1;
        let generation = state.generation;
        // Until the server says, the catalog size is what is expected.
        let expected = self
            .inner
            .known
            .get(&model)
            .map_or(0, |k| k.size_gb as u64 * GIB);
        let (tx, rx) = watch::channel(FetchProgress {
            total: expected,
            ..FetchProgress::default()
        });
        let inner = self.inner.clone();
        let events = events.clone();
        let task = tokio::spawn(async move {
            let result = inner.fetch_and_install(model, &tx).await;
            inner.finish(model, generation, &result);
            tx.send_modify(|p| p.result = Some(result.clone()));
            let _ = events.send(CacheEvent::Fetched { model, result }).await;
        });
        let fetch = Inflight {
            progress: rx.clone(),
            task: task.abort_handle(),
            generation,
        };
        state.inflight.insert(model, fetch);
        rx
    }

    /// Removes `model` from disk (the pure agent evicted it: no running attempt holds it),
    /// abandoning its fetch if one is under way.
    pub fn evict(&self, model: ModelId) {
        let Some(target) = self.inner.path(model) else {
            return;
        };
        let mut state = self.inner.lock();
        let fetching = state.inflight.remove(&model);
        if let Some(fetch) = &fetching {
            fetch.task.abort();
        }
        let had = state.present.remove(&model).is_some();
        if had || fetching.is_some() {
            state.stats.evictions += 1;
        }
        // Renamed away at once (under the lock), so a fetch of the same model started later
        // cannot be deleted in its place; the slow delete runs off the async workers.
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let trash = self.inner.dir.join(format!(
            "{EVICTED_PREFIX}{}-{}-{serial}",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        match std::fs::rename(&target, &trash) {
            Ok(()) => drop(tokio::task::spawn_blocking(move || remove_path(&trash))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %target.display(), error = %e, "cannot evict a model"),
        }
    }

    /// Whether `model` is on disk or being fetched.
    pub fn holds(&self, model: ModelId) -> bool {
        let state = self.inner.lock();
        state.present.contains_key(&model) || state.inflight.contains_key(&model)
    }

    /// Disk the cache takes now: models, and what fetches under way have written.
    pub fn used_bytes(&self) -> u64 {
        let state = self.inner.lock();
        let fetching: u64 = state
            .inflight
            .values()
            .map(|f| f.progress.borrow().done)
            .sum();
        state.present.values().sum::<u64>() + fetching
    }

    pub fn stats(&self) -> ModelCacheStats {
        let state = self.inner.lock();
        let mut stats = state.stats.clone();
        stats.bytes_downloaded = self.inner.downloaded.load(Ordering::Relaxed);
        stats.cached_models = state.present.len() as u64;
        stats.cached_bytes = state.present.values().sum();
        stats
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn name(&self, model: ModelId) -> String {
        self.names
            .get(&model)
            .cloned()
            .unwrap_or_else(|| format!("#{}", model.0))
    }

    /// Where `model` lives when cached, if this agent can fetch it.
    fn path(&self, model: ModelId) -> Option<PathBuf> {
        self.known.get(&model).map(|k| self.dir.join(&k.entry))
    }

    async fn fetch_and_install(
        &self,
        model: ModelId,
        progress: &watch::Sender<FetchProgress>,
    ) -> Result<(), FetchError> {
        let known = self.known.get(&model).ok_or(FetchError::NoSource)?;
        let spec = FetchSpec {
            model: &known.name,
            source: &known.source,
            size_gb: known.size_gb,
        };
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let part_name = format!(
            "{PART_PREFIX}{}-{}-{serial}",
            known.entry,
            std::process::id()
        );
        let part = PartPath::new(self.dir.join(part_name));
        let cap = spec.cap_bytes();
        let on_bytes = |delta: u64, done: u64, total: Option<u64>| {
            self.downloaded.fetch_add(delta, Ordering::Relaxed);
            progress.send_modify(|p| {
                p.done = done;
                p.total = total.unwrap_or(cap);
            });
        };
        tracing::info!(model = %known.name, "fetching model");
        fetch(&self.client, &spec, &part, &on_bytes).await?;
        install(part, &self.dir.join(&known.entry)).await
    }

    /// Records a fetch's end, unless the model was evicted meanwhile (then the fetch no
    /// longer counts, whatever it did).
    fn finish(&self, model: ModelId, generation: u64, result: &Result<(), FetchError>) {
        let mut state = self.lock();
        let current = state
            .inflight
            .get(&model)
            .is_some_and(|f| f.generation == generation);
        if !current {
            return;
        }
        state.inflight.remove(&model);
        let name = self.name(model);
        match result {
            Ok(()) => {
                let size = self.path(model).map_or(0, |p| tree_size(&p).1);
                state.present.insert(model, size);
                tracing::info!(model = %name, bytes = size, "model cached");
            }
            Err(e) => {
                *state.stats.failures.entry(e.reason()).or_default() += 1;
                tracing::warn!(model = %name, error = %e, "model fetch failed");
            }
        }
    }
}

fn known_models(
    engine: &EngineConfig,
    sources: &BTreeMap<String, ModelSource>,
) -> BTreeMap<ModelId, Known> {
    sources
        .iter()
        .filter_map(|(name, source)| {
            let id = engine.model_id(name)?;
            let known = Known {
                name: name.clone(),
                source: source.clone(),
                entry: entry_name(name, source),
                size_gb: engine.model_size_gb(id),
            };
            Some((id, known))
        })
        .collect()
}

fn log_scan(dir: &Path, found: &super::layout::Scan) {
    tracing::info!(
        dir = %dir.display(), cached = found.present.len(), removed = ?found.removed,
        "model cache scanned"
    );
    if !found.unknown.is_empty() {
        tracing::warn!(
            dir = %dir.display(), entries = ?found.unknown,
            "entries in the model cache directory that are not the cache's: left alone"
        );
    }
}

fn http_client() -> Result<reqwest::Client, OpenError> {
    reqwest::Client::builder()
        .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(|e| OpenError::Client(e.to_string()))
}
