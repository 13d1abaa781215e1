//! What the API reads: progress reports, job and machine listings, and the store's statistics.

use super::jobs::view;
use super::{MachineState, MemStore};
use crate::core::model::{Progress, MAX_PROGRESS_MESSAGE_BYTES};
use crate::core::{JobId, JobState, StateName, Token};
use crate::store::request::{ClassDepth, MachineView, Refusal, Reply, StoreStats};
use std::collections::BTreeMap;

impl MemStore {
    pub(super) fn progress(
        &mut self,
        job: JobId,
        token: Token,
        percent: u8,
        mut message: String,
    ) -> Result<Reply, Refusal> {
        let record = self.jobs.get_mut(&job).ok_or(Refusal::UnknownJob(job))?;
        if !matches!(record.state, JobState::Leased { token: live, .. } if live == token) {
            return Err(Refusal::Stale { job, token });
        }
        if message.len() > MAX_PROGRESS_MESSAGE_BYTES {
            let mut cut = MAX_PROGRESS_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let percent = percent.min(100);
        let event = crate::store::journal::JournalEvent::Progress {
            job,
            token,
            percent,
            message: message.clone(),
        };
        record.progress = Some(Box::new(Progress { percent, message }));
        self.jot(event);
        Ok(Reply::ProgressNoted)
    }

    /// Jobs in id order. A scan: listings are for people and dashboards, not the hot path.
    pub(super) fn list_jobs(
        &self,
        state: Option<StateName>,
        after: Option<JobId>,
        limit: u32,
    ) -> Reply {
        let limit = limit.min(self.config.limits.max_list) as usize;
        let mut ids: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(id, record)| {
                after.is_none_or(|a| **id > a) && state.is_none_or(|s| record.state.name() == s)
            })
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids.truncate(limit);
        Reply::Jobs(
            ids.into_iter()
                .map(|id| view(id, &self.jobs[&id], self.results.get(&id)))
                .collect(),
        )
    }

    pub(super) fn list_machines(&self, limit: u32) -> Reply {
        let limit = limit.min(self.config.limits.max_list) as usize;
        let mut ids: Vec<_> = self.machines.keys().copied().collect();
        ids.sort_unstable();
        ids.truncate(limit);
        let views = ids
            .into_iter()
            .map(|id| {
                let m = &self.machines[&id];
                MachineView {
                    id,
                    name: m.spec.name.clone(),
                    pool: m.spec.pool.clone(),
                    state: state_name(m.state),
                    gpus: m.spec.gpus,
                    gpu_model: m.spec.gpu_model.clone(),
                    gpu_mem_gb: m.spec.gpu_mem_gb,
                    cost_per_hour: m.spec.cost_per_hour,
                    leases: m.leases.len() as u32,
                    idle: m.waiting.is_some(),
                    registered_at: m.registered_at,
                    last_seen: m.last_seen,
                    kinds: m.spec.kinds.clone(),
                }
            })
            .collect();
        Reply::Machines(views)
    }

    pub(super) fn stats(&self) -> Reply {
        let classes = self
            .nonempty
            .iter()
            .map(|&class| {
                let record = &self.classes[class.0 as usize];
                ClassDepth {
                    class: class.0,
                    requirements: record.req.clone(),
                    queued: record.queue.len() as u64,
                }
            })
            .collect();
        let mut machines = BTreeMap::new();
        // Forgotten machines first, then in id order: a float sum depends on its order, and
        // every store must give the same.
        let mut total = self.spend_forgotten;
        let mut ids: Vec<_> = self.machines.keys().copied().collect();
        ids.sort_unstable();
        for m in ids.iter().map(|id| &self.machines[id]) {
            *machines.entry(state_name(m.state).to_string()).or_insert(0) += 1;
            total += spend(m);
        }
        let spend = total;
        Reply::Stats(Box::new(StoreStats {
            jobs: self.counts,
            classes,
            machines,
            totals: self.totals,
            spend,
        }))
    }
}

/// What a machine cost: registered to last seen, at its price per hour.
pub(super) fn spend(m: &super::MachineRecord) -> f64 {
    m.last_seen.since(m.registered_at).as_secs_f64() / 3600.0 * m.spec.cost_per_hour
}

fn state_name(state: MachineState) -> &'static str {
    match state {
        MachineState::Ready => "ready",
        MachineState::Lost => "lost",
        MachineState::Gone => "gone",
    }
}
