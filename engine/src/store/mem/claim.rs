//! Claims: the best fitting class head for a machine's offer, leased in one step; and the
//! wake-ups that let idle machines wait instead of poll.

use super::{ClassRecord, MachineState, MemStore, ProfileRecord};
use crate::check::history::HistoryEvent;
use crate::core::class::{offer_fits, profile_allows};
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
        if let Some((last_seq, granted)) = self.machines[&machine].last_claim {
            if seq == last_seq {
                return Ok(self.repeat_claim(machine, granted));
            }
            if seq < last_seq {
                return Ok(Reply::NoWork);
            }
        }
        self.touch(machine);
        self.promote_due(self.config.reap_batch);
        self.stop_waiting(machine);
        let Some(class) = self.best_class(machine, &offer) else {
            self.machines
                .get_mut(&machine)
                .expect("known machine")
                .last_claim = Some((seq, None));
            self.start_waiting(machine, offer);
            return Ok(Reply::NoWork);
        };
        let (_, &(job, _)) = self.classes[class.0 as usize]
            .queue
            .first_key_value()
            .expect("a non-empty class has a head");
        self.unqueue(job);
        let grant = self.lease(job, machine);
        self.machines
            .get_mut(&machine)
            .expect("known machine")
            .last_claim = Some((seq, Some((job, grant.token))));
        Ok(Reply::Granted(grant))
    }

    /// The answer to a claim seen before: its grant if that lease still stands.
    fn repeat_claim(&self, machine: MachineId, granted: Option<(JobId, Token)>) -> Reply {
        let Some((job, token)) = granted else {
            return Reply::NoWork;
        };
        let Some(record) = self.jobs.get(&job) else {
            return Reply::NoWork;
        };
        match record.state {
            JobState::Leased {
                machine: holder,
                token: live,
                deadline,
            } if holder == machine && live == token => Reply::Granted(Grant {
                job,
                token,
                attempt: record.attempt,
                deadline,
                spec: record.spec.clone(),
            }),
            _ => Reply::NoWork,
        }
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
