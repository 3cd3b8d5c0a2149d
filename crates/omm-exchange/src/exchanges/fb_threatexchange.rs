//! `fb_threatexchange`: Meta ThreatExchange, the Graph API `threat_updates` of a privacy group.
//!
//! Wire protocol:
//! * `GET {base}/{privacy_group}/threat_updates/?access_token=&limit=&fields=[&start_time=]` →
//!   `{"data": [update...], "paging": {"next": url}}`; pages follow `paging.next` until absent.
//!   An update has `id`, `indicator`, `type`, `last_updated` (epoch seconds), `should_delete`
//!   and `descriptors.data[]` (`id`, `owner{id}`, `status`, `tags`, `reactions`).
//! * `POST {base}/{descriptor_id}/?access_token=&reactions=<R>` (the same parameters also
//!   form-encoded in the body): review write-back on every descriptor of other apps (true
//!   positive → `HELPFUL`, false positive → `DISAGREE_WITH_TAGS`, the reactions this client
//!   reads back as opinions). If the record shows our app's opposite reaction, it is first
//!   withdrawn with `reactions_to_remove=<R>` in the same way.
//!
//! The access token is never stored: `paging.next` URLs are kept in checkpoints without it, and
//! are only followed on the base URL's origin. A fetch resumes `start_time` at the highest
//! `last_updated` stored (inclusive, so records sharing that second are re-read, not lost); within
//! a pass a checkpoint resumes at the next page for one hour, then restarts the pass.
//! Checkpoints go stale after 85 days (ThreatExchange keeps deletes for 90): then a full refetch.
//!
//! Records: id = the indicator id. `should_delete`, no descriptors, or no opinions → delete.
//! Types: `HASH_PDQ` → `pdq`, `HASH_VIDEO_MD5` (or `HASH_MD5` tagged `media_type_video`) →
//! `video_md5`, `HASH_VIDEO_SHA256` (or `HASH_SHA256` tagged `media_type_video`) →
//! `video_sha256`, `URI`/`RAW_URI` → `url`, `HASH_URL_MD5` → `url_md5`, `TEXT_STRING` →
//! `raw_text`, `TREND_QUERY` → `trend_query`, `HASH_PDQ_OCR` → `pdq_ocr`. Values are validated
//! (upstream does not). Metadata: `{"indicator_id", "indicator_type", "last_updated", "opinions":
//! [{"owner_app_id", "is_mine", "category", "tags", "descriptor_id"}]}` with category
//! `positive_class` (MALICIOUS or a HELPFUL reaction), `negative_class` (NON_MALICIOUS or
//! DISAGREE_WITH_TAGS) or `investigation_seed`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{
    check_credential_keys, config_to_json, expect_credentials, parse_typed_config, required_str,
    BatchStream, Credentials, Exchange, ExchangeApi, ExchangeSetup, Secret,
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
pub const NAME: &str = "fb_threatexchange";
/// Production base URL.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com/v21.0";

const STALE_AFTER_SECS: i64 = 85 * 24 * 3600;
const NEXT_URL_TTL_SECS: i64 = 3600;
const DEFAULT_PAGE_SIZE: u32 = 100;
const UPDATE_FIELDS: &str = "id,indicator,type,last_updated,should_delete,\
descriptors{id,reactions,my_reactions,owner{id},tags,status,added_on}";

/// Config of `fb_threatexchange`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FbThreatExchangeConfig {
    /// The privacy group id.
    pub privacy_group: u64,
    /// Base URL override (default the Graph API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Updates per page (`limit`, 1..=1000, default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
}

/// The `fb_threatexchange` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct FbThreatExchangeApi;

impl FbThreatExchangeApi {
    fn config(config: &Value) -> Result<FbThreatExchangeConfig, ExchangeError> {
        let mut cfg: FbThreatExchangeConfig = parse_typed_config(config)?;
        cfg.base_url = cfg.base_url.as_deref().map(validate_base_url).transpose()?;
        if cfg.page_size.is_some_and(|p| p == 0 || p > 1000) {
            return Err(ExchangeError::InvalidConfig(
                "page_size must be 1..=1000".into(),
            ));
        }
        Ok(cfg)
    }
}

