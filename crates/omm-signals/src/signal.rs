//! Signal types: named hash algorithms, their serialised forms, distances and hashers.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};
use sha2::Sha256;
use thiserror::Error;

use crate::content::ContentType;
use crate::decode::{DecodeError, DecodeOptions};
use crate::pdq::{self, PdqHash, PdqOptions};
use crate::url::{hex_lower, InvalidUrl};

/// A serialised signal or a name is invalid.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SignalError {
    /// Wrong number of characters.
    #[error("expected {expected} characters, got {actual}")]
    BadLength {
        /// Required length.
        expected: usize,
        /// Length given.
        actual: usize,
    },
    /// A character is not a hex digit.
    #[error("not a hexadecimal string")]
    NotHex,
    /// Empty (or blank) value.
    #[error("empty signal")]
    Empty,
    /// No content type, signal type or variant has this name.
    #[error("unknown name {0:?}")]
    UnknownName(String),
}

/// Hashing failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HashError {
    /// The image could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The photo was hashed but its PDQ quality is below the threshold of 50: the hash is not
    /// reliable for matching (python-threatexchange returns "" here).
    #[error("quality too low ({quality} < {threshold})", threshold = pdq::QUALITY_THRESHOLD)]
    QualityTooLow {
        /// The hash that was computed.
        hash: PdqHash,
        /// Its quality.
        quality: u8,
    },
    /// The signal type does not apply to the content type.
    #[error("signal type {signal_type} does not apply to {content_type} content")]
    NotApplicable {
        /// The signal type asked for.
        signal_type: SignalType,
        /// The content type given.
        content_type: ContentType,
    },
    /// URL content is not UTF-8 text.
    #[error("URL content is not UTF-8 text")]
    NotText,
    /// URL content is empty.
    #[error("URL content is empty")]
    EmptyUrl,
    /// URL cannot be normalised.
    #[error(transparent)]
    Url(#[from] InvalidUrl),
}

/// A hashing algorithm, named exactly as python-threatexchange / Open Media Match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalType {
    /// PDQ photo hash: 64 hex chars, Hamming distance, match at ≤ 31.
    Pdq,
    /// MD5 of a video file's bytes: 32 hex chars, exact match.
    VideoMd5,
    /// SHA-256 of a video file's bytes: 64 hex chars, exact match.
    VideoSha256,
    /// A URL, matched by string equality.
    Url,
    /// MD5 of a normalised URL (see [`crate::url::normalize_url`]): 32 hex chars, exact match.
    UrlMd5,
}

/// Options for [`SignalType::hash_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashOptions {
    /// Image decoding options (pixel limit, EXIF orientation).
    pub decode: DecodeOptions,
    /// PDQ options (pre-resize).
    pub pdq: PdqOptions,
}

/// A computed signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Its type.
    pub signal_type: SignalType,
    /// Its canonical serialised value.
    pub value: String,
    /// PDQ quality (0..=100); `None` for other types.
    pub quality: Option<u8>,
}

impl SignalType {
    /// Every signal type this crate implements.
    pub const ALL: [SignalType; 5] = [
        SignalType::Pdq,
        SignalType::VideoMd5,
        SignalType::VideoSha256,
        SignalType::Url,
        SignalType::UrlMd5,
    ];

    /// The canonical name (storage key).
    pub const fn name(self) -> &'static str {
        match self {
            SignalType::Pdq => "pdq",
            SignalType::VideoMd5 => "video_md5",
            SignalType::VideoSha256 => "video_sha256",
            SignalType::Url => "url",
            SignalType::UrlMd5 => "url_md5",
        }
    }

    /// The content types this signal type applies to.
    pub fn content_types(self) -> &'static [ContentType] {
        match self {
            SignalType::Pdq => &[ContentType::Photo],
            SignalType::VideoMd5 | SignalType::VideoSha256 => &[ContentType::Video],
            SignalType::Url | SignalType::UrlMd5 => &[ContentType::Url],
        }
    }

    /// Whether matching is exact string equality (distance 0 or 1) rather than a metric.
    pub fn is_exact(self) -> bool {
        self != SignalType::Pdq
    }

    /// Default match threshold on [`SignalType::distance`]: 31 for PDQ, 0 for exact types.
    pub fn default_threshold(self) -> u32 {
        match self {
            SignalType::Pdq => pdq::MATCH_THRESHOLD,
            _ => 0,
        }
    }

    /// Validates a serialised signal and returns its canonical form.
    ///
    /// * `pdq`: 64 hex chars, any case, surrounding whitespace trimmed; lower-case output.
    /// * `video_md5`, `url_md5`: 32 hex chars; `video_sha256`: 64 hex chars; trimmed, lower-cased.
    /// * `url`: trimmed, non-empty.
    pub fn validate(self, s: &str) -> Result<String, SignalError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(SignalError::Empty);
        }
        match self {
            SignalType::Pdq => Ok(PdqHash::from_hex(t)?.to_hex()),
            SignalType::VideoMd5 | SignalType::UrlMd5 => hex_of_len(t, 32),
            SignalType::VideoSha256 => hex_of_len(t, 64),
            SignalType::Url => Ok(t.to_string()),
        }
    }

    /// Distance between two serialised signals (validated first): Hamming distance for PDQ
    /// (0..=256); for exact types 0 when the canonical forms are equal, 1 otherwise.
    pub fn distance(self, a: &str, b: &str) -> Result<u32, SignalError> {
        match self {
            SignalType::Pdq => {
                Ok(PdqHash::from_hex(a.trim())?.distance(&PdqHash::from_hex(b.trim())?))
            }
            _ => Ok(u32::from(self.validate(a)? != self.validate(b)?)),
        }
    }

    /// Whether two serialised signals match at the default threshold.
    pub fn matches(self, a: &str, b: &str) -> Result<bool, SignalError> {
        Ok(self.distance(a, b)? <= self.default_threshold())
    }

    /// Hashes content bytes of `content_type` (a photo file, a video file, or a URL as text).
    /// A PDQ with quality below 50 is [`HashError::QualityTooLow`], never an empty hash.
    pub fn hash_bytes(
        self,
        content_type: ContentType,
        bytes: &[u8],
        opts: &HashOptions,
    ) -> Result<Signal, HashError> {
        if !self.content_types().contains(&content_type) {
            return Err(HashError::NotApplicable {
                signal_type: self,
                content_type,
            });
        }
        let value = match self {
            SignalType::Pdq => {
                let img = crate::decode::decode(bytes, &opts.decode)?;
                let out = pdq::hash_image(&img, opts.pdq);
                if out.is_low_quality() {
                    return Err(HashError::QualityTooLow {
                        hash: out.hash,
                        quality: out.quality,
                    });
                }
                return Ok(Signal {
                    signal_type: self,
                    value: out.hash.to_hex(),
                    quality: Some(out.quality),
                });
            }
            SignalType::VideoMd5 => hex_lower(&Md5::digest(bytes)),
            SignalType::VideoSha256 => hex_lower(&Sha256::digest(bytes)),
            SignalType::Url | SignalType::UrlMd5 => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|_| HashError::NotText)?
                    .trim();
                if text.is_empty() {
                    return Err(HashError::EmptyUrl);
                }
                if self == SignalType::Url {
                    text.to_string()
                } else {
                    crate::url::url_md5(text)?
                }
            }
        };
        Ok(Signal {
            signal_type: self,
            value,
            quality: None,
        })
    }
}

