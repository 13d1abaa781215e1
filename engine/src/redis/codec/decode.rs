//! The script's reply as `Reply`/`Refusal`. Refusals name the request's own ids (so an id the
//! script could not hold exactly in a double is echoed exactly); a reply of an unexpected shape
//! is a `StoreError::Decode`, never a panic.

use super::encode::{requirements_from_key, Entry, Wire};
use super::spec::from_stored;
use crate::core::model::{JobView, Progress};
use crate::core::{JobError, JobId, JobResult, MachineId, Requirements, StateName, Time, Token};
use crate::runtime::StoreError;
use crate::store::request::{
    ClassDepth, Grant, JobCounts, LeaseStatus, MachineView, ReapReport, StoreStats, Totals,
};
use crate::store::{Refusal, Reply, Request};
use ::redis::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(what.to_string())
}

/// A cursor over one reply array.
struct Fields<'a> {
    items: &'a [Value],
    at: usize,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value) -> Result<Fields<'a>, StoreError> {
        match value {
            Value::Array(items) => Ok(Fields { items, at: 0 }),
            other => Err(bad(format!("expected an array, got {other:?}"))),
        }
    }

    fn next(&mut self) -> Option<&'a Value> {
        let item = self.items.get(self.at);
        self.at += 1;
        item
    }

    fn done(&self) -> bool {
        self.at >= self.items.len()
    }

    fn rest(&mut self) -> &'a [Value] {
        let rest = self.items.get(self.at..).unwrap_or(&[]);
        self.at = self.items.len();
        rest
    }

    fn value(&mut self) -> Result<&'a Value, StoreError> {
        self.next()
            .ok_or_else(|| bad(format!("reply too short: {:?}", self.items)))
    }

    fn opt_str(&mut self) -> Result<Option<String>, StoreError> {
        match self.next() {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::BulkString(b)) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|e| bad(format!("not UTF-8: {e}"))),
            Some(Value::SimpleString(s)) => Ok(Some(s.clone())),
            Some(Value::Int(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(bad(format!("expected a string, got {other:?}"))),
        }
    }

    fn str(&mut self) -> Result<String, StoreError> {
        self.opt_str()?
            .ok_or_else(|| bad(format!("missing string in {:?}", self.items)))
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, StoreError> {
        match self.next() {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Int(n)) => u64::try_from(*n)
                .map(Some)
                .map_err(|_| bad(format!("negative number {n}"))),
            Some(Value::BulkString(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| bad(format!("not a number: {:?}", String::from_utf8_lossy(b)))),
            Some(other) => Err(bad(format!("expected a number, got {other:?}"))),
        }
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        self.opt_u64()?
            .ok_or_else(|| bad(format!("missing number in {:?}", self.items)))
    }

    fn u32(&mut self) -> Result<u32, StoreError> {
        let n = self.u64()?;
        u32::try_from(n).map_err(|_| bad(format!("{n} does not fit 32 bits")))
    }

    fn f64(&mut self) -> Result<f64, StoreError> {
        let text = self.str()?;
        text.parse()
            .map_err(|_| bad(format!("not a float: {text:?}")))
    }
}

fn state_name(text: &str) -> Result<StateName, StoreError> {
    Ok(match text {
        "queued" => StateName::Queued,
        "delayed" => StateName::Delayed,
        "leased" => StateName::Leased,
        "succeeded" => StateName::Succeeded,
        "dead" => StateName::Dead,
        "cancelled" => StateName::Cancelled,
        "timed_out" => StateName::TimedOut,
        "unworkable" => StateName::Unworkable,
        other => return Err(bad(format!("unknown job state {other:?}"))),
    })
}

fn machine_state(text: &str) -> Result<&'static str, StoreError> {
    Ok(match text {
        "ready" => "ready",
        "lost" => "lost",
        "gone" => "gone",
        other => return Err(bad(format!("unknown machine state {other:?}"))),
    })
}

