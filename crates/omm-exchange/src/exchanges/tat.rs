//! `tat`: the Tech Against Terrorism hash list (TCAP API).
//!
//! Wire protocol:
//! * `POST {base}/token-auth/tcap/` (form `username`, `password`, `resend=False`) →
//!   `{"token": JWT}`. One token per fetch; a 401 on a list page re-authenticates once.
//! * `GET {base}/api/hash-list/v2/all?order=asc[&after=<cursor>]` with `Authorization: Bearer`
//!   → `{"count", "next", "previous", "checkpoint": "<updated_on>,<id>", "results": [...]}`.
//!   Results are ordered by `(updated_on, id)`; the page's `checkpoint` is the cursor of its last
//!   result, sent as `after` for the next page (a keyset cursor, so records sharing one
//!   `updated_on` are neither lost nor repeated at page boundaries). Paging stops when `next` is
//!   null. (Upstream builds `?None` / `?<whole next URL>` query strings; we send the cursor.)
//!
//! Records: `PDQ` → `pdq`; `MD5` of a video file type (mov, m4v, mp4, webm) → `video_md5`; other
//! algorithms carry no usable signal and are sent as deletes. `deleted: true` → delete.
//! Record id: the TAT result `id`. Metadata: `{"tat_id", "algorithm", "ideology", "file_type",
//! "created_on", "updated_on"}` (upstream drops the ideology). No review write-back.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::api::{
    check_credential_keys, config_to_json, expect_credentials, parse_typed_config, required_str,
    BatchStream, Credentials, Exchange, ExchangeApi, ExchangeSetup, Secret,
};
use crate::error::ExchangeError;
use crate::http::{validate_base_url, Auth, HttpClient, Request};
use crate::model::{new_listing_id, BatchBuilder, Checkpoint, ListingProgress, Record, Signal};
use crate::schema::{base_url_field, FieldSchema, FieldType, ObjectSchema};
use crate::signal_types::{names, normalize};

/// API name.
pub const NAME: &str = "tat";
/// Production base URL.
pub const DEFAULT_BASE_URL: &str = "https://app.terrorismanalytics.org";

const VIDEO_FILE_TYPES: [&str; 4] = ["mov", "m4v", "mp4", "webm"];

/// Config of `tat`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TatConfig {
    /// Base URL override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// The `tat` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct TatApi;

impl TatApi {
    fn config(config: &Value) -> Result<TatConfig, ExchangeError> {
        let mut cfg: TatConfig = parse_typed_config(config)?;
        cfg.base_url = cfg.base_url.as_deref().map(validate_base_url).transpose()?;
        Ok(cfg)
    }
}

impl ExchangeApi for TatApi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![base_url_field()],
        }
    }

    fn credentials_schema(&self) -> Option<ObjectSchema> {
        Some(ObjectSchema {
            fields: vec![
                FieldSchema::required("username", FieldType::String, "TCAP user name"),
                FieldSchema::required("password", FieldType::String, "TCAP password").secret(),
            ],
        })
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn parse_credentials(&self, creds: &Value) -> Result<Credentials, ExchangeError> {
        check_credential_keys(creds, &["username", "password"])?;
        Ok(Credentials::Tat {
            username: required_str(creds, "username")?,
            password: Secret::new(required_str(creds, "password")?),
        })
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let cfg = Self::config(&setup.config)?;
        let Credentials::Tat { username, password } = expect_credentials(NAME, setup.credentials)?
        else {
            return Err(ExchangeError::MissingCredentials(NAME));
        };
        Ok(Arc::new(TatExchange {
            inner: Arc::new(Inner {
                base: cfg.base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
                username,
                password,
                http: HttpClient::new(setup.http)?,
            }),
        }))
    }
}

struct Inner {
    base: String,
    username: String,
    password: Secret,
    http: HttpClient,
}

