//! The machine registry: registration, heartbeats (which renew leases), leaving, being lost.

use super::{MachineRecord, MachineState, MemStore, ProfileRecord};
use crate::core::lifecycle::{AttemptEnd, Next};
use crate::core::{EngineConfig, JobState, MachineId, MachineSpec, ProfileId, Time};
use crate::store::journal::{JournalEvent, RevokeReason};
use crate::store::request::{LeaseRef, LeaseStatus, Refusal, Reply};
use std::sync::Arc;

impl MemStore {
    pub(super) fn register(&mut self, spec: MachineSpec) -> Result<Reply, Refusal> {
        check_machine_spec(&spec, &self.config)?;
        let profile = self.profile_of(&spec);
        let expires = self.now.plus(self.config.machine_ttl);
        let machine = match self.machine_names.get(&spec.name) {
            Some(&machine) => {
                // Its place in an idle line belongs to its old profile.
                self.stop_waiting(machine);
                let record = self.machines.get_mut(&machine).expect("known machine");
                self.machine_expiry.remove(&(record.expires, machine));
                if record.state != MachineState::Ready {
                    self.departed.remove(&(record.last_left, machine));
                }
                record.spec = Arc::new(spec);
                record.profile = profile;
                record.state = MachineState::Ready;
                record.expires = expires;
                record.last_claim = None;
                record.last_seen = self.now;
                machine
            }
            None => {
                let limit = self.config.limits.max_machines;
                let present = self.machines.len() - self.departed.len();
                if present as u64 >= limit as u64 {
                    return Err(Refusal::Full {
                        what: "machines",
                        limit: limit as u64,
                    });
                }
                // Ids follow the store clock as well as counting up, so that a store that lost
                // its data never hands a live agent's old id to another machine.
                self.last_machine = (self.last_machine + 1).max(self.now.0);
                let machine = MachineId(self.last_machine);
                self.machine_names.insert(spec.name.clone(), machine);
                self.machines.insert(
                    machine,
                    MachineRecord {
                        spec: Arc::new(spec),
                        profile,
                        state: MachineState::Ready,
                        expires,
                        leases: Vec::new(),
                        last_claim: None,
                        waiting: None,
                        registered_at: self.now,
                        last_seen: self.now,
                        last_left: Time::ZERO,
                    },
                );
                machine
            }
        };
        self.machine_expiry.insert((expires, machine));
        self.profiles[profile.0 as usize].last_seen = Some(self.now);
        let spec = &self.machines[&machine].spec;
        self.jot(JournalEvent::Registered {
            machine,
            name: spec.name.clone(),
            pool: spec.pool.clone(),
        });
        Ok(Reply::Registered { machine })
    }

    fn profile_of(&mut self, spec: &MachineSpec) -> ProfileId {
        let profile = spec.profile();
        if let Some(&id) = self.profile_index.get(&profile) {
            return id;
        }
        let id = ProfileId(self.profiles.len() as u32);
        self.profile_index.insert(profile.clone(), id);
        self.profiles.push(ProfileRecord {
            profile,
            last_seen: None,
        });
        id
    }

    pub(super) fn heartbeat(
        &mut self,
        machine: MachineId,
        leases: &[LeaseRef],
    ) -> Result<Reply, Refusal> {
        self.ready_machine(machine)?;
        let limit = self.config.limits.max_leases_per_heartbeat;
        if leases.len() > limit as usize {
            return Err(Refusal::Full {
                what: "leases per heartbeat",
                limit: limit as u64,
            });
        }
        self.touch(machine);
        let statuses = leases
            .iter()
            .map(|lease| self.renew(machine, *lease))
            .collect();
        Ok(Reply::Heartbeat { leases: statuses })
    }

    /// Extends one lease, or says it is no longer the holder's. A lease past its job's timeout
    /// is ended here, as the reaper would.
    fn renew(&mut self, machine: MachineId, lease: LeaseRef) -> LeaseStatus {
        let now = self.now;
        let ttl = self.config.lease_ttl;
        let Some(record) = self.jobs.get_mut(&lease.job) else {
            return LeaseStatus::Revoked;
        };
        let JobState::Leased {
            machine: holder,
            token,
            ..
        } = record.state
        else {
            return LeaseStatus::Revoked;
        };
        if holder != machine || token != lease.token {
            return LeaseStatus::Revoked;
        }
        if now >= record.attempt_deadline {
            self.revoke(lease.job, AttemptEnd::OverTime, RevokeReason::Overtime);
            return LeaseStatus::Revoked;
        }
        let deadline = now.plus(ttl);
        let expiry = deadline.min(record.attempt_deadline);
        // The expiry index is corrected lazily, when the reaper reaches the old entry: renewals
        // are many (every heartbeat, every lease), expiries few.
        record.expiry = expiry;
        record.state = JobState::Leased {
            machine,
            token,
            deadline,
        };
        LeaseStatus::Renewed { deadline }
    }

