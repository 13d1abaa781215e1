//! Parsing and validating a scenario file.

use super::edit::Override;
use super::read::{join, path_at, tagged, Cx, Obj, Result, Value};
use super::schema::*;
use super::ScenarioError;
use drover_engine::core::config::CatalogModel;
use drover_engine::core::{EngineConfig, Span};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Most bytes a scenario file may hold.
pub const MAX_FILE_BYTES: usize = 16 << 20;
pub const MAX_POOLS: usize = 64;
pub const MAX_WORKLOADS: usize = 64;
pub const MAX_FAULTS: usize = 10_000;
pub const MAX_MODELS: usize = 128;
pub const MAX_MACHINES_PER_POOL: u32 = 100_000;
pub const MAX_GPUS_PER_MACHINE: u32 = 64;
/// Most jobs a scenario may expect to arrive over its whole run.
pub const MAX_EXPECTED_JOBS: f64 = 1e8;
/// Largest lognormal sigma (e^(10²/2) is already absurd).
pub const MAX_SIGMA: f64 = 10.0;

const TOP: &[&str] = &[
    "name", "seed", "duration", "warmup", "drain", "redis", "engine", "model", "pool", "workload",
    "fault",
];
const REDIS: &[&str] = &["latency", "persistence", "max_jobs", "reply_loss"];
const MODEL: &[&str] = &["name", "size_gb"];
const POOL: &[&str] = &[
    "name",
    "machines",
    "gpus",
    "gpu_model",
    "gpu_mem_gb",
    "disk_gb",
    "cost_per_hour",
    "boot",
    "lifetime",
    "replace",
    "labels",
    "cached_models",
    "download_gb_per_s",
];
const WORKLOAD: &[&str] = &[
    "name",
    "arrivals",
    "service",
    "gpus",
    "gpu_mem_gb",
    "gpu_models",
    "models",
    "disk_gb",
    "labels",
    "not_labels",
    "priority",
    "max_attempts",
    "timeout",
    "peak_gpu_mem_gb",
    "fail_rate",
    "start",
    "stop",
];
const PERSISTENCE: &[&str] = &["none", "aof-everysec", "aof-always"];
const LIFETIMES: &[(&str, &[&str])] = &[
    ("none", &[]),
    ("exponential", &["mean"]),
    ("constant", &["value"]),
];
const ARRIVALS: &[(&str, &[&str])] = &[
    ("poisson", &["rate_per_s"]),
    ("burst", &["at", "count", "spread"]),
    ("periodic", &["interval"]),
];
const DISTS: &[(&str, &[&str])] = &[
    ("exponential", &["mean"]),
    ("lognormal", &["median", "sigma"]),
    ("constant", &["value"]),
];
const FAULTS: &[(&str, &[&str])] = &[
    ("kill", &["pool", "fraction", "count"]),
    ("partition", &["pool", "fraction", "duration"]),
    ("redis_restart", &["downtime"]),
    ("disk_full", &["pool", "fraction", "duration", "fill_gb"]),
    ("gpu_oom", &["pool", "fraction", "duration", "leak_gb"]),
    ("latency", &["pool", "fraction", "duration", "latency"]),
];

impl Scenario {
    /// Reads and parses a scenario file; an unreadable file is an error naming it.
    pub fn load(path: &std::path::Path) -> std::result::Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 1,
            column: 1,
            field: "file".to_string(),
            message: format!("cannot read the scenario: {e}"),
        })?;
        Scenario::parse(&text, &file)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> std::result::Result<Scenario, ScenarioError> {
        Scenario::parse_with(text, file, &[])
    }

    /// Parses scenario text, sets the `overrides` in the parsed tree, then validates it as
    /// `parse` does: a value the loader refuses is refused with its usual error.
    pub fn parse_with(
        text: &str,
        file: &str,
        overrides: &[Override],
    ) -> std::result::Result<Scenario, ScenarioError> {
        let cx = Cx { file, text };
        if text.len() > MAX_FILE_BYTES {
            return Err(cx.at(
                0,
                "file",
                format!("a scenario file holds at most {MAX_FILE_BYTES} bytes"),
            ));
        }
        let root = DeTable::parse(text).map_err(|e| cx.toml(&e))?;
        let mut table = root.into_inner();
        super::edit::apply(&mut table, overrides, file)?;
        let root = Spanned::new(0..0, DeValue::Table(table));
        read_scenario(&cx, &root)
    }
}

