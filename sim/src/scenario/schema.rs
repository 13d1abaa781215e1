//! The typed form of a scenario file. `scenarios/README.md` documents every field.

use drover_engine::core::labels::Labels;
use drover_engine::core::{EngineConfig, Span};

/// One simulated run: a fleet, the work offered to it, and the faults injected into it.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    /// Arrivals stop at this simulated time; then the run drains.
    pub duration: Span,
    /// Metrics ignore jobs submitted before this; always below `duration`.
    pub warmup: Span,
    /// After `duration` the run continues until every job is terminal or this much more time
    /// has passed.
    pub drain: Span,
    pub redis: RedisSpec,
    /// The `[engine]` table, with `models` filled from `[[model]]`; already validated.
    pub engine: EngineConfig,
    pub models: Vec<ModelSpec>,
    pub pools: Vec<PoolSpec>,
    pub workloads: Vec<WorkloadSpec>,
    pub faults: Vec<FaultSpec>,
}

/// What a Redis restart loses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Persistence {
    /// No persistence: a restart loses everything.
    None,
    /// `appendfsync everysec`: a restart loses about the last second of writes.
    #[default]
    AofEverysec,
    /// `appendfsync always`: a restart loses no acknowledged write.
    AofAlways,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RedisSpec {
    /// One-way latency between a machine and Redis.
    pub latency: Span,
    pub persistence: Persistence,
    /// maxmemory, modelled as a cap on jobs held; submissions past it are refused.
    pub max_jobs: Option<u64>,
    /// Probability that a reply is lost after its request was applied.
    pub reply_loss: f64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub name: String,
    pub size_gb: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolSpec {
    pub name: String,
    pub machines: u32,
    /// GPUs per machine.
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub disk_gb: u32,
    pub cost_per_hour: f64,
    /// Time from a machine's start to its first claim.
    pub boot: Span,
    pub lifetime: Lifetime,
    /// A lost machine is replaced by a new one that boots.
    pub replace: bool,
    pub labels: Labels,
    /// Models preloaded on boot; each names a `[[model]]`.
    pub cached_models: Vec<String>,
    pub download_gb_per_s: f64,
}

/// How long a machine lives before it vanishes (spot preemption, hardware loss).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Lifetime {
    /// Machines live for the whole run.
    #[default]
    None,
    Exponential {
        mean: Span,
    },
    Constant {
        value: Span,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadSpec {
    pub name: String,
    pub arrivals: Arrivals,
    /// Run time of one attempt on a machine that already holds the job's models.
    pub service: Dist,
    pub gpus: u32,
    pub gpu_mem_gb: u32,
    pub gpu_models: Vec<String>,
    /// Models the job needs; each names a `[[model]]`.
    pub models: Vec<String>,
    pub disk_gb: u32,
    pub labels: Labels,
    pub not_labels: Labels,
    pub priority: u8,
    /// 0 = the engine's default.
    pub max_attempts: u32,
    /// 0s = the engine's default.
    pub timeout: Span,
    /// The true peak GPU memory per GPU; `None` means `gpu_mem_gb`.
    pub peak_gpu_mem_gb: Option<u32>,
    /// Probability that an attempt fails with a retryable error.
    pub fail_rate: f64,
    /// Arrivals begin at this simulated time.
    pub start: Span,
    /// Arrivals end at this simulated time; `None` means the scenario's duration.
    pub stop: Option<Span>,
}

/// When jobs of a workload are submitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrivals {
    /// Exponential gaps with this mean rate.
    Poisson { rate_per_s: f64 },
    /// `count` jobs at `at`, spread uniformly over `spread` (0s: all at once).
    Burst { at: Span, count: u32, spread: Span },
    /// One job every `interval`, the first at the workload's start.
    Periodic { interval: Span },
}

/// A distribution of lengths of time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    Exponential { mean: Span },
    Lognormal { median: Span, sigma: f64 },
    Constant { value: Span },
}

#[derive(Clone, Debug, PartialEq)]
pub struct FaultSpec {
    /// Simulated time the fault begins.
    pub at: Span,
    pub kind: FaultKind,
}