/// The app id of a token `<app_id>|<secret>` (or `%7C`), if the token has that shape.
fn app_id_of(token: &str) -> Option<u64> {
    let (app, secret) = token.split_once('|').or_else(|| token.split_once("%7C"))?;
    let valid_app = app.len() >= 8 && app.bytes().all(|b| b.is_ascii_digit());
    let valid_secret = secret.len() >= 20
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid_app && valid_secret {
        app.parse().ok()
    } else {
        None
    }
}

impl ExchangeApi for FbThreatExchangeApi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![
                FieldSchema::required(
                    "privacy_group",
                    FieldType::Number,
                    "ThreatExchange privacy group id",
                ),
                base_url_field(),
                FieldSchema::optional(
                    "page_size",
                    FieldType::Number,
                    json!(DEFAULT_PAGE_SIZE),
                    "Updates per page",
                ),
            ],
        }
    }

    fn credentials_schema(&self) -> Option<ObjectSchema> {
        Some(ObjectSchema {
            fields: vec![FieldSchema::required(
                "api_token",
                FieldType::String,
                "App access token `<app_id>|<app_secret>`",
            )
            .secret()],
        })
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn parse_credentials(&self, creds: &Value) -> Result<Credentials, ExchangeError> {
        check_credential_keys(creds, &["api_token"])?;
        let token = required_str(creds, "api_token")?;
        if app_id_of(&token).is_none() {
            return Err(ExchangeError::InvalidCredentials(
                "api_token must look like `<app_id>|<app_secret>`".into(),
            ));
        }
        Ok(Credentials::FbThreatExchange {
            api_token: Secret::new(token),
        })
    }

    fn accepts_reviews(&self) -> bool {
        true
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let cfg = Self::config(&setup.config)?;
        let Credentials::FbThreatExchange { api_token } =
            expect_credentials(NAME, setup.credentials)?
        else {
            return Err(ExchangeError::MissingCredentials(NAME));
        };
        let app_id = app_id_of(api_token.expose()).ok_or_else(|| {
            ExchangeError::InvalidCredentials(
                "api_token must look like `<app_id>|<app_secret>`".into(),
            )
        })?;
        let base = cfg.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let origin = url::Url::parse(&base)
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?
            .origin();
        Ok(Arc::new(FbThreatExchange {
            inner: Arc::new(Inner {
                base,
                origin,
                privacy_group: cfg.privacy_group,
                page_size: cfg.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
                token: api_token,
                app_id,
                http: HttpClient::new(setup.http)?,
            }),
        }))
    }
}

struct Inner {
    base: String,
    origin: url::Origin,
    privacy_group: u64,
    page_size: u32,
    token: Secret,
    app_id: u64,
    http: HttpClient,
}

