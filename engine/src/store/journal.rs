//! The journal: what every store call did, in order. Every call that changes a job or a
//! machine appends ONE entry holding its events, in the same atomic step as the change (a
//! Redis Stream entry added by the function's final flush, lua/journal.lua; an entry of
//! MemStore's `Journal`). It is bounded by length and by age on the store clock
//! (`[engine.journal]`). The API's histograms and SSE, `drover journal export`, the chaos
//! harness and incident replay all read it.
//!
//! Schema version `SCHEMA` (below) is what `drover journal export` writes, one JSON object per
//! event, documented in README.md ("The journal"). Raise it with any change to an event's
//! meaning or fields.

use crate::core::{JobId, JobResult, MachineId, Requirements, StateName, Time, Token};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;

/// The export schema's version.
pub const SCHEMA: u32 = 2;

/// An entry's place in the journal: the store time's millisecond and a sequence number within
/// it, as a Redis Stream id (`<ms>-<seq>`). Ids only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> Result<EntryId, String> {
        let bad = || format!("bad journal entry id {s:?}: expected MS-SEQ, e.g. 1700000000000-0");
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(EntryId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How an attempt the store ended (not its holder) came to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// Its lease was not renewed in time.
    Expired,
    /// It ran past its job's timeout.
    Overtime,
    /// Its machine was declared lost.
    Lost,
    /// Its machine deregistered.
    Gone,
    /// Its job was cancelled.
    Cancelled,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Expired => "expired",
            RevokeReason::Overtime => "overtime",
            RevokeReason::Lost => "lost",
            RevokeReason::Gone => "gone",
            RevokeReason::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RevokeReason> {
        [
            RevokeReason::Expired,
            RevokeReason::Overtime,
            RevokeReason::Lost,
            RevokeReason::Gone,
            RevokeReason::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One thing that happened. Times are the entry's (`at`); `until` is µs on the store clock.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JournalEvent {
    /// A job was accepted (a resubmission under a known idempotency key is not).
    Submitted {
        job: JobId,
        priority: u8,
        /// The class the store put it in (the `class` label of the queue metrics).
        class: u32,
        requirements: Arc<Requirements>,
    },
    /// An attempt started: `attempt` is 1 for the first.
    Leased {
        job: JobId,
        machine: MachineId,
        token: Token,
        attempt: u32,
    },
    /// The running attempt reported progress.
    Progress {
        job: JobId,
        token: Token,
        percent: u8,
        /// What the attempt said it is doing (at most 256 bytes).
        message: String,
    },
    /// The attempt holding `token` succeeded: the job is finished.
    Succeeded {
        job: JobId,
        token: Token,
    },
    /// What the job that just succeeded returned (JSON text), right after its `succeeded`.
    Result {
        job: JobId,
        result: JobResult,
    },
    /// The attempt holding `token` reported a failure of this class (`error`, `fatal`, `oom`,
    /// `disk_full`, `timed_out`); a `requeued` or a terminal event follows.
    Failed {
        job: JobId,
        token: Token,
        class: String,
    },
    /// The store ended the attempt holding `token`; a `requeued` or a terminal event follows
    /// (for `cancelled`, the `cancelled` event).
    Revoked {
        job: JobId,
        token: Token,
        reason: RevokeReason,
    },
    /// A draining machine gave back the attempt holding `token`, uncharged: the job is queued.
    Released {
        job: JobId,
        token: Token,
    },
    /// Back to its queue: at once (`until` absent) or after a backoff, at `until`.
    Requeued {
        job: JobId,
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<Time>,
    },
    /// Attempts exhausted, or a failure that must not be retried.
    Dead {
        job: JobId,
    },
    /// Its last attempt ran past its timeout.
    TimedOut {
        job: JobId,
    },
    /// No machine seen within `unworkable_after` could ever run it.
    Unworkable {
        job: JobId,
    },
    Cancelled {
        job: JobId,
    },
    /// A machine registered (or registered again under its name).
    Registered {
        machine: MachineId,
        name: String,
        pool: String,
    },
    /// A machine's heartbeat expired; its leases were revoked.
    Lost {
        machine: MachineId,
    },
    /// A machine left; its leases were revoked.
    Deregistered {
        machine: MachineId,
    },
}

impl JournalEvent {
    /// The event's name, as the export's `event` field and the SSE event type write it.
    pub fn name(&self) -> &'static str {
        use JournalEvent as E;
        match self {
            E::Submitted { .. } => "submitted",
            E::Leased { .. } => "leased",
            E::Progress { .. } => "progress",
            E::Succeeded { .. } => "succeeded",
            E::Result { .. } => "result",
            E::Failed { .. } => "failed",
            E::Revoked { .. } => "revoked",
            E::Released { .. } => "released",
            E::Requeued { .. } => "requeued",
            E::Dead { .. } => "dead",
            E::TimedOut { .. } => "timed_out",
            E::Unworkable { .. } => "unworkable",
            E::Cancelled { .. } => "cancelled",
            E::Registered { .. } => "registered",
            E::Lost { .. } => "lost",
            E::Deregistered { .. } => "deregistered",
        }
    }

    /// The job the event is about, if any.
    pub fn job(&self) -> Option<JobId> {
        use JournalEvent as E;
        match self {
            E::Submitted { job, .. }
            | E::Leased { job, .. }
            | E::Progress { job, .. }
            | E::Succeeded { job, .. }
            | E::Result { job, .. }
            | E::Failed { job, .. }
            | E::Revoked { job, .. }
            | E::Released { job, .. }
            | E::Requeued { job, .. }
            | E::Dead { job }
            | E::TimedOut { job }
            | E::Unworkable { job }
            | E::Cancelled { job } => Some(*job),
            E::Registered { .. } | E::Lost { .. } | E::Deregistered { .. } => None,
        }
    }

    /// The terminal state this event puts its job in, if it does.
    pub fn terminal(&self) -> Option<StateName> {
        match self {
            JournalEvent::Succeeded { .. } => Some(StateName::Succeeded),
            JournalEvent::Dead { .. } => Some(StateName::Dead),
            JournalEvent::TimedOut { .. } => Some(StateName::TimedOut),
            JournalEvent::Unworkable { .. } => Some(StateName::Unworkable),
            JournalEvent::Cancelled { .. } => Some(StateName::Cancelled),
            _ => None,
        }
    }

    /// The event for a job entering terminal state `state` other than by success.
    pub fn finished(job: JobId, state: StateName) -> Option<JournalEvent> {
        Some(match state {
            StateName::Dead => JournalEvent::Dead { job },
            StateName::TimedOut => JournalEvent::TimedOut { job },
            StateName::Unworkable => JournalEvent::Unworkable { job },
            StateName::Cancelled => JournalEvent::Cancelled { job },
            _ => return None,
        })
    }
}

/// One call's events, at the store time `at` (µs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JournalEntry {
    pub id: EntryId,
    pub at: Time,
    pub events: Vec<JournalEvent>,
}

