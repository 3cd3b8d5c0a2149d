//! `stop_ncii`: the StopNCII.org hash API.
//!
//! Wire protocol (every request carries `x-functions-key` and `Ocp-Apim-Subscription-Key`):
//! * `GET {base}/FetchHashes?startTimestamp=<int>&pageSize=<n>[&nextPageToken=<token>]` →
//!   `{"count", "nextSetTimestamp", "nextPageToken", "hasMoreRecords", "hashRecords": [...]}`.
//!   Pages of one set share `startTimestamp` and follow `nextPageToken` while `hasMoreRecords`;
//!   the next set starts at the last page's `nextSetTimestamp`. Page tokens are short-lived: a
//!   resumed fetch whose token is older than 10 minutes restarts the set (re-applying records is
//!   harmless).
//! * `POST {base}/SubmitFeedback` `{"count": 1, "hashFeedbacks": [{"hashValue", "feedbackValue",
//!   "tags"}]}` with the SubmitFeedback function key: review write-back (true positive →
//!   `Blocked`, false positive → `NotBlocked`).
//!
//! Records: `ImagePDQ` → `pdq`, `VideoMD5` → `video_md5`, `URL` → `url`, `Text` → `raw_text`;
//! other types carry no usable signal. `hashStatus` `Withdrawn` or `Deleted` → delete (upstream
//! compares the wrong field and never deletes). Unknown enum values keep the record (upstream
//! drops it). Record id: `"<StopNCII signalType> <hash value>"`. Metadata: `{"hash_status",
//! "last_modified", "case_numbers", "feedbacks": [{"source", "feedback_value", "tags"}]}`.
//! The checkpoint goes stale after 30 days without a fetch (then a full refetch).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{
    check_credential_keys, config_to_json, expect_credentials, optional_str, parse_typed_config,
    required_str, BatchStream, Credentials, Exchange, ExchangeApi, ExchangeSetup, Secret,
};
use crate::error::ExchangeError;
use crate::http::{validate_base_url, HttpClient, Request};
use crate::model::{
    new_listing_id, now_unix, BatchBuilder, Checkpoint, ListingProgress, Record, Review, Signal,
    Verdict,
};
use crate::schema::{base_url_field, FieldSchema, FieldType, ObjectSchema};
use crate::signal_types::{names, normalize};

/// API name.
pub const NAME: &str = "stop_ncii";
/// Production base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.stopncii.org/v1";

const STALE_AFTER_SECS: i64 = 30 * 24 * 3600;
const PAGE_TOKEN_TTL_SECS: i64 = 600;
/// Upstream's first `startTimestamp`.
const FIRST_START_TIMESTAMP: i64 = 10;
const DEFAULT_PAGE_SIZE: u32 = 800;

/// Config of `stop_ncii`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopNciiConfig {
    /// Base URL override (wins over the credentials' `base_url_override`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Hashes per page (1..=10000, default 800).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
}

/// The `stop_ncii` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct StopNciiApi;

impl StopNciiApi {
    fn config(config: &Value) -> Result<StopNciiConfig, ExchangeError> {
        let mut cfg: StopNciiConfig = parse_typed_config(config)?;
        cfg.base_url = cfg.base_url.as_deref().map(validate_base_url).transpose()?;
        if cfg.page_size.is_some_and(|p| p == 0 || p > 10_000) {
            return Err(ExchangeError::InvalidConfig(
                "page_size must be 1..=10000".into(),
            ));
        }
        Ok(cfg)
    }
}

