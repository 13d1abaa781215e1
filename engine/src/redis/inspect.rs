//! What `drover inspect` shows: a job, a machine, the queues, a namespace, read from the keys
//! with plain commands and decoded as `dump.rs` decodes them (so one decoder serves the
//! conformance suite and the operator). Each report is a serializable struct (`--json`) with a
//! `render` to aligned text. A job or machine report reads only that job's or machine's keys;
//! `namespace --check` decodes the whole namespace.

use super::dump::{decode_job, decode_machine, decode_profile, KeyKind, KEYS};
use super::formats::{decode_leases, whole, Hot, RunRecord};
use super::libraries::Library;
use super::{requirements_from_key, RedisStore, DATA_LAYOUT};
use crate::core::{JobId, MachineId, Requirements, StateName, Time};
use crate::runtime::StoreError;
use crate::store::dump::{JobDump, MachineDump};
use crate::store::request::{JobCounts, Totals};
use ::redis::Value;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

type Hash = BTreeMap<String, Vec<u8>>;

fn hash_of(value: Value) -> Result<Hash, StoreError> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
        ::redis::from_redis_value(value).map_err(|e| StoreError::Decode(e.to_string()))?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
        .collect())
}

fn opt_bytes(value: Value) -> Result<Option<Vec<u8>>, StoreError> {
    ::redis::from_redis_value(value).map_err(|e| StoreError::Decode(e.to_string()))
}

fn int(value: Value) -> Result<u64, StoreError> {
    ::redis::from_redis_value(value).map_err(|e| StoreError::Decode(e.to_string()))
}

fn decode_err(what: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(what.to_string())
}

