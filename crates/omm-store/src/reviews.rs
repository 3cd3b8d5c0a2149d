//! Backend-independent pieces of reviews.

use crate::error::{Result, StoreError};
use crate::model::{Content, DeliveryOutcome, DeliveryState};

/// Picks the reviewed signal: the requested type, else the first by type name.
pub(crate) fn pick_signal(
    content: &Content,
    requested: Option<&str>,
) -> Result<Option<(String, String)>> {
    match requested {
        Some(t) => match content.signals.get(t) {
            Some(v) => Ok(Some((t.to_string(), v.clone()))),
            None => Err(StoreError::InvalidArgument(format!(
                "content {} has no '{t}' signal",
                content.id
            ))),
        },
        None => Ok(content
            .signals
            .iter()
            .next()
            .map(|(t, v)| (t.clone(), v.clone()))),
    }
}

/// (state, last_error, next_attempt_at, delivered_at) of an outcome.
pub(crate) fn outcome_columns(
    outcome: &DeliveryOutcome,
    now: i64,
) -> (DeliveryState, Option<String>, Option<i64>, Option<i64>) {
    match outcome {
        DeliveryOutcome::Delivered => (DeliveryState::Delivered, None, None, Some(now)),
        DeliveryOutcome::Failed { message, retry_at } => (
            DeliveryState::Failed,
            Some(message.clone()),
            *retry_at,
            None,
        ),
        DeliveryOutcome::Unsupported { message } => (
            DeliveryState::Unsupported,
            Some(message.clone()),
            None,
            None,
        ),
    }
}
