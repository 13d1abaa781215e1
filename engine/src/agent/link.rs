//! The agent's link to the store: one request in flight at a time, a timeout on each, retries
//! with exponential backoff and jitter, and a circuit breaker in front.
//!
//! A retried request is sent again unchanged under a new id; a late reply to the old id is
//! dropped. That is safe because every store request is idempotent.

use crate::core::backoff::{delay, mix64};
use crate::core::breaker::{Breaker, BreakerState};
use crate::core::{EngineConfig, Time};
use crate::store::Request;

#[derive(Clone, Debug)]
enum Status {
    Sent {
        id: u64,
        deadline: Time,
    },
    /// Failed; resend at `at` (the breaker may hold it longer).
    Retry {
        at: Time,
    },
}

#[derive(Clone, Debug)]
struct Current {
    request: Request,
    status: Status,
}

#[derive(Clone, Debug)]
pub struct Link {
    breaker: Breaker,
    current: Option<Current>,
    next_id: u64,
    failures_in_row: u32,
    seed: u64,
    pub failures: u64,
    /// After a fault (an error that will repeat), no request goes out before this.
    quiet_until: Time,
    /// Faults in a row: the quiet period doubles with each.
    faults_in_row: u32,
}

/// What the link wants sent now.
pub struct Send {
    pub id: u64,
    pub request: Request,
}

impl Link {
    pub fn new(config: &EngineConfig, seed: u64) -> Link {
        Link {
            breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown),
            current: None,
            next_id: 1,
            failures_in_row: 0,
            seed,
            failures: 0,
            quiet_until: Time::ZERO,
            faults_in_row: 0,
        }
    }

    pub fn breaker(&self) -> BreakerState {
        self.breaker.state()
    }

    pub fn breaker_opened(&self) -> u64 {
        self.breaker.opened
    }

    /// No request is in flight or waiting to be retried.
    pub fn is_free(&self) -> bool {
        self.current.is_none()
    }

    /// The request in flight or waiting for its retry.
    pub fn current(&self) -> Option<&Request> {
        self.current.as_ref().map(|c| &c.request)
    }

    /// Starts a new request. The link must be free.
    pub fn start(&mut self, request: Request) {
        assert!(self.current.is_none(), "one request at a time");
        self.current = Some(Current {
            request,
            status: Status::Retry {
                at: self.quiet_until,
            },
        });
    }

    /// The request to put on the wire now, if one is due and the breaker lets it through.
    pub fn poll_send(&mut self, now: Time, config: &EngineConfig) -> Option<Send> {
        let current = self.current.as_mut()?;
        match current.status {
            Status::Retry { at } if now >= at && self.breaker.allow(now) => {
                let id = self.next_id;
                self.next_id += 1;
                current.status = Status::Sent {
                    id,
                    deadline: now.plus(config.request_timeout),
                };
                Some(Send {
                    id,
                    request: current.request.clone(),
                })
            }
            _ => None,
        }
    }

    /// A reply arrived. Returns the request it answers, or `None` for a late or unknown id.
    pub fn on_reply(&mut self, id: u64) -> Option<Request> {
        match &self.current {
            Some(Current {
                status: Status::Sent { id: sent, .. },
                ..
            }) if *sent == id => {
                self.breaker.on_success();
                self.failures_in_row = 0;
                self.faults_in_row = 0;
                self.current.take().map(|c| c.request)
            }
            _ => None,
        }
    }

    /// The store answered request `id` with an error that will repeat (a script or decode
    /// error): the request is not resent as if its reply were lost. Returns it, and keeps the
    /// next request back for a backoff that grows while faults continue. The store was
    /// reached, so the breaker does not count it.
    pub fn on_fault(&mut self, id: u64, now: Time, config: &EngineConfig) -> Option<Request> {
        match &self.current {
            Some(Current {
                status: Status::Sent { id: sent, .. },
                ..
            }) if *sent == id => {
                self.faults_in_row += 1;
                let random = mix64(self.seed ^ u64::from(self.faults_in_row) ^ 0xfa17);
                let wait = delay(
                    config.retry_max,
                    config.breaker_cooldown.max(config.retry_max),
                    self.faults_in_row,
                    random,
                );
                self.quiet_until = now.plus(wait);
                self.current.take().map(|c| c.request)
            }
            _ => None,
        }
    }

    /// Gives up on the current request (its reply no longer matters).
    pub fn abandon(&mut self) -> Option<Request> {
        self.current.take().map(|c| c.request)
    }

    /// Times out a request whose reply is overdue; it will be retried after a backoff.
    pub fn on_timeout(&mut self, now: Time, config: &EngineConfig) {
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if let Status::Sent { deadline, .. } = current.status {
            if now >= deadline {
                self.failures += 1;
                self.failures_in_row += 1;
                self.breaker.on_failure(now);
                let random = mix64(self.seed ^ self.failures);
                let wait = delay(
                    config.retry_base,
                    config.retry_max,
                    self.failures_in_row,
                    random,
                );
                current.status = Status::Retry { at: now.plus(wait) };
            }
        }
    }

    /// When the link next needs attention.
    pub fn next_timeout(&self) -> Option<Time> {
        let current = self.current.as_ref()?;
        Some(match current.status {
            Status::Sent { deadline, .. } => deadline,
            Status::Retry { at } => at.max(self.breaker.reopens_at().unwrap_or(Time::ZERO)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Span;
    use crate::store::Request;

    #[test]
    fn times_out_backs_off_opens_and_recovers() {
        let config = EngineConfig {
            request_timeout: Span::from_secs(1),
            retry_base: Span::from_millis(100),
            retry_max: Span::from_millis(100),
            breaker_failures: 2,
            breaker_cooldown: Span::from_secs(10),
            ..EngineConfig::default()
        };
        let mut link = Link::new(&config, 7);
        link.start(Request::Reap { max: 1 });
        let first = link.poll_send(Time(0), &config).unwrap();
        assert!(link.poll_send(Time(0), &config).is_none(), "one in flight");
        link.on_timeout(Time(1_000_000), &config);
        let retry_at = link.next_timeout().unwrap();
        assert!(retry_at > Time(1_000_000) && retry_at <= Time(1_100_000));
        let second = link.poll_send(retry_at, &config).unwrap();
        assert_ne!(first.id, second.id);
        assert_eq!(
            link.on_reply(first.id),
            None,
            "a late reply to the old id is dropped"
        );
        link.on_timeout(retry_at.plus(Span::from_secs(1)), &config);
        assert!(matches!(link.breaker(), BreakerState::Open { .. }));
        let reopen = link.next_timeout().unwrap();
        assert!(reopen >= retry_at.plus(Span::from_secs(11)));
        let probe = link.poll_send(reopen, &config).unwrap();
        assert_eq!(link.on_reply(probe.id), Some(Request::Reap { max: 1 }));
        assert!(link.is_free());
        assert_eq!(link.breaker(), BreakerState::Closed { failures: 0 });
    }
}
