//! A circuit breaker: closed (requests flow, failures counted), open (nothing sent until a
//! cooldown passes), half-open (one probe; its success closes, its failure reopens).

use super::time::{Span, Time};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BreakerState {
    Closed { failures: u32 },
    Open { until: Time },
    HalfOpen,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Span,
    state: BreakerState,
    /// Times the breaker has opened, for metrics.
    pub opened: u64,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Span) -> Breaker {
        assert!(
            threshold > 0,
            "a breaker that opens on zero failures never closes"
        );
        Breaker {
            threshold,
            cooldown,
            state: BreakerState::Closed { failures: 0 },
            opened: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may be sent at `now`. An open breaker whose cooldown has passed
    /// turns half-open and lets this one request through as the probe.
    pub fn allow(&mut self, now: Time) -> bool {
        match self.state {
            BreakerState::Closed { .. } | BreakerState::HalfOpen => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// When an open breaker will let a probe through.
    pub fn reopens_at(&self) -> Option<Time> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed { failures: 0 };
    }

    pub fn on_failure(&mut self, now: Time) {
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.threshold => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            BreakerState::Open { until } => BreakerState::Open { until },
            _ => {
                self.opened += 1;
                BreakerState::Open {
                    until: now.plus(self.cooldown),
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown() {
        let mut b = Breaker::new(3, Span::from_secs(5));
        let t0 = Time(1_000_000);
        b.on_failure(t0);
        b.on_failure(t0);
        assert!(b.allow(t0), "two failures of three keep it closed");
        b.on_failure(t0);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                until: t0.plus(Span::from_secs(5))
            }
        );
        assert!(!b.allow(t0.plus(Span::from_secs(4))));
        assert!(b.allow(t0.plus(Span::from_secs(5))));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_failure(t0.plus(Span::from_secs(5)));
        assert!(
            matches!(b.state(), BreakerState::Open { .. }),
            "a failed probe reopens"
        );
        assert_eq!(b.opened, 2);
        assert!(b.allow(t0.plus(Span::from_secs(10))));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn success_resets_the_count() {
        let mut b = Breaker::new(2, Span::from_secs(1));
        b.on_failure(Time(0));
        b.on_success();
        b.on_failure(Time(0));
        assert!(matches!(b.state(), BreakerState::Closed { failures: 1 }));
    }
}
