//! `/m`: lookups against the in-memory index, index status, hash comparison.

use std::collections::BTreeMap;

use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{flexible_bool, ApiJson, ApiQuery};
use crate::routes::curator::{selected_types, store_error};
use crate::state::AppState;
use crate::upload::{hash_upload, hash_url, multipart_rejection, read_upload};
use omm_matcher::{LookupError, LookupOptions, Match, RawLookupOptions};
use omm_signals::SignalType;

/// A signal type that exists and is enabled, or Open Media Match's 400.
fn enabled_type(state: &AppState, name: &str) -> Result<SignalType, ApiError> {
    let st = state
        .installed_signal_type(name)
        .ok_or_else(|| ApiError::bad_request(format!("No such SignalType '{name}'")))?;
    if !state.signal_type_enabled(name) {
        return Err(ApiError::bad_request(format!(
            "SignalType '{name}' is not enabled"
        )));
    }
    Ok(st)
}

fn canonical(st: SignalType, value: &str) -> Result<String, ApiError> {
    st.validate(value)
        .map_err(|e| ApiError::bad_request(format!("invalid signal: {e}")))
}

/// The API error of a matcher refusal. The server validated the type and value already, so
/// only readiness (or a race with a ratio change) can get here.
fn lookup_error(e: LookupError) -> ApiError {
    match e {
        LookupError::NotReady => ApiError::unavailable("index not yet ready"),
        LookupError::UnknownSignalType(_)
        | LookupError::SignalTypeDisabled(_)
        | LookupError::InvalidSignal(_) => ApiError::bad_request(e.to_string()),
    }
}

fn distance_text(st: SignalType, distance: u32) -> String {
    if st.is_exact() {
        "-".to_owned()
    } else {
        distance.to_string()
    }
}

fn bank_list(banks: Option<&str>) -> Option<Vec<String>> {
    banks.map(|b| b.split(',').map(str::to_owned).collect())
}

/// Query of `GET /m/raw_lookup`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RawLookupQuery {
    /// The hash.
    pub signal: Option<String>,
    /// Its signal type.
    pub signal_type: Option<String>,
    /// Comma-separated bank names to restrict to.
    pub banks: Option<String>,
    /// Return `{bank_content_id, distance}` objects instead of ids.
    #[serde(default, deserialize_with = "flexible_bool")]
    #[param(value_type = Option<bool>)]
    pub include_distance: Option<bool>,
}

/// Index hits for a hash, without enable checks.
#[utoipa::path(get, path = "/m/raw_lookup", tag = "matcher", params(RawLookupQuery),
    responses((status = 200, description = "`{\"matches\": [...]}`"), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn raw_lookup(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RawLookupQuery>,
) -> ApiResult<Json<Value>> {
    let (Some(signal), Some(signal_type)) = (q.signal.as_deref(), q.signal_type.as_deref()) else {
        return Err(ApiError::unprocessable(
            "signal and signal_type: Field required",
        ));
    };
    let st = enabled_type(&state, signal_type)?;
    let value = canonical(st, signal)?;
    let options = RawLookupOptions {
        banks: bank_list(q.banks.as_deref()),
        max_distance: None,
    };
    let hits = state
        .matcher
        .raw_lookup(st.name(), &value, &options)
        .map_err(lookup_error)?;
    let matches: Vec<Value> = if q.include_distance.unwrap_or(false) {
        hits.iter()
            .map(|h| json!({"bank_content_id": h.content_id, "distance": distance_text(st, h.distance)}))
            .collect()
    } else {
        hits.iter().map(|h| json!(h.content_id)).collect()
    };
    Ok(Json(json!({ "matches": matches })))
}

/// Query of `GET /m/lookup`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LookupQuery {
    /// The hash (with `signal_type`).
    pub signal: Option<String>,
    /// Its signal type.
    pub signal_type: Option<String>,
    /// URL of media to hash and look up (needs the hasher role).
    pub url: Option<String>,
    /// Content type of the URL's media.
    pub content_type: Option<String>,
    /// Signal types to compute from the URL.
    pub types: Option<String>,
    /// Comma-separated bank names to restrict to.
    pub banks: Option<String>,
    /// Seed of the coin flip (deterministic results).
    pub seed: Option<String>,
    /// Skip the coin flip (banks at ratio 0 match too).
    #[serde(default, deserialize_with = "flexible_bool")]
    #[param(value_type = Option<bool>)]
    pub bypass_coinflip: Option<bool>,
    /// Add each match's note, metadata and exchange provenance (reads the store).
    #[serde(default, deserialize_with = "flexible_bool")]
    #[param(value_type = Option<bool>)]
    pub detailed: Option<bool>,
}

