//! The API's JSON shapes and their conversion to and from the core's types.
//!
//! Ids are strings, "j42" for jobs and "m3" for machines ("42" is accepted in paths). Times
//! are integers: microseconds since the Unix epoch on the store's clock.

use super::attempts::AttemptView;
use super::error::ApiError;
use crate::core::labels::Labels;
use crate::core::model::{JobError, JobView, Progress};
use crate::core::{EngineConfig, JobId, JobSpec, ModelSet, Requirements, Span, Time};
use crate::store::MachineView;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    pub kind: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub priority: Option<u8>,
    #[serde(default)]
    pub requirements: RequirementsBody,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// "10m", "30s", ...
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequirementsBody {
    pub gpus: u32,
    pub gpu_mem_gb: u32,
    pub gpu_models: Vec<String>,
    /// Catalog model names (`EngineConfig::models`).
    pub models: Vec<String>,
    pub disk_gb: u32,
    pub labels: Labels,
    pub not_labels: Labels,
}

impl SubmitBody {
    /// The job this body asks for, not yet validated against the limits.
    pub fn into_spec(
        self,
        header_key: Option<String>,
        config: &EngineConfig,
    ) -> Result<JobSpec, ApiError> {
        let mut requirements = self.requirements.into_requirements(config)?;
        requirements.kind = self.kind.clone();
        let mut spec = JobSpec::new(self.kind, Arc::new(requirements));
        spec.payload = match self.payload {
            None | Some(Value::Null) => String::new(),
            Some(value) => value.to_string(),
        };
        spec.priority = self.priority.unwrap_or(spec.priority);
        spec.max_attempts = self.max_attempts.unwrap_or(0);
        if let Some(text) = self.timeout {
            spec.timeout =
                Span::parse(&text).map_err(|e| ApiError::invalid("timeout", e.to_string()))?;
        }
        spec.idempotency_key = match (self.idempotency_key, header_key) {
            (Some(a), Some(b)) if a != b => {
                let message = "differs from the Idempotency-Key header";
                return Err(ApiError::bad_request("idempotency_key", message));
            }
            (body, header) => body.or(header),
        };
        Ok(spec)
    }
}

impl RequirementsBody {
    fn into_requirements(self, config: &EngineConfig) -> Result<Requirements, ApiError> {
        let mut models = ModelSet::EMPTY;
        for (i, name) in self.models.iter().enumerate() {
            let id = config.model_id(name).ok_or_else(|| {
                let field = format!("requirements.models[{i}]");
                ApiError::invalid(&field, format!("model {name:?} is not in the catalog"))
            })?;
            models = models.with(id);
        }
        Ok(Requirements {
            gpus: self.gpus,
            gpu_mem_gb: self.gpu_mem_gb,
            gpu_models: self.gpu_models,
            models,
            disk_gb: self.disk_gb,
            labels: self.labels,
            not_labels: self.not_labels,
            kind: String::new(),
        })
    }

