//! Server configuration: defaults, a TOML file, `OMM_*` environment variables and
//! command-line overrides, merged in that order (later wins).
//!
//! Keys are the lower-case forms of Open Media Match's config keys where one exists
//! (`role_hasher`, `production`, `max_remote_file_size`, `allowed_hostnames`, ...), so that
//! `OMM_ROLE_HASHER=false` keeps working. `OMM_DATABASE_URI` and `OMM_DATABASE_READ_URI` (the
//! upstream spellings) are accepted as aliases of `database_url` / `database_read_url`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};

/// 100 MiB, Open Media Match's default for `MAX_REMOTE_FILE_SIZE`.
pub const DEFAULT_MAX_REMOTE_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Everything `omm serve` can be told. See `docs/api.md` for each key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the embedded database and snapshots.
    pub data_dir: PathBuf,
    /// Database URL (`sqlite://...` or `postgres://...`). Empty: SQLite file in `data_dir`.
    pub database_url: String,
    /// Optional read-replica URL used for reads that tolerate lag.
    pub database_read_url: Option<String>,
    /// Serve `/h` (hashing) and allow URL/upload lookups on `/m/lookup`.
    pub role_hasher: bool,
    /// Serve `/m` (matching) and keep the in-memory index.
    pub role_matcher: bool,
    /// Serve `/c` (banks, content, exchanges).
    pub role_curator: bool,
    /// Serve `/ui`.
    pub ui_enabled: bool,
    /// Production mode: `/dev` endpoints are off.
    pub production: bool,
    /// Run the exchange fetcher in this process.
    pub task_fetcher: bool,
    /// Seconds between two fetch runs.
    pub task_fetcher_interval_seconds: u64,
    /// Milliseconds between two polls of the store's change log by the matcher.
    pub matcher_poll_interval_ms: u64,
    /// Keep matcher snapshots on disk: loaded at start (instead of reading every signal from
    /// the database), written every `matcher_snapshot_interval_seconds` and at shutdown.
    pub matcher_snapshots: bool,
    /// Directory of the matcher snapshots. Empty: `<data_dir>/matcher-snapshot`.
    pub matcher_snapshot_dir: PathBuf,
    /// Seconds between two periodic snapshots (written only if something changed); 0: only
    /// at shutdown.
    pub matcher_snapshot_interval_seconds: u64,
    /// `/status` answers 503 INDEX-STALE when the matcher has not synced for this long
    /// (seconds); 0 disables the check.
    pub index_cache_max_stale_sec: u64,
    /// Largest download accepted by `?url=` endpoints, in bytes (0 means the default).
    pub max_remote_file_size: u64,
    /// If non-empty, URL hosts must equal one of these or be a subdomain of one.
    #[serde(deserialize_with = "string_list")]
    pub allowed_hostnames: Vec<String>,
    /// Allow `?url=` to reach loopback, private, link-local and other non-public addresses.
    pub allow_private_targets: bool,
    /// Timeout of one URL download (connect + transfer), in seconds.
    pub fetch_timeout_seconds: u64,
    /// Maximum number of redirects followed by one URL download.
    pub fetch_max_redirects: usize,
    /// Largest request body, in bytes.
    pub max_content_length: u64,
    /// Uploads and URL downloads processed at once; more wait in line.
    pub max_concurrent_uploads: usize,
    /// Requests taking longer than this (seconds) are answered with 503.
    pub request_timeout_seconds: u64,
    /// Log output format.
    pub log_format: LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5100)),
            data_dir: PathBuf::from("omm-data"),
            database_url: String::new(),
            database_read_url: None,
            role_hasher: true,
            role_matcher: true,
            role_curator: true,
            ui_enabled: true,
            production: false,
            task_fetcher: true,
            task_fetcher_interval_seconds: 240,
            matcher_poll_interval_ms: 1000,
            matcher_snapshots: true,
            matcher_snapshot_dir: PathBuf::new(),
            matcher_snapshot_interval_seconds: 600,
            index_cache_max_stale_sec: 65,
            max_remote_file_size: DEFAULT_MAX_REMOTE_FILE_SIZE,
            allowed_hostnames: Vec::new(),
            allow_private_targets: false,
            fetch_timeout_seconds: 30,
            fetch_max_redirects: 5,
            max_content_length: DEFAULT_MAX_REMOTE_FILE_SIZE,
            max_concurrent_uploads: 16,
            request_timeout_seconds: 60,
            log_format: LogFormat::Text,
        }
    }
}

