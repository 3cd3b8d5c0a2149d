//! `local_file` and `url_file`: a text file of signals, read from disk or fetched over HTTP(S).
//!
//! Format: one signal per line, `<signal_type> <value>` (split at the first whitespace), or just
//! `<value>` when the config sets `signal_type`. Blank lines and lines starting with `#` are
//! skipped; lines with an unknown type or an invalid value are skipped with a warning.
//!
//! Record id: `"<signal_type> <normalised value>"`. Metadata: `{"line": <first line number>}`.
//! The checkpoint keeps the SHA-256 of the file: an unchanged file yields nothing, a changed file
//! is re-listed in full, so lines removed from the file are deleted (upstream never deletes them).
//! A listing interrupted midway resumes at the next unprocessed line if the file is unchanged.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::{
    config_to_json, parse_typed_config, BatchStream, Exchange, ExchangeApi, ExchangeSetup,
};
use crate::error::ExchangeError;
use crate::http::{validate_base_url, HttpClient, HttpSettings, Request};
use crate::model::{
    new_listing_id, Batch, BatchBuilder, Checkpoint, ListingProgress, Record, Signal,
};
use crate::schema::{FieldSchema, FieldType, ObjectSchema};
use crate::signal_types::{names, normalize};

/// API name of the local file exchange.
pub const LOCAL_FILE: &str = "local_file";
/// API name of the URL file exchange.
pub const URL_FILE: &str = "url_file";

/// Records per batch.
const FILE_BATCH_SIZE: usize = 10_000;
/// Largest local file read.
const MAX_LOCAL_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Signal type names accepted in files. Restricting them keeps a curator from turning arbitrary
/// server files into bank content.
const FILE_SIGNAL_TYPES: [&str; 13] = [
    names::PDQ,
    names::VIDEO_MD5,
    names::VIDEO_SHA256,
    names::URL,
    names::URL_MD5,
    names::RAW_TEXT,
    names::TREND_QUERY,
    names::PDQ_OCR,
    names::PHOTODNA,
    "vpdq",
    "text_tlsh",
    "tmk_pdqf",
    "clip",
];

fn check_signal_type(signal_type: &Option<String>) -> Result<(), ExchangeError> {
    match signal_type {
        Some(t) if !FILE_SIGNAL_TYPES.contains(&t.as_str()) => Err(ExchangeError::InvalidConfig(
            format!("unknown signal_type '{t}', expected one of {FILE_SIGNAL_TYPES:?}"),
        )),
        _ => Ok(()),
    }
}

/// Config of `local_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFileConfig {
    /// Path of the file on the server.
    pub filename: String,
    /// If set, every line is a value of this signal type.
    #[serde(default)]
    pub signal_type: Option<String>,
}

/// Config of `url_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlFileConfig {
    /// http(s) URL of the file.
    pub url: String,
    /// If set, every line is a value of this signal type.
    #[serde(default)]
    pub signal_type: Option<String>,
}

fn signal_type_field() -> FieldSchema {
    FieldSchema::optional(
        "signal_type",
        FieldType::Enum,
        Value::Null,
        "If set, each line is a value of this type; otherwise lines are `<signal_type> <value>`",
    )
    .with_choices(FILE_SIGNAL_TYPES.iter().map(|t| json!(t)).collect())
}

/// The `local_file` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct LocalFileApi;

impl LocalFileApi {
    fn config(config: &Value) -> Result<LocalFileConfig, ExchangeError> {
        let cfg: LocalFileConfig = parse_typed_config(config)?;
        if cfg.filename.trim().is_empty() {
            return Err(ExchangeError::InvalidConfig(
                "filename must not be empty".into(),
            ));
        }
        check_signal_type(&cfg.signal_type)?;
        Ok(cfg)
    }
}

impl ExchangeApi for LocalFileApi {
    fn name(&self) -> &'static str {
        LOCAL_FILE
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![
                FieldSchema::required(
                    "filename",
                    FieldType::String,
                    "Path of the signal file on the server",
                ),
                signal_type_field(),
            ],
        }
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        Ok(Arc::new(FileExchange {
            api: LOCAL_FILE,
            source: Source::Path(Self::config(&setup.config)?),
            http: None,
        }))
    }
}

/// The `url_file` exchange API.
#[derive(Debug, Clone, Copy)]
pub struct UrlFileApi;

