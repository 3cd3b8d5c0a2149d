//! `/h`: hashing by URL or upload.

use std::collections::BTreeMap;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::state::AppState;
use crate::upload::{hash_upload, hash_url, multipart_rejection, read_upload};

/// Query of `GET /h/hash`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HashUrlQuery {
    /// URL of the media to download and hash (required).
    pub url: Option<String>,
    /// `photo` or `video`; inferred from the response's Content-Type when absent.
    pub content_type: Option<String>,
    /// Comma-separated signal types to compute (default: all enabled for the content type).
    pub types: Option<String>,
}

/// Query of `POST /h/hash`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct HashUploadQuery {
    /// Comma-separated signal types to compute (default: all enabled for the content type).
    pub types: Option<String>,
}

/// Downloads a URL and hashes it.
#[utoipa::path(get, path = "/h/hash", tag = "hasher", params(HashUrlQuery),
    responses(
        (status = 200, description = "Signal type to hash", body = BTreeMap<String, String>),
        (status = 400, description = "Unsafe URL, failed download, unsupported or undecodable content", body = ErrorBody),
        (status = 413, description = "Content too large", body = ErrorBody),
        (status = 422, description = "Missing `url`, or a photo of too low quality", body = ErrorBody),
    ))]
pub async fn hash_get(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HashUrlQuery>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let url = query
        .url
        .ok_or_else(|| ApiError::unprocessable("url: Field required"))?;
    let hashes = hash_url(
        &state,
        &url,
        query.content_type.as_deref(),
        query.types.as_deref(),
    )
    .await?;
    Ok(Json(hashes))
}

/// Hashes one uploaded file; its form field name is the content type (`photo`, `video`).
#[utoipa::path(post, path = "/h/hash", tag = "hasher", params(HashUploadQuery),
    request_body(content_type = "multipart/form-data", description = "One file under a field named after its content type"),
    responses(
        (status = 200, description = "Signal type to hash", body = BTreeMap<String, String>),
        (status = 400, description = "No file, several files, unknown content type, undecodable content", body = ErrorBody),
        (status = 413, description = "Upload too large", body = ErrorBody),
        (status = 422, description = "A photo of too low quality", body = ErrorBody),
    ))]
pub async fn hash_post(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HashUploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<BTreeMap<String, String>>> {
    let multipart = multipart.map_err(multipart_rejection)?;
    let _permit = state.upload_permit().await?;
    let upload = read_upload(&state, multipart).await?;
    let hashes = hash_upload(&state, &upload, query.types.as_deref()).await?;
    Ok(Json(hashes))
}
