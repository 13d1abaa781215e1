//! A store's state, decoded into one canonical form: what the store knows about its jobs,
//! queues and machines, whatever its representation. `MemStore::dump` builds it from memory,
//! `RedisStore::dump` (redis/dump.rs) decodes it from a namespace's keys, and the conformance
//! suite (`conformance::run_paired`) demands that the two agree after every step, so the suite
//! compares what the stores hold, not only what they answer. `drover inspect` shows it to
//! operators.
//!
//! Canonical: every collection is sorted (jobs, classes, profiles and machines by id; delayed
//! jobs by release time, then id) or kept in the order the store itself keeps (a class queue in
//! claim order, a machine's leases in its list's order, the finished list in purge order), so
//! two stores with the same state give equal dumps.
//!
//! Left out on purpose, because the two stores legitimately keep them differently:
//! - the store clock is kept (`clock`) but not compared (`diff`): MemStore moves its clock for
//!   every request it is given, Redis only when a script runs, and a request the Rust side
//!   refuses before sending (an invalid job) never reaches the script;
//! - indexes that are derived from the records below (class queues' membership set
//!   `nonempty`, machines by name, by heartbeat expiry and by earliest lease expiry, idle lines,
//!   the idempotency map, the class and profile interning maps, Redis's list of job ids): each
//!   store checks its own against its records and reports a disagreement in `anomalies`,
//!   instead of dumping them. MemStore's lease expiry index in particular is lazy (a renewal
//!   leaves the old entry until the reaper reaches it), so it cannot be compared at all;
//! - caches: which classes fit which profiles (MemStore's `allows`, Redis's `c:<class>:allows`
//!   and the Lua library's in-process caches), filled lazily and recomputable at any time;
//! - wake-ups in flight (MemStore's `wakes`, Redis's `wake:<machine>` lists, which expire):
//!   the conformance suite compares them per request instead;
//! - how a machine's last claim names its leases: MemStore keeps their tokens, Redis the
//!   claim's store time (a lease started then is the one the claim granted); both name the
//!   same leases, so only the jobs are dumped;
//! - bookkeeping of the representation itself: Redis's `meta.epoch`, `meta.layout` and
//!   `meta.test_clock` (`drover inspect namespace` shows the first two), the spec's second
//!   copies of priority, attempts, timeout and key, MemStore's recorded history (the journal
//!   will be the shared form of that: see `JobDump` and `drover inspect job`).

use crate::core::labels::Labels;
use crate::core::model::Progress;
use crate::core::{
    ClassId, JobId, MachineId, Offer, ProfileId, Requirements, Span, StateName, Time, Token,
};
use crate::store::request::{JobCounts, Totals};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// Everything a store holds about one namespace, decoded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDump {
    /// The store clock (µs). Not compared by `diff` (see the module's comment).
    pub clock: Time,
    pub counters: Counters,
    /// Jobs by state, as the store counts them.
    pub counts: JobCounts,
    pub totals: Totals,
    /// Every job the store holds, by id.
    pub jobs: Vec<JobDump>,
    /// Every class, by id, with its queue.
    pub classes: Vec<ClassDump>,
    /// Jobs waiting for a retry, by release time, then id.
    pub delayed: Vec<Delayed>,
    /// Machine profiles, by id.
    pub profiles: Vec<ProfileDump>,
    /// Every machine the store holds, by id.
    pub machines: Vec<MachineDump>,
    /// Finished jobs in the order retention purges them (oldest first).
    pub finished: Vec<Finished>,
    /// What does not add up: an index that disagrees with the records, a record that cannot
    /// be decoded, a key the decoder does not know, a count that is not what the records say.
    /// Empty for a healthy store.
    pub anomalies: Vec<String>,
}

