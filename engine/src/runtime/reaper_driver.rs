//! Runs the pure `Reaper` under tokio.
//!
//! No leader election: a reap pass is one atomic store request that only acts on what is
//! overdue at the store's clock, and applying it twice finds nothing left to do, so any number
//! of reapers (one per API replica plus `drover reaper`) may run at once. More instances cost
//! a few redundant round trips per period, nothing else.

use super::clock::MonoClock;
use super::store::SharedStore;
use crate::core::EngineConfig;
use crate::reaper::Reaper;
use crate::store::{ReapReport, Reply};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the reaper has done, shared with `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaperTotals {
    pub passes: u64,
    pub failed_passes: u64,
    pub report: ReapReport,
}

pub type SharedReaperTotals = Arc<Mutex<ReaperTotals>>;

/// Reaps until `shutdown` resolves.
pub async fn run_reaper<S: SharedStore>(
    store: S,
    config: Arc<EngineConfig>,
    totals: SharedReaperTotals,
    shutdown: impl Future<Output = ()>,
) {
    let clock = MonoClock::start();
    let mut reaper = Reaper::new(config.clone(), std::process::id() as u64, clock.now());
    let timeout = Duration::from_micros(config.request_timeout.as_micros());
    tokio::pin!(shutdown);
    loop {
        let wake = clock.instant(reaper.next_timeout());
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        reaper.on_timeout(clock.now());
        // A pass that runs more at once (`more`) is sent again from `handle_reply`.
        while let Some((id, request)) = reaper.poll_send() {
            let result = tokio::time::timeout(timeout, store.apply(request)).await;
            let Ok(Ok(result)) = result else {
                // No reply: the link times the request out and retries it after a backoff.
                count(&totals, None);
                tracing::warn!("reap pass got no reply from the store");
                break;
            };
            if let Ok(Reply::Reaped(report)) = &result {
                log_pass(report);
                count(&totals, Some(report));
            }
            reaper.handle_reply(clock.now(), id, result);
        }
    }
}

fn count(totals: &SharedReaperTotals, pass: Option<&ReapReport>) {
    let Ok(mut totals) = totals.lock() else {
        return;
    };
    match pass {
        None => totals.failed_passes += 1,
        Some(pass) => {
            totals.passes += 1;
            totals.report.add(pass);
        }
    }
}

fn log_pass(report: &ReapReport) {
    let quiet = ReapReport {
        more: report.more,
        ..ReapReport::default()
    };
    if *report != quiet {
        tracing::info!(
            promoted = report.promoted,
            machines_lost = report.machines_lost,
            requeued = report.requeued,
            dead = report.dead,
            timed_out = report.timed_out,
            unworkable = report.unworkable,
            purged = report.purged,
            "reap pass"
        );
    }
}
