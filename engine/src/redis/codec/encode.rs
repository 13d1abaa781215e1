//! A request as the script's JSON. What can be judged without the store's data (a job's or a
//! machine's validity, a batch's size) is judged here, as MemStore judges it first too.

use super::msgpack::pack;
use crate::core::class::validate_spec;
use crate::core::model::MAX_PROGRESS_MESSAGE_BYTES;
use crate::core::{EngineConfig, Failure, JobError, ModelSet, Outcome, Requirements};
use crate::store::mem::check_machine_spec;
use crate::store::request::check_result;
use crate::store::{Refusal, Request};
use serde_json::{json, Map, Value};

/// A request ready to send: its packed form (super::msgpack), for a batch the refusals judged
/// here, by position (those positions carry a no-op), and what each entry the script sees
/// stands for.
#[derive(Debug)]
pub struct Wire {
    pub bytes: Vec<u8>,
    pub early: Vec<Option<Refusal>>,
    /// A batch's entries, in order; empty for a single request.
    pub entries: Vec<Entry>,
}

/// What one entry of a batch on the wire stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// One request.
    Request,
    /// This many consecutive successful completes, sent as one `succeed_all` entry (job, token,
    /// job, token...): most of a busy agent's batch, and the script then neither builds a
    /// table nor dispatches per job. Its reply holds one item per complete.
    Successes(usize),
}

/// The engine config as the script reads it: durations in microseconds, the catalog as sizes.
pub fn wire_config(config: &EngineConfig) -> String {
    let l = &config.limits;
    let p = &config.policy;
    json!({
        "lease_ttl": config.lease_ttl.as_micros(),
        "machine_ttl": config.machine_ttl.as_micros(),
        "backoff_base": config.backoff_base.as_micros(),
        "backoff_max": config.backoff_max.as_micros(),
        "unworkable_after": config.unworkable_after.as_micros(),
        // The stored error of an unworkable job up to its unmet requirement, which
        // F.first_unmet appends.
        "unworkable_error": JobError::unworkable(config.unworkable_after, "").to_stored(),
        "retention": config.retention.as_micros(),
        "reap_batch": config.reap_batch,
        "max_jobs": l.max_jobs,
        "max_classes": l.max_classes,
        "max_machines": l.max_machines,
        "max_leases_per_heartbeat": l.max_leases_per_heartbeat,
        "max_grants": l.max_grants_per_claim,
        "max_list": l.max_list,
        "aging_per_minute": p.aging_per_minute,
        "aging_cap": p.aging_cap,
        "download_penalty": p.download_penalty_per_gb,
        "unused_mem_penalty": p.unused_gpu_mem_penalty_per_gb,
        "models": config.models.iter().map(|m| m.size_gb).collect::<Vec<_>>(),
        // A wake-up nobody waited for is dropped after this; by then the machine has claimed
        // again on its idle recheck anyway.
        "wake_ttl_ms": (config.idle_recheck.as_micros() / 1000).max(1000),
        "journal_max_len": config.journal.max_len,
        "journal_max_age": config.journal.max_age.as_micros(),
    })
    .to_string()
}

/// Encodes `request`; a refusal judged here needs no round trip.
pub fn encode(request: &Request, config: &EngineConfig) -> Result<Wire, Refusal> {
    match request {
        Request::Batch(requests) => encode_batch(requests, config),
        other => Ok(Wire {
            bytes: pack(&one(other, config)?),
            early: Vec::new(),
            entries: Vec::new(),
        }),
    }
}

