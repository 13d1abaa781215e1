//! What the harness will play from a scenario: the checks that refuse what it cannot play
//! (before anything starts), the submissions (the simulator's arrival and service streams, so
//! a seed offers the same jobs to both), and the faults (the simulator's plan, random faults
//! included).

use drover_sim::rng::stream;
use drover_sim::scenario::{FaultKind, FaultSpec, Scenario, Span};
use drover_sim::workload::{sample, ArrivalProcess};
use drover_sim::world::planned_faults;

/// One agent process per machine: above this the harness's host, not the engine, is measured.
pub const MAX_MACHINES: u64 = 64;
/// Jobs the harness submits at most in one run (it keeps every acknowledgement).
pub const MAX_JOBS: f64 = 200_000.0;
/// `--time-scale` bounds: beyond 1000 scenario seconds per second, timers collide with the
/// processes' own start-up.
pub const MAX_TIME_SCALE: f64 = 1000.0;

/// Why the harness refuses a scenario it loaded fine: it names the file and what it cannot play.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Unplayable {
    #[error(
        "{file}: the fleet has {machines} machines; drover-chaos runs at most {MAX_MACHINES} \
         (one agent process each): use fewer machines in [[pool]]"
    )]
    TooManyMachines { file: String, machines: u64 },
    #[error(
        "{file}: fault[{index}].kind: drover-chaos cannot play \"{kind}\" faults: {why}; it \
         plays kill, partition, latency and redis_restart"
    )]
    FaultKind {
        file: String,
        index: usize,
        kind: &'static str,
        why: &'static str,
    },
    #[error(
        "{file}: workload[{index}].models: workload {name:?} needs models ({models}): \
         drover-chaos runs the sleep executor, which downloads no models"
    )]
    Models {
        file: String,
        index: usize,
        name: String,
        models: String,
    },
    #[error(
        "{file}: workload[{index}].fail_rate: {rate}: drover-chaos's sleep jobs do not fail at \
         random"
    )]
    FailRate {
        file: String,
        index: usize,
        rate: f64,
    },
    #[error(
        "{file}: redis.reply_loss: {rate}: drover-chaos does not drop replies at random (a \
         one-way partition from Redis does)"
    )]
    ReplyLoss { file: String, rate: f64 },
    #[error("{file}: about {jobs:.0} jobs expected; drover-chaos submits at most {MAX_JOBS}")]
    TooManyJobs { file: String, jobs: f64 },
    #[error("--time-scale {0}: it must be above 0 and at most {MAX_TIME_SCALE}")]
    TimeScale(f64),
    #[error("--chaos {0}: the rate must be between 0 and 10000 faults per hour")]
    ChaosRate(f64),
}

/// Why a fault kind cannot be played, or `None` when it can.
pub fn unplayable_kind(kind: &FaultKind) -> Option<&'static str> {
    match kind {
        FaultKind::Kill { .. }
        | FaultKind::Partition { .. }
        | FaultKind::Latency { .. }
        | FaultKind::RedisRestart { .. } => None,
        FaultKind::DiskFull { .. } => Some(
            "the agent's disk budget (--disk-gb) is fixed at its start and it has no way to \
             fill its cache from outside while running",
        ),
        FaultKind::GpuOom { .. } => Some(
            "the sleep executor allocates no GPU memory and the agent has no GPU stand-in \
             with a budget to squeeze",
        ),
    }
}

/// Refuses what the harness cannot play. `file` names the scenario in messages.
pub fn check(scenario: &Scenario, file: &str, time_scale: f64) -> Result<(), Unplayable> {
    let file = file.to_string();
    if !(time_scale > 0.0 && time_scale <= MAX_TIME_SCALE) {
        return Err(Unplayable::TimeScale(time_scale));
    }
    let machines = scenario.total_machines();
    if machines > MAX_MACHINES {
        return Err(Unplayable::TooManyMachines { file, machines });
    }
    for (i, fault) in scenario.faults.iter().enumerate() {
        if let Some(why) = unplayable_kind(&fault.kind) {
            return Err(Unplayable::FaultKind {
                file,
                index: i,
                kind: fault.kind.name(),
                why,
            });
        }
    }
    for (index, w) in scenario.workloads.iter().enumerate() {
        if !w.models.is_empty() {
            return Err(Unplayable::Models {
                file,
                index,
                name: w.name.clone(),
                models: w.models.join(", "),
            });
        }
        if w.fail_rate > 0.0 {
            return Err(Unplayable::FailRate {
                file,
                index,
                rate: w.fail_rate,
            });
        }
    }
    if scenario.redis.reply_loss > 0.0 {
        return Err(Unplayable::ReplyLoss {
            file,
            rate: scenario.redis.reply_loss,
        });
    }
    let jobs = scenario.expected_jobs();
    if jobs > MAX_JOBS {
        return Err(Unplayable::TooManyJobs { file, jobs });
    }
    Ok(())
}

