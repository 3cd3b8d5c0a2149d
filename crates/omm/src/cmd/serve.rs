//! `omm serve`: the Open Media Match HTTP API.
//!
//! Settings come from, in increasing precedence: built-in defaults, a TOML file
//! (`--config` or `OMM_CONFIG`), `OMM_<KEY>` environment variables, and these flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use omm_server::config::LogFormat;
use omm_server::ServerConfig;
use serde::Serialize;

/// A role the server can take on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `/h`: hashing.
    Hasher,
    /// `/m`: matching.
    Matcher,
    /// `/c`: banks, content, exchanges.
    Curator,
    /// `/ui`.
    Ui,
}

/// Arguments of `omm serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as in docs/api.md, e.g. `listen`, `database_url`).
    #[arg(long, env = "OMM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5100].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the embedded database [default: ./omm-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL, `sqlite://FILE` or `postgres://...` [default: SQLite in --data-dir].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Read-replica database URL.
    #[arg(long, value_name = "URL")]
    pub database_read_url: Option<String>,
    /// Roles to serve, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "ROLES")]
    pub roles: Option<Vec<Role>>,
    /// Production mode: no `/dev` endpoints.
    #[arg(long)]
    pub production: bool,
    /// Do not run background tasks (exchange fetching) in this process.
    #[arg(long)]
    pub no_background_tasks: bool,
    /// Allow `?url=` downloads from loopback, private and link-local addresses.
    #[arg(long)]
    pub allow_private_targets: bool,
    /// Hosts `?url=` may download from (and their subdomains), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub allowed_hostnames: Option<Vec<String>>,
    /// Largest `?url=` download, in bytes [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub max_remote_file_size: Option<u64>,
    /// Largest request body, in bytes [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub max_content_length: Option<u64>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Directory of the matcher snapshots [default: <data-dir>/matcher-snapshot].
    #[arg(long, value_name = "DIR")]
    pub snapshot_dir: Option<PathBuf>,
    /// Seconds between two matcher snapshots; 0: only at shutdown [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub snapshot_interval_seconds: Option<u64>,
    /// Keep no matcher snapshots: every start reads all signals from the database.
    #[arg(long)]
    pub no_snapshots: bool,
}

/// Log format on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

/// The flags that were given, as config keys (absent flags are left out so that the file and
/// the environment keep their say).
#[derive(Debug, Default, Serialize)]
struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_read_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_hasher: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_matcher: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role_curator: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ui_enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    production: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_fetcher: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_private_targets: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_hostnames: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_remote_file_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_content_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matcher_snapshot_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matcher_snapshot_interval_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matcher_snapshots: Option<bool>,
}

impl From<&ServeArgs> for FlagOverrides {
    fn from(args: &ServeArgs) -> Self {
        let has = |r: Role| args.roles.as_ref().map(|roles| roles.contains(&r));
        FlagOverrides {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
            database_url: args.database_url.clone(),
            database_read_url: args.database_read_url.clone(),
            role_hasher: has(Role::Hasher),
            role_matcher: has(Role::Matcher),
            role_curator: has(Role::Curator),
            ui_enabled: has(Role::Ui),
            production: args.production.then_some(true),
            task_fetcher: args.no_background_tasks.then_some(false),
            allow_private_targets: args.allow_private_targets.then_some(true),
            allowed_hostnames: args.allowed_hostnames.clone(),
            max_remote_file_size: args.max_remote_file_size,
            max_content_length: args.max_content_length,
            log_format: args.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            matcher_snapshot_dir: args.snapshot_dir.clone(),
            matcher_snapshot_interval_seconds: args.snapshot_interval_seconds,
            matcher_snapshots: args.no_snapshots.then_some(false),
        }
    }
}

/// Runs `omm serve` until SIGINT/SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = ServerConfig::load(args.config.as_deref(), FlagOverrides::from(&args))
        .context("loading configuration")?;
    let _logging = omm_server::init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let services = omm_server::default_services(&config)
            .await
            .context("setting up services")?;
        omm_server::serve(config, services).await.context("serving")
    })?;
    Ok(std::process::ExitCode::SUCCESS)
}
