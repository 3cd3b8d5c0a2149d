//! Reading media from a multipart upload or a URL, shared by `/h`, `/m` and `/c`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::http::StatusCode;
use bytes::Bytes;

use crate::error::ApiError;
use crate::fetch::FetchError;
use crate::hashing::{self, check_content_type, content_type_from_mime, select_signal_types};
use crate::state::AppState;

/// Largest non-file form field accepted (metadata, note, flags).
const MAX_FORM_FIELD_BYTES: usize = 1024 * 1024;

/// One uploaded file plus the plain form fields that came with it.
#[derive(Debug)]
pub struct Upload {
    /// The content type, from the file's field name.
    pub content_type: String,
    /// The file's bytes.
    pub bytes: Bytes,
    /// Other (non-file) form fields, by name; the last value wins.
    pub fields: HashMap<String, String>,
}

fn multipart_error(err: MultipartError) -> ApiError {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large("Request body too large")
    } else {
        ApiError::bad_request(format!(
            "Malformed multipart/form-data upload: {}",
            err.body_text()
        ))
    }
}

/// Maps a multipart extractor rejection (wrong content type, no boundary) to a 400.
pub fn multipart_rejection(rejection: MultipartRejection) -> ApiError {
    ApiError::bad_request(format!(
        "Missing multipart/form-data file upload: {}",
        rejection.body_text()
    ))
}

/// Reads an upload: exactly one file, under a field named after an installed content type.
/// Parts named after a content type are files even without a filename; other parts with a
/// filename are refused; other parts without one are plain form fields.
pub async fn read_upload(state: &AppState, mut multipart: Multipart) -> Result<Upload, ApiError> {
    let content_types = state.hasher.content_types();
    let mut file: Option<(String, Bytes)> = None;
    let mut fields = HashMap::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or("").to_owned();
        let is_content_type = content_types.contains(&name);
        if is_content_type || field.file_name().is_some() {
            if !is_content_type {
                return Err(ApiError::bad_request(format!(
                    "no such content_type: '{name}'"
                )));
            }
            if file.is_some() {
                return Err(ApiError::bad_request("Only one file allowed per request"));
            }
            let bytes = field.bytes().await.map_err(multipart_error)?;
            file = Some((name, bytes));
        } else {
            let bytes = field.bytes().await.map_err(multipart_error)?;
            if bytes.len() > MAX_FORM_FIELD_BYTES {
                return Err(ApiError::too_large(format!(
                    "form field '{name}' is too large"
                )));
            }
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                ApiError::bad_request(format!("form field '{name}' is not valid UTF-8"))
            })?;
            fields.insert(name, text);
        }
    }
    let (content_type, bytes) =
        file.ok_or_else(|| ApiError::bad_request("Missing multipart/form-data file upload"))?;
    Ok(Upload {
        content_type,
        bytes,
        fields,
    })
}

/// Maps a download failure to the API error Open Media Match gives for it.
pub fn fetch_error(err: FetchError) -> ApiError {
    match err {
        FetchError::TooLarge => ApiError::too_large("Content too large"),
        e if e.is_policy_refusal() => {
            ApiError::bad_request(format!("Invalid or unsafe URL provided: {e}"))
        }
        e => ApiError::bad_request(format!("Failed to fetch URL: {e}")),
    }
}

/// Hashes an uploaded file with the selected (or all enabled) signal types.
pub async fn hash_upload(
    state: &AppState,
    upload: &Upload,
    types: Option<&str>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let selected = select_signal_types(state.hasher.as_ref(), &upload.content_type, types, &|t| {
        state.signal_type_enabled(t)
    })?;
    hashing::hash_bytes(
        state.hasher.clone(),
        upload.content_type.clone(),
        selected,
        upload.bytes.clone(),
    )
    .await
}

/// Downloads `url` and hashes it, as `GET /h/hash` does. `content_type` overrides the
/// type inferred from the response's `Content-Type`.
pub async fn hash_url(
    state: &AppState,
    url: &str,
    content_type: Option<&str>,
    types: Option<&str>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let is_enabled = |t: &str| state.signal_type_enabled(t);
    // Check what can be checked before spending a download on it.
    state.fetcher.check_url(url).map_err(fetch_error)?;
    if let Some(ct) = content_type {
        check_content_type(state.hasher.as_ref(), ct)?;
        select_signal_types(state.hasher.as_ref(), ct, types, &is_enabled)?;
    }
    let _permit = state.upload_permit().await?;
    let fetched = state.fetcher.fetch(url).await.map_err(fetch_error)?;
    let content_type = match content_type {
        Some(ct) => ct.to_owned(),
        None => {
            let inferred = content_type_from_mime(fetched.content_type.as_deref())?;
            check_content_type(state.hasher.as_ref(), inferred)?;
            inferred.to_owned()
        }
    };
    let selected = select_signal_types(state.hasher.as_ref(), &content_type, types, &is_enabled)?;
    hashing::hash_bytes(state.hasher.clone(), content_type, selected, fetched.bytes).await
}
