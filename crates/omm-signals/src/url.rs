//! `url_md5`: the MD5 of a URL normalised as python-threatexchange's `normalize_url`.
//!
//! That function lowercases the whole URL, round-trips it through Python 3's
//! `urllib.parse.urlparse(...).geturl()`, removes the first occurrence of `"<scheme>://"`
//! and hashes the UTF-8 bytes. The round trip is reproduced here, quirks included (an empty
//! `?`, `#` or `;params` disappears; a schemeless URL loses its first `://` wherever it is),
//! so that our `url_md5` values equal the ones already shared.

use md5::{Digest, Md5};

/// The URL cannot be parsed (Python raises `ValueError` for these).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("invalid URL: {0}")]
pub struct InvalidUrl(pub &'static str);

const SCHEME_CHARS: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.";

const USES_NETLOC: &[&str] = &[
    "",
    "ftp",
    "http",
    "gopher",
    "nntp",
    "telnet",
    "imap",
    "wais",
    "file",
    "mms",
    "https",
    "shttp",
    "snews",
    "prospero",
    "rtsp",
    "rtsps",
    "rtspu",
    "rsync",
    "svn",
    "svn+ssh",
    "sftp",
    "nfs",
    "git",
    "git+ssh",
    "ws",
    "wss",
    "itms-services",
];

const USES_PARAMS: &[&str] = &[
    "", "ftp", "hdl", "prospero", "http", "imap", "https", "shttp", "rtsp", "rtsps", "rtspu",
    "sip", "sips", "mms", "sftp", "tel",
];

/// `urlparse(url).geturl()` and the scheme, as Python 3.11 computes them.
fn python_geturl(url: &str) -> Result<(String, String), InvalidUrl> {
    // urlsplit: strip leading C0 controls and spaces, drop tab/CR/LF anywhere.
    let url = url.trim_start_matches(|c: char| c <= ' ');
    let url: String = url
        .chars()
        .filter(|c| !matches!(c, '\t' | '\r' | '\n'))
        .collect();
    let mut rest: &str = &url;
    let mut scheme = String::new();
    if let Some(i) = rest.find(':') {
        let first = rest.chars().next();
        if i > 0
            && first.is_some_and(|c| c.is_ascii_alphabetic())
            && rest[..i].chars().all(|c| SCHEME_CHARS.contains(c))
        {
            scheme = rest[..i].to_ascii_lowercase();
            rest = &rest[i + 1..];
        }
    }
    let mut netloc = "";
    if rest.starts_with("//") {
        let after = &rest[2..];
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        netloc = &after[..end];
        rest = &after[end..];
        if netloc.contains('[') != netloc.contains(']') {
            return Err(InvalidUrl("unbalanced brackets in the host"));
        }
    }
    let mut fragment = "";
    if let Some(i) = rest.find('#') {
        fragment = &rest[i + 1..];
        rest = &rest[..i];
    }
    let mut query = "";
    if let Some(i) = rest.find('?') {
        query = &rest[i + 1..];
        rest = &rest[..i];
    }
    // urlparse: split ";params" off the last path segment, for schemes that use params.
    let mut path = rest;
    let mut params = "";
    if USES_PARAMS.contains(&scheme.as_str()) && path.contains(';') {
        let i = match path.rfind('/') {
            Some(slash) => path[slash..].find(';').map(|j| slash + j),
            None => path.find(';'),
        };
        if let Some(i) = i {
            params = &path[i + 1..];
            path = &path[..i];
        }
    }
    // urlunparse
    let mut u = path.to_string();
    if !params.is_empty() {
        u = format!("{u};{params}");
    }
    if !netloc.is_empty()
        || (!scheme.is_empty() && USES_NETLOC.contains(&scheme.as_str()) && !u.starts_with("//"))
    {
        if !u.is_empty() && !u.starts_with('/') {
            u.insert(0, '/');
        }
        u = format!("//{netloc}{u}");
    }
    if !scheme.is_empty() {
        u = format!("{scheme}:{u}");
    }
    if !query.is_empty() {
        u = format!("{u}?{query}");
    }
    if !fragment.is_empty() {
        u = format!("{u}#{fragment}");
    }
    Ok((u, scheme))
}

/// The normalised form python-threatexchange hashes for `url_md5`.
pub fn normalize_url(url: &str) -> Result<String, InvalidUrl> {
    let lower = url.to_lowercase();
    let (full, scheme) = python_geturl(&lower)?;
    Ok(full.replacen(&format!("{scheme}://"), "", 1))
}

/// `url_md5` of a URL: lower-case hex MD5 of [`normalize_url`].
pub fn url_md5(url: &str) -> Result<String, InvalidUrl> {
    let n = normalize_url(url)?;
    Ok(hex_lower(&Md5::digest(n.as_bytes())))
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_vectors() {
        assert_eq!(
            url_md5("http://evil.com").unwrap(),
            "6d3af727a4e7b025fd59a5469b3a9c57"
        );
        assert_eq!(
            url_md5("www.facebook.com/?user=123").unwrap(),
            "e359430911fe80c2dd526d3cca21da30"
        );
        assert_eq!(
            url_md5("https://www.facebook.com/?user=123").unwrap(),
            "e359430911fe80c2dd526d3cca21da30"
        );
        assert_eq!(
            url_md5("fb.com").unwrap(),
            "fb8191ebebc85f9eb6fd21e198f20979"
        );
        assert_eq!(url_md5("").unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn python_quirks() {
        assert_eq!(
            normalize_url("foo.com/redirect?u=http://bar").unwrap(),
            "foo.com/redirect?u=httpbar"
        );
        assert_eq!(normalize_url("HTTP://A.com/P?").unwrap(), "a.com/p");
        assert_eq!(normalize_url("http://a.com/x#").unwrap(), "a.com/x");
        assert_eq!(normalize_url("http://a.com/x;").unwrap(), "a.com/x");
        assert_eq!(normalize_url("http:foo").unwrap(), "/foo");
        assert!(normalize_url("http://[::1/").is_err());
    }
}