/// A batch: one entry per request, but consecutive successes share one (`Entry::Successes`).
fn encode_batch(requests: &[Request], config: &EngineConfig) -> Result<Wire, Refusal> {
    crate::store::request::check_batch(requests, &config.limits)?;
    let mut early = Vec::with_capacity(requests.len());
    let mut items: Vec<Value> = Vec::with_capacity(requests.len());
    let mut entries: Vec<Entry> = Vec::with_capacity(requests.len());
    for r in requests {
        let refusal = if let Some(lease) = success(r) {
            match (entries.last_mut(), items.last_mut()) {
                (Some(Entry::Successes(n)), Some(item)) => {
                    *n += 1;
                    item["leases"]
                        .as_array_mut()
                        .expect("a succeed_all entry has leases")
                        .extend(lease);
                }
                _ => {
                    items.push(json!({"op": "succeed_all", "leases": lease}));
                    entries.push(Entry::Successes(1));
                }
            }
            None
        } else {
            entries.push(Entry::Request);
            match one(r, config) {
                Ok(value) => {
                    items.push(value);
                    None
                }
                Err(refusal) => {
                    items.push(json!({"op": "noop"}));
                    Some(refusal)
                }
            }
        };
        early.push(refusal);
    }
    Ok(Wire {
        bytes: pack(&json!({"op": "batch", "requests": items})),
        early,
        entries,
    })
}

/// A successful complete's job and token, as a `succeed_all` entry lists them: numbers, which
/// the script takes as they are. A job or token beyond 2^53 (which no live lease has) goes as a
/// complete of its own.
fn success(request: &Request) -> Option<[Value; 2]> {
    match request {
        Request::Complete {
            job,
            token,
            outcome: Outcome::Succeeded,
            result: None,
        } if job.0 <= EXACT_IN_LUA && token.0 <= EXACT_IN_LUA => {
            Some([Value::from(job.0), Value::from(token.0)])
        }
        _ => None,
    }
}

/// Every integer up to 2^53 is exact in a double, Lua's only number type.
const EXACT_IN_LUA: u64 = 1 << 53;

/// An id, token or sequence number: a number while Lua's doubles hold it exactly, else its
/// digits (the script's `tonumber` takes both).
fn id(n: u64) -> Value {
    if n <= EXACT_IN_LUA {
        Value::from(n)
    } else {
        Value::String(n.to_string())
    }
}

fn models(set: ModelSet) -> Vec<u8> {
    set.iter().map(|m| m.0).collect()
}

/// The class key: `<gpu_mem_gb>|<the requirements as JSON with gpu_mem_gb 0>`. Equal
/// requirements give equal keys, and the script can make the key of a class that differs only
/// in GPU memory (after an out-of-memory failure) without knowing JSON's number formatting.
pub fn class_key(req: &Requirements) -> String {
    let rest = Requirements {
        gpu_mem_gb: 0,
        ..req.clone()
    };
    let rest = serde_json::to_string(&rest).unwrap_or_default();
    format!("{}|{rest}", req.gpu_mem_gb)
}

/// The requirements a class key names.
pub fn requirements_from_key(key: &str) -> Result<Requirements, String> {
    let (mem, rest) = key
        .split_once('|')
        .ok_or_else(|| format!("class key without '|': {key:?}"))?;
    let mut req: Requirements =
        serde_json::from_str(rest).map_err(|e| format!("class key {key:?}: {e}"))?;
    req.gpu_mem_gb = mem.parse().map_err(|e| format!("class key {key:?}: {e}"))?;
    Ok(req)
}

