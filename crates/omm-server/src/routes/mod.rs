//! HTTP handlers, one module per role.

pub mod hasher;
pub mod status;
