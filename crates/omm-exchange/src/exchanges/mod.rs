//! The built-in exchange APIs, one module each.

pub mod fb_threatexchange;
pub mod file;
pub mod ncmec;
pub mod sample;
pub mod stop_ncii;
pub mod tat;
