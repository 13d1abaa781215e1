//! Faults: the scenario's `[[fault]]` list plus, in swarm mode (`--chaos RATE`), random faults
//! of every kind drawn from the seed. Each fault starts, hits a random fraction of the
//! machines alive then, and (unless it is a kill) heals after its duration.

use super::{Event, Snapshot, World};
use crate::rng::{stream, Rng};
use crate::scenario::{FaultKind, FaultSpec, Scenario};
use drover_engine::check::Checker;
use drover_engine::core::{Span, Time};
use rand::seq::SliceRandom;
use rand::Rng as _;
use serde::Serialize;

pub struct ActiveFault {
    pub spec: FaultSpec,
    /// The machines it hit, chosen when it starts.
    targets: Vec<u32>,
    /// For the report: whether it started, how many machines it hit and how many were up in
    /// its pool then (both 0 for a Redis restart).
    pub started: bool,
    pub hit: u32,
    pub of: u32,
}

/// One fault as it happened, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// As spelled in scenario files: kill, partition, redis_restart, disk_full, gpu_oom, latency.
    pub kind: &'static str,
    pub at_s: f64,
    /// The pool it targeted; `None`: every pool (or Redis itself).
    pub pool: Option<String>,
    /// How long it lasted (a Redis restart: its downtime; a kill: 0, it is permanent).
    pub duration_s: f64,
    /// The machines it hit, of those up in its pool when it started (0 of 0 for Redis).
    pub machines: u32,
    pub of: u32,
    /// Its size, where it has one: extra latency, GPU memory leaked, disk filled.
    pub detail: Option<String>,
}

impl FaultRecord {
    fn of(fault: &ActiveFault) -> FaultRecord {
        let kind = &fault.spec.kind;
        let detail = match kind {
            FaultKind::Latency { latency, .. } => Some(format!(
                "+{:.0}ms one-way latency",
                latency.as_secs_f64() * 1e3
            )),
            FaultKind::GpuOom { leak_gb, .. } => Some(format!("{leak_gb} GB held on each GPU")),
            FaultKind::DiskFull { fill_gb, .. } => {
                Some(fill_gb.map_or("disk filled".to_string(), |gb| format!("{gb} GB written")))
            }
            FaultKind::Kill { .. }
            | FaultKind::Partition { .. }
            | FaultKind::RedisRestart { .. } => None,
        };
        FaultRecord {
            kind: kind.name(),
            at_s: fault.spec.at.as_secs_f64(),
            pool: kind.pool().map(str::to_string),
            duration_s: kind.duration().as_secs_f64(),
            machines: fault.hit,
            of: fault.of,
            detail,
        }
    }
}

/// The faults of a run: the scenario's, then the swarm's (`chaos` faults per simulated hour,
/// over the arrival window).
pub fn plan(scenario: &Scenario, seed: u64, chaos: Option<f64>) -> Vec<ActiveFault> {
    let mut faults: Vec<FaultSpec> = scenario.faults.clone();
    if let Some(rate_per_hour) = chaos.filter(|r| *r > 0.0) {
        let mut rng = stream(seed, "chaos");
        let mut at = 0.0;
        let end = scenario.duration.as_secs_f64();
        loop {
            at += -rng.random::<f64>().max(f64::MIN_POSITIVE).ln() * 3600.0 / rate_per_hour;
            if at >= end {
                break;
            }
            faults.push(random_fault(scenario, &mut rng, Span::from_secs_f64(at)));
        }
    }
    faults
        .into_iter()
        .map(|spec| ActiveFault {
            spec,
            targets: Vec::new(),
            started: false,
            hit: 0,
            of: 0,
        })
        .collect()
}

/// The faults of a run as `plan` draws them (the same seed gives the same list), for the chaos
/// harness, which plays them against real processes.
pub fn planned_faults(scenario: &Scenario, seed: u64, chaos: Option<f64>) -> Vec<FaultSpec> {
    plan(scenario, seed, chaos)
        .into_iter()
        .map(|fault| fault.spec)
        .collect()
}

