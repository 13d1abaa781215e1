//! The engine's knobs. The simulator's `[engine]` table and the production binary read this
//! one struct; every field has the production default.

use super::ids::{ModelId, ModelSet, MAX_MODELS};
use super::time::Span;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// A lease not renewed within this is expired and its job reaped.
    pub lease_ttl: Span,
    /// How often an agent heartbeats; each heartbeat renews all of its leases.
    pub heartbeat: Span,
    /// A machine silent for this long is declared lost and its jobs reaped.
    pub machine_ttl: Span,
    /// How often the reaper runs.
    pub reaper_period: Span,
    /// Attempts per job when the job does not say.
    pub max_attempts: u32,
    /// Run time per attempt when the job does not say.
    pub default_timeout: Span,
    /// Retry delay after the first failed attempt; doubles each attempt, with jitter.
    pub backoff_base: Span,
    pub backoff_max: Span,
    /// An agent gives up on a store request after this and retries it.
    pub request_timeout: Span,
    /// Backoff between an agent's retries of one request.
    pub retry_base: Span,
    pub retry_max: Span,
    /// Consecutive failed requests that open an agent's circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker waits before a half-open probe.
    pub breaker_cooldown: Span,
    /// An idle agent claims again after this even without a wake-up (wake-ups can be lost).
    pub idle_recheck: Span,
    /// A queued job is judged unworkable once it has waited this long and no machine that
    /// heartbeated within this window could ever run it.
    pub unworkable_after: Span,
    /// Finished jobs and idempotency keys are kept this long, then purged.
    pub retention: Span,
    /// Most entries one reaper pass handles.
    pub reap_batch: u32,
    pub limits: Limits,
    pub policy: Policy,
    /// The model catalog: what a job may name in `models`, with download sizes.
    pub models: Vec<CatalogModel>,
    pub journal: JournalConfig,
}

/// The journal's bounds (store/journal.rs): entries beyond `max_len`, and entries older than
/// `max_age` on the store clock (trimmed by the reaper), are dropped. `max_len = 0` turns the
/// journal off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalConfig {
    pub max_len: u32,
    pub max_age: Span,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            // A busy agent's call holds ~30 events in ~400 bytes: 200,000 entries are at most
            // ~80 MB of Redis memory, and a day of a quiet fleet.
            max_len: 200_000,
            max_age: Span::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogModel {
    pub name: String,
    pub size_gb: u32,
}

/// Bounds on everything a client can make the store hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_payload_bytes: u32,
    pub max_kind_bytes: u32,
    pub max_idempotency_key_bytes: u32,
    /// Jobs the store holds in any state before it refuses submissions.
    pub max_jobs: u64,
    pub max_attempts: u32,
    pub max_timeout: Span,
    pub max_gpus: u32,
    pub max_labels: u32,
    pub max_classes: u32,
    pub max_machines: u32,
    /// Leases one heartbeat may renew.
    pub max_leases_per_heartbeat: u32,
    /// Requests one batch may carry.
    pub max_batch: u32,
    /// Leases one claim may grant.
    pub max_grants_per_claim: u32,
    /// Entries one listing returns.
    pub max_list: u32,
    /// Bytes of JSON a succeeded job may return (`$DROVER_RESULT`), kept with the job.
    pub max_result_bytes: u32,
}

/// Weights of the claim policy, in thousandths of a priority point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Added per minute a class head has waited, so a large job is not starved by small ones.
    pub aging_per_minute: i64,
    /// Aging never adds more than this.
    pub aging_cap: i64,
    /// Taken off per GB the machine would have to download.
    pub download_penalty_per_gb: i64,
    /// Taken off per GB of GPU memory the job would leave unused on each GPU.
    pub unused_gpu_mem_penalty_per_gb: i64,
}

