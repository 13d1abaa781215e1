//! Playing faults against the real processes: kills (SIGKILL an agent; a replacement boots
//! when its pool replaces), partitions and latency (the machine's proxy), Redis restarts
//! (SIGKILL the server, start it again from its files). Machine lifetimes (spot churn) are
//! kills too. Targets are drawn from the seed, as the simulator draws them.

use crate::fleet::{AgentSetup, Machine};
use crate::journal::Journal;
use crate::procs::Children;
use crate::producer::Producer;
use crate::proxy::Cut;
use crate::redis_server::RedisServer;
use drover_engine::core::{JobId, StateName};
use drover_engine::runtime::store::wall_clock;
use drover_sim::rng::{stream, Rng};
use drover_sim::scenario::{FaultKind, FaultSpec, Lifetime, Persistence, Scenario, Span};
use drover_sim::world::FaultRecord;
use rand::seq::SliceRandom;
use rand::Rng as _;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::judge::Kill;

/// Everything faults act on, shared by the tasks that play them.
pub struct Stage {
    pub scenario: Scenario,
    pub scale: f64,
    start: Mutex<Instant>,
    pub children: Children,
    pub setup: AgentSetup,
    pub redis: tokio::sync::Mutex<RedisServer>,
    pub machines: Mutex<Vec<Machine>>,
    /// Next machine number per pool (names are never reused).
    pub serials: Mutex<Vec<u32>>,
    pub targets: Mutex<Rng>,
    pub lifetimes: Mutex<Vec<Rng>>,
    pub kills: Mutex<Vec<Kill>>,
    pub fault_log: Mutex<Vec<FaultRecord>>,
    /// When the last fault healed (wall clock µs), for the liveness check.
    pub healed_at: AtomicU64,
    pub redis_restarts: AtomicU64,
    pub resubmitted: AtomicU64,
    pub rolled_back: AtomicU64,
    pub agents_started: AtomicU64,
    /// Set when the run ends: nothing new is started.
    pub ending: std::sync::atomic::AtomicBool,
    pub journal: Journal,
    pub producer: Mutex<Option<Producer>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stage {
    pub fn new(
        scenario: Scenario,
        seed: u64,
        scale: f64,
        children: Children,
        setup: AgentSetup,
        redis: RedisServer,
        journal: Journal,
    ) -> Stage {
        let lifetimes = scenario
            .pools
            .iter()
            .map(|p| stream(seed, &format!("lifetime/{}", p.name)))
            .collect();
        let pools = scenario.pools.len();
        Stage {
            scenario,
            scale,
            start: Mutex::new(Instant::now()),
            children,
            setup,
            redis: tokio::sync::Mutex::new(redis),
            machines: Mutex::new(Vec::new()),
            serials: Mutex::new(vec![0; pools]),
            targets: Mutex::new(stream(seed, "faults")),
            lifetimes: Mutex::new(lifetimes),
            kills: Mutex::new(Vec::new()),
            fault_log: Mutex::new(Vec::new()),
            healed_at: AtomicU64::new(0),
            redis_restarts: AtomicU64::new(0),
            resubmitted: AtomicU64::new(0),
            rolled_back: AtomicU64::new(0),
            agents_started: AtomicU64::new(0),
            ending: Default::default(),
            journal,
            producer: Mutex::new(None),
        }
    }

    /// Real time for a scenario span.
    pub fn real(&self, span: Span) -> Duration {
        Duration::from_secs_f64(span.as_secs_f64() / self.scale)
    }

    /// Scenario seconds since the start.
    pub fn scenario_now(&self) -> f64 {
        lock(&self.start).elapsed().as_secs_f64() * self.scale
    }

    /// Scenario time 0 is now (once the fleet is up).
    pub fn restart_clock(&self) {
        *lock(&self.start) = Instant::now();
    }

    pub fn machines(&self) -> std::sync::MutexGuard<'_, Vec<Machine>> {
        lock(&self.machines)
    }

