//! The long-running processes: `drover api`, `drover agent`, `drover reaper`.

use crate::stores::{connect, load_config_file, StoreArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use drover_engine::agent::Agent;
use drover_engine::api::{self, ApiOptions, ApiState};
use drover_engine::core::{EngineConfig, MachineSpec, Time};
use drover_engine::executor::Executors;
use drover_engine::runtime::{
    AgentDriver, ConfigFile, DriverExit, DriverOptions, Metered, SharedStore, Workspace,
    WorkspaceConfig,
};
use drover_engine::store::mem::check_machine_spec;
use drover_engine::store::Refusal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::ServerConfig;

#[derive(Args)]
pub(crate) struct ApiArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    /// Bearer token for every endpoint but /healthz.
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Do not run a reaper inside the API process.
    #[arg(long)]
    pub(crate) no_reaper: bool,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct AgentArgs {
    #[arg(long)]
    pub(crate) redis: String,
    #[arg(long, default_value = "drover")]
    pub(crate) namespace: String,
    #[arg(long)]
    pub(crate) pool: String,
    /// Unique machine name; defaults to the host name.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// GPUs to offer; by default, those the CUDA driver finds (none without a driver).
    #[arg(long)]
    pub(crate) gpus: Option<u32>,
    /// GPU memory per GPU; by default, the smallest GPU's.
    #[arg(long)]
    pub(crate) gpu_mem_gb: Option<u32>,
    /// GPU model; by default, the first GPU's name.
    #[arg(long)]
    pub(crate) gpu_model: Option<String>,
    /// Disk the agent may fill with cached models and jobs' scratch directories, in GiB.
    #[arg(long, default_value_t = 100)]
    pub(crate) disk_gb: u32,
    /// Where the agent keeps its state: the model cache (`models/`) and scratch directories
    /// (`scratch/`). Default: $XDG_STATE_HOME/drover, else ~/.local/state/drover, else
    /// /var/lib/drover.
    #[arg(long, env = "DROVER_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The model cache's directory; default: `models/` in the state directory.
    #[arg(long, env = "DROVER_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0.0)]
    pub(crate) cost_per_hour: f64,
    /// Config file: [engine] (the namespace's engine knobs), and the agent's own [labels],
    /// [kinds.NAME] command templates, [models.NAME] model sources and drain_grace.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Serve this agent's /metrics here.
    #[arg(long)]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

/// `drover api`.
pub(crate) async fn api(args: ApiArgs) -> Result<()> {
    let file = load_config_file(args.store.config.as_deref())?;
    // Before Redis: a bad certificate fails the start at once, not after a connection.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(api::tls::server_config(cert, key)?),
        _ => None,
    };
    let store = connect(&args.store.redis, &args.store.namespace, &file.engine).await?;
    run_api(store, file, args, tls).await
}

/// `drover agent`.
pub(crate) async fn agent(args: AgentArgs) -> Result<()> {
    let file = load_config_file(args.config.as_deref())?;
    // A spec the store could never take is refused here, before any request: the reason
    // cannot change, so resending it would only loop.
    let found = drover_engine::gpu::discover().context("discovering GPUs")?;
    let executors = executors(&args, &file, &found);
    let spec = machine_spec(&args, &file, &found, &executors);
    if let Err(refusal) = check_machine_spec(&spec, &file.engine) {
        let reason = match refusal {
            Refusal::Invalid(invalid) => invalid.to_string(),
            other => other.to_string(),
        };
        bail!("invalid machine spec, the store would refuse it: {reason}");
    }
    let store = connect(&args.redis, &args.namespace, &file.engine).await?;
    run_agent(store, file, args, spec, executors).await
}

/// `drover reaper`.
pub(crate) async fn reaper(args: StoreArgs) -> Result<()> {
    let config = load_config_file(args.config.as_deref())?.engine;
    let store = connect(&args.redis, &args.namespace, &config).await?;
    run_reaper(store, config).await
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received");
}

async fn run_api<S: SharedStore>(
    store: S,
    file: ConfigFile,
    args: ApiArgs,
    tls: Option<Arc<ServerConfig>>,
) -> Result<()> {
    let options = ApiOptions {
        token: args.token.filter(|t| !t.is_empty()),
        command_kinds: file.kinds,
        ..ApiOptions::default()
    };
    let config = file.engine;
    if options.token.is_none() {
        tracing::warn!("no --token: the API is open to anyone who can reach it");
    }
    let state = ApiState::new(Metered::new(store), Arc::new(config), options);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let (listen, reap) = (listener.local_addr()?, !args.no_reaper);
    tracing::info!(%listen, reaper = reap, tls = tls.is_some(), "API serving");
    match tls {
        Some(config) => {
            let listener = api::tls::TlsListener::new(listener, config)?;
            api::serve(listener, state, reap, shutdown_signal()).await?
        }
        None => api::serve(listener, state, reap, shutdown_signal()).await?,
    }
    Ok(())
}

async fn run_reaper<S: SharedStore>(store: S, config: EngineConfig) -> Result<()> {
    tracing::info!(period = %config.reaper_period, "reaper running");
    let totals = Default::default();
    drover_engine::runtime::run_reaper(store, Arc::new(config), totals, shutdown_signal()).await;
    Ok(())
}

/// The kinds this agent runs: the built-in ones, the config's command kinds, and `gpu` when
/// the driver found GPUs.
fn executors(
    args: &AgentArgs,
    file: &ConfigFile,
    found: &[drover_engine::gpu::GpuInfo],
) -> Executors {
    let executors = Executors::from_templates(&file.kinds);
    if found.is_empty() {
        return executors;
    }
    let gpus = args.gpus.unwrap_or(found.len() as u32);
    let ordinals = found
        .iter()
        .map(|g| g.ordinal)
        .take(gpus as usize)
        .collect();
    executors.with("gpu", drover_engine::executor::GpuExecutor::new(ordinals))
}

/// What this machine offers: the flags, or what the CUDA driver found, and the kinds its
/// executors run (so that claims bring it only jobs it can run).
fn machine_spec(
    args: &AgentArgs,
    file: &ConfigFile,
    found: &[drover_engine::gpu::GpuInfo],
    executors: &Executors,
) -> MachineSpec {
    let smallest = found
        .iter()
        .map(|g| g.total_mem_gb.floor() as u32)
        .min()
        .unwrap_or(0);
    MachineSpec {
        name: args.name.clone().unwrap_or_else(host_name),
        pool: args.pool.clone(),
        gpus: args.gpus.unwrap_or(found.len() as u32),
        gpu_model: args
            .gpu_model
            .clone()
            .or_else(|| found.first().map(|g| g.name.clone()))
            .unwrap_or_default(),
        gpu_mem_gb: args.gpu_mem_gb.unwrap_or(smallest),
        disk_gb: args.disk_gb,
        labels: file.labels.clone(),
        cost_per_hour: args.cost_per_hour,
        kinds: executors.kinds().map(str::to_owned).collect(),
    }
}

async fn run_agent<S: SharedStore>(
    store: S,
    file: ConfigFile,
    args: AgentArgs,
    spec: MachineSpec,
    executors: Executors,
) -> Result<()> {
    let config = Arc::new(file.engine.clone());
    let seed = std::process::id() as u64;
    let workspace_config = workspace_config(&args, &file);
    let (workspace, cached) = Workspace::open(&workspace_config, &config)
        .context("opening the model cache and scratch directories")?;
    let agent = Agent::new(config.clone(), spec.clone(), cached, seed, Time::ZERO);
    let kinds: Vec<&str> = executors.kinds().collect();
    tracing::info!(name = %spec.name, pool = %spec.pool, gpus = spec.gpus, ?kinds, "agent starting");
    let options = DriverOptions {
        drain_grace: file
            .drain_grace
            .map_or(DriverOptions::default().drain_grace, |s| {
                Duration::from_micros(s.as_micros())
            }),
    };
    let driver =
        AgentDriver::new(store, agent, config, executors, options).with_workspace(workspace);
    if let Some(addr) = args.metrics_listen {
        serve_agent_metrics(addr, driver.snapshot()).await?;
    }
    match driver.run(shutdown_signal()).await {
        DriverExit::Left => tracing::info!("drained and deregistered"),
        DriverExit::ReleasedAfterGrace { released } => {
            tracing::warn!(released, "drain grace over; released running jobs")
        }
    }
    Ok(())
}

async fn serve_agent_metrics(
    addr: SocketAddr,
    snapshot: tokio::sync::watch::Receiver<drover_engine::runtime::AgentSnapshot>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let router = api::agent_metrics::router(snapshot);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(())
}

/// Where the cache and scratch directories are, and the disk budget.
fn workspace_config(args: &AgentArgs, file: &ConfigFile) -> WorkspaceConfig {
    let state = args.state_dir.clone().unwrap_or_else(default_state_dir);
    WorkspaceConfig {
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(|| state.join("models")),
        scratch_dir: state.join("scratch"),
        disk_gb: args.disk_gb,
        sources: file.models.clone(),
    }
}

/// $XDG_STATE_HOME/drover, else ~/.local/state/drover, else /var/lib/drover.
fn default_state_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = var("XDG_STATE_HOME") {
        return PathBuf::from(state).join("drover");
    }
    match var("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/drover"),
        None => PathBuf::from("/var/lib/drover"),
    }
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("agent-{}", std::process::id()))
}
