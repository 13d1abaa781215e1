//! Taking the snapshot: one read-only script reads every key of the namespace at one instant
//! (see `backup/mod.rs` for why one script, and what it costs).

use super::file::{Backup, Header, KeyRecord};
use super::BackupError;
use crate::core::{Span, Time};
use crate::redis::dump::classify;
use crate::redis::formats::Hot;
use crate::redis::RedisStore;
use crate::runtime::StoreError;
use ::redis::Value;
use serde::Serialize;
use std::collections::BTreeMap;

/// KEYS[1]: the namespace's `meta` (which also routes the call to its shard). ARGV[1]: the
/// pattern of the namespace's keys. Replies the start and end times, the server's version, the
/// meta's `hot` and `layout`, then key, PTTL and DUMP for every key (no TYPE: the payload's
/// first byte says it, and every call here is time the server serves no one else).
/// `no-writes`: it runs on a replica, and while the server is out of memory.
const SNAPSHOT: &str = r#"#!lua flags=no-writes
local started = redis.call('TIME')
local meta = redis.call('HMGET', KEYS[1], 'hot', 'layout')
local out = {started[1], started[2], false, false, redis.REDIS_VERSION,
  meta[1] or false, meta[2] or false}
for _, key in ipairs(redis.call('KEYS', ARGV[1])) do
  out[#out + 1] = key
  out[#out + 1] = redis.call('PTTL', key)
  out[#out + 1] = redis.call('DUMP', key)
end
local ended = redis.call('TIME')
out[3], out[4] = ended[1], ended[2]
return out
"#;

/// Fields before the keys in the script's reply.
const PREAMBLE: usize = 7;
/// Fields per key in the script's reply.
const PER_KEY: usize = 3;

/// What a snapshot read, for the operator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotReport {
    pub namespace: String,
    pub keys: u64,
    /// Keys by kind (`dump::KEYS` patterns); keys of no known kind under "(unknown)".
    pub kinds: BTreeMap<String, u64>,
    /// Keys this engine does not know, carried as they are (at most 20 named).
    pub unknown: Vec<String>,
    pub with_ttl: u64,
    pub payload_bytes: u64,
    /// How long the script ran on the server: the time Redis answered no other client.
    pub blocked: Span,
}

/// The most keys a snapshot takes unless told otherwise: the script's pause grows about 1 s
/// per 100,000 keys (README.md, "Backup and restore"), and past Redis's
/// `busy-reply-threshold` (5 s by default) every other client is answered BUSY.
pub const DEFAULT_MAX_KEYS: usize = 250_000;

impl RedisStore {
    /// Every key of the namespace at one instant, as a `Backup`, and what it read. Refuses a
    /// namespace without keys (most likely a mistyped `--namespace`), and one of more than
    /// `max_keys` keys (counted first without blocking, with SCAN), whose snapshot would pause
    /// the server too long: that one is taken from a replica, with a larger bound.
    pub async fn snapshot_namespace(
        &self,
        max_keys: usize,
    ) -> Result<(Backup, SnapshotReport), BackupError> {
        let listed = self.namespace_keys().await?.len();
        if listed > max_keys {
            return Err(BackupError::TooLarge {
                namespace: self.namespace().to_string(),
                keys: listed,
                max_keys,
            });
        }
        let prefix = format!("{{{}}}:", self.namespace());
        let mut call = ::redis::cmd("EVAL");
        call.arg(SNAPSHOT)
            .arg(1)
            .arg(&self.inner.meta_key)
            .arg(format!("{}*", crate::redis::dump::glob_escape(&prefix)));
        let reply = self.query(call).await?;
        let Value::Array(items) = reply else {
            return Err(decode(format!("snapshot reply: {reply:?}")).into());
        };
        if items.len() < PREAMBLE || !(items.len() - PREAMBLE).is_multiple_of(PER_KEY) {
            return Err(decode(format!("snapshot reply of {} items", items.len())).into());
        }
        let (preamble, keys) = items.split_at(PREAMBLE);
        let records = records(keys, prefix.as_bytes())?;
        if records.is_empty() {
            return Err(BackupError::NothingToBackUp {
                namespace: self.namespace().to_string(),
            });
        }
        let (header, blocked) = header(self.namespace(), preamble)?;
        let report = report(self.namespace(), &records, blocked);
        Ok((Backup { header, records }, report))
    }
}

fn decode(what: String) -> StoreError {
    StoreError::Decode(what)
}

fn value<T: ::redis::FromRedisValue>(v: &Value, what: &str) -> Result<T, StoreError> {
    ::redis::from_redis_value_ref(v).map_err(|e| decode(format!("snapshot {what}: {e}")))
}

/// The server's `TIME` reply, as µs.
fn micros(secs: &Value, us: &Value) -> Result<Time, StoreError> {
    let secs: u64 = value(secs, "time")?;
    let us: u64 = value(us, "time")?;
    Ok(Time(secs * 1_000_000 + us))
}

/// The header (without its counts, which the file sets) and how long the script ran.
fn header(namespace: &str, preamble: &[Value]) -> Result<(Header, Span), BackupError> {
    let started = micros(&preamble[0], &preamble[1])?;
    let ended = micros(&preamble[2], &preamble[3])?;
    let hot: Option<Vec<u8>> = value(&preamble[5], "meta hot")?;
    let store_clock = match hot {
        Some(bytes) => Some(Time(
            Hot::decode(&bytes)
                .map_err(|e| decode(format!("meta hot: {e}")))?
                .clock,
        )),
        None => None,
    };
    let layout: Option<String> = value(&preamble[6], "meta layout")?;
    let layout = match layout {
        Some(text) => Some(text.parse::<u32>().map_err(|_| {
            BackupError::Malformed(format!("the namespace's meta.layout is {text:?}"))
        })?),
        None => None,
    };
    let header = Header {
        namespace: namespace.to_string(),
        layout,
        engine: concat!("drover-engine ", env!("CARGO_PKG_VERSION")).to_string(),
        redis_version: value(&preamble[4], "redis version")?,
        taken_at: started,
        store_clock,
        keys: 0,
        body_bytes: 0,
    };
    Ok((header, ended.since(started)))
}

/// The key records, sorted, without the namespace's prefix. A key that vanished between the
/// listing and its DUMP (it expired: the script's time stands still, but an expiry found by
/// the listing can still be reaped) is left out.
fn records(items: &[Value], prefix: &[u8]) -> Result<Vec<KeyRecord>, StoreError> {
    let mut records = Vec::with_capacity(items.len() / PER_KEY);
    for item in items.chunks(PER_KEY) {
        let key: Vec<u8> = value(&item[0], "key")?;
        let Some(payload) = value::<Option<Vec<u8>>>(&item[2], "payload")? else {
            continue;
        };
        let Some(rest) = key.strip_prefix(prefix) else {
            return Err(decode(format!(
                "snapshot listed {:?}, outside the namespace",
                String::from_utf8_lossy(&key)
            )));
        };
        records.push(KeyRecord {
            key: rest.to_vec(),
            kind: rdb_type(&payload),
            pttl_ms: value(&item[1], "pttl")?,
            payload,
        });
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(records)
}

/// The Redis type of a DUMP payload, from its first byte (the RDB object type; rdb.h). For
/// people only: RESTORE reads the payload itself, so a type a newer Redis adds is restored all
/// the same, and named by its number here.
fn rdb_type(payload: &[u8]) -> String {
    let name = match payload.first() {
        Some(0) => "string",
        Some(1 | 10 | 14 | 18) => "list",
        Some(2 | 11 | 20) => "set",
        Some(3 | 5 | 12 | 17) => "zset",
        Some(4 | 9 | 13 | 16) => "hash",
        Some(6 | 7) => "module",
        Some(15 | 19 | 21) => "stream",
        Some(n) => return format!("rdb-type-{n}"),
        None => "empty",
    };
    name.to_string()
}

/// How many keys of each kind, and which this engine does not know.
fn report(namespace: &str, records: &[KeyRecord], blocked: Span) -> SnapshotReport {
    let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
    for record in records {
        let kind = classify(&record.name()).map_or("(unknown)", |(kind, _)| kind.pattern);
        *kinds.entry(kind.to_string()).or_default() += 1;
    }
    SnapshotReport {
        namespace: namespace.to_string(),
        keys: records.len() as u64,
        kinds,
        unknown: unknown_keys(records),
        with_ttl: records.iter().filter(|r| r.pttl_ms >= 0).count() as u64,
        payload_bytes: records.iter().map(|r| r.payload.len() as u64).sum(),
        blocked,
    }
}

/// The first 20 keys of kinds this engine does not know (`dump::KEYS`): a newer engine's, or
/// no engine's. They are carried as they are; the operator is told.
pub(super) fn unknown_keys(records: &[KeyRecord]) -> Vec<String> {
    records
        .iter()
        .map(KeyRecord::name)
        .filter(|name| classify(name).is_none())
        .take(20)
        .collect()
}
