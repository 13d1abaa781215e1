//! Judging a run: the history (every acknowledged submission from the client's side, every
//! lease, outcome and requeue from the journal) goes through the simulator's checker, and the
//! figures come from the same history: jobs by terminal state, queue wait and completion time,
//! and redistribution (a machine's death to its jobs being leased again).

use crate::producer::Book;
use drover_engine::check::{Checker, HistoryEvent, JournalHistory};
use drover_engine::core::{JobId, MachineId, Span, StateName, Time};
use drover_engine::store::journal::{JournalEntry, JournalEvent};
use drover_sim::metrics::Summary;
use drover_sim::report::JobCounts;
use std::collections::{BTreeMap, HashMap};

/// How far a journal `submitted` may lie outside its acknowledgement's request and reply
/// (clock reads on one host, µs apart).
const MATCH_SLACK: Span = Span::from_millis(5);

/// A run's history, and the jobs the producer saw finish that a lossy restart then made the
/// server forget (counted in their state, not judged again).
pub struct History {
    pub events: Vec<HistoryEvent>,
    pub forgotten_settled: Vec<StateName>,
}

/// The history of a run, in order: the journal's events, and a `Submitted` at the time the
/// request was first sent for each acknowledged job the journal does not show (lost, or its
/// entry trimmed): the checker then reports it unless the store still holds it. An
/// acknowledgement is matched to the journal's `submitted` by id and time, since a restart
/// that loses writes reissues ids. Times are from `origin` (the run's start), so a violation
/// says when in the run it happened.
pub fn history(entries: &[JournalEntry], book: &Book, origin: Time) -> History {
    let mut events = Vec::new();
    let mut from_journal = JournalHistory::new();
    for entry in entries {
        from_journal.entry(entry, &mut events);
    }
    let mut journaled: HashMap<JobId, Vec<Time>> = HashMap::new();
    for event in &events {
        if let HistoryEvent::Submitted { job, at } = *event {
            journaled.entry(job).or_default().push(at);
        }
    }
    let mut missing = Vec::new();
    let mut forgotten_settled = Vec::new();
    for (logical, ack) in book.acks.iter().enumerate() {
        let Some(ack) = ack else { continue };
        let (from, to) = (
            Time(ack.sent_at.0.saturating_sub(MATCH_SLACK.as_micros())),
            ack.first_at.plus(MATCH_SLACK),
        );
        let matched = journaled
            .get(&ack.job)
            .is_some_and(|times| times.iter().any(|t| (from..=to).contains(t)));
        if matched {
            continue;
        }
        match book.settled.get(&(logical as u64)) {
            Some(&state) => forgotten_settled.push(state),
            None => missing.push(HistoryEvent::Submitted {
                job: ack.job,
                at: ack.sent_at,
            }),
        }
    }
    missing.sort_by_key(|e| e.at());
    let mut merged = Vec::with_capacity(events.len() + missing.len());
    let mut missing = missing.into_iter().peekable();
    for event in events {
        while missing.peek().is_some_and(|m| m.at() <= event.at()) {
            merged.extend(missing.next());
        }
        merged.push(event);
    }
    merged.extend(missing);
    History {
        events: merged.into_iter().map(|e| from_origin(e, origin)).collect(),
        forgotten_settled,
    }
}

/// `event` with its time counted from `origin`.
fn from_origin(mut event: HistoryEvent, origin: Time) -> HistoryEvent {
    match &mut event {
        HistoryEvent::Submitted { at, .. }
        | HistoryEvent::Leased { at, .. }
        | HistoryEvent::Requeued { at, .. }
        | HistoryEvent::Finished { at, .. }
        | HistoryEvent::Started { at, .. }
        | HistoryEvent::Stopped { at, .. } => *at = Time(at.0.saturating_sub(origin.0)),
    }
    event
}

/// The checker's verdict over `history`, before the end-of-run checks.
pub fn check(history: &[HistoryEvent]) -> Checker {
    let mut checker = Checker::new();
    for event in history {
        checker.observe(event);
    }
    checker
}

