//! `omm`: the command-line edge of Open Media Match.
//!
//! Each subcommand lives in its own module under `cmd/`; this file only parses arguments
//! and dispatches. Errors become `anyhow` here and nowhere deeper.

use clap::{Parser, Subcommand};

mod cmd;

/// Open Media Match: hash media, keep banks of known hashes, match uploads against them.
#[derive(Debug, Parser)]
#[command(name = "omm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hash files (or `-` for stdin) and print one line per file.
    Hash(cmd::hash::HashArgs),
    /// Create the database if needed and apply pending schema migrations.
    Migrate(cmd::migrate::MigrateArgs),
    /// Fetch the configured exchanges once (or one with --exchange), showing progress.
    Fetch(cmd::fetch::FetchArgs),
    /// Serve the Open Media Match HTTP API (hasher, matcher, curator).
    Serve(cmd::serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hash(args) => cmd::hash::run(args),
        Command::Migrate(args) => cmd::migrate::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Serve(args) => cmd::serve::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("omm: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
