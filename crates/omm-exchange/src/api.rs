//! The exchange API trait, credentials and the registry of built-in exchange APIs.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ExchangeError;
use crate::http::HttpSettings;
use crate::model::{Batch, Checkpoint, Review};
use crate::schema::ObjectSchema;

/// The stream of batches of one fetch. Ends normally when the exchange is up to date; an `Err`
/// item ends the fetch (the consumer stores nothing of it). Dropping it abandons the fetch.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<Batch, ExchangeError>> + Send>>;

/// A secret string (token, password, key): `Debug` prints `***`, and it is only serialised by
/// [`Credentials::to_storage_json`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for sending it to the exchange.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Typed credentials of one exchange API (shared by every exchange of that API).
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// `fb_threatexchange`: app access token `<app_id>|<app_secret>`.
    FbThreatExchange {
        /// The app access token.
        api_token: Secret,
    },
    /// `ncmec`: HTTP Basic credentials.
    Ncmec {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// `stop_ncii`: Azure function key and APIM subscription key.
    StopNcii {
        /// `x-functions-key` for FetchHashes.
        fetch_function_key: Secret,
        /// `Ocp-Apim-Subscription-Key` for every request.
        subscription_key: Secret,
        /// Base URL override (upstream keeps it in the credentials; `base_url` in the config wins).
        base_url_override: Option<String>,
        /// `x-functions-key` for SubmitFeedback; needed only for review write-back.
        submit_feedback_function_key: Option<Secret>,
    },
    /// `tat`: Tech Against Terrorism (TCAP) account.
    Tat {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
}

impl Credentials {
    /// The exchange API these credentials belong to.
    pub fn api(&self) -> &'static str {
        match self {
            Credentials::FbThreatExchange { .. } => "fb_threatexchange",
            Credentials::Ncmec { .. } => "ncmec",
            Credentials::StopNcii { .. } => "stop_ncii",
            Credentials::Tat { .. } => "tat",
        }
    }

    /// The JSON to persist (the same shape [`ExchangeApi::parse_credentials`] accepts). Only the
    /// store may see this; API responses report [`CredentialStatus`] instead.
    pub fn to_storage_json(&self) -> Value {
        match self {
            Credentials::FbThreatExchange { api_token } => {
                serde_json::json!({"api_token": api_token.expose()})
            }
            Credentials::Ncmec { user, password } => {
                serde_json::json!({"user": user, "password": password.expose()})
            }
            Credentials::StopNcii {
                fetch_function_key,
                subscription_key,
                base_url_override,
                submit_feedback_function_key,
            } => serde_json::json!({
                "fetch_function_key": fetch_function_key.expose(),
                "subscription_key": subscription_key.expose(),
                "base_url_override": base_url_override,
                "submit_feedback_function_key": submit_feedback_function_key.as_ref().map(Secret::expose),
            }),
            Credentials::Tat { username, password } => {
                serde_json::json!({"username": username, "password": password.expose()})
            }
        }
    }
}

/// What `/c/exchanges/api/<api>` reports about credentials: never the credentials themselves.
/// The field spelling is HMA's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// The API takes credentials.
    pub supports_authentification: bool,
    /// Credentials are stored.
    pub has_set_authentification: bool,
}

/// Everything needed to open one configured exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSetup {
    /// The exchange's name (also its bank's name).
    pub name: String,
    /// Its config, as returned by [`ExchangeApi::normalize_config`] (keys `name`, `api` and
    /// `enabled` are ignored if present).
    pub config: Value,
    /// The API's stored credentials, if any.
    pub credentials: Option<Credentials>,
    /// HTTP behaviour (timeouts, retries).
    pub http: HttpSettings,
}

/// An exchange API type (`sample`, `ncmec`, ...): schema, validation, and a factory of clients.
pub trait ExchangeApi: Send + Sync {
    /// The API name, a storage key (`fb_threatexchange`, `ncmec`, ...).
    fn name(&self) -> &'static str;

    /// The config fields, for `/c/exchanges/api/<api>/schema` and the UI.
    fn config_schema(&self) -> ObjectSchema;

    /// The credential fields, or `None` if the API takes no credentials.
    fn credentials_schema(&self) -> Option<ObjectSchema> {
        None
    }

    /// Validates an exchange config (`api_json`) and returns it normalised with defaults filled
    /// in. The keys `name`, `api` and `enabled` are ignored; any other unknown key is an error.
    fn normalize_config(&self, config: &Value) -> Result<Value, ExchangeError>;

    /// Parses and validates a credentials object.
    fn parse_credentials(&self, _credentials: &Value) -> Result<Credentials, ExchangeError> {
        Err(ExchangeError::Unsupported {
            api: self.name(),
            what: "credentials",
        })
    }

    /// True if [`Exchange::report_review`] writes review results back to this exchange.
    fn accepts_reviews(&self) -> bool {
        false
    }

