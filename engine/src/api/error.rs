//! API errors: a status and `{"error": {"field": "requirements.gpus", "message": "..."}}`.

use crate::core::class::InvalidJob;
use crate::runtime::StoreError;
use crate::store::Refusal;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// The request field at fault, dotted ("requirements.gpus"), when one is.
    pub field: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, field: Option<&str>, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    pub fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, Some(field), message)
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, Some(field), message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, None, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, None, message)
    }
}

impl From<InvalidJob> for ApiError {
    fn from(e: InvalidJob) -> ApiError {
        // An oversized payload is a size limit like the body's, so it answers as one.
        let status = if e.field == "payload" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, Some(&e.field), e.reason)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::unavailable(format!("store unavailable: {e}"))
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let message = refusal.to_string();
        match refusal {
            Refusal::Invalid(e) => e.into(),
            Refusal::UnknownJob(_) => ApiError::not_found(message),
            Refusal::Full { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, None, message),
            Refusal::Failed(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, None, message),
            Refusal::UnknownMachine(_)
            | Refusal::MachineLost(_)
            | Refusal::Stale { .. }
            | Refusal::AlreadyFinished { .. } => ApiError::new(StatusCode::CONFLICT, None, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"field": self.field, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}
