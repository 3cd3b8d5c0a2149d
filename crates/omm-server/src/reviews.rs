//! The background review writer: delivers stored reviews to the exchanges that accept them.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::state::AppState;

/// Starts the review writer (with `task_fetcher`): pending and failed write-backs are
/// retried with backoff until delivered; several processes on one database share the work
/// without delivering a review twice (the store's claims).
pub fn spawn_review_writer(state: &AppState) -> JoinHandle<()> {
    let settings = omm_exchange::review_writer::ReviewWriterSettings {
        interval: Duration::from_secs(5),
        ..Default::default()
    };
    let writer = omm_exchange::review_writer::ReviewWriter::new(state.store.clone(), settings);
    tracing::info!("review write-back started");
    tokio::spawn(async move { writer.run(std::future::pending::<()>()).await })
}