/// One job to submit: when (scenario time), of which workload, and how long it sleeps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Submission {
    /// Its number in submission order: the idempotency key's.
    pub logical: u64,
    pub workload: usize,
    pub at: Span,
    pub service: Span,
}

/// Every job of the run, in submission order, drawn from the simulator's streams.
pub fn submissions(scenario: &Scenario, seed: u64) -> Vec<Submission> {
    let mut all = Vec::new();
    for (workload, spec) in scenario.workloads.iter().enumerate() {
        let mut arrivals = stream(seed, &format!("arrivals/{}", spec.name));
        let mut services = stream(seed, &format!("service/{}", spec.name));
        let mut process = ArrivalProcess::new(spec, scenario.duration);
        while let Some(at) = process.next(&mut arrivals) {
            all.push(Submission {
                logical: 0,
                workload,
                at: Span(at.0),
                service: sample(&spec.service, &mut services),
            });
        }
    }
    all.sort_by_key(|s| (s.at, s.workload));
    for (i, s) in all.iter_mut().enumerate() {
        s.logical = i as u64;
    }
    all
}

/// The faults to play, in time order: the scenario's and, with `chaos`, random ones of the
/// kinds the harness plays (the others are counted in the second value, and skipped).
pub fn faults(scenario: &Scenario, seed: u64, chaos: Option<f64>) -> (Vec<FaultSpec>, u32) {
    let mut skipped = 0;
    let mut faults: Vec<FaultSpec> = planned_faults(scenario, seed, chaos)
        .into_iter()
        .filter(|f| {
            let playable = unplayable_kind(&f.kind).is_none();
            skipped += u32::from(!playable);
            playable
        })
        .collect();
    faults.sort_by_key(|f| f.at);
    (faults, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_sim::scenario::{Arrivals, Dist, PoolSpec, WorkloadSpec};

    fn scenario(machines: u32) -> Scenario {
        let mut s = Scenario {
            name: "t".into(),
            seed: 1,
            duration: Span::from_secs(60),
            warmup: Span::ZERO,
            drain: Span::from_secs(60),
            redis: Default::default(),
            engine: Default::default(),
            models: vec![],
            pools: vec![PoolSpec::new("p", machines)],
            workloads: vec![WorkloadSpec::new(
                "w",
                Arrivals::Poisson { rate_per_s: 2.0 },
                Dist::Constant {
                    value: Span::from_secs(1),
                },
            )],
            faults: vec![],
        };
        s.faults.push(FaultSpec {
            at: Span::from_secs(5),
            kind: FaultKind::RedisRestart {
                downtime: Span::from_secs(1),
            },
        });
        s
    }

    #[test]
    fn refuses_big_fleets_and_kinds_it_lacks_naming_them() {
        assert_eq!(check(&scenario(64), "f.toml", 1.0), Ok(()));
        let too_many = check(&scenario(65), "f.toml", 1.0).unwrap_err();
        assert!(too_many.to_string().contains("at most 64"), "{too_many}");
        let mut s = scenario(2);
        s.faults.push(FaultSpec {
            at: Span::from_secs(5),
            kind: FaultKind::GpuOom {
                pool: None,
                fraction: 0.5,
                duration: Span::from_secs(5),
                leak_gb: 4,
            },
        });
        let refused = check(&s, "f.toml", 1.0).unwrap_err().to_string();
        assert!(
            refused.contains("fault[1].kind") && refused.contains("gpu_oom"),
            "{refused}"
        );
        assert!(check(&scenario(2), "f.toml", 0.0).is_err());
    }

    #[test]
    fn a_seed_gives_the_same_jobs_and_random_faults_only_of_playable_kinds() {
        let s = scenario(4);
        let a = submissions(&s, 7);
        assert_eq!(a, submissions(&s, 7));
        assert_ne!(a, submissions(&s, 8));
        assert!(
            (80..160).contains(&a.len()),
            "{} arrivals at 2/s over 60s",
            a.len()
        );
        assert!(a.windows(2).all(|w| w[0].at <= w[1].at));
        let (faults, skipped) = faults(&s, 3, Some(3000.0));
        assert!(faults.iter().all(|f| unplayable_kind(&f.kind).is_none()));
        assert!(
            faults.len() > 5 && skipped > 0,
            "{} played, {skipped} skipped",
            faults.len()
        );
    }
}