    /// Opens a client for one configured exchange.
    fn open(&self, setup: ExchangeSetup) -> Result<Arc<dyn Exchange>, ExchangeError>;

    /// Whether credentials are supported and set (never the credentials themselves).
    fn credential_status(&self, stored: Option<&Credentials>) -> CredentialStatus {
        CredentialStatus {
            supports_authentification: self.credentials_schema().is_some(),
            has_set_authentification: stored.is_some_and(|c| c.api() == self.name()),
        }
    }
}

/// One opened exchange: fetches its records and takes review results.
pub trait Exchange: Send + Sync {
    /// The exchange API name.
    fn api(&self) -> &'static str;

    /// Fetches from `checkpoint` (or from scratch): a stream of batches, each to be stored
    /// atomically with its checkpoint. Stale or unusable checkpoints restart a full listing.
    fn fetch(&self, checkpoint: Option<Checkpoint>) -> BatchStream;

    /// Writes a review result back to the exchange. Exchanges that do not accept them return
    /// [`ExchangeError::Unsupported`].
    fn report_review(&self, review: Review) -> BoxFuture<'static, Result<(), ExchangeError>> {
        let api = self.api();
        Box::pin(async move {
            let _ = review;
            Err(ExchangeError::Unsupported {
                api,
                what: "review write-back",
            })
        })
    }
}

/// Every built-in exchange API, in display order.
pub fn all_apis() -> [&'static dyn ExchangeApi; 7] {
    [
        &crate::exchanges::sample::SampleApi,
        &crate::exchanges::file::LocalFileApi,
        &crate::exchanges::file::UrlFileApi,
        &crate::exchanges::fb_threatexchange::FbThreatExchangeApi,
        &crate::exchanges::ncmec::NcmecApi,
        &crate::exchanges::stop_ncii::StopNciiApi,
        &crate::exchanges::tat::TatApi,
    ]
}

/// The built-in exchange API with this name.
pub fn api_by_name(name: &str) -> Option<&'static dyn ExchangeApi> {
    all_apis().into_iter().find(|api| api.name() == name)
}

/// The config object without the generic keys, or an error if it is not an object.
pub(crate) fn api_fields(config: &Value) -> Result<Map<String, Value>, ExchangeError> {
    let mut map = match config {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => {
            return Err(ExchangeError::InvalidConfig(
                "config must be a JSON object".into(),
            ))
        }
    };
    for key in ["name", "api", "enabled"] {
        map.remove(key);
    }
    Ok(map)
}

/// Deserialises a typed config (with `deny_unknown_fields`) from an `api_json` value.
pub(crate) fn parse_typed_config<T: serde::de::DeserializeOwned>(
    config: &Value,
) -> Result<T, ExchangeError> {
    serde_json::from_value(Value::Object(api_fields(config)?))
        .map_err(|e| ExchangeError::InvalidConfig(e.to_string()))
}

/// Serialises a typed config back to JSON.
pub(crate) fn config_to_json<T: Serialize>(config: &T) -> Result<Value, ExchangeError> {
    serde_json::to_value(config).map_err(|e| ExchangeError::InvalidConfig(e.to_string()))
}

/// A required non-empty string field of a credentials object.
pub(crate) fn required_str(creds: &Value, key: &str) -> Result<String, ExchangeError> {
    match creds.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) => Err(ExchangeError::InvalidCredentials(format!(
            "`{key}` must not be empty"
        ))),
        Some(_) => Err(ExchangeError::InvalidCredentials(format!(
            "`{key}` must be a string"
        ))),
        None => Err(ExchangeError::InvalidCredentials(format!(
            "`{key}` is required"
        ))),
    }
}

/// An optional string field of a credentials object (null or empty means absent).
pub(crate) fn optional_str(creds: &Value, key: &str) -> Result<Option<String>, ExchangeError> {
    match creds.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(_) => Err(ExchangeError::InvalidCredentials(format!(
            "`{key}` must be a string"
        ))),
    }
}

/// Rejects keys of a credentials object that the API does not know.
pub(crate) fn check_credential_keys(creds: &Value, known: &[&str]) -> Result<(), ExchangeError> {
    let Value::Object(map) = creds else {
        return Err(ExchangeError::InvalidCredentials(
            "credentials must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ExchangeError::InvalidCredentials(format!(
            "unknown field `{unknown}`, expected one of {known:?}"
        )));
    }
    Ok(())
}

/// The credentials an exchange needs, or the typed "missing" error.
pub(crate) fn expect_credentials(
    api: &'static str,
    creds: Option<Credentials>,
) -> Result<Credentials, ExchangeError> {
    match creds {
        Some(c) if c.api() == api => Ok(c),
        Some(c) => Err(ExchangeError::InvalidCredentials(format!(
            "credentials of '{}' given to '{api}'",
            c.api()
        ))),
        None => Err(ExchangeError::MissingCredentials(api)),
    }
}
