//! Wait and run time histograms per class, and events by kind, computed exactly from the
//! journal (`feed` reads it and hands every entry here, in order).
//!
//! - wait: submission to the start of the job's first attempt, observed when it starts;
//! - run: start to end of the attempt that ended the job (success, a failure that made it
//!   dead, its timeout), observed when the job ends; a job whose attempt the store revoked
//!   before it ended (lost machine, cancelled) has no run.
//!
//! Every API replica reads the same journal from its oldest entry, so replicas started while
//! it held the same entries show the same figures: aggregate with `max` across replicas (not
//! `sum`), or scrape one. A job submitted before the oldest entry the API read has no wait.
//!
//! Bounded: at most `max_open` jobs are tracked between submission and end (the engine's
//! `max_jobs`); beyond that the oldest is forgotten, which can only happen when the journal
//! was trimmed under a reader that fell behind.

use super::exposition::Histogram;
use crate::core::{JobId, Time};
use crate::store::journal::{EntryId, JournalEntry, JournalEvent};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const WAIT_BOUNDS: &[f64] = &[
    0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const RUN_BOUNDS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0,
];

#[derive(Clone, Debug)]
pub struct Observed {
    /// Submission to first start, by class.
    pub wait: BTreeMap<u32, Histogram>,
    /// Start to end of the attempt that ended the job, by class.
    pub run: BTreeMap<u32, Histogram>,
    /// Journal events read, by event name.
    pub events: BTreeMap<&'static str, u64>,
    /// The newest entry read.
    pub last: Option<EntryId>,
    open: BTreeMap<JobId, OpenJob>,
    max_open: usize,
}

/// A job between its submission and its end, as far as the histograms need it.
#[derive(Clone, Copy, Debug)]
struct OpenJob {
    class: u32,
    submitted: Time,
    waited: bool,
    /// The start of the attempt running now, if one is.
    running_since: Option<Time>,
}

pub type SharedObserved = Arc<Mutex<Observed>>;

impl Observed {
    pub fn new(max_open: usize) -> Observed {
        Observed {
            wait: BTreeMap::new(),
            run: BTreeMap::new(),
            events: BTreeMap::new(),
            last: None,
            open: BTreeMap::new(),
            max_open: max_open.max(1),
        }
    }

    pub fn shared(max_open: usize) -> SharedObserved {
        Arc::new(Mutex::new(Observed::new(max_open)))
    }

    /// Takes in one journal entry (entries come in id order).
    pub fn observe(&mut self, entry: &JournalEntry) {
        for event in &entry.events {
            *self.events.entry(event.name()).or_default() += 1;
            self.note(entry.at, event);
        }
        self.last = Some(entry.id);
    }

    /// Jobs tracked between submission and end.
    pub fn open_jobs(&self) -> usize {
        self.open.len()
    }

    fn note(&mut self, at: Time, event: &JournalEvent) {
        use JournalEvent as E;
        if let E::Submitted { job, class, .. } = event {
            self.submitted(*job, *class, at);
        } else if let E::Leased { job, .. } = event {
            self.started(*job, at);
        } else if let E::Requeued { job, .. } | E::Released { job, .. } | E::Revoked { job, .. } =
            event
        {
            if let Some(open) = self.open.get_mut(job) {
                open.running_since = None;
            }
        } else if let (Some(job), Some(_)) = (event.job(), event.terminal()) {
            self.ended(job, at);
        }
    }

    fn submitted(&mut self, job: JobId, class: u32, at: Time) {
        let open = OpenJob {
            class,
            submitted: at,
            waited: false,
            running_since: None,
        };
        self.open.insert(job, open);
        if self.open.len() > self.max_open {
            self.open.pop_first();
        }
    }

    fn started(&mut self, job: JobId, at: Time) {
        let Some(open) = self.open.get_mut(&job) else {
            return;
        };
        open.running_since = Some(at);
        if !open.waited {
            open.waited = true;
            let wait = at.since(open.submitted).as_secs_f64();
            histogram(&mut self.wait, open.class, WAIT_BOUNDS).observe(wait);
        }
    }

    fn ended(&mut self, job: JobId, at: Time) {
        let Some(open) = self.open.remove(&job) else {
            return;
        };
        if let Some(since) = open.running_since {
            let run = at.since(since).as_secs_f64();
            histogram(&mut self.run, open.class, RUN_BOUNDS).observe(run);
        }
    }
}

fn histogram<'a>(
    by_class: &'a mut BTreeMap<u32, Histogram>,
    class: u32,
    bounds: &[f64],
) -> &'a mut Histogram {
    by_class
        .entry(class)
        .or_insert_with(|| Histogram::new(bounds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{MachineId, Requirements, Token};
    use crate::store::journal::RevokeReason;

    fn submitted(job: u64, class: u32) -> JournalEvent {
        JournalEvent::Submitted {
            job: JobId(job),
            priority: 0,
            class,
            requirements: Arc::new(Requirements::default()),
        }
    }

    fn leased(job: u64, token: u64) -> JournalEvent {
        JournalEvent::Leased {
            job: JobId(job),
            machine: MachineId(1),
            token: Token(token),
            attempt: 1,
        }
    }

    #[test]
    fn wait_is_to_the_first_start_and_run_is_the_last_attempt() {
        let mut o = Observed::new(10);
        o.observe(&JournalEntry::at_ms(
            1_000,
            vec![submitted(1, 7), submitted(2, 8)],
        ));
        o.observe(&JournalEntry::at_ms(3_000, vec![leased(1, 1)]));
        // The first attempt's machine is lost; the retry starts 5 s later and runs 4 s.
        let revoked = JournalEvent::Revoked {
            job: JobId(1),
            token: Token(1),
            reason: RevokeReason::Lost,
        };
        let requeued = JournalEvent::Requeued {
            job: JobId(1),
            until: None,
        };
        o.observe(&JournalEntry::at_ms(4_000, vec![revoked, requeued]));
        o.observe(&JournalEntry::at_ms(9_000, vec![leased(1, 2)]));
        let done = JournalEvent::Succeeded {
            job: JobId(1),
            token: Token(2),
        };
        o.observe(&JournalEntry::at_ms(13_000, vec![done]));
        // Job 2 is cancelled while queued: a wait never observed, no run.
        o.observe(&JournalEntry::at_ms(
            14_000,
            vec![JournalEvent::Cancelled { job: JobId(2) }],
        ));
        assert_eq!(o.wait[&7].count(), 1, "one wait, at the first start");
        assert_eq!(o.wait[&7].sum(), 2.0);
        assert_eq!(o.run[&7].sum(), 4.0, "the attempt that ended the job");
        assert!(!o.wait.contains_key(&8) && !o.run.contains_key(&8));
        assert_eq!(o.events["leased"], 2);
        assert_eq!(o.open_jobs(), 0);
        assert_eq!(o.last, Some(EntryId { ms: 14_000, seq: 0 }));
    }

    #[test]
    fn jobs_submitted_before_the_journal_read_are_not_observed_and_open_is_bounded() {
        let mut o = Observed::new(2);
        o.observe(&JournalEntry::at_ms(1, vec![leased(5, 1)]));
        assert!(o.wait.is_empty());
        o.observe(&JournalEntry::at_ms(
            2,
            vec![submitted(1, 0), submitted(2, 0), submitted(3, 0)],
        ));
        assert_eq!(o.open_jobs(), 2, "the oldest is forgotten beyond max_open");
    }
}
