//! Cost accounting: machine time bought, GPU time used and wasted, and what that makes one
//! succeeded job cost.

use super::time::Span;
use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CostLedger {
    /// Money spent on machine time, in the currency of `cost_per_hour`.
    pub spend: f64,
    pub machine_seconds: f64,
    /// GPU-seconds machines were up (capacity).
    pub gpu_seconds_available: f64,
    /// GPU-seconds held by attempts, whatever their outcome.
    pub gpu_seconds_busy: f64,
    /// GPU-seconds of attempts whose work was lost (machine lost, lease revoked, failures).
    pub gpu_seconds_wasted: f64,
    pub jobs_succeeded: u64,
}

impl CostLedger {
    pub fn add_machine_time(&mut self, up: Span, gpus: u32, cost_per_hour: f64) {
        let secs = up.as_secs_f64();
        self.machine_seconds += secs;
        self.gpu_seconds_available += secs * gpus as f64;
        self.spend += secs / 3600.0 * cost_per_hour;
    }

    pub fn add_attempt(&mut self, ran: Span, gpus: u32, wasted: bool) {
        let gpu_secs = ran.as_secs_f64() * gpus as f64;
        self.gpu_seconds_busy += gpu_secs;
        if wasted {
            self.gpu_seconds_wasted += gpu_secs;
        }
    }

    /// Spend over succeeded jobs; `None` before the first success.
    pub fn cost_per_job(&self) -> Option<f64> {
        (self.jobs_succeeded > 0).then(|| self.spend / self.jobs_succeeded as f64)
    }

    pub fn utilization(&self) -> f64 {
        if self.gpu_seconds_available > 0.0 {
            self.gpu_seconds_busy / self.gpu_seconds_available
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_per_job_is_spend_over_successes() {
        let mut ledger = CostLedger::default();
        assert_eq!(ledger.cost_per_job(), None);
        ledger.add_machine_time(Span::from_secs(3600), 2, 3.0);
        ledger.add_attempt(Span::from_secs(1800), 2, false);
        ledger.add_attempt(Span::from_secs(900), 1, true);
        ledger.jobs_succeeded = 4;
        assert!((ledger.cost_per_job().unwrap() - 0.75).abs() < 1e-9);
        assert!((ledger.utilization() - (3600.0 + 900.0) / 7200.0).abs() < 1e-9);
        assert!((ledger.gpu_seconds_wasted - 900.0).abs() < 1e-9);
    }
}
