//! Submitting, cancelling, reading and finishing jobs, and the transitions they share.

use super::{JobRecord, MemStore, QueueKey};
use crate::check::history::{HistoryEvent, LeaseEnd};
use crate::core::class::validate_spec;
use crate::core::lifecycle::{after_attempt, AttemptEnd, Next};
use crate::core::model::JobView;
use crate::core::{
    ClassId, Failure, JobError, JobId, JobResult, JobSpec, JobState, Outcome, Requirements,
    StateName, Time, Token,
};
use crate::store::journal::{JournalEvent, RevokeReason};
use crate::store::request::{check_result, Refusal, Reply};
use std::cmp::Reverse;
use std::sync::Arc;

impl MemStore {
    pub(super) fn submit(&mut self, spec: JobSpec) -> Result<Reply, Refusal> {
        let mut spec = validate_spec(spec, &self.config)?;
        if let Some(key) = &spec.idempotency_key {
            if let Some(&job) = self.idempotency.get(key) {
                return Ok(Reply::Submitted {
                    job,
                    created: false,
                });
            }
        }
        let limit = self.config.limits.max_jobs;
        if self.jobs.len() as u64 >= limit {
            return Err(Refusal::Full {
                what: "jobs",
                limit,
            });
        }
        let class = self.class_of(&spec.requirements)?;
        // Share the class's copy of the requirements rather than keep one per job.
        spec.requirements = self.classes[class.0 as usize].req.clone();
        let job = JobId(self.next_job);
        self.next_job += 1;
        if let Some(key) = &spec.idempotency_key {
            self.idempotency.insert(key.clone(), job);
        }
        let now = self.now;
        self.jobs.insert(
            job,
            JobRecord {
                spec: Arc::new(spec),
                class,
                state: JobState::Queued,
                attempt: 0,
                token: Token(0),
                recorded: None,
                queue_key: None,
                submitted_at: now,
                started_at: None,
                finished_at: None,
                attempt_deadline: Time::MAX,
                expiry: Time::MAX,
                error: None,
                progress: None,
            },
        );
        self.totals.submitted += 1;
        self.emit(HistoryEvent::Submitted { job, at: now });
        let record = &self.jobs[&job];
        self.jot(JournalEvent::Submitted {
            job,
            priority: record.spec.priority,
            class: class.0,
            requirements: record.spec.requirements.clone(),
        });
        self.enqueue(job);
        Ok(Reply::Submitted { job, created: true })
    }

    pub(super) fn cancel(&mut self, job: JobId) -> Result<Reply, Refusal> {
        let record = self.jobs.get(&job).ok_or(Refusal::UnknownJob(job))?;
        let previous = record.state.name();
        let ended = match record.state {
            JobState::Queued => {
                self.unqueue(job);
                None
            }
            JobState::Delayed { until } => {
                self.delayed.remove(&(until, job));
                self.counts.delayed -= 1;
                None
            }
            JobState::Leased { token, .. } => {
                self.end_lease(job);
                self.jot(JournalEvent::Revoked {
                    job,
                    token,
                    reason: RevokeReason::Cancelled,
                });
                Some(LeaseEnd {
                    token,
                    reported: false,
                })
            }
            JobState::Cancelled => return Ok(Reply::Cancelled { job, previous }),
            _ => {
                return Err(Refusal::AlreadyFinished {
                    job,
                    state: previous,
                })
            }
        };
        self.finish(job, StateName::Cancelled, ended);
        Ok(Reply::Cancelled { job, previous })
    }

    pub(super) fn get(&self, job: JobId) -> Result<Reply, Refusal> {
        let record = self.jobs.get(&job).ok_or(Refusal::UnknownJob(job))?;
        Ok(Reply::Job(Box::new(view(
            job,
            record,
            self.results.get(&job),
        ))))
    }

