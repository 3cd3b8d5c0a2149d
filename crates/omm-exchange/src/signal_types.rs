//! Signal type names used by the exchanges, and validation of fetched values through
//! `omm-signals` (the one validator of omm).
//!
//! Exchanges also carry types `omm-signals` does not implement (`raw_text`, `photodna`, ...):
//! whether such a type is installed is the consumer's decision, so their values are only
//! trimmed and must be non-empty.

use omm_signals::SignalType;

/// Signal type names (the names pytx and HMA use as storage keys).
pub(crate) mod names {
    use super::SignalType;

    pub const PDQ: &str = SignalType::Pdq.name();
    pub const VIDEO_MD5: &str = SignalType::VideoMd5.name();
    pub const VIDEO_SHA256: &str = SignalType::VideoSha256.name();
    pub const URL: &str = SignalType::Url.name();
    pub const URL_MD5: &str = SignalType::UrlMd5.name();
    pub const RAW_TEXT: &str = "raw_text";
    pub const TREND_QUERY: &str = "trend_query";
    pub const PDQ_OCR: &str = "pdq_ocr";
    pub const PHOTODNA: &str = "photodna";
}

/// The canonical value if `value` is valid for `signal_type`, else `None`: `omm-signals`'
/// validation for the types it implements (hex lower-cased, whitespace trimmed), the generic
/// rule (trimmed, non-empty) for others.
pub(crate) fn normalize(signal_type: &str, value: &str) -> Option<String> {
    match signal_type.parse::<SignalType>() {
        Ok(t) => t.validate(value).ok(),
        Err(_) => {
            let v = value.trim();
            (!v.is_empty()).then(|| v.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delegates_to_omm_signals_and_keeps_other_types() {
        let pdq = "F8F8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        assert_eq!(normalize("pdq", pdq).unwrap(), pdq.to_ascii_lowercase());
        assert!(normalize("pdq", &pdq[1..]).is_none());
        assert_eq!(
            normalize("video_md5", " D41D8CD98F00B204E9800998ECF8427E\n").unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(normalize("video_sha256", "abc").is_none());
        assert!(normalize("url", "  ").is_none());
        assert_eq!(normalize("url", " https://x ").unwrap(), "https://x");
        assert_eq!(normalize("raw_text", " hello ").unwrap(), "hello");
        assert!(normalize("photodna", " ").is_none());
    }
}
