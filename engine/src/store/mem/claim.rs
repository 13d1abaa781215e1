//! Claims: the best fitting class head for a machine's offer, leased in one step; and the
//! wake-ups that let idle machines wait instead of poll.

use super::{ClassRecord, MachineState, MemStore, ProfileRecord};
use crate::check::history::HistoryEvent;
use crate::core::class::{offer_after, offer_fits, profile_allows};
use crate::core::policy::{better, score, Head};
use crate::core::{ClassId, EngineConfig, JobId, JobState, MachineId, Offer, ProfileId, Token};
use crate::store::request::{Grant, Refusal, Reply};

/// Waiting machines looked at per profile before a wake-up gives up on that profile.
const WAKE_SCAN: usize = 32;

/// Whether machines of `profile` could ever run `class`; judged once, then cached.
pub(super) fn allows(
    classes: &mut [ClassRecord],
    profiles: &[ProfileRecord],
    config: &EngineConfig,
    class: ClassId,
    profile: ProfileId,
) -> bool {
    let record = &mut classes[class.0 as usize];
    let i = profile.0 as usize;
    if record.allows.len() <= i {
        record.allows.resize(profiles.len().max(i + 1), 0);
    }
    if record.allows[i] == 0 {
        let fits = profile_allows(&record.req, &profiles[i].profile, config);
        record.allows[i] = if fits { 2 } else { 1 };
    }
    record.allows[i] == 2
}

impl MemStore {
    pub(super) fn claim(
        &mut self,
        machine: MachineId,
        seq: u64,
        offer: Offer,
    ) -> Result<Reply, Refusal> {
        self.ready_machine(machine)?;
        if let Some((last_seq, granted, idle)) = &self.machines[&machine].last_claim {
            if seq == *last_seq {
                let (granted, idle) = (granted.clone(), *idle);
                return Ok(self.repeat_claim(machine, &granted, idle));
            }
            if seq < *last_seq {
                return Ok(Reply::Claimed {
                    grants: Vec::new(),
                    idle: false,
                });
            }
        }
        self.touch(machine);
        self.promote_due(self.config.reap_batch);
        self.stop_waiting(machine);
        let mut left = offer;
        let mut grants = Vec::new();
        let max_grants = self.config.limits.max_grants_per_claim as usize;
        let mut idle = false;
        while grants.len() < max_grants {
            let Some(class) = self.best_class(machine, &left) else {
                // A machine whose GPUs are all taken now is busy, not idle: it claims again
                // when one frees up.
                idle = !(offer.free_gpus > 0 && left.free_gpus == 0);
                break;
            };
            let (_, &(job, _)) = self.classes[class.0 as usize]
                .queue
                .first_key_value()
                .expect("a non-empty class has a head");
            self.unqueue(job);
            left = offer_after(&left, &self.classes[class.0 as usize].req, &self.config);
            grants.push(self.lease(job, machine));
        }
        let granted = grants.iter().map(|g| (g.job, g.token)).collect();
        self.machines
            .get_mut(&machine)
            .expect("known machine")
            .last_claim = Some((seq, granted, idle));
        if idle {
            self.start_waiting(machine, left);
        }
        Ok(Reply::Claimed { grants, idle })
    }

    /// The answer to a claim seen before: its grants whose leases still stand.
    fn repeat_claim(&self, machine: MachineId, granted: &[(JobId, Token)], idle: bool) -> Reply {
        let grants = granted
            .iter()
            .filter_map(|&(job, token)| {
                let record = self.jobs.get(&job)?;
                match record.state {
                    JobState::Leased {
                        machine: holder,
                        token: live,
                        deadline,
                    } if holder == machine && live == token => Some(Grant {
                        job,
                        token,
                        attempt: record.attempt,
                        deadline,
                        spec: record.spec.clone(),
                    }),
                    _ => None,
                }
            })
            .collect();
        Reply::Claimed { grants, idle }
    }