    pub(super) fn complete(
        &mut self,
        job: JobId,
        token: Token,
        outcome: &Outcome,
        result: Option<JobResult>,
    ) -> Result<Reply, Refusal> {
        check_result(result.as_ref(), &self.config.limits)?;
        let record = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob(job))?;
        if record.recorded == Some(token) {
            return Ok(Reply::Recorded {
                state: record.state.name(),
            });
        }
        if !matches!(record.state, JobState::Leased { token: live, .. } if live == token) {
            return Err(Refusal::Stale { job, token });
        }
        record.recorded = Some(token);
        self.end_lease(job);
        let ended = Some(LeaseEnd {
            token,
            reported: true,
        });
        match outcome {
            Outcome::Succeeded => {
                self.jot(JournalEvent::Succeeded { job, token });
                if let Some(result) = result {
                    self.jot(JournalEvent::Result {
                        job,
                        result: result.clone(),
                    });
                    self.results.insert(job, result);
                }
                self.finish(job, StateName::Succeeded, ended)
            }
            Outcome::Failed(failure) => {
                self.jot(JournalEvent::Failed {
                    job,
                    token,
                    class: failure.class().to_string(),
                });
                if let Failure::GpuOom { needed_gb } = failure {
                    self.raise_gpu_mem(job, *needed_gb);
                }
                let record = &mut self.jobs.get_mut(&job).expect("job checked above");
                record.error = Some(failure.error().to_stored().into());
                let (attempt, max) = (record.attempt, record.spec.max_attempts);
                let next = after_attempt(
                    job,
                    attempt,
                    max,
                    AttemptEnd::Reported(failure),
                    &self.config,
                );
                self.settle(job, next, ended);
            }
        }
        Ok(Reply::Recorded {
            state: self.jobs[&job].state.name(),
        })
    }

    pub(super) fn release(&mut self, job: JobId, token: Token) -> Result<Reply, Refusal> {
        let record = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob(job))?;
        if record.recorded == Some(token) {
            return Ok(Reply::Released);
        }
        if !matches!(record.state, JobState::Leased { token: live, .. } if live == token) {
            return Err(Refusal::Stale { job, token });
        }
        record.recorded = Some(token);
        // A released attempt did not fail: it is not charged.
        record.attempt -= 1;
        self.end_lease(job);
        self.jot(JournalEvent::Released { job, token });
        self.emit(HistoryEvent::Requeued {
            job,
            at: self.now,
            ended: Some(LeaseEnd {
                token,
                reported: true,
            }),
        });
        self.enqueue(job);
        Ok(Reply::Released)
    }

    /// The class of `req`, interned on first sight.
    pub(super) fn class_of(&mut self, req: &Arc<Requirements>) -> Result<ClassId, Refusal> {
        if let Some(&class) = self.class_index.get(req) {
            return Ok(class);
        }
        let limit = self.config.limits.max_classes;
        if self.classes.len() as u64 >= limit as u64 {
            return Err(Refusal::Full {
                what: "classes",
                limit: limit as u64,
            });
        }
        let class = ClassId(self.classes.len() as u32);
        self.classes.push(super::ClassRecord {
            req: req.clone(),
            queue: Default::default(),
            allows: Vec::new(),
        });
        self.class_index.insert(req.clone(), class);
        Ok(class)
    }

    /// After running out of GPU memory a job asks for what it needed, so that its retry only
    /// goes where it fits. If no class can be made, it keeps its old one.
    fn raise_gpu_mem(&mut self, job: JobId, needed_gb: u32) {
        let record = &self.jobs[&job];
        if needed_gb <= record.spec.requirements.gpu_mem_gb {
            return;
        }
        let mut req = (*record.spec.requirements).clone();
        req.gpu_mem_gb = needed_gb;
        let Ok(class) = self.class_of(&Arc::new(req)) else {
            return;
        };
        let record = self.jobs.get_mut(&job).expect("job exists");
        let mut spec = (*record.spec).clone();
        spec.requirements = self.classes[class.0 as usize].req.clone();
        record.spec = Arc::new(spec);
        record.class = class;
    }

    /// Puts a job at its place in its class queue and wakes one idle machine that fits it.
    pub(super) fn enqueue(&mut self, job: JobId) {
        let record = self.jobs.get_mut(&job).expect("enqueue of a known job");
        let key: QueueKey = (Reverse(record.spec.priority), job.0);
        record.state = JobState::Queued;
        record.queue_key = Some(key);
        let class = record.class;
        let submitted_at = record.submitted_at;
        self.classes[class.0 as usize]
            .queue
            .insert(key, (job, submitted_at));
        self.nonempty.insert(class);
        self.counts.queued += 1;
        self.wake_one_for(class);
    }

    pub(super) fn unqueue(&mut self, job: JobId) {
        let record = self.jobs.get_mut(&job).expect("unqueue of a known job");
        let key = record
            .queue_key
            .take()
            .expect("a queued job has a queue key");
        let class = record.class;
        let queue = &mut self.classes[class.0 as usize].queue;
        queue.remove(&key);
        if queue.is_empty() {
            self.nonempty.remove(&class);
        }
        self.counts.queued -= 1;
    }

    /// Removes a job's live lease from every index; the caller decides what comes next.
    pub(super) fn end_lease(&mut self, job: JobId) {
        let record = self.jobs.get_mut(&job).expect("end_lease of a known job");
        let JobState::Leased { machine, .. } = record.state else {
            panic!("end_lease of job {job} in state {:?}", record.state);
        };
        self.lease_expiry.remove(&(record.expiry, job));
        let leases = &mut self
            .machines
            .get_mut(&machine)
            .expect("known machine")
            .leases;
        if let Some(i) = leases.iter().position(|&j| j == job) {
            leases.swap_remove(i);
        }
        self.counts.leased -= 1;
    }

    /// Applies the lifecycle's decision after an attempt ended without success.
    pub(super) fn settle(&mut self, job: JobId, next: Next, ended: Option<LeaseEnd>) {
        match next {
            Next::Terminal(state) => self.finish(job, state, ended),
            Next::Retry { delay } => {
                self.totals.retries += 1;
                let until = (delay.as_micros() > 0).then(|| self.now.plus(delay));
                self.jot(JournalEvent::Requeued { job, until });
                self.emit(HistoryEvent::Requeued {
                    job,
                    at: self.now,
                    ended,
                });
                if delay.as_micros() == 0 {
                    self.enqueue(job);
                } else {
                    let until = self.now.plus(delay);
                    self.jobs
                        .get_mut(&job)
                        .expect("settle of a known job")
                        .state = JobState::Delayed { until };
                    self.delayed.insert((until, job));
                    self.counts.delayed += 1;
                }
            }
        }
    }

    /// The lease (if any) was already ended by the caller.
    pub(super) fn finish(&mut self, job: JobId, state: StateName, ended: Option<LeaseEnd>) {
        let now = self.now;
        let record = self.jobs.get_mut(&job).expect("finish of a known job");
        record.state = match state {
            StateName::Succeeded => JobState::Succeeded,
            StateName::Dead => JobState::Dead,
            StateName::Cancelled => JobState::Cancelled,
            StateName::TimedOut => JobState::TimedOut,
            StateName::Unworkable => JobState::Unworkable,
            live => panic!("finish into live state {live:?}"),
        };
        record.finished_at = Some(now);
        record.progress = None;
        let total = match state {
            StateName::Succeeded => &mut self.totals.succeeded,
            StateName::Dead => &mut self.totals.dead,
            StateName::Cancelled => &mut self.totals.cancelled,
            StateName::TimedOut => &mut self.totals.timed_out,
            _ => &mut self.totals.unworkable,
        };
        *total += 1;
        if let Some(event) = JournalEvent::finished(job, state) {
            self.jot(event);
        }
        self.finished.push_back((now, job));
        self.counts.finished_retained += 1;
        self.emit(HistoryEvent::Finished {
            job,
            state,
            at: now,
            ended,
        });
    }

    /// Ends a leased job's attempt from the store's side (expiry, machine lost, over time).
    pub(super) fn revoke(&mut self, job: JobId, end: AttemptEnd<'_>, reason: RevokeReason) -> Next {
        let record = &self.jobs[&job];
        let JobState::Leased { token, .. } = record.state else {
            panic!("revoke of job {job} in state {:?}", record.state);
        };
        let (attempt, max) = (record.attempt, record.spec.max_attempts);
        self.end_lease(job);
        self.jot(JournalEvent::Revoked { job, token, reason });
        self.totals.revoked += 1;
        let next = after_attempt(job, attempt, max, end, &self.config);
        self.settle(
            job,
            next,
            Some(LeaseEnd {
                token,
                reported: false,
            }),
        );
        next
    }
}

/// A job as the API shows it.
pub(super) fn view(job: JobId, record: &JobRecord, result: Option<&JobResult>) -> JobView {
    let machine = match record.state {
        JobState::Leased { machine, .. } => Some(machine),
        _ => None,
    };
    JobView {
        id: job,
        state: record.state.name(),
        attempt: record.attempt,
        machine,
        submitted_at: record.submitted_at,
        started_at: record.started_at,
        finished_at: record.finished_at,
        error: record.error.as_deref().map(JobError::from_stored),
        progress: record.progress.as_deref().cloned(),
        result: result.cloned(),
        spec: record.spec.clone(),
    }
}
