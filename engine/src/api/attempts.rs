//! Each job's attempts, from the journal (`feed` hands every entry here, in order): which
//! machine ran it, when it started and ended, how it ended. `GET /v1/jobs/{id}` shows them, so
//! a job that survived a lost machine tells that story rather than only `attempt: 2`.
//!
//! The journal keeps a failure's class, not its message: the API adds the job's stored error
//! to the last failed attempt. Like the histograms (`observer`), this follows the journal a
//! few milliseconds behind the store, and knows only what the journal still held when this
//! API process started reading it.
//!
//! Bounded: the newest `max_jobs` jobs, and the names of at most `max_jobs` machines.

use crate::core::model::JobError;
use crate::core::{JobId, MachineId, Time, Token};
use crate::store::journal::{JournalEntry, JournalEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// One attempt as the API shows it. Times are µs since the epoch, with RFC 3339 beside them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptView {
    /// 1 for the first. A released attempt is not charged, so the next one has its number.
    pub attempt: u32,
    pub machine: String,
    /// The machine's name, when its registration was in the journal.
    pub machine_name: Option<String>,
    pub started_at: u64,
    pub started_at_utc: String,
    pub ended_at: Option<u64>,
    pub ended_at_utc: Option<String>,
    /// `running`, `succeeded`, `failed`, `released` (a draining machine gave it back), or
    /// `revoked` (the store ended it: see `reason`).
    pub outcome: &'static str,
    /// Why the store revoked it: `expired`, `overtime`, `lost`, `gone` or `cancelled`.
    pub reason: Option<&'static str>,
    /// A failure's class (`error`, `fatal`, `oom`, `disk_full`, `timed_out`).
    pub error_class: Option<String>,
    /// The failure's message: the journal does not keep it, so only the last failed attempt
    /// has one (the job's stored error).
    pub error_message: Option<String>,
    #[serde(skip)]
    token: Token,
}

#[derive(Debug)]
pub struct Attempts {
    jobs: BTreeMap<JobId, Vec<AttemptView>>,
    machine_names: BTreeMap<MachineId, String>,
    max_jobs: usize,
}

pub type SharedAttempts = Arc<Mutex<Attempts>>;

impl Attempts {
    pub fn new(max_jobs: usize) -> Attempts {
        Attempts {
            jobs: BTreeMap::new(),
            machine_names: BTreeMap::new(),
            max_jobs: max_jobs.max(1),
        }
    }

    pub fn shared(max_jobs: usize) -> SharedAttempts {
        Arc::new(Mutex::new(Attempts::new(max_jobs)))
    }

    /// The job's attempts, oldest first; empty when the journal showed none. `error`, the
    /// job's stored error, gives the last failed attempt its message.
    pub fn of(&self, job: JobId, error: Option<&JobError>) -> Vec<AttemptView> {
        let mut attempts = self.jobs.get(&job).cloned().unwrap_or_default();
        let last_failed = attempts.iter_mut().rev().find(|a| a.outcome == "failed");
        if let (Some(attempt), Some(error)) = (last_failed, error) {
            if attempt.error_class.as_deref() == Some(error.class.as_str()) {
                attempt.error_message = Some(error.message.clone());
            }
        }
        attempts
    }

    /// Takes in one journal entry (entries come in id order).
    pub fn observe(&mut self, entry: &JournalEntry) {
        for event in &entry.events {
            self.note(entry.at, event);
        }
    }

    fn note(&mut self, at: Time, event: &JournalEvent) {
        use JournalEvent as E;
        match event {
            E::Registered { machine, name, .. } => self.named(*machine, name),
            E::Leased {
                job,
                machine,
                token,
                attempt,
            } => self.started(*job, *machine, *token, *attempt, at),
            E::Succeeded { job, token } => self.ended(*job, *token, at, "succeeded", |_| {}),
            E::Failed { job, token, class } => self.ended(*job, *token, at, "failed", |a| {
                a.error_class = Some(class.clone())
            }),
            E::Released { job, token } => self.ended(*job, *token, at, "released", |_| {}),
            E::Revoked { job, token, reason } => {
                let reason = reason.as_str();
                self.ended(*job, *token, at, "revoked", |a| a.reason = Some(reason))
            }
            // Events that start or end no attempt.
            E::Submitted { .. }
            | E::Progress { .. }
            | E::Result { .. }
            | E::Requeued { .. }
            | E::Dead { .. }
            | E::TimedOut { .. }
            | E::Unworkable { .. }
            | E::Cancelled { .. }
            | E::Lost { .. }
            | E::Deregistered { .. } => {}
        }
    }

