//! `omm hash`: placeholder until the signals crate lands (issue: foundation).

use std::process::ExitCode;

/// Arguments of `omm hash`.
#[derive(Debug, clap::Args)]
pub struct HashArgs {
    /// Files to hash; `-` reads standard input.
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

/// Runs `omm hash`.
pub fn run(_args: HashArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
