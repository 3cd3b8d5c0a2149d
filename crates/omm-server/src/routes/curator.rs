//! `/c`: banks, bank content, signal and content types, exchanges.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::multipart::Multipart;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::upload::{hash_upload, hash_url, read_upload};

/// Maps a store error to the API error for it.
pub fn store_error(err: omm_store::StoreError) -> ApiError {
    use omm_store::StoreError as E;
    match err {
        E::NotFound { .. } => ApiError::not_found(err.to_string()),
        E::AlreadyExists { .. } | E::Conflict(_) => ApiError::conflict(err.to_string()),
        E::InvalidName(_) => ApiError::bad_request("Bank names must be UPPER_WITH_UNDERSCORE"),
        E::InvalidArgument(msg) => ApiError::bad_request(msg),
        E::Backend(_) => ApiError::internal(err),
    }
}

/// A bank as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BankConfig {
    /// Bank name.
    pub name: String,
    /// Coin-flip threshold at match time.
    pub matching_enabled_ratio: f64,
}

impl From<&omm_store::Bank> for BankConfig {
    fn from(b: &omm_store::Bank) -> Self {
        BankConfig {
            name: b.name.clone(),
            matching_enabled_ratio: b.enabled_ratio,
        }
    }
}

fn check_ratio(ratio: f64, field: &str) -> Result<f64, ApiError> {
    if ratio.is_finite() && (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(ApiError::bad_request(format!(
            "{field} must be a number between 0 and 1"
        )))
    }
}

/// All banks.
#[utoipa::path(get, path = "/c/banks", tag = "curator",
    responses((status = 200, body = Vec<BankConfig>)))]
pub async fn banks_list(State(state): State<AppState>) -> ApiResult<Json<Vec<BankConfig>>> {
    let banks = state.store.list_banks().await.map_err(store_error)?;
    Ok(Json(banks.iter().map(BankConfig::from).collect()))
}

/// One bank.
#[utoipa::path(get, path = "/c/bank/{bank_name}", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name")),
    responses((status = 200, body = BankConfig), (status = 404, body = ErrorBody)))]
pub async fn bank_get(
    State(state): State<AppState>,
    ApiPath(bank_name): ApiPath<String>,
) -> ApiResult<Json<BankConfig>> {
    let bank = state
        .store
        .get_bank(&bank_name)
        .await
        .map_err(store_error)?;
    Ok(Json(BankConfig::from(&bank)))
}

/// Body of `POST /c/banks`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateBank {
    /// `^[A-Z_][A-Z0-9_]*$`
    pub name: String,
    /// Match ratio (0..1); wins over `enabled`.
    pub enabled_ratio: Option<f64>,
    /// Shorthand for ratio 1 (true) or 0 (false).
    pub enabled: Option<bool>,
}

/// Creates a bank.
#[utoipa::path(post, path = "/c/banks", tag = "curator", request_body = CreateBank,
    responses((status = 201, body = BankConfig), (status = 400, body = ErrorBody),
        (status = 403, description = "Bank already exists", body = ErrorBody)))]
pub async fn bank_create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBank>,
) -> ApiResult<(StatusCode, Json<BankConfig>)> {
    let ratio = match (body.enabled_ratio, body.enabled) {
        (Some(r), _) => check_ratio(r, "enabled_ratio")?,
        (None, Some(false)) => 0.0,
        _ => 1.0,
    };
    omm_store::validate_bank_name(&body.name)
        .map_err(|_| ApiError::bad_request("Bank names must be UPPER_WITH_UNDERSCORE"))?;
    let bank = state
        .store
        .create_bank(&omm_store::NewBank {
            name: body.name,
            enabled_ratio: ratio,
        })
        .await
        .map_err(|e| match e {
            omm_store::StoreError::AlreadyExists { .. } => {
                ApiError::forbidden("Bank already exists")
            }
            other => store_error(other),
        })?;
    Ok((StatusCode::CREATED, Json(BankConfig::from(&bank))))
}

