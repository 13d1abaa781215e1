//! The namespace's engine configuration: one for every process that uses the namespace.
//!
//! Every request carries its sender's engine configuration to the library (`wire_config`), so
//! processes that disagree (an API that keeps finished jobs an hour, agents that say three
//! seconds) would each apply their own. To prevent that, the namespace records one: the first
//! process to connect writes its configuration to `{ns}:config` (a hash: `json`, the canonical
//! JSON of the whole `EngineConfig`; `sha1`, its SHA-1; `written_by`, `written_at`), atomically
//! (one small script: read, and write only if absent), and every later process must bring the
//! same configuration or is refused at connect, each differing field named with both values.
//! `drover admin config set` replaces the record; processes already running keep the
//! configuration they started with until they are restarted.
//!
//! The comparison is by value, not by text: both sides are read into an `EngineConfig` and
//! compared field by field, so "60m" and "1h" agree, and a field a newer engine added (with
//! its default) does not set two versions apart until someone gives it another value.

use super::RedisStore;
use crate::core::EngineConfig;
use crate::runtime::StoreError;
use ::redis::Value;
use serde_json::Value as Json;

/// Reads the record and writes it when absent (ARGV[4] = "claim") or always ("set"); returns
/// what was there before (json, sha1, written_by, written_at; nils when absent).
const WRITE: &str = r#"
local old = redis.call('HMGET', KEYS[1], 'json', 'sha1', 'written_by', 'written_at')
if ARGV[4] == 'set' or not old[1] then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'json', ARGV[1], 'sha1', ARGV[2], 'written_by', ARGV[3],
    'written_at', now[1])
end
return old
"#;

/// A namespace's recorded engine configuration.
#[derive(Clone, Debug)]
pub struct NamespaceConfig {
    pub config: EngineConfig,
    /// SHA-1 (hex) of the canonical JSON.
    pub sha1: String,
    /// Who wrote it: "first process to connect" or "drover admin config set", with host and pid.
    pub written_by: Option<String>,
    /// When, in seconds since the Unix epoch on the Redis server's clock.
    pub written_at: Option<u64>,
}

/// One field on which two configurations differ, values as JSON (`"1h"`, `3600`, `[...]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigDifference {
    /// Dotted, from `engine.`: `engine.retention`, `engine.limits.max_gpus`.
    pub field: String,
    pub namespace: String,
    pub ours: String,
}

/// The canonical JSON of a configuration: every field, in declaration order, durations in
/// their shortest unit.
pub fn canonical_json(config: &EngineConfig) -> String {
    serde_json::to_string(config).expect("an EngineConfig serializes")
}

/// SHA-1 (hex) of a text, as Redis computes it for scripts.
pub fn sha1_hex(text: &str) -> String {
    ::redis::Script::new(text).get_hash().to_string()
}

/// The fields on which `namespace` and `ours` differ, sorted by name.
pub fn config_differences(namespace: &EngineConfig, ours: &EngineConfig) -> Vec<ConfigDifference> {
    let theirs = serde_json::to_value(namespace).expect("an EngineConfig serializes");
    let ours = serde_json::to_value(ours).expect("an EngineConfig serializes");
    let mut out = Vec::new();
    diff(&theirs, &ours, "engine", &mut out);
    out
}

fn diff(theirs: &Json, ours: &Json, path: &str, out: &mut Vec<ConfigDifference>) {
    match (theirs, ours) {
        (Json::Object(a), Json::Object(b)) => {
            for (key, value) in b {
                let field = format!("{path}.{key}");
                diff(a.get(key).unwrap_or(&Json::Null), value, &field, out);
            }
            for (key, value) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
                diff(value, &Json::Null, &format!("{path}.{key}"), out);
            }
        }
        _ if theirs == ours => {}
        _ => out.push(ConfigDifference {
            field: path.to_string(),
            namespace: theirs.to_string(),
            ours: ours.to_string(),
        }),
    }
}

/// Says who is writing: a role, the host and the process id.
fn writer(role: &str) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".into());
    format!("{role} (host {host}, pid {})", std::process::id())
}

impl RedisStore {
    fn config_key(&self) -> String {
        format!("{{{}}}:config", self.namespace())
    }

