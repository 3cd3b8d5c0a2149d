//! Wiring of the production services: hashing from `omm-signals`, the store, the matcher.

use std::sync::Arc;

use omm_signals::{ContentType, HashOptions, SignalType};

use crate::config::ServerConfig;
use crate::hashing::{HashError, MediaHasher};
use crate::server::{ServerError, Services};

/// Signal types installed by default: Open Media Match's default set.
pub const DEFAULT_SIGNAL_TYPES: &[SignalType] = &[SignalType::Pdq, SignalType::VideoMd5];

/// Hashing with `omm-signals` for a chosen set of signal types.
#[derive(Debug, Clone)]
pub struct SignalsHasher {
    signal_types: Vec<SignalType>,
    options: HashOptions,
}

impl Default for SignalsHasher {
    fn default() -> Self {
        SignalsHasher::new(DEFAULT_SIGNAL_TYPES.to_vec())
    }
}

impl SignalsHasher {
    /// A hasher offering exactly `signal_types`.
    pub fn new(signal_types: Vec<SignalType>) -> Self {
        SignalsHasher {
            signal_types,
            options: HashOptions::default(),
        }
    }

    /// The installed signal types.
    pub fn signal_types(&self) -> &[SignalType] {
        &self.signal_types
    }
}

impl MediaHasher for SignalsHasher {
    fn content_types(&self) -> Vec<String> {
        // Upstream's defaults (photo, video) plus any content type an installed signal type
        // applies to.
        let mut out: Vec<String> = vec!["photo".into(), "video".into()];
        for st in &self.signal_types {
            for ct in st.content_types() {
                if !out.iter().any(|c| c == ct.name()) {
                    out.push(ct.name().to_owned());
                }
            }
        }
        out
    }

    fn signal_types_for(&self, content_type: &str) -> Vec<String> {
        let Ok(ct) = content_type.parse::<ContentType>() else {
            return Vec::new();
        };
        self.signal_types
            .iter()
            .filter(|st| st.content_types().contains(&ct))
            .map(|st| st.name().to_owned())
            .collect()
    }

    fn hash(
        &self,
        content_type: &str,
        signal_type: &str,
        bytes: &[u8],
    ) -> Result<String, HashError> {
        let ct: ContentType = content_type
            .parse()
            .map_err(|_| HashError::Unavailable(format!("no such content type {content_type}")))?;
        let st: SignalType = signal_type
            .parse()
            .map_err(|_| HashError::Unavailable(format!("no such signal type {signal_type}")))?;
        match st.hash_bytes(ct, bytes, &self.options) {
            Ok(signal) => Ok(signal.value),
            Err(omm_signals::HashError::QualityTooLow { quality, .. }) => {
                Err(HashError::LowQuality {
                    signal_type: signal_type.to_owned(),
                    quality: u32::from(quality),
                    minimum: 50,
                })
            }
            Err(omm_signals::HashError::Decode(e)) => Err(HashError::Undecodable(e.to_string())),
            Err(e) => Err(HashError::Undecodable(e.to_string())),
        }
    }
}

/// The services `omm serve` runs with for `config`: the store it names (created and
/// migrated as needed) and hashing with the default signal types.
pub async fn default_services(config: &ServerConfig) -> Result<Services, ServerError> {
    let url = config.effective_database_url();
    let store = open_store(&url, config.database_read_url.as_deref()).await?;
    Ok(Services {
        hasher: Arc::new(SignalsHasher::default()),
        signal_types: DEFAULT_SIGNAL_TYPES.to_vec(),
        store,
    })
}

/// Opens the store at `url` (SQLite path/URL or `postgres://`), with an optional read replica.
pub async fn open_store(
    url: &str,
    read_url: Option<&str>,
) -> Result<omm_store::Store, ServerError> {
    let is_pg = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let result = if is_pg {
        let mut options = omm_store::PostgresOptions::new(url);
        options.read_replica_url = read_url.map(str::to_owned);
        omm_store::Store::open_postgres(options).await
    } else {
        omm_store::Store::open(url).await
    };
    result.map_err(|e| ServerError::Setup(format!("cannot open the database: {e}")))
}
