//! The journal's stream entries (lua/journal.lua writes them) as `JournalEntry`s.
//!
//! An entry's fields: `t`, the store time in µs; `e`, one MessagePack array of tagged events,
//! flat: a tag, then that tag's fields, in this order (the one definition of the format):
//!
//! | tag | fields |
//! |---|---|
//! | `submitted` | job, priority, class id, class key |
//! | `leased` | machine, n, then n times: job, token, attempt |
//! | `succeeded` | n, then n times: job, token |
//! | `result` | job, result (JSON text) |
//! | `failed` | job, token, class |
//! | `revoked` | job, token, reason |
//! | `released` | job, token |
//! | `requeued` | job, until (0: at once) |
//! | `progress` | job, token, percent, message |
//! | `dead`, `timed_out`, `unworkable`, `cancelled` | job |
//! | `registered` | machine, name, pool |
//! | `lost`, `deregistered` | machine |

use super::encode::requirements_from_key;
use super::msgpack::unpack;
use crate::core::{JobId, JobResult, MachineId, Time, Token};
use crate::runtime::StoreError;
use crate::store::journal::{EntryId, JournalEntry, JournalEvent, RevokeReason};
use ::redis::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

fn bad(what: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(format!("journal: {what}"))
}

/// The entries of an XRANGE (or one stream of an XREAD) reply.
pub fn entries(reply: &Value) -> Result<Vec<JournalEntry>, StoreError> {
    let Value::Array(items) = reply else {
        return match reply {
            Value::Nil => Ok(Vec::new()),
            other => Err(bad(format!("expected entries, got {other:?}"))),
        };
    };
    items.iter().map(entry).collect()
}

fn entry(value: &Value) -> Result<JournalEntry, StoreError> {
    let Value::Array(parts) = value else {
        return Err(bad(format!("expected an entry, got {value:?}")));
    };
    let [id, Value::Array(fields)] = parts.as_slice() else {
        return Err(bad(format!("expected an id and fields, got {parts:?}")));
    };
    let id: EntryId = text(id)?.parse().map_err(bad)?;
    let fields: BTreeMap<String, &Value> = fields
        .chunks(2)
        .filter_map(|kv| Some((text(&kv[0]).ok()?, kv.get(1)?)))
        .collect();
    let at = fields
        .get("t")
        .ok_or_else(|| bad(format!("entry {id} has no time")))
        .and_then(|t| text(t))?
        .parse::<u64>()
        .map_err(|e| bad(format!("entry {id}: time: {e}")))?;
    let packed = fields
        .get("e")
        .ok_or_else(|| bad(format!("entry {id} has no events")))?;
    let events = events(&unpack(packed)?).map_err(|e| bad(format!("entry {id}: {e}")))?;
    Ok(JournalEntry {
        id,
        at: Time(at),
        events,
    })
}

fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(bad),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(bad(format!("expected text, got {other:?}"))),
    }
}

/// A cursor over the flat event array.
struct Flat<'a> {
    items: &'a [Value],
    at: usize,
}

impl Flat<'_> {
    fn next(&mut self) -> Result<&Value, String> {
        let item = self
            .items
            .get(self.at)
            .ok_or("events end in the middle of one")?;
        self.at += 1;
        Ok(item)
    }

    fn u64(&mut self) -> Result<u64, String> {
        match self.next()? {
            Value::Int(n) => u64::try_from(*n).map_err(|_| format!("negative number {n}")),
            other => Err(format!("expected a number, got {other:?}")),
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        let n = self.u64()?;
        u32::try_from(n).map_err(|_| format!("{n} does not fit 32 bits"))
    }

    fn str(&mut self) -> Result<String, String> {
        text(self.next()?).map_err(|e| e.to_string())
    }

    fn job(&mut self) -> Result<JobId, String> {
        self.u64().map(JobId)
    }

    fn token(&mut self) -> Result<Token, String> {
        self.u64().map(Token)
    }

    fn machine(&mut self) -> Result<MachineId, String> {
        self.u64().map(MachineId)
    }
}

fn events(value: &Value) -> Result<Vec<JournalEvent>, String> {
    let Value::Array(items) = value else {
        return Err(format!("expected an event array, got {value:?}"));
    };
    let mut f = Flat { items, at: 0 };
    let mut out = Vec::new();
    while f.at < items.len() {
        let tag = f.str()?;
        decode_event(&tag, &mut f, &mut out)?;
    }
    Ok(out)
}

fn decode_event(tag: &str, f: &mut Flat<'_>, out: &mut Vec<JournalEvent>) -> Result<(), String> {
    use JournalEvent as E;
    let event = match tag {
        "submitted" => E::Submitted {
            job: f.job()?,
            priority: u8::try_from(f.u64()?).map_err(|e| e.to_string())?,
            class: f.u32()?,
            requirements: Arc::new(requirements_from_key(&f.str()?)?),
        },
        "leased" => {
            let machine = f.machine()?;
            for _ in 0..f.u64()? {
                out.push(E::Leased {
                    job: f.job()?,
                    machine,
                    token: f.token()?,
                    attempt: f.u32()?,
                });
            }
            return Ok(());
        }
        "succeeded" => {
            for _ in 0..f.u64()? {
                out.push(E::Succeeded {
                    job: f.job()?,
                    token: f.token()?,
                });
            }
            return Ok(());
        }
        "result" => E::Result {
            job: f.job()?,
            result: JobResult::new(f.str()?),
        },
        "failed" => E::Failed {
            job: f.job()?,
            token: f.token()?,
            class: f.str()?,
        },
        "revoked" => E::Revoked {
            job: f.job()?,
            token: f.token()?,
            reason: {
                let reason = f.str()?;
                RevokeReason::parse(&reason).ok_or(format!("unknown reason {reason:?}"))?
            },
        },
        "released" => E::Released {
            job: f.job()?,
            token: f.token()?,
        },
        "requeued" => E::Requeued {
            job: f.job()?,
            until: Some(f.u64()?).filter(|&t| t != 0).map(Time),
        },
        "progress" => E::Progress {
            job: f.job()?,
            token: f.token()?,
            percent: u8::try_from(f.u64()?).map_err(|e| e.to_string())?,
            message: f.str()?,
        },
        "dead" => E::Dead { job: f.job()? },
        "timed_out" => E::TimedOut { job: f.job()? },
        "unworkable" => E::Unworkable { job: f.job()? },
        "cancelled" => E::Cancelled { job: f.job()? },
        "registered" => E::Registered {
            machine: f.machine()?,
            name: f.str()?,
            pool: f.str()?,
        },
        "lost" => E::Lost {
            machine: f.machine()?,
        },
        "deregistered" => E::Deregistered {
            machine: f.machine()?,
        },
        other => return Err(format!("unknown event tag {other:?}")),
    };
    out.push(event);
    Ok(())
}
