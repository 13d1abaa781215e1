//! Workloads: when jobs arrive, and how long each runs.

use crate::rng::Rng;
use crate::scenario::{Arrivals, Dist, WorkloadSpec};
use drover_engine::core::{Span, Time};
use rand::Rng as _;
use rand_distr::{Distribution, Exp, LogNormal};

/// Draws a length of time from `dist`.
pub fn sample(dist: &Dist, rng: &mut Rng) -> Span {
    match *dist {
        Dist::Exponential { mean } => {
            let exp = Exp::new(1.0).expect("rate 1 is valid");
            Span::from_secs_f64(exp.sample(rng) * mean.as_secs_f64())
        }
        Dist::Lognormal { median, sigma } => {
            let mu = median.as_secs_f64().max(1e-9).ln();
            let log_normal = LogNormal::new(mu, sigma).expect("sigma was validated");
            Span::from_secs_f64(log_normal.sample(rng))
        }
        Dist::Constant { value } => value,
    }
}

/// The arrival process of one workload: yields submission times in order.
pub struct ArrivalProcess {
    arrivals: Arrivals,
    start: Time,
    stop: Time,
    last: Option<Time>,
    emitted: u64,
}

impl ArrivalProcess {
    pub fn new(spec: &WorkloadSpec, duration: Span) -> ArrivalProcess {
        ArrivalProcess {
            arrivals: spec.arrivals,
            start: Time::ZERO.plus(spec.start),
            stop: Time::ZERO.plus(spec.stop_or(duration)),
            last: None,
            emitted: 0,
        }
    }

    /// The next submission time, or `None` when the process is over.
    pub fn next(&mut self, rng: &mut Rng) -> Option<Time> {
        let next = match self.arrivals {
            Arrivals::Poisson { rate_per_s } => {
                let gap: f64 = -rng.random::<f64>().max(f64::MIN_POSITIVE).ln() / rate_per_s;
                self.last
                    .unwrap_or(self.start)
                    .plus(Span::from_secs_f64(gap))
            }
            Arrivals::Periodic { interval } => match self.last {
                None => self.start,
                Some(last) => last.plus(interval),
            },
            Arrivals::Burst { at, count, spread } => {
                if self.emitted >= count as u64 {
                    return None;
                }
                let offset =
                    spread.as_micros() as u128 * self.emitted as u128 / count.max(1) as u128;
                let at = Time::ZERO.plus(at).plus(Span::from_micros(offset as u64));
                self.emitted += 1;
                self.last = Some(at);
                return Some(at);
            }
        };
        if next >= self.stop {
            return None;
        }
        self.last = Some(next);
        self.emitted += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn poisson_rate_and_exponential_mean_are_right() {
        let spec = WorkloadSpec::new(
            "w",
            Arrivals::Poisson { rate_per_s: 5.0 },
            Dist::Exponential {
                mean: Span::from_secs(2),
            },
        );
        let mut process = ArrivalProcess::new(&spec, Span::from_secs(10_000));
        let mut rng = stream(1, "t");
        let n = std::iter::from_fn(|| process.next(&mut rng)).count() as f64;
        assert!((n / 50_000.0 - 1.0).abs() < 0.02, "{n} arrivals");
        let mean: f64 = (0..100_000)
            .map(|_| sample(&spec.service, &mut rng).as_secs_f64())
            .sum::<f64>()
            / 1e5;
        assert!((mean / 2.0 - 1.0).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn bursts_spread_evenly_and_stop_at_count() {
        let spec = WorkloadSpec::new(
            "b",
            Arrivals::Burst {
                at: Span::from_secs(10),
                count: 4,
                spread: Span::from_secs(4),
            },
            Dist::Constant {
                value: Span::from_secs(1),
            },
        );
        let mut process = ArrivalProcess::new(&spec, Span::from_secs(100));
        let mut rng = stream(1, "t");
        let times: Vec<u64> = std::iter::from_fn(|| process.next(&mut rng))
            .map(|t| t.0 / 1_000_000)
            .collect();
        assert_eq!(times, vec![10, 11, 12, 13]);
    }

    #[test]
    fn lognormal_median_is_right() {
        let dist = Dist::Lognormal {
            median: Span::from_secs(30),
            sigma: 1.0,
        };
        let mut rng = stream(3, "t");
        let mut draws: Vec<f64> = (0..20_001)
            .map(|_| sample(&dist, &mut rng).as_secs_f64())
            .collect();
        draws.sort_by(f64::total_cmp);
        assert!(
            (draws[10_000] / 30.0 - 1.0).abs() < 0.05,
            "median {}",
            draws[10_000]
        );
    }
}