    pub fn from_requirements(req: &Requirements, config: &EngineConfig) -> RequirementsBody {
        let models = req
            .models
            .iter()
            .map(|id| match config.models.get(id.0 as usize) {
                Some(model) => model.name.clone(),
                None => format!("#{}", id.0),
            })
            .collect();
        RequirementsBody {
            gpus: req.gpus,
            gpu_mem_gb: req.gpu_mem_gb,
            gpu_models: req.gpu_models.clone(),
            models,
            disk_gb: req.disk_gb,
            labels: req.labels.clone(),
            not_labels: req.not_labels.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct JobDto {
    pub id: String,
    pub state: &'static str,
    pub attempt: u32,
    pub machine: Option<String>,
    /// Microseconds since the Unix epoch, store clock; each `*_at` has its RFC 3339 form (UTC,
    /// to the millisecond) beside it as `*_at_utc`, for people.
    pub submitted_at: u64,
    pub submitted_at_utc: String,
    /// The start of the last attempt.
    pub started_at: Option<u64>,
    pub started_at_utc: Option<String>,
    pub finished_at: Option<u64>,
    pub finished_at_utc: Option<String>,
    /// `{"class", "message", "retryable"}`: why the last attempt failed, or why the store
    /// gave up on the job.
    pub error: Option<JobError>,
    pub progress: Option<Progress>,
    /// What the job returned (JSON), once it succeeded; null otherwise.
    pub result: Value,
    pub kind: String,
    pub priority: u8,
    pub max_attempts: u32,
    pub timeout: String,
    pub idempotency_key: Option<String>,
    pub requirements: RequirementsBody,
    pub payload: Value,
    /// Every attempt, oldest first (`GET /v1/jobs/{id}` only; lists leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
}

impl JobDto {
    pub fn new(view: &JobView, config: &EngineConfig) -> JobDto {
        let spec = &view.spec;
        JobDto {
            id: view.id.to_string(),
            state: view.state.as_str(),
            attempt: view.attempt,
            machine: view.machine.map(|m| m.to_string()),
            submitted_at: view.submitted_at.0,
            submitted_at_utc: view.submitted_at.rfc3339(),
            started_at: view.started_at.map(|t| t.0),
            started_at_utc: view.started_at.map(Time::rfc3339),
            finished_at: view.finished_at.map(|t| t.0),
            finished_at_utc: view.finished_at.map(Time::rfc3339),
            error: view.error.clone(),
            progress: view.progress.clone(),
            result: view
                .result
                .as_ref()
                .map_or(Value::Null, |r| payload_value(r.as_str())),
            kind: spec.kind.clone(),
            priority: spec.priority,
            max_attempts: spec.max_attempts,
            timeout: spec.timeout.to_string(),
            idempotency_key: spec.idempotency_key.clone(),
            requirements: RequirementsBody::from_requirements(&spec.requirements, config),
            payload: payload_value(&spec.payload),
            attempts: None,
        }
    }
}

/// The payload (or a result) as JSON when it is (the API and the agent only store JSON),
/// else as a string.
fn payload_value(payload: &str) -> Value {
    if payload.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_string()))
}

#[derive(Debug, Serialize)]
pub struct MachineDto {
    pub id: String,
    pub name: String,
    pub pool: String,
    pub state: &'static str,
    pub gpus: u32,
    pub gpu_model: String,
    pub gpu_mem_gb: u32,
    pub cost_per_hour: f64,
    pub leases: u32,
    pub idle: bool,
    /// µs since the epoch, with RFC 3339 beside (as `JobDto`'s times).
    pub registered_at: u64,
    pub registered_at_utc: String,
    pub last_seen: u64,
    pub last_seen_utc: String,
    /// The job kinds it runs; empty: every kind.
    pub kinds: Vec<String>,
}

impl From<&MachineView> for MachineDto {
    fn from(m: &MachineView) -> MachineDto {
        MachineDto {
            id: m.id.to_string(),
            name: m.name.clone(),
            pool: m.pool.clone(),
            state: m.state,
            gpus: m.gpus,
            gpu_model: m.gpu_model.clone(),
            gpu_mem_gb: m.gpu_mem_gb,
            cost_per_hour: m.cost_per_hour,
            leases: m.leases,
            idle: m.idle,
            registered_at: m.registered_at.0,
            registered_at_utc: m.registered_at.rfc3339(),
            last_seen: m.last_seen.0,
            last_seen_utc: m.last_seen.rfc3339(),
            kinds: m.kinds.clone(),
        }
    }
}

/// "j42" or "42".
pub fn parse_job_id(text: &str) -> Result<JobId, ApiError> {
    let digits = text.strip_prefix('j').unwrap_or(text);
    digits
        .parse()
        .map(JobId)
        .map_err(|_| ApiError::bad_request("id", format!("{text:?} is not a job id")))
}
