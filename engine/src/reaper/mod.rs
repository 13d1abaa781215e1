//! The reaper as a pure state machine: every `reaper_period` it sends one bounded `Reap`
//! pass, and another at once while the store reports more to do. Expired leases go back to
//! their queues (attempt + 1, with backoff) or to `dead`; the store does the work atomically,
//! the reaper only paces it and rides out store failures through its link.

use crate::agent::link::Link;
use crate::core::{EngineConfig, Time};
use crate::store::{ReapReport, Refusal, Reply, Request};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Reaper {
    config: Arc<EngineConfig>,
    link: Link,
    next_pass: Time,
    outgoing: Option<(u64, Request)>,
    /// Totals over every pass, for metrics.
    pub totals: ReapReport,
}

impl Reaper {
    pub fn new(config: Arc<EngineConfig>, seed: u64, now: Time) -> Reaper {
        let link = Link::new(&config, seed);
        let next_pass = now.plus(config.reaper_period);
        Reaper {
            config,
            link,
            next_pass,
            outgoing: None,
            totals: ReapReport::default(),
        }
    }

    /// The request to send, if one is due.
    pub fn poll_send(&mut self) -> Option<(u64, Request)> {
        self.outgoing.take()
    }

    pub fn next_timeout(&self) -> Time {
        self.link.next_timeout().unwrap_or(self.next_pass)
    }

    pub fn on_timeout(&mut self, now: Time) {
        self.link.on_timeout(now, &self.config);
        if self.link.is_free() && now >= self.next_pass {
            self.link.start(Request::Reap {
                max: self.config.reap_batch,
            });
        }
        self.pump(now);
    }

    pub fn handle_reply(&mut self, now: Time, id: u64, result: Result<Reply, Refusal>) {
        if self.link.on_reply(id).is_none() {
            return;
        }
        self.next_pass = now.plus(self.config.reaper_period);
        if let Ok(Reply::Reaped(report)) = result {
            self.totals.add(&report);
            if report.more {
                self.next_pass = now;
                self.link.start(Request::Reap {
                    max: self.config.reap_batch,
                });
            }
        }
        self.pump(now);
    }

    fn pump(&mut self, now: Time) {
        if let Some(send) = self.link.poll_send(now, &self.config) {
            self.outgoing = Some((send.id, send.request));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Span;

    #[test]
    fn runs_every_period_and_again_at_once_when_more_is_left() {
        let config = Arc::new(EngineConfig {
            reaper_period: Span::from_secs(5),
            ..EngineConfig::default()
        });
        let mut reaper = Reaper::new(config, 1, Time(0));
        assert_eq!(reaper.next_timeout(), Time(5_000_000));
        reaper.on_timeout(Time(5_000_000));
        let (id, request) = reaper.poll_send().expect("a pass is due");
        assert!(matches!(request, Request::Reap { .. }));
        let more = ReapReport {
            requeued: 3,
            more: true,
            ..ReapReport::default()
        };
        reaper.handle_reply(Time(5_000_000), id, Ok(Reply::Reaped(more)));
        let (id, _) = reaper.poll_send().expect("more to do: again at once");
        reaper.handle_reply(
            Time(5_000_000),
            id,
            Ok(Reply::Reaped(ReapReport::default())),
        );
        assert!(reaper.poll_send().is_none());
        assert_eq!(reaper.next_timeout(), Time(10_000_000));
        assert_eq!(reaper.totals.requeued, 3);
    }
}
