//! Minimal signal value validation, until the lead switches this crate to `omm-signals`.
//!
//! Hex hash types are trimmed and lowercased (PDQ too: a hash differing only in case is the same
//! hash); other types are trimmed and must be non-empty.

/// Signal type names used by the exchanges (the names pytx and HMA use as storage keys).
pub(crate) mod names {
    pub const PDQ: &str = "pdq";
    pub const VIDEO_MD5: &str = "video_md5";
    pub const VIDEO_SHA256: &str = "video_sha256";
    pub const URL: &str = "url";
    pub const URL_MD5: &str = "url_md5";
    pub const RAW_TEXT: &str = "raw_text";
    pub const TREND_QUERY: &str = "trend_query";
    pub const PDQ_OCR: &str = "pdq_ocr";
    pub const PHOTODNA: &str = "photodna";
}

fn hex_of_len(value: &str, len: usize) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    (v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
}

/// Returns the normalised value if it is valid for `signal_type`, else `None`.
///
/// Unknown type names are accepted with the generic rule (trimmed, non-empty): whether a type is
/// installed is decided by the consumer, not the exchange.
pub(crate) fn normalize(signal_type: &str, value: &str) -> Option<String> {
    match signal_type {
        names::PDQ | names::VIDEO_SHA256 => hex_of_len(value, 64),
        names::VIDEO_MD5 | names::URL_MD5 => hex_of_len(value, 32),
        _ => {
            let v = value.trim();
            (!v.is_empty()).then(|| v.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdq_and_md5_rules() {
        let pdq = "F8F8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        assert_eq!(normalize("pdq", pdq).unwrap(), pdq.to_ascii_lowercase());
        assert!(normalize("pdq", &pdq[1..]).is_none());
        assert!(normalize("pdq", &format!("{}g", &pdq[1..])).is_none());
        assert_eq!(
            normalize("video_md5", " D41D8CD98F00B204E9800998ECF8427E\n").unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert!(normalize("video_md5", "d41d8cd98f00b204e9800998ecf8427").is_none());
        assert!(normalize("url", "  ").is_none());
        assert_eq!(normalize("url", " https://x ").unwrap(), "https://x");
    }
}