    fn named(&mut self, machine: MachineId, name: &str) {
        self.machine_names.insert(machine, name.to_owned());
        if self.machine_names.len() > self.max_jobs {
            // Ids grow with time: forgetting the smallest forgets the oldest machine.
            self.machine_names.pop_first();
        }
    }

    fn started(&mut self, job: JobId, machine: MachineId, token: Token, attempt: u32, at: Time) {
        let view = AttemptView {
            attempt,
            machine: machine.to_string(),
            machine_name: self.machine_names.get(&machine).cloned(),
            started_at: at.0,
            started_at_utc: at.rfc3339(),
            ended_at: None,
            ended_at_utc: None,
            outcome: "running",
            reason: None,
            error_class: None,
            error_message: None,
            token,
        };
        self.jobs.entry(job).or_default().push(view);
        if self.jobs.len() > self.max_jobs {
            // Job ids grow with time too.
            self.jobs.pop_first();
        }
    }

    fn ended(
        &mut self,
        job: JobId,
        token: Token,
        at: Time,
        outcome: &'static str,
        detail: impl FnOnce(&mut AttemptView),
    ) {
        let Some(attempt) = self
            .jobs
            .get_mut(&job)
            .and_then(|attempts| attempts.iter_mut().rev().find(|a| a.token == token))
        else {
            return;
        };
        attempt.ended_at = Some(at.0);
        attempt.ended_at_utc = Some(at.rfc3339());
        attempt.outcome = outcome;
        detail(attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::journal::RevokeReason;

    fn leased(job: u64, machine: u64, token: u64, attempt: u32) -> JournalEvent {
        JournalEvent::Leased {
            job: JobId(job),
            machine: MachineId(machine),
            token: Token(token),
            attempt,
        }
    }

    #[test]
    fn a_job_that_survived_a_lost_machine_shows_both_attempts() {
        let mut attempts = Attempts::new(10);
        let register = JournalEvent::Registered {
            machine: MachineId(7),
            name: "spot-7".into(),
            pool: "spot".into(),
        };
        attempts.observe(&JournalEntry::at_ms(1, vec![register]));
        attempts.observe(&JournalEntry::at_ms(2, vec![leased(1, 7, 1, 1)]));
        let revoked = JournalEvent::Revoked {
            job: JobId(1),
            token: Token(1),
            reason: RevokeReason::Lost,
        };
        attempts.observe(&JournalEntry::at_ms(
            5,
            vec![
                JournalEvent::Lost {
                    machine: MachineId(7),
                },
                revoked,
            ],
        ));
        attempts.observe(&JournalEntry::at_ms(6, vec![leased(1, 8, 2, 2)]));
        let failed = JournalEvent::Failed {
            job: JobId(1),
            token: Token(2),
            class: "oom".into(),
        };
        attempts.observe(&JournalEntry::at_ms(9, vec![failed]));
        let seen = attempts.of(JobId(1), None);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].machine_name.as_deref(), Some("spot-7"));
        assert_eq!((seen[0].outcome, seen[0].reason), ("revoked", Some("lost")));
        assert_eq!((seen[0].started_at, seen[0].ended_at), (2000, Some(5000)));
        assert_eq!(
            seen[0].ended_at_utc.as_deref(),
            Some("1970-01-01T00:00:00.005Z")
        );
        assert_eq!(
            (seen[1].outcome, seen[1].error_class.as_deref()),
            ("failed", Some("oom"))
        );
        assert_eq!(
            seen[1].machine_name, None,
            "machine 8's registration was never seen"
        );
        assert!(attempts.of(JobId(2), None).is_empty());
    }

    #[test]
    fn bounded_to_the_newest_jobs() {
        let mut attempts = Attempts::new(2);
        for job in 1..=3 {
            attempts.observe(&JournalEntry::at_ms(job, vec![leased(job, 1, job, 1)]));
        }
        assert!(attempts.of(JobId(1), None).is_empty());
        assert_eq!(attempts.of(JobId(3), None).len(), 1);
    }
}