/// What a fault does. `pool: None` means every pool; `fraction` is of the machines alive then.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// Machines vanish without a word: a fraction of them, or `count` of them.
    Kill {
        pool: Option<String>,
        fraction: f64,
        count: Option<u32>,
    },
    /// Machines are cut off from Redis for `duration`, then heal.
    Partition {
        pool: Option<String>,
        fraction: f64,
        duration: Span,
    },
    /// Redis goes down for `downtime` and comes back with what its persistence kept.
    RedisRestart { downtime: Span },
    /// Disks fill up with `fill_gb` of foreign data (`None`: all of it) for `duration`.
    DiskFull {
        pool: Option<String>,
        fraction: f64,
        duration: Span,
        fill_gb: Option<u32>,
    },
    /// A foreign process holds `leak_gb` of memory on every GPU for `duration`.
    GpuOom {
        pool: Option<String>,
        fraction: f64,
        duration: Span,
        leak_gb: u32,
    },
    /// Extra one-way latency to Redis for `duration`.
    Latency {
        pool: Option<String>,
        fraction: f64,
        duration: Span,
        latency: Span,
    },
}

impl Scenario {
    /// The end of the run at the latest: `duration + drain`.
    pub fn horizon(&self) -> Span {
        self.duration.plus(self.drain)
    }

    pub fn pool(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    /// GPUs in the fleet at full strength.
    pub fn total_gpus(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| u64::from(p.machines) * u64::from(p.gpus))
            .sum()
    }

    /// Machines in the fleet at full strength.
    pub fn total_machines(&self) -> u64 {
        self.pools.iter().map(|p| u64::from(p.machines)).sum()
    }

    /// Jobs expected to arrive over the whole run.
    pub fn expected_jobs(&self) -> f64 {
        self.workloads
            .iter()
            .map(|w| w.expected_jobs(self.duration))
            .sum()
    }

    /// GPU-seconds per second the workloads offer over their arrival windows (service time
    /// only, without downloads, boots or retries): the mean number of busy GPUs they ask for.
    pub fn offered_gpus(&self) -> f64 {
        self.workloads
            .iter()
            .map(|w| {
                let window = w.window(self.duration).as_secs_f64();
                if window <= 0.0 {
                    return 0.0;
                }
                w.expected_jobs(self.duration) / window * w.service.mean_secs() * f64::from(w.gpus)
            })
            .sum()
    }
}

impl Persistence {
    /// The name used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            Persistence::None => "none",
            Persistence::AofEverysec => "aof-everysec",
            Persistence::AofAlways => "aof-always",
        }
    }
}

impl Default for RedisSpec {
    fn default() -> Self {
        RedisSpec {
            latency: Span::ZERO,
            persistence: Persistence::AofEverysec,
            max_jobs: None,
            reply_loss: 0.0,
        }
    }
}

impl PoolSpec {
    /// A pool with every optional field at its default.
    pub fn new(name: &str, machines: u32) -> PoolSpec {
        PoolSpec {
            name: name.to_string(),
            machines,
            gpus: 1,
            gpu_model: "generic".to_string(),
            gpu_mem_gb: 24,
            disk_gb: 500,
            cost_per_hour: 0.0,
            boot: Span::ZERO,
            lifetime: Lifetime::None,
            replace: true,
            labels: Labels::new(),
            cached_models: Vec::new(),
            download_gb_per_s: 1.0,
        }
    }
}

impl Lifetime {
    /// Mean lifetime; `None` when machines live forever.
    pub fn mean(&self) -> Option<Span> {
        match *self {
            Lifetime::None => None,
            Lifetime::Exponential { mean } => Some(mean),
            Lifetime::Constant { value } => Some(value),
        }
    }
}

impl WorkloadSpec {
    /// A workload with every optional field at its default.
    pub fn new(name: &str, arrivals: Arrivals, service: Dist) -> WorkloadSpec {
        WorkloadSpec {
            name: name.to_string(),
            arrivals,
            service,
            gpus: 1,
            gpu_mem_gb: 0,
            gpu_models: Vec::new(),
            models: Vec::new(),
            disk_gb: 0,
            labels: Labels::new(),
            not_labels: Labels::new(),
            priority: 50,
            max_attempts: 0,
            timeout: Span::ZERO,
            peak_gpu_mem_gb: None,
            fail_rate: 0.0,
            start: Span::ZERO,
            stop: None,
        }
    }

