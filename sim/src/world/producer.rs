//! The producers: they submit each arrival, hold what the store refused (full, or down) and
//! retry it, and after a Redis restart that lost writes they resubmit, by idempotency key,
//! every job they have not seen finish.

use super::{faults::ActiveFault, Event, SimJob, World};
use crate::scenario::{FaultKind, Persistence, Scenario};
use crate::workload::sample;
use drover_engine::core::{EngineConfig, JobSpec, Requirements, Span};
use drover_engine::store::{Refusal, Reply, Request};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// The kind of every simulated job; simulated machines run every kind.
const JOB_KIND: &str = "sim";

const RETRY_EVERY: Span = Span::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub struct Submission {
    pub logical: u64,
    pub workload: u16,
    pub service: Span,
}

pub struct Producer {
    /// Track unfinished jobs for resubmission: only when a restart can lose writes.
    reconcile: bool,
    outstanding: FxHashMap<u64, Submission>,
    refused: VecDeque<Submission>,
    retry_scheduled: bool,
    next_logical: u64,
    /// Jobs accepted by the store at least once, in all and per workload.
    pub accepted: u64,
    pub accepted_per_workload: Vec<u64>,
    pub rejected_invalid: u64,
}

impl Producer {
    pub fn new(faults: &[ActiveFault], persistence: Persistence, workloads: usize) -> Producer {
        let restarts = faults
            .iter()
            .any(|f| matches!(f.spec.kind, FaultKind::RedisRestart { .. }));
        Producer {
            reconcile: restarts && persistence != Persistence::AofAlways,
            outstanding: FxHashMap::default(),
            refused: VecDeque::new(),
            retry_scheduled: false,
            next_logical: 0,
            accepted: 0,
            accepted_per_workload: vec![0; workloads],
            rejected_invalid: 0,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.refused.is_empty()
    }

    pub fn on_finished(&mut self, logical: u64) {
        if self.reconcile {
            self.outstanding.remove(&logical);
        }
    }
}

/// The requirements of each workload, shared by all of its jobs.
pub fn requirements(scenario: &Scenario, config: &EngineConfig) -> Vec<Arc<Requirements>> {
    scenario
        .workloads
        .iter()
        .map(|w| {
            let models = w
                .models
                .iter()
                .filter_map(|name| config.model_id(name))
                .fold(
                    Default::default(),
                    |set: drover_engine::core::ModelSet, m| set.with(m),
                );
            let mut gpu_models = w.gpu_models.clone();
            gpu_models.sort();
            gpu_models.dedup();
            Arc::new(Requirements {
                gpus: w.gpus,
                gpu_mem_gb: w.gpu_mem_gb,
                gpu_models,
                models,
                disk_gb: w.disk_gb,
                labels: w.labels.clone(),
                not_labels: w.not_labels.clone(),
                kind: JOB_KIND.to_owned(),
            })
        })
        .collect()
}

impl World {
    pub(super) fn schedule_next_arrival(&mut self, workload: usize) {
        match self.arrivals[workload].next(&mut self.streams.arrivals[workload]) {
            Some(at) => self.queue.schedule(
                at,
                Event::Arrival {
                    workload: workload as u16,
                },
            ),
            None => self.arrivals_open -= 1,
        }
    }

    pub(super) fn on_arrival(&mut self, workload: usize) {
        let spec = &self.scenario.workloads[workload];
        let service = sample(&spec.service, &mut self.streams.service[workload]);
        let logical = self.producer.next_logical;
        self.producer.next_logical += 1;
        let submission = Submission {
            logical,
            workload: workload as u16,
            service,
        };
        self.submit(submission);
        self.schedule_next_arrival(workload);
    }

    fn submit(&mut self, submission: Submission) {
        if !self.redis.is_up(self.now) {
            self.hold(submission);
            return;
        }
        let workload = &self.scenario.workloads[submission.workload as usize];
        let spec = JobSpec {
            kind: JOB_KIND.to_string(),
            payload: String::new(),
            priority: workload.priority,
            requirements: self.requirements[submission.workload as usize].clone(),
            max_attempts: workload.max_attempts,
            timeout: workload.timeout,
            idempotency_key: self
                .producer
                .reconcile
                .then(|| format!("job-{}", submission.logical)),
        };
        match self
            .redis
            .store
            .apply(self.now, Request::Submit(Box::new(spec)))
        {
            Ok(Reply::Submitted { job, created }) => {
                if created {
                    let sim = SimJob {
                        logical: submission.logical,
                        workload: submission.workload,
                        service: submission.service,
                        submitted_at: self.now,
                        last_lease: None,
                        last_done: None,
                    };
                    self.jobs.insert(job, sim);
                }
                // A resubmission after a lossy restart is the same job, counted once.
                let first = !self.producer.reconcile
                    || self
                        .producer
                        .outstanding
                        .insert(submission.logical, submission)
                        .is_none();
                if first {
                    self.producer.accepted += 1;
                    self.producer.accepted_per_workload[submission.workload as usize] += 1;
                }
            }
            Err(Refusal::Full { .. }) => {
                self.stats.submissions_refused += 1;
                self.hold(submission);
            }
            Err(_) => self.producer.rejected_invalid += 1,
            Ok(other) => unreachable!("submit answered {other:?}"),
        }
        self.store_effects();
    }

    fn hold(&mut self, submission: Submission) {
        self.producer.refused.push_back(submission);
        if !self.producer.retry_scheduled {
            self.producer.retry_scheduled = true;
            self.queue
                .schedule(self.now.plus(RETRY_EVERY), Event::RetrySubmits);
        }
    }

    pub(super) fn on_retry_submits(&mut self) {
        self.producer.retry_scheduled = false;
        let held = std::mem::take(&mut self.producer.refused);
        for submission in held {
            self.submit(submission);
        }
    }

    /// After a restart that lost writes: resubmit every job not seen to finish. The store
    /// answers with the existing id for the ones it kept.
    pub(super) fn reconcile_after_restart(&mut self) {
        if !self.producer.reconcile {
            return;
        }
        let mut outstanding: Vec<Submission> =
            self.producer.outstanding.values().copied().collect();
        outstanding.sort_unstable_by_key(|s| s.logical);
        let before = self.jobs.len();
        for submission in outstanding {
            self.submit(submission);
        }
        self.stats.resubmitted += (self.jobs.len() - before.min(self.jobs.len())) as u64;
    }
}
