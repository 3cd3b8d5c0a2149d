//! One module per subcommand.

pub mod fetch;
pub mod hash;
pub mod migrate;
pub mod serve;
