//! `omm fetch`: one fetch pass over the configured exchanges (or one of them), with progress.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use omm_exchange::fetcher::{FetchOutcome, FetchProgress, Fetcher, FetcherSettings};

/// Arguments of `omm fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Only fetch this exchange (default: every enabled exchange).
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,
    /// Database: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "OMM_DATABASE_URL", default_value = omm_store::DEFAULT_SQLITE_PATH)]
    pub database: String,
    /// Stop each exchange after this many seconds (the next run resumes from its checkpoint).
    #[arg(long, value_name = "SECS", default_value_t = 24 * 3600)]
    pub max_run_time: u64,
    /// Do not draw the progress display (print a summary line per exchange only).
    #[arg(long)]
    pub quiet: bool,
}

fn describe(p: &FetchProgress) -> String {
    let ts = p
        .checkpoint_ts
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map(|t| format!(", up to {}", t.format("%Y-%m-%d %H:%M:%SZ")))
        .unwrap_or_default();
    format!(
        "{} batches, +{} ~{} -{} records, {} stored{ts}",
        p.batches, p.records_added, p.records_updated, p.records_deleted, p.item_count
    )
}

/// Runs `omm fetch`.
pub fn run(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let store = omm_store::Store::open(&args.database)
            .await
            .with_context(|| format!("cannot open database {}", args.database))?;
        let settings = FetcherSettings {
            max_run_time: Duration::from_secs(args.max_run_time),
            ..FetcherSettings::default()
        };
        let fetcher = Fetcher::new(store, settings);
        let bar = if args.quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        };
        let mut on_progress = |name: &str, p: &FetchProgress| {
            bar.set_message(format!("{name}: {}", describe(p)));
        };
        let reports = fetcher
            .run_pass(args.exchange.as_deref(), &mut on_progress)
            .await
            .context("fetch failed")?;
        bar.finish_and_clear();
        let mut failed = false;
        if reports.is_empty() {
            println!("no exchanges configured");
        }
        for report in &reports {
            let what = match &report.outcome {
                FetchOutcome::Completed { up_to_date: true } => "up to date".to_string(),
                FetchOutcome::Completed { up_to_date: false } => {
                    "stopped at --max-run-time; run again to continue".to_string()
                }
                FetchOutcome::Disabled => "disabled, skipped".to_string(),
                FetchOutcome::Busy => "being fetched by another process, skipped".to_string(),
                FetchOutcome::Failed(message) => {
                    failed = true;
                    format!("FAILED: {message}")
                }
            };
            println!(
                "{}: {what} ({})",
                report.exchange,
                describe(&report.progress)
            );
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
