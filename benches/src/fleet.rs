//! `drover-bench fleet`: how the store's cost grows with the fleet. Thousands of machines
//! register, heartbeat, claim, wait idle and run no-op jobs against one Redis, and the report
//! gives what Redis spent on them over a measured window (CPU as cores, requests, memory), with
//! the bench's own CPU and the host's beside it, so a reader sees which was the bottleneck.
//!
//! Every machine is its own `Agent` (the engine's agent state machine, as production runs it),
//! and its requests go to `RedisStore` and their replies back into it, as the production
//! driver does; what differs is only the shell: many machines share one event loop and one
//! Redis connection (`--connections` of them), where production runs one process, one
//! connection and one driver per machine.
//!
//! - **Time.** Each loop wakes each agent at its `next_timeout` on one monotonic clock, so
//!   heartbeats, idle rechecks and request timeouts follow the engine's configuration
//!   (production defaults; `--heartbeat` overrides the one knob).
//! - **Start.** Machines start evenly spread over `--ramp` (default: the idle recheck, the
//!   longest period an idle agent has), so heartbeats and rechecks are spread as in a fleet
//!   that came up over time, not in lockstep. The window opens `--settle` seconds later.
//! - **Idle waits.** Production's idle agent BLPOPs its wake list on a connection of its own,
//!   for up to `idle_recheck`; 10,000 blocked connections from one process would measure the
//!   process, so the wait is modelled with the same list and fewer connections: when an agent
//!   goes idle it pops its wake list once, without blocking (`wait_wake` with a zero timeout:
//!   a wake-up that came before the wait began is taken as the BLPOP would take it), and a
//!   wake-up that comes later is seen where it is made: every request goes through
//!   `apply_traced`, which says which machines it woke, and the woken machine's loop pops its
//!   list then (what the BLPOP would return) and hands the agent `Input::Wake`. A wait that no
//!   wake-up ends ends at the agent's own idle recheck, as a BLPOP timing out would. Redis
//!   therefore runs a pop when a wait begins and another when a wake-up ends it, where
//!   production runs one BLPOP per wait (a pop costs it a few µs, an FCALL ~50 times more);
//!   what it does not carry is 10,000 blocked clients and their connections (the blocking-key
//!   bookkeeping, the BLPOP timeouts its cron checks, a read and a write per request where
//!   shared connections sometimes carry several).
//! - **Jobs.** With `--jobs-per-sec R`, a producer submits one-GPU no-op jobs at that rate (at
//!   most 512 in flight, as the many clients of an API would have; what falls more than 0.1 s
//!   behind is dropped rather than sent in a burst later, so the achieved rate says when Redis
//!   or this process fell behind), and agents complete each job as soon as it starts
//!   (`--job-ms` lets it run first).
//! - **Reaper.** One reaper runs (the production reaper driver), as every API process does.
//! - **Churn.** `--churn-per-sec C` drains C machines a second (they deregister) and starts a
//!   new machine, under a new name, in each one's place.

use crate::usage;
use anyhow::{bail, Context, Result};
use drover_engine::agent::{Action, Agent, Input};
use drover_engine::core::{
    EngineConfig, JobId, JobSpec, MachineId, MachineSpec, ModelSet, Outcome, Requirements, Span,
    Time,
};
use drover_engine::redis::{RedisStore, Traced};
use drover_engine::runtime::{run_reaper, MonoClock, SharedStore, StoreError};
use drover_engine::store::{Reply, Request};
use drover_engine::testing::redis::RedisServer;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

#[derive(clap::Args)]
pub struct Args {
    /// The Redis to use; default: a private redis-server on a free port (see --aof).
    #[arg(long)]
    redis: Option<String>,
    /// Machines in the fleet, each its own agent.
    #[arg(long, default_value_t = 1000)]
    machines: u32,
    /// No-op jobs submitted per second, from the start; 0: an idle fleet.
    #[arg(long, default_value_t = 0.0)]
    jobs_per_sec: f64,
    /// The measured window, in seconds, after the warm-up (--ramp, then --settle).
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Machines start evenly spread over this many seconds; default: the engine's idle_recheck.
    #[arg(long)]
    ramp: Option<f64>,
    /// Seconds from the last machine's start to the window.
    #[arg(long, default_value_t = 5.0)]
    settle: f64,
    /// GPUs per machine (each job takes one).
    #[arg(long, default_value_t = 8)]
    gpus: u32,
    /// How long each job runs, in ms; 0: it completes as soon as it starts.
    #[arg(long, default_value_t = 0)]
    job_ms: u64,
    /// Redis connections (each with one event loop) that the machines share.
    #[arg(long, default_value_t = 8)]
    connections: u32,
    /// Heartbeat period in seconds; default: the engine's (10 s).
    #[arg(long)]
    heartbeat: Option<f64>,
    /// Machines a second that drain and leave, each replaced by a new machine.
    #[arg(long, default_value_t = 0.0)]
    churn_per_sec: f64,
    /// The private redis-server's append-only file: no, everysec or always (production:
    /// always). Not for --redis.
    #[arg(long, default_value = "no")]
    aof: String,
    #[arg(long)]
    json: bool,
}