/// Body of `PUT /c/bank/{bank_name}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateBank {
    /// New name.
    pub name: Option<String>,
    /// Ratio 1 (true) or 0 (false).
    pub enabled: Option<bool>,
    /// New ratio (wins over `enabled`).
    pub enabled_ratio: Option<f64>,
}

/// Renames a bank and/or changes its ratio.
#[utoipa::path(put, path = "/c/bank/{bank_name}", tag = "curator", request_body = UpdateBank,
    params(("bank_name" = String, Path, description = "Bank name")),
    responses((status = 200, body = BankConfig), (status = 400, body = ErrorBody),
        (status = 403, description = "Bank name already exists", body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn bank_update(
    State(state): State<AppState>,
    ApiPath(bank_name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBank>,
) -> ApiResult<Json<BankConfig>> {
    let mut ratio = body.enabled.map(|e| if e { 1.0 } else { 0.0 });
    if let Some(r) = body.enabled_ratio {
        ratio = Some(check_ratio(r, "enabled_ratio")?);
    }
    if let Some(name) = &body.name {
        omm_store::validate_bank_name(name)
            .map_err(|_| ApiError::bad_request("Bank names must be UPPER_WITH_UNDERSCORE"))?;
    }
    let bank = state
        .store
        .update_bank(
            &bank_name,
            &omm_store::BankUpdate {
                name: body.name,
                enabled_ratio: ratio,
            },
        )
        .await
        .map_err(|e| match e {
            omm_store::StoreError::NotFound { .. } => ApiError::not_found("Bank not found"),
            omm_store::StoreError::AlreadyExists { .. } => {
                ApiError::forbidden("Bank name already exists")
            }
            other => store_error(other),
        })?;
    Ok(Json(BankConfig::from(&bank)))
}

/// Deletes a bank with its content (200 also when it does not exist).
#[utoipa::path(delete, path = "/c/bank/{bank_name}", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name")),
    responses((status = 200, description = "`{\"message\": \"Done\"}`"),
        (status = 409, description = "The bank of an exchange: delete the exchange", body = ErrorBody)))]
pub async fn bank_delete(
    State(state): State<AppState>,
    ApiPath(bank_name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    state
        .store
        .delete_bank(&bank_name)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"message": "Done"})))
}

// ---------------------------------------------------------------------------------------
// Content

/// Validates user metadata: an object with only `content_id` (string), `content_uri`
/// (string) and `json` (object); `collab` is dropped; null keys are not stored.
fn validate_metadata(value: &Value) -> Result<Option<Value>, ApiError> {
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request("metadata should be a json object"));
    };
    let mut out = Map::new();
    for (key, v) in obj {
        match key.as_str() {
            "collab" => {}
            "content_id" | "content_uri" => match v {
                Value::Null => {}
                Value::String(_) => {
                    out.insert(key.clone(), v.clone());
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid metadata: {key}: Input should be a valid string"
                    )))
                }
            },
            "json" => match v {
                Value::Null => {}
                Value::Object(_) => {
                    out.insert(key.clone(), v.clone());
                }
                _ => {
                    return Err(ApiError::bad_request(
                        "Invalid metadata: json: Input should be a valid dictionary",
                    ))
                }
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "Invalid metadata: {other}: Extra inputs are not permitted"
                )))
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Validates a note: a string of at most 255 characters; empty or null means none.
fn validate_note(value: Option<&Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > omm_store::MAX_NOTE_CHARS {
                Err(ApiError::bad_request("note must be at most 255 characters"))
            } else if s.is_empty() {
                Ok(None)
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(Value::Bool(false)) => Ok(None),
        Some(_) => Err(ApiError::bad_request("note should be a string")),
    }
}