impl UrlFileApi {
    fn config(config: &Value) -> Result<UrlFileConfig, ExchangeError> {
        let mut cfg: UrlFileConfig = parse_typed_config(config)?;
        let url = url::Url::parse(cfg.url.trim())
            .map_err(|e| ExchangeError::InvalidConfig(format!("url is not a URL: {e}")))?;
        // Same rules as a base URL, but keep the query: file hosts often need one.
        let mut base = url.clone();
        base.set_query(None);
        validate_base_url(base.as_str())?;
        if url.fragment().is_some() {
            return Err(ExchangeError::InvalidConfig(
                "url must not have a fragment".into(),
            ));
        }
        cfg.url = url.to_string();
        check_signal_type(&cfg.signal_type)?;
        Ok(cfg)
    }
}

impl ExchangeApi for UrlFileApi {
    fn name(&self) -> &'static str {
        URL_FILE
    }

    fn config_schema(&self) -> ObjectSchema {
        ObjectSchema {
            fields: vec![
                FieldSchema::required("url", FieldType::String, "http(s) URL of the signal file"),
                signal_type_field(),
            ],
        }
    }

    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError> {
        config_to_json(&Self::config(config)?)
    }

    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError> {
        let http = HttpClient::new(setup.http.clone())?;
        Ok(Arc::new(FileExchange {
            api: URL_FILE,
            source: Source::Url(Self::config(&setup.config)?),
            http: Some((http, setup.http)),
        }))
    }
}

enum Source {
    Path(LocalFileConfig),
    Url(UrlFileConfig),
}

/// An opened `local_file` or `url_file` exchange.
pub struct FileExchange {
    api: &'static str,
    source: Source,
    http: Option<(HttpClient, HttpSettings)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileState {
    /// SHA-256 (hex) of the file content last listed (or being listed).
    sha256: String,
    /// While a listing is in progress: lines already processed.
    #[serde(default)]
    lines_done: Option<usize>,
}

impl FileExchange {
    async fn read(&self) -> Result<(Vec<u8>, Option<String>), ExchangeError> {
        match (&self.source, &self.http) {
            (Source::Path(cfg), _) => {
                let io_err = |e: std::io::Error| ExchangeError::Io {
                    path: cfg.filename.clone(),
                    message: e.to_string(),
                };
                let meta = tokio::fs::metadata(&cfg.filename).await.map_err(io_err)?;
                if meta.len() > MAX_LOCAL_FILE_BYTES {
                    return Err(ExchangeError::Io {
                        path: cfg.filename.clone(),
                        message: format!("file larger than {MAX_LOCAL_FILE_BYTES} bytes"),
                    });
                }
                let bytes = tokio::fs::read(&cfg.filename).await.map_err(io_err)?;
                Ok((bytes, cfg.signal_type.clone()))
            }
            (Source::Url(cfg), Some((http, _))) => {
                let response = http.send(&Request::get(cfg.url.clone())).await?;
                Ok((response.body, cfg.signal_type.clone()))
            }
            (Source::Url(cfg), None) => Err(ExchangeError::Transport {
                url: cfg.url.clone(),
                message: "no HTTP client".into(),
            }),
        }
    }
}

impl Exchange for FileExchange {
    fn api(&self) -> &'static str {
        self.api
    }

    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream {
        let api = self.api;
        let this = FileExchange {
            api,
            source: match &self.source {
                Source::Path(c) => Source::Path(c.clone()),
                Source::Url(c) => Source::Url(c.clone()),
            },
            http: self.http.clone(),
        };
        Box::pin(async_stream::stream! {
            let (bytes, signal_type) = match this.read().await {
                Ok(v) => v,
                Err(e) => { yield Err(e); return; }
            };
            let label = match &this.source {
                Source::Path(c) => c.filename.clone(),
                Source::Url(c) => crate::http::redact_url(&c.url),
            };
            let text = match std::str::from_utf8(&bytes) {
                Ok(t) => t,
                Err(_) => {
                    yield Err(ExchangeError::MalformedResponse { url: label, message: "file is not UTF-8 text".into() });
                    return;
                }
            };
            for batch in file_batches(api, text, signal_type.as_deref(), checkpoint.as_ref()) {
                yield Ok(batch);
            }
        })
    }
}

/// Parses one line into a signal. `Ok(None)` for blank/comment lines, `Err` for invalid ones.
fn parse_line(line: &str, fixed_type: Option<&str>) -> Result<Option<Signal>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (signal_type, value) = match fixed_type {
        Some(t) => (t, line),
        None => match line.split_once(char::is_whitespace) {
            Some((t, v)) => (t, v.trim()),
            None => return Err("expected `<signal_type> <value>`".into()),
        },
    };
    if !FILE_SIGNAL_TYPES.contains(&signal_type) {
        return Err(format!("unknown signal type '{signal_type}'"));
    }
    match normalize(signal_type, value) {
        Some(v) => Ok(Some(Signal::new(signal_type, v))),
        None => Err(format!("invalid {signal_type} value")),
    }
}