/// An opened `tat` exchange.
pub struct TatExchange {
    inner: Arc<Inner>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TatState {
    /// Cursor `"<updated_on>,<id>"` of the last stored result; None before the first one.
    after: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: String,
}

#[derive(Deserialize)]
struct HashListPage {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    checkpoint: Option<String>,
    results: Vec<TatEntry>,
}

#[derive(Deserialize)]
struct TatEntry {
    id: Value,
    hash_digest: String,
    algorithm: String,
    #[serde(default)]
    ideology: Option<String>,
    #[serde(default)]
    file_type: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    updated_on: Option<Value>,
    #[serde(default)]
    created_on: Option<Value>,
}

/// Progress time of a cursor `"<epoch float>,<id>"`, or None if it is not one.
fn cursor_time(cursor: &str) -> Option<i64> {
    let (ts, id) = cursor.split_once(',')?;
    let ts: f64 = ts.trim().parse().ok()?;
    id.trim().parse::<i64>().ok()?;
    (ts.is_finite() && ts >= 0.0).then_some(ts as i64)
}

fn id_string(id: &Value) -> Option<String> {
    match id {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Inner {
    async fn token(&self) -> Result<String, ExchangeError> {
        let url = format!("{}/token-auth/tcap/", self.base);
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("username", &self.username)
            .append_pair("password", self.password.expose())
            .append_pair("resend", "False")
            .finish();
        let req = Request::get(url)
            .with_method(reqwest::Method::POST, true)
            .body("application/x-www-form-urlencoded", form.into_bytes());
        let response = match self.http.send(&req).await {
            // TCAP answers bad credentials with 400.
            Err(ExchangeError::Http {
                status: 400,
                url,
                message,
            }) => {
                return Err(ExchangeError::Auth {
                    status: 400,
                    url,
                    message,
                })
            }
            other => other?,
        };
        let token: TokenResponse = response.json()?;
        if token.token.is_empty() {
            return Err(ExchangeError::malformed(&response.url, "empty token"));
        }
        Ok(token.token)
    }

    async fn page(
        &self,
        token: &mut String,
        after: Option<&str>,
    ) -> Result<(HashListPage, String), ExchangeError> {
        let mut url = url::Url::parse(&format!("{}/api/hash-list/v2/all", self.base))
            .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))?;
        url.query_pairs_mut().append_pair("order", "asc");
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        let mut reauthenticated = false;
        loop {
            let req = Request::get(url.to_string()).auth(Auth::Bearer(token.clone()));
            match self.http.send(&req).await {
                Ok(resp) => return Ok((resp.json()?, resp.url)),
                Err(ExchangeError::Auth { status: 401, .. }) if !reauthenticated => {
                    // The token may have expired during a long fetch.
                    *token = self.token().await?;
                    reauthenticated = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn convert(entry: &TatEntry, batch: &mut BatchBuilder) -> Result<(), String> {
    let id = id_string(&entry.id).ok_or("result without id")?;
    if entry.deleted {
        batch.delete(id);
        return Ok(());
    }
    let file_type = entry
        .file_type
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    let signal_type = match entry.algorithm.to_ascii_uppercase().as_str() {
        "PDQ" => Some(names::PDQ),
        "MD5" if VIDEO_FILE_TYPES.contains(&file_type.as_str()) => Some(names::VIDEO_MD5),
        _ => None,
    };
    let signal =
        signal_type.and_then(|t| normalize(t, &entry.hash_digest).map(|v| Signal::new(t, v)));
    match signal {
        Some(signal) => batch.upsert(
            id.clone(),
            Record {
                signals: vec![signal],
                metadata: json!({
                    "tat_id": id,
                    "algorithm": entry.algorithm,
                    "ideology": entry.ideology,
                    "file_type": entry.file_type,
                    "created_on": entry.created_on,
                    "updated_on": entry.updated_on,
                }),
            },
        ),
        None => {
            if signal_type.is_some() {
                tracing::warn!(api = NAME, id, "invalid hash value; skipped");
            }
            batch.delete(id)
        }
    }
    Ok(())
}

impl Exchange for TatExchange {
    fn api(&self) -> &'static str {
        NAME
    }

    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let inner = self.inner.clone();
        Box::pin(async_stream::stream! {
            let resumed = checkpoint.as_ref().and_then(|cp| cp.state_for::<TatState>(NAME).map(|s| (cp, s)));
            let (mut after, mut progress, listing_id) = match resumed {
                Some((cp, state)) => (state.after, cp.progress_ts, cp.listing_id),
                None => (None, None, Some(new_listing_id())),
            };
            let mut token = match inner.token().await {
                Ok(t) => t,
                Err(e) => { yield Err(e); return; }
            };
            loop {
                let (page, url) = match inner.page(&mut token, after.as_deref()).await {
                    Ok(p) => p,
                    Err(e) => { yield Err(e); return; }
                };
                let mut batch = BatchBuilder::default();
                for entry in &page.results {
                    if let Err(why) = convert(entry, &mut batch) {
                        yield Err(ExchangeError::malformed(&url, why));
                        return;
                    }
                }
                let has_next = page.next.as_deref().is_some_and(|n| !n.is_empty());
                match page.checkpoint.filter(|c| !c.is_empty()) {
                    Some(cursor) => {
                        let Some(ts) = cursor_time(&cursor) else {
                            yield Err(ExchangeError::malformed(&url, format!("invalid checkpoint '{cursor}'")));
                            return;
                        };
                        if has_next && after.as_deref() == Some(cursor.as_str()) {
                            yield Err(ExchangeError::malformed(&url, "cursor did not advance"));
                            return;
                        }
                        progress = Some(progress.map_or(ts, |p| p.max(ts)));
                        after = Some(cursor);
                    }
                    None if has_next || !page.results.is_empty() => {
                        yield Err(ExchangeError::malformed(&url, "page without checkpoint"));
                        return;
                    }
                    None => {}
                }
                let state = TatState { after: after.clone() };
                let listing = listing_id.map(|id| ListingProgress { listing_id: id, complete: !has_next });
                let cp_listing = if has_next { listing_id } else { None };
                yield Ok(batch.finish(Checkpoint::new(NAME, progress, cp_listing, &state), listing));
                if !has_next {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parsing() {
        assert_eq!(cursor_time("1724856487.709035,10594"), Some(1724856487));
        assert_eq!(cursor_time("abc,1"), None);
        assert_eq!(cursor_time("1.5"), None);
        assert_eq!(cursor_time("1.5,x"), None);
    }

    #[test]
    fn conversion_rules() {
        let entry = |alg: &str, ft: &str, hash: &str, deleted: bool| TatEntry {
            id: json!(7),
            hash_digest: hash.into(),
            algorithm: alg.into(),
            ideology: Some("far-right".into()),
            file_type: Some(ft.into()),
            deleted,
            updated_on: None,
            created_on: None,
        };
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        let mut b = BatchBuilder::default();
        convert(&entry("MD5", "mp4", md5, false), &mut b).unwrap();
        let batch = b.finish(Checkpoint::new(NAME, None, None, &()), None);
        match &batch.changes[0] {
            crate::model::RecordChange::Upsert { id, record } => {
                assert_eq!(id, "7");
                assert_eq!(record.signals, vec![Signal::new("video_md5", md5)]);
                assert_eq!(record.metadata["ideology"], "far-right");
            }
            other => panic!("{other:?}"),
        }
        let mut b = BatchBuilder::default();
        convert(&entry("MD5", "jpg", md5, false), &mut b).unwrap();
        convert(&entry("PDQ", "gif", "zz", false), &mut b).unwrap();
        let batch = b.finish(Checkpoint::new(NAME, None, None, &()), None);
        assert!(matches!(
            batch.changes[0],
            crate::model::RecordChange::Delete { .. }
        ));
    }
}