/// The most any namespace may let a job return: a result travels in one store request.
pub const MAX_RESULT_BYTES: u32 = 1024 * 1024;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            lease_ttl: Span::from_secs(30),
            heartbeat: Span::from_secs(10),
            machine_ttl: Span::from_secs(30),
            reaper_period: Span::from_secs(5),
            max_attempts: 3,
            default_timeout: Span::from_secs(3600),
            backoff_base: Span::from_secs(1),
            backoff_max: Span::from_secs(300),
            request_timeout: Span::from_secs(2),
            retry_base: Span::from_millis(100),
            retry_max: Span::from_secs(5),
            breaker_failures: 5,
            breaker_cooldown: Span::from_secs(5),
            idle_recheck: Span::from_secs(30),
            unworkable_after: Span::from_secs(600),
            retention: Span::from_secs(3600),
            reap_batch: 1000,
            limits: Limits::default(),
            policy: Policy::default(),
            models: Vec::new(),
            journal: JournalConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            max_kind_bytes: 64,
            max_idempotency_key_bytes: 256,
            max_jobs: 10_000_000,
            max_attempts: 100,
            max_timeout: Span::from_secs(7 * 86_400),
            max_gpus: 64,
            max_labels: 64,
            max_classes: 10_000,
            max_machines: 100_000,
            max_leases_per_heartbeat: 256,
            max_batch: 256,
            max_grants_per_claim: 16,
            max_list: 1000,
            max_result_bytes: 64 * 1024,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            aging_per_minute: 100,
            aging_cap: 20_000,
            download_penalty_per_gb: 20,
            unused_gpu_mem_penalty_per_gb: 5,
        }
    }
}

/// A knob that cannot work, named by its field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("engine.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl EngineConfig {
    /// Checks the relations the engine relies on; the first broken one is named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.to_string(),
            })
        };
        if self.lease_ttl == Span::ZERO {
            return fail("lease_ttl", "must be longer than 0s");
        }
        if self.heartbeat == Span::ZERO || self.heartbeat >= self.lease_ttl {
            return fail("heartbeat", "must be above 0s and below lease_ttl");
        }
        if self.machine_ttl <= self.heartbeat {
            return fail("machine_ttl", "must be longer than heartbeat");
        }
        if self.reaper_period == Span::ZERO {
            return fail("reaper_period", "must be longer than 0s");
        }
        if self.max_attempts == 0 || self.max_attempts > self.limits.max_attempts {
            return fail("max_attempts", "must be between 1 and limits.max_attempts");
        }
        if self.default_timeout == Span::ZERO || self.default_timeout > self.limits.max_timeout {
            return fail(
                "default_timeout",
                "must be above 0s and at most limits.max_timeout",
            );
        }
        if self.backoff_max < self.backoff_base {
            return fail("backoff_max", "must be at least backoff_base");
        }
        if self.request_timeout == Span::ZERO {
            return fail("request_timeout", "must be longer than 0s");
        }
        if self.retry_max < self.retry_base || self.retry_base == Span::ZERO {
            return fail("retry_base", "must be above 0s and at most retry_max");
        }
        if self.breaker_failures == 0 {
            return fail("breaker_failures", "must be at least 1");
        }
        if self.idle_recheck == Span::ZERO {
            return fail("idle_recheck", "must be longer than 0s");
        }
        if self.reap_batch == 0 {
            return fail("reap_batch", "must be at least 1");
        }
        if self.limits.max_result_bytes > MAX_RESULT_BYTES {
            return fail("limits.max_result_bytes", "must be at most 1048576 (1 MiB)");
        }
        if self.models.len() > MAX_MODELS {
            return fail("models", "the catalog holds at most 128 models");
        }
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return fail("models", "a model name appears twice");
        }
        Ok(())
    }

    /// The catalog id of a model name.
    pub fn model_id(&self, name: &str) -> Option<ModelId> {
        self.models
            .iter()
            .position(|m| m.name == name)
            .map(|i| ModelId(i as u8))
    }

    /// GB to download for the models in `set`.
    pub fn download_gb(&self, set: ModelSet) -> u32 {
        set.iter()
            .map(|id| self.models.get(id.0 as usize).map_or(0, |m| m.size_gb))
            .sum()
    }

    pub fn model_size_gb(&self, id: ModelId) -> u32 {
        self.models.get(id.0 as usize).map_or(0, |m| m.size_gb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        EngineConfig::default().validate().unwrap();
    }

    #[test]
    fn broken_relations_are_named() {
        let config = EngineConfig {
            heartbeat: Span::from_secs(60),
            ..EngineConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "heartbeat");
        let config = EngineConfig {
            max_attempts: 0,
            ..EngineConfig::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "max_attempts");
    }
}