/// The requirements a class key spells out.
fn requirements_of(class_key: &str) -> Result<Arc<Requirements>, StoreError> {
    Ok(Arc::new(requirements_from_key(class_key).map_err(bad)?))
}

fn job_view(value: &Value) -> Result<JobView, StoreError> {
    let mut f = Fields::of(value)?;
    let id = JobId(f.u64()?);
    let state = state_name(&f.str()?)?;
    let attempt = f.u32()?;
    let machine = f.opt_u64()?.map(MachineId);
    let submitted_at = Time(f.u64()?);
    let started_at = f.opt_u64()?.map(Time);
    let finished_at = f.opt_u64()?.map(Time);
    let error = f.opt_str()?.as_deref().map(JobError::from_stored);
    let percent = f.opt_u64()?;
    let message = f.opt_str()?;
    let spec_json = f.str()?;
    let class_key = f.str()?;
    let result = f.opt_str()?.map(JobResult::new);
    let progress = match (percent, message) {
        (Some(percent), Some(message)) => Some(Progress {
            percent: percent.min(100) as u8,
            message,
        }),
        _ => None,
    };
    Ok(JobView {
        id,
        state,
        attempt,
        machine,
        submitted_at,
        started_at,
        finished_at,
        error,
        progress,
        result,
        spec: from_stored(&spec_json, requirements_of(&class_key)?)?,
    })
}

/// A claim's grants, in runs of one class and deadline: the class key, the deadline and their
/// number, then job, token, attempt and spec for each.
fn grant_runs(f: &mut Fields<'_>) -> Result<Vec<Grant>, StoreError> {
    let mut grants = Vec::new();
    while !f.done() {
        let key = f.str()?;
        let requirements = requirements_of(&key)?;
        let deadline = Time(f.u64()?);
        for _ in 0..f.u64()? {
            grants.push(Grant {
                job: JobId(f.u64()?),
                token: Token(f.u64()?),
                attempt: f.u32()?,
                deadline,
                spec: from_stored(&f.str()?, requirements.clone())?,
            });
        }
    }
    Ok(grants)
}

fn machine_view(value: &Value) -> Result<MachineView, StoreError> {
    let mut f = Fields::of(value)?;
    Ok(MachineView {
        id: MachineId(f.u64()?),
        name: f.str()?,
        pool: f.str()?,
        state: machine_state(&f.str()?)?,
        gpus: f.u32()?,
        gpu_model: f.str()?,
        gpu_mem_gb: f.u32()?,
        cost_per_hour: f.f64()?,
        leases: f.u32()?,
        idle: f.u64()? != 0,
        registered_at: Time(f.u64()?),
        last_seen: Time(f.u64()?),
        kinds: serde_json::from_str(&f.str()?).map_err(|e| bad(format!("machine kinds: {e}")))?,
    })
}

