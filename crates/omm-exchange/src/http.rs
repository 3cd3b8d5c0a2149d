//! Shared HTTP behaviour of every exchange client: timeouts, bounded bodies, retries of 429/5xx
//! with exponential backoff and jitter honouring `Retry-After`, typed auth errors.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use crate::error::ExchangeError;

/// HTTP settings of exchange clients; the server takes them from its config, tests shrink them.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Whole-request timeout (connect, send, receive the full body).
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Retries after the first attempt for 429, 5xx and transport errors (idempotent requests).
    pub max_retries: u32,
    /// First backoff delay; doubled at each retry, with jitter.
    pub initial_backoff: Duration,
    /// Upper bound of one backoff delay.
    pub max_backoff: Duration,
    /// Longest `Retry-After` honoured; a server asking for more fails the fetch (it is resumed
    /// from its checkpoint on the next run) instead of blocking the fetcher.
    pub max_retry_after: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// User-Agent header.
    pub user_agent: String,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_retries: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            max_response_bytes: 256 * 1024 * 1024,
            user_agent: concat!("omm/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl HttpSettings {
    /// Settings for tests against a local fake server: millisecond backoffs, short timeouts.
    pub fn for_tests() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(2),
            ..HttpSettings::default()
        }
    }

    /// Backoff before retry number `retry` (0-based): exponential, capped, with jitter in [d/2, d].
    fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(20)))
            .min(self.max_backoff);
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        if nanos < 2 {
            return base;
        }
        Duration::from_nanos(rand::thread_rng().gen_range(nanos / 2..=nanos))
    }
}