fn random_fault(scenario: &Scenario, rng: &mut Rng, at: Span) -> FaultSpec {
    let pool_index = rng.random_range(0..scenario.pools.len());
    let pool_spec = &scenario.pools[pool_index];
    let pool = Some(pool_spec.name.clone());
    let fraction = rng.random_range(0.05..0.5);
    let duration = Span::from_secs_f64(rng.random_range(10.0..600.0));
    let kind = match rng.random_range(0..6) {
        0 => FaultKind::Kill {
            pool,
            fraction,
            count: None,
        },
        1 => FaultKind::Partition {
            pool,
            fraction,
            duration,
        },
        2 => FaultKind::RedisRestart {
            downtime: Span::from_secs_f64(rng.random_range(1.0..20.0)),
        },
        3 => FaultKind::DiskFull {
            pool,
            fraction,
            duration,
            fill_gb: None,
        },
        4 => {
            let leak_gb = rng.random_range(1..=pool_spec.gpu_mem_gb.max(1));
            FaultKind::GpuOom {
                pool,
                fraction,
                duration,
                leak_gb,
            }
        }
        _ => {
            let latency = Span::from_secs_f64(rng.random_range(0.01..3.0));
            FaultKind::Latency {
                pool,
                fraction,
                duration,
                latency,
            }
        }
    };
    FaultSpec { at, kind }
}

impl World {
    pub(super) fn schedule_faults(&mut self) {
        for (i, fault) in self.faults.iter().enumerate() {
            let start = Time::ZERO.plus(fault.spec.at);
            self.queue
                .schedule(start, Event::FaultStart { fault: i as u32 });
            let duration = fault.spec.kind.duration();
            if duration > Span::ZERO {
                self.queue
                    .schedule(start.plus(duration), Event::FaultEnd { fault: i as u32 });
            }
            self.quiet_from = self.quiet_from.max(start.plus(duration));
            if matches!(fault.spec.kind, FaultKind::RedisRestart { .. }) {
                // aof-everysec keeps what was written up to the last whole second before the
                // crash: take that state then.
                let second = 1_000_000;
                let synced = Time((start.0.saturating_sub(1)) / second * second);
                self.queue.schedule(synced, Event::Fsync);
            }
        }
    }

    pub(super) fn on_fault_start(&mut self, fault: usize) {
        let kind = self.faults[fault].spec.kind.clone();
        self.faults[fault].started = true;
        if let FaultKind::RedisRestart { downtime } = kind {
            self.crash_redis(downtime);
            return;
        }
        let (targets, of) = self.pick_targets(&kind);
        self.faults[fault].hit = targets.len() as u32;
        self.faults[fault].of = of;
        for &m in &targets {
            let record = &mut self.machines[m as usize];
            match &kind {
                FaultKind::Kill { .. } => {
                    self.stats.machines_lost += 1;
                    self.retire_machine(m, true);
                }
                FaultKind::Partition { .. } => record.partitions += 1,
                FaultKind::Latency { latency, .. } => {
                    record.extra_latency = record.extra_latency.plus(*latency)
                }
                FaultKind::GpuOom { leak_gb, .. } => {
                    record.leak_gb += leak_gb;
                    self.squeeze_gpu_memory(m);
                }
                FaultKind::DiskFull { fill_gb, .. } => {
                    let disk = self.scenario.pools[record.pool as usize].disk_gb;
                    record.foreign_disk_gb =
                        (record.foreign_disk_gb + fill_gb.unwrap_or(disk)).min(disk);
                    self.fill_disk(m);
                }
                FaultKind::RedisRestart { .. } => unreachable!("handled above"),
            }
        }
        self.faults[fault].targets = targets;
    }