impl JournalEntry {
    /// The first entry of store millisecond `ms`: what a reader of the journal sees, made by
    /// hand (the readers' tests build their journals with it).
    pub fn at_ms(ms: u64, events: Vec<JournalEvent>) -> JournalEntry {
        JournalEntry {
            id: EntryId { ms, seq: 0 },
            at: Time(ms * 1000),
            events,
        }
    }
}

#[cfg(feature = "production")]
impl JournalEntry {
    /// The entry's events as export lines (schema `SCHEMA`): one JSON object per event, its
    /// fields beside `schema`, the entry's `id` and `at` (µs on the store clock), and `event`.
    pub fn export_lines(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|event| self.export_line(event))
            .collect()
    }

    /// One of the entry's events as an export line (the SSE stream's data too).
    pub fn export_line(&self, event: &JournalEvent) -> String {
        let mut line = serde_json::Map::new();
        line.insert("schema".into(), SCHEMA.into());
        line.insert("id".into(), self.id.to_string().into());
        line.insert("at".into(), self.at.0.into());
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(event) {
            line.extend(fields);
        }
        serde_json::Value::Object(line).to_string()
    }
}

/// MemStore's journal: the same entries, ids and bounds as the Redis Stream.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    entries: VecDeque<JournalEntry>,
    /// The newest id ever given (Redis remembers it through trims too).
    last: Option<EntryId>,
    /// This call's events so far.
    pending: Vec<JournalEvent>,
    /// An age trim this call asked for: entries before this millisecond go.
    trim_before_ms: Option<u64>,
}