    /// When arrivals stop, given the scenario's duration.
    pub fn stop_or(&self, duration: Span) -> Span {
        self.stop.unwrap_or(duration)
    }

    /// The length of the arrival window, given the scenario's duration.
    pub fn window(&self, duration: Span) -> Span {
        Span(self.stop_or(duration).0.saturating_sub(self.start.0))
    }

    /// GPU memory per GPU the job really uses at its peak.
    pub fn peak_gpu_mem(&self) -> u32 {
        self.peak_gpu_mem_gb.unwrap_or(self.gpu_mem_gb)
    }

    /// Jobs expected to arrive, given the scenario's duration.
    pub fn expected_jobs(&self, duration: Span) -> f64 {
        self.arrivals.expected_jobs(self.window(duration))
    }
}

impl Arrivals {
    /// Jobs expected over an arrival window of length `window`.
    pub fn expected_jobs(&self, window: Span) -> f64 {
        match *self {
            Arrivals::Poisson { rate_per_s } => rate_per_s * window.as_secs_f64(),
            Arrivals::Burst { count, .. } => f64::from(count),
            // One at the start, then one per full interval strictly inside the window.
            Arrivals::Periodic { interval } => {
                match window.0.saturating_sub(1).checked_div(interval.0) {
                    Some(n) if window.0 > 0 => (n + 1) as f64,
                    _ => 0.0,
                }
            }
        }
    }
}

impl Dist {
    /// The mean, in seconds.
    pub fn mean_secs(&self) -> f64 {
        match *self {
            Dist::Exponential { mean } => mean.as_secs_f64(),
            Dist::Lognormal { median, sigma } => median.as_secs_f64() * (sigma * sigma / 2.0).exp(),
            Dist::Constant { value } => value.as_secs_f64(),
        }
    }

    /// The mean as a span (saturating).
    pub fn mean(&self) -> Span {
        Span::from_secs_f64(self.mean_secs())
    }
}

impl FaultKind {
    /// The name used in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Kill { .. } => "kill",
            FaultKind::Partition { .. } => "partition",
            FaultKind::RedisRestart { .. } => "redis_restart",
            FaultKind::DiskFull { .. } => "disk_full",
            FaultKind::GpuOom { .. } => "gpu_oom",
            FaultKind::Latency { .. } => "latency",
        }
    }

    /// How many of `up` candidate machines the fault hits: its `count`, or its `fraction` of
    /// them rounded; none for a Redis restart. The simulator and the chaos harness both pick
    /// this many.
    pub fn machines_hit(&self, up: usize) -> usize {
        match self {
            FaultKind::Kill {
                count: Some(count), ..
            } => *count as usize,
            FaultKind::Kill { fraction, .. }
            | FaultKind::Partition { fraction, .. }
            | FaultKind::DiskFull { fraction, .. }
            | FaultKind::GpuOom { fraction, .. }
            | FaultKind::Latency { fraction, .. } => (fraction * up as f64).round() as usize,
            FaultKind::RedisRestart { .. } => 0,
        }
    }

    /// The pool the fault targets; `None` for every pool (and for Redis restarts).
    pub fn pool(&self) -> Option<&str> {
        match self {
            FaultKind::Kill { pool, .. }
            | FaultKind::Partition { pool, .. }
            | FaultKind::DiskFull { pool, .. }
            | FaultKind::GpuOom { pool, .. }
            | FaultKind::Latency { pool, .. } => pool.as_deref(),
            FaultKind::RedisRestart { .. } => None,
        }
    }

    /// How long the fault lasts; zero for kills, which are permanent.
    pub fn duration(&self) -> Span {
        match self {
            FaultKind::Kill { .. } => Span::ZERO,
            FaultKind::RedisRestart { downtime } => *downtime,
            FaultKind::Partition { duration, .. }
            | FaultKind::DiskFull { duration, .. }
            | FaultKind::GpuOom { duration, .. }
            | FaultKind::Latency { duration, .. } => *duration,
        }
    }
}