/// Query of `POST /m/lookup`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LookupUploadQuery {
    /// Signal types to compute.
    pub types: Option<String>,
    /// Comma-separated bank names to restrict to.
    pub banks: Option<String>,
    /// Seed of the coin flip.
    pub seed: Option<String>,
    /// Skip the coin flip.
    #[serde(default, deserialize_with = "flexible_bool")]
    #[param(value_type = Option<bool>)]
    pub bypass_coinflip: Option<bool>,
    /// Add each match's note, metadata and exchange provenance (reads the store).
    #[serde(default, deserialize_with = "flexible_bool")]
    #[param(value_type = Option<bool>)]
    pub detailed: Option<bool>,
}

async fn bank_map(
    state: &AppState,
    st: SignalType,
    hits: Vec<Match>,
    detailed: bool,
) -> ApiResult<Value> {
    let details = if detailed && !hits.is_empty() {
        let ids: Vec<i64> = hits.iter().map(|h| h.content_id).collect();
        state
            .store
            .get_contents(&ids)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|c| (c.id, c))
            .collect::<BTreeMap<_, _>>()
    } else {
        BTreeMap::new()
    };
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for h in hits {
        let mut m =
            json!({"bank_content_id": h.content_id, "distance": distance_text(st, h.distance)});
        if let Some(c) = details.get(&h.content_id) {
            m["metadata"] = c.metadata.clone().unwrap_or(Value::Null);
            m["note"] = json!(c.note);
            m["exchange"] = match &c.provenance {
                Some(p) => json!({
                    "name": p.exchange_name,
                    "record_key": p.record_key,
                    "record": p.record_metadata,
                }),
                None => Value::Null,
            };
        }
        out.entry(h.bank_name.to_string()).or_default().push(m);
    }
    Ok(json!(out))
}

/// The lookup options shared by every signal of one request.
fn lookup_options(banks: Option<&str>, seed: Option<&str>, bypass: bool) -> LookupOptions {
    LookupOptions {
        seed: seed.map(str::to_owned),
        bypass_coinflip: bypass,
        banks: bank_list(banks),
        max_distance: None,
    }
}

/// Looks up each signal; the matcher draws one coin per signal type (per lookup call).
async fn lookup_signals(
    state: &AppState,
    signals: &BTreeMap<String, String>,
    options: &LookupOptions,
    detailed: bool,
) -> ApiResult<Map<String, Value>> {
    let mut out = Map::new();
    for (name, value) in signals {
        let st = enabled_type(state, name)?;
        let canonical = canonical(st, value)?;
        let hits = state
            .matcher
            .lookup(st.name(), &canonical, options)
            .map_err(lookup_error)?;
        out.insert(name.clone(), bank_map(state, st, hits, detailed).await?);
    }
    Ok(out)
}