    /// Runs `WRITE`; the record that was there before, if any.
    async fn write_config(
        &self,
        config: &EngineConfig,
        mode: &str,
        role: &str,
    ) -> Result<Option<NamespaceConfig>, StoreError> {
        let json = canonical_json(config);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(WRITE)
            .arg(1)
            .arg(self.config_key())
            .arg(&json)
            .arg(sha1_hex(&json))
            .arg(writer(role))
            .arg(mode);
        let value = self.query(cmd).await?;
        self.decode_record(value)
    }

    fn decode_record(&self, value: Value) -> Result<Option<NamespaceConfig>, StoreError> {
        let (json, sha1, written_by, written_at): (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<u64>,
        ) = ::redis::from_redis_value(value)
            .map_err(|e| StoreError::Decode(format!("the namespace's engine config: {e}")))?;
        let Some(json) = json else {
            return Ok(None);
        };
        let config: EngineConfig = serde_json::from_str(&json).map_err(|e| {
            StoreError::Connection(format!(
                "namespace {:?} holds an engine configuration this engine cannot read ({e}): \
                 it was written by another engine version; `drover admin config set FILE` \
                 replaces it",
                self.namespace()
            ))
        })?;
        Ok(Some(NamespaceConfig {
            config,
            sha1: sha1.unwrap_or_default(),
            written_by,
            written_at,
        }))
    }

    /// Called by `connect_with`: records this process's configuration as the namespace's if
    /// it has none, else refuses to go on unless the two are equal, naming every difference.
    pub(super) async fn adopt_namespace_config(&self) -> Result<(), StoreError> {
        let ours = self.config().clone();
        let Some(recorded) = self
            .write_config(&ours, "claim", "first process to connect")
            .await?
        else {
            return Ok(());
        };
        let differences = config_differences(&recorded.config, &ours);
        if differences.is_empty() {
            return Ok(());
        }
        let listed: Vec<String> = differences
            .iter()
            .map(|d| {
                format!(
                    "{}: namespace has {}, this process has {}",
                    d.field, d.namespace, d.ours
                )
            })
            .collect();
        Err(StoreError::Connection(format!(
            "namespace {:?} runs another engine configuration than this process's ({}). Every \
             process of a namespace must run the namespace's: start this one with its [engine] \
             table (`drover admin config show`), or change it for all with `drover admin \
             config set FILE` and restart the others",
            self.namespace(),
            listed.join("; ")
        )))
    }

    /// The namespace's recorded engine configuration, if any process recorded one.
    pub async fn namespace_config(&self) -> Result<Option<NamespaceConfig>, StoreError> {
        let mut cmd = ::redis::cmd("HMGET");
        cmd.arg(self.config_key())
            .arg("json")
            .arg("sha1")
            .arg("written_by")
            .arg("written_at");
        let value = self.query(cmd).await?;
        self.decode_record(value)
    }

    /// Replaces the namespace's engine configuration (after validating it); returns the one it
    /// replaced. Processes already running keep theirs until restarted; those started later
    /// must bring this one.
    pub async fn set_namespace_config(
        &self,
        config: &EngineConfig,
    ) -> Result<Option<NamespaceConfig>, StoreError> {
        config
            .validate()
            .map_err(|e| StoreError::Connection(format!("refusing to record it: {e}")))?;
        self.write_config(config, "set", "drover admin config set")
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Span;

    #[test]
    fn differences_name_the_field_and_both_values() {
        let ns = EngineConfig {
            retention: Span::from_secs(3600),
            ..EngineConfig::default()
        };
        let mut ours = EngineConfig {
            retention: Span::from_secs(3),
            ..EngineConfig::default()
        };
        ours.limits.max_gpus = 8;
        let found = config_differences(&ns, &ours);
        assert_eq!(
            found,
            vec![
                ConfigDifference {
                    field: "engine.limits.max_gpus".into(),
                    namespace: "64".into(),
                    ours: "8".into(),
                },
                ConfigDifference {
                    field: "engine.retention".into(),
                    namespace: "\"1h\"".into(),
                    ours: "\"3s\"".into(),
                },
            ]
        );
        assert!(config_differences(&ns, &ns).is_empty());
    }

    #[test]
    fn the_canonical_json_reads_back_equal() {
        let config = EngineConfig::default();
        let json = canonical_json(&config);
        let back: EngineConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, config);
        assert_eq!(sha1_hex(&json).len(), 40);
    }
}