/// Per job: when it was submitted, its last lease, how it ended.
#[derive(Clone, Copy, Default)]
struct JobLife {
    submitted: Option<Time>,
    last_lease: Option<Time>,
    finished: Option<(StateName, Time)>,
}

/// The figures of a run. Times are scenario seconds: real seconds times the time scale.
pub struct Figures {
    pub jobs: JobCounts,
    pub wait_s: Summary,
    pub jct_s: Summary,
    pub measured: u64,
    pub warmup_excluded: u64,
}

/// Counts and latencies from `history`. `live` maps each job still live at the end to the
/// state the store holds it in; `lost` is how many jobs the checker found lost; jobs
/// submitted before `warmup_end` are left out of the latencies.
pub fn figures(
    history: &History,
    submitted: u64,
    live: &BTreeMap<JobId, Option<StateName>>,
    lost: u64,
    warmup_end: Time,
    scale: f64,
) -> Figures {
    let mut lives: HashMap<JobId, JobLife> = HashMap::new();
    for event in &history.events {
        match *event {
            HistoryEvent::Submitted { job, at } => {
                lives.entry(job).or_default().submitted = Some(at)
            }
            HistoryEvent::Leased { job, at, .. } => {
                lives.entry(job).or_default().last_lease = Some(at)
            }
            HistoryEvent::Finished { job, state, at, .. } => {
                lives.entry(job).or_default().finished = Some((state, at))
            }
            _ => {}
        }
    }
    let mut jobs = JobCounts {
        submitted,
        succeeded: 0,
        dead: 0,
        cancelled: 0,
        timed_out: 0,
        unworkable: 0,
        in_flight: 0,
        lost,
        in_flight_states: BTreeMap::new(),
    };
    let (mut waits, mut jcts, mut excluded) = (Vec::new(), Vec::new(), 0);
    let secs = |a: Time, b: Time| b.since(a).as_secs_f64() * scale;
    for &state in &history.forgotten_settled {
        count_terminal(&mut jobs, state);
    }
    for life in lives.values() {
        let Some((state, finished)) = life.finished else {
            continue;
        };
        count_terminal(&mut jobs, state);
        if let (StateName::Succeeded, Some(submitted), Some(leased)) =
            (state, life.submitted, life.last_lease)
        {
            if submitted < warmup_end {
                excluded += 1;
                continue;
            }
            waits.push(secs(submitted, leased));
            jcts.push(secs(submitted, finished));
        }
    }
    for state in live.values().flatten().filter(|s| !s.is_terminal()) {
        jobs.in_flight += 1;
        *jobs
            .in_flight_states
            .entry(format!("{state:?}").to_lowercase())
            .or_default() += 1;
    }
    Figures {
        jobs,
        measured: waits.len() as u64,
        wait_s: summary(waits),
        jct_s: summary(jcts),
        warmup_excluded: excluded,
    }
}

fn count_terminal(jobs: &mut JobCounts, state: StateName) {
    match state {
        StateName::Succeeded => jobs.succeeded += 1,
        StateName::Dead => jobs.dead += 1,
        StateName::Cancelled => jobs.cancelled += 1,
        StateName::TimedOut => jobs.timed_out += 1,
        _ => jobs.unworkable += 1,
    }
}

