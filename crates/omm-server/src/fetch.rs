//! Downloads for `?url=` endpoints, hardened against server-side request forgery.
//!
//! * Only `http` and `https` URLs with a host are accepted; an optional host allow-list
//!   (exact host or any subdomain of an entry) is applied to the first URL and every redirect.
//! * Host names are resolved by our own resolver, which refuses the whole name when **any**
//!   of its addresses is loopback, private, link-local, unspecified, multicast or otherwise
//!   not public (IPv4 and IPv6, including IPv4-mapped/compatible/NAT64/6to4 forms), unless
//!   private targets are explicitly allowed. Because the connection uses exactly the addresses
//!   the resolver vetted, a DNS answer cannot change between check and use.
//! * Redirects are followed by hand (up to a limit) and each hop is checked again.
//! * The download has a total timeout and a size limit, enforced on the declared
//!   `Content-Length` and again while streaming, so an oversized body is never buffered.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use url::{Host, Url};

/// What a [`UrlFetcher`] allows.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// If non-empty, hosts must equal an entry or be a subdomain of one (lower case).
    pub allowed_hostnames: Vec<String>,
    /// Allow non-public target addresses (loopback, private, link-local, ...).
    pub allow_private_targets: bool,
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// Timeout of the whole download, redirects included.
    pub timeout: Duration,
    /// Redirects followed at most.
    pub max_redirects: usize,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allowed_hostnames: Vec::new(),
            allow_private_targets: false,
            max_bytes: crate::config::DEFAULT_MAX_REMOTE_FILE_SIZE,
            timeout: Duration::from_secs(30),
            max_redirects: 5,
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// Not an absolute http(s) URL with a host.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// The host is not on the allow-list.
    #[error("host '{0}' is not in the allowed hostnames")]
    HostNotAllowed(String),
    /// The host is, or resolves to, a non-public address.
    #[error("host '{host}' resolves to non-public address {addr}")]
    ForbiddenAddress {
        /// The host name or literal.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
    /// More redirects than allowed.
    #[error("too many redirects (more than {0})")]
    TooManyRedirects(usize),
    /// The body is larger than allowed.
    #[error("Content too large")]
    TooLarge,
    /// The server answered with a non-2xx status.
    #[error("{status} for url: {url}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The URL that answered it.
        url: String,
    },
    /// Connection, TLS or protocol failure.
    #[error("{0}")]
    Transport(String),
    /// The download took too long.
    #[error("timed out")]
    Timeout,
}

impl FetchError {
    /// True for errors that come from the URL or its target being refused by policy.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self,
            FetchError::InvalidUrl(_)
                | FetchError::HostNotAllowed(_)
                | FetchError::ForbiddenAddress { .. }
        )
    }
}

/// A downloaded body.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body.
    pub bytes: Bytes,
    /// The response's `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The URL that finally answered (after redirects).
    pub final_url: Url,
}

/// A download client that enforces a [`FetchPolicy`]. Cheap to clone.
#[derive(Clone)]
pub struct UrlFetcher {
    client: reqwest::Client,
    policy: Arc<FetchPolicy>,
}

impl std::fmt::Debug for UrlFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlFetcher")
            .field("policy", &self.policy)
            .finish()
    }
}

/// Error raised inside the resolver, found again in reqwest's error chain.
#[derive(Debug)]
struct RefusedAddress {
    host: String,
    addr: IpAddr,
}

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to non-public {}", self.host, self.addr)
    }
}

impl std::error::Error for RefusedAddress {}

