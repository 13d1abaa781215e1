//! What a run looked like over time, for charts: jobs waiting, GPUs busy and up, machines
//! alive, sampled at fixed steps of simulated time into at most `MAX_SAMPLES` samples. When
//! the run outlasts them, neighbouring samples are averaged in pairs and the step doubles, so
//! memory stays fixed however long the run (never a point per event). Sampling only reads the
//! world: it draws no random number and records nothing in the trace.

use drover_engine::core::{Span, Time};
use serde::Serialize;

/// Most samples a timeline keeps; between half this and this once the run outlasts them.
pub const MAX_SAMPLES: usize = 256;

/// The state of the world at one instant (or the mean of several, once merged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    pub at_s: f64,
    /// Jobs in the system but not running: queued, backing off, or in transit.
    pub waiting: f64,
    pub busy_gpus: f64,
    /// GPUs of machines that have booted and are alive.
    pub gpus_up: f64,
    /// Machines alive, booting included, and those of them that have booted.
    pub machines: f64,
    pub machines_up: f64,
}

impl Sample {
    pub fn utilization(&self) -> f64 {
        if self.gpus_up > 0.0 {
            self.busy_gpus / self.gpus_up
        } else {
            0.0
        }
    }

    fn mean(a: &Sample, b: &Sample) -> Sample {
        let m = |x: f64, y: f64| (x + y) / 2.0;
        Sample {
            at_s: a.at_s,
            waiting: m(a.waiting, b.waiting),
            busy_gpus: m(a.busy_gpus, b.busy_gpus),
            gpus_up: m(a.gpus_up, b.gpus_up),
            machines: m(a.machines, b.machines),
            machines_up: m(a.machines_up, b.machines_up),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Timeline {
    /// Seconds between samples.
    pub step_s: f64,
    pub samples: Vec<Sample>,
    #[serde(skip)]
    step: Span,
    #[serde(skip)]
    next: Time,
}

impl Timeline {
    /// Sampling every `expected / (MAX_SAMPLES / 2)`: a run that lasts `expected` fills half.
    pub fn new(expected: Span) -> Timeline {
        let step = Span::from_micros((expected.as_micros() / (MAX_SAMPLES as u64 / 2)).max(1));
        Timeline {
            step_s: step.as_secs_f64(),
            samples: Vec::with_capacity(MAX_SAMPLES),
            step,
            next: Time::ZERO,
        }
    }

    /// Whether a sample falls due before `now`: the world calls `record` with its state then.
    pub fn due(&self, now: Time) -> bool {
        now >= self.next
    }

    /// Records `state` for every sampling instant up to `now` (the state held since the last
    /// event, so it held at each of them).
    pub fn record(&mut self, now: Time, state: Sample) {
        while now >= self.next {
            if self.samples.len() == MAX_SAMPLES {
                self.halve();
            }
            self.samples.push(Sample {
                at_s: self.next.as_secs_f64(),
                ..state
            });
            self.next = self.next.plus(self.step);
        }
    }

    /// Merges neighbouring samples in pairs and doubles the step.
    fn halve(&mut self) {
        self.samples = self
            .samples
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => Sample::mean(a, b),
                [a] => *a,
                _ => unreachable!("chunks of two"),
            })
            .collect();
        self.step = self.step.saturating_mul(2);
        self.step_s = self.step.as_secs_f64();
        // The next instant stays on the doubled grid: every sample covers one step.
        let step = self.step.as_micros();
        self.next = Time(self.samples.len() as u64 * step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(waiting: f64) -> Sample {
        Sample {
            waiting,
            ..Sample::default()
        }
    }

    #[test]
    fn samples_each_step_and_stays_bounded() {
        let mut timeline = Timeline::new(Span::from_secs(128));
        // One second a step; an event every 0.5 s for 10,000 s.
        for half in 0..20_000u64 {
            let now = Time(half * 500_000);
            if timeline.due(now) {
                timeline.record(now, state(half as f64));
            }
        }
        assert!(timeline.samples.len() <= MAX_SAMPLES);
        assert!(timeline.samples.len() >= MAX_SAMPLES / 2);
        // Every sample sits on the step grid.
        for (i, s) in timeline.samples.iter().enumerate() {
            assert!(
                (s.at_s - i as f64 * timeline.step_s).abs() < 1e-6,
                "{i}: {s:?}"
            );
        }
        // After merging, each sample is the mean over its step: a steady ramp stays a ramp.
        let last = timeline.samples.last().unwrap();
        assert!(last.at_s > 9_000.0 && last.at_s < 10_000.0, "{last:?}");
    }

    #[test]
    fn a_long_gap_repeats_the_state_that_held() {
        let mut timeline = Timeline::new(Span::from_secs(128));
        timeline.record(Time::ZERO, state(3.0));
        timeline.record(Time(5_500_000), state(7.0));
        let waiting: Vec<f64> = timeline.samples.iter().map(|s| s.waiting).collect();
        assert_eq!(waiting, [3.0, 7.0, 7.0, 7.0, 7.0, 7.0]);
    }
}