fn read_scenario<'a>(cx: &'a Cx<'a>, root: &'a Value<'_>) -> Result<Scenario> {
    let top = Obj::new(cx, String::new(), root, TOP)?;
    let name = top.name("name", "the scenario's name")?;
    let seed: u64 = top.req("seed", "the random seed, a whole number")?;
    let duration = top.positive_span("duration", "how long jobs arrive, e.g. \"2h\"")?;
    let warmup = top.or("warmup", Span::ZERO)?;
    if warmup >= duration {
        return Err(top.err(
            "warmup",
            format!("must be shorter than duration ({duration}), found {warmup}"),
        ));
    }
    let drain = top.or("drain", Span::from_secs(86_400))?;
    let redis = match top.value("redis") {
        Some(v) => read_redis(cx, v)?,
        None => RedisSpec::default(),
    };

    let mut models = Vec::new();
    let mut model_lines = Names::default();
    for (i, v) in top
        .array("model", MAX_MODELS, "models")?
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let obj = Obj::new(cx, format!("model[{i}]"), v, MODEL)?;
        let name = obj.name("name", "the model's name")?;
        model_lines.add(&obj, "model", &name)?;
        let size_gb = obj.req("size_gb", "its download size in GB")?;
        models.push(ModelSpec { name, size_gb });
    }

    let Some(pool_values) = top.array("pool", MAX_POOLS, "pools")? else {
        return Err(top.missing("pool", "at least one [[pool]] of machines"));
    };
    if pool_values.is_empty() {
        return Err(top.err("pool", "at least one [[pool]] is required"));
    }
    let mut pools = Vec::new();
    let mut pool_lines = Names::default();
    for (i, v) in pool_values.iter().enumerate() {
        let pool = read_pool(cx, format!("pool[{i}]"), v, &model_lines, &mut pool_lines)?;
        pools.push(pool);
    }

    let engine = read_engine(cx, &top, &models)?;

    let Some(workload_values) = top.array("workload", MAX_WORKLOADS, "workloads")? else {
        return Err(top.missing("workload", "at least one [[workload]] of jobs"));
    };
    if workload_values.is_empty() {
        return Err(top.err("workload", "at least one [[workload]] is required"));
    }
    let mut workloads = Vec::new();
    let mut workload_lines = Names::default();
    let mut expected = 0.0;
    for (i, v) in workload_values.iter().enumerate() {
        let w = read_workload(
            cx,
            format!("workload[{i}]"),
            v,
            duration,
            &model_lines,
            &mut workload_lines,
        )?;
        expected += w.expected_jobs(duration);
        if expected > MAX_EXPECTED_JOBS {
            let obj = Obj::new(cx, format!("workload[{i}]"), v, WORKLOAD)?;
            return Err(obj.err(
                "arrivals",
                format!(
                    "the scenario would submit about {expected:.0} jobs; at most {MAX_EXPECTED_JOBS:.0} are allowed"
                ),
            ));
        }
        workloads.push(w);
    }

    let horizon = duration.plus(drain);
    let mut faults = Vec::new();
    for (i, v) in top
        .array("fault", MAX_FAULTS, "faults")?
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        faults.push(read_fault(
            cx,
            format!("fault[{i}]"),
            v,
            horizon,
            &pool_lines,
        )?);
    }

    Ok(Scenario {
        name,
        seed,
        duration,
        warmup,
        drain,
        redis,
        engine,
        models,
        pools,
        workloads,
        faults,
    })
}

