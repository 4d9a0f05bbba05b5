//! The one place where errors become HTTP responses. Clients get a stable code, the field
//! and a reason; internal details go to the log only.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use nearcast_core::FieldError;
use nearcast_core::engine::EngineError;
use nearcast_core::event::Rejection;
use serde_json::json;

/// An API error.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a field is wrong.
    Invalid(FieldError),
    /// 400: events in a batch are wrong; none was applied.
    Events(Vec<Rejection>),
    /// 401: the caller is not known (no key, an unknown key, no verified identity).
    Unauthorized(String),
    /// 403: the caller is known but may not do this (the field says what is missing).
    Forbidden(FieldError),
    /// 400: rows of an imported file are wrong; nothing was applied.
    Rows {
        /// The first rejected row's field, as `rows[<row>].<field>`.
        field: String,
        /// What happened.
        reason: String,
        /// Every rejected row.
        rejected: serde_json::Value,
    },
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 409.
    Conflict(String),
    /// 413: body over the limit.
    TooLarge,
    /// 413: body over a route's own limit (bytes).
    TooLargeFor(usize),
    /// 503: retry later; nothing was half-written.
    Unavailable(String),
    /// 422: a model artifact was refused; the current model stays in service.
    ModelRefused(String),
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ApiError::Invalid(FieldError::new(field, reason))
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(f) => ApiError::Invalid(f),
            EngineError::NotFound(what) => ApiError::NotFound(what),
            EngineError::Store(s) => {
                tracing::error!(error = %s, "state store failure");
                ApiError::Unavailable("state store unavailable".into())
            }
            EngineError::Contention => {
                ApiError::Unavailable("too many concurrent updates for one user".into())
            }
            EngineError::Model(reason) => ApiError::ModelRefused(reason),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::Invalid(f) => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "invalid_field", "field": f.field, "reason": f.reason}}),
            ),
            ApiError::Events(r) => {
                let first = r.first().map(|x| x.error.field.clone()).unwrap_or_default();
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"code": "invalid_events", "field": first,
                        "reason": "the batch was not applied; fix or drop the rejected events and resend",
                        "rejected": r.iter().map(|x| json!({"index": x.index, "event_id": x.event_id, "status": "rejected",
                            "field": x.error.field, "reason": x.error.reason})).collect::<Vec<_>>()}}),
                )
            }
            ApiError::Unauthorized(r) => (
                StatusCode::UNAUTHORIZED,
                json!({"error": {"code": "unauthorized", "field": "authorization", "reason": r}}),
            ),
            ApiError::Forbidden(f) => (
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "field": f.field, "reason": f.reason}}),
            ),
            ApiError::Rows {
                field,
                reason,
                rejected,
            } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "invalid_rows", "field": field, "reason": reason, "rejected": rejected}}),
            ),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "reason": format!("{what} not found")}}),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": {"code": "method_not_allowed", "reason": "method not allowed"}}),
            ),
            ApiError::Conflict(r) => (
                StatusCode::CONFLICT,
                json!({"error": {"code": "conflict", "reason": r}}),
            ),
            ApiError::TooLargeFor(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": {"code": "too_large", "field": "body", "reason": format!("must be at most {limit} bytes")}}),
            ),
            ApiError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": {"code": "too_large", "field": "body", "reason": format!("must be at most {} bytes", crate::MAX_BODY)}}),
            ),
            ApiError::ModelRefused(r) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": {"code": "model_refused", "reason": r, "current_model_kept": true}}),
            ),
            ApiError::Unavailable(r) => {
                let mut resp = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({"error": {"code": "unavailable", "reason": r, "retryable": true}})),
                )
                    .into_response();
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                return resp;
            }
        };
        (status, Json(body)).into_response()
    }
}
