//! The matcher: per-signal-type indexes plus the bank/content/exchange state needed to filter
//! hits, all held in memory and kept fresh by tailing the store's change log.
//!
//! A lookup touches no database: index hits are filtered with in-memory state (bank enabled
//! ratios, content `disable_until_ts`, exchange enabled, signal-type ratios) that a background
//! task keeps fresh by tailing the store's change log. See [`Matcher`].
//!
//! ```no_run
//! # async fn demo(store: omm_store::Store) -> Result<(), Box<dyn std::error::Error>> {
//! use omm_matcher::{LookupOptions, Matcher, MatcherConfig};
//! let matcher = Matcher::start(store, MatcherConfig::default())?;
//! // `/status` answers 503 until this is true.
//! let _ready = matcher.is_ready();
//! let opts = LookupOptions { seed: Some("abc".into()), ..Default::default() };
//! for m in matcher.lookup("pdq", &"0".repeat(64), &opts)? {
//!     println!("{} {} {}", m.bank_name, m.content_id, m.distance);
//! }
//! matcher.shutdown().await?; // writes a final snapshot if a directory is configured
//! # Ok(())
//! # }
//! ```
//!
//! Semantics that differ from Open Media Match on purpose (for `docs/compatibility.md`):
//! a signal type with ratio 0 is disabled (a bank with ratio 0 still matches when the coin
//! flip is bypassed, as upstream); the content of a disabled exchange does not match; deleted
//! content never appears, also in `raw_lookup` without `banks`.

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
