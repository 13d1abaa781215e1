//! The engine's own overheads, which the simulator must model, measured from the journal in
//! real seconds (never scaled):
//!
//! - submission to lease, for jobs submitted while a GPU was free (an idle fleet's dispatch);
//! - lease to outcome, less the job's own sleep: starting the attempt and recording its end;
//! - outcome to the machine's next lease, while jobs were queued: how soon a freed GPU is
//!   busy again.

use drover_engine::core::{JobId, MachineId, Time};
use drover_engine::store::journal::{JournalEntry, JournalEvent};
use drover_sim::metrics::Summary;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Overheads {
    pub submit_to_lease_idle_s: Summary,
    pub end_to_outcome_s: Summary,
    pub outcome_to_next_lease_s: Summary,
}

/// What the walk keeps: free GPUs, queued jobs, open leases and machines' last outcomes.
#[derive(Default)]
struct Walk {
    gpus: HashMap<MachineId, u32>,
    busy: u32,
    queued: i64,
    submitted_free: HashMap<JobId, Time>,
    leased: HashMap<JobId, (Time, MachineId)>,
    freed: HashMap<MachineId, Time>,
    dispatch: Vec<f64>,
    outcome: Vec<f64>,
    next_lease: Vec<f64>,
}

/// `gpus_of_pool` gives a pool's GPUs per machine; `sleep` a job's sleep in real seconds.
pub fn measure(
    entries: &[JournalEntry],
    gpus_of_pool: impl Fn(&str) -> u32,
    sleep: impl Fn(JobId) -> Option<f64>,
) -> Overheads {
    let mut w = Walk::default();
    let secs = |a: Time, b: Time| b.since(a).as_secs_f64();
    for entry in entries {
        let at = entry.at;
        for event in &entry.events {
            match event {
                JournalEvent::Registered { machine, pool, .. } => {
                    w.gpus.insert(*machine, gpus_of_pool(pool));
                }
                JournalEvent::Lost { machine } | JournalEvent::Deregistered { machine } => {
                    w.gpus.remove(machine);
                }
                JournalEvent::Submitted { job, .. } => {
                    w.queued += 1;
                    let total: u32 = w.gpus.values().sum();
                    if w.busy < total && w.queued == 1 {
                        w.submitted_free.insert(*job, at);
                    }
                }
                JournalEvent::Requeued { .. } | JournalEvent::Released { .. } => w.queued += 1,
                JournalEvent::Leased { job, machine, .. } => {
                    w.queued -= 1;
                    w.busy += 1;
                    if let Some(submitted) = w.submitted_free.remove(job) {
                        w.dispatch.push(secs(submitted, at));
                    }
                    if let Some(freed) = w.freed.remove(machine) {
                        w.next_lease.push(secs(freed, at));
                    }
                    w.leased.insert(*job, (at, *machine));
                }
                JournalEvent::Succeeded { job, .. } => {
                    if let Some((leased_at, machine)) = w.leased.remove(job) {
                        w.busy = w.busy.saturating_sub(1);
                        if let Some(sleep) = sleep(*job) {
                            w.outcome.push((secs(leased_at, at) - sleep).max(0.0));
                        }
                        // Only a freed GPU with work waiting measures the next lease.
                        if w.queued > 0 {
                            w.freed.insert(machine, at);
                        }
                    }
                }
                JournalEvent::Failed { job, .. } | JournalEvent::Revoked { job, .. }
                    if w.leased.remove(job).is_some() =>
                {
                    w.busy = w.busy.saturating_sub(1);
                }
                _ => {}
            }
        }
    }
    Overheads {
        submit_to_lease_idle_s: crate::judge::summary(w.dispatch),
        end_to_outcome_s: crate::judge::summary(w.outcome),
        outcome_to_next_lease_s: crate::judge::summary(w.next_lease),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_engine::core::Token;

    #[test]
    fn measures_dispatch_outcome_and_next_lease() {
        let (m, j1, j2) = (MachineId(1), JobId(1), JobId(2));
        let req = std::sync::Arc::new(Default::default());
        let submitted = |job| JournalEvent::Submitted {
            job,
            priority: 50,
            class: 0,
            requirements: std::sync::Arc::clone(&req),
        };
        let leased = |job, token| JournalEvent::Leased {
            job,
            machine: m,
            token: Token(token),
            attempt: 1,
        };
        let entries = vec![
            JournalEntry::at_ms(
                1000,
                vec![JournalEvent::Registered {
                    machine: m,
                    name: "a".into(),
                    pool: "p".into(),
                }],
            ),
            JournalEntry::at_ms(2000, vec![submitted(j1)]),
            JournalEntry::at_ms(2004, vec![leased(j1, 1)]),
            // j2 queues behind j1 on the one GPU.
            JournalEntry::at_ms(2500, vec![submitted(j2)]),
            JournalEntry::at_ms(
                3020,
                vec![JournalEvent::Succeeded {
                    job: j1,
                    token: Token(1),
                }],
            ),
            JournalEntry::at_ms(3023, vec![leased(j2, 2)]),
        ];
        let o = measure(&entries, |_| 1, |job| (job == j1).then_some(1.0));
        assert_eq!(
            o.submit_to_lease_idle_s.max, 0.004,
            "only j1 found a free GPU"
        );
        assert!((o.end_to_outcome_s.p50 - 0.016).abs() < 1e-9, "{o:?}");
        assert!(
            (o.outcome_to_next_lease_s.p50 - 0.003).abs() < 1e-9,
            "{o:?}"
        );
    }
}
