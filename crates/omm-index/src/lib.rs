//! In-memory indexes answering "which stored signals are within the threshold of this one".
//!
//! This crate knows nothing of storage or HTTP.