/// Where a queued job stands in its class's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct QueuePlace {
    /// 1 is the next to be claimed.
    pub position: u64,
    pub of: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JobReport {
    pub namespace: String,
    /// The store clock when read.
    pub now: Time,
    pub job: JobDump,
    pub requirements: Option<Requirements>,
    pub queue: Option<QueuePlace>,
    pub delayed_until: Option<Time>,
    /// While leased: the holder's name and when the lease expires unless renewed.
    pub machine_name: Option<String>,
    pub lease_expiry: Option<Time>,
    /// The job's journal events, oldest first (the newest 200; see `RedisStore::job_journal`).
    pub journal: Option<Vec<serde_json::Value>>,
    /// What does not add up in this job's keys.
    pub anomalies: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseView {
    pub job: JobId,
    pub expiry: Time,
    /// The job's record, if it still holds this lease: attempt, token, when it started.
    pub attempt: Option<u32>,
    pub token: Option<u64>,
    pub started_at: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MachineReport {
    pub namespace: String,
    pub now: Time,
    pub machine: MachineDump,
    pub leases: Vec<LeaseView>,
    pub anomalies: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueueRow {
    pub class: u32,
    pub requirements: Option<Requirements>,
    pub depth: u64,
    /// The job a claim takes next.
    pub head: Option<JobId>,
    /// The job queued longest (the lowest id: ids follow submission), and when it was
    /// submitted.
    pub oldest: Option<JobId>,
    pub oldest_submitted_at: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QueuesReport {
    pub namespace: String,
    pub now: Time,
    pub counts: JobCounts,
    /// Classes in all; `queues` shows those with queued jobs.
    pub classes: u64,
    pub queues: Vec<QueueRow>,
    pub delayed: u64,
    pub next_release: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyCount {
    #[serde(flatten)]
    pub kind: KeyKind,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NamespaceReport {
    pub namespace: String,
    /// The data layout that wrote the namespace (None: never written).
    pub layout: Option<String>,
    /// The layout this build reads.
    pub engine_layout: u32,
    /// When its data was first written (µs).
    pub epoch: Option<Time>,
    pub now: Time,
    pub last_job: u64,
    pub last_machine: u64,
    pub wait_seq: u64,
    pub counts: JobCounts,
    pub totals: Totals,
    pub classes: u64,
    pub profiles: u64,
    pub machines: BTreeMap<String, u64>,
    /// The keys by kind (`dump::KEYS`), with how many the namespace holds.
    pub keys: Vec<KeyCount>,
    pub unknown_keys: Vec<String>,
    /// Drover's function libraries on the server, and which one this build loads.
    pub libraries: Vec<Library>,
    pub current_library: String,
    /// With `--check`: everything the whole namespace's decoding found that does not add up.
    pub anomalies: Option<Vec<String>>,
}

impl RedisStore {
    /// Refuses to decode a namespace written in another layout.
    async fn readable(&self) -> Result<(Hash, Hot), StoreError> {
        let mut read = ::redis::cmd("HGETALL");
        read.arg(&self.inner.meta_key);
        let meta = hash_of(self.query(read).await?)?;
        if let Some(layout) = meta.get("layout") {
            let layout = String::from_utf8_lossy(layout);
            if layout != DATA_LAYOUT.to_string() {
                return Err(StoreError::Connection(format!(
                    "namespace {:?} holds data in layout {layout}; this drover reads layout \
                     {DATA_LAYOUT}: inspect it with the drover that wrote it",
                    self.inner.namespace
                )));
            }
        }
        let hot = match meta.get("hot") {
            Some(bytes) => Hot::decode(bytes).map_err(|e| decode_err(format!("meta.hot: {e}")))?,
            None => Hot::default(),
        };
        Ok((meta, hot))
    }

    fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.inner.namespace)
    }

    /// Job `job`'s journal events, oldest first, as `drover journal export` writes them (at
    /// most `MAX_JOB_EVENTS`, the newest). Reads the whole journal in pages: the journal is
    /// bounded (`[engine.journal]`), and this is an operator's command.
    pub async fn job_journal(
        &self,
        job: JobId,
    ) -> Result<Option<Vec<serde_json::Value>>, StoreError> {
        const MAX_JOB_EVENTS: usize = 200;
        let mut events = std::collections::VecDeque::new();
        let mut after = None;
        loop {
            let page = self.read_journal(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            for entry in &page {
                for event in entry.events.iter().filter(|e| e.job() == Some(job)) {
                    let line = entry.export_line(event);
                    events.push_back(serde_json::from_str(&line).unwrap_or_default());
                    if events.len() > MAX_JOB_EVENTS {
                        events.pop_front();
                    }
                }
            }
        }
        Ok(Some(events.into()))
    }

    /// Job `id` as `drover inspect job` shows it, or `None` if the namespace holds no such job.
    pub async fn inspect_job(&self, id: JobId) -> Result<Option<JobReport>, StoreError> {
        let (_, hot) = self.readable().await?;
        let field = id.0.to_string();
        let mut pipe = ::redis::pipe();
        pipe.cmd("HGET").arg(self.key("run")).arg(&field);
        pipe.cmd("HGETALL").arg(self.key(&format!("j:{field}")));
        pipe.cmd("HGET").arg(self.key("spec")).arg(&field);
        pipe.cmd("ZSCORE")
            .arg(self.key("delayed"))
            .arg(format!("{:020}", id.0));
        let mut replies = self.query_pipe(&pipe).await?.into_iter();
        let mut next = || replies.next().unwrap_or(Value::Nil);
        let Some(run) = opt_bytes(next())? else {
            return Ok(None);
        };
        let j = hash_of(next())?;
        let spec = opt_bytes(next())?;
        let delayed: Option<f64> =
            ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
        let mut anomalies = Vec::new();
        let Some(job) = decode_job(id.0, &run, &j, spec.as_deref(), &mut anomalies) else {
            return Err(decode_err(anomalies.join("; ")));
        };
        let class = job.class.0;
        let mut pipe = ::redis::pipe();
        pipe.cmd("HGET")
            .arg(self.key(&format!("c:{class}")))
            .arg("key");
        pipe.cmd("ZRANK")
            .arg(self.key(&format!("c:{class}:q")))
            .arg(&field);
        pipe.cmd("ZCARD").arg(self.key(&format!("c:{class}:q")));
        let machine = job.lease.map(|l| l.machine.0);
        pipe.cmd("HMGET")
            .arg(self.key(&format!("m:{}", machine.unwrap_or(0))))
            .arg("name")
            .arg("leases");
        let mut replies = self.query_pipe(&pipe).await?.into_iter();
        let mut next = || replies.next().unwrap_or(Value::Nil);
        let requirements = match opt_bytes(next())? {
            Some(key) => match requirements_from_key(&String::from_utf8_lossy(&key)) {
                Ok(r) => Some(r),
                Err(e) => {
                    anomalies.push(format!("class {class}: {e}"));
                    None
                }
            },
            None => {
                anomalies.push(format!("class {class} does not exist"));
                None
            }
        };
        let rank: Option<u64> =
            ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
        let depth = int(next())?;
        let queue = rank.map(|r| QueuePlace {
            position: r + 1,
            of: depth,
        });
        if (job.state == StateName::Queued) != queue.is_some() {
            anomalies.push(format!(
                "the job is {:?} and {}in its class's queue",
                job.state,
                if queue.is_some() { "" } else { "not " }
            ));
        }
        let delayed_until = match delayed {
            Some(t) => Some(Time(whole(t, "release time").map_err(decode_err)?)),
            None => None,
        };
        if (job.state == StateName::Delayed) != delayed_until.is_some() {
            anomalies.push(format!(
                "the job is {:?} and {}in the delayed list",
                job.state,
                if delayed_until.is_some() { "" } else { "not " }
            ));
        }
        let (name, leases): (Option<String>, Option<Vec<u8>>) =
            ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
        let (machine_name, lease_expiry) = match machine {
            None => (None, None),
            Some(m) => {
                let expiry = decode_leases(leases.as_deref().unwrap_or_default())
                    .map_err(decode_err)?
                    .into_iter()
                    .find(|&(job, _)| job == id.0)
                    .map(|(_, t)| Time(t));
                if expiry.is_none() {
                    anomalies.push(format!("machine {m}'s leases do not hold the job"));
                }
                (name, expiry)
            }
        };
        Ok(Some(JobReport {
            namespace: self.inner.namespace.clone(),
            now: Time(hot.clock),
            job,
            requirements,
            queue,
            delayed_until,
            machine_name,
            lease_expiry,
            journal: self.job_journal(id).await?,
            anomalies,
        }))
    }

    /// Machine `id` as `drover inspect machine` shows it, or `None` if there is no such machine.
    pub async fn inspect_machine(
        &self,
        id: MachineId,
    ) -> Result<Option<MachineReport>, StoreError> {
        let (_, hot) = self.readable().await?;
        let mut read = ::redis::cmd("HGETALL");
        read.arg(self.key(&format!("m:{}", id.0)));
        let h = hash_of(self.query(read).await?)?;
        if h.is_empty() {
            return Ok(None);
        }
        let mut anomalies = Vec::new();
        let profile: u64 = h
            .get("profile")
            .and_then(|p| String::from_utf8_lossy(p).parse().ok())
            .ok_or_else(|| decode_err(format!("machine {}: no profile", id.0)))?;
        let mut read = ::redis::cmd("HGETALL");
        read.arg(self.key(&format!("p:{profile}")));
        let p = hash_of(self.query(read).await?)?;
        let mut profiles = BTreeMap::new();
        match decode_profile(profile, &p) {
            Ok(p) => {
                profiles.insert(profile, p);
            }
            Err(e) => anomalies.push(format!("profile {profile}: {e}")),
        }
        let machine = decode_machine(id.0, &h, &profiles, &mut anomalies)
            .map_err(|e| decode_err(format!("machine {}: {e}", id.0)))?;
        let mut leases = Vec::new();
        if !machine.leases.is_empty() {
            let mut read = ::redis::cmd("HMGET");
            read.arg(self.key("run"));
            for l in &machine.leases {
                read.arg(l.job.0);
            }
            let records: Vec<Option<Vec<u8>>> = ::redis::from_redis_value(self.query(read).await?)
                .map_err(|e| decode_err(e.to_string()))?;
            for (l, record) in machine.leases.iter().zip(records) {
                let r = record.as_deref().map(RunRecord::decode).transpose();
                let live = match r {
                    Ok(Some(r)) if r.state == StateName::Leased && r.machine == id.0 => Some(r),
                    Ok(_) => {
                        anomalies.push(format!(
                            "lease of job {} is not the job's live lease",
                            l.job.0
                        ));
                        None
                    }
                    Err(e) => {
                        anomalies.push(format!("job {}: run record: {e}", l.job.0));
                        None
                    }
                };
                leases.push(LeaseView {
                    job: l.job,
                    expiry: l.expiry,
                    attempt: live.map(|r| r.attempt as u32),
                    token: live.map(|r| r.token),
                    started_at: live.map(|r| Time(r.started_at)),
                });
            }
        }
        Ok(Some(MachineReport {
            namespace: self.inner.namespace.clone(),
            now: Time(hot.clock),
            machine,
            leases,
            anomalies,
        }))
    }

    /// Queue depth per class with queued jobs, the head and the oldest job of each, and the
    /// delayed retries.
    pub async fn inspect_queues(&self) -> Result<QueuesReport, StoreError> {
        let (meta, hot) = self.readable().await?;
        let classes = meta
            .get("classes")
            .and_then(|c| String::from_utf8_lossy(c).parse().ok())
            .unwrap_or(0);
        let mut pipe = ::redis::pipe();
        pipe.cmd("ZRANGE").arg(self.key("nonempty")).arg(0).arg(-1);
        pipe.cmd("ZCARD").arg(self.key("delayed"));
        pipe.cmd("ZRANGE")
            .arg(self.key("delayed"))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES");
        let mut replies = self.query_pipe(&pipe).await?.into_iter();
        let mut next = || replies.next().unwrap_or(Value::Nil);
        let nonempty: Vec<u32> =
            ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
        let delayed = int(next())?;
        let first: Vec<(String, f64)> =
            ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
        let next_release = first.first().map(|(_, t)| Time(*t as u64));
        let mut queues = Vec::new();
        for class in nonempty {
            let q = self.key(&format!("c:{class}:q"));
            let mut pipe = ::redis::pipe();
            pipe.cmd("HGET")
                .arg(self.key(&format!("c:{class}")))
                .arg("key");
            pipe.cmd("ZCARD").arg(&q);
            pipe.cmd("ZRANGE").arg(&q).arg(0).arg(0);
            // The lowest id of each priority band (lua/prelude.lua F.queue_score): the oldest
            // job is the lowest of those, found without reading the whole queue.
            for priority in 0..=100u64 {
                let low = (100 - priority) << 46;
                let high = (101 - priority) << 46;
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(&q)
                    .arg(low)
                    .arg(format!("({high}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(1);
            }
            let mut replies = self.query_pipe(&pipe).await?.into_iter();
            let mut next = || replies.next().unwrap_or(Value::Nil);
            let requirements = opt_bytes(next())?
                .and_then(|k| requirements_from_key(&String::from_utf8_lossy(&k)).ok());
            let depth = int(next())?;
            let head: Vec<u64> =
                ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
            let mut oldest: Option<u64> = None;
            for _ in 0..=100 {
                let band: Vec<u64> =
                    ::redis::from_redis_value(next()).map_err(|e| decode_err(e.to_string()))?;
                if let Some(&id) = band.first() {
                    oldest = Some(oldest.map_or(id, |o| o.min(id)));
                }
            }
            let oldest_submitted_at = match oldest {
                Some(id) => {
                    let mut read = ::redis::cmd("HGET");
                    read.arg(self.key(&format!("j:{id}"))).arg("submitted_at");
                    opt_bytes(self.query(read).await?)?
                        .and_then(|t| String::from_utf8_lossy(&t).parse().ok())
                        .map(Time)
                }
                None => None,
            };
            queues.push(QueueRow {
                class,
                requirements,
                depth,
                head: head.first().map(|&id| JobId(id)),
                oldest: oldest.map(JobId),
                oldest_submitted_at,
            });
        }
        Ok(QueuesReport {
            namespace: self.inner.namespace.clone(),
            now: Time(hot.clock),
            counts: JobCounts {
                queued: hot.queued,
                delayed: hot.delayed,
                leased: hot.leased,
                finished_retained: hot.finished,
            },
            classes,
            queues,
            delayed,
            next_release,
        })
    }

    /// The namespace's layout, counters, keys by kind, and the function libraries on the
    /// server; with `check`, also every anomaly a full decoding finds (`dump`).
    pub async fn inspect_namespace(&self, check: bool) -> Result<NamespaceReport, StoreError> {
        let mut read = ::redis::cmd("HGETALL");
        read.arg(&self.inner.meta_key);
        let meta = hash_of(self.query(read).await?)?;
        let text = |f: &str| meta.get(f).map(|v| String::from_utf8_lossy(v).into_owned());
        let n = |f: &str| text(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let layout = text("layout");
        let same_layout = layout
            .as_deref()
            .is_none_or(|l| l == DATA_LAYOUT.to_string());
        let hot = match meta.get("hot") {
            Some(bytes) if same_layout => Hot::decode(bytes).unwrap_or_default(),
            _ => Hot::default(),
        };
        let keys = self.namespace_keys().await?;
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let mut unknown_keys = Vec::new();
        let mut machine_ids = Vec::new();
        for k in &keys {
            match super::dump::classify(k) {
                Some((kind, id)) => {
                    *counts.entry(kind.pattern).or_default() += 1;
                    if kind.pattern == "m:<n>" {
                        machine_ids.extend(id);
                    }
                }
                None => unknown_keys.push(k.clone()),
            }
        }
        let mut machines = BTreeMap::new();
        for chunk in machine_ids.chunks(1000) {
            let mut pipe = ::redis::pipe();
            for id in chunk {
                pipe.cmd("HGET")
                    .arg(self.key(&format!("m:{id}")))
                    .arg("state");
            }
            for state in self.query_pipe(&pipe).await? {
                let state: Option<String> =
                    ::redis::from_redis_value(state).map_err(|e| decode_err(e.to_string()))?;
                *machines
                    .entry(state.unwrap_or_else(|| "(gone since listed)".into()))
                    .or_default() += 1;
            }
        }
        let anomalies = if check && same_layout {
            Some(self.dump().await?.anomalies)
        } else {
            None
        };
        Ok(NamespaceReport {
            namespace: self.inner.namespace.clone(),
            layout,
            engine_layout: DATA_LAYOUT,
            epoch: text("epoch").and_then(|e| e.parse().ok()).map(Time),
            now: Time(hot.clock),
            last_job: n("next_job"),
            last_machine: n("last_machine"),
            wait_seq: n("seq"),
            counts: JobCounts {
                queued: hot.queued,
                delayed: hot.delayed,
                leased: hot.leased,
                finished_retained: hot.finished,
            },
            totals: Totals {
                submitted: hot.t_submitted,
                succeeded: hot.t_succeeded,
                dead: n("t_dead"),
                cancelled: n("t_cancelled"),
                timed_out: n("t_timed_out"),
                unworkable: n("t_unworkable"),
                retries: n("t_retries"),
                revoked: n("t_revoked"),
            },
            classes: n("classes"),
            profiles: n("profiles"),
            machines,
            keys: KEYS
                .iter()
                .map(|kind| KeyCount {
                    kind: *kind,
                    count: counts.get(kind.pattern).copied().unwrap_or(0),
                })
                .collect(),
            unknown_keys,
            libraries: self.libraries().await?,
            current_library: super::libraries::current().to_string(),
            anomalies,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Text.

/// Rows of label and value, the labels padded to one width.
#[derive(Default)]
struct Rows {
    rows: Vec<(String, String)>,
}

impl Rows {
    fn add(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    fn render(&self, out: &mut String) {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            let _ = writeln!(out, "{label:<width$}  {value}");
        }
    }
}

/// A store time (µs since the Unix epoch) as UTC, and how long before or after `now`.
pub fn when(t: Time, now: Time) -> String {
    let rel = if t <= now {
        format!("{} ago", ago(now.since(t).as_secs_f64()))
    } else {
        format!("in {}", ago(t.since(now).as_secs_f64()))
    };
    format!("{} ({rel})", utc(t))
}

fn ago(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0}ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.1}s")
    } else if secs < 7200.0 {
        format!("{:.1}m", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1}h", secs / 3600.0)
    } else {
        format!("{:.1}d", secs / 86_400.0)
    }
}

/// `t` as `YYYY-MM-DD HH:MM:SS.mmmZ`: RFC 3339 with a space, for people.
pub fn utc(t: Time) -> String {
    t.rfc3339().replacen('T', " ", 1)
}

/// Requirements in a line: "2 GPU x 24 GB, disk 10 GB, models [0], gpu models [A100], labels …".
pub fn requirements_text(r: &Requirements) -> String {
    let mut parts = vec![if r.gpus == 0 {
        "no GPU".to_string()
    } else {
        format!("{} GPU x {} GB", r.gpus, r.gpu_mem_gb)
    }];
    if r.disk_gb > 0 {
        parts.push(format!("disk {} GB", r.disk_gb));
    }
    let models: Vec<u8> = r.models.iter().map(|m| m.0).collect();
    if !models.is_empty() {
        parts.push(format!("models {models:?}"));
    }
    if !r.gpu_models.is_empty() {
        parts.push(format!("gpu models {:?}", r.gpu_models));
    }
    if !r.labels.is_empty() {
        parts.push(format!(
            "labels {}",
            serde_json::to_string(&r.labels).unwrap_or_default()
        ));
    }
    if !r.not_labels.is_empty() {
        parts.push(format!(
            "not labels {}",
            serde_json::to_string(&r.not_labels).unwrap_or_default()
        ));
    }
    parts.join(", ")
}

fn state_name(s: StateName) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{s:?}"))
}

fn anomalies_text(anomalies: &[String], out: &mut String) {
    if anomalies.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nanomalies ({}):", anomalies.len());
    for a in anomalies {
        let _ = writeln!(out, "  {a}");
    }
}

impl JobReport {
    pub fn render(&self) -> String {
        let j = &self.job;
        let now = self.now;
        let mut rows = Rows::default();
        rows.add("job", j.id.0.to_string())
            .add("namespace", &self.namespace)
            .add("state", state_name(j.state))
            .add("attempt", format!("{} of {}", j.attempt, j.max_attempts))
            .add("kind", &j.kind)
            .add("priority", j.priority.to_string())
            .add(
                "class",
                format!(
                    "{}: {}",
                    j.class.0,
                    self.requirements
                        .as_ref()
                        .map_or("(unknown)".to_string(), requirements_text)
                ),
            )
            .add("timeout", j.timeout.to_string());
        if let Some(key) = &j.idempotency_key {
            rows.add("idempotency key", key);
        }
        if let Some(q) = self.queue {
            rows.add("queue", format!("position {} of {}", q.position, q.of));
        }
        if let Some(t) = self.delayed_until {
            rows.add("retry at", when(t, now));
        }
        if let Some(lease) = &j.lease {
            rows.add(
                "machine",
                format!(
                    "{} ({})",
                    lease.machine.0,
                    self.machine_name.as_deref().unwrap_or("?")
                ),
            )
            .add("lease token", j.token.0.to_string())
            .add("lease deadline", when(lease.deadline, now))
            .add(
                "lease expiry",
                self.lease_expiry
                    .map_or("(not in its machine's leases)".to_string(), |t| {
                        when(t, now)
                    }),
            )
            .add("attempt deadline", when(lease.attempt_deadline, now));
        } else if j.token.0 != 0 {
            rows.add("last token", j.token.0.to_string());
        }
        if let Some(p) = &j.progress {
            rows.add("progress", format!("{}% {}", p.percent, p.message));
        }
        let mut out = String::new();
        rows.render(&mut out);
        let _ = writeln!(out, "\nhistory (from the job's record):");
        let mut history = Rows::default();
        history.add("  submitted", when(j.submitted_at, now));
        if let Some(t) = j.started_at {
            history.add(
                "  last attempt started",
                format!("{} (attempt {})", when(t, now), j.attempt),
            );
        }
        if let Some(t) = j.recorded {
            history.add("  outcome recorded for token", t.0.to_string());
        }
        if let Some(e) = &j.error {
            let e = crate::core::JobError::from_stored(e);
            let retry = if e.retryable {
                "retryable"
            } else {
                "not retryable"
            };
            history.add(
                "  last error",
                format!("{} ({retry}): {}", e.class, e.message),
            );
        }
        if let Some(t) = j.finished_at {
            history.add(
                "  finished",
                format!("{} ({})", when(t, now), state_name(j.state)),
            );
        }
        history.render(&mut out);
        match &self.journal {
            None => {
                let _ = writeln!(out, "  journal: none (this namespace keeps no journal yet)");
            }
            Some(events) => {
                let _ = writeln!(out, "\njournal ({} events):", events.len());
                for event in events {
                    let _ = writeln!(out, "  {}", journal_line(event, now));
                }
            }
        }
        if !j.payload.is_empty() {
            let mut payload = j.payload.clone();
            if payload.len() > 200 {
                let mut cut = 200;
                while !payload.is_char_boundary(cut) {
                    cut -= 1;
                }
                payload.truncate(cut);
                payload.push('…');
            }
            let _ = writeln!(out, "\npayload ({} bytes): {payload}", j.payload.len());
        }
        anomalies_text(&self.anomalies, &mut out);
        out
    }
}

impl MachineReport {
    pub fn render(&self) -> String {
        let m = &self.machine;
        let now = self.now;
        let mut rows = Rows::default();
        rows.add("machine", m.id.0.to_string())
            .add("namespace", &self.namespace)
            .add("name", &m.name)
            .add("pool", &m.pool)
            .add("state", &m.state)
            .add(
                "spec",
                format!(
                    "{} x {} ({} GB), disk {} GB, ${}/h",
                    m.gpus, m.gpu_model, m.gpu_mem_gb, m.disk_gb, m.cost_per_hour
                ),
            )
            .add(
                "labels",
                serde_json::to_string(&m.labels).unwrap_or_default(),
            )
            .add("profile", m.profile.0.to_string())
            .add("registered", when(m.registered_at, now))
            .add("last heartbeat", when(m.last_seen, now))
            .add(
                if m.state == "ready" {
                    "expires"
                } else {
                    "expired"
                },
                when(m.expires, now),
            );
        match &m.last_claim {
            Some(c) => rows.add(
                "last claim",
                format!(
                    "seq {}, {} jobs{}",
                    c.seq,
                    c.jobs.len(),
                    if c.idle { ", left it idle" } else { "" }
                ),
            ),
            None => rows.add("last claim", "none"),
        };
        if let Some(w) = &m.waiting {
            rows.add(
                "waiting",
                format!(
                    "since seq {}: offers {} GPU x {} GB, disk {} GB",
                    w.seq, w.offer.free_gpus, w.offer.gpu_mem_gb, w.offer.free_disk_gb
                ),
            );
        }
        let mut out = String::new();
        rows.render(&mut out);
        let _ = writeln!(out, "\nleases ({}):", self.leases.len());
        if !self.leases.is_empty() {
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:<20} {:<40} started",
                "job", "attempt", "token", "expiry"
            );
        }
        for l in &self.leases {
            let _ = writeln!(
                out,
                "  {:<12} {:>7} {:<20} {:<40} {}",
                l.job.0,
                l.attempt.map_or("?".into(), |a| a.to_string()),
                l.token.map_or("?".into(), |t| t.to_string()),
                when(l.expiry, now),
                l.started_at.map_or("?".into(), |t| when(t, now)),
            );
        }
        anomalies_text(&self.anomalies, &mut out);
        out
    }
}

impl QueuesReport {
    pub fn render(&self) -> String {
        let now = self.now;
        let mut out = String::new();
        let c = &self.counts;
        let _ = writeln!(
            out,
            "namespace {}: {} queued in {} of {} classes, {} delayed, {} leased, {} finished \
             (retained)",
            self.namespace,
            c.queued,
            self.queues.len(),
            self.classes,
            c.delayed,
            c.leased,
            c.finished_retained
        );
        if let Some(t) = self.next_release {
            let _ = writeln!(out, "next retry released {}", when(t, now));
        }
        if self.queues.is_empty() {
            let _ = writeln!(out, "no jobs queued");
            return out;
        }
        let _ = writeln!(
            out,
            "\n{:>6} {:>8} {:>10} {:>10} {:>10}  requirements",
            "class", "depth", "head", "oldest", "waited"
        );
        for q in &self.queues {
            let waited = q
                .oldest_submitted_at
                .map_or("?".to_string(), |t| ago(now.since(t).as_secs_f64()));
            let _ = writeln!(
                out,
                "{:>6} {:>8} {:>10} {:>10} {:>10}  {}",
                q.class,
                q.depth,
                q.head.map_or("-".into(), |j| j.0.to_string()),
                q.oldest.map_or("-".into(), |j| j.0.to_string()),
                waited,
                q.requirements
                    .as_ref()
                    .map_or("(unknown)".to_string(), requirements_text)
            );
        }
        out
    }
}

impl NamespaceReport {
    pub fn render(&self) -> String {
        let now = self.now;
        let mut rows = Rows::default();
        rows.add("namespace", &self.namespace).add(
            "layout",
            match &self.layout {
                None => format!(
                    "none (never written); this drover writes {}",
                    self.engine_layout
                ),
                Some(l) if *l == self.engine_layout.to_string() => l.clone(),
                Some(l) => format!(
                    "{l} (this drover reads {}: its data is not decoded here)",
                    self.engine_layout
                ),
            },
        );
        if let Some(e) = self.epoch {
            rows.add("first written", when(e, now));
        }
        rows.add("store clock", utc(now));
        let c = &self.counts;
        let t = &self.totals;
        rows.add(
            "jobs",
            format!(
                "{} queued, {} delayed, {} leased, {} finished (retained)",
                c.queued, c.delayed, c.leased, c.finished_retained
            ),
        )
        .add(
            "totals",
            format!(
                "{} submitted, {} succeeded, {} dead, {} cancelled, {} timed out, {} unworkable; \
                 {} retries, {} leases revoked",
                t.submitted,
                t.succeeded,
                t.dead,
                t.cancelled,
                t.timed_out,
                t.unworkable,
                t.retries,
                t.revoked
            ),
        )
        .add(
            "ids issued",
            format!(
                "last job {}, last machine {}, wait seq {}",
                self.last_job, self.last_machine, self.wait_seq
            ),
        )
        .add(
            "classes, profiles",
            format!("{}, {}", self.classes, self.profiles),
        )
        .add(
            "machines",
            if self.machines.is_empty() {
                "none".to_string()
            } else {
                self.machines
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        let mut out = String::new();
        rows.render(&mut out);
        let _ = writeln!(out, "\nkeys ({{{}}}:...):", self.namespace);
        let width = self
            .keys
            .iter()
            .map(|k| k.kind.pattern.len())
            .max()
            .unwrap_or(0);
        for k in &self.keys {
            let _ = writeln!(
                out,
                "  {:<width$}  {:<5} {:>9}  {}",
                k.kind.pattern, k.kind.kind, k.count, k.kind.what
            );
        }
        if !self.unknown_keys.is_empty() {
            let _ = writeln!(
                out,
                "  not in the layout table: {}",
                self.unknown_keys.join(", ")
            );
        }
        let _ = writeln!(out, "\nfunction libraries on the server:");
        if self.libraries.is_empty() {
            let _ = writeln!(out, "  none");
        }
        let now_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for l in &self.libraries {
            let _ = writeln!(
                out,
                "  {}  {}{}",
                l.name,
                match l.announced {
                    Some(t) => format!("announced {} ago", ago(now_secs.saturating_sub(t) as f64)),
                    None => "never announced".to_string(),
                },
                if l.current { "  (this drover's)" } else { "" }
            );
        }
        if !self.libraries.iter().any(|l| l.current) {
            let _ = writeln!(
                out,
                "  (this drover's, {}, is not loaded: it loads on first use)",
                self.current_library
            );
        }
        match &self.anomalies {
            None => {}
            Some(a) if a.is_empty() => {
                let _ = writeln!(out, "\ncheck: every key decodes and agrees with the others");
            }
            Some(a) => anomalies_text(a, &mut out),
        }
        out
    }
}

/// A journal event as one line: when, what, and its other fields.
fn journal_line(event: &serde_json::Value, now: Time) -> String {
    let at = event["at"]
        .as_u64()
        .map_or("?".into(), |us| when(Time(us), now));
    let name = event["event"].as_str().unwrap_or("?");
    let mut rest = event.as_object().cloned().unwrap_or_default();
    for field in ["schema", "id", "at", "event", "job"] {
        rest.remove(field);
    }
    format!("{at}  {name:<12} {}", serde_json::Value::Object(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(Time(0)), "1970-01-01 00:00:00.000Z");
        assert_eq!(utc(Time(1_700_000_000_123_456)), "2023-11-14 22:13:20.123Z");
        assert_eq!(utc(Time(951_782_400_000_000)), "2000-02-29 00:00:00.000Z");
        assert_eq!(
            when(Time(1_000_000), Time(3_500_000)),
            "1970-01-01 00:00:01.000Z (2.5s ago)"
        );
        assert!(when(Time(10_000_000), Time(0)).ends_with("(in 10.0s)"));
    }

    #[test]
    fn rows_align() {
        let mut rows = Rows::default();
        rows.add("a", "1").add("long label", "2");
        let mut out = String::new();
        rows.render(&mut out);
        assert_eq!(out, "a           1\nlong label  2\n");
    }
}
