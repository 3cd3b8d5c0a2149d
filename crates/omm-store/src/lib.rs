//! The single source of truth: banks, content, signals, exchanges and the change log,
//! on embedded SQLite or PostgreSQL.