/// Validates and normalises `{signal_type: value}`, with Open Media Match's messages.
fn validate_signals(
    state: &AppState,
    signals: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, value) in signals {
        let st = state
            .installed_signal_type(name)
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type {name}")))?;
        let canonical = st
            .validate(value)
            .map_err(|e| ApiError::bad_request(format!("Invalid {name} signal: {e}")))?;
        out.insert(name.clone(), canonical);
    }
    Ok(out)
}

async fn create_content(
    state: &AppState,
    bank_name: &str,
    signals: BTreeMap<String, String>,
    note: Option<String>,
    metadata: Option<Value>,
) -> ApiResult<Json<Value>> {
    let signals = validate_signals(state, &signals)?;
    let mut new = omm_store::NewContent::with_signals(signals);
    new.note = note;
    new.metadata = metadata;
    let content = state
        .store
        .create_content(bank_name, &new)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"id": content.id, "signals": content.signals})))
}

/// Query of `POST /c/bank/{bank_name}/content`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AddContentQuery {
    /// URL to download and hash (instead of an upload).
    pub url: Option<String>,
    /// Content type of the URL's media (inferred when absent).
    pub content_type: Option<String>,
    /// Signal types to compute.
    pub types: Option<String>,
}

/// Adds content to a bank by upload (multipart, file under `photo`/`video`, optional form
/// fields `metadata` (JSON string) and `note`) or by `?url=` (optional JSON body with
/// `metadata` and `note`).
#[utoipa::path(post, path = "/c/bank/{bank_name}/content", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"), AddContentQuery),
    responses((status = 200, description = "`{\"id\": n, \"signals\": {...}}`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn content_add(
    State(state): State<AppState>,
    ApiPath(bank_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<AddContentQuery>,
    request: Request,
) -> ApiResult<Json<Value>> {
    state
        .store
        .get_bank(&bank_name)
        .await
        .map_err(store_error)?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(crate::upload::multipart_rejection)?;
        let _permit = state.upload_permit().await?;
        let upload = read_upload(&state, multipart).await?;
        let metadata = match upload.fields.get("metadata") {
            None => None,
            Some(text) => {
                let v: Value = serde_json::from_str(text)
                    .map_err(|_| ApiError::bad_request("metadata form field must be valid JSON"))?;
                validate_metadata(&v)?
            }
        };
        let note = validate_note(
            upload
                .fields
                .get("note")
                .map(|s| Value::String(s.clone()))
                .as_ref(),
        )?;
        let signals = hash_upload(&state, &upload, query.types.as_deref()).await?;
        return create_content(&state, &bank_name, signals, note, metadata).await;
    }
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(|e| ApiError::bad_request(format!("Cannot read request body: {e}")))?;
    let mut obj = Map::new();
    if !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) => obj = o,
            Ok(_) => return Err(ApiError::bad_request("Request body must be a JSON object")),
            Err(e) => {
                return Err(ApiError::bad_request(format!(
                    "Request body is not valid JSON: {e}"
                )))
            }
        }
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(v) => validate_metadata(v)?,
    };
    let note = validate_note(obj.get("note"))?;
    let Some(url) = query.url.as_deref() else {
        return Err(ApiError::bad_request(
            "Neither `url` nor multipart file upload was received",
        ));
    };
    let signals = hash_url(
        &state,
        url,
        query.content_type.as_deref(),
        query.types.as_deref(),
    )
    .await?;
    create_content(&state, &bank_name, signals, note, metadata).await
}

