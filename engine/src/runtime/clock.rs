//! A process's own monotonic clock in the core's units. The agent and reaper time only their
//! own timers with it (request timeouts, heartbeat pacing); deadlines that matter to other
//! machines are on the store's clock.

use crate::core::Time;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    start: Instant,
}

impl MonoClock {
    pub fn start() -> MonoClock {
        MonoClock {
            start: Instant::now(),
        }
    }

    /// Microseconds since this clock started.
    pub fn now(&self) -> Time {
        Time(self.start.elapsed().as_micros() as u64)
    }

    /// The instant of `time` on this clock.
    pub fn instant(&self, time: Time) -> Instant {
        // Far-future times (no timer) are capped at a day so the addition cannot overflow.
        let cap = Duration::from_secs(86_400);
        self.start + Duration::from_micros(time.0).min(self.start.elapsed() + cap)
    }
}