/// Names declared so far, with the line of each, to refuse duplicates and unknown references.
#[derive(Default)]
struct Names {
    lines: BTreeMap<String, usize>,
}

impl Names {
    fn add(&mut self, obj: &Obj<'_, '_>, what: &str, name: &str) -> Result<()> {
        let line = obj.cx.at(obj.key_at("name"), "", "").line;
        if let Some(first) = self.lines.get(name) {
            return Err(obj.err(
                "name",
                format!("duplicate {what} name {name:?} (first declared on line {first})"),
            ));
        }
        self.lines.insert(name.to_string(), line);
        Ok(())
    }

    fn contains(&self, name: &str) -> bool {
        self.lines.contains_key(name)
    }

    fn list(&self) -> String {
        if self.lines.is_empty() {
            "none are declared".to_string()
        } else {
            let names: Vec<&str> = self.lines.keys().map(String::as_str).collect();
            format!("declared: {}", names.join(", "))
        }
    }
}

/// Checks that every name in the string array at `key` is in `known`.
fn check_refs(
    obj: &Obj<'_, '_>,
    key: &str,
    names: &[String],
    known: &Names,
    what: &str,
) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if !known.contains(name) {
            let offset = obj
                .value(key)
                .and_then(|v| v.get_ref().as_array())
                .and_then(|items| items.get(i))
                .map_or(obj.key_at(key), |item| item.span().start);
            return Err(obj.cx.at(
                offset,
                &format!("{}[{i}]", obj.field(key)),
                format!("unknown {what} {name:?} ({})", known.list()),
            ));
        }
    }
    Ok(())
}

fn read_redis<'a>(cx: &'a Cx<'a>, v: &'a Value<'_>) -> Result<RedisSpec> {
    let obj = Obj::new(cx, "redis".to_string(), v, REDIS)?;
    let persistence = match obj.opt::<String>("persistence")? {
        None => Persistence::AofEverysec,
        Some(s) => match s.as_str() {
            "none" => Persistence::None,
            "aof-everysec" => Persistence::AofEverysec,
            "aof-always" => Persistence::AofAlways,
            _ => {
                return Err(obj.err(
                    "persistence",
                    format!(
                        "unknown persistence {s:?}; expected one of: {}",
                        PERSISTENCE.join(", ")
                    ),
                ))
            }
        },
    };
    Ok(RedisSpec {
        latency: obj.or("latency", Span::ZERO)?,
        persistence,
        max_jobs: obj.opt("max_jobs")?,
        reply_loss: obj.fraction("reply_loss", 0.0)?,
    })
}

fn read_pool<'a>(
    cx: &'a Cx<'a>,
    path: String,
    v: &'a Value<'_>,
    models: &Names,
    pools: &mut Names,
) -> Result<PoolSpec> {
    let obj = Obj::new(cx, path, v, POOL)?;
    let name = obj.name("name", "the pool's name")?;
    pools.add(&obj, "pool", &name)?;
    if !obj.has("machines") {
        return Err(obj.missing("machines", "how many machines the pool runs"));
    }
    let machines = obj
        .int_in("machines", 0, MAX_MACHINES_PER_POOL.into())?
        .unwrap_or(0) as u32;
    let gpus = obj
        .int_in("gpus", 0, MAX_GPUS_PER_MACHINE.into())?
        .unwrap_or(1) as u32;
    let cost_per_hour: f64 = obj.or("cost_per_hour", 0.0)?;
    if cost_per_hour < 0.0 {
        return Err(obj.err(
            "cost_per_hour",
            format!("must be 0 or more, found {cost_per_hour}"),
        ));
    }
    let lifetime = match obj.value("lifetime") {
        None => Lifetime::None,
        Some(v) => read_lifetime(cx, obj.field("lifetime"), v)?,
    };
    let cached_models: Vec<String> = obj.or("cached_models", Vec::new())?;
    check_refs(&obj, "cached_models", &cached_models, models, "model")?;
    Ok(PoolSpec {
        name,
        machines,
        gpus,
        gpu_model: obj.or("gpu_model", "generic".to_string())?,
        gpu_mem_gb: obj.or("gpu_mem_gb", 24)?,
        disk_gb: obj.or("disk_gb", 500)?,
        cost_per_hour,
        boot: obj.or("boot", Span::ZERO)?,
        lifetime,
        replace: obj.or("replace", true)?,
        labels: obj.or("labels", Default::default())?,
        cached_models,
        download_gb_per_s: obj.positive("download_gb_per_s", 1.0)?,
    })
}

