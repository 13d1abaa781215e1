//! `drover`: the API server, the machine agent, the reaper, and a small client.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use drover_engine::agent::Agent;
use drover_engine::api::client::ApiClient;
use drover_engine::api::{self, ApiOptions, ApiState};
use drover_engine::core::{EngineConfig, JobId, MachineId, MachineSpec, ModelSet, Span, Time};
use drover_engine::executor::Executors;
use drover_engine::redis::{config_differences, ConnectOptions, RedisStore};
use drover_engine::runtime::{
    AgentDriver, ConfigFile, DriverExit, DriverOptions, LocalStore, Metered, SharedStore,
    StoreError,
};
use drover_engine::store::journal::JournalEntry;
use drover_engine::store::mem::check_machine_spec;
use drover_engine::store::{Refusal, Reply, Request};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Drover: a GPU job scheduler on Redis"
)]
struct Cli {
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (and a reaper, unless --no-reaper).
    Api(ApiArgs),
    /// Run the machine agent: claim jobs that fit this machine and run them.
    Agent(AgentArgs),
    /// Run only the reaper.
    Reaper(StoreArgs),
    /// Submit a job through the API.
    Submit(SubmitArgs),
    /// Show a job, or the scheduler's stats.
    Status(StatusArgs),
    /// List this machine's GPUs (through the CUDA driver), as JSON.
    Gpus,
    /// Read what a namespace holds in Redis: a job, a machine, the queues, the namespace.
    Inspect {
        #[command(subcommand)]
        what: InspectWhat,
    },
    /// Administer Redis: a namespace's engine configuration, old function libraries.
    Admin(AdminArgs),
    /// The namespace's journal: what every store call did, in order.
    #[command(subcommand)]
    Journal(JournalCommand),
}

#[derive(Subcommand)]
enum JournalCommand {
    /// Write the journal as JSON lines, one event a line (schema in README, "The journal").
    Export {
        #[command(flatten)]
        redis: RedisArgs,
        /// Only entries at or after this store time: µs since the Unix epoch, or an age
        /// ("2h": two hours before the newest entry).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this store time (µs, or an age as for --since).
        #[arg(long)]
        until: Option<String>,
        /// Only the events of this job.
        #[arg(long)]
        job: Option<u64>,
    },
}

