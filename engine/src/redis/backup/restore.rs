//! Restoring a snapshot into an empty namespace: the checks, then one script that restores
//! every key or none (see `backup/mod.rs`).

use super::file::Backup;
use super::snapshot::unknown_keys;
use super::BackupError;
use crate::core::{Span, Time};
use crate::redis::{RedisStore, DATA_LAYOUT};
use crate::runtime::StoreError;
use ::redis::Value;
use serde::Serialize;

/// KEYS[1]: the target's `meta` (checked, and routing the call to the namespace's shard).
/// ARGV[1]: the target's key prefix, then per key: the key without prefix, its absolute expiry
/// (unix ms, 0: none) and its DUMP payload. Refuses (`busy`) if any of the keys exists, else
/// restores them all; a key the server refuses undoes those restored before it (`refused`).
/// Then gives the namespace a new epoch. Replies `ok`, restored, expired, server time.
const RESTORE: &str = r#"
local prefix = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 1 then return {'busy', KEYS[1]} end
for i = 2, #ARGV, 3 do
  local key = prefix .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then return {'busy', key} end
end
local restored, expired = {}, 0
for i = 2, #ARGV, 3 do
  local key = prefix .. ARGV[i]
  local reply
  if ARGV[i + 1] == '0' then
    reply = redis.pcall('RESTORE', key, 0, ARGV[i + 2])
  else
    reply = redis.pcall('RESTORE', key, ARGV[i + 1], ARGV[i + 2], 'ABSTTL')
  end
  if type(reply) == 'table' and reply.err then
    for _, done in ipairs(restored) do redis.call('DEL', done) end
    return {'refused', ARGV[i], reply.err, redis.REDIS_VERSION}
  end
  if redis.call('EXISTS', key) == 1 then
    restored[#restored + 1] = key
  else
    expired = expired + 1
  end
end
local now = redis.call('TIME')
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch then
  local fresh = string.format('%d', tonumber(now[1]) * 1000000 + tonumber(now[2]))
  if fresh == epoch then fresh = string.format('%d', tonumber(epoch) + 1) end
  redis.call('HSET', KEYS[1], 'epoch', fresh)
end
return {'ok', #restored, expired, now[1], now[2]}
"#;

/// What a restore did, for the operator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RestoreReport {
    pub namespace: String,
    /// The namespace the backup was taken of.
    pub from_namespace: String,
    pub restored: u64,
    /// Keys whose time to live ran out since the backup: not restored.
    pub expired: u64,
    /// Keys of kinds this engine does not know, restored as they were (at most 20 named).
    pub unknown: Vec<String>,
    pub taken_at: Time,
    /// The target server's time when it restored.
    pub restored_at: Time,
    /// The namespace's store clock at the backup.
    pub store_clock: Option<Time>,
    /// How far the target's clock is behind that store clock. The store clock never runs
    /// backwards, so the namespace's time stands still this long: no lease expires, no retry
    /// is released, no machine is declared lost until the target's clock catches up.
    pub clock_behind: Option<Span>,
}

impl RedisStore {
    /// Restores `backup` into this store's namespace, which must be empty; refuses a layout
    /// this engine does not read. The function library is not loaded here: the first engine
    /// process that connects loads it.
    pub async fn restore_namespace(&self, backup: &Backup) -> Result<RestoreReport, BackupError> {
        check_layout(backup)?;
        self.check_empty().await?;
        let prefix = format!("{{{}}}:", self.namespace());
        let taken_ms = backup.header.taken_at.0 / 1000;
        let mut call = ::redis::cmd("EVAL");
        call.arg(RESTORE)
            .arg(1)
            .arg(&self.inner.meta_key)
            .arg(&prefix);
        for record in &backup.records {
            // -1: no expiry; >= 0: the key's absolute expiry, in Unix ms.
            let expiry = u64::try_from(record.pttl_ms).map_or(0, |ttl| taken_ms + ttl.max(1));
            call.arg(&record.key).arg(expiry).arg(&record.payload);
        }
        let reply = self.query(call).await?;
        let (restored, expired, restored_at) = self.restore_outcome(reply, backup)?;
        let clock_behind = backup
            .header
            .store_clock
            .filter(|&clock| clock > restored_at)
            .map(|clock| clock.since(restored_at));
        Ok(RestoreReport {
            namespace: self.namespace().to_string(),
            from_namespace: backup.header.namespace.clone(),
            restored,
            expired,
            unknown: unknown_keys(&backup.records),
            taken_at: backup.header.taken_at,
            restored_at,
            store_clock: backup.header.store_clock,
            clock_behind,
        })
    }

    /// Refuses a namespace holding any key, naming a few.
    async fn check_empty(&self) -> Result<(), BackupError> {
        let keys = self.namespace_keys().await?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut examples: Vec<String> = keys.iter().take(3).cloned().collect();
        if keys.len() > examples.len() {
            examples.push("...".into());
        }
        Err(BackupError::TargetNotEmpty {
            namespace: self.namespace().to_string(),
            keys: keys.len(),
            examples: examples.join(", "),
        })
    }

    /// Reads the script's reply: restored, expired, the server's time; or the refusal.
    fn restore_outcome(
        &self,
        reply: Value,
        backup: &Backup,
    ) -> Result<(u64, u64, Time), BackupError> {
        let items: Vec<Value> = ::redis::from_redis_value(reply)
            .map_err(|e| StoreError::Decode(format!("restore reply: {e}")))?;
        let text = |i: usize| -> String {
            items
                .get(i)
                .and_then(|v| ::redis::from_redis_value_ref::<String>(v).ok())
                .unwrap_or_default()
        };
        let number = |i: usize| -> u64 { text(i).parse().unwrap_or(0) };
        match text(0).as_str() {
            "ok" => Ok((
                number(1),
                number(2),
                Time(number(3) * 1_000_000 + number(4)),
            )),
            "busy" => Err(BackupError::TargetNotEmpty {
                namespace: self.namespace().to_string(),
                keys: 1,
                examples: format!(
                    "{} appeared since the check: a process is using it",
                    text(1)
                ),
            }),
            "refused" => Err(BackupError::RestoreRefused {
                key: text(1),
                reason: refusal_reason(&text(2), &backup.header.redis_version, &text(3)),
            }),
            other => Err(StoreError::Decode(format!("restore reply {other:?}")).into()),
        }
    }
}

/// The engine reads one layout; a backup of a namespace with no `meta` yet has none to check.
fn check_layout(backup: &Backup) -> Result<(), BackupError> {
    let has_meta = backup.records.iter().any(|r| r.key == b"meta");
    let found = match backup.header.layout {
        Some(layout) if layout == DATA_LAYOUT => return Ok(()),
        None if !has_meta => return Ok(()),
        Some(layout) => layout.to_string(),
        None => "none (written before layouts were recorded)".to_string(),
    };
    Err(BackupError::LayoutUnreadable {
        found,
        ours: DATA_LAYOUT,
        engine: backup.header.engine.clone(),
    })
}

/// RESTORE's error, with what to do when the payloads come from a newer Redis.
fn refusal_reason(error: &str, source: &str, target: &str) -> String {
    if error.contains("payload version") {
        format!(
            "{error} (the backup was taken on Redis {source} and this server is Redis {target}: \
             restore into Redis {source} or later)"
        )
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::backup::{Header, KeyRecord};

    fn backup(layout: Option<u32>, with_meta: bool) -> Backup {
        let record = |key: &str| KeyRecord {
            key: key.as_bytes().to_vec(),
            kind: "hash".into(),
            pttl_ms: -1,
            payload: vec![],
        };
        let mut records = vec![record("config")];
        if with_meta {
            records.push(record("meta"));
        }
        Backup {
            header: Header {
                namespace: "n".into(),
                layout,
                engine: "drover-engine 0.0.1".into(),
                redis_version: "7.0.0".into(),
                taken_at: Time(0),
                store_clock: None,
                keys: 0,
                body_bytes: 0,
            },
            records,
        }
    }

    #[test]
    fn only_this_engines_layout_is_restored() {
        assert!(check_layout(&backup(Some(DATA_LAYOUT), true)).is_ok());
        assert!(
            check_layout(&backup(None, false)).is_ok(),
            "no meta: no data yet"
        );
        let err = check_layout(&backup(Some(DATA_LAYOUT - 1), true))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "layout {} and this engine reads layout {DATA_LAYOUT}",
                DATA_LAYOUT - 1
            )),
            "{err}"
        );
        assert!(err.contains("drover-engine 0.0.1"), "{err}");
        let err = check_layout(&backup(None, true)).unwrap_err().to_string();
        assert!(err.contains("before layouts were recorded"), "{err}");
    }

    #[test]
    fn a_payload_from_a_newer_redis_says_which_to_use() {
        let reason = refusal_reason(
            "ERR DUMP payload version or checksum are wrong",
            "7.4.1",
            "7.0.15",
        );
        assert!(
            reason.contains("restore into Redis 7.4.1 or later"),
            "{reason}"
        );
        assert_eq!(refusal_reason("ERR other", "7.4.1", "7.0.15"), "ERR other");
    }
}
