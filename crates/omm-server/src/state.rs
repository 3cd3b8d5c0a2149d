//! Shared state of the running server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::fetch::UrlFetcher;
use crate::hashing::MediaHasher;
use crate::matching::Matcher;

/// Readiness of the matcher, read by `/status` and `/readyz`.
#[derive(Debug, Default)]
pub struct MatcherHealth {
    ready: AtomicBool,
    last_sync_unix_ms: AtomicU64,
}

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

impl MatcherHealth {
    /// Records a successful sync with the store; the first one makes the matcher ready.
    pub fn mark_synced(&self) {
        self.last_sync_unix_ms
            .store(now_unix_ms(), Ordering::Release);
        self.ready.store(true, Ordering::Release);
    }

    /// True once the first load completed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Readiness given a staleness limit in seconds (0: never stale).
    pub fn readiness(&self, max_stale_sec: u64) -> Readiness {
        if !self.is_ready() {
            return Readiness::NotLoaded;
        }
        if max_stale_sec > 0 {
            let last = self.last_sync_unix_ms.load(Ordering::Acquire);
            if now_unix_ms().saturating_sub(last) > max_stale_sec.saturating_mul(1000) {
                return Readiness::Stale;
            }
        }
        Readiness::Ready
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    /// Matcher readiness.
    pub health: Arc<MatcherHealth>,
    /// Installed signal types.
    pub signal_types: Arc<Vec<omm_signals::SignalType>>,
    /// The store.
    pub store: omm_store::Store,
    /// The in-memory matcher (also the source of signal type ratios).
    pub matcher: Arc<Matcher>,
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
        let health = MatcherHealth::default();
        assert_eq!(health.readiness(65), Readiness::NotLoaded);
        health.mark_synced();
        assert_eq!(health.readiness(65), Readiness::Ready);
        assert_eq!(health.readiness(0), Readiness::Ready);
        health.last_sync_unix_ms.store(1, Ordering::Release);
        assert_eq!(health.readiness(65), Readiness::Stale);
        assert_eq!(health.readiness(0), Readiness::Ready);
    }
}
