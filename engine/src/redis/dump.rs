//! `RedisStore::dump`: a namespace's keys, read with plain commands and decoded into the
//! canonical state every store shares (`store::dump`), with every way the keys disagree with
//! each other reported as an anomaly. The conformance suite compares it with MemStore's after
//! every request; `drover inspect` shows it to operators.
//!
//! What a namespace holds is described once, in `KEYS` (the key layout) and in the known
//! fields of `meta`, `j:<job>` and `m:<machine>` below; the packed values are decoded by
//! `formats.rs`. A key or field that none of them names is reported as an anomaly, so a new
//! key is added here (one `KEYS` line, and its decoding in `decode` if it holds state) or the
//! conformance suite says so.
//!
//! The read is one MULTI/EXEC (a consistent snapshot) for namespaces of up to
//! `ATOMIC_COMMANDS` keys; larger ones are read in several steps, and while requests run a
//! step may see the namespace half a request apart from the last: an anomaly there may be a
//! passing one (read again). A namespace is first listed with SCAN, so that keys no index
//! names are found too; what the snapshot's indexes name that the listing missed (written in
//! between) is read in a second pass.

use super::codec::{from_stored, requirements_from_key};
use super::formats::{
    decode_finished, decode_ids, decode_leases, decode_offer, decode_queue_score, Hot, RunRecord,
};
use super::RedisStore;
use crate::core::labels::Labels;
use crate::core::model::Progress;
use crate::core::{ClassId, JobId, MachineId, ProfileId, Span, StateName, Time, Token};
use crate::runtime::StoreError;
use crate::store::dump::{
    ClassDump, Counters, Delayed, Finished, JobDump, LastClaim, LeaseDump, LeaseEntry, MachineDump,
    ProfileDump, StateDump, Waiting,
};
use crate::store::request::{JobCounts, Totals};
use ::redis::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One kind of key a namespace holds: `{ns}:` then `pattern`, where each `<n>` stands for a
/// number (an id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyKind {
    pub pattern: &'static str,
    /// The Redis type.
    pub kind: &'static str,
    pub what: &'static str,
}

const fn key(pattern: &'static str, kind: &'static str, what: &'static str) -> KeyKind {
    KeyKind {
        pattern,
        kind,
        what,
    }
}

/// Every key the Lua library writes in a namespace (redis/mod.rs has the same table for
/// readers of the code). To add one: a line here, and its reading in `read_pass` and decoding
/// in `decode` if it holds state the dump shows.
pub const KEYS: &[KeyKind] = &[
    key(
        "meta",
        "hash",
        "the clock and hot counters (`hot`, packed), id counters, totals, layout, epoch",
    ),
    key(
        "run",
        "hash",
        "job -> its run record: state, attempt, tokens, lease (packed)",
    ),
    key(
        "spec",
        "hash",
        "job -> its spec, without the requirements its class names",
    ),
    key(
        "j:<n>",
        "hash",
        "a job's seldom-changing fields: class, priority, attempts, key, error, progress, result",
    ),
    key("jobs", "zset", "every retained job, by id"),
    key("idem", "hash", "idempotency key -> job"),
    key(
        "finished",
        "list",
        "finished jobs, `finished_at:job,job,...`, oldest first",
    ),
    key("delayed", "zset", "retries, by release time"),
    key("classkey", "hash", "class key -> class"),
    key("c:<n>", "hash", "a class's requirements"),
    key(
        "c:<n>:q",
        "zset",
        "a class's queue, by (100 - priority) * 2^46 + id",
    ),
    key(
        "c:<n>:allows",
        "hash",
        "cache: profile -> 1 never fits, 2 fits when free",
    ),
    key("nonempty", "zset", "classes with queued jobs"),
    key("profkey", "hash", "profile key -> profile"),
    key(
        "p:<n>",
        "hash",
        "a machine profile, and when a machine of it was last seen",
    ),
    key("mname", "hash", "machine name -> machine"),
    key(
        "m:<n>",
        "hash",
        "a machine: spec, state, expiry, leases (packed), last claim, idle offer",
    ),
    key("machines", "zset", "machines, by id"),
    key("mexp", "zset", "ready machines, by heartbeat expiry"),
    key(
        "lexp",
        "zset",
        "machines with leases, by their earliest lease expiry",
    ),
    key("waitp", "zset", "profiles with idle machines"),
    key(
        "w:<n>",
        "zset",
        "a profile's idle machines, by when they started waiting",
    ),
    key("wake:<n>", "list", "a machine's pending wake-up (expires)"),
    key(
        "mleft",
        "zset",
        "machines that left (lost or deregistered), by when: forgotten after retention",
    ),
    key(
        "journal",
        "stream",
        "one entry per call: what it did (lua/journal.lua; read with `drover journal export`)",
    ),
    key(
        "config",
        "hash",
        "the namespace's engine configuration (ns_config.rs)",
    ),
];

