//! What a run looked like over time, for charts: jobs waiting, GPUs busy and up, machines
//! alive. The world's state is read 8 times a step of simulated time and the readings are
//! averaged into one sample a step, at most `MAX_SAMPLES` samples. When the run outlasts them,
//! neighbouring samples are averaged in pairs and the step doubles, so memory stays fixed
//! however long the run (never a point per event). Reading only looks at the world: it draws
//! no random number and records nothing in the trace.

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
    /// Each the mean of `READINGS` readings evenly spaced over its step, at the step's start.
    pub samples: Vec<Sample>,
    #[serde(skip)]
    step: Span,
    /// The next reading, and the sum of this step's readings so far.
    #[serde(skip)]
    next: Time,
    #[serde(skip)]
    pending: (Sample, u32),
}

/// Readings a sample averages: one reading a step would catch the queue at random instants.
const READINGS: u32 = 8;

impl Timeline {
    /// Sampling every `expected / (MAX_SAMPLES / 2)`: a run that lasts `expected` fills half.
    pub fn new(expected: Span) -> Timeline {
        // A whole number of microseconds between readings.
        let gap = (expected.as_micros() / (MAX_SAMPLES as u64 / 2) / u64::from(READINGS)).max(1);
        let step = Span::from_micros(gap * u64::from(READINGS));
        Timeline {
            step_s: step.as_secs_f64(),
            samples: Vec::with_capacity(MAX_SAMPLES),
            step,
            next: Time::ZERO,
            pending: (Sample::default(), 0),
        }
    }

    /// Whether a reading falls due before `now`: the world calls `record` with its state then.
    pub fn due(&self, now: Time) -> bool {
        now >= self.next
    }

    /// Takes `state` as the reading at every reading instant up to `now` (the state held
    /// since the last event, so it held at each of them).
    pub fn record(&mut self, now: Time, state: Sample) {
        while now >= self.next {
            let (sum, readings) = &mut self.pending;
            sum.waiting += state.waiting;
            sum.busy_gpus += state.busy_gpus;
            sum.gpus_up += state.gpus_up;
            sum.machines += state.machines;
            sum.machines_up += state.machines_up;
            *readings += 1;
            if *readings == READINGS {
                self.close_step();
            }
            self.next = self.next.plus(self.reading_gap());
        }
    }

    fn reading_gap(&self) -> Span {
        Span::from_micros(self.step.as_micros() / u64::from(READINGS))
    }

    /// The step's readings become one sample; a full timeline then halves.
    fn close_step(&mut self) {
        let (sum, n) = std::mem::take(&mut self.pending);
        let n = f64::from(n);
        self.samples.push(Sample {
            at_s: self.samples.len() as f64 * self.step_s,
            waiting: sum.waiting / n,
            busy_gpus: sum.busy_gpus / n,
            gpus_up: sum.gpus_up / n,
            machines: sum.machines / n,
            machines_up: sum.machines_up / n,
        });
        if self.samples.len() == MAX_SAMPLES {
            self.halve();
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
        // The next reading starts the next step of the doubled grid (the step stays a
        // multiple of READINGS microseconds, so readings stay evenly spaced).
        let step = self.step.as_micros();
        self.next = Time(self.samples.len() as u64 * step - self.reading_gap().as_micros());
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
        // One second a step; an event every 0.05 s for 10,000 s, the queue the time in s.
        for tick in 0..200_000u64 {
            let now = Time(tick * 50_000);
            if timeline.due(now) {
                timeline.record(now, state(now.as_secs_f64()));
            }
        }
        assert!(timeline.samples.len() <= MAX_SAMPLES);
        assert!(timeline.samples.len() >= MAX_SAMPLES / 2);
        for (i, s) in timeline.samples.iter().enumerate() {
            // On the step grid, each the mean over its step of a ramp: its middle, less the
            // lag of the state held since the last event (under 0.05 s).
            let start = i as f64 * timeline.step_s;
            assert!((s.at_s - start).abs() < 1e-6, "{i}: {s:?}");
            let middle = start + timeline.step_s / 2.0;
            assert!(
                (s.waiting - middle).abs() < timeline.step_s * 0.1,
                "{i}: {s:?}"
            );
        }
        let last = timeline.samples.last().unwrap();
        assert!(last.at_s > 9_000.0 && last.at_s < 10_000.0, "{last:?}");
    }

    #[test]
    fn a_sample_is_the_mean_of_its_readings() {
        let mut timeline = Timeline::new(Span::from_secs(128));
        // One second a step, a reading every 1/8 s: 3 for the first half, 7 after.
        timeline.record(Time::ZERO, state(3.0));
        timeline.record(Time(375_000), state(3.0));
        timeline.record(Time(3_000_000), state(7.0));
        let waiting: Vec<f64> = timeline.samples.iter().map(|s| s.waiting).collect();
        assert_eq!(waiting, [5.0, 7.0, 7.0]);
    }
}
