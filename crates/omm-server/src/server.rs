//! Starting and stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use omm_matcher::{IndexedType, KeyKind, Matcher, MatcherConfig};
use omm_signals::SignalType;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{LogFormat, ServerConfig};
use crate::fetch::{FetchPolicy, UrlFetcher};
use crate::hashing::MediaHasher;
use crate::state::AppState;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(#[from] std::io::Error),
    /// Something the server needs could not be set up.
    #[error("cannot start: {0}")]
    Setup(String),
}

/// The pieces the server is built from, besides its configuration.
pub struct Services {
    /// Hashing back end.
    pub hasher: Arc<dyn MediaHasher>,
    /// Installed signal types (what `/c/signal_type` lists and the matcher indexes).
    pub signal_types: Vec<omm_signals::SignalType>,
    /// The store.
    pub store: omm_store::Store,
}

/// A server running in the background (see [`start`]).
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting connections, lets in-flight requests finish and waits for the end.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Setup(format!("server task failed: {e}"))),
        }
    }

    /// Waits until the server stops by itself (after a signal, with [`serve`]).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Setup(format!("server task failed: {e}"))),
        }
    }
}

/// How the matcher indexes one of our signal types.
pub fn indexed_type(st: SignalType) -> IndexedType {
    let kind = match st {
        SignalType::Pdq => KeyKind::Pdq,
        SignalType::VideoMd5 | SignalType::UrlMd5 => KeyKind::HexDigest { bytes: 16 },
        SignalType::VideoSha256 => KeyKind::HexDigest { bytes: 32 },
        SignalType::Url => KeyKind::Text,
    };
    IndexedType {
        name: st.name().to_owned(),
        kind,
        threshold: st.default_threshold(),
    }
}

/// The matcher's configuration. A process without the matcher role still tails the filter
/// state (signal type ratios, for the hasher) but indexes nothing and keeps no snapshots.
fn matcher_config(config: &ServerConfig, services: &Services) -> MatcherConfig {
    let (signal_types, snapshot_dir) = if config.role_matcher {
        (
            services
                .signal_types
                .iter()
                .copied()
                .map(indexed_type)
                .collect(),
            config.effective_snapshot_dir(),
        )
    } else {
        (Vec::new(), None)
    };
    MatcherConfig {
        signal_types,
        poll_interval: Duration::from_millis(config.matcher_poll_interval_ms.max(10)),
        snapshot_dir,
        snapshot_interval: (config.matcher_snapshot_interval_seconds > 0)
            .then(|| Duration::from_secs(config.matcher_snapshot_interval_seconds)),
        ..MatcherConfig::default()
    }
}

/// Builds the shared state from a configuration and services; starts the matcher (it loads
/// in the background, from its snapshot if one is usable, else from the store). Must be called
/// within a tokio runtime.
pub fn build_state(config: ServerConfig, services: Services) -> Result<AppState, ServerError> {
    let fetcher = UrlFetcher::new(FetchPolicy {
        allowed_hostnames: config.allowed_hostnames.clone(),
        allow_private_targets: config.allow_private_targets,
        max_bytes: config.max_remote_file_size,
        timeout: Duration::from_secs(config.fetch_timeout_seconds.max(1)),
        max_redirects: config.fetch_max_redirects,
    })
    .map_err(|e| ServerError::Setup(e.to_string()))?;
    let matcher = Matcher::start(services.store.clone(), matcher_config(&config, &services))
        .map_err(|e| ServerError::Setup(e.to_string()))?;
    Ok(AppState {
        uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads.max(1))),
        config: Arc::new(config),
        hasher: services.hasher,
        fetcher,
        signal_types: Arc::new(services.signal_types),
        store: services.store,
        matcher,
    })
}

/// Binds the configured address and serves in the background until
/// [`RunningServer::shutdown`] (or `stop` resolves).
pub async fn start_with_shutdown(
    config: ServerConfig,
    services: Services,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, ServerError> {
    let listen = config.listen;
    // Bind first: a taken port should not start a matcher load for nothing.
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let state = build_state(config, services)?;
    let addr = listener.local_addr()?;
    let router = crate::app::build_router(state.clone());
    let matcher = state.matcher.clone();
    let fetch_task = state.config.task_fetcher.then(|| spawn_fetcher(&state));
    let review_task = state
        .config
        .task_fetcher
        .then(|| crate::reviews::spawn_review_writer(&state));
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let shutdown = async move {
            tokio::select! {
                _ = rx => {}
                _ = stop => {}
            }
            tracing::info!("shutting down: finishing in-flight requests");
        };
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ServerError::Serve);
        // Dropping a fetch mid-batch is safe: each batch and its checkpoint are one store
        // transaction, so the next run resumes from the last stored checkpoint.
        if let Some(task) = fetch_task {
            task.abort();
        }
        // An attempt cut short is retried after its claim lapses; the review stays stored.
        if let Some(task) = review_task {
            task.abort();
        }
        // Stops tailing and writes the final snapshot, so the next start loads it and only
        // replays what changed while this process was down.
        if let Err(e) = matcher.shutdown().await {
            tracing::warn!(error = %e, "matcher shutdown: final snapshot not written");
        }
        result
    });
    tracing::info!(%addr, "omm serving");
    Ok(RunningServer {
        addr,
        state,
        shutdown: Some(tx),
        handle,
    })
}

/// Starts the exchange fetcher (`task_fetcher`): every enabled exchange is fetched from its
/// checkpoint every `task_fetcher_interval_seconds`, starting now. The store's fetch lease keeps
/// several `omm serve` processes on one database from fetching the same exchange at once.
fn spawn_fetcher(state: &AppState) -> JoinHandle<()> {
    let settings = omm_exchange::fetcher::FetcherSettings {
        interval: Duration::from_secs(state.config.task_fetcher_interval_seconds.max(1)),
        signal_types: Some(
            state
                .signal_types
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
        ),
        ..omm_exchange::fetcher::FetcherSettings::default()
    };
    let fetcher = omm_exchange::fetcher::Fetcher::new(state.store.clone(), settings);
    tracing::info!(
        interval_seconds = state.config.task_fetcher_interval_seconds,
        "exchange fetcher started"
    );
    tokio::spawn(async move { fetcher.run(std::future::pending::<()>()).await })
}

/// Starts the server in the background; stop it with [`RunningServer::shutdown`].
pub async fn start(config: ServerConfig, services: Services) -> Result<RunningServer, ServerError> {
    start_with_shutdown(config, services, std::future::pending()).await
}

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(config: ServerConfig, services: Services) -> Result<(), ServerError> {
    let server = start_with_shutdown(config, services, shutdown_signal()).await?;
    server.wait().await
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

/// Keeps the log writer thread alive; logs written before it is dropped are flushed then.
#[must_use = "dropping the guard stops the log writer"]
pub struct LoggingGuard {
    /// Held only for its `Drop`, which flushes and stops the writer thread.
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl std::fmt::Debug for LoggingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggingGuard").finish_non_exhaustive()
    }
}

/// Installs the global tracing subscriber (text or JSON lines), filtered by `RUST_LOG`
/// (default `info`). Does nothing if one is installed already.
///
/// Lines are formatted on the request's thread but written by a thread of their own, so a
/// request never waits for the write to stdout (that write cost about a quarter of the
/// lookup throughput, BENCHMARKS.md). The queue is not lossy: when it is full, loggers wait
/// rather than drop lines. Hold the returned guard until exit.
pub fn init_logging(format: LogFormat) -> LoggingGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("omm-log")
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LoggingGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}