fn read_lifetime<'a>(cx: &'a Cx<'a>, path: String, v: &'a Value<'_>) -> Result<Lifetime> {
    if let DeValue::String(s) = v.get_ref() {
        if s == "none" {
            return Ok(Lifetime::None);
        }
        return Err(cx.at(
            v.span().start,
            &path,
            format!(
                "expected \"none\" or a table such as {{ dist = \"exponential\", mean = \"2h\" }}, found {s:?}"
            ),
        ));
    }
    let (variant, obj) = tagged(cx, path, v, "dist", &[], LIFETIMES)?;
    Ok(match variant {
        0 => Lifetime::None,
        1 => Lifetime::Exponential {
            mean: obj.positive_span("mean", "the mean lifetime")?,
        },
        _ => Lifetime::Constant {
            value: obj.positive_span("value", "the lifetime")?,
        },
    })
}

fn read_engine(cx: &Cx<'_>, top: &Obj<'_, '_>, models: &[ModelSpec]) -> Result<EngineConfig> {
    let engine_value = top.value("engine");
    let mut config = match engine_value {
        None => EngineConfig::default(),
        Some(v) => {
            let Some(table) = v.get_ref().as_table() else {
                return Err(cx.at(
                    v.span().start,
                    "engine",
                    format!(
                        "expected a table, found {}",
                        super::read::describe(v.get_ref())
                    ),
                ));
            };
            if let Some((key, _)) = table.get_key_value("models") {
                return Err(cx.at(
                    key.span().start,
                    "engine.models",
                    "declare the model catalog with [[model]] tables, not in [engine]",
                ));
            }
            let de = toml::de::ValueDeserializer::from(v.clone());
            EngineConfig::deserialize(de).map_err(|e| {
                let offset = e.span().map_or(v.span().start, |s| s.start);
                let field = path_at(table, offset, "engine").unwrap_or_else(|| "engine".into());
                cx.at(offset, &field, e.message().trim().to_string())
            })?
        }
    };
    config.models = models
        .iter()
        .map(|m| CatalogModel {
            name: m.name.clone(),
            size_gb: m.size_gb,
        })
        .collect();
    config.validate().map_err(|e| {
        let offset = engine_value
            .and_then(|v| v.get_ref().as_table())
            .and_then(|t| t.get_key_value(e.field))
            .map(|(k, _)| k.span().start)
            .or_else(|| engine_value.map(|v| v.span().start))
            .unwrap_or(0);
        cx.at(offset, &join("engine", e.field), e.reason)
    })?;
    Ok(config)
}