impl ExchangeApi for StopNciiApi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![
                base_url_field(),
                FieldSchema::optional(
                    "page_size",
                    FieldType::Number,
                    json!(DEFAULT_PAGE_SIZE),
                    "Hashes per page",
                ),
            ],
        }
    }

    fn credentials_schema(&self) -> Option<ObjectSchema> {
        Some(ObjectSchema {
            fields: vec![
                FieldSchema::required(
                    "fetch_function_key",
                    FieldType::String,
                    "x-functions-key of FetchHashes",
                )
                .secret(),
                FieldSchema::required(
                    "subscription_key",
                    FieldType::String,
                    "Ocp-Apim-Subscription-Key",
                )
                .secret(),
                FieldSchema::optional(
                    "base_url_override",
                    FieldType::String,
                    Value::Null,
                    "Base URL override",
                ),
                FieldSchema::optional(
                    "submit_feedback_function_key",
                    FieldType::String,
                    Value::Null,
                    "x-functions-key of SubmitFeedback (needed to write review results back)",
                )
                .secret(),
            ],
        })
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn parse_credentials(&self, creds: &Value) -> Result<Credentials, ExchangeError> {
        check_credential_keys(
            creds,
            &[
                "fetch_function_key",
                "subscription_key",
                "base_url_override",
                "submit_feedback_function_key",
            ],
        )?;
        let base_url_override = optional_str(creds, "base_url_override")?
            .map(|u| {
                validate_base_url(&u).map_err(|e| ExchangeError::InvalidCredentials(e.to_string()))
            })
            .transpose()?;
        Ok(Credentials::StopNcii {
            fetch_function_key: Secret::new(required_str(creds, "fetch_function_key")?),
            subscription_key: Secret::new(required_str(creds, "subscription_key")?),
            base_url_override,
            submit_feedback_function_key: optional_str(creds, "submit_feedback_function_key")?
                .map(Secret::new),
        })
    }

    fn accepts_reviews(&self) -> bool {
        true
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let cfg = Self::config(&setup.config)?;
        let Credentials::StopNcii {
            fetch_function_key,
            subscription_key,
            base_url_override,
            submit_feedback_function_key,
        } = expect_credentials(NAME, setup.credentials)?
        else {
            return Err(ExchangeError::MissingCredentials(NAME));
        };
        let base = cfg
            .base_url
            .or(base_url_override)
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        Ok(Arc::new(StopNciiExchange {
            inner: Arc::new(Inner {
                base,
                page_size: cfg.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
                fetch_key: fetch_function_key,
                subscription_key,
                feedback_key: submit_feedback_function_key,
                http: HttpClient::new(setup.http)?,
            }),
        }))
    }
}

struct Inner {
    base: String,
    page_size: u32,
    fetch_key: Secret,
    subscription_key: Secret,
    feedback_key: Option<Secret>,
    http: HttpClient,
}