/// The batches of a (possibly resumed) listing of `text`, or none if it was already listed.
fn file_batches(
    api: &str,
    text: &str,
    fixed_type: Option<&str>,
    checkpoint: Option<&Checkpoint>,
) -> Vec<Batch> {
    let sha256 = format!("{:x}", Sha256::digest(text.as_bytes()));
    let previous = checkpoint.and_then(|cp| cp.state_for::<FileState>(api).map(|s| (cp, s)));
    let (start_line, listing_id) = match previous {
        Some((_, state)) if state.sha256 == sha256 && state.lines_done.is_none() => {
            return Vec::new();
        }
        Some((cp, state)) if state.sha256 == sha256 => (
            state.lines_done.unwrap_or(0),
            cp.listing_id.unwrap_or_else(new_listing_id),
        ),
        _ => (0, new_listing_id()),
    };
    let mut batches = Vec::new();
    let mut builder = BatchBuilder::default();
    let mut invalid = 0usize;
    let lines: Vec<&str> = text.lines().collect();
    for (idx, line) in lines.iter().enumerate().skip(start_line) {
        match parse_line(line, fixed_type) {
            Ok(Some(signal)) => {
                let id = format!("{} {}", signal.signal_type, signal.value);
                builder.upsert(
                    id,
                    Record {
                        signals: vec![signal],
                        metadata: json!({"line": idx + 1}),
                    },
                );
            }
            Ok(None) => {}
            Err(why) => {
                invalid += 1;
                if invalid <= 10 {
                    tracing::warn!(api, line = idx + 1, "skipping line: {why}");
                }
            }
        }
        let done = idx + 1;
        if builder.len() >= FILE_BATCH_SIZE && done < lines.len() {
            let state = FileState {
                sha256: sha256.clone(),
                lines_done: Some(done),
            };
            let cp = Checkpoint::new(api, None, Some(listing_id), &state);
            batches.push(builder.finish(
                cp,
                Some(ListingProgress {
                    listing_id,
                    complete: false,
                }),
            ));
        }
    }
    if invalid > 10 {
        tracing::warn!(api, invalid, "skipped invalid lines");
    }
    let state = FileState {
        sha256,
        lines_done: None,
    };
    let cp = Checkpoint::new(api, None, None, &state);
    batches.push(builder.finish(
        cp,
        Some(ListingProgress {
            listing_id,
            complete: true,
        }),
    ));
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordChange;

    const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

    #[test]
    fn line_parsing() {
        assert_eq!(parse_line("  ", None), Ok(None));
        assert_eq!(parse_line("# comment", None), Ok(None));
        assert_eq!(
            parse_line(&format!("pdq  {}", PDQ.to_uppercase()), None),
            Ok(Some(Signal::new("pdq", PDQ)))
        );
        assert_eq!(
            parse_line(PDQ, Some("pdq")),
            Ok(Some(Signal::new("pdq", PDQ)))
        );
        assert!(parse_line("pdq abc", None).is_err());
        assert!(parse_line("root:x:0:0 something", None).is_err());
        assert!(parse_line(PDQ, None).is_err());
        assert_eq!(
            parse_line("raw_text hello world", None),
            Ok(Some(Signal::new("raw_text", "hello world")))
        );
    }

    #[test]
    fn unchanged_file_yields_nothing_and_resume_continues() {
        let mut text = String::new();
        for i in 0..(FILE_BATCH_SIZE * 2 + 5) {
            text.push_str(&format!("pdq {:064x}\n", i));
        }
        let batches = file_batches(LOCAL_FILE, &text, None, None);
        assert_eq!(batches.len(), 3);
        let listing = batches[0].listing.unwrap();
        assert!(!listing.complete && batches[2].listing.unwrap().complete);
        let last = batches.last().unwrap();
        assert!(file_batches(LOCAL_FILE, &text, None, Some(&last.checkpoint)).is_empty());
        // Resume after the first batch: the same listing continues at line 10,001.
        let resumed = file_batches(LOCAL_FILE, &text, None, Some(&batches[0].checkpoint));
        assert_eq!(resumed.len(), 2);
        assert_eq!(resumed[0].changes, batches[1].changes);
        assert_eq!(resumed[1].listing.unwrap().listing_id, listing.listing_id);
        // A changed file restarts a listing from line 1.
        let changed = file_batches(LOCAL_FILE, "pdq 00\n", None, Some(&batches[0].checkpoint));
        assert_eq!(changed.len(), 1);
        assert!(changed[0].changes.is_empty());
        assert!(matches!(
            changed[0].listing,
            Some(ListingProgress { complete: true, .. })
        ));
        assert!(!matches!(
            batches[0].changes[0],
            RecordChange::Delete { .. }
        ));
    }
}