    pub fn alive(&self) -> usize {
        self.machines().iter().filter(|m| m.alive).count()
    }

    /// Starts a new machine of pool `pool`, with its lifetime if the pool has one.
    pub async fn boot(self: &Arc<Self>, pool: usize) -> anyhow::Result<()> {
        if self.ending.load(Ordering::Relaxed) {
            return Ok(());
        }
        let serial = {
            let mut serials = lock(&self.serials);
            serials[pool] += 1;
            serials[pool] - 1
        };
        let spec = &self.scenario.pools[pool];
        let machine = self.setup.start(&self.children, pool, spec, serial).await?;
        let name = machine.name.clone();
        self.machines().push(machine);
        self.agents_started.fetch_add(1, Ordering::Relaxed);
        let life = {
            let mut rngs = lock(&self.lifetimes);
            lifetime(&spec.lifetime, &mut rngs[pool])
        };
        if let Some(life) = life {
            let stage = self.clone();
            let wait = self.real(life);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                stage.kill(&name);
            });
        }
        Ok(())
    }

    /// SIGKILLs machine `name` if alive, and boots its replacement after the pool's boot time
    /// when the pool replaces.
    pub fn kill(self: &Arc<Self>, name: &str) {
        let pool = {
            let mut machines = self.machines();
            let Some(m) = machines.iter_mut().find(|m| m.name == name && m.alive) else {
                return;
            };
            self.children.kill(m.pid);
            m.proxy.shut();
            m.alive = false;
            m.pool
        };
        lock(&self.kills).push(Kill {
            at: wall_clock(),
            machine: name.to_string(),
        });
        let spec = &self.scenario.pools[pool];
        if spec.replace && !self.ending.load(Ordering::Relaxed) {
            let stage = self.clone();
            let boot = self.real(spec.boot);
            tokio::spawn(async move {
                tokio::time::sleep(boot).await;
                if let Err(e) = stage.boot(pool).await {
                    eprintln!("drover-chaos: replacing a machine: {e:#}");
                }
            });
        }
    }

    /// Machines a fault hits: alive ones of its pool, a share or a count of them, at random.
    fn pick(&self, kind: &FaultKind) -> (Vec<String>, u32) {
        let pool = kind
            .pool()
            .and_then(|name| self.scenario.pools.iter().position(|p| p.name == name));
        let mut candidates: Vec<String> = self
            .machines()
            .iter()
            .filter(|m| m.alive && (kind.pool().is_none() || Some(m.pool) == pool))
            .map(|m| m.name.clone())
            .collect();
        let up = candidates.len() as u32;
        candidates.shuffle(&mut *lock(&self.targets));
        let n = kind.machines_hit(candidates.len());
        candidates.truncate(n.min(candidates.len()));
        (candidates, up)
    }

    fn proxies(&self, names: &[String]) -> Vec<crate::proxy::Proxy> {
        self.machines()
            .iter()
            .filter(|m| m.alive && names.contains(&m.name))
            .map(|m| m.proxy.clone())
            .collect()
    }

    fn heal_later(&self, duration: Span) {
        let at = wall_clock().plus(Span::from_micros(self.real(duration).as_micros() as u64));
        self.healed_at.fetch_max(at.0, Ordering::Relaxed);
    }

    /// Plays one fault now; returns when it has started (heals happen later, on their own).
    pub async fn play(self: &Arc<Self>, fault: &FaultSpec) {
        let kind = &fault.kind;
        let (targets, of) = self.pick(kind);
        let mut detail = None;
        match kind {
            FaultKind::Kill { .. } => {
                for name in &targets {
                    self.kill(name);
                }
                self.heal_later(Span::ZERO);
            }
            FaultKind::Partition { duration, .. } => {
                let cut = [
                    Cut::Both,
                    Cut::Both,
                    Cut::ToRedis,
                    Cut::FromRedis,
                    Cut::Reset,
                ][lock(&self.targets).random_range(0..5)];
                detail = Some(cut.name().to_string());
                let proxies = self.proxies(&targets);
                proxies.iter().for_each(|p| p.cut(cut));
                self.heal_later(*duration);
                let wait = self.real(*duration);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    proxies.iter().for_each(|p| p.heal(cut));
                });
            }
            FaultKind::Latency {
                duration, latency, ..
            } => {
                let extra = Duration::from_micros(latency.as_micros());
                detail = Some(format!(
                    "+{:.0}ms one-way latency",
                    extra.as_secs_f64() * 1e3
                ));
                let proxies = self.proxies(&targets);
                proxies.iter().for_each(|p| p.add_delay(extra));
                self.heal_later(*duration);
                let wait = self.real(*duration);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    proxies.iter().for_each(|p| p.remove_delay(extra));
                });
            }
            FaultKind::RedisRestart { downtime } => {
                self.heal_later(*downtime);
                let stage = self.clone();
                let downtime = *downtime;
                tokio::spawn(async move { stage.restart_redis(downtime).await });
            }
            FaultKind::DiskFull { .. } | FaultKind::GpuOom { .. } => {
                unreachable!("refused by plan::check and filtered from random faults")
            }
        }
        lock(&self.fault_log).push(FaultRecord {
            kind: kind.name(),
            at_s: self.scenario_now(),
            pool: kind.pool().map(str::to_string),
            duration_s: kind.duration().as_secs_f64(),
            machines: targets.len() as u32,
            of,
            detail,
        });
    }

    /// SIGKILL Redis, wait out the downtime, start it again from its files. If its
    /// persistence may have lost writes: drop the journal's lost tail and resubmit by key every
    /// job not seen to finish.
    async fn restart_redis(self: Arc<Self>, downtime: Span) {
        let mut redis = self.redis.lock().await;
        redis.crash(&self.children);
        tokio::time::sleep(self.real(downtime)).await;
        if self.ending.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = redis.restart(&self.children).await {
            eprintln!("drover-chaos: {e}");
            return;
        }
        self.redis_restarts.fetch_add(1, Ordering::Relaxed);
        if self.scenario.redis.persistence == Persistence::AofAlways {
            return;
        }
        drop(redis);
        // What was seen to finish before the crash stays finished for the producer, even if
        // the server forgot it.
        let finished = self.finished_states();
        match self.journal.resync().await {
            Ok(lost) => {
                self.rolled_back.fetch_add(lost as u64, Ordering::Relaxed);
            }
            Err(e) => eprintln!("drover-chaos: reading the journal after a restart: {e}"),
        }
        let producer = lock(&self.producer).clone();
        if let Some(producer) = producer {
            let n = producer.reconcile(&finished).await;
            self.resubmitted.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// The terminal state of every job the journal followed so far shows terminal.
    fn finished_states(&self) -> HashMap<JobId, StateName> {
        self.journal
            .lock()
            .iter()
            .flat_map(|e| e.events.iter())
            .filter_map(|e| Some((e.job()?, e.terminal()?)))
            .collect()
    }

    /// Jobs the journal shows submitted, and those it shows terminal.
    pub fn job_sets(&self) -> (HashSet<JobId>, HashSet<JobId>) {
        let (mut submitted, mut finished) = (HashSet::new(), HashSet::new());
        for event in self.journal.lock().iter().flat_map(|e| e.events.iter()) {
            match (event.job(), event.terminal(), event.name()) {
                (Some(job), Some(_), _) => {
                    finished.insert(job);
                }
                (Some(job), None, "submitted") => {
                    submitted.insert(job);
                }
                _ => {}
            }
        }
        (submitted, finished)
    }
}

/// A machine's life drawn from its pool's lifetime stream; `None`: it lives forever.
fn lifetime(lifetime: &Lifetime, rng: &mut Rng) -> Option<Span> {
    match *lifetime {
        Lifetime::None => None,
        Lifetime::Constant { value } => Some(value),
        Lifetime::Exponential { mean } => {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            Some(Span::from_secs_f64(-u.ln() * mean.as_secs_f64()))
        }
    }
}
