//! `omm migrate`: create the database if needed and apply the embedded schema migrations.
//!
//! The server applies them at start-up too; this command exists so that deployments can
//! migrate explicitly (e.g. in a release step, before rolling out new instances).

use std::process::ExitCode;

use anyhow::Context;

/// Arguments of `omm migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Database: a `postgres://` URL, or a SQLite file path (`sqlite://path` also accepted).
    #[arg(long, env = "OMM_DATABASE_URL", default_value = omm_store::DEFAULT_SQLITE_PATH)]
    pub database: String,
}

/// Runs `omm migrate`.
pub fn run(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store = omm_store::Store::open(&args.database)
            .await
            .with_context(|| format!("opening and migrating {}", redact(&args.database)))?;
        let applied = store
            .applied_migrations()
            .await
            .context("reading applied migrations")?;
        println!(
            "database {} is at schema version {}",
            redact(&args.database),
            applied.last().map_or(0, |m| m.version)
        );
        for m in applied {
            println!(
                "  {:>4}  {}  (applied at {})",
                m.version, m.name, m.applied_at
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Hides a password in a database URL before printing it.
fn redact(target: &str) -> String {
    match (target.find("://"), target.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &target[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{}:***{}", &target[..scheme_end + 3], user, &target[at..])
                }
                None => target.to_string(),
            }
        }
        _ => target.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("./omm-data/omm.db"), "./omm-data/omm.db");
    }
}