/// Submissions in flight at once, at most: enough that the producer is not the limit when an
/// fsync on every write makes each round trip tens of ms (64 held 10,000 machines to ~700
/// jobs/s with `--aof always` here).
const MAX_SUBMITS_IN_FLIGHT: usize = 512;

/// Submissions the producer may be behind by (in seconds of its rate) before it drops them.
const BACKLOG_SECONDS: f64 = 0.1;

pub async fn run(args: Args) -> Result<()> {
    if args.machines == 0 || args.connections == 0 || args.gpus == 0 {
        bail!("--machines, --connections and --gpus must be above 0");
    }
    let at_least_0 = |x: f64| x.is_finite() && x >= 0.0;
    let values = [args.jobs_per_sec, args.churn_per_sec, args.settle];
    if !values.into_iter().chain(args.ramp).all(at_least_0) {
        bail!("--jobs-per-sec, --churn-per-sec, --ramp and --settle must be 0 or more");
    }
    if !(at_least_0(args.seconds) && args.seconds > 0.0) {
        bail!("--seconds must be above 0");
    }
    let mut config = EngineConfig::default();
    if let Some(seconds) = args.heartbeat {
        config.heartbeat = Span::from_secs_f64(seconds);
    }
    config.validate().context("the engine configuration")?;
    let _private;
    let url = match (&args.redis, args.aof.as_str()) {
        (Some(url), "no") => url.clone(),
        (Some(_), _) => bail!("--aof is for the private redis-server, not --redis"),
        (None, aof @ ("no" | "everysec" | "always")) => {
            // RedisServer's defaults are AOF on, fsynced always.
            let server = match aof {
                "no" => RedisServer::start_with(&["--appendonly", "no"]),
                mode => RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", mode]),
            };
            let url = server.url.clone();
            _private = server;
            url
        }
        (None, other) => bail!("--aof {other:?}: no, everysec or always"),
    };
    let namespace = format!("fleet-{}", std::process::id());
    let report = measure(&args, &url, &namespace, config).await;
    if args.redis.is_some() {
        forget(&url, &namespace).context("deleting the bench's keys")?;
    }
    let mut report = report?;
    report["aof"] = json!(args.aof);
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn measure(args: &Args, url: &str, namespace: &str, config: EngineConfig) -> Result<Value> {
    let config = Arc::new(config);
    let connect = || RedisStore::connect(url, namespace, EngineConfig::clone(&config));
    let control = connect().await.context("connecting")?;
    let ramp = args.ramp.unwrap_or(config.idle_recheck.as_secs_f64());
    let memory_before = redis_memory(url)?;

    let mut stores = Vec::new();
    for _ in 0..args.connections {
        stores.push(connect().await.context("connecting")?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..args.connections {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        clock: MonoClock::start(),
        config: config.clone(),
        counts: Counts::default(),
        round_trips: Mutex::new(Histogram::new_with_max(60_000_000, 3).expect("valid bounds")),
        routes: Mutex::new(HashMap::new()),
        shards: senders,
    });
    let mut tasks = Vec::new();
    let shards = args.connections as usize;
    for (index, (rx, store)) in receivers.into_iter().zip(stores).enumerate() {
        let numbers: Vec<u32> = (0..args.machines)
            .filter(|n| *n as usize % shards == index)
            .collect();
        let churn_every = (args.churn_per_sec > 0.0)
            .then(|| Span::from_secs_f64(shards as f64 / args.churn_per_sec));
        let shard = Shard::new(
            index,
            store,
            shared.clone(),
            rx,
            args,
            &numbers,
            ramp,
            churn_every,
        );
        tasks.push(tokio::spawn(shard.run(stop_rx.clone())));
    }
    if args.jobs_per_sec > 0.0 {
        let store = connect().await.context("connecting")?;
        let rate = args.jobs_per_sec;
        tasks.push(tokio::spawn(produce(
            store,
            shared.clone(),
            rate,
            stop_rx.clone(),
        )));
    }
    let reaper = {
        let mut stop = stop_rx.clone();
        let totals = Default::default();
        tokio::spawn(run_reaper(
            control.clone(),
            config.clone(),
            totals,
            async move {
                let _ = stop.changed().await;
            },
        ))
    };

    tokio::time::sleep(Duration::from_secs_f64(ramp + args.settle)).await;
    let stats_before = stats(&control).await?;
    shared
        .round_trips
        .lock()
        .expect("no panics while held")
        .reset();
    let before = Sample::take(url, &shared)?;
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    let after = Sample::take(url, &shared)?;
    let round_trips = shared
        .round_trips
        .lock()
        .expect("no panics while held")
        .clone();
    let stats_after = stats(&control).await?;
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await.context("a bench task panicked")?;
    }
    reaper.await.context("the reaper panicked")?;

    let wall = after.at.duration_since(before.at).as_secs_f64();
    let per_sec = |a: f64, b: f64| (b - a) / wall;
    let redis_cores = per_sec(before.redis_cpu, after.redis_cpu);
    let succeeded = stats_after.totals.succeeded - stats_before.totals.succeeded;
    let jobs_per_sec = succeeded as f64 / wall;
    let fcalls = per_sec(before.fcalls as f64, after.fcalls as f64);
    let wake_polls = per_sec(before.wake_polls as f64, after.wake_polls as f64);
    let by_kind: BTreeMap<&str, f64> = after
        .kinds
        .iter()
        .map(|(kind, n)| {
            let was = before.kinds.get(kind).copied().unwrap_or(0);
            (*kind, round(per_sec(was as f64, *n as f64), 1))
        })
        .collect();
    let host_busy = after.host.0.saturating_sub(before.host.0) as f64;
    let host_total = after.host.1.saturating_sub(before.host.1).max(1) as f64;
    let mib = |bytes: f64| round(bytes / (1 << 20) as f64, 1);
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(json!({
        "machines": args.machines,
        "jobs_per_sec_target": args.jobs_per_sec,
        "seconds": round(wall, 2),
        "heartbeat_s": config.heartbeat.as_secs_f64(),
        "idle_recheck_s": config.idle_recheck.as_secs_f64(),
        "connections": args.connections,
        "gpus_per_machine": args.gpus,
        "job_ms": args.job_ms,
        "churn_per_sec": args.churn_per_sec,
        "redis_cpu_cores": round(redis_cores, 4),
        "redis_cpu_us_per_request": (fcalls + wake_polls > 0.0)
            .then(|| round(redis_cores * 1e6 / (fcalls + wake_polls), 1)),
        "redis_cpu_us_per_job": (succeeded > 0).then(|| round(redis_cores * 1e6 / jobs_per_sec, 1)),
        "requests_per_sec": round(fcalls + wake_polls, 1),
        "fcalls_per_sec": round(fcalls, 1),
        "wake_polls_per_sec": round(wake_polls, 1),
        "requests_by_kind_per_sec": by_kind,
        "redis_commands_per_sec": round(per_sec(before.redis_commands, after.redis_commands), 1),
        "jobs_per_sec": round(jobs_per_sec, 1),
        "submitted_per_sec": round(
            (stats_after.totals.submitted - stats_before.totals.submitted) as f64 / wall, 1),
        "queued_at_end": stats_after.jobs.queued,
        "round_trip_p50_ms": ms(round_trips.value_at_quantile(0.5)),
        "round_trip_p99_ms": ms(round_trips.value_at_quantile(0.99)),
        "redis_memory_mib": {
            "before_fleet": mib(memory_before),
            "window_start": mib(before.redis_memory),
            "window_end": mib(after.redis_memory),
        },
        "bench_cpu_cores": round(per_sec(before.own_cpu, after.own_cpu), 3),
        "host_busy_cores": round(host_busy / host_total * usage::host_cpus() as f64, 3),
        "host_cpus": usage::host_cpus(),
        "machines_by_state": stats_after.machines,
        "transport_errors": after.transport_errors,
        "store_faults": after.faults,
        "revoked": stats_after.totals.revoked,
    }))
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

async fn stats(store: &RedisStore) -> Result<drover_engine::store::StoreStats> {
    match store.apply(Request::Stats).await? {
        Ok(Reply::Stats(stats)) => Ok(*stats),
        other => bail!("stats: {other:?}"),
    }
}

fn redis_memory(url: &str) -> Result<f64> {
    usage::info_field(&usage::redis_info(url, "memory")?, "used_memory")
        .context("INFO memory has no used_memory")
}

/// Deletes the namespace's keys from a Redis the bench was given.
fn forget(url: &str, namespace: &str) -> Result<()> {
    use redis::Commands;
    let mut con = redis::Client::open(url)?.get_connection()?;
    // SCAN, not KEYS: a shared server is not held up while its keyspace is walked.
    let keys: Vec<String> = con
        .scan_match::<_, String>(format!("{{{namespace}}}:*"))?
        .collect::<Result<_, _>>()?;
    for chunk in keys.chunks(1000) {
        redis::cmd("UNLINK").arg(chunk).query::<()>(&mut con)?;
    }
    Ok(())
}

/// What is measured at each end of the window.
struct Sample {
    at: Instant,
    redis_cpu: f64,
    redis_commands: f64,
    redis_memory: f64,
    own_cpu: f64,
    host: (u64, u64),
    fcalls: u64,
    wake_polls: u64,
    transport_errors: u64,
    faults: u64,
    kinds: BTreeMap<&'static str, u64>,
}

impl Sample {
    fn take(url: &str, shared: &Shared) -> Result<Sample> {
        let info = usage::redis_info(url, "all")?;
        let counts = &shared.counts;
        Ok(Sample {
            at: Instant::now(),
            redis_cpu: usage::redis_cpu_in(&info)?,
            redis_commands: usage::info_field(&info, "total_commands_processed")
                .context("INFO has no total_commands_processed")?,
            redis_memory: usage::info_field(&info, "used_memory")
                .context("INFO has no used_memory")?,
            own_cpu: usage::own_cpu_seconds(),
            host: usage::host_cpu(),
            fcalls: counts.fcalls.load(Ordering::Relaxed),
            wake_polls: counts.wake_polls.load(Ordering::Relaxed),
            transport_errors: counts.transport_errors.load(Ordering::Relaxed),
            faults: counts.faults.load(Ordering::Relaxed),
            kinds: counts.kinds.lock().expect("no panics while held").clone(),
        })
    }
}

/// What every loop shares.
struct Shared {
    clock: MonoClock,
    config: Arc<EngineConfig>,
    counts: Counts,
    /// Round trips of store requests (FCALLs), in µs.
    round_trips: Mutex<Histogram<u64>>,
    /// Which loop runs each registered machine.
    routes: Mutex<HashMap<MachineId, usize>>,
    shards: Vec<mpsc::UnboundedSender<Event>>,
}

#[derive(Default)]
struct Counts {
    fcalls: AtomicU64,
    wake_polls: AtomicU64,
    transport_errors: AtomicU64,
    faults: AtomicU64,
    /// Requests by kind, those inside batches each counted (a batch is not a kind here).
    kinds: Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    fn count(&self, request: &Request) {
        self.counts.fcalls.fetch_add(1, Ordering::Relaxed);
        let mut kinds = self.counts.kinds.lock().expect("no panics while held");
        match request {
            Request::Batch(requests) => {
                for r in requests {
                    *kinds.entry(r.kind()).or_default() += 1;
                }
            }
            r => *kinds.entry(r.kind()).or_default() += 1,
        }
    }

    /// Sends `request` to the store and returns its reply, timed and counted.
    async fn apply(&self, store: &RedisStore, request: Request) -> Result<Traced, StoreError> {
        self.count(&request);
        // Past twice the agent's own timeout nobody waits for the reply (as the driver does).
        let limit = Duration::from_micros(self.config.request_timeout.as_micros() * 2);
        let started = Instant::now();
        let result = match tokio::time::timeout(limit, store.apply_traced(request)).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout),
        };
        let micros = started.elapsed().as_micros() as u64;
        self.round_trips
            .lock()
            .expect("no panics while held")
            .saturating_record(micros);
        if let Err(e) = &result {
            if e.is_transport() {
                self.counts.transport_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Tells the loops of `woken` machines that the store woke them.
    fn route(&self, woken: &[MachineId]) {
        if woken.is_empty() {
            return;
        }
        let routes = self.routes.lock().expect("no panics while held");
        for machine in woken {
            if let Some(&shard) = routes.get(machine) {
                let _ = self.shards[shard].send(Event::Woken(*machine));
            }
        }
    }
}

enum Event {
    /// The store answered agent `slot`'s request `id`.
    Reply {
        slot: usize,
        id: u64,
        result: Result<Traced, StoreError>,
    },
    /// A request woke this machine.
    Woken(MachineId),
    /// Agent `slot`'s pop of its wake list found a wake-up, or not.
    WakePolled { slot: usize, woken: bool },
}

/// One machine's place in a loop.
struct Slot {
    agent: Option<Agent>,
    /// The machine's number: its name is `fleet-<number>` (`fleet-<number>.<generation>` for
    /// the machines that replace it).
    number: u32,
    generation: u32,
    machine: Option<MachineId>,
    /// When the agent wants `on_timeout` (or, before it exists, to start).
    timer: Option<Time>,
    /// It is idle and has popped its wake list: a wake-up now comes as `Event::Woken`.
    waiting: bool,
    draining: bool,
}

/// One event loop: a share of the machines, on one Redis connection.
struct Shard {
    index: usize,
    store: RedisStore,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    by_machine: HashMap<MachineId, usize>,
    /// (when, slot): agents' timers; an entry whose slot's timer changed since is skipped.
    timers: BinaryHeap<Reverse<(Time, usize)>>,
    /// (when, slot, job): jobs running for `--job-ms`.
    jobs: BinaryHeap<Reverse<(Time, usize, JobId)>>,
    job_time: Span,
    gpus: u32,
    churn_every: Option<Span>,
    next_churn: Time,
    churn_cursor: usize,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: usize,
        store: RedisStore,
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Event>,
        args: &Args,
        numbers: &[u32],
        ramp: f64,
        churn_every: Option<Span>,
    ) -> Shard {
        let mut timers = BinaryHeap::new();
        let slots = numbers
            .iter()
            .enumerate()
            .map(|(i, &number)| {
                let start = Time(0).plus(Span::from_secs_f64(
                    ramp * number as f64 / args.machines as f64,
                ));
                timers.push(Reverse((start, i)));
                Slot {
                    agent: None,
                    number,
                    generation: 0,
                    machine: None,
                    timer: Some(start),
                    waiting: false,
                    draining: false,
                }
            })
            .collect();
        let tx = shared.shards[index].clone();
        // Churn begins once every machine has started.
        let ramp_end = Time(0).plus(Span::from_secs_f64(ramp));
        Shard {
            index,
            store,
            shared,
            slots,
            by_machine: HashMap::new(),
            timers,
            jobs: BinaryHeap::new(),
            job_time: Span::from_millis(args.job_ms),
            gpus: args.gpus,
            next_churn: churn_every.map_or(Time::MAX, |every| ramp_end.plus(every)),
            churn_every,
            churn_cursor: 0,
            tx,
            rx,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            let next = self.next_due();
            sleep.as_mut().reset(self.shared.clock.instant(next).into());
            tokio::select! {
                _ = stop.changed() => return,
                Some(event) = self.rx.recv() => {
                    self.on_event(event);
                    // Whatever else has arrived, before the timers are looked at again.
                    while let Ok(event) = self.rx.try_recv() {
                        self.on_event(event);
                    }
                }
                _ = &mut sleep => self.on_due(),
            }
        }
    }

    fn next_due(&self) -> Time {
        let timer = self.timers.peek().map_or(Time::MAX, |Reverse((t, _))| *t);
        let job = self.jobs.peek().map_or(Time::MAX, |Reverse((t, _, _))| *t);
        timer.min(job).min(self.next_churn)
    }

    fn on_due(&mut self) {
        let now = self.shared.clock.now();
        while let Some(&Reverse((at, slot))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.slots[slot].timer != Some(at) {
                continue; // Superseded.
            }
            self.slots[slot].timer = None;
            match self.slots[slot].agent.as_mut() {
                Some(agent) => agent.on_timeout(now),
                None => self.slots[slot].agent = Some(self.new_agent(slot, now)),
            }
            self.settle(slot, now, false);
        }
        let mut finished: BTreeMap<usize, Vec<Input>> = BTreeMap::new();
        while let Some(&Reverse((at, slot, job))) = self.jobs.peek() {
            if at > now {
                break;
            }
            self.jobs.pop();
            let outcome = Outcome::Succeeded;
            finished.entry(slot).or_default().push(Input::JobFinished {
                job,
                outcome,
                result: None,
            });
        }
        for (slot, inputs) in finished {
            if let Some(agent) = self.slots[slot].agent.as_mut() {
                agent.handle_all(now, inputs);
                self.settle(slot, now, false);
            }
        }
        if now >= self.next_churn {
            self.next_churn = self.next_churn.plus(self.churn_every.expect("churn is on"));
            self.churn(now);
        }
    }

    /// Drains the next registered machine (round robin); it leaves, and a new one replaces it.
    fn churn(&mut self, now: Time) {
        for _ in 0..self.slots.len() {
            let slot = self.churn_cursor;
            self.churn_cursor = (self.churn_cursor + 1) % self.slots.len();
            let s = &mut self.slots[slot];
            if s.machine.is_none() || s.draining {
                continue;
            }
            s.draining = true;
            s.waiting = false;
            if let Some(agent) = s.agent.as_mut() {
                agent.handle(now, Input::Drain);
            }
            self.settle(slot, now, false);
            return;
        }
    }

    fn new_agent(&self, slot: usize, now: Time) -> Agent {
        let s = &self.slots[slot];
        let name = match s.generation {
            0 => format!("fleet-{}", s.number),
            g => format!("fleet-{}.{g}", s.number),
        };
        let spec = MachineSpec {
            name,
            pool: "fleet".into(),
            gpus: self.gpus,
            gpu_model: "none".into(),
            gpu_mem_gb: 0,
            disk_gb: 100,
            labels: Default::default(),
            cost_per_hour: 0.0,
            kinds: Vec::new(),
        };
        let seed = (u64::from(s.number) << 20) ^ u64::from(s.generation);
        Agent::new(self.shared.config.clone(), spec, ModelSet::EMPTY, seed, now)
    }

    fn on_event(&mut self, event: Event) {
        let now = self.shared.clock.now();
        match event {
            Event::Reply { slot, id, result } => {
                let input = match result {
                    Ok((result, woken)) => {
                        self.shared.route(&woken);
                        Input::Reply { id, result }
                    }
                    // Lost on the way: the agent's link times it out and sends it again.
                    Err(e) if e.is_transport() => return,
                    Err(e) => {
                        self.shared.counts.faults.fetch_add(1, Ordering::Relaxed);
                        Input::StoreFault {
                            id,
                            message: e.to_string(),
                        }
                    }
                };
                if let Some(agent) = self.slots[slot].agent.as_mut() {
                    agent.take_in(now, input);
                    self.settle(slot, now, true);
                }
            }
            Event::Woken(machine) => {
                // A machine not (yet) waiting keeps its wake-up in its list: its own pop at the
                // start of its wait finds it, and an idle claim clears a stale one.
                if let Some(&slot) = self.by_machine.get(&machine) {
                    if self.slots[slot].waiting {
                        self.poll_wake(slot, machine);
                    }
                }
            }
            Event::WakePolled { slot, woken } => {
                if let (true, Some(agent)) = (woken, self.slots[slot].agent.as_mut()) {
                    agent.handle(now, Input::Wake);
                    self.settle(slot, now, false);
                }
            }
        }
    }

    /// Carries out what the agent in `slot` asks, then follows its state: machine id, idle
    /// wait, timer. `decide`: the agent has taken in a reply but not yet decided what to send
    /// (as the driver, jobs it starts run first, and their outcomes travel with that decision).
    fn settle(&mut self, slot: usize, now: Time, mut decide: bool) {
        loop {
            let Some(agent) = self.slots[slot].agent.as_mut() else {
                return;
            };
            let actions: Vec<Action> = std::iter::from_fn(|| agent.poll_action()).collect();
            let mut finished = Vec::new();
            let mut left = false;
            for action in actions {
                match action {
                    Action::Send { id, request } => self.send(slot, id, request),
                    Action::Start { job, .. } if self.job_time == Span::ZERO => {
                        let outcome = Outcome::Succeeded;
                        finished.push(Input::JobFinished {
                            job,
                            outcome,
                            result: None,
                        });
                    }
                    Action::Start { job, .. } => {
                        self.jobs
                            .push(Reverse((now.plus(self.job_time), slot, job)));
                    }
                    Action::Left => left = true,
                    Action::Stop { .. } | Action::Evicted { .. } => {}
                    Action::StoreFault { request, message } => {
                        eprintln!("fleet: the store could not apply a {request}: {message}");
                    }
                }
            }
            if left {
                self.replace(slot, now);
                continue;
            }
            if finished.is_empty() && !decide {
                break;
            }
            decide = false;
            if let Some(agent) = self.slots[slot].agent.as_mut() {
                agent.handle_all(now, finished);
            }
        }
        self.follow(slot);
    }

    /// A drained machine has left: a new machine takes its place, under a new name.
    fn replace(&mut self, slot: usize, now: Time) {
        self.forget_machine(slot);
        self.slots[slot].generation += 1;
        let agent = self.new_agent(slot, now);
        let s = &mut self.slots[slot];
        s.draining = false;
        s.waiting = false;
        s.agent = Some(agent);
    }

    fn forget_machine(&mut self, slot: usize) {
        if let Some(machine) = self.slots[slot].machine.take() {
            self.by_machine.remove(&machine);
            let mut routes = self.shared.routes.lock().expect("no panics while held");
            routes.remove(&machine);
        }
    }

    fn follow(&mut self, slot: usize) {
        let Some(agent) = self.slots[slot].agent.as_ref() else {
            return;
        };
        let machine = agent.machine();
        let idle = agent.is_idle();
        let timer = agent.next_timeout();
        if machine != self.slots[slot].machine {
            self.forget_machine(slot);
            if let Some(m) = machine {
                self.slots[slot].machine = Some(m);
                self.by_machine.insert(m, slot);
                let mut routes = self.shared.routes.lock().expect("no panics while held");
                routes.insert(m, self.index);
            }
        }
        let s = &mut self.slots[slot];
        match machine {
            Some(m) if idle && !s.draining => {
                if !s.waiting {
                    s.waiting = true;
                    self.poll_wake(slot, m);
                }
            }
            _ => s.waiting = false,
        }
        let s = &mut self.slots[slot];
        if timer != s.timer {
            s.timer = timer;
            if let Some(t) = timer {
                self.timers.push(Reverse((t, slot)));
            }
        }
    }

    fn send(&self, slot: usize, id: u64, request: Request) {
        let store = self.store.clone();
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = shared.apply(&store, request).await;
            let _ = tx.send(Event::Reply { slot, id, result });
        });
    }

    /// One pop of the machine's wake list (what its BLPOP would take).
    fn poll_wake(&self, slot: usize, machine: MachineId) {
        let store = self.store.clone();
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        shared.counts.wake_polls.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let woken = match store.wait_wake(machine, Duration::ZERO).await {
                Ok(woken) => woken,
                Err(e) => {
                    if e.is_transport() {
                        shared
                            .counts
                            .transport_errors
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    false
                }
            };
            let _ = tx.send(Event::WakePolled { slot, woken });
        });
    }
}

