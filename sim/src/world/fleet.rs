//! The fleet: machines boot, run an agent, execute attempts on their GPUs, and vanish when
//! their lifetime ends (replaced by a fresh machine when the pool says so).

use super::{Event, World};
use crate::scenario::Lifetime;
use crate::workload::sample;
use drover_engine::agent::{Action, Agent, Input};
use drover_engine::check::HistoryEvent;
use drover_engine::core::{
    Failure, JobId, JobSpec, MachineId, MachineSpec, ModelSet, Outcome, Span, Time, Token,
};
use rand::Rng as _;
use rustc_hash::FxHashMap;
use std::sync::Arc;

/// Timer wake-ups of one agent at one instant beyond which the agent is spinning: a bug.
const MAX_TIMERS_PER_INSTANT: u32 = 1000;

#[derive(Clone, Debug)]
pub struct Attempt {
    token: Token,
    serial: u64,
    gpus: u32,
    started: Time,
    outcome: Outcome,
}

pub struct SimMachine {
    pub pool: u16,
    pub alive: bool,
    pub agent: Option<Box<Agent>>,
    pub running: FxHashMap<JobId, Attempt>,
    pub created_at: Time,
    pub timer: Option<Time>,
    timer_repeats: (Time, u32),
    pub store_id: Option<MachineId>,
    pub partitions: u32,
    pub extra_latency: Span,
    pub leak_gb: u32,
    pub foreign_disk_gb: u32,
}

impl World {
    /// Orders a new machine for `pool`; it boots, then its agent starts.
    pub(super) fn provision(&mut self, pool: usize) {
        let machine = self.machines.len() as u32;
        self.machines.push(SimMachine {
            pool: pool as u16,
            alive: true,
            agent: None,
            running: FxHashMap::default(),
            created_at: self.now,
            timer: None,
            timer_repeats: (Time::ZERO, 0),
            store_id: None,
            partitions: 0,
            extra_latency: Span::ZERO,
            leak_gb: 0,
            foreign_disk_gb: 0,
        });
        self.alive_per_pool[pool] += 1;
        self.stats.machines_booted += 1;
        self.metrics.pools[pool].booted += 1;
        let boot = self.scenario.pools[pool].boot;
        self.queue
            .schedule(self.now.plus(boot), Event::MachineUp { machine });
    }

    pub(super) fn on_machine_up(&mut self, machine: u32) {
        let m = machine as usize;
        if !self.machines[m].alive {
            return;
        }
        let pool_index = self.machines[m].pool as usize;
        let pool = &self.scenario.pools[pool_index];
        let lifetime = match pool.lifetime {
            Lifetime::None => None,
            Lifetime::Constant { value } => Some(value),
            Lifetime::Exponential { mean } => {
                let dist = crate::scenario::Dist::Exponential { mean };
                Some(sample(&dist, &mut self.streams.lifetimes[pool_index]))
            }
        };
        if let Some(lifetime) = lifetime {
            self.queue
                .schedule(self.now.plus(lifetime), Event::MachineDeath { machine });
        }
        let spec = MachineSpec {
            name: format!("{}-{machine}", pool.name),
            pool: pool.name.clone(),
            gpus: pool.gpus,
            gpu_model: pool.gpu_model.clone(),
            gpu_mem_gb: pool.gpu_mem_gb,
            disk_gb: pool.disk_gb,
            labels: pool.labels.clone(),
            cost_per_hour: pool.cost_per_hour,
            kinds: Vec::new(),
        };
        let cached = pool
            .cached_models
            .iter()
            .filter_map(|name| self.config.model_id(name))
            .fold(ModelSet::EMPTY, |set, model| set.with(model));
        let seed = drover_engine::core::backoff::mix64(machine as u64 ^ 0xA6E7);
        let agent = Agent::new(self.config.clone(), spec, cached, seed, self.now);
        self.machines[m].agent = Some(Box::new(agent));
        self.process_agent(machine);
    }

    pub(super) fn on_machine_death(&mut self, machine: u32) {
        if self.machines[machine as usize].alive {
            self.stats.machines_lost += 1;
            self.retire_machine(machine, true);
        }
    }

