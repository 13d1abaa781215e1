//! The store a command names with `--redis`, and how each kind of command connects to it.

use anyhow::{bail, Context, Result};
use clap::Args;
use drover_engine::core::{EngineConfig, MachineId};
use drover_engine::redis::{config_differences, ConnectOptions, RedisStore};
use drover_engine::runtime::{ConfigFile, LocalStore, SharedStore, StoreError};
use drover_engine::store::journal::{EntryId, JournalEntry};
use drover_engine::store::{Refusal, Reply, Request};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub(crate) struct RedisArgs {
    /// redis://HOST:PORT (rediss:// for TLS, redis+cluster:// for a cluster).
    #[arg(long)]
    pub(crate) redis: String,
    #[arg(long, default_value = "drover")]
    pub(crate) namespace: String,
}

#[derive(Args)]
pub(crate) struct StoreArgs {
    /// redis://HOST:PORT (rediss:// for TLS), or "memory" for a store in this process only.
    #[arg(long)]
    pub(crate) redis: String,
    #[arg(long, default_value = "drover")]
    pub(crate) namespace: String,
    /// Config file: engine knobs in its [engine] table (the agents' file serves as well; their
    /// own keys are checked, not used).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

/// The store `--redis` names.
pub(crate) async fn connect(url: &str, namespace: &str, config: &EngineConfig) -> Result<AnyStore> {
    if url == "memory" {
        tracing::warn!("--redis memory: the store lives and dies with this process");
        return Ok(AnyStore::Local(LocalStore::new(config.clone())));
    }
    let store = RedisStore::connect(url, namespace, config.clone())
        .await
        .context("connecting to Redis")?;
    watch_namespace_config(store.clone());
    Ok(AnyStore::Redis(store))
}

/// Every minute, compares the namespace's engine configuration with this process's and warns
/// (once per change) when `drover admin config set` replaced it: this process keeps running
/// with its own until it is restarted.
pub(crate) fn watch_namespace_config(store: RedisStore) {
    tokio::spawn(async move {
        let mut warned: Option<String> = None;
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            every.tick().await;
            let Ok(Some(recorded)) = store.namespace_config().await else {
                continue;
            };
            let differences = config_differences(&recorded.config, store.config());
            if differences.is_empty() || warned.as_deref() == Some(recorded.sha1.as_str()) {
                continue;
            }
            let fields: Vec<&str> = differences.iter().map(|d| d.field.as_str()).collect();
            tracing::warn!(
                namespace = store.namespace(),
                sha1 = %recorded.sha1,
                written_by = recorded.written_by.as_deref().unwrap_or(""),
                ?fields,
                "the namespace's engine configuration changed: this process runs its own until \
                 restarted, and must be restarted with the new one"
            );
            warned = Some(recorded.sha1);
        }
    });
}

/// A connection for `drover admin`: it neither records nor checks the namespace's config.
pub(crate) async fn connect_admin(redis: &RedisArgs) -> Result<RedisStore> {
    if redis.redis == "memory" {
        bail!("drover admin needs a Redis: a memory store lives only inside its own process");
    }
    let options = ConnectOptions {
        skip_namespace_config: true,
        ..ConnectOptions::default()
    };
    RedisStore::connect_with(
        &redis.redis,
        &redis.namespace,
        EngineConfig::default(),
        options,
    )
    .await
    .context("connecting to Redis")
}

/// A store to read from: no library loaded, nothing announced (`ConnectOptions::read_only`).
pub(crate) async fn connect_reader(url: &str, namespace: &str) -> Result<RedisStore> {
    let options = ConnectOptions {
        read_only: true,
        ..ConnectOptions::default()
    };
    RedisStore::connect_with(url, namespace, EngineConfig::default(), options)
        .await
        .context("connecting to Redis")
}

/// A store for calls that move a whole namespace (`drover admin backup` and `restore`): read-only
/// (no library loaded: the restored namespace's first engine process loads it), and a response
/// timeout long enough for one call that carries every key.
pub(crate) async fn connect_bulk(url: &str, namespace: &str) -> Result<RedisStore> {
    let options = ConnectOptions {
        read_only: true,
        response_timeout: Some(Duration::from_secs(600)),
        ..ConnectOptions::default()
    };
    RedisStore::connect_with(url, namespace, EngineConfig::default(), options)
        .await
        .context("connecting to Redis")
}

/// Either store, so that one code path serves both.
#[derive(Clone)]
pub(crate) enum AnyStore {
    Local(LocalStore),
    Redis(RedisStore),
}

impl SharedStore for AnyStore {
    async fn apply(&self, request: Request) -> Result<Result<Reply, Refusal>, StoreError> {
        match self {
            AnyStore::Local(store) => store.apply(request).await,
            AnyStore::Redis(store) => store.apply(request).await,
        }
    }

    async fn wait_wake(&self, machine: MachineId, timeout: Duration) -> Result<bool, StoreError> {
        match self {
            AnyStore::Local(store) => store.wait_wake(machine, timeout).await,
            AnyStore::Redis(store) => store.wait_wake(machine, timeout).await,
        }
    }

    async fn follow_journal(
        &self,
        after: Option<EntryId>,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        match self {
            AnyStore::Local(store) => store.follow_journal(after, limit, timeout).await,
            AnyStore::Redis(store) => store.follow_journal(after, limit, timeout).await,
        }
    }
}

/// The config file every process reads (`ConfigFile`), or the defaults without one.
pub(crate) fn load_config_file(path: Option<&Path>) -> Result<ConfigFile> {
    match path {
        None => Ok(ConfigFile::default()),
        Some(path) => Ok(ConfigFile::load(path)?),
    }
}
