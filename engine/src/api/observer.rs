//! Wait and run time histograms. The store keeps no histograms, so the API process watches
//! finished jobs: every period it lists jobs from a frontier (the lowest id not yet seen
//! finished) and observes each job the first time it is seen in a terminal state.
//!
//! Bounded: one tick reads at most `MAX_PAGES` pages. A long queue of old unfinished jobs
//! holds the frontier back, so jobs finishing beyond the window are observed only once those
//! finish; a job purged before it is seen (after `retention`) is never observed. Each API
//! replica observes every job, so aggregate with `max`, not `sum`, across replicas.

use super::exposition::Histogram;
use crate::core::model::JobView;
use crate::core::JobId;
use crate::runtime::SharedStore;
use crate::store::{Reply, Request};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MAX_PAGES: usize = 10;
const WAIT_BOUNDS: &[f64] = &[
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const RUN_BOUNDS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0,
];

#[derive(Clone, Debug)]
pub struct Observed {
    /// Submission to the start of the last attempt, in seconds.
    pub wait: Histogram,
    /// Start to finish of the last attempt, in seconds.
    pub run: Histogram,
    frontier: Option<JobId>,
    seen: BTreeSet<JobId>,
}

impl Default for Observed {
    fn default() -> Self {
        Observed {
            wait: Histogram::new(WAIT_BOUNDS),
            run: Histogram::new(RUN_BOUNDS),
            frontier: None,
            seen: BTreeSet::new(),
        }
    }
}

pub type SharedObserved = Arc<Mutex<Observed>>;

/// Observes finished jobs every `period`, forever.
pub async fn run_observer<S: SharedStore>(
    store: S,
    limit: u32,
    period: Duration,
    observed: SharedObserved,
) {
    loop {
        observe_once(&store, limit, &observed).await;
        tokio::time::sleep(period).await;
    }
}

pub async fn observe_once<S: SharedStore>(store: &S, limit: u32, observed: &SharedObserved) {
    let mut after = observed.lock().ok().and_then(|o| o.frontier);
    let mut contiguous = true;
    for _ in 0..MAX_PAGES {
        let request = Request::ListJobs {
            state: None,
            after,
            limit,
        };
        let Ok(Ok(Reply::Jobs(views))) = store.apply(request).await else {
            return;
        };
        let Ok(mut o) = observed.lock() else { return };
        for view in &views {
            contiguous &= o.note(view);
            if contiguous {
                o.advance(view.id);
            }
        }
        match views.last() {
            Some(last) if views.len() as u32 == limit => after = Some(last.id),
            _ => return,
        }
    }
}

impl Observed {
    /// Observes `view` if it finished and is new; whether it finished.
    fn note(&mut self, view: &JobView) -> bool {
        if !view.state.is_terminal() {
            return false;
        }
        if self.seen.insert(view.id) {
            if let Some(started) = view.started_at {
                self.wait
                    .observe(started.since(view.submitted_at).as_secs_f64());
                if let Some(finished) = view.finished_at {
                    self.run.observe(finished.since(started).as_secs_f64());
                }
            }
        }
        true
    }

    /// Every job up to `id` is finished (or purged): forget them.
    fn advance(&mut self, id: JobId) {
        self.frontier = Some(id);
        self.seen = self.seen.split_off(&JobId(id.0 + 1));
    }
}
