//! The invariant checker. It reads a job history event by event and keeps only what the
//! invariants need: a record per live job and one bit per finished job, so its memory stays
//! flat in the number of finished jobs.
//!
//! Invariants:
//! - every job is submitted once and ends in at most one terminal state, with no lifecycle
//!   event after it;
//! - never two live leases on one job; lease tokens only grow;
//! - an outcome is recorded only by the job's live lease (no stale token wins);
//! - no machine runs more GPUs' worth of attempts than it has;
//! - at the end, every job is terminal or still held by the store in a live state (no job lost);
//! - liveness: jobs still live long after the last fault healed are reported.

use super::history::{HistoryEvent, LeaseEnd};
use crate::core::{JobId, MachineId, StateName, Time, Token};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt;

/// Violations kept in full; beyond this only the count grows.
pub const MAX_KEPT_VIOLATIONS: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    SubmittedOnce,
    UnknownJob,
    OneTerminalState,
    OneLiveLease,
    TokensGrow,
    NoStaleOutcome,
    GpusNotOversubscribed,
    NoJobLost,
    Liveness,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    pub at_us: u64,
    pub job: Option<u64>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:?}] at {:.6}s",
            self.invariant,
            self.at_us as f64 / 1e6
        )?;
        if let Some(job) = self.job {
            write!(f, " job j{job}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

#[derive(Clone, Copy, Debug)]
struct LiveJob {
    submitted_at: Time,
    /// The live lease, if any.
    lease: Option<Token>,
    /// The largest token ever leased.
    max_token: Option<Token>,
}

#[derive(Clone, Debug, Default)]
pub struct Checker {
    live: FxHashMap<JobId, LiveJob>,
    /// One bit per job id: set once the job reached a terminal state.
    finished: Vec<u64>,
    /// GPUs in use per machine, with the machine's capacity.
    gpus: FxHashMap<MachineId, (u32, u32)>,
    violations: Vec<Violation>,
    violation_count: u64,
    pub submitted: u64,
    pub terminal: u64,
}

impl Checker {
    pub fn new() -> Checker {
        Checker::default()
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn violation_count(&self) -> u64 {
        self.violation_count
    }

    pub fn live_jobs(&self) -> usize {
        self.live.len()
    }

    /// Live jobs in id order, with their submission times.
    pub fn live(&self) -> Vec<(JobId, Time)> {
        let mut jobs: Vec<(JobId, Time)> = self
            .live
            .iter()
            .map(|(&j, l)| (j, l.submitted_at))
            .collect();
        jobs.sort_unstable();
        jobs
    }

    fn violate(&mut self, invariant: Invariant, at: Time, job: Option<JobId>, detail: String) {
        self.violation_count += 1;
        if self.violations.len() < MAX_KEPT_VIOLATIONS {
            self.violations.push(Violation {
                invariant,
                at_us: at.0,
                job: job.map(|j| j.0),
                detail,
            });
        }
    }

    fn is_finished(&self, job: JobId) -> bool {
        let (word, bit) = ((job.0 / 64) as usize, job.0 % 64);
        self.finished.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    fn mark_finished(&mut self, job: JobId) {
        let (word, bit) = ((job.0 / 64) as usize, job.0 % 64);
        if self.finished.len() <= word {
            self.finished.resize(word + 1, 0);
        }
        self.finished[word] |= 1 << bit;
    }

    /// The store lost writes and came back as `snapshot` saw it: take the job state from
    /// `snapshot`, but keep what the machines did (GPU use) and every violation found so far.
    pub fn roll_back_to(&mut self, snapshot: Checker) {
        let gpus = std::mem::take(&mut self.gpus);
        let violations = std::mem::take(&mut self.violations);
        let violation_count = self.violation_count;
        *self = snapshot;
        self.gpus = gpus;
        self.violations = violations;
        self.violation_count = violation_count;
    }

    pub fn observe(&mut self, event: &HistoryEvent) {
        match *event {
            HistoryEvent::Submitted { job, at } => self.on_submitted(job, at),
            HistoryEvent::Leased { job, token, at, .. } => self.on_leased(job, token, at),
            HistoryEvent::Requeued { job, at, ended } => {
                if let Some(live) = self.live_job(job, at, "requeued") {
                    let lease = live.lease;
                    self.check_lease_end(job, at, lease, ended);
                    if let Some(live) = self.live.get_mut(&job) {
                        live.lease = None;
                    }
                }
            }
            HistoryEvent::Finished {
                job,
                state,
                at,
                ended,
            } => self.on_finished(job, state, at, ended),
            HistoryEvent::Started {
                machine,
                job,
                gpus,
                capacity,
                at,
            } => {
                let used = self.gpus.entry(machine).or_insert((0, capacity));
                used.0 += gpus;
                used.1 = capacity;
                if used.0 > used.1 {
                    let detail = format!(
                        "machine {machine} runs {} GPUs' worth of attempts on {}",
                        used.0, used.1
                    );
                    self.violate(Invariant::GpusNotOversubscribed, at, Some(job), detail);
                }
            }
            HistoryEvent::Stopped {
                machine,
                job,
                gpus,
                at,
            } => {
                let used = self.gpus.entry(machine).or_insert((0, 0));
                let underflow = used.0 < gpus;
                used.0 = used.0.saturating_sub(gpus);
                if underflow {
                    let detail = format!("machine {machine} stopped an attempt it was not running");
                    self.violate(Invariant::GpusNotOversubscribed, at, Some(job), detail);
                }
            }
        }
    }

    fn on_submitted(&mut self, job: JobId, at: Time) {
        if self.live.contains_key(&job) || self.is_finished(job) {
            self.violate(
                Invariant::SubmittedOnce,
                at,
                Some(job),
                "submitted twice".into(),
            );
            return;
        }
        self.submitted += 1;
        self.live.insert(
            job,
            LiveJob {
                submitted_at: at,
                lease: None,
                max_token: None,
            },
        );
    }

    fn on_leased(&mut self, job: JobId, token: Token, at: Time) {
        let Some(live) = self.live_job(job, at, "leased") else {
            return;
        };
        let (lease, max_token) = (live.lease, live.max_token);
        if let Some(held) = lease {
            let detail = format!("leased with {token:?} while {held:?} is live");
            self.violate(Invariant::OneLiveLease, at, Some(job), detail);
        }
        if let Some(max) = max_token.filter(|&max| token <= max) {
            let detail = format!("token {token:?} is not above {max:?}");
            self.violate(Invariant::TokensGrow, at, Some(job), detail);
        }
        let live = self.live.get_mut(&job).expect("looked up above");
        live.lease = Some(token);
        live.max_token = Some(token.max(max_token.unwrap_or(token)));
    }

    fn on_finished(&mut self, job: JobId, state: StateName, at: Time, ended: Option<LeaseEnd>) {
        if !state.is_terminal() {
            let detail = format!("finished in live state {state:?}");
            self.violate(Invariant::OneTerminalState, at, Some(job), detail);
            return;
        }
        let Some(live) = self.live_job(job, at, "finished") else {
            return;
        };
        let lease = live.lease;
        self.check_lease_end(job, at, lease, ended);
        self.live.remove(&job);
        self.mark_finished(job);
        self.terminal += 1;
    }

    /// The live record of a job, or a violation naming what happened to a job that is not live.
    fn live_job(&mut self, job: JobId, at: Time, what: &str) -> Option<LiveJob> {
        if let Some(live) = self.live.get(&job) {
            return Some(*live);
        }
        if self.is_finished(job) {
            let detail = format!("{what} after reaching a terminal state");
            self.violate(Invariant::OneTerminalState, at, Some(job), detail);
        } else {
            let detail = format!("{what} but never submitted");
            self.violate(Invariant::UnknownJob, at, Some(job), detail);
        }
        None
    }

    /// A lease may only end if it is the live one; an outcome only counts from the live lease.
    fn check_lease_end(
        &mut self,
        job: JobId,
        at: Time,
        live: Option<Token>,
        ended: Option<LeaseEnd>,
    ) {
        match (live, ended) {
            (None, None) => {}
            (Some(held), Some(end)) if held == end.token => {}
            (Some(held), None) => {
                let detail = format!("left its state while lease {held:?} was live");
                self.violate(Invariant::OneLiveLease, at, Some(job), detail);
            }
            (_, Some(end)) => {
                let detail = format!(
                    "outcome from token {:?} ({}) while the live lease is {live:?}",
                    end.token,
                    if end.reported { "reported" } else { "revoked" }
                );
                self.violate(Invariant::NoStaleOutcome, at, Some(job), detail);
            }
        }
    }

    /// End of run: every live job must still be held by the store in a live state.
    /// `store_state` answers for a job id what the store holds (None: not held).
    pub fn check_nothing_lost(
        &mut self,
        at: Time,
        store_state: impl Fn(JobId) -> Option<StateName>,
    ) {
        for (job, _) in self.live() {
            match store_state(job) {
                Some(state) if !state.is_terminal() => {}
                Some(state) => {
                    let detail =
                        format!("the store holds it {state:?} but no terminal event was seen");
                    self.violate(Invariant::NoJobLost, at, Some(job), detail);
                }
                None => self.violate(
                    Invariant::NoJobLost,
                    at,
                    Some(job),
                    "the store no longer holds it".into(),
                ),
            }
        }
    }

    /// Liveness: every job submitted before `healed_at` (the last fault's end) must be terminal
    /// by `healed_at + bound`. Call at or after that time.
    pub fn check_liveness(&mut self, now: Time, healed_at: Time, bound: crate::core::Span) {
        if now < healed_at.plus(bound) {
            return;
        }
        for (job, submitted_at) in self.live() {
            if submitted_at <= healed_at {
                let detail = format!(
                    "still live {:.0}s after the last fault healed (bound {bound})",
                    now.since(healed_at).as_secs_f64()
                );
                self.violate(Invariant::Liveness, now, Some(job), detail);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Span;

    const M: MachineId = MachineId(1);

    fn t(s: u64) -> Time {
        Time(s * 1_000_000)
    }

    fn run(events: &[HistoryEvent]) -> Vec<Invariant> {
        let mut checker = Checker::new();
        for e in events {
            checker.observe(e);
        }
        checker.violations().iter().map(|v| v.invariant).collect()
    }

    fn submitted(job: u64) -> HistoryEvent {
        HistoryEvent::Submitted {
            job: JobId(job),
            at: t(0),
        }
    }
    fn leased(job: u64, token: u64) -> HistoryEvent {
        HistoryEvent::Leased {
            job: JobId(job),
            token: Token(token),
            machine: M,
            at: t(1),
        }
    }
    fn finished(job: u64, token: Option<u64>) -> HistoryEvent {
        HistoryEvent::Finished {
            job: JobId(job),
            state: StateName::Succeeded,
            at: t(2),
            ended: token.map(|tk| LeaseEnd {
                token: Token(tk),
                reported: true,
            }),
        }
    }
    fn requeued(job: u64, token: u64) -> HistoryEvent {
        HistoryEvent::Requeued {
            job: JobId(job),
            at: t(2),
            ended: Some(LeaseEnd {
                token: Token(token),
                reported: false,
            }),
        }
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let history = [
            submitted(1),
            leased(1, 5),
            requeued(1, 5),
            leased(1, 6),
            finished(1, Some(6)),
        ];
        assert_eq!(run(&history), vec![]);
    }

    #[test]
    fn each_broken_invariant_is_caught() {
        assert_eq!(
            run(&[submitted(1), submitted(1)]),
            vec![Invariant::SubmittedOnce]
        );
        assert_eq!(run(&[leased(9, 1)]), vec![Invariant::UnknownJob]);
        assert_eq!(
            run(&[submitted(1), leased(1, 5), leased(1, 6)]),
            vec![Invariant::OneLiveLease]
        );
        assert_eq!(
            run(&[submitted(1), leased(1, 5), requeued(1, 5), leased(1, 5)]),
            vec![Invariant::TokensGrow]
        );
        assert_eq!(
            run(&[submitted(1), leased(1, 6), finished(1, Some(5))]),
            vec![Invariant::NoStaleOutcome]
        );
        assert_eq!(
            run(&[submitted(1), finished(1, Some(5))]),
            vec![Invariant::NoStaleOutcome]
        );
        assert_eq!(
            run(&[submitted(1), leased(1, 5), finished(1, None)]),
            vec![Invariant::OneLiveLease]
        );
        assert_eq!(
            run(&[submitted(1), finished(1, None), finished(1, None)]),
            vec![Invariant::OneTerminalState]
        );
    }

    #[test]
    fn gpu_oversubscription_is_caught() {
        let start = |job| HistoryEvent::Started {
            machine: M,
            job: JobId(job),
            gpus: 2,
            capacity: 3,
            at: t(1),
        };
        let stop = |job| HistoryEvent::Stopped {
            machine: M,
            job: JobId(job),
            gpus: 2,
            at: t(1),
        };
        assert_eq!(run(&[start(1), stop(1), start(2)]), vec![]);
        assert_eq!(
            run(&[start(1), start(2)]),
            vec![Invariant::GpusNotOversubscribed]
        );
    }

    #[test]
    fn lost_jobs_and_liveness_are_caught_at_the_end() {
        let mut checker = Checker::new();
        for e in [submitted(1), submitted(2), submitted(3), finished(3, None)] {
            checker.observe(&e);
        }
        checker.check_nothing_lost(t(10), |job| (job == JobId(1)).then_some(StateName::Queued));
        assert_eq!(checker.violations().len(), 1);
        assert_eq!(checker.violations()[0].job, Some(2));
        checker.check_liveness(t(10), t(5), Span::from_secs(60));
        assert_eq!(checker.violations().len(), 1, "bound not reached");
        checker.check_liveness(t(100), t(5), Span::from_secs(60));
        assert_eq!(checker.violation_count(), 3, "jobs 1 and 2 are still live");
    }
}