fn hex_of_len(t: &str, len: usize) -> Result<String, SignalError> {
    if t.len() != len {
        return Err(SignalError::BadLength {
            expected: len,
            actual: t.chars().count(),
        });
    }
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignalError::NotHex);
    }
    Ok(t.to_ascii_lowercase())
}

impl fmt::Display for SignalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SignalType {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SignalType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| SignalError::UnknownName(s.to_string()))
    }
}

/// Streaming MD5 and SHA-256 of a video file, read in chunks (files may be large).
pub fn video_digests(mut reader: impl std::io::Read) -> std::io::Result<(String, String)> {
    let mut md5 = Md5::new();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    Ok((hex_lower(&md5.finalize()), hex_lower(&sha.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in SignalType::ALL {
            assert_eq!(t.name().parse::<SignalType>().unwrap(), t);
            assert!(!t.content_types().is_empty());
        }
        assert!("PDQ".parse::<SignalType>().is_err());
        assert_eq!(
            ContentType::Video.signal_types().collect::<Vec<_>>(),
            vec![SignalType::VideoMd5, SignalType::VideoSha256]
        );
    }

    #[test]
    fn validation() {
        let h = "F8F8F0CEE0F4A84F06370A22038F63F0B36E2ED596621E1D33E6B39C4E9C9B22";
        assert_eq!(SignalType::Pdq.validate(h).unwrap(), h.to_lowercase());
        assert!(SignalType::Pdq.validate(&h[1..]).is_err());
        assert!(SignalType::Pdq.validate("").is_err());
        assert_eq!(
            SignalType::VideoMd5
                .validate(" D41D8CD98F00B204E9800998ECF8427E\n")
                .unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(SignalType::VideoMd5
            .validate("d41d8cd98f00b204e9800998ecf8427")
            .is_err());
        assert!(SignalType::VideoSha256.validate("zz").is_err());
        assert_eq!(
            SignalType::Url.validate(" https://a.b/ ").unwrap(),
            "https://a.b/"
        );
        assert_eq!(SignalType::Url.validate("  "), Err(SignalError::Empty));
    }

    #[test]
    fn exact_distance_and_empty_file_digests() {
        let opts = HashOptions::default();
        let md5 = SignalType::VideoMd5
            .hash_bytes(ContentType::Video, b"", &opts)
            .unwrap();
        assert_eq!(md5.value, "d41d8cd98f00b204e9800998ecf8427e");
        let sha = SignalType::VideoSha256
            .hash_bytes(ContentType::Video, b"", &opts)
            .unwrap();
        assert_eq!(
            sha.value,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            video_digests(&b""[..]).unwrap(),
            (md5.value.clone(), sha.value.clone())
        );
        assert_eq!(
            SignalType::VideoMd5.distance(&md5.value, &md5.value.to_uppercase()),
            Ok(0)
        );
        assert!(!SignalType::VideoMd5
            .matches(&md5.value, &"0".repeat(32))
            .unwrap());
        assert!(matches!(
            SignalType::Pdq.hash_bytes(ContentType::Video, b"", &opts),
            Err(HashError::NotApplicable { .. })
        ));
        let u = SignalType::UrlMd5
            .hash_bytes(ContentType::Url, b"http://evil.com\n", &opts)
            .unwrap();
        assert_eq!(u.value, "6d3af727a4e7b025fd59a5469b3a9c57");
    }
}
