//! Extractors whose rejections are JSON `{"message": ...}` like every other error.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserializer;

use crate::error::ApiError;

/// Message Flask gives when a JSON body arrives with another content type.
pub const NOT_JSON_MESSAGE: &str = "Did not attempt to load JSON data because the request Content-Type was not 'application/json'.";

/// `axum::Json` with JSON rejections: 415 for a non-JSON content type, 400 for malformed JSON,
/// 422 for JSON that does not fit the expected shape, 413 for a body over the limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::unsupported_media_type(NOT_JSON_MESSAGE)
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("Request body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => {
            ApiError::unprocessable(format!("Invalid request body: {}", e.body_text()))
        }
        JsonRejection::BytesRejection(e) => body_rejection(e.status(), e.body_text()),
        other => body_rejection(other.status(), other.body_text()),
    }
}

fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("Request body too large")
    } else if status.is_client_error() {
        ApiError::new(status, format!("Cannot read request body: {text}"))
    } else {
        ApiError::bad_request(format!("Cannot read request body: {text}"))
    }
}

/// `axum::extract::Query` whose rejection is a 422 with a JSON message.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::unprocessable(
                format!("Invalid query parameters: {}", e.body_text()),
            )),
            Err(other) => Err(ApiError::unprocessable(format!(
                "Invalid query parameters: {}",
                other.body_text()
            ))),
        }
    }
}

/// `axum::extract::Path` whose rejection is a JSON 404 (a path segment of the wrong type means
/// no route matched, as in Flask's `<int:...>` converters).
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(e) => Err(ApiError::not_found(format!("Not Found: {}", e.body_text()))),
        }
    }
}

/// Parses a boolean the way pydantic does in query strings: true/false, 1/0, yes/no, on/off,
/// t/f, y/n, any case.
pub fn parse_flexible_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// Serde helper for optional query booleans in pydantic's forms.
pub fn flexible_bool<'de, D: Deserializer<'de>>(de: D) -> Result<Option<bool>, D::Error> {
    let raw: Option<String> = serde::Deserialize::deserialize(de)?;
    match raw {
        None => Ok(None),
        Some(s) => parse_flexible_bool(&s).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!("input should be a valid boolean, got '{s}'"))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexible_bools() {
        for t in ["true", "TRUE", "1", "yes", "On", "t"] {
            assert_eq!(parse_flexible_bool(t), Some(true), "{t}");
        }
        for f in ["false", "0", "no", "OFF", "f", "n"] {
            assert_eq!(parse_flexible_bool(f), Some(false), "{f}");
        }
        for bad in ["", "2", "maybe", "truee"] {
            assert_eq!(parse_flexible_bool(bad), None, "{bad}");
        }
    }
}
