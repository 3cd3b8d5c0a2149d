//! The matcher: per-signal-type indexes plus the bank/content/exchange state needed to filter
//! hits, all held in memory and kept fresh by tailing the store's change log.

pub mod coinflip;