    /// The machine is gone: its attempts die with it, its bill closes, and the pool may order
    /// a replacement. `lost`: it vanished (its jobs are orphans until the reaper finds them).
    pub(super) fn retire_machine(&mut self, machine: u32, lost: bool) {
        let m = machine as usize;
        self.harvest_agent_stats(machine);
        let mut jobs: Vec<JobId> = self.machines[m].running.keys().copied().collect();
        jobs.sort_unstable();
        for job in jobs {
            self.stop_attempt(machine, job);
            if lost {
                self.orphans.insert(job, self.now);
            }
        }
        let record = &mut self.machines[m];
        record.alive = false;
        record.agent = None;
        record.timer = None;
        let pool_index = record.pool as usize;
        let up = self.now.since(record.created_at);
        let pool = &self.scenario.pools[pool_index];
        let (gpus, cost_per_hour, replace) = (pool.gpus, pool.cost_per_hour, pool.replace);
        self.metrics
            .bill_machine(pool_index, up, gpus, cost_per_hour);
        let tally = &mut self.metrics.pools[pool_index];
        if lost {
            tally.lost += 1;
        } else {
            tally.drained += 1;
        }
        self.alive_per_pool[pool_index] -= 1;
        if replace {
            self.provision(pool_index);
        }
    }

    pub(super) fn on_agent_timer(&mut self, machine: u32) {
        let now = self.now;
        let record = &mut self.machines[machine as usize];
        if record.timer != Some(now) {
            return;
        }
        record.timer = None;
        let due = record
            .agent
            .as_ref()
            .and_then(|a| a.next_timeout())
            .is_some_and(|t| t <= now);
        if !due {
            // Woken early (the agent's next deadline moved later): just set the timer again.
            self.process_agent(machine);
            return;
        }
        if record.timer_repeats.0 == now {
            record.timer_repeats.1 += 1;
            assert!(
                record.timer_repeats.1 < MAX_TIMERS_PER_INSTANT,
                "agent of machine {machine} asks to be woken at {now:?} again and again"
            );
        } else {
            record.timer_repeats = (now, 0);
        }
        if let Some(agent) = record.agent.as_mut() {
            agent.on_timeout(now);
            self.process_agent(machine);
        }
    }

    /// Carries out what the agent asked for, then sets its timer.
    pub(super) fn process_agent(&mut self, machine: u32) {
        let m = machine as usize;
        loop {
            let Some(agent) = self.machines[m].agent.as_mut() else {
                return;
            };
            let Some(action) = agent.poll_action() else {
                break;
            };
            match action {
                Action::Send { id, request } => self.send_from_machine(machine, id, request),
                Action::Start {
                    job,
                    token,
                    spec,
                    download,
                    ..
                } => self.start_attempt(machine, job, token, &spec, download),
                Action::Stop { job } => {
                    self.stop_attempt(machine, job);
                }
                Action::Evicted { .. } => self.stats.evictions += 1,
                Action::StoreFault { .. } => self.stats.store_faults += 1,
                Action::Left => {
                    self.stats.machines_drained += 1;
                    self.retire_machine(machine, false);
                    return;
                }
            }
        }
        // Timers are set lazily: only a deadline earlier than the one pending needs an event;
        // when a pending event finds the deadline moved later, it sets the timer again.
        let record = &mut self.machines[m];
        let next = record.agent.as_ref().and_then(|a| a.next_timeout());
        if let Some(at) = next.filter(|&at| record.timer.is_none_or(|pending| at < pending)) {
            record.timer = Some(at);
            self.queue.schedule(at, Event::AgentTimer { machine });
        }
    }

    fn start_attempt(
        &mut self,
        machine: u32,
        job: JobId,
        token: Token,
        spec: &Arc<JobSpec>,
        download: ModelSet,
    ) {
        let gpus = spec.requirements.gpus;
        let Some(sim) = self.jobs.get(&job).copied() else {
            // A grant that left Redis just before a restart lost it: the store no longer knows
            // the job, so the attempt runs until the agent's next heartbeat revokes it.
            self.stats.ghost_attempts += 1;
            self.begin_attempt(machine, job, token, gpus, Outcome::Succeeded);
            return;
        };
        let (outcome, runs_for) = self.draw_attempt(machine, &sim, gpus, download);
        self.stats.attempts += 1;
        let serial = self.begin_attempt(machine, job, token, gpus, outcome);
        let done = Event::AttemptDone {
            machine,
            job,
            serial,
        };
        self.queue.schedule(self.now.plus(runs_for), done);
    }