    pub(super) fn on_fault_end(&mut self, fault: usize) {
        let targets = std::mem::take(&mut self.faults[fault].targets);
        let kind = self.faults[fault].spec.kind.clone();
        if let FaultKind::RedisRestart { .. } = kind {
            return;
        }
        for m in targets {
            if !self.machines[m as usize].alive {
                continue;
            }
            let record = &mut self.machines[m as usize];
            match &kind {
                FaultKind::Partition { .. } => record.partitions -= 1,
                FaultKind::Latency { latency, .. } => {
                    record.extra_latency = Span(record.extra_latency.0 - latency.0);
                }
                FaultKind::GpuOom { leak_gb, .. } => {
                    record.leak_gb -= leak_gb;
                    self.squeeze_gpu_memory(m);
                }
                FaultKind::DiskFull { .. } => {
                    record.foreign_disk_gb = 0;
                    self.fill_disk(m);
                }
                _ => {}
            }
        }
    }

    /// A random `fraction` (or `count`) of the machines of the fault's pool that are up now,
    /// and how many were up.
    fn pick_targets(&mut self, kind: &FaultKind) -> (Vec<u32>, u32) {
        let pool = kind
            .pool()
            .map(|name| self.scenario.pools.iter().position(|p| p.name == name));
        let mut candidates: Vec<u32> = (0..self.machines.len() as u32)
            .filter(|&m| {
                let record = &self.machines[m as usize];
                record.alive
                    && record.agent.is_some()
                    && pool.is_none_or(|p| p == Some(record.pool as usize))
            })
            .collect();
        let up = candidates.len() as u32;
        candidates.shuffle(&mut self.streams.faults);
        let n = kind.machines_hit(candidates.len());
        candidates.truncate(n.min(candidates.len()));
        candidates.sort_unstable();
        (candidates, up)
    }

    /// The faults that started, in the order they started.
    pub fn fault_log(&self) -> Vec<FaultRecord> {
        let mut log: Vec<FaultRecord> = self
            .faults
            .iter()
            .filter(|f| f.started)
            .map(FaultRecord::of)
            .collect();
        log.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        log
    }

    /// aof-everysec: remember what Redis has written to disk by now.
    pub(super) fn on_fsync(&mut self) {
        if self.redis.persistence == crate::scenario::Persistence::AofEverysec {
            self.snapshot = Some(Snapshot {
                store: self.redis.store.clone(),
                checker: self.checker.clone(),
                jobs: self.jobs.clone(),
                figures: self.metrics.per_job_figures(),
            });
        }
    }

    /// Redis dies and comes back after `downtime` with what its persistence kept. The checker
    /// and the simulator's job table roll back with it; producers resubmit once it is up.
    fn crash_redis(&mut self, downtime: Span) {
        let until = self.now.plus(downtime);
        self.stats.redis_restarts += 1;
        self.queue.schedule(until, Event::RedisUp);
        let snapshot = self.snapshot.take();
        let lossy = self.redis.restart_loses_writes();
        let synced_store = snapshot.as_ref().map(|s| s.store.clone());
        self.redis.crash(self.now, until, synced_store);
        if !lossy {
            return;
        }
        // The store that comes back may reuse the ids of jobs it forgot.
        self.revoked_at.clear();
        match snapshot
            .filter(|_| self.redis.persistence == crate::scenario::Persistence::AofEverysec)
        {
            Some(snapshot) => {
                self.checker.roll_back_to(snapshot.checker);
                self.jobs = snapshot.jobs;
                // Jobs finished in the lost second will finish again.
                self.metrics.roll_back_per_job_figures(snapshot.figures);
            }
            None => {
                self.checker.roll_back_to(Checker::new());
                self.jobs.clear();
            }
        }
    }

    pub(super) fn on_redis_up(&mut self) {
        self.stats.jobs_dropped_by_redis = self.redis.jobs_dropped;
        self.reconcile_after_restart();
    }
}