    pub(super) fn deregister(&mut self, machine: MachineId) -> Result<Reply, Refusal> {
        let Some(record) = self.machines.get(&machine) else {
            return Err(Refusal::UnknownMachine(machine));
        };
        if record.state == MachineState::Gone {
            return Ok(Reply::Deregistered { revoked: 0 });
        }
        let revoked = self.retire(machine, MachineState::Gone);
        Ok(Reply::Deregistered {
            revoked: revoked.requeued + revoked.dead,
        })
    }

    /// Marks a machine lost or gone and revokes its leases, charging their attempts (a
    /// machine that drains releases its jobs first).
    pub(super) fn retire(&mut self, machine: MachineId, state: MachineState) -> Revoked {
        self.stop_waiting(machine);
        let record = self.machines.get_mut(&machine).expect("known machine");
        self.machine_expiry.remove(&(record.expires, machine));
        // A lost machine that deregisters leaves again: it has one place in `departed`.
        if record.state != MachineState::Ready {
            self.departed.remove(&(record.last_left, machine));
        }
        record.state = state;
        record.last_left = self.now;
        self.departed.insert((self.now, machine));
        let leases = std::mem::take(&mut record.leases);
        let reason = if state == MachineState::Lost {
            self.jot(JournalEvent::Lost { machine });
            RevokeReason::Lost
        } else {
            self.jot(JournalEvent::Deregistered { machine });
            RevokeReason::Gone
        };
        let mut revoked = Revoked::default();
        for job in leases {
            match self.revoke(job, AttemptEnd::Abandoned, reason) {
                Next::Retry { .. } => revoked.requeued += 1,
                Next::Terminal(_) => revoked.dead += 1,
            }
        }
        revoked
    }

    /// The machine showed it is alive: push back its expiry.
    pub(super) fn touch(&mut self, machine: MachineId) {
        let expires = self.now.plus(self.config.machine_ttl);
        let record = self.machines.get_mut(&machine).expect("known machine");
        record.last_seen = self.now;
        if record.expires != expires {
            self.machine_expiry.remove(&(record.expires, machine));
            self.machine_expiry.insert((expires, machine));
            record.expires = expires;
        }
        self.profiles[record.profile.0 as usize].last_seen = Some(self.now);
    }
}

/// What revoking a machine's leases did to their jobs.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Revoked {
    pub requeued: u32,
    pub dead: u32,
}

/// Checks a machine spec against the limits; the error names the field. Public so that every
/// store (RedisStore judges it before sending) refuses exactly what MemStore refuses.
/// Kinds one machine may advertise: its executors and command kinds.
pub const MAX_MACHINE_KINDS: usize = 64;

pub fn check_machine_spec(spec: &MachineSpec, config: &EngineConfig) -> Result<(), Refusal> {
    let invalid = |field: &str, reason: String| {
        Err(Refusal::Invalid(crate::core::class::InvalidJob {
            field: format!("machine.{field}"),
            reason,
        }))
    };
    if spec.name.is_empty() || spec.name.len() > 256 {
        return invalid("name", "must be 1 to 256 bytes".into());
    }
    if spec.gpus > config.limits.max_gpus {
        return invalid(
            "gpus",
            format!("must be at most {}", config.limits.max_gpus),
        );
    }
    if spec.labels.len() > config.limits.max_labels as usize {
        return invalid("labels", format!("at most {}", config.limits.max_labels));
    }
    if !spec.cost_per_hour.is_finite() || spec.cost_per_hour < 0.0 {
        return invalid("cost_per_hour", "must be a finite number, 0 or more".into());
    }
    if spec.kinds.len() > MAX_MACHINE_KINDS {
        return invalid("kinds", format!("at most {MAX_MACHINE_KINDS}"));
    }
    let max_kind = config.limits.max_kind_bytes as usize;
    if let Some(kind) = spec
        .kinds
        .iter()
        .find(|k| k.is_empty() || k.len() > max_kind)
    {
        return invalid(
            "kinds",
            format!("{kind:?}: each must be 1 to {max_kind} bytes"),
        );
    }
    // Sorted so that machines running the same kinds share one profile.
    if !spec.kinds.windows(2).all(|w| w[0] < w[1]) {
        return invalid("kinds", "must be sorted without repeats".into());
    }
    Ok(())
}