    /// How an attempt of `sim` on `machine` will end, and when: out of GPU memory soon after
    /// its models are downloaded, a random failure part-way, or success after its service time.
    fn draw_attempt(
        &mut self,
        machine: u32,
        sim: &super::SimJob,
        gpus: u32,
        download: ModelSet,
    ) -> (Outcome, Span) {
        let m = machine as usize;
        let pool = &self.scenario.pools[self.machines[m].pool as usize];
        let workload = &self.scenario.workloads[sim.workload as usize];
        let download_s = self.config.download_gb(download) as f64 / pool.download_gb_per_s;
        let setup = Span::from_secs_f64(download_s);
        let usable_mem = pool.gpu_mem_gb.saturating_sub(self.machines[m].leak_gb);
        if gpus > 0 && workload.peak_gpu_mem() > usable_mem {
            self.stats.gpu_ooms += 1;
            let needed_gb = workload.peak_gpu_mem();
            return (
                Outcome::Failed(Failure::GpuOom { needed_gb }),
                setup.plus(Span::from_secs(1)),
            );
        }
        if workload.fail_rate > 0.0 && self.streams.execution.random::<f64>() < workload.fail_rate {
            let fraction: f64 = self.streams.execution.random();
            let failure = Failure::Error {
                retryable: true,
                message: "simulated failure".into(),
            };
            let ran = Span::from_secs_f64(sim.service.as_secs_f64() * fraction);
            return (Outcome::Failed(failure), setup.plus(ran));
        }
        (Outcome::Succeeded, setup.plus(sim.service))
    }

    /// Puts an attempt on the machine's GPUs (and tells the checker); returns its serial.
    fn begin_attempt(
        &mut self,
        machine: u32,
        job: JobId,
        token: Token,
        gpus: u32,
        outcome: Outcome,
    ) -> u64 {
        self.next_serial += 1;
        let serial = self.next_serial;
        let record = &mut self.machines[machine as usize];
        let started = self.now;
        record.running.insert(
            job,
            Attempt {
                token,
                serial,
                gpus,
                started,
                outcome,
            },
        );
        let capacity = self.scenario.pools[record.pool as usize].gpus;
        let event = HistoryEvent::Started {
            machine: MachineId(machine as u64),
            job,
            gpus,
            capacity,
            at: started,
        };
        self.checker.observe(&event);
        serial
    }

    /// Ends an attempt where it runs; returns it, or `None` if it was not running.
    fn stop_attempt(&mut self, machine: u32, job: JobId) -> Option<Attempt> {
        let attempt = self.machines[machine as usize].running.remove(&job)?;
        let ran = self.now.since(attempt.started);
        let pool = self.machines[machine as usize].pool as usize;
        self.metrics.bill_attempt(pool, ran, attempt.gpus);
        let event = HistoryEvent::Stopped {
            machine: MachineId(machine as u64),
            job,
            gpus: attempt.gpus,
            at: self.now,
        };
        self.checker.observe(&event);
        Some(attempt)
    }

    pub(super) fn on_attempt_done(&mut self, machine: u32, job: JobId, serial: u64) {
        let m = machine as usize;
        let current = self.machines[m]
            .running
            .get(&job)
            .is_some_and(|a| a.serial == serial);
        if !self.machines[m].alive || !current {
            return;
        }
        let attempt = self.stop_attempt(machine, job).expect("checked above");
        let gpu_s = self.now.since(attempt.started).as_secs_f64() * attempt.gpus as f64;
        if let Some(sim) = self.jobs.get_mut(&job) {
            sim.last_done = Some((attempt.token, gpu_s));
        }
        let now = self.now;
        if let Some(agent) = self.machines[m].agent.as_mut() {
            agent.handle(
                now,
                Input::JobFinished {
                    job,
                    outcome: attempt.outcome,
                    result: None,
                },
            );
            self.process_agent(machine);
        }
    }

