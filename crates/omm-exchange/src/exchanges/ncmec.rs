//! `ncmec`: the NCMEC hash sharing API v2 (XML), every environment.
//!
//! Wire protocol (HTTP Basic auth on every request):
//! * `GET {base}/v2/entries?from=<ts>&to=<ts>` (timestamps `YYYY-MM-DDTHH:MM:SSZ`, always UTC) →
//!   `<queryResult>` with `<images count maxTimestamp>` and `<videos ...>` holding `<image>`,
//!   `<video>`, `<deletedImage>` and `<deletedVideo>` entries (`<member id>`, `<id>`,
//!   `<timestamp>`, `<classification>`, `<fingerprints>`), and `<paging><next>` = a server path
//!   (`/v2/entries?...&start=..`) requested as `{base}{next}`.
//! * `GET {base}/v2/feedback/{TYPE}/reasons` and
//!   `PUT {base}/v2/entries/{member}/{entry}/{TYPE}/feedback` (`<feedbackSubmission>` with
//!   `<affirmative/>` or `<negative><reasonIds><guid>..`): review write-back. A false positive
//!   needs a reason: the environment's only reason for that type is used; several are an error.
//!
//! NCMEC does not return entries in time order, so only an exhausted time window is a safe
//! checkpoint. The window adapts: a first page that has a `next` link is only accepted if the
//! window is at most 60 s and the page covers a quarter of it; otherwise the window shrinks (to
//! one second at least, where every page is followed). Windows with few entries double. Within
//! a window the checkpoint keeps the server's `next` path, valid for 12 hours; an older one
//! restarts the window (re-applying entries is harmless).
//!
//! Records: id `"<member_id>-<entry_id>"`; deleted entries → delete; members outside
//! `only_esp_ids` (when set) → delete. Image `pdq` → `pdq`, image `pdna` → `photodna`, video
//! `md5` → `video_md5`; other fingerprints (image md5/sha1, video sha1, ...) stay in the metadata
//! only. Entries without a usable fingerprint → delete. Metadata: `{"member_id", "member_name",
//! "entry_id", "entry_type": "image"|"video", "classification", "timestamp", "fingerprints":
//! {tag: value}}`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{
    check_credential_keys, config_to_json, expect_credentials, parse_typed_config, required_str,
    BatchStream, Credentials, Exchange, ExchangeApi, ExchangeSetup, Secret,
};
use crate::error::ExchangeError;
use crate::http::{validate_base_url, Auth, HttpClient, Request};
use crate::model::{
    new_listing_id, now_unix, BatchBuilder, Checkpoint, ListingProgress, Record, Review, Signal,
    Verdict,
};
use crate::schema::{base_url_field, FieldSchema, FieldType, ObjectSchema};
use crate::signal_types::{names, normalize};

/// API name.
pub const NAME: &str = "ncmec";

/// The NCMEC environments: (name, base URL).
pub const ENVIRONMENTS: [(&str, &str); 14] = [
    ("Industry", "https://report.cybertip.org/hashsharing"),
    (
        "Industry_Exploitative",
        "https://report.cybertip.org/exploitative-hashsharing",
    ),
    ("LawEnforcement", "https://lesp.ncmec.org/csam-hashsharing"),
    ("NGO", "https://hashsharing.ncmec.org/npo"),
    ("Exploitative", "https://hashsharing.ncmec.org/exploitative"),
    (
        "NGO_Generative_AI",
        "https://hashsharing.ncmec.org/generative-ai-csam",
    ),
    (
        "NGO_Generative_AI_Exploitative",
        "https://hashsharing.ncmec.org/generative-ai-exploitative",
    ),
    ("test_Industry", "https://exttest.cybertip.org/hashsharing"),
    (
        "test_Industry_Exploitative",
        "https://exttest.cybertip.org/exploitative-hashsharing",
    ),
    (
        "test_LawEnforcement",
        "https://betalesp.ncmec.org/csam-hashsharing",
    ),
    ("test_NGO", "https://hashsharing-test.ncmec.org/npo"),
    (
        "test_Exploitative",
        "https://hashsharing-test.ncmec.org/exploitative",
    ),
    (
        "test_NGO_Generative_AI",
        "https://hashsharing-test.ncmec.org/generative-ai-csam",
    ),
    (
        "test_NGO_Generative_AI_Exploitative",
        "https://hashsharing-test.ncmec.org/generative-ai-exploitative",
    ),
];