/// A configuration that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, an environment variable or a flag has a bad value.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The config file names a key we do not know (most likely a typo).
    #[error("unknown key `{key}` in config file {path}")]
    UnknownKey {
        /// The offending key.
        key: String,
        /// The file it was found in.
        path: String,
    },
}

/// Keys a config file or `OMM_*` variable may set.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database_url",
    "database_read_url",
    "role_hasher",
    "role_matcher",
    "role_curator",
    "ui_enabled",
    "production",
    "task_fetcher",
    "task_fetcher_interval_seconds",
    "matcher_poll_interval_ms",
    "matcher_snapshots",
    "matcher_snapshot_dir",
    "matcher_snapshot_interval_seconds",
    "index_cache_max_stale_sec",
    "max_remote_file_size",
    "allowed_hostnames",
    "allow_private_targets",
    "fetch_timeout_seconds",
    "fetch_max_redirects",
    "max_content_length",
    "max_concurrent_uploads",
    "request_timeout_seconds",
    "log_format",
];

/// True when `key` (any case) is one of [`KEYS`].
pub fn is_known_key(key: &str) -> bool {
    KEYS.contains(&key.to_ascii_lowercase().as_str())
}

/// Upstream spellings accepted as aliases.
fn canonical_key(key: &str) -> &str {
    match key {
        "database_uri" => "database_url",
        "database_read_uri" => "database_read_url",
        other => other,
    }
}

impl ServerConfig {
    /// Loads defaults, then `file` (if any), then `OMM_*` environment variables, then
    /// `overrides` (typically the command-line flags that were given; `None` fields are
    /// skipped when serialized with `skip_serializing_if`).
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, ConfigError> {
        let env = Env::prefixed("OMM_")
            .map(|k| {
                canonical_key(&k.as_str().to_ascii_lowercase())
                    .to_owned()
                    .into()
            })
            .filter(|k| is_known_key(k.as_str()));
        Self::load_with_env(file, env, overrides)
    }

    /// As [`ServerConfig::load`], with an explicit environment provider (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: Env,
        overrides: impl Serialize,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(ServerConfig::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("cannot read config file {}: {e}", path.display()))
            })?;
            let table: toml::Table = text.parse().map_err(|e| {
                ConfigError::Invalid(format!("config file {}: {e}", path.display()))
            })?;
            let mut normalized = toml::Table::new();
            for (key, value) in table {
                let canon = canonical_key(&key.to_ascii_lowercase()).to_owned();
                if !KEYS.contains(&canon.as_str()) {
                    return Err(ConfigError::UnknownKey {
                        key,
                        path: path.display().to_string(),
                    });
                }
                normalized.insert(canon, value);
            }
            let normalized_text = toml::to_string(&normalized)
                .map_err(|e| ConfigError::Invalid(format!("config file: {e}")))?;
            figment = figment.merge(Toml::string(&normalized_text));
        }
        figment = figment.merge(env).merge(Serialized::defaults(overrides));
        let mut config: ServerConfig = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.normalize();
        Ok(config)
    }

    fn normalize(&mut self) {
        if self.max_remote_file_size == 0 {
            self.max_remote_file_size = DEFAULT_MAX_REMOTE_FILE_SIZE;
        }
        if self.max_concurrent_uploads == 0 {
            self.max_concurrent_uploads = 1;
        }
        for host in &mut self.allowed_hostnames {
            *host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        }
        self.allowed_hostnames.retain(|h| !h.is_empty());
    }

    /// Where matcher snapshots live, or `None` when they are off.
    pub fn effective_snapshot_dir(&self) -> Option<PathBuf> {
        if !self.matcher_snapshots {
            None
        } else if self.matcher_snapshot_dir.as_os_str().is_empty() {
            Some(self.data_dir.join("matcher-snapshot"))
        } else {
            Some(self.matcher_snapshot_dir.clone())
        }
    }

    /// The database URL to connect to: the configured one, or a SQLite file in `data_dir`.
    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("omm.db").display())
        } else {
            self.database_url.clone()
        }
    }
}