/// Fields of `meta` the library writes (lua/prelude.lua, jobs.lua, machines.lua, claim.lua).
const META_FIELDS: &[&str] = &[
    "hot",
    "next_job",
    "seq",
    "last_machine",
    "epoch",
    "layout",
    "classes",
    "profiles",
    "machines",
    "t_dead",
    "t_cancelled",
    "t_timed_out",
    "t_unworkable",
    "t_retries",
    "t_revoked",
    "spend_forgotten",
    // Tests only: the conformance suite's clock, and failure injection (lua/prelude.lua).
    "test_clock",
    "test_namespace",
    "test_fail",
    "test_skip_fencing",
];

/// Fields of `j:<job>` (lua/jobs.lua).
const JOB_FIELDS: &[&str] = &[
    "class",
    "priority",
    "max_attempts",
    "submitted_at",
    "key",
    "error",
    "pct",
    "msg",
    "result",
];

/// Fields of `m:<machine>` (lua/machines.lua, claim.lua).
const MACHINE_FIELDS: &[&str] = &[
    "name",
    "pool",
    "gpus",
    "gpu_model",
    "mem",
    "disk",
    "cost",
    "profile",
    "state",
    "expires",
    "leases",
    "registered_at",
    "last_seen",
    "lc_seq",
    "lc_grants",
    "lc_idle",
    "lc_at",
    "wait_seq",
    "wait_offer",
];

/// Reads per MULTI/EXEC: past this, a namespace is read in several steps.
pub const ATOMIC_COMMANDS: usize = 4096;

/// The kind of key `rest` (a key without its `{ns}:` prefix) is, and the id in it if any.
pub fn classify(rest: &str) -> Option<(&'static KeyKind, Option<u64>)> {
    'kinds: for kind in KEYS {
        let mut id = None;
        let mut parts = rest.split(':');
        for want in kind.pattern.split(':') {
            let Some(part) = parts.next() else {
                continue 'kinds;
            };
            if want == "<n>" {
                match part.parse::<u64>() {
                    Ok(n) if !part.starts_with('+') => id = Some(n),
                    _ => continue 'kinds,
                }
            } else if want != part {
                continue 'kinds;
            }
        }
        if parts.next().is_none() {
            return Some((kind, id));
        }
    }
    None
}

type Hash = BTreeMap<String, Vec<u8>>;
type Scored = Vec<(String, f64)>;

/// What one pass read: the namespace's keys as Redis holds them.
#[derive(Default)]
struct Raw {
    meta: Hash,
    run: Hash,
    spec: Hash,
    idem: Hash,
    classkey: Hash,
    profkey: Hash,
    mname: Hash,
    jobs: Vec<String>,
    nonempty: Vec<String>,
    delayed: Scored,
    lexp: Scored,
    mexp: Scored,
    machines: Vec<String>,
    waitp: Vec<String>,
    finished: Vec<String>,
    job_hashes: BTreeMap<u64, Hash>,
    classes: BTreeMap<u64, Hash>,
    queues: BTreeMap<u64, Scored>,
    profiles: BTreeMap<u64, Hash>,
    lines: BTreeMap<u64, Scored>,
    machine_hashes: BTreeMap<u64, Hash>,
}

/// Where a read's reply goes.
#[derive(Clone, Copy)]
enum Dest {
    Meta,
    Run,
    Spec,
    Idem,
    Classkey,
    Profkey,
    Mname,
    Jobs,
    Nonempty,
    Delayed,
    Lexp,
    Mexp,
    Machines,
    Waitp,
    Finished,
    JobHash(u64),
    Class(u64),
    Queue(u64),
    Profile(u64),
    Line(u64),
    Machine(u64),
}

/// The ids a pass reads the keys of.
#[derive(Clone, Default, PartialEq, Eq)]
struct Ids {
    jobs: BTreeSet<u64>,
    classes: BTreeSet<u64>,
    profiles: BTreeSet<u64>,
    machines: BTreeSet<u64>,
}

impl Ids {
    fn from_keys(keys: &[String]) -> Ids {
        let mut ids = Ids::default();
        for k in keys {
            if let Some((kind, Some(n))) = classify(k) {
                match kind.pattern {
                    "j:<n>" => ids.jobs.insert(n),
                    "c:<n>" | "c:<n>:q" => ids.classes.insert(n),
                    "p:<n>" | "w:<n>" => ids.profiles.insert(n),
                    "m:<n>" => ids.machines.insert(n),
                    _ => false,
                };
            }
        }
        ids
    }