fn read_workload<'a>(
    cx: &'a Cx<'a>,
    path: String,
    v: &'a Value<'_>,
    duration: Span,
    models: &Names,
    workloads: &mut Names,
) -> Result<WorkloadSpec> {
    let obj = Obj::new(cx, path, v, WORKLOAD)?;
    let name = obj.name("name", "the workload's name")?;
    workloads.add(&obj, "workload", &name)?;
    let start = obj.or("start", Span::ZERO)?;
    let stop: Option<Span> = obj.opt("stop")?;
    if let Some(stop) = stop {
        if stop > duration {
            return Err(obj.err(
                "stop",
                format!("must be at most the scenario's duration ({duration}), found {stop}"),
            ));
        }
    }
    let end = stop.unwrap_or(duration);
    if start >= end {
        let key = if obj.has("start") { "start" } else { "stop" };
        return Err(obj.err(
            key,
            format!("arrivals would never begin: start ({start}) must be before stop ({end})"),
        ));
    }
    let Some(arrivals_value) = obj.value("arrivals") else {
        return Err(obj.missing("arrivals", "e.g. { dist = \"poisson\", rate_per_s = 2.0 }"));
    };
    let arrivals = read_arrivals(cx, obj.field("arrivals"), arrivals_value, start, end)?;
    let Some(service_value) = obj.value("service") else {
        return Err(obj.missing("service", "e.g. { dist = \"exponential\", mean = \"30s\" }"));
    };
    let service = read_dist(cx, obj.field("service"), service_value)?;
    let job_models: Vec<String> = obj.or("models", Vec::new())?;
    check_refs(&obj, "models", &job_models, models, "model")?;
    Ok(WorkloadSpec {
        name,
        arrivals,
        service,
        gpus: obj.or("gpus", 1)?,
        gpu_mem_gb: obj.or("gpu_mem_gb", 0)?,
        gpu_models: obj.or("gpu_models", Vec::new())?,
        models: job_models,
        disk_gb: obj.or("disk_gb", 0)?,
        labels: obj.or("labels", Default::default())?,
        not_labels: obj.or("not_labels", Default::default())?,
        priority: obj.int_in("priority", 0, 100)?.unwrap_or(50) as u8,
        max_attempts: obj.or("max_attempts", 0)?,
        timeout: obj.or("timeout", Span::ZERO)?,
        peak_gpu_mem_gb: obj.opt("peak_gpu_mem_gb")?,
        fail_rate: obj.fraction("fail_rate", 0.0)?,
        start,
        stop,
    })
}

fn read_arrivals<'a>(
    cx: &'a Cx<'a>,
    path: String,
    v: &'a Value<'_>,
    start: Span,
    stop: Span,
) -> Result<Arrivals> {
    let (variant, obj) = tagged(cx, path, v, "dist", &[], ARRIVALS)?;
    Ok(match variant {
        0 => {
            if !obj.has("rate_per_s") {
                return Err(obj.missing("rate_per_s", "mean jobs per second"));
            }
            Arrivals::Poisson {
                rate_per_s: obj.positive("rate_per_s", 0.0)?,
            }
        }
        1 => {
            let at: Span = obj.req("at", "when the burst arrives, e.g. \"1h\"")?;
            let spread: Span = obj.or("spread", Span::ZERO)?;
            if !obj.has("count") {
                return Err(obj.missing("count", "how many jobs the burst holds"));
            }
            let count = obj.int_in("count", 1, u32::MAX.into())?.unwrap_or(1) as u32;
            if at < start || at >= stop {
                return Err(obj.err(
                    "at",
                    format!("must lie within the workload's arrival window ({start} to {stop}), found {at}"),
                ));
            }
            if at.plus(spread) > stop {
                return Err(obj.err(
                    "spread",
                    format!(
                        "the burst would run past the end of arrivals ({stop}): at + spread = {}",
                        at.plus(spread)
                    ),
                ));
            }
            Arrivals::Burst { at, count, spread }
        }
        _ => Arrivals::Periodic {
            interval: obj.positive_span("interval", "the gap between jobs, e.g. \"2s\"")?,
        },
    })
}

fn read_dist<'a>(cx: &'a Cx<'a>, path: String, v: &'a Value<'_>) -> Result<Dist> {
    let (variant, obj) = tagged(cx, path, v, "dist", &[], DISTS)?;
    Ok(match variant {
        0 => Dist::Exponential {
            mean: obj.positive_span("mean", "the mean, e.g. \"30s\"")?,
        },
        1 => {
            let median = obj.positive_span("median", "the median, e.g. \"30s\"")?;
            if !obj.has("sigma") {
                return Err(obj.missing("sigma", "the spread of the log, e.g. 1.0"));
            }
            let sigma: f64 = obj.or("sigma", 0.0)?;
            if !(0.0..=MAX_SIGMA).contains(&sigma) {
                return Err(obj.err(
                    "sigma",
                    format!("must be from 0 to {MAX_SIGMA}, found {sigma}"),
                ));
            }
            Dist::Lognormal { median, sigma }
        }
        _ => Dist::Constant {
            value: obj.req("value", "the length, e.g. \"10s\"")?,
        },
    })
}