#[derive(Args)]
struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The namespace's engine configuration: show it, or change it for every process.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Delete Drover function libraries that no process has announced using within
    /// --older-than (the one this drover loads is always kept).
    Gc {
        #[arg(long)]
        redis: String,
        /// "24h", "30m", ...: keep a library announced more recently than this.
        #[arg(long, default_value = "24h")]
        older_than: String,
        /// Only say what would be deleted.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the namespace's engine configuration as an [engine] table (TOML).
    Show(RedisArgs),
    /// Record FILE's [engine] table as the namespace's. Processes running now keep theirs
    /// until restarted; processes started later must bring this one.
    Set {
        /// A config file (its [engine] table is what counts).
        file: PathBuf,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

#[derive(Subcommand)]
enum InspectWhat {
    /// A job: state, attempt, lease token and expiry, machine, class, and its history so far.
    Job {
        id: String,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// A machine: its spec, leases and last heartbeat.
    Machine {
        id: String,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// Queue depth per class, with the head and the oldest job's wait.
    Queues {
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// The namespace's data layout, counters and keys, and the function libraries loaded.
    Namespace {
        /// Also decode every key and report whatever does not add up (reads the whole
        /// namespace).
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        opts: InspectOpts,
    },
    /// Everything the namespace holds, decoded (the form the conformance suite compares).
    Dump {
        #[command(flatten)]
        opts: InspectOpts,
    },
}

#[derive(Args)]
struct RedisArgs {
    /// redis://HOST:PORT (rediss:// for TLS, redis+cluster:// for a cluster).
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "drover")]
    namespace: String,
}

#[derive(Args)]
struct InspectOpts {
    /// redis://HOST:PORT (rediss:// for TLS, redis+cluster://... for a cluster).
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "drover")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StoreArgs {
    /// redis://HOST:PORT (rediss:// for TLS), or "memory" for a store in this process only.
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "drover")]
    namespace: String,
    /// Config file: engine knobs in its [engine] table (the agents' file serves as well; their
    /// own keys are checked, not used).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ApiArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Bearer token for every endpoint but /healthz.
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Do not run a reaper inside the API process.
    #[arg(long)]
    no_reaper: bool,
}

#[derive(Args)]
struct AgentArgs {
    #[arg(long)]
    redis: String,
    #[arg(long, default_value = "drover")]
    namespace: String,
    #[arg(long)]
    pool: String,
    /// Unique machine name; defaults to the host name.
    #[arg(long)]
    name: Option<String>,
    /// GPUs to offer; by default, those the CUDA driver finds (none without a driver).
    #[arg(long)]
    gpus: Option<u32>,
    /// GPU memory per GPU; by default, the smallest GPU's.
    #[arg(long)]
    gpu_mem_gb: Option<u32>,
    /// GPU model; by default, the first GPU's name.
    #[arg(long)]
    gpu_model: Option<String>,
    #[arg(long, default_value_t = 100)]
    disk_gb: u32,
    #[arg(long, default_value_t = 0.0)]
    cost_per_hour: f64,
    /// Config file: [engine] (the namespace's engine knobs), and the agent's own [labels],
    /// [kinds.NAME] command templates and drain_grace.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve this agent's /metrics here.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Args)]
struct ClientArgs {
    /// http://HOST:PORT of the API.
    #[arg(long)]
    api: String,
    #[arg(long, env = "DROVER_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    client: ClientArgs,
    kind: String,
    /// JSON payload, e.g. '{"seconds": 2}'.
    #[arg(long)]
    payload: Option<String>,
    #[arg(long)]
    priority: Option<u8>,
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    #[arg(long, default_value_t = 0)]
    gpu_mem_gb: u32,
    /// Allowed GPU model (repeat for several).
    #[arg(long)]
    gpu_model: Vec<String>,
    /// Catalog model the job loads (repeat for several).
    #[arg(long)]
    model: Vec<String>,
    #[arg(long, default_value_t = 0)]
    disk_gb: u32,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// "10m", "30s", ...
    #[arg(long)]
    timeout: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Wait for the job to finish; exit 0 only if it succeeded.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
    job_id: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = tokio::runtime::Runtime::new()
        .context("starting the tokio runtime")
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes, without a backtrace (RUST_BACKTRACE would
            // add one to anyhow's own report).
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Api(args) => {
            let config = load_config_file(args.store.config.as_deref())?.engine;
            let store = connect(&args.store.redis, &args.store.namespace, &config).await?;
            run_api(store, config, args).await
        }
        Command::Agent(args) => {
            let file = load_config_file(args.config.as_deref())?;
            // A spec the store could never take is refused here, before any request: the
            // reason cannot change, so resending it would only loop.
            let found = drover_engine::gpu::discover().context("discovering GPUs")?;
            let spec = machine_spec(&args, &file, &found);
            if let Err(refusal) = check_machine_spec(&spec, &file.engine) {
                let reason = match refusal {
                    Refusal::Invalid(invalid) => invalid.to_string(),
                    other => other.to_string(),
                };
                bail!("invalid machine spec, the store would refuse it: {reason}");
            }
            let store = connect(&args.redis, &args.namespace, &file.engine).await?;
            run_agent(store, file, args, spec, found).await
        }
        Command::Reaper(args) => {
            let config = load_config_file(args.config.as_deref())?.engine;
            let store = connect(&args.redis, &args.namespace, &config).await?;
            run_reaper(store, config).await
        }
        Command::Admin(args) => match args.command {
            AdminCommand::Config(ConfigCommand::Show(redis)) => config_show(redis).await,
            AdminCommand::Config(ConfigCommand::Set { file, redis }) => {
                config_set(&file, redis).await
            }
            AdminCommand::Gc {
                redis,
                older_than,
                dry_run,
                json,
            } => gc(&redis, &older_than, dry_run, json).await,
        },
        Command::Submit(args) => submit(args).await,
        Command::Status(args) => status(args).await,
        Command::Inspect { what } => inspect(what).await,
        Command::Journal(JournalCommand::Export {
            redis,
            since,
            until,
            job,
        }) => journal_export(redis, since, until, job.map(JobId)).await,
        Command::Gpus => {
            println!(
                "{}",
                serde_json::to_string_pretty(&drover_engine::gpu::discover()?)?
            );
            Ok(())
        }
    }
}

/// The store `--redis` names.
async fn connect(url: &str, namespace: &str, config: &EngineConfig) -> Result<AnyStore> {
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
fn watch_namespace_config(store: RedisStore) {
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
async fn connect_admin(redis: &RedisArgs) -> Result<RedisStore> {
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

/// The [engine] table of a config file, as TOML.
fn engine_toml(config: &EngineConfig) -> Result<String> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        engine: &'a EngineConfig,
    }
    toml::to_string(&File { engine: config }).context("writing the config as TOML")
}

async fn config_show(redis: RedisArgs) -> Result<()> {
    let store = connect_admin(&redis).await?;
    let Some(recorded) = store.namespace_config().await? else {
        bail!(
            "namespace {:?} holds no engine configuration yet: the first process to connect \
             records its own (or record one with `drover admin config set FILE`)",
            redis.namespace
        );
    };
    println!(
        "# The engine configuration of namespace {:?}",
        redis.namespace
    );
    println!("# sha1 {}", recorded.sha1);
    if let Some(by) = &recorded.written_by {
        let at = recorded
            .written_at
            .map_or(String::new(), |t| format!(" at {t} (Unix seconds)"));
        println!("# written by {by}{at}");
    }
    print!("{}", engine_toml(&recorded.config)?);
    Ok(())
}

async fn config_set(file: &Path, redis: RedisArgs) -> Result<()> {
    let config = ConfigFile::load(file)?.engine;
    let store = connect_admin(&redis).await?;
    let previous = store.set_namespace_config(&config).await?;
    let Some(previous) = previous else {
        println!(
            "namespace {:?}: engine configuration recorded (there was none)",
            redis.namespace
        );
        return Ok(());
    };
    let differences = config_differences(&previous.config, &config);
    if differences.is_empty() {
        println!(
            "namespace {:?}: engine configuration unchanged",
            redis.namespace
        );
        return Ok(());
    }
    println!(
        "namespace {:?}: engine configuration changed:",
        redis.namespace
    );
    for d in &differences {
        println!("  {}: {} -> {}", d.field, d.namespace, d.ours);
    }
    println!(
        "Processes running now keep their configuration until restarted (they log a warning \
         within a minute); restart them with this file. Processes started with the old one are \
         refused."
    );
    Ok(())
}

/// Either store, so that one code path serves both.
#[derive(Clone)]
enum AnyStore {
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
}

/// The config file every process reads (`ConfigFile`), or the defaults without one.
fn load_config_file(path: Option<&Path>) -> Result<ConfigFile> {
    match path {
        None => Ok(ConfigFile::default()),
        Some(path) => Ok(ConfigFile::load(path)?),
    }
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

async fn run_api<S: SharedStore>(store: S, config: EngineConfig, args: ApiArgs) -> Result<()> {
    let options = ApiOptions {
        token: args.token.filter(|t| !t.is_empty()),
        ..ApiOptions::default()
    };
    if options.token.is_none() {
        tracing::warn!("no --token: the API is open to anyone who can reach it");
    }
    let state = ApiState::new(Metered::new(store), Arc::new(config), options);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, reaper = !args.no_reaper, "API serving");
    let every = Duration::from_secs(5);
    api::serve(listener, state, every, !args.no_reaper, shutdown_signal()).await?;
    Ok(())
}

async fn run_reaper<S: SharedStore>(store: S, config: EngineConfig) -> Result<()> {
    tracing::info!(period = %config.reaper_period, "reaper running");
    let totals = Default::default();
    drover_engine::runtime::run_reaper(store, Arc::new(config), totals, shutdown_signal()).await;
    Ok(())
}

/// What this machine offers: the flags, or what the CUDA driver found.
fn machine_spec(
    args: &AgentArgs,
    file: &ConfigFile,
    found: &[drover_engine::gpu::GpuInfo],
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
    }
}

async fn run_agent<S: SharedStore>(
    store: S,
    file: ConfigFile,
    args: AgentArgs,
    spec: MachineSpec,
    found: Vec<drover_engine::gpu::GpuInfo>,
) -> Result<()> {
    let gpus = spec.gpus;
    let config = Arc::new(file.engine.clone());
    let seed = std::process::id() as u64;
    let agent = Agent::new(
        config.clone(),
        spec.clone(),
        ModelSet::EMPTY,
        seed,
        Time::ZERO,
    );
    let mut executors = Executors::from_templates(&file.kinds);
    if !found.is_empty() {
        let ordinals = found
            .iter()
            .map(|g| g.ordinal)
            .take(gpus as usize)
            .collect();
        executors = executors.with("gpu", drover_engine::executor::GpuExecutor::new(ordinals));
    }
    let kinds: Vec<&str> = executors.kinds().collect();
    tracing::info!(name = %spec.name, pool = %spec.pool, gpus = spec.gpus, ?kinds, "agent starting");
    let options = DriverOptions {
        drain_grace: file
            .drain_grace
            .map_or(DriverOptions::default().drain_grace, |s| {
                Duration::from_micros(s.as_micros())
            }),
    };
    let driver = AgentDriver::new(store, agent, config, executors, options);
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

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("agent-{}", std::process::id()))
}

async fn submit(args: SubmitArgs) -> Result<()> {
    let client = ApiClient::new(&args.client.api, args.client.token.clone())?;
    let payload: Option<Value> = match &args.payload {
        None => None,
        Some(text) => Some(serde_json::from_str(text).context("--payload is not JSON")?),
    };
    let body = json!({
        "kind": args.kind,
        "payload": payload,
        "priority": args.priority,
        "requirements": {
            "gpus": args.gpus,
            "gpu_mem_gb": args.gpu_mem_gb,
            "gpu_models": args.gpu_model,
            "models": args.model,
            "disk_gb": args.disk_gb,
        },
        "max_attempts": args.max_attempts,
        "timeout": args.timeout,
        "idempotency_key": args.idempotency_key,
    });
    let (status, reply) = client.post("/v1/jobs", &body).await?;
    if !status.is_success() {
        bail!("submit refused ({status}): {reply}");
    }
    println!("{reply}");
    let Some(id) = reply.get("id").and_then(Value::as_str) else {
        bail!("the API answered without an id: {reply}");
    };
    if args.wait {
        return wait_for(&client, id).await;
    }
    Ok(())
}

async fn wait_for(client: &ApiClient, id: &str) -> Result<()> {
    loop {
        let (status, job) = client.get(&format!("/v1/jobs/{id}")).await?;
        if !status.is_success() {
            bail!("reading {id} ({status}): {job}");
        }
        let state = job.get("state").and_then(Value::as_str).unwrap_or("");
        let terminal = ["succeeded", "dead", "cancelled", "timed_out", "unworkable"];
        if terminal.contains(&state) {
            println!("{job}");
            if state == "succeeded" {
                return Ok(());
            }
            bail!("job {id} ended {state}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn status(args: StatusArgs) -> Result<()> {
    let client = ApiClient::new(&args.client.api, args.client.token.clone())?;
    let path = match &args.job_id {
        Some(id) => format!("/v1/jobs/{id}"),
        None => "/v1/stats".to_string(),
    };
    let (status, reply) = client.get(&path).await?;
    println!("{}", serde_json::to_string_pretty(&reply)?);
    if !status.is_success() {
        bail!("{path}: {status}");
    }
    Ok(())
}

/// A store time given as µs since the epoch, or as an age before `newest`.
fn store_time(arg: &str, flag: &str, newest: Time) -> Result<Time> {
    if let Ok(us) = arg.parse::<u64>() {
        return Ok(Time(us));
    }
    let age = Span::parse(arg).map_err(|e| {
        anyhow::anyhow!("{flag} {arg:?}: neither µs since the epoch nor an age like 2h ({e})")
    })?;
    Ok(Time(newest.0.saturating_sub(age.as_micros())))
}

/// `drover journal export`: the journal's entries, oldest first, as JSON lines on stdout.
async fn journal_export(
    redis: RedisArgs,
    since: Option<String>,
    until: Option<String>,
    job: Option<JobId>,
) -> Result<()> {
    use std::io::Write;
    let store = connect_reader(&redis.redis, &redis.namespace).await?;
    // Read in pages; the journal is bounded (`[engine.journal] max_len`).
    let mut entries = Vec::new();
    loop {
        let after = entries.last().map(|e: &JournalEntry| e.id);
        let page = store.read_journal(after, 10_000).await?;
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    let newest = entries.last().map_or(Time::ZERO, |e| e.at);
    let since = since
        .map(|s| store_time(&s, "--since", newest))
        .transpose()?;
    let until = until
        .map(|u| store_time(&u, "--until", newest))
        .transpose()?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for entry in entries {
        if since.is_some_and(|s| entry.at < s) || until.is_some_and(|u| entry.at >= u) {
            continue;
        }
        let entry = match job {
            Some(job) => JournalEntry {
                events: entry
                    .events
                    .into_iter()
                    .filter(|e| e.job() == Some(job))
                    .collect(),
                ..entry
            },
            None => entry,
        };
        for line in entry.export_lines() {
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// A store to read from: no library loaded, nothing announced (`ConnectOptions::read_only`).
async fn connect_reader(url: &str, namespace: &str) -> Result<RedisStore> {
    let options = ConnectOptions {
        read_only: true,
        ..ConnectOptions::default()
    };
    RedisStore::connect_with(url, namespace, EngineConfig::default(), options)
        .await
        .context("connecting to Redis")
}

fn print_report<T: serde::Serialize>(
    report: &T,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

fn parse_id(what: &str, id: &str) -> Result<u64> {
    id.trim()
        .parse()
        .with_context(|| format!("{what} id {id:?} is not a number"))
}

async fn inspect(what: InspectWhat) -> Result<()> {
    match what {
        InspectWhat::Job { id, opts } => {
            let id = JobId(parse_id("job", &id)?);
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let Some(report) = store.inspect_job(id).await? else {
                bail!("job {} not found in namespace {:?}", id.0, opts.namespace);
            };
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Machine { id, opts } => {
            let id = MachineId(parse_id("machine", &id)?);
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let Some(report) = store.inspect_machine(id).await? else {
                bail!(
                    "machine {} not found in namespace {:?}",
                    id.0,
                    opts.namespace
                );
            };
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Queues { opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let report = store.inspect_queues().await?;
            print_report(&report, opts.json, |r| r.render())
        }
        InspectWhat::Namespace { check, opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let report = store.inspect_namespace(check).await?;
            print_report(&report, opts.json, |r| r.render())?;
            if report.anomalies.as_ref().is_some_and(|a| !a.is_empty()) {
                bail!("the namespace's keys do not add up (see the anomalies above)");
            }
            Ok(())
        }
        InspectWhat::Dump { opts } => {
            let store = connect_reader(&opts.redis, &opts.namespace).await?;
            let dump = store.dump().await?;
            // The dump is for machines and diffs: JSON either way.
            println!("{}", serde_json::to_string_pretty(&dump)?);
            Ok(())
        }
    }
}

async fn gc(url: &str, older_than: &str, dry_run: bool, json: bool) -> Result<()> {
    let bound = Span::parse(older_than).context("--older-than")?;
    let store = connect_reader(url, "drover").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verdicts = store
        .gc_libraries(Duration::from_micros(bound.as_micros()), now, dry_run)
        .await?;
    print_report(&verdicts, json, |verdicts| {
        let mut out = String::new();
        if verdicts.is_empty() {
            out.push_str("no Drover function libraries on the server\n");
        }
        for v in verdicts {
            let announced = match v.library.announced {
                Some(t) => format!("announced {}s ago", now.saturating_sub(t)),
                None => "never announced".into(),
            };
            out.push_str(&format!(
                "{:<14} {}  ({announced})\n",
                v.action, v.library.name
            ));
        }
        out
    })
}
