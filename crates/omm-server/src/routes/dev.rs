//! `/dev`: development helpers, only when not in production mode.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use rand::Rng;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::curator::store_error;
use crate::state::AppState;

/// Creates exchange `SEED_SAMPLE` (API `sample`) and its bank.
#[utoipa::path(post, path = "/dev/setup_sample_example", tag = "dev",
    responses((status = 201, description = "Created"), (status = 409, body = ErrorBody)))]
pub async fn setup_sample_example(
    State(state): State<AppState>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let api = omm_exchange::api_by_name("sample")
        .ok_or_else(|| ApiError::internal("the sample exchange API is not installed"))?;
    let config = api
        .normalize_config(&json!({}))
        .map_err(ApiError::internal)?;
    state
        .store
        .create_exchange(&omm_store::NewExchange {
            name: "SEED_SAMPLE".into(),
            api: "sample".into(),
            enabled: true,
            config,
        })
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Created exchange SEED_SAMPLE"})),
    ))
}

/// Contents per seeded bank.
const SEED_CONTENTS: usize = 5000;

/// Creates `SEED_BANK_0` and `SEED_BANK_1`, each with 5,000 random contents alternating PDQ
/// and MD5 signals.
#[utoipa::path(post, path = "/dev/seed_banks", tag = "dev",
    responses((status = 201, description = "Seeded"), (status = 409, body = ErrorBody)))]
pub async fn seed_banks(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<Value>)> {
    for b in 0..2 {
        let name = format!("SEED_BANK_{b}");
        state
            .store
            .create_bank(&omm_store::NewBank {
                name: name.clone(),
                enabled_ratio: 1.0,
            })
            .await
            .map_err(store_error)?;
        for i in 0..SEED_CONTENTS {
            let (signal_type, bytes) = if i % 2 == 0 {
                ("pdq", 32)
            } else {
                ("video_md5", 16)
            };
            let value: String = {
                let mut rng = rand::thread_rng();
                (0..bytes)
                    .map(|_| format!("{:02x}", rng.gen::<u8>()))
                    .collect()
            };
            let signals = BTreeMap::from([(signal_type.to_owned(), value)]);
            state
                .store
                .create_content(&name, &omm_store::NewContent::with_signals(signals))
                .await
                .map_err(store_error)?;
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": "Seeded SEED_BANK_0 and SEED_BANK_1"})),
    ))
}