/// An opened `stop_ncii` exchange.
pub struct StopNciiExchange {
    inner: Arc<Inner>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StopNciiState {
    /// `startTimestamp` of the set being fetched (or of the next set when `next_page_token` is None).
    start_timestamp: i64,
    /// Token of the next page of the current set.
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FetchPage {
    next_set_timestamp: i64,
    #[serde(default)]
    next_page_token: Option<String>,
    #[serde(default)]
    has_more_records: bool,
    #[serde(default)]
    hash_records: Vec<HashRecord>,
}

#[derive(Deserialize)]
struct HashRecord {
    #[serde(rename = "lastModtimestamp", default)]
    last_modified: Option<i64>,
    #[serde(rename = "signalType")]
    signal_type: String,
    #[serde(rename = "hashValue")]
    hash_value: String,
    #[serde(rename = "hashStatus", default)]
    hash_status: Option<String>,
    #[serde(rename = "caseNumbers", default)]
    case_numbers: Option<Value>,
    #[serde(rename = "CSPFeedbacks", default)]
    feedbacks: Option<Vec<CspFeedback>>,
}

#[derive(Deserialize)]
struct CspFeedback {
    #[serde(default)]
    source: Option<String>,
    #[serde(rename = "feedbackValue", default)]
    feedback_value: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

fn our_signal_type(stopncii_type: &str) -> Option<&'static str> {
    match stopncii_type {
        "ImagePDQ" => Some(names::PDQ),
        "VideoMD5" => Some(names::VIDEO_MD5),
        "URL" => Some(names::URL),
        "Text" => Some(names::RAW_TEXT),
        _ => None,
    }
}

fn convert(record: &HashRecord, batch: &mut BatchBuilder) {
    let our_type = our_signal_type(&record.signal_type);
    let value = our_type
        .and_then(|t| normalize(t, &record.hash_value))
        .unwrap_or_else(|| record.hash_value.trim().to_string());
    let id = format!("{} {}", record.signal_type, value);
    let withdrawn = matches!(record.hash_status.as_deref(), Some("Withdrawn" | "Deleted"));
    let signal = our_type.and_then(|t| normalize(t, &record.hash_value).map(|v| Signal::new(t, v)));
    match signal {
        Some(signal) if !withdrawn => {
            let feedbacks: Vec<Value> = record
                .feedbacks
                .iter()
                .flatten()
                .map(|f| json!({"source": f.source, "feedback_value": f.feedback_value, "tags": f.tags.clone().unwrap_or_default()}))
                .collect();
            batch.upsert(
                id,
                Record {
                    signals: vec![signal],
                    metadata: json!({
                        "hash_status": record.hash_status,
                        "last_modified": record.last_modified,
                        "case_numbers": record.case_numbers,
                        "feedbacks": feedbacks,
                    }),
                },
            );
        }
        _ => batch.delete(id),
    }
}

impl Inner {
    fn request(&self, url: String, key: &Secret) -> Request {
        Request::get(url)
            .header("x-functions-key", key.expose())
            .header("ocp-apim-subscription-key", self.subscription_key.expose())
    }

    async fn page(
        &self,
        start: i64,
        token: Option<&str>,
    ) -> Result<(FetchPage, String), ExchangeError> {
        let mut url = url::Url::parse(&format!("{}/FetchHashes", self.base))
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("startTimestamp", &start.to_string())
            .append_pair("pageSize", &self.page_size.to_string());
        if let Some(token) = token {
            url.query_pairs_mut().append_pair("nextPageToken", token);
        }
        let resp = self
            .http
            .send(&self.request(url.to_string(), &self.fetch_key))
            .await?;
        Ok((resp.json()?, resp.url))
    }
}

impl Exchange for StopNciiExchange {
    fn api(&self) -> &'static str {
        NAME
    }

    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let inner = self.inner.clone();
        Box::pin(async_stream::stream! {
            let now = now_unix();
            let resumed = checkpoint
                .as_ref()
                .filter(|cp| !cp.is_older_than(STALE_AFTER_SECS, now))
                .and_then(|cp| cp.state_for::<StopNciiState>(NAME).map(|s| (cp, s)));
            let (start, mut token, mut progress, listing_id) = match resumed {
                Some((cp, state)) => {
                    let token_fresh = !cp.is_older_than(PAGE_TOKEN_TTL_SECS, now);
                    let token = state.next_page_token.filter(|_| token_fresh);
                    (state.start_timestamp, token, cp.progress_ts, cp.listing_id)
                }
                None => (FIRST_START_TIMESTAMP, None, None, Some(new_listing_id())),
            };
            loop {
                let (page, url) = match inner.page(start, token.as_deref()).await {
                    Ok(p) => p,
                    Err(e) => { yield Err(e); return; }
                };
                let mut batch = BatchBuilder::default();
                for record in &page.hash_records {
                    convert(record, &mut batch);
                }
                let next_token = page.next_page_token.filter(|t| !t.is_empty());
                if page.has_more_records && next_token.is_none() {
                    yield Err(ExchangeError::malformed(&url, "hasMoreRecords without nextPageToken"));
                    return;
                }
                if page.has_more_records && next_token == token {
                    yield Err(ExchangeError::malformed(&url, "nextPageToken did not change"));
                    return;
                }
                let more = page.has_more_records;
                let state = if more {
                    StopNciiState { start_timestamp: start, next_page_token: next_token.clone() }
                } else {
                    // nextSetTimestamp can go backwards between pages: report progress
                    // monotonically, but resume from what the server asked for.
                    progress = Some(progress.map_or(page.next_set_timestamp, |p| p.max(page.next_set_timestamp)));
                    StopNciiState { start_timestamp: page.next_set_timestamp, next_page_token: None }
                };
                let listing = listing_id.map(|id| ListingProgress { listing_id: id, complete: !more });
                let cp = Checkpoint::new(NAME, progress, if more { listing_id } else { None }, &state);
                yield Ok(batch.finish(cp, listing));
                if !more {
                    return;
                }
                token = next_token;
            }
        })
    }

    fn report_review(
        &self,
        review: Review,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ExchangeError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let Some(key) = inner.feedback_key.clone() else {
                return Err(ExchangeError::InvalidCredentials(
                    "submit_feedback_function_key is needed to write reviews back".into(),
                ));
            };
            let feedback = match review.verdict {
                Verdict::TruePositive => "Blocked",
                Verdict::FalsePositive => "NotBlocked",
            };
            let body = json!({
                "count": 1,
                "hashFeedbacks": [{"hashValue": review.signal.value, "feedbackValue": feedback, "tags": []}],
            });
            let req = inner
                .request(format!("{}/SubmitFeedback", inner.base), &key)
                .with_method(reqwest::Method::POST, false)
                .body("application/json", body.to_string().into_bytes());
            inner.http.send(&req).await.map(|_| ())
        })
    }
}