/// Filtered lookup by hash (`signal` + `signal_type`) or by URL.
#[utoipa::path(get, path = "/m/lookup", tag = "matcher", params(LookupQuery),
    responses((status = 200, description = "Bank name to matches (by hash), or signal type to that (by URL)"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn lookup_get(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LookupQuery>,
) -> ApiResult<Json<Value>> {
    let detailed = q.detailed.unwrap_or(false);
    let options = lookup_options(
        q.banks.as_deref(),
        q.seed.as_deref(),
        q.bypass_coinflip.unwrap_or(false),
    );
    if let Some(url) = q.url.as_deref() {
        if !state.config.role_hasher {
            return Err(ApiError::forbidden("Hashing is disabled, missing role"));
        }
        let signals = hash_url(&state, url, q.content_type.as_deref(), q.types.as_deref()).await?;
        let out = lookup_signals(&state, &signals, &options, detailed).await?;
        if let Some(st) = q.signal_type.as_deref() {
            return Ok(Json(out.get(st).cloned().unwrap_or_else(|| json!({}))));
        }
        return Ok(Json(Value::Object(out)));
    }
    let (Some(signal), Some(signal_type)) = (q.signal.as_deref(), q.signal_type.as_deref()) else {
        return Err(ApiError::bad_request(
            "Either url or both signal and signal_type are required",
        ));
    };
    let one = BTreeMap::from([(signal_type.to_owned(), signal.to_owned())]);
    let mut out = lookup_signals(&state, &one, &options, detailed).await?;
    Ok(Json(out.remove(signal_type).unwrap_or_else(|| json!({}))))
}

/// Hashes an upload (file under `photo`/`video`) and looks up each signal.
#[utoipa::path(post, path = "/m/lookup", tag = "matcher", params(LookupUploadQuery),
    request_body(content_type = "multipart/form-data", description = "One file under a field named after its content type"),
    responses((status = 200, description = "Signal type to bank name to matches"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn lookup_post(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<LookupUploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<Value>> {
    if !state.config.role_hasher {
        return Err(ApiError::forbidden("Hashing is disabled, missing role"));
    }
    let multipart = multipart.map_err(multipart_rejection)?;
    let _permit = state.upload_permit().await?;
    let upload = read_upload(&state, multipart).await?;
    let signals = hash_upload(&state, &upload, q.types.as_deref()).await?;
    let options = lookup_options(
        q.banks.as_deref(),
        q.seed.as_deref(),
        q.bypass_coinflip.unwrap_or(false),
    );
    let out = lookup_signals(&state, &signals, &options, q.detailed.unwrap_or(false)).await?;
    Ok(Json(Value::Object(out)))
}

/// Query of `GET /m/index/status`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct IndexStatusQuery {
    /// One signal type (default: all).
    pub signal_type: Option<String>,
}

/// State of the in-memory index per signal type.
#[utoipa::path(get, path = "/m/index/status", tag = "matcher", params(IndexStatusQuery),
    responses((status = 200, description = "Per type: present, built_to (change-log seq), size"),
        (status = 400, body = ErrorBody)))]
pub async fn index_status(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<IndexStatusQuery>,
) -> ApiResult<Json<Value>> {
    let types = selected_types(&state, q.signal_type.as_deref())?;
    let ready = state.matcher.is_ready();
    let built_to = state.matcher.applied_seq();
    let status = state.matcher.index_status();
    let mut out = Map::new();
    for st in types {
        let entry = status
            .iter()
            .find(|t| t.signal_type == st.name())
            .filter(|_| ready);
        out.insert(
            st.name().to_owned(),
            match entry {
                Some(t) => json!({"present": true, "built_to": built_to, "size": t.size}),
                None => json!({"present": false, "built_to": -1, "size": 0}),
            },
        );
    }
    Ok(Json(Value::Object(out)))
}

/// Compares pairs of hashes: `{"<type>": [a, b]}` gives `{"<type>": [is_match, {"distance": d}]}`.
#[utoipa::path(post, path = "/m/compare", tag = "matcher",
    request_body(content = Object, description = "Signal type to a list of exactly two hashes"),
    responses((status = 200, description = "Signal type to [is_match, {distance}]"),
        (status = 400, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn compare(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let Value::Object(obj) = body else {
        return Err(ApiError::bad_request("Request input was not a dict"));
    };
    let mut out = Map::new();
    for (name, value) in &obj {
        let Value::Array(list) = value else {
            return Err(ApiError::bad_request(format!(
                "Comparison hashes for {name} was not a list"
            )));
        };
        if list.len() != 2 {
            return Err(ApiError::bad_request(
                "Comparison hash list length must be exactly 2",
            ));
        }
        let st = enabled_type(&state, name)?;
        let mut hashes = Vec::with_capacity(2);
        for item in list {
            let text = item.as_str().ok_or_else(|| {
                ApiError::bad_request(format!("Invalid {name} hash: not a string"))
            })?;
            hashes.push(
                st.validate(text)
                    .map_err(|e| ApiError::bad_request(format!("Invalid {name} hash: {e}")))?,
            );
        }
        let distance = st
            .distance(&hashes[0], &hashes[1])
            .map_err(|e| ApiError::bad_request(format!("Invalid {name} hash: {e}")))?;
        let is_match = distance <= st.default_threshold();
        out.insert(name.clone(), json!([is_match, {"distance": distance}]));
    }
    Ok(Json(Value::Object(out)))
}
