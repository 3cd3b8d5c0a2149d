//! The error type shared by every exchange.

/// Why an exchange operation failed.
///
/// Messages never contain credentials: URLs are reported without their query string.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The exchange configuration (`api_json`) is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// The credentials object is malformed or incomplete.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(String),
    /// The exchange needs credentials and none are set.
    #[error("no credentials set for exchange API '{0}'")]
    MissingCredentials(&'static str),
    /// No exchange API is registered under this name.
    #[error("no such exchange API '{0}'")]
    UnknownApi(String),
    /// The remote service rejected the credentials (HTTP 401/403). Never retried.
    #[error("authentication rejected by {url} (HTTP {status}): {message}")]
    Auth {
        /// HTTP status code (401 or 403).
        status: u16,
        /// The URL without its query string.
        url: String,
        /// A short excerpt of the response body.
        message: String,
    },
    /// The remote service answered with an unexpected HTTP status (after any retries).
    #[error("HTTP {status} from {url}: {message}")]
    Http {
        /// HTTP status code.
        status: u16,
        /// The URL without its query string.
        url: String,
        /// A short excerpt of the response body.
        message: String,
    },
    /// The request could not be sent or the response not received (after any retries).
    #[error("request to {url} failed: {message}")]
    Transport {
        /// The URL without its query string.
        url: String,
        /// What went wrong (connect error, timeout, ...).
        message: String,
    },
    /// The response was received but is not what the wire protocol documents.
    #[error("malformed response from {url}: {message}")]
    MalformedResponse {
        /// The URL without its query string.
        url: String,
        /// What was wrong with it.
        message: String,
    },
    /// Reading a local file failed.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file path.
        path: String,
        /// The OS error.
        message: String,
    },
    /// The exchange does not accept this operation (e.g. review write-back).
    #[error("exchange API '{api}' does not support {what}")]
    Unsupported {
        /// The exchange API name.
        api: &'static str,
        /// The unsupported operation.
        what: &'static str,
    },
    /// The review cannot be written back (e.g. the record carries no id the exchange needs).
    #[error("cannot write back review: {0}")]
    InvalidReview(String),
}

impl ExchangeError {
    /// True for errors caused by rejected or missing credentials; the operator must fix them.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            ExchangeError::Auth { .. }
                | ExchangeError::MissingCredentials(_)
                | ExchangeError::InvalidCredentials(_)
        )
    }

    pub(crate) fn malformed(url: &str, message: impl Into<String>) -> Self {
        ExchangeError::MalformedResponse {
            url: crate::http::redact_url(url),
            message: message.into(),
        }
    }
}