    /// GPU memory on a machine shrank: attempts that no longer fit run out of memory now.
    pub(super) fn squeeze_gpu_memory(&mut self, machine: u32) {
        let m = machine as usize;
        let pool = &self.scenario.pools[self.machines[m].pool as usize];
        let usable = pool.gpu_mem_gb.saturating_sub(self.machines[m].leak_gb);
        let now = self.now;
        if let Some(agent) = self.machines[m].agent.as_mut() {
            agent.handle(now, Input::GpuMemory { usable_gb: usable });
        }
        let mut victims: Vec<JobId> = Vec::new();
        for (&job, attempt) in &self.machines[m].running {
            let Some(sim) = self.jobs.get(&job) else {
                continue;
            };
            let peak = self.scenario.workloads[sim.workload as usize].peak_gpu_mem();
            if attempt.gpus > 0 && peak > usable && matches!(attempt.outcome, Outcome::Succeeded) {
                victims.push(job);
            }
        }
        victims.sort_unstable();
        for job in victims {
            let peak = self.scenario.workloads[self.jobs[&job].workload as usize].peak_gpu_mem();
            self.next_serial += 1;
            let serial = self.next_serial;
            let attempt = self.machines[m]
                .running
                .get_mut(&job)
                .expect("collected above");
            attempt.outcome = Outcome::Failed(Failure::GpuOom { needed_gb: peak });
            attempt.serial = serial;
            self.stats.gpu_ooms += 1;
            self.queue.schedule(
                now,
                Event::AttemptDone {
                    machine,
                    job,
                    serial,
                },
            );
        }
        self.process_agent(machine);
    }

    pub(super) fn fill_disk(&mut self, machine: u32) {
        let now = self.now;
        let gb = self.machines[machine as usize].foreign_disk_gb;
        if let Some(agent) = self.machines[machine as usize].agent.as_mut() {
            agent.handle(now, Input::ForeignDisk { gb });
            self.process_agent(machine);
        }
    }

    /// Adds what an agent counted to the world's totals (when it leaves or at the end).
    pub(super) fn harvest_agent_stats(&mut self, machine: u32) {
        if let Some(agent) = self.machines[machine as usize].agent.as_ref() {
            let stats = &mut self.stats;
            stats.stale_outcomes += agent.stats.stale_outcomes;
            stats.attempts_stopped_revoked += agent.stats.revoked;
            stats.machines_registered_again += agent.stats.registrations.saturating_sub(1);
            let opened = agent.link().breaker_opened();
            stats.breaker_opened += opened;
            stats.machines_breaker_opened += u64::from(opened > 0);
        }
    }

    /// The fleet and queue now, for the timeline.
    pub(super) fn sample(&self) -> crate::timeline::Sample {
        let (mut busy, mut up, mut running, mut booted) = (0u64, 0u64, 0u64, 0u64);
        for machine in self.machines.iter().filter(|m| m.alive) {
            if machine.agent.is_some() {
                up += u64::from(self.scenario.pools[machine.pool as usize].gpus);
                booted += 1;
            }
            for attempt in machine.running.values() {
                busy += u64::from(attempt.gpus);
                running += 1;
            }
        }
        crate::timeline::Sample {
            at_s: self.now.as_secs_f64(),
            waiting: self.metrics.in_system().saturating_sub(running) as f64,
            busy_gpus: busy as f64,
            gpus_up: up as f64,
            machines: f64::from(self.alive_per_pool.iter().sum::<u32>()),
            machines_up: booted as f64,
        }
    }

    /// Closes the bills of machines still alive at the end of the run.
    pub fn close_books(&mut self) {
        for machine in 0..self.machines.len() as u32 {
            if self.machines[machine as usize].alive {
                self.harvest_agent_stats(machine);
                let record = &self.machines[machine as usize];
                let pool_index = record.pool as usize;
                let pool = &self.scenario.pools[pool_index];
                let up = self.now.since(record.created_at);
                self.metrics
                    .bill_machine(pool_index, up, pool.gpus, pool.cost_per_hour);
            }
        }
    }
}
