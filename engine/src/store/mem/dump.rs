//! `MemStore::dump`: the store's state in the canonical form every store shares
//! (`store::dump`), and the checks of MemStore's own indexes against its records.

use super::{MachineState, MemStore};
use crate::core::{JobId, JobState, MachineId, Time};
use crate::store::dump::{
    ClassDump, Counters, Delayed, Finished, JobDump, LastClaim, LeaseDump, LeaseEntry, MachineDump,
    ProfileDump, StateDump, Waiting,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

impl MemStore {
    /// The store's state, decoded (see `store::dump`).
    pub fn dump(&self) -> StateDump {
        let mut anomalies = Vec::new();
        let jobs = self
            .jobs
            .iter()
            .map(|(&id, r)| JobDump {
                id,
                state: r.state.name(),
                attempt: r.attempt,
                token: r.token,
                recorded: r.recorded,
                lease: match r.state {
                    JobState::Leased {
                        machine, deadline, ..
                    } => Some(LeaseDump {
                        machine,
                        deadline,
                        attempt_deadline: r.attempt_deadline,
                    }),
                    _ => None,
                },
                class: r.class,
                priority: r.spec.priority,
                max_attempts: r.spec.max_attempts,
                timeout: r.spec.timeout,
                idempotency_key: r.spec.idempotency_key.clone(),
                submitted_at: r.submitted_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
                error: r.error.as_deref().map(str::to_string),
                progress: r.progress.as_deref().cloned(),
                result: self.results.get(&id).map(|r| r.as_str().to_string()),
                kind: r.spec.kind.clone(),
                payload: r.spec.payload.clone(),
            })
            .collect();
        let classes = self
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassDump {
                id: crate::core::ClassId(i as u32),
                requirements: (*c.req).clone(),
                queue: c.queue.values().map(|&(job, _)| job).collect(),
            })
            .collect();
        let profiles = self
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| ProfileDump {
                id: crate::core::ProfileId(i as u32),
                gpus: p.profile.gpus,
                gpu_model: p.profile.gpu_model.clone(),
                gpu_mem_gb: p.profile.gpu_mem_gb,
                disk_gb: p.profile.disk_gb,
                labels: p.profile.labels.clone(),
                kinds: p.profile.kinds.clone(),
                last_seen: p.last_seen,
            })
            .collect();
        let machines = self
            .machines
            .iter()
            .map(|(&id, m)| MachineDump {
                id,
                name: m.spec.name.clone(),
                pool: m.spec.pool.clone(),
                profile: m.profile,
                gpus: m.spec.gpus,
                gpu_model: m.spec.gpu_model.clone(),
                gpu_mem_gb: m.spec.gpu_mem_gb,
                disk_gb: m.spec.disk_gb,
                labels: m.spec.labels.clone(),
                cost_per_hour: m.spec.cost_per_hour,
                state: machine_state(m.state).into(),
                expires: m.expires,
                leases: m
                    .leases
                    .iter()
                    .map(|&job| LeaseEntry {
                        job,
                        // A lease of a job the store does not hold: the check in
                        // `StateDump::finish` names it.
                        expiry: self.jobs.get(&job).map_or(Time::MAX, |r| r.expiry),
                    })
                    .collect(),
                last_claim: m.last_claim.as_ref().map(|(seq, granted, idle)| LastClaim {
                    seq: *seq,
                    jobs: granted.iter().map(|&(job, _)| job).collect(),
                    idle: *idle,
                }),
                waiting: m.waiting.map(|(seq, offer)| Waiting { seq, offer }),
                registered_at: m.registered_at,
                last_seen: m.last_seen,
            })
            .collect();
        self.check_indexes(&mut anomalies);
        StateDump {
            clock: self.now,
            counters: Counters {
                last_job: self.next_job - 1,
                last_machine: self.last_machine,
                wait_seq: self.seq,
            },
            counts: self.counts,
            totals: self.totals,
            jobs,
            classes,
            delayed: self
                .delayed
                .iter()
                .map(|&(until, job)| Delayed { until, job })
                .collect(),
            profiles,
            machines,
            finished: self
                .finished
                .iter()
                .map(|&(at, job)| Finished { at, job })
                .collect(),
            anomalies,
        }
        .finish()
    }

    /// MemStore's indexes against its records: what `StateDump` leaves out because it is
    /// derived (see `store::dump`), checked here instead.
    fn check_indexes(&self, out: &mut Vec<String>) {
        for (i, c) in self.classes.iter().enumerate() {
            let id = crate::core::ClassId(i as u32);
            if c.queue.is_empty() == self.nonempty.contains(&id) {
                out.push(format!(
                    "class {i} has {} queued jobs but is {}in the non-empty set",
                    c.queue.len(),
                    if c.queue.is_empty() { "" } else { "not " }
                ));
            }
            if self.class_index.get(&c.req) != Some(&id) {
                out.push(format!("class {i}'s requirements do not intern to it"));
            }
            for (&(Reverse(priority), n), &(job, submitted_at)) in &c.queue {
                let record = self.jobs.get(&job);
                let want = record.map(|r| {
                    (
                        r.queue_key,
                        r.spec.priority,
                        r.submitted_at,
                        r.state == JobState::Queued,
                    )
                });
                if n != job.0
                    || want != Some((Some((Reverse(priority), n)), priority, submitted_at, true))
                {
                    out.push(format!(
                        "class {i}'s queue entry for job {} (priority {priority}) does not match \
                         its record",
                        job.0
                    ));
                }
            }
        }
        if self.class_index.len() != self.classes.len() {
            out.push("the class index holds classes that do not exist".into());
        }
        for (i, p) in self.profiles.iter().enumerate() {
            if self.profile_index.get(&p.profile) != Some(&crate::core::ProfileId(i as u32)) {
                out.push(format!("profile {i} does not intern to itself"));
            }
        }
        if self.profile_index.len() != self.profiles.len() {
            out.push("the profile index holds profiles that do not exist".into());
        }
        let ready: BTreeSet<(Time, MachineId)> = self
            .machines
            .iter()
            .filter(|(_, m)| m.state == MachineState::Ready)
            .map(|(&id, m)| (m.expires, id))
            .collect();
        if ready != self.machine_expiry {
            out.push(format!(
                "the machine expiry index {:?} is not the ready machines' expiries {ready:?}",
                self.machine_expiry
            ));
        }
        for (&id, m) in &self.machines {
            if self.machine_names.get(&m.spec.name) != Some(&id) {
                out.push(format!("machine {}'s name does not lead to it", id.0));
            }
            if id.0 > self.last_machine {
                out.push(format!("machine {} is past the last id issued", id.0));
            }
        }
        if self.machine_names.len() != self.machines.len() {
            out.push("machine names lead to machines that do not exist".into());
        }
        let mut lines: BTreeMap<_, BTreeSet<(u64, MachineId)>> = BTreeMap::new();
        for (&id, m) in &self.machines {
            if let Some((seq, _)) = m.waiting {
                lines.entry(m.profile).or_default().insert((seq, id));
            }
        }
        let held: BTreeMap<_, _> = self
            .waiting
            .iter()
            .filter(|(_, line)| !line.is_empty())
            .map(|(p, line)| (*p, line.clone()))
            .collect();
        if held != lines {
            out.push(format!(
                "the idle lines {held:?} are not the waiting machines {lines:?}"
            ));
        }
        let keys: BTreeMap<&str, JobId> = self
            .jobs
            .iter()
            .filter_map(|(&id, r)| r.spec.idempotency_key.as_deref().map(|k| (k, id)))
            .collect();
        let held: BTreeMap<&str, JobId> = self
            .idempotency
            .iter()
            .map(|(k, &id)| (k.as_str(), id))
            .collect();
        if keys != held {
            out.push(format!(
                "the idempotency map {held:?} is not the jobs' keys {keys:?}"
            ));
        }
        // The lease expiry index is lazy: each live lease needs an entry at or before its
        // expiry (the reaper moves it when it gets there); stale entries are allowed.
        let mut earliest: BTreeMap<JobId, Time> = BTreeMap::new();
        for &(t, job) in &self.lease_expiry {
            earliest.entry(job).or_insert(t);
        }
        for (&id, r) in &self.jobs {
            if matches!(r.state, JobState::Leased { .. })
                && earliest.get(&id).is_none_or(|&t| t > r.expiry)
            {
                out.push(format!(
                    "job {}'s lease has no expiry index entry at or before {}",
                    id.0, r.expiry.0
                ));
            }
        }
    }
}

fn machine_state(state: MachineState) -> &'static str {
    match state {
        MachineState::Ready => "ready",
        MachineState::Lost => "lost",
        MachineState::Gone => "gone",
    }
}