/// A URL without query, fragment or user info, safe to put in logs and error messages.
pub(crate) fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Validates a configured base URL (http or https, with a host, no credentials, query or
/// fragment) and returns it without a trailing slash.
pub fn validate_base_url(raw: &str) -> Result<String, ExchangeError> {
    let url = Url::parse(raw.trim())
        .map_err(|e| ExchangeError::InvalidConfig(format!("base_url '{raw}' is not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ExchangeError::InvalidConfig(format!(
            "base_url must be http or https, not '{}'",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ExchangeError::InvalidConfig("base_url has no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ExchangeError::InvalidConfig(
            "base_url must not contain credentials; use the exchange credentials".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ExchangeError::InvalidConfig(
            "base_url must not have a query or fragment".into(),
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// How a request authenticates.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// A request description that can be re-sent on retry.
#[derive(Clone)]
pub(crate) struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Option<(&'static str, Vec<u8>)>,
    pub auth: Auth,
    /// Retry on 429/5xx/transport errors. Only for idempotent requests.
    pub retry: bool,
}

impl Request {
    pub(crate) fn get(url: impl Into<String>) -> Self {
        Request {
            method: Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            auth: Auth::None,
            retry: true,
        }
    }

    pub(crate) fn with_method(mut self, method: Method, retry: bool) -> Self {
        self.method = method;
        self.retry = retry;
        self
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers
            .push((HeaderName::from_static(name), value.into()));
        self
    }

    pub(crate) fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub(crate) fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }
}

/// A successful (2xx) response with its full body.
pub(crate) struct Response {
    pub url: String,
    pub body: Vec<u8>,
}

impl Response {
    pub(crate) fn json<T: DeserializeOwned>(&self) -> Result<T, ExchangeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ExchangeError::malformed(&self.url, format!("invalid JSON: {e}")))
    }

    pub(crate) fn text(&self) -> Result<&str, ExchangeError> {
        std::str::from_utf8(&self.body)
            .map_err(|_| ExchangeError::malformed(&self.url, "body is not UTF-8"))
    }
}

/// The HTTP client shared by the exchange clients.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
}

enum Attempt {
    Done(Result<Response, ExchangeError>),
    Retry {
        error: ExchangeError,
        retry_after: Option<Duration>,
    },
}

impl HttpClient {
    pub(crate) fn new(settings: HttpSettings) -> Result<Self, ExchangeError> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(settings.user_agent.clone())
            // Redirects could leak auth headers to another host; exchanges do not redirect.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ExchangeError::Transport {
                url: String::new(),
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(HttpClient { client, settings })
    }

    /// Sends the request, retrying idempotent ones on 429/5xx/transport errors.
    pub(crate) async fn send(&self, req: &Request) -> Result<Response, ExchangeError> {
        let mut retry = 0u32;
        loop {
            match self.attempt(req).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { error, retry_after } => {
                    if !req.retry || retry >= self.settings.max_retries {
                        return Err(error);
                    }
                    let delay = match retry_after {
                        Some(wait) if wait > self.settings.max_retry_after => return Err(error),
                        Some(wait) => wait,
                        None => self.settings.backoff(retry),
                    };
                    tracing::debug!(url = %redact_url(&req.url), %error, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        }
    }

    async fn attempt(&self, req: &Request) -> Attempt {
        let safe_url = redact_url(&req.url);
        let mut headers = HeaderMap::new();
        for (name, value) in &req.headers {
            match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(name.clone(), v);
                }
                Err(_) => {
                    return Attempt::Done(Err(ExchangeError::InvalidCredentials(format!(
                        "value of header {name} contains invalid characters"
                    ))))
                }
            }
        }
        let mut builder = self
            .client
            .request(req.method.clone(), &req.url)
            .headers(headers);
        builder = match &req.auth {
            Auth::None => builder,
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password)),
            Auth::Bearer(token) => builder.bearer_auth(token),
        };
        if let Some((content_type, body)) = &req.body {
            builder = builder
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: ExchangeError::Transport {
                        url: safe_url,
                        message: e.without_url().to_string(),
                    },
                    retry_after: None,
                }
            }
        };
        let status = response.status();
        let retry_after = parse_retry_after(response.headers().get(RETRY_AFTER));
        let body = match self.read_body(response, &safe_url).await {
            Ok(body) => body,
            Err(error) => {
                return if status.is_success() || is_retryable(status) {
                    Attempt::Retry {
                        error,
                        retry_after: None,
                    }
                } else {
                    Attempt::Done(Err(error))
                }
            }
        };
        if status.is_success() {
            return Attempt::Done(Ok(Response {
                url: req.url.clone(),
                body,
            }));
        }
        let message = excerpt(&body);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Attempt::Done(Err(ExchangeError::Auth {
                status: status.as_u16(),
                url: safe_url,
                message,
            }));
        }
        let error = ExchangeError::Http {
            status: status.as_u16(),
            url: safe_url,
            message,
        };
        if is_retryable(status) {
            Attempt::Retry { error, retry_after }
        } else {
            Attempt::Done(Err(error))
        }
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        safe_url: &str,
    ) -> Result<Vec<u8>, ExchangeError> {
        let limit = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(ExchangeError::malformed(
                safe_url,
                format!("response larger than {limit} bytes"),
            ));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(ExchangeError::malformed(
                            safe_url,
                            format!("response larger than {limit} bytes"),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(ExchangeError::Transport {
                        url: safe_url.to_string(),
                        message: format!("reading body: {}", e.without_url()),
                    })
                }
            }
        }
    }
}

fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// First 300 characters of a body, for error messages.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((idx, _)) => format!("{}...", &text[..idx]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_validation() {
        assert_eq!(
            validate_base_url("https://example.org/api/").unwrap(),
            "https://example.org/api"
        );
        assert_eq!(
            validate_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "ftp://x.org",
            "not a url",
            "file:///etc/passwd",
            "https://u:p@x.org",
            "https://x.org/?a=b",
            "https://x.org/#f",
        ] {
            assert!(validate_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_drops_query_and_userinfo() {
        assert_eq!(
            redact_url("https://u:p@graph.example/1/threat_updates/?access_token=1|secret"),
            "https://graph.example/1/threat_updates/"
        );
    }

    #[test]
    fn retry_after_forms() {
        let v = HeaderValue::from_static("3");
        assert_eq!(parse_retry_after(Some(&v)), Some(Duration::from_secs(3)));
        let past = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_retry_after(Some(&past)), Some(Duration::ZERO));
        let junk = HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(Some(&junk)), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = HttpSettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..HttpSettings::default()
        };
        for retry in 0..10 {
            let d = s.backoff(retry);
            let cap = (100u64 << retry).min(1000);
            assert!(d <= Duration::from_millis(cap), "{retry}: {d:?}");
            assert!(d >= Duration::from_millis(cap / 2), "{retry}: {d:?}");
        }
    }
}
