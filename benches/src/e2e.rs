//! The end-to-end flow: N no-op jobs submitted, then A agents claim and complete them.

use crate::peer;
use crate::timing::Timed;
use crate::usage;
use anyhow::{bail, Context, Result};
use drover_engine::agent::Agent;
use drover_engine::core::{
    EngineConfig, JobSpec, MachineSpec, ModelSet, Outcome, Requirements, Time,
};
use drover_engine::executor::{Attempt, Executor, Executors, JobContext};
use drover_engine::redis::RedisStore;
use drover_engine::runtime::{AgentDriver, DriverOptions, SharedStore};
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The Redis to use; default: a private redis-server on a free port.
    #[arg(long)]
    redis: Option<String>,
    #[arg(long, default_value_t = 20_000)]
    jobs: u64,
    #[arg(long, default_value_t = 4)]
    agents: u32,
    /// Jobs each agent runs at once (its GPUs; each job takes one).
    #[arg(long, default_value_t = 16)]
    slots: u32,
    /// Also run a peer on the same Redis: "bullmq" (one worker at concurrency agents x slots).
    #[arg(long)]
    peer: Option<String>,
    #[arg(long)]
    json: bool,
    /// A shell command run after the jobs are submitted and before the agents start (e.g. to
    /// switch a profiler's instrumentation on: benches/callgrind-e2e.sh).
    #[arg(long)]
    before_run: Option<String>,
    /// How often to poll the store for completion, in ms (a profiled server counts each poll).
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Runs of Drover and the peer, alternating on the same Redis. The report gives every round
    /// and the median of each figure: on a shared machine one run can meet a busy moment.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Run the engine with its journal off (`[engine.journal] max_len = 0`), to measure what
    /// the journal costs.
    #[arg(long)]
    no_journal: bool,
}

/// Completes at once: the bench measures the scheduler, not the work.
struct Noop;

impl Executor for Noop {
    fn run(&self, _ctx: JobContext) -> Attempt {
        Box::pin(async { Outcome::Succeeded })
    }
}

