//! The one error type of the API.
//!
//! Client errors are 4xx with a JSON body `{"message": "..."}`. Internal errors are logged
//! with their details and answered with a generic 500 that leaks nothing.

use std::fmt;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// Message of every 500, the same words Open Media Match (Flask) uses.
pub const INTERNAL_ERROR_MESSAGE: &str = "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application.";

/// Body of every error response.
#[derive(Debug, Serialize, Clone, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub message: String,
}

/// An error answered to the client.
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Details of an internal error, logged but never sent.
    internal: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    /// An error with this status and message (the message is sent to the client).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            internal: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 413 Payload Too Large.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message)
    }

    /// 415 Unsupported Media Type.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    /// 422 Unprocessable Entity (a request that parses but does not fit the schema).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 503 Service Unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500 with a generic message; `err` is logged, never sent.
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: INTERNAL_ERROR_MESSAGE.to_owned(),
            internal: Some(err.into()),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("message", &self.message)
            .field("internal", &self.internal.as_ref().map(|e| e.to_string()))
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(err) = &self.internal {
            tracing::error!(error = %err, debug = ?err, "internal error");
        }
        let body = ErrorBody {
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