/// Submits one-GPU no-op jobs at `rate` a second until stopped.
async fn produce(
    store: RedisStore,
    shared: Arc<Shared>,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) {
    let requirements = Arc::new(Requirements {
        gpus: 1,
        ..Default::default()
    });
    let in_flight = Arc::new(Semaphore::new(MAX_SUBMITS_IN_FLIGHT));
    let started = Instant::now();
    let mut sent = 0u64;
    let backlog = ((rate * BACKLOG_SECONDS) as u64).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // The submissions still on their way finish before the server may go.
                let _ = in_flight.acquire_many(MAX_SUBMITS_IN_FLIGHT as u32).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        // What fell more than a moment behind is dropped, not sent in a burst later: the
        // achieved rate shows the shortfall, and the window sees no catching up.
        sent = sent.max(due.saturating_sub(backlog));
        while sent < due {
            // Behind: the rest waits for a free place (the achieved rate shows it).
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                break;
            };
            sent += 1;
            let store = store.clone();
            let shared = shared.clone();
            let spec = JobSpec::new("noop", requirements.clone());
            tokio::spawn(async move {
                let request = Request::Submit(Box::new(spec));
                match shared.apply(&store, request).await {
                    Ok((Ok(Reply::Submitted { .. }), woken)) => shared.route(&woken),
                    Ok((other, _)) => eprintln!("fleet: submit answered {other:?}"),
                    Err(e) => eprintln!("fleet: submit failed: {e}"),
                }
                drop(permit);
            });
        }
    }
}
