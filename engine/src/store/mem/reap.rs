//! The reaper's pass: release due retries, declare silent machines lost, revoke expired and
//! over-time leases, judge unworkable jobs, forget old finished jobs. Bounded per pass.

use super::claim::allows;
use super::views::spend;
use super::{MachineState, MemStore};
use crate::core::class::first_unmet;
use crate::core::lifecycle::{AttemptEnd, Next};
use crate::core::{ClassId, JobError, JobId, JobState, StateName};
use crate::store::journal::RevokeReason;
use crate::store::request::ReapReport;

impl MemStore {
    pub(super) fn reap(&mut self, max: u32) -> ReapReport {
        let mut report = ReapReport::default();
        let mut budget = max;
        let max_age = self.config.journal.max_age.as_micros();
        if let (Some(journal), Some(oldest)) = (&mut self.journal, self.now.0.checked_sub(max_age))
        {
            journal.trim_before(crate::core::Time(oldest));
        }
        report.promoted = self.promote_due(budget);
        budget -= report.promoted;
        self.reap_machines(&mut budget, &mut report);
        self.reap_leases(&mut budget, &mut report);
        self.judge_unworkable(&mut budget, &mut report);
        self.purge_finished(&mut budget, &mut report);
        self.forget_departed(&mut budget, &mut report);
        report.more = budget == 0;
        report
    }

    /// Moves due delayed jobs to their queues; returns how many.
    pub(super) fn promote_due(&mut self, max: u32) -> u32 {
        let mut promoted = 0;
        while promoted < max {
            match self.delayed.first() {
                Some(&(until, job)) if until <= self.now => {
                    self.delayed.pop_first();
                    self.counts.delayed -= 1;
                    self.enqueue(job);
                    promoted += 1;
                }
                _ => break,
            }
        }
        promoted
    }

    fn reap_machines(&mut self, budget: &mut u32, report: &mut ReapReport) {
        while *budget > 0 {
            let Some(&(expires, machine)) = self.machine_expiry.first() else {
                break;
            };
            if expires > self.now {
                break;
            }
            let revoked = self.retire(machine, MachineState::Lost);
            report.machines_lost += 1;
            report.requeued += revoked.requeued;
            report.dead += revoked.dead;
            *budget = budget.saturating_sub(1 + revoked.requeued + revoked.dead);
        }
    }

    fn reap_leases(&mut self, budget: &mut u32, report: &mut ReapReport) {
        while *budget > 0 {
            let Some(&(expiry, job)) = self.lease_expiry.first() else {
                break;
            };
            if expiry > self.now {
                break;
            }
            self.lease_expiry.pop_first();
            // Entries are moved lazily: one may be left from an ended lease, or stand earlier
            // than a lease that was renewed since. Only a live lease at its expiry is reaped.
            let Some(record) = self.jobs.get(&job) else {
                continue;
            };
            if !matches!(record.state, JobState::Leased { .. }) {
                continue;
            }
            if record.expiry != expiry {
                if record.expiry > expiry {
                    self.lease_expiry.insert((record.expiry, job));
                }
                continue;
            }
            let (end, reason) = if self.now >= record.attempt_deadline {
                (AttemptEnd::OverTime, RevokeReason::Overtime)
            } else {
                (AttemptEnd::Abandoned, RevokeReason::Expired)
            };
            match self.revoke(job, end, reason) {
                Next::Retry { .. } => report.requeued += 1,
                Next::Terminal(StateName::TimedOut) => report.timed_out += 1,
                Next::Terminal(_) => report.dead += 1,
            }
            *budget -= 1;
        }
    }

    /// A queued job is unworkable once it has waited `unworkable_after` and no machine seen
    /// within that window could ever run its class. Nothing is judged while no machine at all
    /// was seen in the window: an empty fleet is an outage, not a verdict on the jobs.
    fn judge_unworkable(&mut self, budget: &mut u32, report: &mut ReapReport) {
        let window = self.config.unworkable_after;
        let Some(since) = self.now.0.checked_sub(window.as_micros()) else {
            return;
        };
        let seen = |last: Option<crate::core::Time>| last.is_some_and(|t| t.0 >= since);
        if !self.profiles.iter().any(|p| seen(p.last_seen)) {
            return;
        }
        let classes: Vec<ClassId> = self.nonempty.iter().copied().collect();
        for class in classes {
            if *budget == 0 {
                return;
            }
            let workable = (0..self.profiles.len()).any(|i| {
                seen(self.profiles[i].last_seen)
                    && allows(
                        &mut self.classes,
                        &self.profiles,
                        &self.config,
                        class,
                        crate::core::ProfileId(i as u32),
                    )
            });
            if workable {
                continue;
            }
            let victims: Vec<JobId> = self.classes[class.0 as usize]
                .queue
                .values()
                .filter(|(_, submitted)| submitted.0 <= since)
                .map(|&(job, _)| job)
                .take(*budget as usize)
                .collect();
            let seen_profiles: Vec<&crate::core::model::Profile> = self
                .profiles
                .iter()
                .filter(|p| seen(p.last_seen))
                .map(|p| &p.profile)
                .collect();
            let req = &self.classes[class.0 as usize].req;
            let unmet = first_unmet(req, &seen_profiles, &self.config);
            let error: Box<str> = JobError::unworkable(window, &unmet).to_stored().into();
            for job in victims {
                self.unqueue(job);
                if let Some(record) = self.jobs.get_mut(&job) {
                    record.error = Some(error.clone());
                }
                self.finish(job, StateName::Unworkable, None);
                report.unworkable += 1;
                *budget -= 1;
            }
        }
    }

    /// Machines that left over `retention` ago are forgotten: endless churn keeps the registry
    /// the size of the fleet. Their cost stays in the stats' spend.
    fn forget_departed(&mut self, budget: &mut u32, report: &mut ReapReport) {
        while *budget > 0 {
            let Some(&(left, machine)) = self.departed.first() else {
                break;
            };
            if left.plus(self.config.retention) > self.now {
                break;
            }
            self.departed.pop_first();
            let record = self
                .machines
                .remove(&machine)
                .expect("a departed machine is known");
            self.machine_names.remove(&record.spec.name);
            self.spend_forgotten += spend(&record);
            report.forgotten += 1;
            *budget -= 1;
        }
    }

    fn purge_finished(&mut self, budget: &mut u32, report: &mut ReapReport) {
        let retention = self.config.retention;
        while *budget > 0 {
            let Some(&(finished_at, job)) = self.finished.front() else {
                break;
            };
            if finished_at.plus(retention) > self.now {
                break;
            }
            self.finished.pop_front();
            if let Some(record) = self.jobs.remove(&job) {
                debug_assert!(!matches!(
                    record.state,
                    JobState::Queued | JobState::Delayed { .. } | JobState::Leased { .. }
                ));
                if let Some(key) = &record.spec.idempotency_key {
                    self.idempotency.remove(key);
                }
                self.results.remove(&job);
            }
            self.counts.finished_retained -= 1;
            report.purged += 1;
            *budget -= 1;
        }
    }
}