pub async fn run(args: Args) -> Result<()> {
    if args.jobs == 0 || args.agents == 0 || args.slots == 0 || args.rounds == 0 {
        bail!("--jobs, --agents, --slots and --rounds must be above 0");
    }
    if let Some(name) = &args.peer {
        if name != "bullmq" {
            bail!("--peer {name:?}: the only peer is bullmq");
        }
    }
    let _private;
    let url = match &args.redis {
        Some(url) => url.clone(),
        None => {
            let server = RedisServer::start_with(&["--appendonly", "no"]);
            let url = server.url.clone();
            _private = server;
            url
        }
    };
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let drover = drover(&url, &args, round).await?;
        let mut report = json!({
            "jobs_per_sec": drover.jobs_per_sec,
            "submit_per_sec": drover.submit_per_sec,
            "claim_p50_ms": drover.claim_p50_ms,
            "claim_p99_ms": drover.claim_p99_ms,
            "claim_round_trips": drover.claims,
            "redis_cpu_us_per_job": drover.redis_cpu_us_per_job,
        });
        if args.peer.is_some() {
            let peer = peer::bullmq(&url, args.jobs, args.agents * args.slots)?;
            let peer_rate = peer["jobs_per_sec"].as_f64().context("peer jobs_per_sec")?;
            report["ratio_vs_peer"] = json!(drover.jobs_per_sec / peer_rate);
            report["peer"] = peer;
        }
        rounds.push(report);
    }
    let mut report = summary(&rounds);
    report["jobs"] = json!(args.jobs);
    report["agents"] = json!(args.agents);
    report["slots_per_agent"] = json!(args.slots);
    if args.rounds > 1 {
        report["rounds"] = json!(rounds);
    }
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// One round's report as it is, or, for several, the median of each figure (the peer's too).
fn summary(rounds: &[Value]) -> Value {
    if let [only] = rounds {
        return only.clone();
    }
    let median = |pick: &dyn Fn(&Value) -> Option<f64>| {
        let mut values: Vec<f64> = rounds.iter().filter_map(pick).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => Value::Null,
            n if n % 2 == 1 => json!(values[n / 2]),
            n => json!((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    };
    let mut report = json!({});
    for key in [
        "jobs_per_sec",
        "submit_per_sec",
        "claim_p50_ms",
        "claim_p99_ms",
        "claim_round_trips",
        "redis_cpu_us_per_job",
        "ratio_vs_peer",
    ] {
        report[key] = median(&|r: &Value| r[key].as_f64());
    }
    report["claim_round_trips"] = json!(report["claim_round_trips"]
        .as_f64()
        .map(|n| n.round() as u64));
    if let Some(peer) = rounds[0].get("peer") {
        let mut peer = peer.clone();
        for key in ["jobs_per_sec", "submit_per_sec"] {
            peer[key] = median(&|r: &Value| r["peer"][key].as_f64());
        }
        report["peer"] = peer;
    }
    report
}

struct DroverResult {
    jobs_per_sec: f64,
    submit_per_sec: f64,
    claim_p50_ms: f64,
    claim_p99_ms: f64,
    claims: u64,
    redis_cpu_us_per_job: f64,
}

async fn drover(url: &str, args: &Args, round: u32) -> Result<DroverResult> {
    let mut config = EngineConfig::default();
    if args.no_journal {
        config.journal.max_len = 0;
    }
    let namespace = format!("bench-{}-{round}", std::process::id());
    let store = RedisStore::connect(url, &namespace, config.clone())
        .await
        .context("connecting")?;
    let store = Timed::new(store);
    let submit_per_sec = submit_all(&store, args.jobs).await?;
    if let Some(command) = &args.before_run {
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .with_context(|| format!("--before-run {command:?}"))?;
        if !status.success() {
            bail!("--before-run {command:?} failed: {status}");
        }
    }
    let cpu_before = usage::redis_cpu_seconds(url)?;
    let started = Instant::now();
    let config = Arc::new(config);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    for a in 0..args.agents {
        let spec = MachineSpec {
            name: format!("bench-agent-{a}"),
            pool: "bench".into(),
            gpus: args.slots,
            gpu_model: "none".into(),
            gpu_mem_gb: 0,
            disk_gb: 100,
            labels: Default::default(),
            cost_per_hour: 0.0,
            kinds: Vec::new(),
        };
        let agent = Agent::new(config.clone(), spec, ModelSet::EMPTY, a as u64, Time::ZERO);
        let executors = Executors::default().with("noop", Noop);
        let driver = AgentDriver::new(
            store.clone(),
            agent,
            config.clone(),
            executors,
            DriverOptions::default(),
        );
        let mut stop = stop_rx.clone();
        agents.push(tokio::spawn(driver.run(async move {
            let _ = stop.changed().await;
        })));
    }
    wait_all_succeeded(&store, args.jobs, Duration::from_millis(args.poll_ms)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let redis_cpu = usage::redis_cpu_seconds(url)? - cpu_before;
    // Drained, so that a later round's figures are not the idle agents' too.
    let _ = stop_tx.send(true);
    for agent in agents {
        agent.await.context("an agent panicked")?;
    }
    let claims = store.claims();
    Ok(DroverResult {
        jobs_per_sec: args.jobs as f64 / seconds,
        submit_per_sec,
        claim_p50_ms: claims.value_at_quantile(0.5) as f64 / 1000.0,
        claim_p99_ms: claims.value_at_quantile(0.99) as f64 / 1000.0,
        claims: claims.len(),
        redis_cpu_us_per_job: redis_cpu * 1e6 / args.jobs as f64,
    })
}

/// Submits `jobs` one-GPU no-op jobs from 64 concurrent producers; returns submissions/s.
async fn submit_all<S: SharedStore>(store: &S, jobs: u64) -> Result<f64> {
    let requirements = Arc::new(Requirements {
        gpus: 1,
        ..Default::default()
    });
    let started = Instant::now();
    let producers = 64u64;
    let mut tasks = Vec::new();
    for p in 0..producers {
        let store = store.clone();
        let requirements = requirements.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = p;
            while i < jobs {
                let spec = JobSpec::new("noop", requirements.clone());
                match store.apply(Request::Submit(Box::new(spec))).await {
                    Ok(Ok(Reply::Submitted { .. })) => i += producers,
                    other => return Err(anyhow::anyhow!("submit: {other:?}")),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(jobs as f64 / started.elapsed().as_secs_f64())
}

async fn wait_all_succeeded<S: SharedStore>(store: &S, jobs: u64, poll: Duration) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(Ok(Reply::Stats(stats))) = store.apply(Request::Stats).await {
            if stats.totals.succeeded >= jobs {
                return Ok(());
            }
            if stats.totals.dead + stats.totals.timed_out > 0 {
                bail!("jobs failed: {:?}", stats.totals);
            }
        }
        if Instant::now() > deadline {
            bail!("not every job succeeded within 10 minutes");
        }
        tokio::time::sleep(poll).await;
    }
}