/// Mean and quantiles (nearest rank) of `values`; zeros when empty.
pub fn summary(mut values: Vec<f64>) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    values.sort_by(f64::total_cmp);
    let q = |p: f64| values[((p * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
    Summary {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: values[values.len() - 1],
    }
}

/// A machine the harness killed: when (wall clock µs) and its name.
#[derive(Clone, Debug)]
pub struct Kill {
    pub at: Time,
    pub machine: String,
}

/// Redistribution delays in seconds (scenario time): from each kill to the next lease of every
/// job the killed machine held then. Jobs that ended otherwise (cancelled, dead) are not
/// counted; jobs never leased again by the end are returned apart.
pub fn redistribution(entries: &[JournalEntry], kills: &[Kill], scale: f64) -> (Vec<f64>, usize) {
    let mut kills: Vec<&Kill> = kills.iter().collect();
    kills.sort_by_key(|k| k.at);
    let mut kills = kills.into_iter().peekable();
    let mut names: HashMap<&str, MachineId> = HashMap::new();
    let mut holder: HashMap<JobId, MachineId> = HashMap::new();
    let mut waiting: HashMap<JobId, Time> = HashMap::new();
    let mut delays = Vec::new();
    for entry in entries {
        while let Some(kill) = kills.next_if(|k| k.at <= entry.at) {
            if let Some(&machine) = names.get(kill.machine.as_str()) {
                for (&job, _) in holder.iter().filter(|(_, &m)| m == machine) {
                    waiting.entry(job).or_insert(kill.at);
                }
            }
        }
        for event in &entry.events {
            match event {
                JournalEvent::Registered { machine, name, .. } => {
                    names.insert(name.as_str(), *machine);
                }
                JournalEvent::Leased { job, machine, .. } => {
                    holder.insert(*job, *machine);
                    if let Some(killed_at) = waiting.remove(job) {
                        delays.push(entry.at.since(killed_at).as_secs_f64() * scale);
                    }
                }
                JournalEvent::Succeeded { job, .. }
                | JournalEvent::Failed { job, .. }
                | JournalEvent::Revoked { job, .. }
                | JournalEvent::Released { job, .. } => {
                    holder.remove(job);
                }
                e if e.terminal().is_some() => {
                    if let Some(job) = e.job() {
                        waiting.remove(&job);
                    }
                }
                _ => {}
            }
        }
    }
    (delays, waiting.len())
}

/// The liveness bound: how long after the last fault healed every job submitted before must
/// be terminal. A machine cut off is declared lost after `machine_ttl`, its leases are revoked
/// within `lease_ttl`, and the job's next attempt runs at most its service time (scaled).
pub fn liveness_bound(config: &drover_engine::core::EngineConfig, longest_service: Span) -> Span {
    config
        .machine_ttl
        .plus(config.lease_ttl)
        .plus(config.reaper_period)
        .plus(config.backoff_max)
        .plus(longest_service)
        .plus(Span::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_engine::core::Token;

    #[test]
    fn redistribution_runs_from_the_kill_to_the_next_lease() {
        let (m1, m2, job) = (MachineId(1), MachineId(2), JobId(7));
        let entries = vec![
            JournalEntry::at_ms(
                1000,
                vec![JournalEvent::Registered {
                    machine: m1,
                    name: "a-0".into(),
                    pool: "a".into(),
                }],
            ),
            JournalEntry::at_ms(
                1100,
                vec![JournalEvent::Leased {
                    job,
                    machine: m1,
                    token: Token(5),
                    attempt: 1,
                }],
            ),
            JournalEntry::at_ms(
                9000,
                vec![
                    JournalEvent::Revoked {
                        job,
                        token: Token(5),
                        reason: drover_engine::store::journal::RevokeReason::Lost,
                    },
                    JournalEvent::Requeued { job, until: None },
                ],
            ),
            JournalEntry::at_ms(
                9500,
                vec![JournalEvent::Leased {
                    job,
                    machine: m2,
                    token: Token(6),
                    attempt: 2,
                }],
            ),
        ];
        let kills = [Kill {
            at: Time(2_000_000),
            machine: "a-0".into(),
        }];
        let (delays, never) = redistribution(&entries, &kills, 1.0);
        assert_eq!(never, 0);
        assert_eq!(delays.len(), 1);
        assert!((delays[0] - 7.5).abs() < 1e-9, "{delays:?}");
    }

    #[test]
    fn an_acknowledged_job_the_journal_lacks_is_reported_lost() {
        let mut book = Book::default();
        book.acks.push(Some(crate::producer::Ack {
            job: JobId(3),
            first_at: Time(5),
            sent_at: Time(4),
        }));
        let history = history(&[], &book, Time(0));
        assert_eq!(history.events.len(), 1);
        let mut checker = check(&history.events);
        checker.check_nothing_lost(Time(10), |_| None);
        assert_eq!(checker.violation_count(), 1);
        assert_eq!(
            checker.violations()[0].invariant,
            drover_engine::check::Invariant::NoJobLost
        );
    }
}