impl Journal {
    pub fn note(&mut self, event: JournalEvent) {
        self.pending.push(event);
    }

    /// Entries before store time `oldest` go when this call ends (the reaper's age trim).
    pub fn trim_before(&mut self, oldest: Time) {
        self.trim_before_ms = Some(oldest.0 / 1000);
    }

    /// Ends a call at store time `now`: its events become one entry, then the journal is
    /// trimmed to `max_len` entries and by any age trim the call asked for.
    pub fn end_call(&mut self, now: Time, max_len: u32) {
        if !self.pending.is_empty() && max_len > 0 {
            let ms = now.0 / 1000;
            let seq = match self.last {
                Some(last) if last.ms == ms => last.seq + 1,
                _ => 0,
            };
            let id = EntryId { ms, seq };
            self.last = Some(id);
            self.entries.push_back(JournalEntry {
                id,
                at: now,
                events: std::mem::take(&mut self.pending),
            });
            while self.entries.len() > max_len as usize {
                self.entries.pop_front();
            }
        }
        self.pending.clear();
        if let Some(ms) = self.trim_before_ms.take() {
            while self.entries.front().is_some_and(|e| e.id.ms < ms) {
                self.entries.pop_front();
            }
        }
    }

    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &JournalEntry> {
        self.entries.iter()
    }

    /// Entries after `after` (all with `None`), at most `limit`.
    pub fn read(&self, after: Option<EntryId>, limit: usize) -> Vec<JournalEntry> {
        self.entries
            .iter()
            .filter(|e| after.is_none_or(|a| e.id > a))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "production")]
    #[test]
    fn names_are_the_export_tags() {
        let events = [
            JournalEvent::Dead { job: JobId(1) },
            JournalEvent::TimedOut { job: JobId(1) },
            JournalEvent::Lost {
                machine: MachineId(2),
            },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["event"], event.name());
        }
    }

    #[test]
    fn ids_follow_the_millisecond_and_count_within_it() {
        let mut j = Journal::default();
        let event = || JournalEvent::Dead { job: JobId(1) };
        for us in [1_000_100, 1_000_900, 1_001_000, 1_001_000] {
            j.note(event());
            j.end_call(Time(us), 10);
        }
        let ids: Vec<String> = j.entries().map(|e| e.id.to_string()).collect();
        assert_eq!(ids, ["1000-0", "1000-1", "1001-0", "1001-1"]);
        assert_eq!(
            "1001-1".parse::<EntryId>(),
            Ok(EntryId { ms: 1001, seq: 1 })
        );
        assert!("1001".parse::<EntryId>().is_err());
    }

    #[test]
    fn bounded_by_length_and_by_age_and_ids_never_repeat() {
        let mut j = Journal::default();
        for i in 0..5u64 {
            j.note(JournalEvent::Dead { job: JobId(i) });
            j.end_call(Time(i * 1_000_000), 3);
        }
        assert_eq!(j.entries().count(), 3, "max_len");
        j.trim_before(Time(4_000_000));
        j.end_call(Time(4_000_000), 3);
        assert_eq!(j.entries().count(), 1, "age: entries before 4 s went");
        j.note(JournalEvent::Dead { job: JobId(9) });
        j.end_call(Time(4_000_500), 0);
        assert_eq!(j.entries().count(), 1, "max_len 0: the journal is off");
    }
}
