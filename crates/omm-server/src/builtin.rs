//! Wiring of the production services.

use std::sync::Arc;

use md5::{Digest, Md5};

use crate::config::ServerConfig;
use crate::hashing::{HashError, MediaHasher};
use crate::server::{ServerError, Services};

/// MD5 of the raw bytes for videos (`video_md5`), computed here until the signals crate's
/// hashers are wired in.
#[derive(Debug, Default)]
pub struct Md5VideoHasher;

impl MediaHasher for Md5VideoHasher {
    fn content_types(&self) -> Vec<String> {
        vec!["photo".into(), "video".into()]
    }

    fn signal_types_for(&self, content_type: &str) -> Vec<String> {
        match content_type {
            "video" => vec!["video_md5".into()],
            _ => vec![],
        }
    }

    fn hash(&self, _ct: &str, signal_type: &str, bytes: &[u8]) -> Result<String, HashError> {
        match signal_type {
            "video_md5" => Ok(Md5::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()),
            other => Err(HashError::Unavailable(format!(
                "signal type '{other}' cannot hash content here"
            ))),
        }
    }
}

/// The services `omm serve` runs with for `config`.
pub async fn default_services(_config: &ServerConfig) -> Result<Services, ServerError> {
    Ok(Services {
        hasher: Arc::new(Md5VideoHasher),
    })
}