/// Adds content to a bank from raw hashes: `{"<signal_type>": "<value>", ..., "note"?: str}`.
#[utoipa::path(post, path = "/c/bank/{bank_name}/signal", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name")),
    request_body(content = Object, description = "Signal type to value, plus optional note"),
    responses((status = 200, description = "`{\"id\": n, \"signals\": {...}}`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn signal_add(
    State(state): State<AppState>,
    ApiPath(bank_name): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    };
    state
        .store
        .get_bank(&bank_name)
        .await
        .map_err(store_error)?;
    let note = validate_note(obj.get("note"))?;
    let mut signals = BTreeMap::new();
    for (key, value) in &obj {
        if key == "note" {
            continue;
        }
        let Value::String(s) = value else {
            return Err(ApiError::bad_request(format!(
                "Invalid {key} signal: value must be a string"
            )));
        };
        signals.insert(key.clone(), s.clone());
    }
    if signals.is_empty() {
        return Err(ApiError::bad_request("No signals given"));
    }
    create_content(&state, &bank_name, signals, note, None).await
}

/// Query of `GET /c/bank/{bank_name}/content/{content_id}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct GetContentQuery {
    /// Include the signals (only for `true`).
    pub include_signals: Option<String>,
    /// Include the metadata (default on; off for anything but `true`).
    pub include_metadata: Option<String>,
}

fn content_json(c: &omm_store::Content, signals: bool, metadata: bool) -> Value {
    let mut out = json!({
        "id": c.id,
        "disable_until_ts": c.disable_until_ts,
        "original_media_uri": c.original_media_uri,
        "bank": BankConfig::from(&c.bank),
    });
    if signals && !c.signals.is_empty() {
        out["signals"] = json!(c.signals);
    }
    if metadata && (c.metadata.is_some() || c.provenance.is_some()) {
        let user = c.metadata.clone().unwrap_or(Value::Null);
        out["metadata"] = json!({
            "content_id": user.get("content_id").cloned().unwrap_or(Value::Null),
            "content_uri": user.get("content_uri").cloned().unwrap_or(Value::Null),
            "json": user.get("json").cloned().unwrap_or(Value::Null),
            "collab": c.provenance.as_ref().map(|p| json!({p.exchange_name.clone(): [p.record_key.clone()]})),
        });
    }
    if let Some(note) = &c.note {
        out["note"] = json!(note);
    }
    out
}

/// One content item of a bank.
#[utoipa::path(get, path = "/c/bank/{bank_name}/content/{content_id}", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"),
        ("content_id" = i64, Path, description = "Content id"), GetContentQuery),
    responses((status = 200, description = "The content"), (status = 404, body = ErrorBody)))]
pub async fn content_get(
    State(state): State<AppState>,
    ApiPath((bank_name, content_id)): ApiPath<(String, i64)>,
    ApiQuery(query): ApiQuery<GetContentQuery>,
) -> ApiResult<Json<Value>> {
    let content = state
        .store
        .get_content(&bank_name, content_id)
        .await
        .map_err(store_error)?;
    let signals = query
        .include_signals
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let metadata = query
        .include_metadata
        .is_none_or(|v| v.eq_ignore_ascii_case("true"));
    Ok(Json(content_json(&content, signals, metadata)))
}

/// Most that `disable_until_ts` may lie in the future.
const FIVE_YEARS_SECS: i64 = 5 * 365 * 24 * 3600;