/// Seconds kept between "now" and the end of the last window (entries still being written).
const END_LAG_SECS: i64 = 5;
const PAGING_TTL_SECS: i64 = 12 * 3600;
const MAX_MULTIPAGE_WINDOW_SECS: i64 = 60;
const SMALL_WINDOW_ENTRIES: usize = 2000;
const LARGE_WINDOW_ENTRIES: usize = 100_000;

/// Config of `ncmec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NcmecConfig {
    /// Environment base URL (the enum value); the environment name is accepted on input.
    pub environment: String,
    /// Only keep entries of these ESP (member) ids; empty keeps all.
    #[serde(default)]
    pub only_esp_ids: BTreeSet<u64>,
    /// Base URL override (wins over `environment`; for proxies and testing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// The `ncmec` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct NcmecApi;

impl NcmecApi {
    fn config(config: &Value) -> Result<NcmecConfig, ExchangeError> {
        let mut cfg: NcmecConfig = parse_typed_config(config)?;
        let env = cfg.environment.trim().trim_end_matches('/');
        let Some((_, url)) = ENVIRONMENTS
            .iter()
            .find(|(name, url)| *name == env || *url == env)
        else {
            return Err(ExchangeError::InvalidConfig(format!(
                "unknown environment '{}', expected one of the NCMEC environment URLs or names",
                cfg.environment
            )));
        };
        cfg.environment = url.to_string();
        cfg.base_url = cfg.base_url.as_deref().map(validate_base_url).transpose()?;
        Ok(cfg)
    }
}

impl ExchangeApi for NcmecApi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![
                FieldSchema::required("environment", FieldType::Enum, "NCMEC environment")
                    .with_choices(ENVIRONMENTS.iter().map(|(_, url)| json!(url)).collect()),
                FieldSchema::optional(
                    "only_esp_ids",
                    FieldType::SetOf("number"),
                    json!([]),
                    "Only fetch entries of these ESP ids (empty: all)",
                ),
                base_url_field(),
            ],
        }
    }

    fn credentials_schema(&self) -> Option<ObjectSchema> {
        Some(ObjectSchema {
            fields: vec![
                FieldSchema::required("user", FieldType::String, "NCMEC hash sharing user"),
                FieldSchema::required("password", FieldType::String, "NCMEC hash sharing password")
                    .secret(),
            ],
        })
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn parse_credentials(&self, creds: &Value) -> Result<Credentials, ExchangeError> {
        check_credential_keys(creds, &["user", "password"])?;
        Ok(Credentials::Ncmec {
            user: required_str(creds, "user")?,
            password: Secret::new(required_str(creds, "password")?),
        })
    }

    fn accepts_reviews(&self) -> bool {
        true
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let cfg = Self::config(&setup.config)?;
        let Credentials::Ncmec { user, password } = expect_credentials(NAME, setup.credentials)?
        else {
            return Err(ExchangeError::MissingCredentials(NAME));
        };
        Ok(Arc::new(NcmecExchange {
            inner: Arc::new(Inner {
                base: cfg.base_url.unwrap_or(cfg.environment),
                only_esp_ids: cfg.only_esp_ids,
                user,
                password,
                http: HttpClient::new(setup.http)?,
            }),
        }))
    }
}

struct Inner {
    base: String,
    only_esp_ids: BTreeSet<u64>,
    user: String,
    password: Secret,
    http: HttpClient,
}

