//! `/c/bank/<bank>/content/<id>/review`: review results (true / false positive) on matched
//! content, stored with who and when, and written back to the exchange the content came from
//! by the background review writer (`crate::reviews`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::routes::curator::store_error;
use crate::state::AppState;

/// A reviewer's opinion on a match.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Opinion {
    /// The content matched is what the bank says it is.
    TruePositive,
    /// The match was wrong.
    FalsePositive,
}

impl From<Opinion> for omm_store::ReviewOpinion {
    fn from(o: Opinion) -> Self {
        match o {
            Opinion::TruePositive => omm_store::ReviewOpinion::TruePositive,
            Opinion::FalsePositive => omm_store::ReviewOpinion::FalsePositive,
        }
    }
}

/// Body of `POST /c/bank/<bank>/content/<id>/review`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReview {
    /// `true_positive` or `false_positive`.
    pub opinion: Opinion,
    /// Who reviewed (free text, e.g. a user id; required, at most 255 characters).
    pub reviewer: String,
    /// Optional note (at most 4096 characters).
    pub note: Option<String>,
    /// The signal type that matched; by default the content's first signal type by name.
    /// This is the signal reported to the exchange.
    pub signal_type: Option<String>,
    /// With `false_positive`: also disable the content for good (`disable_until_ts = 0`), so
    /// it stops matching within a change-log poll. Default false: an opinion alone never
    /// changes matching.
    #[serde(default)]
    pub disable_matching: bool,
}

/// The write-back of a review to one exchange record.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteBack {
    /// Exchange name.
    pub exchange: String,
    /// Exchange API (`fb_threatexchange`, `ncmec`, ...).
    pub api: String,
    /// The exchange's record id.
    pub record_key: String,
    /// The signal reported (type and value).
    pub signal_type: String,
    /// The signal value reported.
    pub signal: String,
    /// `pending`, `delivered`, `failed` or `unsupported` (stored only).
    pub state: String,
    /// Attempts made so far.
    pub attempts: i64,
    /// Message of the last failed attempt.
    pub last_error: Option<String>,
    /// When the last attempt ended (Unix seconds).
    pub last_attempt_ts: Option<i64>,
    /// When the next attempt is due (Unix seconds); null when no attempt will be made.
    pub next_attempt_ts: Option<i64>,
    /// When the exchange accepted it (Unix seconds).
    pub delivered_ts: Option<i64>,
}

/// A stored review.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewResponse {
    /// Review id.
    pub id: i64,
    /// Bank name.
    pub bank: String,
    /// Content id.
    pub content_id: i64,
    /// `true_positive` or `false_positive`.
    pub opinion: String,
    /// Who reviewed.
    pub reviewer: String,
    /// The note, if any.
    pub note: Option<String>,
    /// The signal type reviewed (null for content without signals).
    pub signal_type: Option<String>,
    /// Whether this review disabled the content.
    pub disable_matching: bool,
    /// When (Unix seconds).
    pub created_ts: i64,
    /// One entry per exchange record behind the content; empty for local content.
    pub write_back: Vec<WriteBack>,
}

fn review_json(bank: &str, r: omm_store::Review) -> ReviewResponse {
    ReviewResponse {
        id: r.id,
        bank: bank.to_string(),
        content_id: r.content_id,
        opinion: r.opinion.as_str().to_string(),
        reviewer: r.reviewer,
        note: r.note,
        signal_type: r.signal_type,
        disable_matching: r.disabled_matching,
        created_ts: r.created_at,
        write_back: r
            .deliveries
            .into_iter()
            .map(|d| WriteBack {
                exchange: d.exchange_name,
                api: d.exchange_api,
                record_key: d.record_key,
                signal_type: d.signal_type,
                signal: d.signal_value,
                state: d.state.as_str().to_string(),
                attempts: d.attempts,
                last_error: d.last_error,
                last_attempt_ts: d.last_attempt_at,
                next_attempt_ts: d.next_attempt_at,
                delivered_ts: d.delivered_at,
            })
            .collect(),
    }
}

/// Names of the exchange APIs that accept review write-back.
pub fn write_back_apis() -> Vec<String> {
    omm_exchange::all_apis()
        .iter()
        .filter(|a| a.accepts_reviews())
        .map(|a| a.name().to_string())
        .collect()
}

/// Records a review of a content item (usually one a lookup matched).
#[utoipa::path(post, path = "/c/bank/{bank_name}/content/{content_id}/review", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"),
        ("content_id" = i64, Path, description = "Content id")),
    request_body = CreateReview,
    responses((status = 201, body = ReviewResponse),
        (status = 400, description = "Invalid review", body = ErrorBody),
        (status = 404, description = "Unknown bank or content", body = ErrorBody),
        (status = 422, description = "Body of the wrong shape", body = ErrorBody)))]
pub async fn review_create(
    State(state): State<AppState>,
    ApiPath((bank_name, content_id)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<CreateReview>,
) -> ApiResult<(StatusCode, Json<ReviewResponse>)> {
    if let Some(t) = &body.signal_type {
        if state.installed_signal_type(t).is_none() {
            return Err(ApiError::bad_request(format!(
                "signal type '{t}' doesn't exist"
            )));
        }
    }
    let review = omm_store::NewReview {
        opinion: body.opinion.into(),
        note: body.note.filter(|n| !n.trim().is_empty()),
        reviewer: body.reviewer,
        signal_type: body.signal_type,
        disable_matching: body.disable_matching,
        write_back_apis: write_back_apis(),
    };
    let stored = state
        .store
        .create_review(&bank_name, content_id, &review)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(review_json(&bank_name, stored))))
}

/// The reviews of a content item, oldest first, with the state of their write-back.
#[utoipa::path(get, path = "/c/bank/{bank_name}/content/{content_id}/review", tag = "curator",
    params(("bank_name" = String, Path, description = "Bank name"),
        ("content_id" = i64, Path, description = "Content id")),
    responses((status = 200, body = Vec<ReviewResponse>),
        (status = 404, description = "Unknown bank or content", body = ErrorBody)))]
pub async fn reviews_list(
    State(state): State<AppState>,
    ApiPath((bank_name, content_id)): ApiPath<(String, i64)>,
) -> ApiResult<Json<Vec<ReviewResponse>>> {
    let reviews = state
        .store
        .list_reviews(&bank_name, content_id)
        .await
        .map_err(store_error)?;
    Ok(Json(
        reviews
            .into_iter()
            .map(|r| review_json(&bank_name, r))
            .collect(),
    ))
}