/// An opened `fb_threatexchange` exchange.
pub struct FbThreatExchange {
    inner: Arc<Inner>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TeState {
    /// `start_time` of the current pass (or of the next one when `next_url` is None).
    update_time: Option<i64>,
    /// Highest `last_updated` seen in the current pass.
    #[serde(default)]
    pass_max: Option<i64>,
    /// Next page of the current pass, without the access token.
    #[serde(default)]
    next_url: Option<String>,
}

#[derive(Deserialize)]
struct UpdatesPage {
    data: Vec<ThreatUpdate>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct ThreatUpdate {
    id: Value,
    #[serde(default)]
    indicator: Option<String>,
    #[serde(rename = "type", default)]
    indicator_type: Option<String>,
    last_updated: Value,
    #[serde(default)]
    should_delete: bool,
    #[serde(default)]
    descriptors: Option<DescriptorList>,
}

#[derive(Deserialize)]
struct DescriptorList {
    #[serde(default)]
    data: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    owner: Option<Owner>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    reactions: Option<Vec<Reaction>>,
}

#[derive(Deserialize)]
struct Owner {
    id: Value,
}

#[derive(Deserialize)]
struct Reaction {
    key: String,
    #[serde(default)]
    value: String,
}

/// A number or numeric string as i64/u64.
fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Tags as `{"data": [{"text"}]}` or an already-flattened list of strings.
fn tag_texts(tags: Option<&Value>) -> BTreeSet<String> {
    let items = match tags {
        Some(Value::Object(o)) => o
            .get("data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    items
        .iter()
        .filter_map(|t| match t {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("text").and_then(Value::as_str).map(str::to_string),
            _ => None,
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
struct Opinion {
    owner_app_id: u64,
    is_mine: bool,
    category: &'static str,
    tags: BTreeSet<String>,
    descriptor_id: Option<String>,
}

const POSITIVE: &str = "positive_class";
const NEGATIVE: &str = "negative_class";
const SEED: &str = "investigation_seed";

fn opinions(update: &ThreatUpdate, my_app_id: u64) -> Vec<Opinion> {
    let mut explicit: BTreeMap<u64, Opinion> = BTreeMap::new();
    let mut implicit: BTreeMap<u64, &'static str> = BTreeMap::new();
    for d in update.descriptors.iter().flat_map(|l| &l.data) {
        // Descriptors without a visible owner are a ThreatExchange visibility quirk: skip them.
        let Some(owner) = d.owner.as_ref().and_then(|o| as_u64(&o.id)) else {
            continue;
        };
        let category = match d.status.as_deref() {
            Some("MALICIOUS") => POSITIVE,
            Some("NON_MALICIOUS") => NEGATIVE,
            _ => SEED,
        };
        explicit.insert(
            owner,
            Opinion {
                owner_app_id: owner,
                is_mine: owner == my_app_id,
                category,
                tags: tag_texts(d.tags.as_ref()),
                descriptor_id: d.id.as_ref().and_then(as_id),
            },
        );
        for reaction in d.reactions.iter().flatten() {
            for app in reaction
                .value
                .split(',')
                .filter_map(|a| a.trim().parse::<u64>().ok())
            {
                match reaction.key.as_str() {
                    "HELPFUL" => {
                        implicit.insert(app, POSITIVE);
                    }
                    "DISAGREE_WITH_TAGS" if implicit.get(&app) != Some(&POSITIVE) => {
                        implicit.insert(app, NEGATIVE);
                    }
                    _ => {}
                }
            }
        }
    }
    let mut all: Vec<Opinion> = explicit.values().cloned().collect();
    for (app, category) in implicit {
        if !explicit.contains_key(&app) {
            all.push(Opinion {
                owner_app_id: app,
                is_mine: app == my_app_id,
                category,
                tags: BTreeSet::new(),
                descriptor_id: None,
            });
        }
    }
    all
}

/// The signal type of an indicator type, and the tag it requires (if any).
fn signal_type_of(indicator_type: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match indicator_type {
        "HASH_PDQ" => (names::PDQ, None),
        "HASH_VIDEO_MD5" => (names::VIDEO_MD5, None),
        "HASH_MD5" => (names::VIDEO_MD5, Some("media_type_video")),
        "HASH_VIDEO_SHA256" => (names::VIDEO_SHA256, None),
        "HASH_SHA256" => (names::VIDEO_SHA256, Some("media_type_video")),
        "URI" | "RAW_URI" => (names::URL, None),
        "HASH_URL_MD5" => (names::URL_MD5, None),
        "TEXT_STRING" => (names::RAW_TEXT, None),
        "TREND_QUERY" => (names::TREND_QUERY, None),
        "HASH_PDQ_OCR" => (names::PDQ_OCR, None),
        _ => return None,
    })
}

/// Converts one update; `Err` if it has no id.
fn convert(update: &ThreatUpdate, my_app_id: u64, batch: &mut BatchBuilder) -> Result<(), String> {
    let id = as_id(&update.id).ok_or("update without id")?;
    if update.should_delete || update.descriptors.is_none() {
        batch.delete(id);
        return Ok(());
    }
    let mut ops = opinions(update, my_app_id);
    let kind = update.indicator_type.as_deref().unwrap_or("");
    let mut signal = None;
    if let (Some((signal_type, required_tag)), Some(indicator)) =
        (signal_type_of(kind), &update.indicator)
    {
        if let Some(tag) = required_tag {
            // Exact tag match (upstream filters opinions by substring).
            ops.retain(|o| o.tags.contains(tag));
        }
        if !ops.is_empty() {
            signal = normalize(signal_type, indicator).map(|v| Signal::new(signal_type, v));
        }
    }
    match signal {
        Some(signal) => {
            let opinions: Vec<Value> = ops
                .iter()
                .map(|o| {
                    json!({
                        "owner_app_id": o.owner_app_id,
                        "is_mine": o.is_mine,
                        "category": o.category,
                        "tags": o.tags,
                        "descriptor_id": o.descriptor_id,
                    })
                })
                .collect();
            batch.upsert(
                id.clone(),
                Record {
                    signals: vec![signal],
                    metadata: json!({
                        "indicator_id": id,
                        "indicator_type": kind,
                        "last_updated": as_u64(&update.last_updated),
                        "opinions": opinions,
                    }),
                },
            );
        }
        None => batch.delete(id),
    }
    Ok(())
}

impl Inner {
    /// `POST {base}/{descriptor}/?access_token=&<param>=<reaction>` with the same parameters
    /// form-encoded in the body (what the reference client sends).
    async fn react(
        &self,
        descriptor: &str,
        param: &str,
        reaction: &str,
    ) -> Result<(), ExchangeError> {
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("access_token", self.token.expose())
            .append_pair(param, reaction)
            .finish();
        let req = Request::get(format!("{}/{}/?{}", self.base, descriptor, form))
            .with_method(reqwest::Method::POST, false)
            .body("application/x-www-form-urlencoded", form.into_bytes());
        self.http.send(&req).await.map(|_| ())
    }

    fn first_url(&self, start_time: Option<i64>) -> Result<url::Url, ExchangeError> {
        let mut url = url::Url::parse(&format!(
            "{}/{}/threat_updates/",
            self.base, self.privacy_group
        ))
        .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &self.page_size.to_string());
            q.append_pair("fields", UPDATE_FIELDS);
            if let Some(t) = start_time {
                q.append_pair("start_time", &t.to_string());
            }
        }
        Ok(url)
    }

    /// A `paging.next` URL without its access token, if it points at our origin.
    fn sanitize_next(&self, next: &str, page_url: &str) -> Result<url::Url, ExchangeError> {
        let url = url::Url::parse(next)
            .map_err(|e| ExchangeError::malformed(page_url, format!("invalid paging.next: {e}")))?;
        if url.origin() != self.origin {
            return Err(ExchangeError::malformed(
                page_url,
                "paging.next points at another host",
            ));
        }
        Ok(without_token(&url))
    }

    async fn get_page(&self, url: &url::Url) -> Result<(UpdatesPage, String), ExchangeError> {
        let mut with_token = url.clone();
        with_token
            .query_pairs_mut()
            .append_pair("access_token", self.token.expose());
        let resp = match self.http.send(&Request::get(with_token.to_string())).await {
            // The Graph API answers an invalid or expired token with 400 OAuthException.
            Err(ExchangeError::Http {
                status: 400,
                url,
                message,
            }) if message.contains("OAuthException") => {
                return Err(ExchangeError::Auth {
                    status: 400,
                    url,
                    message,
                })
            }
            other => other?,
        };
        Ok((resp.json()?, resp.url))
    }
}

fn without_token(url: &url::Url) -> url::Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "access_token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut clean = url.clone();
    clean.set_query(None);
    if !pairs.is_empty() {
        clean.query_pairs_mut().extend_pairs(pairs);
    }
    clean
}

impl Exchange for FbThreatExchange {
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
                .and_then(|cp| cp.state_for::<TeState>(NAME).map(|s| (cp, s)));
            let (start, mut pass_max, resume_url, progress, listing_id) = match resumed {
                Some((cp, state)) => {
                    let resume = state.next_url.filter(|_| !cp.is_older_than(NEXT_URL_TTL_SECS, now));
                    let pass_max = if resume.is_some() { state.pass_max } else { None };
                    (state.update_time, pass_max, resume, cp.progress_ts, cp.listing_id)
                }
                None => (None, None, None, None, Some(new_listing_id())),
            };
            let mut url = match resume_url.map(|u| url::Url::parse(&u)) {
                Some(Ok(u)) if u.origin() == inner.origin => u,
                _ => match inner.first_url(start) {
                    Ok(u) => u,
                    Err(e) => { yield Err(e); return; }
                },
            };
            loop {
                let (page, page_url) = match inner.get_page(&url).await {
                    Ok(p) => p,
                    Err(e) => { yield Err(e); return; }
                };
                let mut batch = BatchBuilder::default();
                for update in &page.data {
                    let Some(ts) = as_u64(&update.last_updated).and_then(|t| i64::try_from(t).ok()) else {
                        yield Err(ExchangeError::malformed(&page_url, "update without numeric last_updated"));
                        return;
                    };
                    pass_max = Some(pass_max.map_or(ts, |m| m.max(ts)));
                    if let Err(why) = convert(update, inner.app_id, &mut batch) {
                        yield Err(ExchangeError::malformed(&page_url, why));
                        return;
                    }
                }
                let next = match page.paging.and_then(|p| p.next).filter(|n| !n.is_empty()) {
                    Some(n) => match inner.sanitize_next(&n, &page_url) {
                        Ok(u) => Some(u),
                        Err(e) => { yield Err(e); return; }
                    },
                    None => None,
                };
                if next.as_ref() == Some(&url) {
                    yield Err(ExchangeError::malformed(&page_url, "paging.next repeats the page"));
                    return;
                }
                let (state, cp_progress) = match &next {
                    Some(n) => (TeState { update_time: start, pass_max, next_url: Some(n.to_string()) }, progress),
                    None => {
                        let done = pass_max.or(start);
                        (TeState { update_time: done, pass_max: None, next_url: None }, done.max(progress))
                    }
                };
                let more = next.is_some();
                let listing = listing_id.map(|id| ListingProgress { listing_id: id, complete: !more });
                let cp = Checkpoint::new(NAME, cp_progress, if more { listing_id } else { None }, &state);
                yield Ok(batch.finish(cp, listing));
                match next {
                    Some(n) => url = n,
                    None => return,
                }
            }
        })
    }

