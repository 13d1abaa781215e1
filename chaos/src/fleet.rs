//! The `drover` processes: one API (with its reaper) on Redis directly, and one agent per
//! machine, each reaching Redis through a fault proxy of its own. A killed machine is gone for
//! good; its replacement is a new machine (a new name), as a new rented host would be.

use crate::procs::Children;
use crate::proxy::Proxy;
use anyhow::{bail, Context, Result};
use drover_sim::scenario::{Labels, PoolSpec, Scenario};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run's namespace in Redis.
pub const NAMESPACE: &str = "chaos";
/// How long the API may take to answer /healthz after it starts.
const API_START: Duration = Duration::from_secs(30);

/// Where the `drover` binary is: `--drover`, else $DROVER_BIN, else next to this binary, else
/// on PATH.
pub fn drover_binary(flag: Option<PathBuf>) -> PathBuf {
    if let Some(path) = flag.or_else(|| std::env::var_os("DROVER_BIN").map(PathBuf::from)) {
        return path;
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("drover")))
        .filter(|path| path.is_file());
    sibling.unwrap_or_else(|| PathBuf::from("drover"))
}

/// Writes one config file per pool: the scenario's `[engine]` and the pool's `[labels]`.
/// Every process of the namespace runs the same engine configuration (the namespace records
/// it and refuses another).
pub fn write_configs(scenario: &Scenario, dir: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        engine: &'a drover_sim::scenario::EngineConfig,
        labels: &'a Labels,
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut paths = Vec::new();
    for pool in &scenario.pools {
        let text = toml::to_string(&File {
            engine: &scenario.engine,
            labels: &pool.labels,
        })
        .context("writing the engine configuration as TOML")?;
        let path = dir.join(format!("pool-{}.toml", pool.name));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn log_file(path: &Path) -> Result<(Stdio, Stdio)> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok((Stdio::from(file.try_clone()?), Stdio::from(file)))
}

/// Starts `drover api` with its reaper on a free port and waits until it is healthy; returns
/// its base URL.
pub async fn start_api(
    children: &Children,
    drover: &Path,
    redis_url: &str,
    config: &Path,
    logs: &Path,
) -> Result<(String, u32)> {
    let port = crate::redis_server::free_port();
    let (out, err) = log_file(&logs.join("api.log"))?;
    let mut command = Command::new(drover);
    command
        .args(["--log-format", "json", "api", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--redis", redis_url, "--namespace", NAMESPACE, "--config"])
        .arg(config)
        .env_remove("DROVER_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let pid = children
        .spawn(&mut command)
        .with_context(|| format!("starting {} api", drover.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = drover_engine::api::client::ApiClient::new(&base, None)?;
    let deadline = Instant::now() + API_START;
    while Instant::now() < deadline {
        if let Ok((status, _)) = client.get("/healthz").await {
            if status.is_success() {
                return Ok((base, pid));
            }
        }
        if !children.is_running(pid) {
            bail!(
                "`drover api` exited at start; see {}",
                logs.join("api.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "`drover api` was not healthy within {}s; see {}",
        API_START.as_secs(),
        logs.join("api.log").display()
    )
}

/// One machine of the fleet, alive or not.
pub struct Machine {
    pub pool: usize,
    pub name: String,
    pub pid: u32,
    pub proxy: Proxy,
    pub alive: bool,
}

/// What every agent needs to start.
pub struct AgentSetup {
    pub drover: PathBuf,
    pub redis_port: u16,
    pub redis_latency: Duration,
    pub configs: Vec<PathBuf>,
    pub dir: PathBuf,
}

impl AgentSetup {
    /// Starts machine `serial` of `pool` (index `pool_index`): its proxy, then its agent.
    pub async fn start(
        &self,
        children: &Children,
        pool_index: usize,
        pool: &PoolSpec,
        serial: u32,
    ) -> Result<Machine> {
        let name = format!("{}-{serial}", pool.name);
        let proxy = Proxy::start(self.redis_port, self.redis_latency)
            .await
            .context("starting a fault proxy")?;
        let (out, err) = log_file(&self.dir.join("logs").join(format!("agent-{name}.log")))?;
        let mut command = Command::new(&self.drover);
        command
            .args(["--log-format", "json", "agent", "--redis"])
            .arg(proxy.url())
            .args([
                "--namespace",
                NAMESPACE,
                "--pool",
                &pool.name,
                "--name",
                &name,
            ])
            .args(["--gpus", &pool.gpus.to_string()])
            .args(["--gpu-mem-gb", &pool.gpu_mem_gb.to_string()])
            .args(["--gpu-model", &pool.gpu_model])
            .args(["--disk-gb", &pool.disk_gb.to_string()])
            .args(["--cost-per-hour", &pool.cost_per_hour.to_string()])
            .arg("--config")
            .arg(&self.configs[pool_index])
            .arg("--state-dir")
            .arg(self.dir.join("state").join(&name))
            .env_remove("DROVER_CACHE_DIR")
            .env_remove("DROVER_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let pid = children
            .spawn(&mut command)
            .with_context(|| format!("starting {} agent", self.drover.display()))?;
        Ok(Machine {
            pool: pool_index,
            name,
            pid,
            proxy,
            alive: true,
        })
    }
}
