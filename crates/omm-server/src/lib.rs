//! `omm-server`: the Open Media Match HTTP API on axum.
//!
//! Routes are grouped by role (`/h` hasher, `/m` matcher, `/c` curator, `/dev`); a role that
//! is off answers 404 for its paths. Every error is JSON `{"message": ...}`; client mistakes
//! are 4xx, never 500. Start it with [`start`] (background, for tests and embedding) or
//! [`serve`] (until SIGINT/SIGTERM).

pub mod app;
pub mod builtin;
pub mod config;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod hashing;
pub mod reviews;
pub mod routes;
pub mod server;
pub mod state;
pub mod upload;

pub use builtin::default_services;
pub use config::ServerConfig;
pub use error::{ApiError, ApiResult};
pub use server::{init_logging, serve, start, LoggingGuard, RunningServer, ServerError, Services};
