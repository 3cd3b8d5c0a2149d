//! Typed errors of the store. Callers match on the variant; backend details stay inside.

use std::fmt;

/// The kind of entity an error is about, for messages such as `bank 'X' not found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entity {
    /// A bank.
    Bank,
    /// A bank content item.
    Content,
    /// An exchange (collaboration).
    Exchange,
    /// A fetched exchange record.
    ExchangeRecord,
    /// A signal type override.
    SignalType,
    /// A review write-back (delivery).
    ReviewDelivery,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Bank => "bank",
            Entity::Content => "content",
            Entity::Exchange => "exchange",
            Entity::ExchangeRecord => "exchange record",
            Entity::SignalType => "signal type",
            Entity::ReviewDelivery => "review delivery",
        })
    }
}

/// Every failure a store operation can report.
///
/// `Backend` is the only variant whose details are not meant for clients: its `Display` is a
/// fixed, generic text, and the driver error is reachable only through
/// [`std::error::Error::source`] (log it, do not send it).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named entity does not exist (or, for content, not in the named bank).
    #[error("{entity} '{key}' not found")]
    NotFound {
        /// What was looked for.
        entity: Entity,
        /// The name or id that was looked for.
        key: String,
    },
    /// An entity with this name or key exists already.
    #[error("{entity} '{key}' already exists")]
    AlreadyExists {
        /// What clashed.
        entity: Entity,
        /// The clashing name or key.
        key: String,
    },
    /// A bank or exchange name that does not match `^[A-Z_][A-Z0-9_]*$` (or is too long).
    #[error("invalid name '{0}': names must match ^[A-Z_][A-Z0-9_]*$ and be at most 255 bytes")]
    InvalidName(String),
    /// The operation contradicts the current state (e.g. deleting the bank of an exchange,
    /// a stale fetch checkpoint, a fetch lease held by someone else).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An argument is outside what the store accepts (note too long, negative timestamp,
    /// non-finite ratio, two signals of one type on one content, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The database failed (I/O, connection, unexpected SQL error). Not caused by the caller.
    #[error("internal storage error")]
    Backend(#[source] BackendError),
}

/// An opaque driver or I/O error, kept for logs.
#[derive(Debug)]
pub struct BackendError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl StoreError {
    /// Wraps any driver error as [`StoreError::Backend`].
    pub(crate) fn backend<E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>>(
        e: E,
    ) -> Self {
        StoreError::Backend(BackendError(e.into()))
    }

    /// Shorthand for [`StoreError::NotFound`].
    pub(crate) fn not_found(entity: Entity, key: impl fmt::Display) -> Self {
        StoreError::NotFound {
            entity,
            key: key.to_string(),
        }
    }

    /// Shorthand for [`StoreError::AlreadyExists`].
    pub(crate) fn exists(entity: Entity, key: impl fmt::Display) -> Self {
        StoreError::AlreadyExists {
            entity,
            key: key.to_string(),
        }
    }
}

/// Result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