    /// Adds the ids `raw`'s indexes name; whether any was new.
    fn learn(&mut self, raw: &Raw) -> bool {
        let before = self.clone();
        let num = |s: &str| s.parse::<u64>().ok();
        self.jobs.extend(raw.run.keys().filter_map(|k| num(k)));
        self.jobs.extend(raw.jobs.iter().filter_map(|k| num(k)));
        let meta = |f: &str| {
            raw.meta
                .get(f)
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // Bounded: a corrupt count must not make the reader ask for billions of keys.
        self.classes.extend(0..meta("classes").min(1 << 20));
        self.profiles.extend(0..meta("profiles").min(1 << 20));
        self.machines
            .extend(raw.machines.iter().filter_map(|k| num(k)));
        self.profiles
            .extend(raw.waitp.iter().filter_map(|k| num(k)));
        *self != before
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hash_of(value: Value) -> Result<Hash, String> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        ::redis::from_redis_value(value).map_err(|e| e.to_string())?;
    Ok(pairs.into_iter().map(|(k, v)| (text(&k), v)).collect())
}

fn strings_of(value: Value) -> Result<Vec<String>, String> {
    let items: Vec<Vec<u8>> = ::redis::from_redis_value(value).map_err(|e| e.to_string())?;
    Ok(items.iter().map(|b| text(b)).collect())
}

fn scored_of(value: Value) -> Result<Scored, String> {
    let pairs: Vec<(Vec<u8>, f64)> = ::redis::from_redis_value(value).map_err(|e| e.to_string())?;
    Ok(pairs.into_iter().map(|(m, s)| (text(&m), s)).collect())
}

impl Raw {
    fn put(&mut self, into: Dest, value: Value) -> Result<(), String> {
        match into {
            Dest::Meta => self.meta = hash_of(value)?,
            Dest::Run => self.run = hash_of(value)?,
            Dest::Spec => self.spec = hash_of(value)?,
            Dest::Idem => self.idem = hash_of(value)?,
            Dest::Classkey => self.classkey = hash_of(value)?,
            Dest::Profkey => self.profkey = hash_of(value)?,
            Dest::Mname => self.mname = hash_of(value)?,
            Dest::Jobs => self.jobs = strings_of(value)?,
            Dest::Nonempty => self.nonempty = strings_of(value)?,
            Dest::Delayed => self.delayed = scored_of(value)?,
            Dest::Lexp => self.lexp = scored_of(value)?,
            Dest::Mexp => self.mexp = scored_of(value)?,
            Dest::Machines => self.machines = strings_of(value)?,
            Dest::Waitp => self.waitp = strings_of(value)?,
            Dest::Finished => self.finished = strings_of(value)?,
            Dest::JobHash(n) => {
                self.job_hashes.insert(n, hash_of(value)?);
            }
            Dest::Class(n) => {
                self.classes.insert(n, hash_of(value)?);
            }
            Dest::Queue(n) => {
                self.queues.insert(n, scored_of(value)?);
            }
            Dest::Profile(n) => {
                self.profiles.insert(n, hash_of(value)?);
            }
            Dest::Line(n) => {
                self.lines.insert(n, scored_of(value)?);
            }
            Dest::Machine(n) => {
                self.machine_hashes.insert(n, hash_of(value)?);
            }
        }
        Ok(())
    }
}

impl RedisStore {
    /// The namespace's state, decoded (see `store::dump` and this module's comment). Reads
    /// every key of the namespace: for people and tests, not for hot paths.
    pub async fn dump(&self) -> Result<StateDump, StoreError> {
        let keys = self.namespace_keys().await?;
        let mut ids = Ids::from_keys(&keys);
        let mut raw = self.read_pass(&ids).await?;
        // Keys written between the listing and the read (a busy namespace): read again with
        // them, a few times at most.
        for _ in 0..3 {
            if !ids.learn(&raw) {
                break;
            }
            raw = self.read_pass(&ids).await?;
        }
        Ok(decode(&raw, &keys))
    }

    /// Every key of the namespace, without its `{ns}:` prefix, sorted (SCAN: the namespace's
    /// keys only, a few hundred at a time).
    pub async fn namespace_keys(&self) -> Result<Vec<String>, StoreError> {
        let prefix = format!("{{{}}}:", self.inner.namespace);
        let pattern = format!("{}*", glob_escape(&prefix));
        let mut cursor: u64 = 0;
        let mut keys = BTreeSet::new();
        loop {
            let mut scan = ::redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<Vec<u8>>) =
                ::redis::from_redis_value(self.query_slot(scan).await?)
                    .map_err(|e| StoreError::Decode(format!("SCAN: {e}")))?;
            for k in batch {
                let k = text(&k);
                if let Some(rest) = k.strip_prefix(&prefix) {
                    keys.insert(rest.to_string());
                }
            }
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }

    /// Reads every key `ids` names, and every index, atomically if they fit in one
    /// MULTI/EXEC.
    async fn read_pass(&self, ids: &Ids) -> Result<Raw, StoreError> {
        let p = format!("{{{}}}:", self.inner.namespace);
        let mut reads: Vec<(::redis::Cmd, Dest)> = Vec::new();
        let mut add = |args: &[&str], into: Dest| {
            let mut c = ::redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            reads.push((c, into));
        };
        let k = |rest: &str| format!("{p}{rest}");
        for (rest, into) in [
            ("meta", Dest::Meta),
            ("run", Dest::Run),
            ("spec", Dest::Spec),
            ("idem", Dest::Idem),
            ("classkey", Dest::Classkey),
            ("profkey", Dest::Profkey),
            ("mname", Dest::Mname),
        ] {
            add(&["HGETALL", &k(rest)], into);
        }
        for (rest, into) in [
            ("jobs", Dest::Jobs),
            ("nonempty", Dest::Nonempty),
            ("machines", Dest::Machines),
            ("waitp", Dest::Waitp),
        ] {
            add(&["ZRANGE", &k(rest), "0", "-1"], into);
        }
        for (rest, into) in [
            ("delayed", Dest::Delayed),
            ("lexp", Dest::Lexp),
            ("mexp", Dest::Mexp),
        ] {
            add(&["ZRANGE", &k(rest), "0", "-1", "WITHSCORES"], into);
        }
        add(&["LRANGE", &k("finished"), "0", "-1"], Dest::Finished);
        for &n in &ids.jobs {
            add(&["HGETALL", &k(&format!("j:{n}"))], Dest::JobHash(n));
        }
        for &n in &ids.classes {
            add(&["HGETALL", &k(&format!("c:{n}"))], Dest::Class(n));
            add(
                &["ZRANGE", &k(&format!("c:{n}:q")), "0", "-1", "WITHSCORES"],
                Dest::Queue(n),
            );
        }
        for &n in &ids.profiles {
            add(&["HGETALL", &k(&format!("p:{n}"))], Dest::Profile(n));
            add(
                &["ZRANGE", &k(&format!("w:{n}")), "0", "-1", "WITHSCORES"],
                Dest::Line(n),
            );
        }
        for &n in &ids.machines {
            add(&["HGETALL", &k(&format!("m:{n}"))], Dest::Machine(n));
        }
        let mut raw = Raw::default();
        for chunk in reads.chunks(ATOMIC_COMMANDS) {
            let mut pipe = ::redis::pipe();
            // On a cluster the reads go as a plain pipeline to the namespace's shard.
            if !self.is_cluster() {
                pipe.atomic();
            }
            for (c, _) in chunk {
                pipe.add_command(c.clone());
            }
            let values = self.query_pipe(&pipe).await?;
            if values.len() != chunk.len() {
                return Err(StoreError::Decode(format!(
                    "dump: {} replies to {} reads",
                    values.len(),
                    chunk.len()
                )));
            }
            for ((_, into), value) in chunk.iter().zip(values) {
                raw.put(*into, value)
                    .map_err(|e| StoreError::Decode(format!("dump: {e}")))?;
            }
        }
        Ok(raw)
    }
}

/// `s` with the characters SCAN's MATCH treats as patterns escaped.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn num<T: std::str::FromStr>(h: &Hash, field: &str) -> Result<Option<T>, String>
where
    T::Err: std::fmt::Display,
{
    match h.get(field) {
        None => Ok(None),
        Some(v) => {
            let s = std::str::from_utf8(v).map_err(|_| format!("{field} is not text"))?;
            s.parse()
                .map(Some)
                .map_err(|e| format!("{field} {s:?}: {e}"))
        }
    }
}

fn need<T: std::str::FromStr>(h: &Hash, field: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    num(h, field)?.ok_or_else(|| format!("no {field}"))
}

fn opt_text(h: &Hash, field: &str) -> Option<String> {
    h.get(field).map(|v| text(v))
}

fn nonzero(t: u64) -> Option<Time> {
    (t != 0).then_some(Time(t))
}

fn unknown_fields(h: &Hash, known: &[&str], what: &str, out: &mut Vec<String>) {
    for f in h.keys() {
        if !known.contains(&f.as_str()) {
            out.push(format!(
                "{what} has field {f:?}, which the decoder does not know (redis/dump.rs)"
            ));
        }
    }
}

/// One job from its run record, its `j:<job>` hash and its stored spec; the disagreements
/// between them go to `out`. `None` (with the reason in `out`) if they cannot be decoded.
pub(crate) fn decode_job(
    id: u64,
    run: &[u8],
    j: &Hash,
    spec: Option<&[u8]>,
    out: &mut Vec<String>,
) -> Option<JobDump> {
    let result = (|| -> Result<JobDump, String> {
        let r = RunRecord::decode(run).map_err(|e| format!("run record: {e}"))?;
        if j.is_empty() {
            return Err("no j: hash".into());
        }
        unknown_fields(j, JOB_FIELDS, &format!("job {id}'s j: hash"), out);
        let class: u32 = need(j, "class")?;
        let priority: u8 = need(j, "priority")?;
        let max_attempts: u32 = need(j, "max_attempts")?;
        let submitted_at: u64 = need(j, "submitted_at")?;
        let key = opt_text(j, "key");
        let progress = match (r.progress, num::<u8>(j, "pct")?, opt_text(j, "msg")) {
            (true, Some(percent), Some(message)) => Some(Progress { percent, message }),
            (false, None, None) => None,
            (flag, pct, msg) => {
                out.push(format!(
                    "job {id}: progress flag {flag} with pct {pct:?} and msg {msg:?}"
                ));
                pct.map(|percent| Progress {
                    percent,
                    message: msg.unwrap_or_default(),
                })
            }
        };
        let spec = spec.ok_or("no spec")?;
        let spec = from_stored(&text(spec), Arc::default()).map_err(|e| e.to_string())?;
        for (what, stored, kept) in [
            ("priority", spec.priority as u64, priority as u64),
            (
                "max_attempts",
                spec.max_attempts as u64,
                max_attempts as u64,
            ),
            ("timeout", spec.timeout.as_micros(), r.timeout),
        ] {
            if stored != kept {
                out.push(format!(
                    "job {id}: its spec says {what} {stored}, its record {kept}"
                ));
            }
        }
        if spec.idempotency_key != key {
            out.push(format!(
                "job {id}: its spec's idempotency key {:?} is not its j: hash's {key:?}",
                spec.idempotency_key
            ));
        }
        let attempt = u32::try_from(r.attempt).map_err(|_| format!("attempt {}", r.attempt))?;
        Ok(JobDump {
            id: JobId(id),
            state: r.state,
            attempt,
            token: Token(r.token),
            recorded: (r.recorded != 0).then_some(Token(r.recorded)),
            lease: (r.state == StateName::Leased).then_some(LeaseDump {
                machine: MachineId(r.machine),
                deadline: Time(r.deadline),
                attempt_deadline: Time(r.attempt_deadline),
            }),
            class: ClassId(class),
            priority,
            max_attempts,
            timeout: Span(r.timeout),
            idempotency_key: key,
            submitted_at: Time(submitted_at),
            started_at: nonzero(r.started_at),
            finished_at: nonzero(r.finished_at),
            error: opt_text(j, "error"),
            progress,
            result: opt_text(j, "result"),
            kind: spec.kind.clone(),
            payload: spec.payload.clone(),
        })
    })();
    match result {
        Ok(job) => Some(job),
        Err(e) => {
            out.push(format!("job {id}: {e}"));
            None
        }
    }
}

pub(crate) fn decode_profile(id: u64, h: &Hash) -> Result<ProfileDump, String> {
    let labels: Labels = serde_json::from_slice(h.get("labels").ok_or("no labels")?)
        .map_err(|e| format!("labels: {e}"))?;
    Ok(ProfileDump {
        id: ProfileId(u32::try_from(id).map_err(|_| "id".to_string())?),
        gpus: need(h, "gpus")?,
        gpu_model: opt_text(h, "model").ok_or("no model")?,
        gpu_mem_gb: need(h, "mem")?,
        disk_gb: need(h, "disk")?,
        labels,
        // Profiles written before kinds were matched have none: they run every kind.
        kinds: match h.get("kinds") {
            Some(json) => serde_json::from_slice(json).map_err(|e| format!("kinds: {e}"))?,
            None => Vec::new(),
        },
        last_seen: num::<u64>(h, "last_seen")?.map(Time),
    })
}

/// One machine from its `m:<machine>` hash; its labels are its profile's (`profiles`).
pub(crate) fn decode_machine(
    id: u64,
    h: &Hash,
    profiles: &BTreeMap<u64, ProfileDump>,
    out: &mut Vec<String>,
) -> Result<MachineDump, String> {
    unknown_fields(h, MACHINE_FIELDS, &format!("machine {id}'s hash"), out);
    let profile: u32 = need(h, "profile")?;
    let leases = decode_leases(h.get("leases").map_or(&[][..], |v| v))
        .map_err(|e| format!("leases: {e}"))?
        .into_iter()
        .map(|(job, expiry)| LeaseEntry {
            job: JobId(job),
            expiry: Time(expiry),
        })
        .collect();
    let last_claim = match num::<u64>(h, "lc_seq")? {
        None => None,
        Some(seq) => Some(LastClaim {
            seq,
            jobs: decode_ids(&opt_text(h, "lc_grants").unwrap_or_default())?
                .into_iter()
                .map(JobId)
                .collect(),
            idle: opt_text(h, "lc_idle").as_deref() == Some("1"),
        }),
    };
    let waiting = match (num::<u64>(h, "wait_seq")?, opt_text(h, "wait_offer")) {
        (None, None) => None,
        (Some(seq), Some(offer)) => Some(Waiting {
            seq,
            offer: decode_offer(&offer)?,
        }),
        (seq, offer) => return Err(format!("wait_seq {seq:?} with wait_offer {offer:?}")),
    };
    let labels = match profiles.get(&(profile as u64)) {
        Some(p) => p.labels.clone(),
        None => Labels::new(),
    };
    Ok(MachineDump {
        id: MachineId(id),
        name: opt_text(h, "name").ok_or("no name")?,
        pool: opt_text(h, "pool").ok_or("no pool")?,
        profile: ProfileId(profile),
        gpus: need(h, "gpus")?,
        gpu_model: opt_text(h, "gpu_model").ok_or("no gpu_model")?,
        gpu_mem_gb: need(h, "mem")?,
        disk_gb: need(h, "disk")?,
        labels,
        cost_per_hour: need(h, "cost")?,
        state: opt_text(h, "state").ok_or("no state")?,
        expires: Time(need(h, "expires")?),
        leases,
        last_claim,
        waiting,
        registered_at: Time(need(h, "registered_at")?),
        last_seen: Time(need(h, "last_seen")?),
    })
}

/// The namespace's `meta.hot`, or zeros before the first write.
fn hot_of(meta: &Hash, out: &mut Vec<String>) -> Hot {
    match meta.get("hot") {
        None => Hot::default(),
        Some(bytes) => Hot::decode(bytes).unwrap_or_else(|e| {
            out.push(format!("meta.hot: {e}"));
            Hot::default()
        }),
    }
}

fn meta_num(meta: &Hash, field: &str, out: &mut Vec<String>) -> u64 {
    num(meta, field)
        .unwrap_or_else(|e| {
            out.push(format!("meta.{e}"));
            None
        })
        .unwrap_or(0)
}

/// The ids of a zset's or hash's members, with the ones that are not ids reported.
fn ids_of<'a>(
    members: impl IntoIterator<Item = &'a String>,
    what: &str,
    out: &mut Vec<String>,
) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for m in members {
        match m.parse::<u64>() {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => out.push(format!("{what} holds {m:?}, not an id")),
        }
    }
    ids
}