fn stats(f: &mut Fields<'_>) -> Result<Reply, StoreError> {
    let mut c = Fields::of(f.value()?)?;
    let jobs = JobCounts {
        queued: c.opt_u64()?.unwrap_or(0),
        delayed: c.opt_u64()?.unwrap_or(0),
        leased: c.opt_u64()?.unwrap_or(0),
        finished_retained: c.opt_u64()?.unwrap_or(0),
    };
    let classes = Fields::of(f.value()?)?
        .rest()
        .iter()
        .map(|v| {
            let mut d = Fields::of(v)?;
            Ok(ClassDepth {
                class: d.u32()?,
                requirements: requirements_of(&d.str()?)?,
                queued: d.u64()?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut m = Fields::of(f.value()?)?;
    let mut machines = BTreeMap::new();
    while let Some(name) = m.opt_str()? {
        machines.insert(name, m.u64()?);
    }
    let mut t = Fields::of(f.value()?)?;
    let mut total = || t.opt_u64().map(|n| n.unwrap_or(0));
    let totals = Totals {
        submitted: total()?,
        succeeded: total()?,
        dead: total()?,
        cancelled: total()?,
        timed_out: total()?,
        unworkable: total()?,
        retries: total()?,
        revoked: total()?,
    };
    let spend = f.f64()?;
    Ok(Reply::Stats(Box::new(StoreStats {
        jobs,
        classes,
        machines,
        totals,
        spend,
    })))
}

fn static_what(what: &str) -> &'static str {
    match what {
        "jobs" => "jobs",
        "job ids" => "job ids",
        "classes" => "classes",
        "machines" => "machines",
        "leases per heartbeat" => "leases per heartbeat",
        "requests per batch" => "requests per batch",
        _ => "store capacity",
    }
}

/// The ids a refusal names, taken from the request that met it.
fn refusal(f: &mut Fields<'_>, request: &Request) -> Result<Refusal, StoreError> {
    let code = f.str()?;
    let (job, token, machine) = match request {
        Request::Cancel { job } | Request::Get { job } => (Some(*job), None, None),
        Request::Complete { job, token, .. }
        | Request::Release { job, token }
        | Request::Progress { job, token, .. } => (Some(*job), Some(*token), None),
        Request::Heartbeat { machine, .. }
        | Request::Claim { machine, .. }
        | Request::Deregister { machine } => (None, None, Some(*machine)),
        _ => (None, None, None),
    };
    let missing = || bad(format!("refusal {code:?} for a request without its ids"));
    Ok(match code.as_str() {
        "unknown_job" => Refusal::UnknownJob(job.ok_or_else(missing)?),
        "unknown_machine" => Refusal::UnknownMachine(machine.ok_or_else(missing)?),
        "machine_lost" => Refusal::MachineLost(machine.ok_or_else(missing)?),
        "stale" => Refusal::Stale {
            job: job.ok_or_else(missing)?,
            token: token.ok_or_else(missing)?,
        },
        "already_finished" => Refusal::AlreadyFinished {
            job: job.ok_or_else(missing)?,
            state: state_name(&f.str()?)?,
        },
        "failed" => Refusal::Failed(f.str()?),
        "full" => Refusal::Full {
            what: static_what(&f.str()?),
            limit: f.u64()?,
        },
        other => {
            let detail = f.opt_str()?.unwrap_or_default();
            return Err(StoreError::Script(format!(
                "script refused with {other:?} {detail}"
            )));
        }
    })
}

fn reply(value: &Value, request: &Request) -> Result<Result<Reply, Refusal>, StoreError> {
    let mut f = Fields::of(value)?;
    let kind = f.str()?;
    let reply = match kind.as_str() {
        "err" => return Ok(Err(refusal(&mut f, request)?)),
        "submitted" => Reply::Submitted {
            job: JobId(f.u64()?),
            created: f.u64()? != 0,
        },
        "cancelled" => {
            let Request::Cancel { job } = request else {
                return Err(bad("a cancel reply to another request"));
            };
            Reply::Cancelled {
                job: *job,
                previous: state_name(&f.str()?)?,
            }
        }
        "job" => Reply::Job(Box::new(job_view(f.value()?)?)),
        "registered" => Reply::Registered {
            machine: MachineId(f.u64()?),
        },
        "deregistered" => Reply::Deregistered { revoked: f.u32()? },
        "heartbeat" => {
            let leases = Fields::of(f.value()?)?
                .rest()
                .iter()
                .map(|v| match v {
                    Value::Int(0) => Ok(LeaseStatus::Revoked),
                    Value::Int(d) if *d > 0 => Ok(LeaseStatus::Renewed {
                        deadline: Time(*d as u64),
                    }),
                    other => Err(bad(format!("lease status {other:?}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Reply::Heartbeat { leases }
        }
        "claimed" => {
            let idle = f.u64()? != 0;
            let grants = grant_runs(&mut f)?;
            Reply::Claimed { grants, idle }
        }
        "recorded" => Reply::Recorded {
            state: state_name(&f.str()?)?,
        },
        "released" => Reply::Released,
        "reaped" => Reply::Reaped(ReapReport {
            promoted: f.u32()?,
            machines_lost: f.u32()?,
            requeued: f.u32()?,
            dead: f.u32()?,
            timed_out: f.u32()?,
            unworkable: f.u32()?,
            purged: f.u32()?,
            more: f.u64()? != 0,
            forgotten: f.u32()?,
        }),
        "progress" => Reply::ProgressNoted,
        "jobs" => Reply::Jobs(f.rest().iter().map(job_view).collect::<Result<_, _>>()?),
        "machines" => Reply::Machines(
            f.rest()
                .iter()
                .map(machine_view)
                .collect::<Result<_, _>>()?,
        ),
        "stats" => stats(&mut f)?,
        other => return Err(bad(format!("unknown reply kind {other:?}"))),
    };
    Ok(Ok(reply))
}

/// The replies of a batch's entries as one reply per request: a `succeed_all` entry
/// (`Entry::Successes`) answers the number of its successes if it recorded them all, else 1 for
/// each success it recorded and that complete's reply for each other.
fn ungroup<'a>(replies: &'a [Value], entries: &[Entry]) -> Result<Vec<&'a Value>, StoreError> {
    static RECORDED_SUCCEEDED: LazyLock<Value> = LazyLock::new(|| {
        Value::Array(vec![
            Value::BulkString(b"recorded".to_vec()),
            Value::BulkString(b"succeeded".to_vec()),
        ])
    });
    if entries.len() != replies.len() {
        return Err(bad(format!(
            "{} replies to a batch of {} entries",
            replies.len(),
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(replies.len());
    for (entry, reply) in entries.iter().zip(replies) {
        match entry {
            Entry::Request => out.push(reply),
            // Every success recorded: their count alone.
            Entry::Successes(n) if *reply == Value::Int(*n as i64) => {
                out.extend(std::iter::repeat_n(&*RECORDED_SUCCEEDED, *n));
            }
            // The entry failed as a whole (undone): each of its successes is answered so.
            Entry::Successes(n) if is_refusal(reply) => out.extend(std::iter::repeat_n(reply, *n)),
            Entry::Successes(n) => {
                let items = Fields::of(reply)?.rest();
                if items.len() != *n {
                    return Err(bad(format!("{} replies to {n} successes", items.len())));
                }
                out.extend(items.iter().map(|item| match item {
                    Value::Int(1) => &*RECORDED_SUCCEEDED,
                    other => other,
                }));
            }
        }
    }
    Ok(out)
}

/// Whether `reply` is a refusal (`{'err', code, ...}`, prelude.lua's F.err).
fn is_refusal(reply: &Value) -> bool {
    matches!(reply, Value::Array(items) if items.first() == Some(&Value::BulkString(b"err".to_vec())))
}

/// Decodes `{reply, woken machines}` for `request`; `wire.early` holds the refusals judged before
/// sending (by batch position).
pub fn decode(
    value: &Value,
    request: &Request,
    wire: &Wire,
) -> Result<(Result<Reply, Refusal>, Vec<MachineId>), StoreError> {
    let mut top = Fields::of(value)?;
    let body = top.value()?;
    let wakes = Fields::of(top.value()?)?
        .rest()
        .iter()
        .map(|v| match v {
            Value::Int(n) if *n > 0 => Ok(MachineId(*n as u64)),
            other => Err(bad(format!("woken machine {other:?}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let result = match request {
        Request::Batch(requests) => {
            let mut f = Fields::of(body)?;
            if f.str()? != "batch" {
                return Err(bad("a batch answered without a batch reply"));
            }
            let replies = ungroup(f.rest(), &wire.entries)?;
            if replies.len() != requests.len() {
                return Err(bad(format!(
                    "{} replies to a batch of {}",
                    replies.len(),
                    requests.len()
                )));
            }
            let results = requests
                .iter()
                .zip(replies)
                .enumerate()
                .map(|(i, (r, v))| match wire.early.get(i).cloned().flatten() {
                    Some(refusal) => Ok(Err(refusal)),
                    None => reply(v, r),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Reply::Batch(results))
        }
        other => reply(body, other)?,
    };
    Ok((result, wakes))
}