/// Resolver that vets every address of a name.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if addrs.is_empty() {
                return Err(format!("no addresses found for {host}").into());
            }
            if !allow_private {
                if let Some(bad) = addrs.iter().find(|a| !is_public_ip(a.ip())) {
                    return Err(Box::new(RefusedAddress {
                        host,
                        addr: bad.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            let iter: Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

impl UrlFetcher {
    /// Builds a fetcher. Fails only if the TLS backend cannot be initialised.
    pub fn new(policy: FetchPolicy) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: policy.allow_private_targets,
            }))
            .connect_timeout(policy.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("omm/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport(e.to_string()))?;
        Ok(UrlFetcher {
            client,
            policy: Arc::new(policy),
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &FetchPolicy {
        &self.policy
    }

    /// Checks a URL against the policy without touching the network (no DNS either): scheme,
    /// host, port, allow-list and, for IP literals, the address class.
    pub fn check_url(&self, raw: &str) -> Result<Url, FetchError> {
        let url = parse_http_url(raw)?;
        self.check_parsed(&url)?;
        Ok(url)
    }

    fn check_parsed(&self, url: &Url) -> Result<(), FetchError> {
        let host = url
            .host()
            .ok_or_else(|| FetchError::InvalidUrl("missing host".into()))?;
        let host_text = match &host {
            Host::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
        if !self.policy.allowed_hostnames.is_empty()
            && !host_allowed(&host_text, &self.policy.allowed_hostnames)
        {
            return Err(FetchError::HostNotAllowed(host_text));
        }
        if !self.policy.allow_private_targets {
            let literal = match host {
                Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
                Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
                Host::Domain(_) => None,
            };
            if let Some(addr) = literal {
                if !is_public_ip(addr) {
                    return Err(FetchError::ForbiddenAddress {
                        host: host_text,
                        addr,
                    });
                }
            }
        }
        Ok(())
    }

    /// Downloads `raw`, following redirects by hand and re-checking each one.
    pub async fn fetch(&self, raw: &str) -> Result<Fetched, FetchError> {
        let url = self.check_url(raw)?;
        match tokio::time::timeout(self.policy.timeout, self.fetch_checked(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout),
        }
    }

    async fn fetch_checked(&self, mut url: Url) -> Result<Fetched, FetchError> {
        let mut redirects = 0usize;
        loop {
            let response = self
                .client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| classify_reqwest_error(&e))?;
            let status = response.status();
            if status.is_redirection() {
                let Some(location) = response.headers().get(LOCATION) else {
                    return Err(FetchError::Status {
                        status: status.as_u16(),
                        url: url.to_string(),
                    });
                };
                redirects += 1;
                if redirects > self.policy.max_redirects {
                    return Err(FetchError::TooManyRedirects(self.policy.max_redirects));
                }
                let location = location
                    .to_str()
                    .map_err(|_| FetchError::InvalidUrl("redirect location is not text".into()))?;
                let next = url
                    .join(location)
                    .map_err(|e| FetchError::InvalidUrl(format!("redirect location: {e}")))?;
                let next = parse_http_url(next.as_str())?;
                self.check_parsed(&next)?;
                url = next;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    url: url.to_string(),
                });
            }
            if let Some(len) = response
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                if len > self.policy.max_bytes {
                    return Err(FetchError::TooLarge);
                }
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = self.read_limited(response).await?;
            return Ok(Fetched {
                bytes,
                content_type,
                final_url: url,
            });
        }
    }

    async fn read_limited(&self, mut response: reqwest::Response) -> Result<Bytes, FetchError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify_reqwest_error(&e))?
        {
            if (buf.len() + chunk.len()) as u64 > self.policy.max_bytes {
                return Err(FetchError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

fn classify_reqwest_error(err: &reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RefusedAddress>() {
            return FetchError::ForbiddenAddress {
                host: refused.host.clone(),
                addr: refused.addr,
            };
        }
        source = e.source();
    }
    if err.is_timeout() {
        return FetchError::Timeout;
    }
    // The innermost cause is the most useful part of reqwest's chain.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    FetchError::Transport(text)
}

/// Parses an absolute http(s) URL with a non-empty host, as Open Media Match's URL check does.
pub fn parse_http_url(raw: &str) -> Result<Url, FetchError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FetchError::InvalidUrl("empty URL".into()));
    }
    let url = Url::parse(trimmed).map_err(|e| FetchError::InvalidUrl(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(FetchError::InvalidUrl(format!(
            "scheme '{}' is not http or https",
            url.scheme()
        )));
    }
    match url.host() {
        None => return Err(FetchError::InvalidUrl("missing host".into())),
        Some(Host::Domain("")) => return Err(FetchError::InvalidUrl("missing host".into())),
        Some(_) => {}
    }
    // `http:///example.com` is normalised by the URL standard into `http://example.com/`;
    // Open Media Match rejects it, and so do we: the authority must be written out.
    let after_scheme = &trimmed[url.scheme().len() + 1..];
    if !after_scheme.starts_with("//") || after_scheme.starts_with("///") {
        return Err(FetchError::InvalidUrl("missing host".into()));
    }
    // A trailing ':' with no port (`http://example.com:`) is accepted by the URL standard.
    let authority_end = after_scheme[2..]
        .find(['/', '?', '#'])
        .map(|i| i + 2)
        .unwrap_or(after_scheme.len());
    if after_scheme[2..authority_end].ends_with(':') {
        return Err(FetchError::InvalidUrl("empty port".into()));
    }
    Ok(url)
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|entry| {
        host == entry
            || (host.len() > entry.len()
                && host.ends_with(entry.as_str())
                && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
    })
}

/// True when `ip` is a public unicast address a server may be asked to fetch from.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    let forbidden = o[0] == 0                                   // "this network", unspecified
        || o[0] == 10                                           // private
        || o[0] == 127                                          // loopback
        || (o[0] == 100 && (o[1] & 0xc0) == 64)                 // shared address space (CGNAT)
        || (o[0] == 169 && o[1] == 254)                         // link-local (cloud metadata)
        || (o[0] == 172 && (o[1] & 0xf0) == 16)                 // private
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)              // IETF protocol assignments
        || (o[0] == 192 && o[1] == 0 && o[2] == 2)              // documentation
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)            // 6to4 relay anycast
        || (o[0] == 192 && o[1] == 168)                         // private
        || (o[0] == 198 && (o[1] & 0xfe) == 18)                 // benchmarking
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)           // documentation
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)            // documentation
        || o[0] >= 224; // multicast, reserved, broadcast
    !forbidden
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // IPv4-mapped (::ffff:a.b.c.d) and deprecated IPv4-compatible (::a.b.c.d).
    if s[0..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // IPv4/IPv6 translation (NAT64 well-known and local-use prefixes).
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // 6to4 embeds an IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let forbidden = (s[0] & 0xfe00) == 0xfc00               // unique local
        || (s[0] & 0xffc0) == 0xfe80                        // link-local
        || (s[0] & 0xffc0) == 0xfec0                        // site-local (deprecated)
        || (s[0] & 0xff00) == 0xff00                        // multicast
        || (s[0] == 0x2001 && s[1] == 0)                    // Teredo
        || (s[0] == 0x2001 && s[1] == 0xdb8)                // documentation
        || (s[0] == 0x3fff && (s[1] & 0xf000) == 0)         // documentation (2024)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])          // discard-only
        || s[0] == 0; // anything else in ::/16 is reserved
    !forbidden
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::new(
        (high >> 8) as u8,
        (high & 0xff) as u8,
        (low >> 8) as u8,
        (low & 0xff) as u8,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(allowed: &[&str]) -> UrlFetcher {
        UrlFetcher::new(FetchPolicy {
            allowed_hostnames: allowed.iter().map(|s| s.to_string()).collect(),
            ..FetchPolicy::default()
        })
        .unwrap()
    }

    #[test]
    fn valid_urls() {
        let f = fetcher(&[]);
        for url in [
            "http://example.com",
            "https://example.com",
            "http://example.com:8080",
            "https://example.com/path/to/image.jpg",
            "https://example.com/image.jpg?size=large",
            "https://example.com/image.jpg#section",
            "https://sub.example.com/image.jpg",
        ] {
            assert!(f.check_url(url).is_ok(), "{url}");
        }
    }

    #[test]
    fn invalid_urls() {
        let f = fetcher(&[]);
        for url in [
            "ftp://example.com/file",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "data:text/plain;base64,SGVsbG8=",
            "ws://example.com",
            "wss://example.com",
            "example.com",
            "//example.com",
            "http://",
            "https://",
            "",
            "not a url",
            "http:///example.com",
            "http://example.com:",
            "http://example.com:abc",
        ] {
            assert!(
                matches!(f.check_url(url), Err(FetchError::InvalidUrl(_))),
                "{url}: {:?}",
                f.check_url(url)
            );
        }
    }

    #[test]
    fn allow_list() {
        let f = fetcher(&["example.com", "trusted.org"]);
        for ok in [
            "https://example.com/a.jpg",
            "https://cdn.example.com/a.jpg",
            "https://trusted.org/",
            "https://EXAMPLE.com/",
        ] {
            assert!(f.check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://evil.com/",
            "https://malicious-site.com/",
            "https://example.com.evil.com/",
            "https://evil.com/example.com",
            "https://notexample.com/",
            "https://github.com/",
        ] {
            assert!(
                matches!(f.check_url(bad), Err(FetchError::HostNotAllowed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ip_literals_are_refused_unless_public() {
        let f = fetcher(&[]);
        for bad in [
            "http://127.0.0.1/",
            "http://127.1.2.3:8080/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://[2002:7f00:1::]/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
        ] {
            assert!(
                matches!(f.check_url(bad), Err(FetchError::ForbiddenAddress { .. })),
                "{bad}: {:?}",
                f.check_url(bad)
            );
        }
        for ok in [
            "http://93.184.216.34/",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
            "http://[::ffff:8.8.8.8]/",
        ] {
            assert!(f.check_url(ok).is_ok(), "{ok}");
        }
        let open = UrlFetcher::new(FetchPolicy {
            allow_private_targets: true,
            ..FetchPolicy::default()
        })
        .unwrap();
        assert!(open.check_url("http://127.0.0.1:1/").is_ok());
    }

    #[test]
    fn public_ranges_boundaries() {
        assert!(is_public_ip("172.15.255.255".parse().unwrap()));
        assert!(!is_public_ip("172.31.255.255".parse().unwrap()));
        assert!(is_public_ip("172.32.0.0".parse().unwrap()));
        assert!(is_public_ip("100.63.255.255".parse().unwrap()));
        assert!(!is_public_ip("100.127.255.255".parse().unwrap()));
        assert!(is_public_ip("100.128.0.0".parse().unwrap()));
        assert!(is_public_ip("223.255.255.255".parse().unwrap()));
        assert!(!is_public_ip("2001:db8::1".parse().unwrap()));
        assert!(is_public_ip("2001:4860::8888".parse().unwrap()));
    }
}