fn same<T: Ord + std::fmt::Debug + Clone>(
    a: &BTreeSet<T>,
    b: &BTreeSet<T>,
    a_name: &str,
    b_name: &str,
    out: &mut Vec<String>,
) {
    if a != b {
        let only_a: Vec<_> = a.difference(b).take(5).cloned().collect();
        let only_b: Vec<_> = b.difference(a).take(5).cloned().collect();
        out.push(format!(
            "{a_name} and {b_name} disagree: only in the first {only_a:?}, only in the second \
             {only_b:?}"
        ));
    }
}

/// The state `raw` holds; `keys` is the namespace's key listing.
fn decode(raw: &Raw, keys: &[String]) -> StateDump {
    let mut out = Vec::new();
    unknown_fields(&raw.meta, META_FIELDS, "meta", &mut out);
    let hot = hot_of(&raw.meta, &mut out);
    let mut by_kind: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for k in keys {
        match classify(k) {
            Some((kind, id)) => {
                by_kind.entry(kind.pattern).or_default().extend(id);
            }
            None => out.push(format!(
                "key {k:?} is not in the decoder's key table (redis/dump.rs KEYS)"
            )),
        }
    }
    let listed = |pattern: &str| by_kind.get(pattern).cloned().unwrap_or_default();

    // Jobs: a run record, a spec, a j: hash and a place in `jobs` each.
    let run_ids = ids_of(raw.run.keys(), "run", &mut out);
    same(
        &run_ids,
        &ids_of(raw.spec.keys(), "spec", &mut out),
        "run records",
        "specs",
        &mut out,
    );
    same(
        &run_ids,
        &ids_of(&raw.jobs, "jobs", &mut out),
        "run records",
        "the jobs index",
        &mut out,
    );
    same(
        &run_ids,
        &listed("j:<n>"),
        "run records",
        "j: hashes",
        &mut out,
    );
    let empty = Hash::new();
    let mut jobs = Vec::new();
    for (field, record) in &raw.run {
        let Ok(id) = field.parse::<u64>() else {
            continue;
        };
        let j = raw.job_hashes.get(&id).unwrap_or(&empty);
        let spec = raw.spec.get(field).map(|v| &v[..]);
        jobs.extend(decode_job(id, record, j, spec, &mut out));
    }
    let job_of: BTreeMap<u64, &JobDump> = jobs.iter().map(|j| (j.id.0, j)).collect();

    // Classes and their queues.
    let n_classes = meta_num(&raw.meta, "classes", &mut out);
    same(
        &(0..n_classes).collect(),
        &listed("c:<n>"),
        "meta.classes",
        "c: hashes",
        &mut out,
    );
    let mut classes = Vec::new();
    let mut class_keys: BTreeMap<String, u64> = BTreeMap::new();
    let mut nonempty = BTreeSet::new();
    for (&cid, h) in &raw.classes {
        if h.is_empty() {
            continue;
        }
        let requirements = match opt_text(h, "key")
            .ok_or_else(|| "no key".to_string())
            .and_then(|key| {
                class_keys.insert(key.clone(), cid);
                requirements_from_key(&key)
            }) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("class {cid}: {e}"));
                continue;
            }
        };
        let mut queue = Vec::new();
        for (member, score) in raw.queues.get(&cid).map_or(&[][..], |q| &q[..]) {
            let Ok(id) = member.parse::<u64>() else {
                out.push(format!("class {cid}'s queue holds {member:?}, not an id"));
                continue;
            };
            match decode_queue_score(*score) {
                Ok((priority, sid)) => {
                    let job_priority = job_of.get(&id).map(|j| j.priority);
                    if sid != id || job_priority.is_some_and(|p| p != priority) {
                        out.push(format!(
                            "class {cid}'s queue scores job {id} as job {sid} of priority \
                             {priority} (its record: {job_priority:?})"
                        ));
                    }
                }
                Err(e) => out.push(format!("class {cid}'s queue, job {id}: {e}")),
            }
            queue.push(JobId(id));
        }
        if !queue.is_empty() {
            nonempty.insert(cid);
        }
        classes.push(ClassDump {
            id: ClassId(cid as u32),
            requirements,
            queue,
        });
    }
    same(
        &ids_of(&raw.nonempty, "nonempty", &mut out),
        &nonempty,
        "the non-empty set",
        "the classes with queued jobs",
        &mut out,
    );
    let classkey: BTreeMap<String, u64> = raw
        .classkey
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), text(v).parse().ok()?)))
        .collect();
    if classkey != class_keys {
        out.push(format!(
            "the class key index ({} entries) is not the classes' keys ({})",
            classkey.len(),
            class_keys.len()
        ));
    }

    let mut delayed = Vec::new();
    for (member, until) in &raw.delayed {
        match (
            member.parse::<u64>(),
            super::formats::whole(*until, "release time"),
        ) {
            (Ok(job), Ok(until)) => delayed.push(Delayed {
                until: Time(until),
                job: JobId(job),
            }),
            _ => out.push(format!("delayed holds {member:?} at {until}")),
        }
    }

    // Profiles and machines.
    let n_profiles = meta_num(&raw.meta, "profiles", &mut out);
    same(
        &(0..n_profiles).collect(),
        &listed("p:<n>"),
        "meta.profiles",
        "p: hashes",
        &mut out,
    );
    let mut profiles = BTreeMap::new();
    for (&pid, h) in &raw.profiles {
        if h.is_empty() {
            continue;
        }
        match decode_profile(pid, h) {
            Ok(p) => {
                profiles.insert(pid, p);
            }
            Err(e) => out.push(format!("profile {pid}: {e}")),
        }
    }
    let profkeys = ids_of(
        raw.profkey
            .values()
            .map(|v| text(v))
            .collect::<Vec<_>>()
            .iter(),
        "profkey",
        &mut out,
    );
    if profkeys.len() != raw.profkey.len() || profkeys != (0..n_profiles).collect() {
        out.push(format!(
            "the profile key index names profiles {profkeys:?}, not 0..{n_profiles}"
        ));
    }
    let machine_ids = ids_of(&raw.machines, "machines", &mut out);
    same(
        &machine_ids,
        &listed("m:<n>"),
        "the machines index",
        "m: hashes",
        &mut out,
    );
    let counted = meta_num(&raw.meta, "machines", &mut out);
    if counted != machine_ids.len() as u64 {
        out.push(format!(
            "meta.machines is {counted}, but {} machines are held",
            machine_ids.len()
        ));
    }
    let mut machines = Vec::new();
    for (&id, h) in &raw.machine_hashes {
        if h.is_empty() {
            continue;
        }
        match decode_machine(id, h, &profiles, &mut out) {
            Ok(m) => machines.push(m),
            Err(e) => out.push(format!("machine {id}: {e}")),
        }
    }
    check_machine_indexes(raw, &machines, &mut out);

    let mut finished = Vec::new();
    for entry in &raw.finished {
        match decode_finished(entry) {
            Ok((at, ids)) => finished.extend(ids.into_iter().map(|job| Finished {
                at: Time(at),
                job: JobId(job),
            })),
            Err(e) => out.push(e),
        }
    }

    let idem: BTreeMap<String, u64> = raw
        .idem
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), text(v).parse().ok()?)))
        .collect();
    let keys_held: BTreeMap<String, u64> = jobs
        .iter()
        .filter_map(|j| Some((j.idempotency_key.clone()?, j.id.0)))
        .collect();
    if idem != keys_held || idem.len() != raw.idem.len() {
        out.push(format!(
            "the idempotency index {idem:?} is not the jobs' keys {keys_held:?}"
        ));
    }

    let last_job = meta_num(&raw.meta, "next_job", &mut out);
    let last_machine = meta_num(&raw.meta, "last_machine", &mut out);
    if let Some(&max) = run_ids.last() {
        if max > last_job {
            out.push(format!("job {max} is past the last id issued ({last_job})"));
        }
    }
    if let Some(&max) = machine_ids.last() {
        if max > last_machine {
            out.push(format!(
                "machine {max} is past the last id issued ({last_machine})"
            ));
        }
    }
    let total = |f: &str, out: &mut Vec<String>| meta_num(&raw.meta, f, out);
    StateDump {
        clock: Time(hot.clock),
        counters: Counters {
            last_job,
            last_machine,
            wait_seq: meta_num(&raw.meta, "seq", &mut out),
        },
        counts: JobCounts {
            queued: hot.queued,
            delayed: hot.delayed,
            leased: hot.leased,
            finished_retained: hot.finished,
        },
        totals: Totals {
            submitted: hot.t_submitted,
            succeeded: hot.t_succeeded,
            dead: total("t_dead", &mut out),
            cancelled: total("t_cancelled", &mut out),
            timed_out: total("t_timed_out", &mut out),
            unworkable: total("t_unworkable", &mut out),
            retries: total("t_retries", &mut out),
            revoked: total("t_revoked", &mut out),
        },
        jobs,
        classes,
        delayed,
        profiles: profiles.into_values().collect(),
        machines,
        finished,
        anomalies: out,
    }
    .finish()
}

