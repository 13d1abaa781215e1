//! `/v1/jobs`: submit, read, cancel, list.

use super::dto::{parse_job_id, JobDto, SubmitBody};
use super::error::ApiError;
use super::ApiState;
use crate::core::class::validate_spec;
use crate::core::model::JobView;
use crate::core::{JobId, StateName};
use crate::runtime::SharedStore;
use crate::store::{Reply, Request};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn submit<S: SharedStore>(
    State(state): State<ApiState<S>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), Some("body"), r.body_text()))?;
    let parsed: SubmitBody = parse_body(&body)?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(value.to_str().map(str::to_string).map_err(|_| {
            ApiError::bad_request(
                "idempotency_key",
                "the Idempotency-Key header must be ASCII",
            )
        })?),
    };
    let spec = parsed.into_spec(header_key, &state.config)?;
    let spec = validate_spec(spec, &state.config)?;
    crate::executor::payload::check(&spec.kind, &spec.payload, &state.options.command_kinds)
        .map_err(|e| ApiError::invalid(&e.field, e.reason))?;
    let requirements = spec.requirements.clone();
    match state.call(Request::Submit(Box::new(spec))).await? {
        Reply::Submitted { job, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let warnings = submission_warnings(&state, &requirements).await;
            let reply = json!({"id": job.to_string(), "warnings": warnings});
            Ok((status, Json(reply)))
        }
        other => Err(unexpected(other)),
    }
}

/// What the reply warns of (`warnings`): none when the machines cannot be listed, since the
/// job is accepted either way.
async fn submission_warnings<S: SharedStore>(
    state: &ApiState<S>,
    requirements: &crate::core::Requirements,
) -> Vec<String> {
    let limit = state.config.limits.max_list;
    match state.call(Request::ListMachines { limit }).await {
        Ok(Reply::Machines(machines)) => super::warnings::warnings(
            requirements,
            &machines,
            crate::runtime::store::wall_clock(),
            state.config.unworkable_after,
        ),
        Ok(other) => {
            tracing::warn!(reply = ?other, "ListMachines answered with another reply");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e.message, "no submission warnings: machines not listed");
            Vec::new()
        }
    }
}

/// Parses a JSON body, naming the field at fault ("requirements.gpus").
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body" } else { path.as_str() };
        ApiError::bad_request(field, e.inner().to_string())
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    Ok(parsed)
}

pub async fn get_job<S: SharedStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
) -> Result<Json<JobDto>, ApiError> {
    let job = parse_job_id(&id)?;
    let view = state.job(job).await?;
    let mut dto = JobDto::new(&view, &state.config);
    if let Ok(attempts) = state.attempts.lock() {
        dto.attempts = Some(attempts.of(job, view.error.as_ref()));
    }
    Ok(Json(dto))
}

pub async fn cancel<S: SharedStore>(
    State(state): State<ApiState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = parse_job_id(&id)?;
    match state.call(Request::Cancel { job }).await? {
        Reply::Cancelled { job, previous } => Ok(Json(json!({
            "id": job.to_string(),
            "state": "cancelled",
            "previous": previous.as_str(),
        }))),
        other => Err(unexpected(other)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<StateName>,
    limit: Option<u32>,
    after: Option<String>,
}

/// Jobs in id order. `next` is the `after` of the following page, absent on the last.
pub async fn list<S: SharedStore>(
    State(state): State<ApiState<S>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("query", e.body_text()))?;
    let after = query.after.as_deref().map(parse_job_id).transpose()?;
    let limit = query.limit.unwrap_or(100).min(state.config.limits.max_list);
    let request = Request::ListJobs {
        state: query.state,
        after,
        limit,
    };
    let Reply::Jobs(views) = state.call(request).await? else {
        return Err(ApiError::unavailable("unexpected store reply"));
    };
    let next = (views.len() as u32 == limit && limit > 0)
        .then(|| views.last().map(|v| v.id.to_string()))
        .flatten();
    let jobs: Vec<JobDto> = views
        .iter()
        .map(|v| JobDto::new(v, &state.config))
        .collect();
    Ok(Json(json!({"jobs": jobs, "next": next})))
}

impl<S: SharedStore> ApiState<S> {
    pub async fn job(&self, job: JobId) -> Result<JobView, ApiError> {
        match self.call(Request::Get { job }).await? {
            Reply::Job(view) => Ok(*view),
            other => Err(unexpected(other)),
        }
    }
}

pub fn unexpected(reply: Reply) -> ApiError {
    tracing::error!(?reply, "unexpected store reply");
    ApiError::unavailable("unexpected store reply")
}