/// The store's own sequence counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The last job id issued (0 before the first).
    pub last_job: u64,
    /// The last machine id issued.
    pub last_machine: u64,
    /// The last place in an idle line issued.
    pub wait_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDump {
    pub id: JobId,
    pub state: StateName,
    /// Attempts started so far.
    pub attempt: u32,
    /// The newest lease token issued (0 before the first lease).
    pub token: Token,
    /// The token whose outcome was recorded last.
    pub recorded: Option<Token>,
    /// The live lease, while leased.
    pub lease: Option<LeaseDump>,
    pub class: ClassId,
    pub priority: u8,
    pub max_attempts: u32,
    pub timeout: Span,
    pub idempotency_key: Option<String>,
    pub submitted_at: Time,
    /// When the last attempt started.
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    /// The last reported failure.
    pub error: Option<String>,
    pub progress: Option<Progress>,
    /// What it returned, once succeeded.
    pub result: Option<String>,
    pub kind: String,
    pub payload: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDump {
    pub machine: MachineId,
    /// When the lease runs out unless renewed.
    pub deadline: Time,
    /// When the attempt runs out of time (started + timeout).
    pub attempt_deadline: Time,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassDump {
    pub id: ClassId,
    pub requirements: Requirements,
    /// Queued jobs in the order claims take them (priority, then id).
    pub queue: Vec<JobId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Delayed {
    pub until: Time,
    pub job: JobId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub at: Time,
    pub job: JobId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileDump {
    pub id: ProfileId,
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub disk_gb: u32,
    pub labels: Labels,
    /// The job kinds its machines run; empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// When a machine of this profile last registered, heartbeated or claimed.
    pub last_seen: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineDump {
    pub id: MachineId,
    pub name: String,
    pub pool: String,
    pub profile: ProfileId,
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub disk_gb: u32,
    pub labels: Labels,
    pub cost_per_hour: f64,
    /// "ready", "lost" or "gone".
    pub state: String,
    /// When its heartbeat runs out (the last value, for a machine no longer ready).
    pub expires: Time,
    /// Its leases in the store's order, each with the time it expires unless renewed.
    pub leases: Vec<LeaseEntry>,
    pub last_claim: Option<LastClaim>,
    /// While idle: its place in its profile's idle line and the offer it made.
    pub waiting: Option<Waiting>,
    pub registered_at: Time,
    pub last_seen: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseEntry {
    pub job: JobId,
    /// The lease's deadline or the attempt's, whichever comes first.
    pub expiry: Time,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastClaim {
    pub seq: u64,
    /// The jobs it leased, in order.
    pub jobs: Vec<JobId>,
    /// Whether it left the machine idle.
    pub idle: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub seq: u64,
    pub offer: Offer,
}

impl StateDump {
    pub fn job(&self, id: JobId) -> Option<&JobDump> {
        self.jobs
            .binary_search_by_key(&id, |j| j.id)
            .ok()
            .map(|i| &self.jobs[i])
    }

    pub fn machine(&self, id: MachineId) -> Option<&MachineDump> {
        self.machines
            .binary_search_by_key(&id, |m| m.id)
            .ok()
            .map(|i| &self.machines[i])
    }

    pub fn class(&self, id: ClassId) -> Option<&ClassDump> {
        self.classes
            .binary_search_by_key(&id, |c| c.id)
            .ok()
            .map(|i| &self.classes[i])
    }

    /// Sorts what is kept by id, and appends to `anomalies` whatever the records themselves
    /// contradict: counts against states, queues and the delayed and finished lists against
    /// the jobs they hold, machines' leases against their jobs. Both decoders end with it, so
    /// every store is held to the same rules.
    pub fn finish(mut self) -> StateDump {
        self.jobs.sort_by_key(|j| j.id);
        self.classes.sort_by_key(|c| c.id);
        self.profiles.sort_by_key(|p| p.id);
        self.machines.sort_by_key(|m| m.id);
        self.delayed.sort();
        let problems = self.check();
        self.anomalies.extend(problems);
        self
    }

    fn check(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut by_state: BTreeMap<StateName, u64> = BTreeMap::new();
        for j in &self.jobs {
            *by_state.entry(j.state).or_default() += 1;
        }
        let count = |s: StateName| by_state.get(&s).copied().unwrap_or(0);
        let finished = self.jobs.len() as u64
            - count(StateName::Queued)
            - count(StateName::Delayed)
            - count(StateName::Leased);
        for (what, counted, held) in [
            ("queued", self.counts.queued, count(StateName::Queued)),
            ("delayed", self.counts.delayed, count(StateName::Delayed)),
            ("leased", self.counts.leased, count(StateName::Leased)),
            ("finished", self.counts.finished_retained, finished),
        ] {
            if counted != held {
                out.push(format!(
                    "count {what} is {counted}, but {held} jobs are {what}"
                ));
            }
        }
        // Queues hold exactly the queued jobs, each in its own class's queue.
        let mut queued_in: BTreeMap<JobId, ClassId> = BTreeMap::new();
        for c in &self.classes {
            for &job in &c.queue {
                if let Some(other) = queued_in.insert(job, c.id) {
                    out.push(format!(
                        "job {} is in the queues of classes {} and {}",
                        job.0, other.0, c.id.0
                    ));
                }
            }
        }
        let delayed: BTreeMap<JobId, Time> =
            self.delayed.iter().map(|d| (d.job, d.until)).collect();
        if delayed.len() != self.delayed.len() {
            out.push("a job is in the delayed list twice".into());
        }
        let finished_list: BTreeSet<JobId> = self.finished.iter().map(|f| f.job).collect();
        if finished_list.len() != self.finished.len() {
            out.push("a job is in the finished list twice".into());
        }
        let mut leases: BTreeMap<JobId, (MachineId, Time)> = BTreeMap::new();
        for m in &self.machines {
            for l in &m.leases {
                if leases.insert(l.job, (m.id, l.expiry)).is_some() {
                    out.push(format!("job {} is leased by two machines", l.job.0));
                }
            }
        }
        for j in &self.jobs {
            let id = j.id.0;
            match (j.state, queued_in.get(&j.id)) {
                (StateName::Queued, None) => {
                    out.push(format!("job {id} is queued but in no queue"))
                }
                (StateName::Queued, Some(&c)) if c != j.class => out.push(format!(
                    "job {id} of class {} is in the queue of class {}",
                    j.class.0, c.0
                )),
                (s, Some(_)) if s != StateName::Queued => {
                    out.push(format!("job {id} is {s:?} but in a queue"))
                }
                _ => {}
            }
            if (j.state == StateName::Delayed) != delayed.contains_key(&j.id) {
                out.push(format!(
                    "job {id} is {:?} and {}in the delayed list",
                    j.state,
                    if delayed.contains_key(&j.id) {
                        ""
                    } else {
                        "not "
                    }
                ));
            }
            let terminal = !matches!(
                j.state,
                StateName::Queued | StateName::Delayed | StateName::Leased
            );
            if terminal != finished_list.contains(&j.id) {
                out.push(format!(
                    "job {id} is {:?} and {}in the finished list",
                    j.state,
                    if terminal { "not " } else { "" }
                ));
            }
            if terminal != j.finished_at.is_some() {
                out.push(format!(
                    "job {id} is {:?} with finished_at {:?}",
                    j.state, j.finished_at
                ));
            }
            match (&j.lease, leases.get(&j.id)) {
                (Some(lease), Some(&(machine, expiry))) => {
                    if machine != lease.machine {
                        out.push(format!(
                            "job {id} is leased to machine {} but in the leases of {}",
                            lease.machine.0, machine.0
                        ));
                    }
                    let want = lease.deadline.min(lease.attempt_deadline);
                    if expiry != want {
                        out.push(format!(
                            "job {id}'s lease expires at {} in its machine's list, but its \
                             deadlines say {}",
                            expiry.0, want.0
                        ));
                    }
                }
                (Some(lease), None) => out.push(format!(
                    "job {id} is leased to machine {} but in no machine's leases",
                    lease.machine.0
                )),
                (None, Some(&(machine, _))) => out.push(format!(
                    "job {id} is {:?} but in the leases of machine {}",
                    j.state, machine.0
                )),
                (None, None) => {}
            }
            if (j.state == StateName::Leased) != j.lease.is_some() {
                out.push(format!(
                    "job {id} is {:?} with lease {:?}",
                    j.state, j.lease
                ));
            }
            if self.class(j.class).is_none() {
                out.push(format!(
                    "job {id} is of class {}, which does not exist",
                    j.class.0
                ));
            }
        }
        for job in queued_in.keys().chain(delayed.keys()).chain(leases.keys()) {
            if self.job(*job).is_none() {
                out.push(format!("job {} is indexed but does not exist", job.0));
            }
        }
        for f in &self.finished {
            if self.job(f.job).is_none() {
                out.push(format!(
                    "job {} is in the finished list but does not exist",
                    f.job.0
                ));
            }
        }
        for m in &self.machines {
            if m.state != "ready" && !m.leases.is_empty() {
                out.push(format!(
                    "machine {} is {} but holds leases",
                    m.id.0, m.state
                ));
            }
            if m.state != "ready" && m.waiting.is_some() {
                out.push(format!(
                    "machine {} is {} but waits for work",
                    m.id.0, m.state
                ));
            }
            if !self.profiles.iter().any(|p| p.id == m.profile) {
                out.push(format!(
                    "machine {} is of profile {}, which does not exist",
                    m.id.0, m.profile.0
                ));
            }
        }
        out
    }
}

/// The first difference between two dumps, in words: which section, which job, machine,
/// class or profile, which field, and both values. `None` if they agree (the clock aside).
/// `a` and `b` are named `a_name` and `b_name` in the text.
pub fn diff(a: &StateDump, b: &StateDump, a_name: &str, b_name: &str) -> Option<String> {
    let differ = |what: String, x: &dyn Debug, y: &dyn Debug| -> Option<String> {
        Some(format!("{what}:\n  {a_name}: {x:?}\n  {b_name}: {y:?}"))
    };
    macro_rules! fields {
        ($what:expr, $x:expr, $y:expr, [$($field:ident),* $(,)?]) => {
            $(
                if $x.$field != $y.$field {
                    return differ(format!("{} field {}", $what, stringify!($field)), &$x.$field, &$y.$field);
                }
            )*
        };
    }
    if a.anomalies != b.anomalies {
        return differ("anomalies".into(), &a.anomalies, &b.anomalies);
    }
    fields!(
        "counters",
        a.counters,
        b.counters,
        [last_job, last_machine, wait_seq]
    );
    fields!(
        "counts",
        a.counts,
        b.counts,
        [queued, delayed, leased, finished_retained]
    );
    fields!(
        "totals",
        a.totals,
        b.totals,
        [submitted, succeeded, dead, cancelled, timed_out, unworkable, retries, revoked]
    );
    if let Some(d) = by_id(
        &a.jobs,
        &b.jobs,
        |j| j.id.0,
        "job",
        &differ,
        |x, y| {
            let what = format!("job {}", x.id.0);
            fields!(
                what,
                x,
                y,
                [
                    state,
                    attempt,
                    token,
                    recorded,
                    lease,
                    class,
                    priority,
                    max_attempts,
                    timeout,
                    idempotency_key,
                    submitted_at,
                    started_at,
                    finished_at,
                    error,
                    progress,
                    kind,
                    payload,
                ]
            );
            None
        },
    ) {
        return Some(d);
    }
    if let Some(d) = by_id(
        &a.classes,
        &b.classes,
        |c| c.id.0 as u64,
        "class",
        &differ,
        |x, y| {
            let what = format!("class {}", x.id.0);
            fields!(what, x, y, [requirements, queue]);
            None
        },
    ) {
        return Some(d);
    }
    if a.delayed != b.delayed {
        return differ("delayed list".into(), &a.delayed, &b.delayed);
    }
    if let Some(d) = by_id(
        &a.profiles,
        &b.profiles,
        |p| p.id.0 as u64,
        "profile",
        &differ,
        |x, y| {
            let what = format!("profile {}", x.id.0);
            fields!(
                what,
                x,
                y,
                [gpus, gpu_model, gpu_mem_gb, disk_gb, labels, kinds, last_seen]
            );
            None
        },
    ) {
        return Some(d);
    }
    if let Some(d) = by_id(
        &a.machines,
        &b.machines,
        |m| m.id.0,
        "machine",
        &differ,
        |x, y| {
            let what = format!("machine {}", x.id.0);
            fields!(
                what,
                x,
                y,
                [
                    name,
                    pool,
                    profile,
                    gpus,
                    gpu_model,
                    gpu_mem_gb,
                    disk_gb,
                    labels,
                    cost_per_hour,
                    state,
                    expires,
                    leases,
                    last_claim,
                    waiting,
                    registered_at,
                    last_seen,
                ]
            );
            None
        },
    ) {
        return Some(d);
    }
    if a.finished != b.finished {
        let i = a
            .finished
            .iter()
            .zip(&b.finished)
            .position(|(x, y)| x != y)
            .unwrap_or(a.finished.len().min(b.finished.len()));
        return differ(
            format!("finished list from entry {i}"),
            &&a.finished[i.min(a.finished.len())..],
            &&b.finished[i.min(b.finished.len())..],
        );
    }
    None
}

/// Says how two values of a named thing differ.
type Differ<'a> = dyn Fn(String, &dyn Debug, &dyn Debug) -> Option<String> + 'a;

/// Walks two id-sorted lists: the first id only one side holds, or the first difference
/// `fields` finds between two records of one id.
fn by_id<T: Debug>(
    a: &[T],
    b: &[T],
    id: impl Fn(&T) -> u64,
    what: &str,
    differ: &Differ<'_>,
    fields: impl Fn(&T, &T) -> Option<String>,
) -> Option<String> {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let x = a.get(i).map(&id);
        let y = b.get(j).map(&id);
        match (x, y) {
            (Some(x), Some(y)) if x == y => {
                if let Some(d) = fields(&a[i], &b[j]) {
                    return Some(d);
                }
                i += 1;
                j += 1;
            }
            (Some(x), y) if y.is_none_or(|y| x < y) => {
                return differ(format!("{what} {x}"), &a[i], &"(none)");
            }
            (_, Some(y)) => return differ(format!("{what} {y}"), &"(none)", &b[j]),
            _ => unreachable!("one side has an element"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, state: StateName) -> JobDump {
        JobDump {
            id: JobId(id),
            state,
            attempt: 0,
            token: Token(0),
            recorded: None,
            lease: None,
            class: ClassId(0),
            priority: 50,
            max_attempts: 3,
            timeout: Span::from_secs(60),
            idempotency_key: None,
            submitted_at: Time(1),
            started_at: None,
            finished_at: None,
            error: None,
            progress: None,
            result: None,
            kind: "sleep".into(),
            payload: String::new(),
        }
    }

    fn one_queued() -> StateDump {
        StateDump {
            counters: Counters {
                last_job: 1,
                ..Counters::default()
            },
            counts: JobCounts {
                queued: 1,
                ..JobCounts::default()
            },
            jobs: vec![job(1, StateName::Queued)],
            classes: vec![ClassDump {
                id: ClassId(0),
                requirements: Requirements::default(),
                queue: vec![JobId(1)],
            }],
            ..StateDump::default()
        }
        .finish()
    }

    #[test]
    fn a_consistent_dump_has_no_anomalies_and_equals_itself() {
        let dump = one_queued();
        assert!(dump.anomalies.is_empty(), "{:?}", dump.anomalies);
        assert_eq!(diff(&dump, &dump.clone(), "a", "b"), None);
        let mut later = dump.clone();
        later.clock = Time(99);
        assert_eq!(
            diff(&dump, &later, "a", "b"),
            None,
            "the clock is not compared"
        );
    }

    #[test]
    fn the_diff_names_the_job_and_the_field() {
        let a = one_queued();
        let mut b = a.clone();
        b.jobs[0].attempt = 2;
        let d = diff(&a, &b, "MemStore", "Redis").unwrap();
        assert!(d.starts_with("job 1 field attempt:"), "{d}");
        assert!(d.contains("MemStore: 0") && d.contains("Redis: 2"), "{d}");
        b.jobs.push(job(2, StateName::Queued));
        b.jobs[0].attempt = 0;
        let d = diff(&a, &b, "MemStore", "Redis").unwrap();
        assert!(d.starts_with("job 2:"), "{d}");
    }

    #[test]
    fn contradictions_are_anomalies() {
        let mut dump = one_queued();
        dump.anomalies.clear();
        dump.classes[0].queue.clear();
        dump.counts.queued = 2;
        let dump = dump.finish();
        assert!(
            dump.anomalies
                .iter()
                .any(|a| a.contains("count queued is 2")),
            "{:?}",
            dump.anomalies
        );
        assert!(
            dump.anomalies
                .iter()
                .any(|a| a.contains("queued but in no queue")),
            "{:?}",
            dump.anomalies
        );
    }
}