fn read_fault<'a>(
    cx: &'a Cx<'a>,
    path: String,
    v: &'a Value<'_>,
    horizon: Span,
    pools: &Names,
) -> Result<FaultSpec> {
    let (variant, obj) = tagged(cx, path, v, "kind", &["at"], FAULTS)?;
    let at: Span = obj.req("at", "when the fault begins, e.g. \"1h\"")?;
    if at > horizon {
        return Err(obj.err(
            "at",
            format!("must be at most duration + drain ({horizon}), found {at}"),
        ));
    }
    let pool: Option<String> = obj.opt("pool")?;
    if let Some(name) = &pool {
        if !pools.contains(name) {
            return Err(obj.err("pool", format!("unknown pool {name:?} ({})", pools.list())));
        }
    }
    let duration =
        |obj: &Obj<'_, '_>| obj.positive_span("duration", "how long the fault lasts, e.g. \"5m\"");
    let kind = match variant {
        0 => {
            let count: Option<u32> = obj.opt("count")?;
            if count.is_some() && obj.has("fraction") {
                return Err(obj.err("count", "give fraction or count, not both"));
            }
            if count == Some(0) {
                return Err(obj.err("count", "must be at least 1"));
            }
            FaultKind::Kill {
                pool,
                fraction: obj.fraction("fraction", 1.0)?,
                count,
            }
        }
        1 => FaultKind::Partition {
            fraction: obj.fraction("fraction", 1.0)?,
            duration: duration(&obj)?,
            pool,
        },
        2 => FaultKind::RedisRestart {
            downtime: obj.or("downtime", Span::from_secs(5))?,
        },
        3 => FaultKind::DiskFull {
            fraction: obj.fraction("fraction", 1.0)?,
            duration: duration(&obj)?,
            fill_gb: obj.opt("fill_gb")?,
            pool,
        },
        4 => {
            let fraction = obj.fraction("fraction", 1.0)?;
            let duration = duration(&obj)?;
            let leak_gb = obj.req("leak_gb", "GPU memory per GPU held by a foreign process")?;
            FaultKind::GpuOom {
                pool,
                fraction,
                duration,
                leak_gb,
            }
        }
        _ => {
            let fraction = obj.fraction("fraction", 1.0)?;
            let duration = duration(&obj)?;
            let latency = obj.positive_span("latency", "extra one-way latency, e.g. \"200ms\"")?;
            FaultKind::Latency {
                pool,
                fraction,
                duration,
                latency,
            }
        }
    };
    Ok(FaultSpec { at, kind })
}

/// Whether `key` is a field of the table at `place`, as `edit.rs` names places: "the top
/// level", "redis", "engine", "model", "pool", "workload", "fault", "pool.lifetime",
/// "workload.arrivals", "workload.service".
pub(super) fn is_known_field(place: &str, key: &str) -> bool {
    let tagged = |variants: &[(&str, &[&str])], tag: &str| {
        key == tag || variants.iter().any(|(_, fields)| fields.contains(&key))
    };
    match place {
        "the top level" => TOP.contains(&key),
        "redis" => REDIS.contains(&key),
        "model" => MODEL.contains(&key),
        "pool" => POOL.contains(&key),
        "workload" => WORKLOAD.contains(&key),
        "fault" => key == "at" || tagged(FAULTS, "kind"),
        "pool.lifetime" => tagged(LIFETIMES, "dist"),
        "workload.arrivals" => tagged(ARRIVALS, "dist"),
        "workload.service" => tagged(DISTS, "dist"),
        _ => false,
    }
}
