//! The matcher: per-signal-type indexes plus the bank/content/exchange state needed to filter
//! hits, all held in memory and kept fresh by tailing the store's change log.
//!
//! A lookup touches no database: index hits are filtered with in-memory state (bank enabled
//! ratios, content `disable_until_ts`, exchange enabled, signal-type ratios) that a background
//! task keeps fresh by tailing the store's change log. See [`Matcher`].

pub mod coinflip;
mod matcher;
pub mod snapshot;
pub mod source;
pub mod state;
mod store_source;

pub use coinflip::Coin;
pub use matcher::{
    IndexedType, KeyKind, LoadInfo, LookupError, LookupOptions, Match, Matcher, MatcherConfig,
    MatcherError, MatcherStatus, RawHit, RawLookupOptions, TypeStatus, MAX_TEXT_KEY_LEN,
};
pub use source::{ChangeSource, InitialState, SeqEvent, SignalRecord, SourceError, Wakeup};
pub use state::{content_enabled, Event};