fn parse_disable_until(value: &Value) -> Result<i64, ApiError> {
    let invalid = || ApiError::bad_request(format!("Invalid int: '{}'", value_text(value)));
    let ts = match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i
            } else if let Some(f) = n.as_f64() {
                if !f.is_finite() || f.abs() > 1e15 {
                    return Err(invalid());
                }
                f.trunc() as i64
            } else {
                return Err(invalid());
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                i
            } else {
                match t.parse::<f64>() {
                    Ok(f) if f.is_finite() && f.abs() <= 1e15 => f.trunc() as i64,
                    _ => return Err(invalid()),
                }
            }
        }
        _ => return Err(invalid()),
    };
    if ts < 0 {
        return Err(ApiError::bad_request(
            "disable_until_ts must be a non-negative integer",
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if ts > now + FIVE_YEARS_SECS {
        return Err(ApiError::bad_request(
            "disable_until_ts must be less than 5 years in the future",
        ));
    }
    Ok(ts)
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Updates `disable_until_ts` and/or the note of a content item.
#[utoipa::path(put, path = "/c/bank/{bank_name}/content/{content_id}", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"),
        ("content_id" = i64, Path, description = "Content id")),
    request_body(content = Object, description = "`{\"disable_until_ts\"?: int, \"note\"?: str}`"),
    responses((status = 200, description = "The new state"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn content_update(
    State(state): State<AppState>,
    ApiPath((bank_name, content_id)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    };
    let mut update = omm_store::ContentUpdate::default();
    if let Some(v) = obj.get("disable_until_ts") {
        update.disable_until_ts = Some(parse_disable_until(v)?);
    }
    if obj.contains_key("note") {
        update.note = Some(validate_note(obj.get("note"))?);
    }
    let c = state
        .store
        .update_content(&bank_name, content_id, &update)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "id": c.id,
        "disable_until_ts": c.disable_until_ts,
        "collab_metadata": c.provenance.as_ref().map(|p| json!({p.exchange_name.clone(): [p.record_key.clone()]})).unwrap_or(json!({})),
        "original_media_uri": c.original_media_uri,
        "bank": BankConfig::from(&c.bank),
        "user_metadata": c.metadata,
        "note": c.note,
    })))
}

/// Deletes a content item of the bank.
#[utoipa::path(delete, path = "/c/bank/{bank_name}/content/{content_id}", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"),
        ("content_id" = i64, Path, description = "Content id")),
    responses((status = 200, description = "`{\"deleted\": 0|1}`"), (status = 404, body = ErrorBody)))]
pub async fn content_delete(
    State(state): State<AppState>,
    ApiPath((bank_name, content_id)): ApiPath<(String, i64)>,
) -> ApiResult<Json<Value>> {
    let deleted = state
        .store
        .delete_content(&bank_name, content_id)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"deleted": u8::from(deleted)})))
}

// ---------------------------------------------------------------------------------------
// Signal and content types

/// Installed signal types and their ratios.
#[utoipa::path(get, path = "/c/signal_type", tag = "curator",
    responses((status = 200, description = "`[{\"name\", \"enabled_ratio\"}]`")))]