/// Machines by name, by heartbeat expiry, by earliest lease expiry, and idle lines, against
/// the machines' own fields.
fn check_machine_indexes(raw: &Raw, machines: &[MachineDump], out: &mut Vec<String>) {
    let names: BTreeMap<String, u64> = raw
        .mname
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), text(v).parse().ok()?)))
        .collect();
    let held: BTreeMap<String, u64> = machines.iter().map(|m| (m.name.clone(), m.id.0)).collect();
    if names != held || names.len() != raw.mname.len() {
        out.push(format!(
            "the machine name index {names:?} is not the machines' names {held:?}"
        ));
    }
    // Members are zero-padded ids (lua/prelude.lua F.pad); an unreadable one stays as text.
    let scored = |s: &Scored| -> BTreeSet<(u64, String)> {
        s.iter()
            .map(|(m, t)| {
                let id = m
                    .parse::<u64>()
                    .map_or_else(|_| m.clone(), |id| id.to_string());
                (*t as u64, id)
            })
            .collect()
    };
    let want: BTreeSet<(u64, String)> = machines
        .iter()
        .filter(|m| m.state == "ready")
        .map(|m| (m.expires.0, m.id.0.to_string()))
        .collect();
    same(
        &scored(&raw.mexp),
        &want,
        "the heartbeat expiry index",
        "the ready machines' expiries",
        out,
    );
    let want: BTreeSet<(u64, String)> = machines
        .iter()
        .filter_map(|m| {
            let min = m.leases.iter().map(|l| l.expiry.0).min()?;
            Some((min, m.id.0.to_string()))
        })
        .collect();
    same(
        &scored(&raw.lexp),
        &want,
        "the lease expiry index",
        "the machines' earliest lease expiries",
        out,
    );
    let mut lines: BTreeMap<u64, BTreeSet<(u64, String)>> = BTreeMap::new();
    for m in machines {
        if let Some(w) = &m.waiting {
            lines
                .entry(m.profile.0 as u64)
                .or_default()
                .insert((w.seq, m.id.0.to_string()));
        }
    }
    let held: BTreeMap<u64, BTreeSet<(u64, String)>> = raw
        .lines
        .iter()
        .filter(|(_, l)| !l.is_empty())
        .map(|(&p, l)| (p, scored(l)))
        .collect();
    if held != lines {
        out.push(format!(
            "the idle lines {held:?} are not the waiting machines {lines:?}"
        ));
    }
    let waitp = ids_of(&raw.waitp, "waitp", out);
    same(
        &waitp,
        &lines.keys().copied().collect(),
        "waitp",
        "the profiles with idle machines",
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_the_table() {
        let kind = |k: &str| classify(k).map(|(kind, id)| (kind.pattern, id));
        assert_eq!(kind("meta"), Some(("meta", None)));
        assert_eq!(kind("j:17"), Some(("j:<n>", Some(17))));
        assert_eq!(kind("c:3:q"), Some(("c:<n>:q", Some(3))));
        assert_eq!(kind("c:3:allows"), Some(("c:<n>:allows", Some(3))));
        assert_eq!(kind("c:3"), Some(("c:<n>", Some(3))));
        assert_eq!(
            kind("wake:1700000000000000"),
            Some(("wake:<n>", Some(1_700_000_000_000_000)))
        );
        assert_eq!(kind("journal"), Some(("journal", None)));
        assert_eq!(kind("journey"), None);
        assert_eq!(kind("j:x"), None);
        assert_eq!(kind("c:3:q:extra"), None);
        assert_eq!(kind("j:+3"), None);
    }

    #[test]
    fn scan_patterns_escape_globs() {
        assert_eq!(glob_escape("{a*b}:"), "{a\\*b}:");
        assert_eq!(glob_escape("{x[1]?}:"), "{x\\[1\\]\\?}:");
    }
}