fn json_string<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn one(request: &Request, config: &EngineConfig) -> Result<Value, Refusal> {
    Ok(match request {
        Request::Submit(spec) => {
            let spec = validate_spec((**spec).clone(), config)?;
            let req = &spec.requirements;
            let mut m = Map::new();
            m.insert("op".into(), "submit".into());
            m.insert("spec".into(), super::spec::stored(&spec).into());
            m.insert("priority".into(), spec.priority.into());
            m.insert("max_attempts".into(), spec.max_attempts.into());
            m.insert("timeout".into(), spec.timeout.as_micros().into());
            if let Some(key) = &spec.idempotency_key {
                m.insert("key".into(), key.clone().into());
            }
            m.insert(
                "class".into(),
                json!({
                    "key": class_key(req),
                    "gpus": req.gpus,
                    "mem": req.gpu_mem_gb,
                    "disk": req.disk_gb,
                    "models": json_string(&models(req.models)),
                    "gpu_models": json_string(&req.gpu_models),
                    "labels": json_string(&req.labels),
                    "not_labels": json_string(&req.not_labels),
                    "kind": req.kind,
                }),
            );
            Value::Object(m)
        }
        Request::Cancel { job } => json!({"op": "cancel", "job": id(job.0)}),
        Request::Get { job } => json!({"op": "get", "job": id(job.0)}),
        Request::Register(spec) => {
            check_machine_spec(spec, config)?;
            let profile = json!([
                spec.gpus,
                spec.gpu_model,
                spec.gpu_mem_gb,
                spec.disk_gb,
                spec.labels,
                spec.kinds
            ]);
            json!({
                "op": "register",
                "name": spec.name,
                "pool": spec.pool,
                "gpus": spec.gpus,
                "gpu_model": spec.gpu_model,
                "mem": spec.gpu_mem_gb,
                "disk": spec.disk_gb,
                // Debug formatting of f64 is the shortest text that reads back to the same bits.
                "cost": format!("{:?}", spec.cost_per_hour),
                "labels": json_string(&spec.labels),
                "kinds": json_string(&spec.kinds),
                "profile_key": profile.to_string(),
            })
        }
        Request::Deregister { machine } => json!({"op": "deregister", "machine": id(machine.0)}),
        Request::Heartbeat { machine, leases } => {
            let leases: Vec<Value> = leases
                .iter()
                .map(|l| json!([id(l.job.0), id(l.token.0)]))
                .collect();
            json!({"op": "heartbeat", "machine": id(machine.0), "leases": leases})
        }
        Request::Claim {
            machine,
            seq,
            offer,
        } => json!({
            "op": "claim",
            "machine": id(machine.0),
            "seq": id(*seq),
            "offer": {
                "gpus": offer.free_gpus,
                "mem": offer.gpu_mem_gb,
                "disk": offer.free_disk_gb,
                "cached": models(offer.cached),
            },
        }),
        Request::Complete {
            job,
            token,
            outcome,
            result,
        } => {
            check_result(result.as_ref(), &config.limits)?;
            let (kind, needed) = match outcome {
                Outcome::Succeeded => ("succeeded", 0),
                Outcome::Failed(Failure::GpuOom { needed_gb }) => ("oom", *needed_gb),
                Outcome::Failed(failure) => (failure.class(), 0),
            };
            let mut m = Map::new();
            m.insert("op".into(), "complete".into());
            m.insert("job".into(), id(job.0));
            m.insert("token".into(), id(token.0));
            m.insert("outcome".into(), kind.into());
            // The common outcome travels without the fields only a failure reads.
            if let Outcome::Failed(failure) = outcome {
                m.insert("needed_gb".into(), needed.into());
                m.insert("error".into(), failure.error().to_stored().into());
            }
            if let (Outcome::Succeeded, Some(result)) = (outcome, result) {
                m.insert("result".into(), result.as_str().into());
            }
            Value::Object(m)
        }
        Request::Release { job, token } => {
            json!({"op": "release", "job": id(job.0), "token": id(token.0)})
        }
        Request::Reap { max } => json!({"op": "reap", "max": max}),
        Request::Progress {
            job,
            token,
            percent,
            message,
        } => json!({
            "op": "progress",
            "job": id(job.0),
            "token": id(token.0),
            "percent": (*percent).min(100),
            "message": truncated(message),
        }),
        Request::ListJobs {
            state,
            after,
            limit,
        } => {
            let mut m = Map::new();
            m.insert("op".into(), "list_jobs".into());
            m.insert("limit".into(), (*limit).into());
            if let Some(state) = state {
                m.insert("state".into(), state.as_str().into());
            }
            if let Some(after) = after {
                m.insert("after".into(), id(after.0));
            }
            Value::Object(m)
        }
        Request::ListMachines { limit } => json!({"op": "list_machines", "limit": limit}),
        Request::Stats => json!({"op": "stats"}),
        // Refused by `encode` before it gets here.
        Request::Batch(_) => json!({"op": "noop"}),
    })
}

/// A progress message cut to the bytes the store keeps, at a character boundary.
fn truncated(message: &str) -> &str {
    let mut cut = message.len().min(MAX_PROGRESS_MESSAGE_BYTES);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    &message[..cut]
}