pub async fn signal_types_list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let overrides = state
        .store
        .list_signal_type_overrides()
        .await
        .map_err(store_error)?;
    let list: Vec<Value> = state
        .signal_types
        .iter()
        .map(|st| {
            let ratio = overrides
                .iter()
                .find(|o| o.name == st.name())
                .map(|o| o.enabled_ratio)
                .unwrap_or(1.0);
            json!({"name": st.name(), "enabled_ratio": ratio})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// Sets the enabled ratio of a signal type (0 disables it).
#[utoipa::path(put, path = "/c/signal_type/{signal_type_name}", tag = "curator",
    params(("signal_type_name" = String, Path, description = "Signal type")),
    request_body(content = Object, description = "`{\"enabled_ratio\": float}`"),
    responses((status = 204, description = "Updated"), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn signal_type_update(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<StatusCode> {
    if state.installed_signal_type(&name).is_none() {
        return Err(ApiError::not_found(format!("No such signal type '{name}'")));
    }
    let value = match &body {
        Value::Object(o) => o.get("enabled_ratio").cloned().unwrap_or(Value::Null),
        _ => return Err(ApiError::bad_request("Request body must be a JSON object")),
    };
    let ratio = match &value {
        Value::Null => return Err(ApiError::bad_request("enabled_ratio is required")),
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request(format!("Invalid float: '{}'", value_text(&value))))?;
    let ratio = check_ratio(ratio, "enabled_ratio")?;
    state
        .store
        .set_signal_type_override(&name, ratio)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the index status endpoints.
#[derive(Debug, Deserialize, IntoParams)]
pub struct SignalTypeQuery {
    /// One signal type (default: all).
    pub signal_type: Option<String>,
}

/// Selected installed signal types, or 400 `No such signal type`.
pub fn selected_types(
    state: &AppState,
    name: Option<&str>,
) -> Result<Vec<omm_signals::SignalType>, ApiError> {
    match name {
        None => Ok(state.signal_types.as_ref().clone()),
        Some(n) => state
            .installed_signal_type(n)
            .map(|st| vec![st])
            .ok_or_else(|| ApiError::bad_request(format!("No such signal type '{n}'"))),
    }
}

/// Index build progress per signal type: stored signals against indexed ones.
#[utoipa::path(get, path = "/c/signal_type/index", tag = "curator", params(SignalTypeQuery),
    responses((status = 200, description = "Per type: db_size, index_size, index_out_of_date, newest_db_item, index_built_to"),
        (status = 400, body = ErrorBody)))]
pub async fn signal_type_index(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SignalTypeQuery>,
) -> ApiResult<Json<Value>> {
    let types = selected_types(&state, query.signal_type.as_deref())?;
    let stats = state.store.signal_type_stats().await.map_err(store_error)?;
    let current_seq = state.store.current_seq().await.map_err(store_error)?;
    let applied = state.matcher.applied_seq();
    let ready = state.matcher.is_ready();
    let index = state.matcher.index_status();
    let mut out = Map::new();
    for st in types {
        let stat = stats.iter().find(|s| s.signal_type == st.name());
        let db_size = stat.map(|s| s.count).unwrap_or(0);
        let index_size = index
            .iter()
            .find(|t| t.signal_type == st.name())
            .map_or(0, |t| t.size as i64);
        out.insert(
            st.name().to_owned(),
            json!({
                "db_size": db_size,
                "index_size": index_size,
                "index_out_of_date": !ready || applied < current_seq,
                "newest_db_item": current_seq,
                "index_built_to": if ready { applied } else { -1 },
            }),
        );
    }
    Ok(Json(Value::Object(out)))
}

/// Installed content types.
#[utoipa::path(get, path = "/c/content_type", tag = "curator",
    responses((status = 200, description = "`[{\"name\", \"enabled\": true}]`")))]
pub async fn content_types_list(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        state
            .hasher
            .content_types()
            .into_iter()
            .map(|c| json!({"name": c, "enabled": true}))
            .collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// Exchanges

fn exchange_api(name: &str) -> Option<&'static dyn omm_exchange::ExchangeApi> {
    omm_exchange::api_by_name(name)
}

/// Names of the installed exchange APIs.
#[utoipa::path(get, path = "/c/exchanges/apis", tag = "curator",
    responses((status = 200, body = Vec<String>)))]
pub async fn exchange_apis() -> Json<Vec<String>> {
    Json(
        omm_exchange::all_apis()
            .iter()
            .map(|a| a.name().to_owned())
            .collect(),
    )
}

async fn credential_status(
    state: &AppState,
    api: &dyn omm_exchange::ExchangeApi,
) -> ApiResult<Value> {
    let has = state
        .store
        .has_api_credentials(api.name())
        .await
        .map_err(store_error)?;
    Ok(json!({
        "supports_authentification": api.credentials_schema().is_some(),
        "has_set_authentification": has,
    }))
}

/// Whether an exchange API takes credentials and whether they are set.
#[utoipa::path(get, path = "/c/exchanges/api/{api_name}", tag = "curator",
    params(("api_name" = String, Path, description = "Exchange API")),
    responses((status = 200, description = "`{supports_authentification, has_set_authentification}`"),
        (status = 400, body = ErrorBody)))]
