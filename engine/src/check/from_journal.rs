//! A job history rebuilt from the journal: what the chaos harness (and anyone holding a
//! journal) feeds the checker. The journal says how a lease ended (`failed`, `revoked`) in one
//! event and what followed (`requeued`, a terminal state) in the next; this joins the two into
//! the history's single `Requeued`/`Finished` event, as `MemStore::record_history` emits it.

use super::history::{HistoryEvent, LeaseEnd};
use crate::core::{JobId, StateName, Time};
use crate::store::journal::{JournalEntry, JournalEvent};
use rustc_hash::FxHashMap;

/// Turns journal entries, in order, into history events. Keeps, per job, only the lease end
/// waiting for the event that settles it.
#[derive(Debug, Default)]
pub struct JournalHistory {
    pending: FxHashMap<JobId, LeaseEnd>,
}

impl JournalHistory {
    pub fn new() -> JournalHistory {
        JournalHistory::default()
    }

    /// The history events of one entry, appended to `out`.
    pub fn entry(&mut self, entry: &JournalEntry, out: &mut Vec<HistoryEvent>) {
        for event in &entry.events {
            if let Some(history) = self.event(event, entry.at) {
                out.push(history);
            }
        }
    }

    fn event(&mut self, event: &JournalEvent, at: Time) -> Option<HistoryEvent> {
        use JournalEvent as E;
        let ended = |token, reported| Some(LeaseEnd { token, reported });
        match *event {
            E::Submitted { job, .. } => Some(HistoryEvent::Submitted { job, at }),
            E::Leased {
                job,
                machine,
                token,
                ..
            } => Some(HistoryEvent::Leased {
                job,
                token,
                machine,
                at,
            }),
            E::Succeeded { job, token } => Some(HistoryEvent::Finished {
                job,
                state: StateName::Succeeded,
                at,
                ended: ended(token, true),
            }),
            E::Failed { job, token, .. } => {
                self.pending.insert(
                    job,
                    LeaseEnd {
                        token,
                        reported: true,
                    },
                );
                None
            }
            E::Revoked { job, token, .. } => {
                self.pending.insert(
                    job,
                    LeaseEnd {
                        token,
                        reported: false,
                    },
                );
                None
            }
            // A release requeues the job at once, with no `requeued` event of its own.
            E::Released { job, token } => Some(HistoryEvent::Requeued {
                job,
                at,
                ended: ended(token, true),
            }),
            E::Requeued { job, .. } => Some(HistoryEvent::Requeued {
                job,
                at,
                ended: self.pending.remove(&job),
            }),
            E::Dead { job }
            | E::TimedOut { job }
            | E::Unworkable { job }
            | E::Cancelled { job } => {
                let state = event.terminal().expect("a terminal event");
                Some(HistoryEvent::Finished {
                    job,
                    state,
                    at,
                    ended: self.pending.remove(&job),
                })
            }
            E::Progress { .. }
            | E::Result { .. }
            | E::Registered { .. }
            | E::Lost { .. }
            | E::Deregistered { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Checker;
    use crate::core::{EngineConfig, Outcome, Span};
    use crate::store::conformance::{error, job, machine, offer};
    use crate::store::{MemStore, Refusal, Reply, Request};

    struct Clocked {
        store: MemStore,
        now: Time,
    }

    impl Clocked {
        fn apply(&mut self, request: Request) -> Result<Reply, Refusal> {
            self.now = self.now.plus(Span::from_millis(10));
            self.store.apply(self.now, request)
        }
    }

    /// The journal, turned into a history, must say what the store's own history says: leases,
    /// a success, a retryable failure then a release, a revocation, a cancel.
    #[test]
    fn the_journal_gives_the_stores_own_history() {
        let mut store = MemStore::new(EngineConfig::default());
        store.record_history();
        store.record_journal();
        let mut s = Clocked {
            store,
            now: Time(1_000_000),
        };
        let m = match s.apply(Request::Register(Box::new(machine("m", 2, 24)))) {
            Ok(Reply::Registered { machine, .. }) => machine,
            other => panic!("register: {other:?}"),
        };
        for _ in 0..4 {
            s.apply(Request::Submit(Box::new(job(1, 8)))).unwrap();
        }
        let claim = |seq| Request::Claim {
            machine: m,
            seq,
            offer: offer(2, 24),
        };
        let grants = match s.apply(claim(1)) {
            Ok(Reply::Claimed { grants, .. }) => grants,
            other => panic!("claim: {other:?}"),
        };
        assert_eq!(grants.len(), 2, "two GPUs, two grants");
        let complete = |g: &crate::store::request::Grant, outcome| Request::Complete {
            job: g.job,
            token: g.token,
            outcome,
            result: None,
        };
        s.apply(complete(&grants[0], Outcome::Succeeded)).unwrap();
        s.apply(complete(&grants[1], error(true))).unwrap();
        // A repeat of a recorded outcome changes nothing and journals nothing.
        s.apply(complete(&grants[0], Outcome::Succeeded)).unwrap();
        let next = match s.apply(claim(2)) {
            Ok(Reply::Claimed { grants, .. }) => grants,
            other => panic!("claim: {other:?}"),
        };
        assert!(!next.is_empty());
        s.apply(Request::Release {
            job: next[0].job,
            token: next[0].token,
        })
        .unwrap();
        s.apply(Request::Deregister { machine: m }).unwrap();
        let last = s.apply(Request::Submit(Box::new(job(1, 8))));
        if let Ok(Reply::Submitted { job, .. }) = last {
            s.apply(Request::Cancel { job }).unwrap();
        }

        let mut rebuilt = Vec::new();
        let mut from_journal = JournalHistory::new();
        for entry in s.store.journal().expect("journal on").entries() {
            from_journal.entry(entry, &mut rebuilt);
        }
        let own: Vec<HistoryEvent> = s.store.drain_history().collect();
        assert!(own.len() >= 10, "a real history: {own:?}");
        assert_eq!(rebuilt, own);
        let mut checker = Checker::new();
        rebuilt.iter().for_each(|e| checker.observe(e));
        assert_eq!(checker.violations(), &[]);
    }
}
