//! What a run measured: queue wait and completion time histograms (overall and per workload),
//! every job's outcome (overall and per workload), Little's law bookkeeping, cost and
//! utilisation (overall and per pool), waste, redistribution time and how soon revoked jobs
//! ran again. Memory is flat in the number of finished jobs: histograms and sums, no per-job
//! vectors.

use drover_engine::core::cost::CostLedger;
use drover_engine::core::{Span, StateName, Time};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms hold microseconds up to about 115 days at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(10_000_000_000_000, 3).expect("valid bounds")
}

#[derive(Clone)]
pub struct Latencies {
    pub wait: Histogram<u64>,
    pub jct: Histogram<u64>,
    /// Jobs that waited longer than a dispatch round trip (for the probability of waiting).
    pub waited: u64,
    wait_sum_us: u128,
    jct_sum_us: u128,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            wait: histogram(),
            jct: histogram(),
            waited: 0,
            wait_sum_us: 0,
            jct_sum_us: 0,
        }
    }
}

impl Latencies {
    fn record(&mut self, wait: Span, jct: Span, dispatch: Span) {
        self.wait.saturating_record(wait.as_micros());
        self.jct.saturating_record(jct.as_micros());
        self.wait_sum_us += wait.as_micros() as u128;
        self.jct_sum_us += jct.as_micros() as u128;
        if wait > dispatch {
            self.waited += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.wait.len()
    }

    pub fn mean_wait_s(&self) -> f64 {
        self.wait_sum_us as f64 / 1e6 / self.count().max(1) as f64
    }

    pub fn mean_jct_s(&self) -> f64 {
        self.jct_sum_us as f64 / 1e6 / self.count().max(1) as f64
    }

    pub fn summary(&self) -> (Summary, Summary) {
        (
            Summary::of(&self.wait, self.mean_wait_s()),
            Summary::of(&self.jct, self.mean_jct_s()),
        )
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    /// Seconds, from a histogram of microseconds (its own mean, to its resolution).
    pub fn of_histogram(h: &Histogram<u64>) -> Summary {
        Summary::of(h, h.mean() / 1e6)
    }

    fn of(h: &Histogram<u64>, mean: f64) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let q = |x: f64| h.value_at_quantile(x) as f64 / 1e6;
        Summary {
            mean,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: h.max() as f64 / 1e6,
        }
    }
}

/// A histogram of microseconds as its distribution function in seconds: (value, share at or
/// below it) at `points` evenly spaced shares, 0 to 1. Empty for an empty histogram.
pub fn cdf(h: &Histogram<u64>, points: usize) -> Vec<[f64; 2]> {
    if h.is_empty() || points < 2 {
        return Vec::new();
    }
    (0..points)
        .map(|i| {
            let share = i as f64 / (points - 1) as f64;
            [h.value_at_quantile(share) as f64 / 1e6, share]
        })
        .collect()
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Outcomes {
    pub submitted: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub timed_out: u64,
    pub unworkable: u64,
}

impl Outcomes {
    fn count(&mut self, state: StateName) {
        let counter = match state {
            StateName::Succeeded => &mut self.succeeded,
            StateName::Dead => &mut self.dead,
            StateName::Cancelled => &mut self.cancelled,
            StateName::TimedOut => &mut self.timed_out,
            _ => &mut self.unworkable,
        };
        *counter += 1;
    }

    /// Jobs that reached any terminal state.
    pub fn terminal(&self) -> u64 {
        self.succeeded + self.dead + self.cancelled + self.timed_out + self.unworkable
    }
}

/// What became of every job, overall and per workload. A lossy Redis restart rolls it back
/// with the store (the jobs it forgot finish again later).
#[derive(Clone, Debug, Default)]
pub struct OutcomeBook {
    pub total: Outcomes,
    pub per_workload: Vec<Outcomes>,
    /// Per workload: finished jobs submitted during the warm-up, which latencies leave out.
    pub in_warmup: Vec<u64>,
}

/// What is counted once per finished job: outcomes, latencies, successes and their useful GPU
/// time. A lossy Redis restart rolls these back with the store, since the jobs it forgot
/// finishing finish again and are counted then; counting both would count a job twice.
#[derive(Clone)]
pub struct PerJobFigures {
    outcomes: OutcomeBook,
    overall: Latencies,
    per_workload: Vec<Latencies>,
    jobs_succeeded: u64,
    useful_gpu_s: f64,
}

/// One pool's machines and what they cost: the ledger of the pool alone.
#[derive(Clone, Debug, Default)]
pub struct PoolTally {
    pub booted: u64,
    /// Vanished (killed or at the end of their lifetime).
    pub lost: u64,
    pub drained: u64,
    pub ledger: CostLedger,
}

pub struct Metrics {
    warmup: Time,
    /// A job that found an idle machine still waits this long: the wake-up's trip to the
    /// machine and the claim's trip back (two one-way latencies). Longer waits are queueing.
    dispatch: Span,
    /// Arrivals stop here; Little's law is measured over [warmup, this].
    window_end: Time,
    pub overall: Latencies,
    pub per_workload: Vec<Latencies>,
    pub outcomes: OutcomeBook,
    pub ledger: CostLedger,
    pub pools: Vec<PoolTally>,
    pub redistribution: Histogram<u64>,
    /// From a revoked lease's requeue to the job's next lease.
    pub revoke_to_lease: Histogram<u64>,
    /// Jobs in the system (submitted, not terminal) and the integral of that over time.
    in_system: u64,
    area_job_s: f64,
    last_change: Time,
    /// Jobs submitted within the Little window, and the sum of their times in system.
    window_arrivals: u64,
    window_sojourn_s: f64,
    /// Useful GPU-seconds: those of the attempts whose success was recorded.
    pub useful_gpu_s: f64,
}

impl Metrics {
    pub fn new(
        warmup: Time,
        window_end: Time,
        dispatch: Span,
        workloads: usize,
        pools: usize,
    ) -> Metrics {
        Metrics {
            warmup,
            dispatch,
            window_end,
            overall: Latencies::default(),
            per_workload: vec![Latencies::default(); workloads],
            outcomes: OutcomeBook {
                total: Outcomes::default(),
                per_workload: vec![Outcomes::default(); workloads],
                in_warmup: vec![0; workloads],
            },
            ledger: CostLedger::default(),
            pools: vec![PoolTally::default(); pools],
            redistribution: histogram(),
            revoke_to_lease: histogram(),
            in_system: 0,
            area_job_s: 0.0,
            last_change: warmup,
            window_arrivals: 0,
            window_sojourn_s: 0.0,
            useful_gpu_s: 0.0,
        }
    }

    pub fn per_job_figures(&self) -> PerJobFigures {
        PerJobFigures {
            outcomes: self.outcomes.clone(),
            overall: self.overall.clone(),
            per_workload: self.per_workload.clone(),
            jobs_succeeded: self.ledger.jobs_succeeded,
            useful_gpu_s: self.useful_gpu_s,
        }
    }

    pub fn roll_back_per_job_figures(&mut self, to: PerJobFigures) {
        self.outcomes = to.outcomes;
        self.overall = to.overall;
        self.per_workload = to.per_workload;
        self.ledger.jobs_succeeded = to.jobs_succeeded;
        self.useful_gpu_s = to.useful_gpu_s;
    }

    /// Jobs submitted and not yet terminal.
    pub fn in_system(&self) -> u64 {
        self.in_system
    }

    /// The wait beyond which a job counts as having queued (for P(wait)).
    pub fn dispatch(&self) -> Span {
        self.dispatch
    }

    fn advance(&mut self, now: Time) {
        let now = now.min(self.window_end);
        if now > self.last_change {
            self.area_job_s += self.in_system as f64 * now.since(self.last_change).as_secs_f64();
            self.last_change = now;
        }
    }

    pub fn on_submitted(&mut self, now: Time) {
        self.advance(now);
        self.in_system += 1;
        self.outcomes.total.submitted += 1;
    }

    /// A job reached `state`; `lease_at` is when its last attempt was leased.
    pub fn on_finished(
        &mut self,
        now: Time,
        state: StateName,
        submitted_at: Time,
        lease_at: Option<Time>,
        workload: usize,
    ) {
        self.advance(now);
        self.in_system = self.in_system.saturating_sub(1);
        self.outcomes.total.count(state);
        if let Some(per) = self.outcomes.per_workload.get_mut(workload) {
            per.count(state);
        }
        if submitted_at < self.warmup {
            if let Some(excluded) = self.outcomes.in_warmup.get_mut(workload) {
                *excluded += 1;
            }
            return;
        }
        if submitted_at < self.window_end {
            self.window_arrivals += 1;
            self.window_sojourn_s += now.since(submitted_at).as_secs_f64();
        }
        if let (StateName::Succeeded, Some(lease_at)) = (state, lease_at) {
            let wait = lease_at.since(submitted_at);
            let jct = now.since(submitted_at);
            self.overall.record(wait, jct, self.dispatch);
            if let Some(per) = self.per_workload.get_mut(workload) {
                per.record(wait, jct, self.dispatch);
            }
        }
    }

    pub fn on_redistributed(&mut self, after: Span) {
        self.redistribution.saturating_record(after.as_micros());
    }

    pub fn on_leased_after_revoke(&mut self, after: Span) {
        self.revoke_to_lease.saturating_record(after.as_micros());
    }

    /// A machine of `pool` was up for `up`: its bill, in the fleet's ledger and its pool's.
    pub fn bill_machine(&mut self, pool: usize, up: Span, gpus: u32, cost_per_hour: f64) {
        self.ledger.add_machine_time(up, gpus, cost_per_hour);
        self.pools[pool]
            .ledger
            .add_machine_time(up, gpus, cost_per_hour);
    }

    /// An attempt held `gpus` GPUs of a machine of `pool` for `ran`.
    pub fn bill_attempt(&mut self, pool: usize, ran: Span, gpus: u32) {
        self.ledger.add_attempt(ran, gpus, false);
        self.pools[pool].ledger.add_attempt(ran, gpus, false);
    }

    /// Little's law over the arrival window: (L, lambda, W) with L the time-average number
    /// in the system, lambda the arrival rate and W the mean time in system.
    pub fn little(&mut self) -> Little {
        self.advance(self.window_end);
        let window_s = self.window_end.since(self.warmup).as_secs_f64().max(1e-9);
        Little {
            mean_in_system: self.area_job_s / window_s,
            arrival_rate: self.window_arrivals as f64 / window_s,
            mean_time_in_system_s: self.window_sojourn_s / self.window_arrivals.max(1) as f64,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Little {
    pub mean_in_system: f64,
    pub arrival_rate: f64,
    pub mean_time_in_system_s: f64,
}