pub async fn exchange_api_get(
    State(state): State<AppState>,
    ApiPath(api_name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let api = exchange_api(&api_name)
        .ok_or_else(|| ApiError::bad_request(format!("no such Exchange API '{api_name}'")))?;
    Ok(Json(credential_status(&state, api).await?))
}

/// Sets (`{"credential_json": {...}}`) or clears (`{}`) the credentials of an exchange API.
#[utoipa::path(post, path = "/c/exchanges/api/{api_name}", tag = "curator",
    params(("api_name" = String, Path, description = "Exchange API")),
    request_body(content = Object, description = "`{\"credential_json\": object | null}`"),
    responses((status = 200, description = "`{supports_authentification, has_set_authentification}`"),
        (status = 400, body = ErrorBody)))]
pub async fn exchange_api_set(
    State(state): State<AppState>,
    ApiPath(api_name): ApiPath<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let api = exchange_api(&api_name)
        .ok_or_else(|| ApiError::bad_request(format!("no such Exchange API '{api_name}'")))?;
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&body) else {
        return Err(ApiError::bad_request(
            "this endpoint expects a json object payload",
        ));
    };
    match obj.get("credential_json") {
        None | Some(Value::Null) => {}
        Some(Value::Object(creds)) if creds.is_empty() => {
            state
                .store
                .set_api_credentials(&api_name, None)
                .await
                .map_err(store_error)?;
        }
        Some(creds @ Value::Object(_)) => {
            if api.credentials_schema().is_none() {
                return Err(ApiError::bad_request(format!(
                    "Exchange API '{api_name}' does not take credentials"
                )));
            }
            let parsed = api
                .parse_credentials(creds)
                .map_err(|e| ApiError::bad_request(format!("Invalid credentials: {e}")))?;
            state
                .store
                .set_api_credentials(&api_name, Some(&parsed.to_storage_json()))
                .await
                .map_err(store_error)?;
        }
        Some(_) => return Err(ApiError::bad_request("credential_json must be an object")),
    }
    Ok(Json(credential_status(&state, api).await?))
}

/// Config and credential schemas of an exchange API.
#[utoipa::path(get, path = "/c/exchanges/api/{api_name}/schema", tag = "curator",
    params(("api_name" = String, Path, description = "Exchange API")),
    responses((status = 200, description = "`{config_schema, credentials_schema}`"),
        (status = 404, body = ErrorBody)))]
pub async fn exchange_api_schema(ApiPath(api_name): ApiPath<String>) -> ApiResult<Json<Value>> {
    let api = exchange_api(&api_name)
        .ok_or_else(|| ApiError::not_found(format!("Exchange API '{api_name}' not found")))?;
    Ok(Json(json!({
        "config_schema": api.config_schema(),
        "credentials_schema": api.credentials_schema(),
    })))
}

/// Names of the configured exchanges.
#[utoipa::path(get, path = "/c/exchanges", tag = "curator",
    responses((status = 200, body = Vec<String>)))]
pub async fn exchanges_list(State(state): State<AppState>) -> ApiResult<Json<Vec<String>>> {
    let list = state.store.list_exchanges().await.map_err(store_error)?;
    Ok(Json(list.into_iter().map(|x| x.name).collect()))
}

fn exchange_json(x: &omm_store::Exchange) -> Value {
    let mut out = match &x.config {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    out.insert("name".into(), json!(x.name));
    out.insert("api".into(), json!(x.api));
    out.insert("enabled".into(), json!(x.enabled));
    Value::Object(out)
}

/// Creates an exchange and its bank: `{"bank": NAME, "api": API, "api_json"?: {...}}`.
#[utoipa::path(post, path = "/c/exchanges", tag = "curator",
    request_body(content = Object, description = "`{\"bank\", \"api\", \"api_json\"?}`"),
    responses((status = 201, description = "`{\"message\": \"Created successfully\"}`"),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn exchange_create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request("Request body must be a JSON object"));
    };
    let name = match obj.get("bank") {
        None | Some(Value::Null) => return Err(ApiError::bad_request("bank is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "Field `bank` must match /^[A-Z0-9_]+$/",
            ))
        }
    };
    if omm_store::validate_bank_name(&name).is_err() {
        return Err(ApiError::bad_request(
            "Field `bank` must match /^[A-Z_][A-Z0-9_]*$/",
        ));
    }
    let api_json = match obj.get("api_json") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::bad_request("Field `api_json` must be object")),
    };
    let api_name = match obj.get("api") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ApiError::bad_request("Field `api_type` is required")),
    };
    let api = exchange_api(&api_name)
        .ok_or_else(|| ApiError::bad_request(format!("No such exchange type '{api_name}'")))?;
    let enabled = match api_json.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Failed to parse `api_json` - enabled must be a boolean",
            ))
        }
    };
    let config = api
        .normalize_config(&Value::Object(api_json))
        .map_err(|e| ApiError::bad_request(format!("Failed to parse `api_json` - {e}")))?;
    state
        .store
        .create_exchange(&omm_store::NewExchange {
            name,
            api: api_name,
            enabled,
            config,
        })
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Created successfully"})),
    ))
}

