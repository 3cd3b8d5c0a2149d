//! Content types, signal types and hashing: bytes in, signals out.
//!
//! This crate knows nothing of storage, indexes or HTTP.