    fn best_class(&mut self, machine: MachineId, offer: &Offer) -> Option<ClassId> {
        let profile = self.machines[&machine].profile;
        let now = self.now;
        let mut best: Option<((i64, u64), ClassId)> = None;
        for &class in &self.nonempty {
            if !allows(
                &mut self.classes,
                &self.profiles,
                &self.config,
                class,
                profile,
            ) {
                continue;
            }
            let record = &self.classes[class.0 as usize];
            if !offer_fits(&record.req, offer, &self.config) {
                continue;
            }
            let (&(priority, seq), &(_, submitted_at)) =
                record.queue.first_key_value().expect("non-empty class");
            let head = Head {
                priority: priority.0,
                waited: now.since(submitted_at),
                seq,
            };
            let rank = (score(head, &record.req, offer, &self.config), seq);
            if best.is_none_or(|(b, _)| better(rank, b)) {
                best = Some((rank, class));
            }
        }
        best.map(|(_, class)| class)
    }

    fn lease(&mut self, job: JobId, machine: MachineId) -> Grant {
        let now = self.now;
        let ttl = self.config.lease_ttl;
        let record = self.jobs.get_mut(&job).expect("lease of a known job");
        record.attempt += 1;
        // Tokens follow the store clock as well as counting up, so a lease granted after a
        // restart that lost writes still outranks every lease granted before it.
        let token = Token((record.token.0 + 1).max(now.0));
        record.token = token;
        let deadline = now.plus(ttl);
        record.attempt_deadline = now.plus(record.spec.timeout);
        record.expiry = deadline.min(record.attempt_deadline);
        record.state = JobState::Leased {
            machine,
            token,
            deadline,
        };
        record.started_at = Some(now);
        let grant = Grant {
            job,
            token,
            attempt: record.attempt,
            deadline,
            spec: record.spec.clone(),
        };
        self.lease_expiry.insert((record.expiry, job));
        self.machines
            .get_mut(&machine)
            .expect("known machine")
            .leases
            .push(job);
        self.counts.leased += 1;
        self.emit(HistoryEvent::Leased {
            job,
            token,
            machine,
            at: now,
        });
        self.jot(crate::store::journal::JournalEvent::Leased {
            job,
            machine,
            token,
            attempt: grant.attempt,
        });
        grant
    }

    fn start_waiting(&mut self, machine: MachineId, offer: Offer) {
        let seq = self.next_seq();
        let record = self.machines.get_mut(&machine).expect("known machine");
        record.waiting = Some((seq, offer));
        self.waiting
            .entry(record.profile)
            .or_default()
            .insert((seq, machine));
    }

    pub(super) fn stop_waiting(&mut self, machine: MachineId) {
        let record = self.machines.get_mut(&machine).expect("known machine");
        if let Some((seq, _)) = record.waiting.take() {
            let line = self
                .waiting
                .get_mut(&record.profile)
                .expect("waiting machine has a line");
            line.remove(&(seq, machine));
        }
    }

    /// Wakes the machine that has waited longest among those whose last offer fits `class`.
    pub(super) fn wake_one_for(&mut self, class: ClassId) {
        let mut chosen = None;
        for (&profile, line) in &self.waiting {
            if line.is_empty()
                || !allows(
                    &mut self.classes,
                    &self.profiles,
                    &self.config,
                    class,
                    profile,
                )
            {
                continue;
            }
            let req = &self.classes[class.0 as usize].req;
            chosen = line.iter().take(WAKE_SCAN).find(|(_, m)| {
                let (_, offer) = self.machines[m].waiting.expect("in line, so waiting");
                offer_fits(req, &offer, &self.config)
            });
            if chosen.is_some() {
                break;
            }
        }
        if let Some(&(_, machine)) = chosen {
            self.stop_waiting(machine);
            self.wakes.push(machine);
        }
    }

    /// The machine if it is registered and not lost.
    pub(super) fn ready_machine(&self, machine: MachineId) -> Result<(), Refusal> {
        match self.machines.get(&machine).map(|m| m.state) {
            None => Err(Refusal::UnknownMachine(machine)),
            Some(MachineState::Ready) => Ok(()),
            Some(_) => Err(Refusal::MachineLost(machine)),
        }
    }
}