    fn report_review(
        &self,
        review: Review,
    ) -> futures_util::future::BoxFuture<'static, Result<(), ExchangeError>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let descriptors: Vec<String> = review
                .metadata
                .get("opinions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|o| o.get("is_mine") != Some(&Value::Bool(true)))
                .filter_map(|o| o.get("descriptor_id").and_then(as_id))
                .collect();
            if descriptors.is_empty() {
                return Err(ExchangeError::InvalidReview(
                    "the record has no descriptor of another app to react to".into(),
                ));
            }
            let (add, remove, opposite) = match review.verdict {
                Verdict::TruePositive => ("HELPFUL", "DISAGREE_WITH_TAGS", NEGATIVE),
                Verdict::FalsePositive => ("DISAGREE_WITH_TAGS", "HELPFUL", POSITIVE),
            };
            // Our own earlier, opposite reaction (read back as an implicit opinion of our app)
            // is withdrawn first, so that the latest review is what others see.
            let withdraw = review
                .metadata
                .get("opinions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|o| {
                    o.get("is_mine") == Some(&Value::Bool(true))
                        && o.get("descriptor_id").is_none_or(Value::is_null)
                        && o.get("category").and_then(Value::as_str) == Some(opposite)
                });
            for descriptor in descriptors {
                if !descriptor.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ExchangeError::InvalidReview(format!(
                        "invalid descriptor id '{descriptor}'"
                    )));
                }
                if withdraw {
                    inner
                        .react(&descriptor, "reactions_to_remove", remove)
                        .await?;
                }
                inner.react(&descriptor, "reactions", add).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        assert_eq!(
            app_id_of("12345678|abcdefghijklmnopqrstuvwxyz"),
            Some(12345678)
        );
        assert_eq!(
            app_id_of("12345678%7Cabcdefghijklmnopqrstuvwxyz"),
            Some(12345678)
        );
        assert_eq!(app_id_of("1234|abcdefghijklmnopqrstuvwxyz"), None);
        assert_eq!(app_id_of("12345678|short"), None);
        assert_eq!(app_id_of("nopipe"), None);
    }

    fn update(v: Value) -> ThreatUpdate {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn opinions_from_status_and_reactions() {
        let u = update(json!({
            "id": "1", "indicator": "x", "type": "HASH_PDQ", "last_updated": 5,
            "descriptors": {"data": [
                {"id": "10", "owner": {"id": "111"}, "status": "MALICIOUS",
                 "tags": {"data": [{"text": "a"}]},
                 "reactions": [{"key": "HELPFUL", "value": "222,333"}, {"key": "DISAGREE_WITH_TAGS", "value": "333,444"}]},
                {"id": "11", "status": "NON_MALICIOUS"},
                {"id": "12", "owner": {"id": 999}, "status": "NON_MALICIOUS", "tags": ["b"]}
            ]}
        }));
        let ops = opinions(&u, 999);
        let by_app: BTreeMap<u64, &Opinion> = ops.iter().map(|o| (o.owner_app_id, o)).collect();
        assert_eq!(by_app.len(), 5);
        assert_eq!(by_app[&111].category, POSITIVE);
        assert_eq!(by_app[&999].category, NEGATIVE);
        assert!(by_app[&999].is_mine);
        assert_eq!(by_app[&222].category, POSITIVE);
        assert_eq!(by_app[&333].category, POSITIVE);
        assert_eq!(by_app[&444].category, NEGATIVE);
        assert_eq!(by_app[&444].descriptor_id, None);
    }

    #[test]
    fn md5_needs_video_tag_and_values_are_validated() {
        let mk = |kind: &str, indicator: &str, tags: Value| {
            update(
                json!({"id": "7", "indicator": indicator, "type": kind, "last_updated": 1,
                "descriptors": {"data": [{"id": "1", "owner": {"id": "5"}, "status": "MALICIOUS", "tags": tags}]}}),
            )
        };
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let run = |u: ThreatUpdate| {
            let mut b = BatchBuilder::default();
            convert(&u, 1, &mut b).unwrap();
            b.finish(Checkpoint::new(NAME, None, None, &()), None)
                .changes
                .remove(0)
        };
        assert!(matches!(
            run(mk("HASH_MD5", md5, json!(["media_type_video"]))),
            crate::model::RecordChange::Upsert { .. }
        ));
        assert!(matches!(
            run(mk("HASH_MD5", md5, json!(["media_type_video_x"]))),
            crate::model::RecordChange::Delete { .. }
        ));
        assert!(matches!(
            run(mk("HASH_PDQ", "nothex", json!([]))),
            crate::model::RecordChange::Delete { .. }
        ));
        assert!(matches!(
            run(mk("UNKNOWN_TYPE", md5, json!([]))),
            crate::model::RecordChange::Delete { .. }
        ));
    }

    #[test]
    fn next_url_loses_token() {
        let u = url::Url::parse(
            "https://g.example/1/threat_updates/?access_token=1%7Cs&after=AB&limit=5",
        )
        .unwrap();
        assert_eq!(
            without_token(&u).as_str(),
            "https://g.example/1/threat_updates/?after=AB&limit=5"
        );
    }
}
