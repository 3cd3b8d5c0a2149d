//! The matcher: per-signal-type indexes plus the bank/content/exchange state needed to filter
//! hits, all held in memory and kept fresh by tailing the store's change log.

pub mod coinflip;
pub mod source;
#[allow(dead_code)] // used by the matcher module, which waits for omm-index
pub mod state;
mod store_source;

pub use coinflip::Coin;
pub use source::{ChangeSource, InitialState, SeqEvent, SignalRecord, SourceError, Wakeup};
pub use state::{content_enabled, Event};