/// One exchange's config.
#[utoipa::path(get, path = "/c/exchange/{exchange_name}", tag = "curator",
    params(("exchange_name" = String, Path, description = "Exchange")),
    responses((status = 200, description = "`{name, api, enabled, ...}`"), (status = 404, body = ErrorBody)))]
pub async fn exchange_get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let x = get_exchange(&state, &name).await?;
    Ok(Json(exchange_json(&x)))
}

async fn get_exchange(state: &AppState, name: &str) -> ApiResult<omm_store::Exchange> {
    state.store.get_exchange(name).await.map_err(|e| match e {
        omm_store::StoreError::NotFound { .. } => {
            ApiError::not_found(format!("Exchange '{name}' not found"))
        }
        other => store_error(other),
    })
}

/// Body of `PUT /c/exchange/{exchange_name}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateExchange {
    /// Fetching on or off.
    pub enabled: Option<bool>,
}

/// Enables or disables an exchange; returns its config.
#[utoipa::path(put, path = "/c/exchange/{exchange_name}", tag = "curator",
    params(("exchange_name" = String, Path, description = "Exchange")), request_body = UpdateExchange,
    responses((status = 200, description = "`{name, api, enabled, ...}`"), (status = 404, body = ErrorBody)))]
pub async fn exchange_update(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateExchange>,
) -> ApiResult<Json<Value>> {
    get_exchange(&state, &name).await?;
    let x = state
        .store
        .update_exchange(
            &name,
            &omm_store::ExchangeUpdate {
                enabled: body.enabled,
                config: None,
            },
        )
        .await
        .map_err(store_error)?;
    Ok(Json(exchange_json(&x)))
}

/// Deletes an exchange with its bank and everything fetched (200 also when unknown).
#[utoipa::path(delete, path = "/c/exchange/{exchange_name}", tag = "curator",
    params(("exchange_name" = String, Path, description = "Exchange")),
    responses((status = 200, description = "`{\"message\": \"Exchange deleted\"}`")))]
pub async fn exchange_delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    state
        .store
        .delete_exchange(&name)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"message": "Exchange deleted"})))
}

/// Fetch status of an exchange.
#[utoipa::path(get, path = "/c/exchange/{exchange_name}/status", tag = "curator",
    params(("exchange_name" = String, Path, description = "Exchange")),
    responses((status = 200, description = "FetchStatus"), (status = 404, body = ErrorBody)))]
pub async fn exchange_status(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    get_exchange(&state, &name).await?;
    let s = state.store.fetch_status(&name).await.map_err(store_error)?;
    Ok(Json(json!({
        "checkpoint_ts": s.checkpoint_ts,
        "running_fetch_start_ts": s.running_since,
        "last_fetch_complete_ts": s.last_complete_ts,
        "last_fetch_succeeded": s.last_succeeded,
        "up_to_date": s.up_to_date,
        "fetched_items": s.item_count,
        "last_error": s.last_error,
    })))
}