/// Accepts a list, or a string with comma-separated entries (handy in environment variables:
/// `OMM_ALLOWED_HOSTNAMES=example.com,cdn.example.org`).
fn string_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(de)? {
        ListOrString::List(list) => list,
        ListOrString::String(s) => s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;
    use std::io::Write;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        production: Option<bool>,
    }

    fn no_env() -> Env {
        Env::prefixed("OMM_TEST_NOTHING_SET_")
    }

    #[test]
    fn defaults_are_local_and_all_roles_on() {
        let config = ServerConfig::load_with_env(None, no_env(), Flags::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:5100");
        assert!(config.role_hasher && config.role_matcher && config.role_curator);
        assert!(!config.production);
        assert_eq!(config.max_remote_file_size, 100 * 1024 * 1024);
        assert!(config.effective_database_url().starts_with("sqlite://"));
        assert_eq!(
            config.effective_snapshot_dir(),
            Some(PathBuf::from("omm-data/matcher-snapshot"))
        );
    }

    #[test]
    fn snapshot_settings_from_env_and_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "matcher_snapshot_dir = \"/x/snaps\"").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OMMS_MATCHER_SNAPSHOT_INTERVAL_SECONDS", "30");
            let env = Env::prefixed("OMMS_").filter(|k| is_known_key(k.as_str()));
            let config =
                ServerConfig::load_with_env(Some(file.path()), env, Flags::default()).unwrap();
            assert_eq!(config.matcher_snapshot_interval_seconds, 30);
            assert_eq!(
                config.effective_snapshot_dir(),
                Some(PathBuf::from("/x/snaps"))
            );
            jail.set_env("OMMS_MATCHER_SNAPSHOTS", "false");
            let env = Env::prefixed("OMMS_").filter(|k| is_known_key(k.as_str()));
            let config =
                ServerConfig::load_with_env(Some(file.path()), env, Flags::default()).unwrap();
            assert_eq!(config.effective_snapshot_dir(), None);
            Ok(())
        });
    }

    #[test]
    fn precedence_is_flag_over_env_over_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen = \"127.0.0.1:7000\"\nproduction = true\nrole_curator = false\nDATABASE_URI = \"postgres://x/y\"\nallowed_hostnames = [\"Example.com\"]"
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OMMJ_LISTEN", "127.0.0.1:7001");
            jail.set_env("OMMJ_ROLE_HASHER", "false");
            jail.set_env("OMMJ_MAX_REMOTE_FILE_SIZE", "1000");
            let env = Env::prefixed("OMMJ_").filter(|k| is_known_key(k.as_str()));
            let flags = Flags {
                listen: Some("127.0.0.1:7002".into()),
                production: None,
            };
            let config = ServerConfig::load_with_env(Some(file.path()), env, flags).unwrap();
            assert_eq!(config.listen.to_string(), "127.0.0.1:7002");
            assert!(
                config.production,
                "file value kept when nothing overrides it"
            );
            assert!(!config.role_curator);
            assert!(!config.role_hasher, "env overrides default");
            assert_eq!(config.max_remote_file_size, 1000);
            assert_eq!(config.database_url, "postgres://x/y");
            assert_eq!(config.allowed_hostnames, vec!["example.com".to_owned()]);
            Ok(())
        });
    }

    #[test]
    fn comma_separated_hostnames_from_env() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("OMMK_ALLOWED_HOSTNAMES", "a.example, b.example");
            let env = Env::prefixed("OMMK_");
            let config = ServerConfig::load_with_env(None, env, Flags::default()).unwrap();
            assert_eq!(config.allowed_hostnames, vec!["a.example", "b.example"]);
            Ok(())
        });
    }

    #[test]
    fn unknown_file_key_and_bad_values_are_errors() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "lisen = \"127.0.0.1:7000\"").unwrap();
        let err =
            ServerConfig::load_with_env(Some(file.path()), no_env(), Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { .. }), "{err}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "max_remote_file_size = \"lots\"").unwrap();
        let err =
            ServerConfig::load_with_env(Some(file.path()), no_env(), Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{err}");
    }
}
