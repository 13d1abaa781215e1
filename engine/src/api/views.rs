//! `/v1/machines`, `/v1/stats` and `/healthz`.

use super::dto::{MachineDto, RequirementsBody};
use super::error::ApiError;
use super::jobs::unexpected;
use super::ApiState;
use crate::core::JobId;
use crate::runtime::SharedStore;
use crate::store::{Reply, Request};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub async fn machines<S: SharedStore>(
    State(state): State<ApiState<S>>,
) -> Result<Json<Value>, ApiError> {
    let limit = state.config.limits.max_list;
    match state.call(Request::ListMachines { limit }).await? {
        Reply::Machines(list) => {
            let machines: Vec<MachineDto> = list.iter().map(MachineDto::from).collect();
            Ok(Json(json!({ "machines": machines })))
        }
        other => Err(unexpected(other)),
    }
}

/// Queue depth per class, jobs and machines by state, totals, spend and cost per job
/// (spend / succeeded; null before the first success).
pub async fn stats<S: SharedStore>(
    State(state): State<ApiState<S>>,
) -> Result<Json<Value>, ApiError> {
    let Reply::Stats(stats) = state.call(Request::Stats).await? else {
        return Err(ApiError::unavailable("unexpected store reply"));
    };
    let queue: Vec<Value> = stats
        .classes
        .iter()
        .map(|c| {
            let requirements = RequirementsBody::from_requirements(&c.requirements, &state.config);
            json!({"class": c.class, "queued": c.queued, "requirements": requirements})
        })
        .collect();
    let succeeded = stats.totals.succeeded;
    let cost_per_job = (succeeded > 0).then(|| stats.spend / succeeded as f64);
    Ok(Json(json!({
        "queue": queue,
        "jobs": stats.jobs,
        "machines": stats.machines,
        "totals": stats.totals,
        "spend": stats.spend,
        "cost_per_job": cost_per_job,
    })))
}

/// 200 when the store answers a cheap read (a job that does not exist), 503 otherwise.
pub async fn healthz<S: SharedStore>(
    State(state): State<ApiState<S>>,
) -> (StatusCode, Json<Value>) {
    match state.call(Request::Get { job: JobId(0) }).await {
        Ok(_)
        | Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..
        }) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": {"message": e.message}})),
        ),
    }
}
