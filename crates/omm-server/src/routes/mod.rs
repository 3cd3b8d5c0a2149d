//! HTTP handlers, one module per role.

pub mod curator;
pub mod dev;
pub mod hasher;
pub mod matcher;
pub mod reviews;
pub mod status;
