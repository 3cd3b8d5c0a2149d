//! Hashing as the API needs it: which content types exist, which signal types apply to
//! each, and turning bytes into signals. The server talks to a [`MediaHasher`]; the binary
//! plugs in the real one from `omm-signals`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ApiError;

/// Why bytes could not be hashed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum HashError {
    /// A photo whose PDQ quality is below the usable minimum.
    #[error("{signal_type} quality {quality} is below the minimum of {minimum}: the image has too little detail to be matched reliably")]
    LowQuality {
        /// The signal type.
        signal_type: String,
        /// The measured quality.
        quality: u32,
        /// The minimum accepted.
        minimum: u32,
    },
    /// The bytes are not a decodable image or video.
    #[error("cannot decode content: {0}")]
    Undecodable(String),
    /// The signal type cannot hash this content (for example a video without ffmpeg).
    #[error("{0}")]
    Unavailable(String),
}

impl From<HashError> for ApiError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::LowQuality { .. } => ApiError::unprocessable(err.to_string()),
            HashError::Undecodable(_) => ApiError::bad_request(err.to_string()),
            HashError::Unavailable(_) => ApiError::unavailable(err.to_string()),
        }
    }
}

/// The hashing back end.
pub trait MediaHasher: Send + Sync + 'static {
    /// Installed content types, in display order (e.g. `photo`, `video`).
    fn content_types(&self) -> Vec<String>;

    /// Installed signal types that apply to `content_type`, in a stable order.
    fn signal_types_for(&self, content_type: &str) -> Vec<String>;

    /// Hashes `bytes` (content of type `content_type`) with one signal type. CPU-bound:
    /// called on a blocking thread.
    fn hash(
        &self,
        content_type: &str,
        signal_type: &str,
        bytes: &[u8],
    ) -> Result<String, HashError>;
}

/// Picks the signal types to compute, following Open Media Match's `types=` rules: absent
/// means every enabled type of the content type; otherwise a comma-separated list, trimmed,
/// empty parts skipped, each part an enabled type of the content type.
pub fn select_signal_types(
    hasher: &dyn MediaHasher,
    content_type: &str,
    types: Option<&str>,
    is_enabled: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>, ApiError> {
    let available: Vec<String> = hasher
        .signal_types_for(content_type)
        .into_iter()
        .filter(|t| is_enabled(t))
        .collect();
    match types {
        None => {
            if available.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "no enabled signal type can hash content type '{content_type}'"
                )));
            }
            Ok(available)
        }
        Some(list) => {
            let mut chosen = Vec::new();
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if !available.iter().any(|a| a == part) {
                    return Err(ApiError::bad_request(format!(
                        "signal type '{part}' doesn't exist or is disabled"
                    )));
                }
                if !chosen.iter().any(|c| c == part) {
                    chosen.push(part.to_owned());
                }
            }
            if chosen.is_empty() {
                return Err(ApiError::bad_request("empty signal type selection"));
            }
            Ok(chosen)
        }
    }
}

/// Checks that `name` is an installed content type.
pub fn check_content_type(hasher: &dyn MediaHasher, name: &str) -> Result<(), ApiError> {
    if hasher.content_types().iter().any(|c| c == name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "no such content_type: '{name}'"
        )))
    }
}

/// Hashes `bytes` with every type in `signal_types` on a blocking thread.
pub async fn hash_bytes(
    hasher: Arc<dyn MediaHasher>,
    content_type: String,
    signal_types: Vec<String>,
    bytes: bytes::Bytes,
) -> Result<BTreeMap<String, String>, ApiError> {
    let joined = tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for signal_type in signal_types {
            let value = hasher.hash(&content_type, &signal_type, &bytes)?;
            out.insert(signal_type, value);
        }
        Ok::<_, HashError>(out)
    })
    .await;
    match joined {
        Ok(result) => result.map_err(ApiError::from),
        Err(join_err) => Err(ApiError::internal(format!(
            "hashing task failed: {join_err}"
        ))),
    }
}

/// Infers the content type from a download's `Content-Type` header, as Open Media Match
/// does: `image/*` is a photo, `video/*` a video.
pub fn content_type_from_mime(mime: Option<&str>) -> Result<&'static str, ApiError> {
    let mime_text = mime.unwrap_or("").trim().to_ascii_lowercase();
    if mime_text.starts_with("image") {
        Ok("photo")
    } else if mime_text.starts_with("video") {
        Ok("video")
    } else {
        Err(ApiError::bad_request(format!(
            "unsupported url ContentType: '{}', if you know the expected type, provide it with the content_type query param",
            mime.unwrap_or("")
        )))
    }
}
