//! Shared state of the running server.

use std::sync::Arc;
use std::time::Duration;

use omm_matcher::Matcher;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::fetch::UrlFetcher;
use crate::hashing::MediaHasher;

/// What `/status` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Ready,
    /// The first load of the index has not completed.
    NotLoaded,
    /// The index has not been synced with the store for too long.
    Stale,
}

/// Readiness from the matcher's state: not loaded before its first complete load, stale when
/// the change log was last read to its end more than `max_stale_sec` ago (0: never stale).
pub fn readiness(ready: bool, lag: Option<Duration>, max_stale_sec: u64) -> Readiness {
    if !ready {
        return Readiness::NotLoaded;
    }
    match lag {
        Some(lag) if max_stale_sec > 0 && lag > Duration::from_secs(max_stale_sec) => {
            Readiness::Stale
        }
        _ => Readiness::Ready,
    }
}

/// State shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The configuration in force.
    pub config: Arc<ServerConfig>,
    /// Hashing back end.
    pub hasher: Arc<dyn MediaHasher>,
    /// URL downloads.
    pub fetcher: UrlFetcher,
    /// Bounds uploads and downloads processed at once.
    pub uploads: Arc<Semaphore>,
    /// Installed signal types.
    pub signal_types: Arc<Vec<omm_signals::SignalType>>,
    /// The store.
    pub store: omm_store::Store,
    /// The in-memory matcher (`omm-matcher`), also the source of signal type ratios. Without
    /// the matcher role it indexes nothing but still tails the filter state.
    pub matcher: Matcher,
}

impl AppState {
    /// Waits for an upload slot. The permit is released when dropped.
    pub async fn upload_permit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.uploads
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("server is shutting down"))
    }

    /// What `/status` should answer now.
    pub fn readiness(&self) -> Readiness {
        readiness(
            self.matcher.is_ready(),
            self.matcher.lag(),
            self.config.index_cache_max_stale_sec,
        )
    }

    /// True when `signal_type` is installed and its ratio is above 0.
    pub fn signal_type_enabled(&self, signal_type: &str) -> bool {
        self.signal_types.iter().any(|s| s.name() == signal_type)
            && self.matcher.signal_type_ratio(signal_type) > 0.0
    }

    /// The installed signal type called `name`.
    pub fn installed_signal_type(&self, name: &str) -> Option<omm_signals::SignalType> {
        self.signal_types.iter().copied().find(|s| s.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_transitions() {
        let secs = Duration::from_secs;
        assert_eq!(readiness(false, None, 65), Readiness::NotLoaded);
        assert_eq!(readiness(false, Some(secs(1)), 65), Readiness::NotLoaded);
        assert_eq!(readiness(true, Some(secs(1)), 65), Readiness::Ready);
        assert_eq!(readiness(true, Some(secs(66)), 65), Readiness::Stale);
        assert_eq!(readiness(true, Some(secs(66)), 0), Readiness::Ready);
    }
}