/// An opened `ncmec` exchange.
pub struct NcmecExchange {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PagingState {
    /// Server path of the next page of the window.
    next: String,
    /// End of the window being paged.
    window_end: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct NcmecState {
    /// Every entry up to this time (unix seconds) is stored (the start of the next window).
    max_ts: i64,
    /// Window size to try next (seconds).
    #[serde(default)]
    duration: Option<i64>,
    /// Set while paging inside a window.
    #[serde(default)]
    paging: Option<PagingState>,
}

// ---- XML wire format (quick-xml + serde; the default namespace is ignored) ----

#[derive(Debug, Deserialize)]
struct QueryResult {
    #[serde(default)]
    images: Option<Container>,
    #[serde(default)]
    videos: Option<Container>,
    #[serde(default)]
    paging: Option<PagingXml>,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(rename = "@maxTimestamp", default)]
    max_timestamp: Option<String>,
    #[serde(rename = "$value", default)]
    entries: Vec<EntryXml>,
}

#[derive(Debug, Deserialize)]
enum EntryXml {
    #[serde(rename = "image")]
    Image(Entry),
    #[serde(rename = "video")]
    Video(Entry),
    #[serde(rename = "deletedImage")]
    DeletedImage(Entry),
    #[serde(rename = "deletedVideo")]
    DeletedVideo(Entry),
}

#[derive(Debug, Deserialize)]
struct Entry {
    member: Member,
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    classification: Option<String>,
    #[serde(default)]
    fingerprints: Option<BTreeMap<String, Fingerprint>>,
}

#[derive(Debug, Deserialize)]
struct Member {
    #[serde(rename = "@id")]
    id: String,
    #[serde(rename = "$text", default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Fingerprint {
    /// Empty for large fingerprints given as links (`<tmk-pdqf rel href/>`).
    #[serde(rename = "$text", default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PagingXml {
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FeedbackReasons {
    #[serde(rename = "reason", default)]
    reasons: Vec<ReasonXml>,
}

#[derive(Debug, Deserialize)]
struct ReasonXml {
    #[serde(rename = "@guid")]
    guid: String,
}

/// One parsed page of entries.
struct EntriesPage {
    entries: Vec<(bool, bool, Entry)>, // (is_video, deleted, entry)
    max_timestamp: Option<i64>,
    next: Option<String>,
}

fn parse_ts(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp())
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC (upstream formats local time with a literal Z).
fn format_ts(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse_entries(url: &str, body: &str) -> Result<EntriesPage, ExchangeError> {
    let result: QueryResult = quick_xml::de::from_str(body)
        .map_err(|e| ExchangeError::malformed(url, format!("invalid entries XML: {e}")))?;
    let mut entries = Vec::new();
    let mut max_timestamp: Option<i64> = None;
    for container in [result.images, result.videos].into_iter().flatten() {
        if !container.entries.is_empty() {
            if let Some(ts) = container.max_timestamp.as_deref() {
                let ts = parse_ts(ts).ok_or_else(|| {
                    ExchangeError::malformed(url, format!("invalid maxTimestamp '{ts}'"))
                })?;
                max_timestamp = Some(max_timestamp.map_or(ts, |m| m.max(ts)));
            }
        }
        for e in container.entries {
            entries.push(match e {
                EntryXml::Image(e) => (false, false, e),
                EntryXml::Video(e) => (true, false, e),
                EntryXml::DeletedImage(e) => (false, true, e),
                EntryXml::DeletedVideo(e) => (true, true, e),
            });
        }
    }
    let next = result
        .paging
        .and_then(|p| p.next)
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    if let Some(n) = &next {
        if !n.starts_with('/') || n.starts_with("//") || n.contains("://") {
            return Err(ExchangeError::malformed(
                url,
                "paging next is not a server path",
            ));
        }
    }
    Ok(EntriesPage {
        entries,
        max_timestamp,
        next,
    })
}

fn convert(
    is_video: bool,
    deleted: bool,
    entry: &Entry,
    only: &BTreeSet<u64>,
    batch: &mut BatchBuilder,
) -> Result<(), String> {
    let member: u64 = entry
        .member
        .id
        .trim()
        .parse()
        .map_err(|_| format!("invalid member id '{}'", entry.member.id))?;
    if entry.id.trim().is_empty() {
        return Err("entry without id".into());
    }
    let id = format!("{member}-{}", entry.id.trim());
    if deleted || (!only.is_empty() && !only.contains(&member)) {
        batch.delete(id);
        return Ok(());
    }
    let fingerprints: BTreeMap<String, String> = entry
        .fingerprints
        .iter()
        .flatten()
        .filter_map(|(tag, fp)| {
            let v = fp.value.as_deref()?.trim();
            (!v.is_empty()).then(|| (tag.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let wanted: &[(&str, &str)] = if is_video {
        &[("md5", names::VIDEO_MD5)]
    } else {
        &[("pdq", names::PDQ), ("pdna", names::PHOTODNA)]
    };
    let signals: Vec<Signal> = wanted
        .iter()
        .filter_map(|(tag, signal_type)| {
            let v = fingerprints.get(*tag)?;
            match normalize(signal_type, v) {
                Some(v) => Some(Signal::new(*signal_type, v)),
                None => {
                    tracing::warn!(api = NAME, id, tag, "invalid fingerprint; skipped");
                    None
                }
            }
        })
        .collect();
    if signals.is_empty() {
        batch.delete(id);
        return Ok(());
    }
    batch.upsert(
        id,
        Record {
            signals,
            metadata: json!({
                "member_id": member,
                "member_name": entry.member.name.as_deref().map(str::trim),
                "entry_id": entry.id.trim(),
                "entry_type": if is_video { "video" } else { "image" },
                "classification": entry.classification.as_deref().map(str::trim),
                "timestamp": entry.timestamp.as_deref().map(str::trim),
                "fingerprints": fingerprints,
            }),
        },
    );
    Ok(())
}

impl Inner {
    fn auth(&self) -> Auth {
        Auth::Basic {
            user: self.user.clone(),
            password: self.password.expose().to_string(),
        }
    }

    fn entries_url(&self, from: i64, to: i64) -> Result<String, ExchangeError> {
        let mut url = url::Url::parse(&format!("{}/v2/entries", self.base))
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("from", &format_ts(from))
            .append_pair("to", &format_ts(to));
        Ok(url.to_string())
    }

    async fn page(&self, url: &str) -> Result<EntriesPage, ExchangeError> {
        let resp = self.http.send(&Request::get(url).auth(self.auth())).await?;
        parse_entries(&resp.url, resp.text()?)
    }
}

/// Fingerprint type of the feedback endpoints for one of our signal types.
fn feedback_type(signal_type: &str) -> Option<&'static str> {
    match signal_type {
        names::PDQ => Some("PDQ"),
        names::VIDEO_MD5 => Some("MD5"),
        names::PHOTODNA => Some("PDNA"),
        _ => None,
    }
}

impl Exchange for NcmecExchange {
    fn api(&self) -> &'static str {
        NAME
    }

    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let inner = self.inner.clone();
        Box::pin(async_stream::stream! {
            let now = now_unix();
            let end = now - END_LAG_SECS;
            let resumed = checkpoint.as_ref().and_then(|cp| cp.state_for::<NcmecState>(NAME).map(|s| (cp, s)));
            let (mut start, mut duration, mut resume, listing_id) = match resumed {
                Some((cp, state)) => {
                    let fresh = !cp.is_older_than(PAGING_TTL_SECS, now);
                    let paging = state.paging.filter(|p| fresh && p.window_end <= end && p.window_end > state.max_ts);
                    (state.max_ts, state.duration, paging, cp.listing_id)
                }
                None => (0, None, None, Some(new_listing_id())),
            };
            let mut duration = duration.take().unwrap_or(end - start).max(1);
            while start < end {
                let (window_end, mut url, probing) = match resume.take() {
                    Some(p) => (p.window_end, format!("{}{}", inner.base, p.next), false),
                    None => {
                        duration = duration.max(1);
                        let window_end = end.min(start.saturating_add(duration));
                        match inner.entries_url(start, window_end) {
                            Ok(u) => (window_end, u, duration > 1),
                            Err(e) => { yield Err(e); return; }
                        }
                    }
                };
                let mut first_page = true;
                let mut total = 0usize;
                let mut shrunk = false;
                loop {
                    let page = match inner.page(&url).await {
                        Ok(p) => p,
                        Err(e) => { yield Err(e); return; }
                    };
                    if probing && first_page && page.next.is_some() {
                        let guess = page.max_timestamp.map_or(duration, |m| m - start);
                        if duration > MAX_MULTIPAGE_WINDOW_SECS || guess < duration / 4 {
                            // Too many entries for one page: narrow the window and start it over.
                            duration = (duration / 4).min(guess - 1).max(1);
                            shrunk = true;
                            break;
                        }
                    }
                    first_page = false;
                    let mut batch = BatchBuilder::default();
                    for (is_video, deleted, entry) in &page.entries {
                        if let Err(why) = convert(*is_video, *deleted, entry, &inner.only_esp_ids, &mut batch) {
                            yield Err(ExchangeError::malformed(&url, why));
                            return;
                        }
                    }
                    total += page.entries.len();
                    match page.next {
                        Some(next) => {
                            let state = NcmecState {
                                max_ts: start,
                                duration: Some(duration),
                                paging: Some(PagingState { next: next.clone(), window_end }),
                            };
                            let listing = listing_id.map(|id| ListingProgress { listing_id: id, complete: false });
                            yield Ok(batch.finish(Checkpoint::new(NAME, Some(start), listing_id, &state), listing));
                            let next_url = format!("{}{}", inner.base, next);
                            if next_url == url {
                                yield Err(ExchangeError::malformed(&url, "paging next repeats the page"));
                                return;
                            }
                            url = next_url;
                        }
                        None => {
                            if total < SMALL_WINDOW_ENTRIES {
                                duration = duration.saturating_mul(2);
                            } else if total > LARGE_WINDOW_ENTRIES {
                                duration = (duration / 4).max(1);
                            }
                            let done = window_end >= end;
                            let state = NcmecState { max_ts: window_end, duration: Some(duration), paging: None };
                            let listing = listing_id.map(|id| ListingProgress { listing_id: id, complete: done });
                            let cp_listing = if done { None } else { listing_id };
                            yield Ok(batch.finish(Checkpoint::new(NAME, Some(window_end), cp_listing, &state), listing));
                            break;
                        }
                    }
                }
                if !shrunk {
                    start = window_end;
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
            let fp_type = feedback_type(&review.signal.signal_type).ok_or_else(|| {
                ExchangeError::InvalidReview(format!(
                    "NCMEC takes no feedback on {} signals",
                    review.signal.signal_type
                ))
            })?;
            let member = review.metadata.get("member_id").and_then(Value::as_u64);
            let entry = review.metadata.get("entry_id").and_then(Value::as_str);
            let (Some(member), Some(entry)) = (member, entry) else {
                return Err(ExchangeError::InvalidReview(
                    "record metadata lacks member_id/entry_id".into(),
                ));
            };
            let body = match review.verdict {
                Verdict::TruePositive => "<affirmative/>".to_string(),
                Verdict::FalsePositive => {
                    let url = format!("{}/v2/feedback/{fp_type}/reasons", inner.base);
                    let resp = inner
                        .http
                        .send(&Request::get(url).auth(inner.auth()))
                        .await?;
                    let reasons: FeedbackReasons =
                        quick_xml::de::from_str(resp.text()?).map_err(|e| {
                            ExchangeError::malformed(&resp.url, format!("invalid reasons XML: {e}"))
                        })?;
                    let guid =
                        match reasons.reasons.as_slice() {
                            [only] => only.guid.trim().to_string(),
                            [] => {
                                return Err(ExchangeError::InvalidReview(
                                    "NCMEC offers no negative feedback reason".into(),
                                ))
                            }
                            _ => return Err(ExchangeError::InvalidReview(
                                "NCMEC offers several negative feedback reasons; cannot pick one"
                                    .into(),
                            )),
                        };
                    if guid.is_empty() || !guid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                    {
                        return Err(ExchangeError::malformed(&resp.url, "invalid reason guid"));
                    }
                    format!("<negative><reasonIds><guid>{guid}</guid></reasonIds></negative>")
                }
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedbackSubmission xmlns=\"https://hashsharing.ncmec.org/hashsharing/v2\">{body}</feedbackSubmission>"
            );
            let mut url = url::Url::parse(&format!("{}/v2/entries", inner.base))
                .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
            url.path_segments_mut()
                .map_err(|_| ExchangeError::InvalidConfig("base URL cannot have paths".into()))?
                .extend([member.to_string().as_str(), entry, fp_type, "feedback"]);
            let req = Request::get(url.to_string())
                .with_method(reqwest::Method::PUT, true)
                .auth(inner.auth())
                .body("application/xml; charset=utf-8", xml.into_bytes());
            inner.http.send(&req).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<queryResult xmlns="https://hashsharing.ncmec.org/hashsharing/v2">
  <images count="3" maxTimestamp="2021-03-04T05:06:07Z">
    <image>
      <member id="7">Member Seven</member>
      <timestamp>2021-03-04T05:06:00Z</timestamp>
      <id>img-a</id>
      <classification>A2</classification>
      <fingerprints>
        <md5>0123456789abcdef0123456789abcdef</md5>
        <pdq>F8F8F0CEE0F4A84F06370A22038F63F0B36E2ED596621E1D33E6B39C4E9C9B22</pdq>
      </fingerprints>
      <feedback/>
    </image>
    <deletedImage>
      <member id="8">Member Eight</member>
      <id>img-b</id>
      <timestamp>2021-03-04T05:06:07Z</timestamp>
    </deletedImage>
    <image>
      <member id="9">Nine</member>
      <timestamp>2021-03-04T05:06:01Z</timestamp>
      <id>img-c</id>
      <fingerprints><sha1>0123456789abcdef0123456789abcdef01234567</sha1></fingerprints>
    </image>
  </images>
  <videos count="1" maxTimestamp="2021-03-04T05:07:00Z">
    <video>
      <member id="7">Member Seven</member>
      <timestamp>2021-03-04T05:07:00Z</timestamp>
      <id>vid-a</id>
      <fingerprints>
        <md5>FEDCBA9876543210FEDCBA9876543210</md5>
        <tmk-pdqf rel="self" href="/v2/entries/1/fingerprints/TMK_PDQF"/>
      </fingerprints>
    </video>
  </videos>
  <paging><next>/v2/entries?from=a&amp;to=b&amp;start=5</next></paging>
</queryResult>"#;

    #[test]
    fn parses_entries_page() {
        let page = parse_entries("http://x", PAGE).unwrap();
        assert_eq!(page.entries.len(), 4);
        assert_eq!(
            page.next.as_deref(),
            Some("/v2/entries?from=a&to=b&start=5")
        );
        assert_eq!(
            page.max_timestamp,
            Some(parse_ts("2021-03-04T05:07:00Z").unwrap())
        );
        let mut b = BatchBuilder::default();
        for (v, d, e) in &page.entries {
            convert(*v, *d, e, &BTreeSet::new(), &mut b).unwrap();
        }
        let batch = b.finish(Checkpoint::new(NAME, None, None, &()), None);
        let ids: Vec<&str> = batch.changes.iter().map(|c| c.id()).collect();
        assert_eq!(ids, ["7-img-a", "8-img-b", "9-img-c", "7-vid-a"]);
        match &batch.changes[0] {
            crate::model::RecordChange::Upsert { record, .. } => {
                assert_eq!(
                    record.signals[0].value,
                    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
                );
                assert_eq!(record.metadata["classification"], "A2");
                assert_eq!(record.metadata["member_name"], "Member Seven");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            batch.changes[1],
            crate::model::RecordChange::Delete { .. }
        ));
        assert!(matches!(
            batch.changes[2],
            crate::model::RecordChange::Delete { .. }
        ));
        match &batch.changes[3] {
            crate::model::RecordChange::Upsert { record, .. } => {
                assert_eq!(
                    record.signals,
                    vec![Signal::new("video_md5", "fedcba9876543210fedcba9876543210")]
                );
            }
            other => panic!("{other:?}"),
        }
        // ESP filter turns other members into deletes.
        let mut b = BatchBuilder::default();
        let only: BTreeSet<u64> = [9].into();
        for (v, d, e) in &page.entries {
            convert(*v, *d, e, &only, &mut b).unwrap();
        }
        let batch = b.finish(Checkpoint::new(NAME, None, None, &()), None);
        assert!(batch
            .changes
            .iter()
            .all(|c| matches!(c, crate::model::RecordChange::Delete { .. })));
    }

    #[test]
    fn rejects_malformed_xml_and_foreign_next() {
        assert!(parse_entries("http://x", "<queryResult><images><image>").is_err());
        assert!(parse_entries("http://x", "{\"json\": true}").is_err());
        let evil = PAGE.replace("/v2/entries?from=a", "https://evil.example/v2");
        assert!(parse_entries("http://x", &evil).is_err());
    }

    #[test]
    fn utc_formatting() {
        assert_eq!(format_ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_ts(1508858400), "2017-10-24T15:20:00Z");
        assert_eq!(parse_ts("2017-10-24T15:20:00Z"), Some(1508858400));
        assert_eq!(parse_ts("2017-10-24T15:20:00.000Z"), Some(1508858400));
        assert_eq!(parse_ts("2017-10-24T17:20:00+02:00"), Some(1508858400));
    }

    #[test]
    fn environment_name_or_url() {
        let by_name = NcmecApi
            .normalize_config(&json!({"environment": "test_NGO"}))
            .unwrap();
        assert_eq!(
            by_name["environment"],
            "https://hashsharing-test.ncmec.org/npo"
        );
        let by_url = NcmecApi
            .normalize_config(&json!({"environment": "https://report.cybertip.org/hashsharing", "only_esp_ids": [3, 1, 3], "name": "X", "api": "ncmec", "enabled": true}))
            .unwrap();
        assert_eq!(by_url["only_esp_ids"], json!([1, 3]));
        assert!(NcmecApi
            .normalize_config(&json!({"environment": "nope"}))
            .is_err());
        assert!(NcmecApi
            .normalize_config(&json!({"environment": "NGO", "bogus": 1}))
            .is_err());
        assert!(NcmecApi.normalize_config(&json!({})).is_err());
    }
}
