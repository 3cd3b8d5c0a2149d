//! Test harness: the real server on 127.0.0.1:0, spoken to over HTTP, plus a small origin
//! server that serves media for `?url=` tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use omm_server::builtin::SignalsHasher;
use omm_server::{RunningServer, ServerConfig, Services};

/// A 24-bit BMP of `size`x`size` pixels whose gray value at (x, y) is `pixel(x, y)`.
pub fn bmp(size: u32, pixel: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let row = (size * 3).div_ceil(4) * 4;
    let data_len = row * size;
    let mut out = Vec::with_capacity(54 + data_len as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(54 + data_len).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(size as i32).to_le_bytes());
    out.extend_from_slice(&(size as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 24]);
    for y in (0..size).rev() {
        let start = out.len();
        for x in 0..size {
            let v = pixel(x, y);
            out.extend_from_slice(&[v, v, v]);
        }
        while out.len() - start < row as usize {
            out.push(0);
        }
    }
    out
}

/// A black/white checkerboard with `cell`-pixel squares (a photo with a usable PDQ).
pub fn checkerboard(cell: u32) -> Vec<u8> {
    bmp(128, |x, y| {
        if ((x / cell) + (y / cell)) % 2 == 0 {
            0
        } else {
            255
        }
    })
}

/// A uniform gray image: PDQ quality 0.
pub fn flat_image() -> Vec<u8> {
    bmp(64, |_, _| 128)
}

/// PDQ of `bytes` computed directly with omm-signals (the expected value).
pub fn pdq_of(bytes: &[u8]) -> String {
    omm_signals::SignalType::Pdq
        .hash_bytes(
            omm_signals::ContentType::Photo,
            bytes,
            &omm_signals::HashOptions::default(),
        )
        .expect("hashable test image")
        .value
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Directory of the shared test vectors.
pub fn vectors_dir() -> std::path::PathBuf {
    match std::env::var_os("OMM_VECTORS_DIR") {
        Some(d) => d.into(),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"),
    }
}

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema on `OMM_TEST_DATABASE_URL`.
    Postgres,
}

/// The backends to run a test on: SQLite always, Postgres when configured.
pub fn backends() -> Vec<Backend> {
    if std::env::var("OMM_TEST_DATABASE_URL").is_ok() {
        vec![Backend::Sqlite, Backend::Postgres]
    } else {
        eprintln!("OMM_TEST_DATABASE_URL not set: PostgreSQL variant skipped");
        vec![Backend::Sqlite]
    }
}

static SCHEMA_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A unique schema name for this test process.
pub fn unique_schema() -> String {
    let n = SCHEMA_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("omm_srv_{}_{}_{}", std::process::id(), nanos, n)
}

/// Opens a store for `backend` (in `dir` for SQLite, or in `schema` for Postgres).
pub async fn open_store(backend: Backend, dir: &std::path::Path, schema: &str) -> omm_store::Store {
    match backend {
        Backend::Sqlite => omm_store::Store::open_sqlite(dir.join("omm.db"))
            .await
            .expect("sqlite store"),
        Backend::Postgres => {
            let url = std::env::var("OMM_TEST_DATABASE_URL").expect("OMM_TEST_DATABASE_URL");
            let mut options = omm_store::PostgresOptions::new(url);
            options.schema = Some(schema.to_owned());
            options.max_connections = 4;
            omm_store::Store::open_postgres(options)
                .await
                .expect("postgres store")
        }
    }
}

/// A test's data directory and, on PostgreSQL, its schema: both removed when dropped, so a
/// test leaves nothing behind (also after a panic).
pub struct TestDir {
    dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDir {
    /// A directory whose PostgreSQL `schema` (if any) is dropped with it.
    pub fn new(dir: tempfile::TempDir, schema: Option<String>) -> TestDir {
        TestDir { dir, schema }
    }

    /// The directory.
    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl From<tempfile::TempDir> for TestDir {
    fn from(dir: tempfile::TempDir) -> TestDir {
        TestDir { dir, schema: None }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let (Some(schema), Ok(url)) = (self.schema.take(), std::env::var("OMM_TEST_DATABASE_URL"))
        else {
            return;
        };
        // A runtime of its own: this may run inside (or after) the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running server and a client for it.
pub struct TestServer {
    pub server: RunningServer,
    pub base: String,
    pub client: reqwest::Client,
    _dir: TestDir,
}

impl TestServer {
    /// Starts a server with the default test configuration changed by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        Self::start_on(Backend::Sqlite, adjust).await
    }

    /// Starts a server on `backend`.
    pub async fn start_on(backend: Backend, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let schema = unique_schema();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(backend, dir.path(), &schema).await;
        let dir = TestDir::new(dir, (backend == Backend::Postgres).then_some(schema));
        Self::start_with_store(store, dir, adjust).await
    }

    /// Starts a server on an opened store.
    pub async fn start_with_store(
        store: omm_store::Store,
        dir: impl Into<TestDir>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let dir = dir.into();
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            // Tests that want the background fetcher turn it on themselves.
            task_fetcher: false,
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let server = omm_server::start(
            config,
            Services {
                hasher: Arc::new(SignalsHasher::default()),
                signal_types: omm_server::builtin::DEFAULT_SIGNAL_TYPES.to_vec(),
                store,
            },
        )
        .await
        .expect("server starts");
        config_matcher_wait(&server).await;
        let base = format!("http://{}", server.addr());
        TestServer {
            server,
            base,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// Shuts the server down gracefully (the matcher writes its final snapshot) and hands
    /// back its data directory, to start again on it.
    pub async fn stop(self) -> TestDir {
        self.server.shutdown().await.expect("clean shutdown");
        self._dir
    }

    /// Absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET `path`, returning status and body text.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self.client.get(self.url(path)).send().await.expect("GET");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        (status, resp.text().await.unwrap())
    }

    /// GET `path`, returning status and JSON body (panics if the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
        let (status, text) = self.get(path).await;
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {text}"));
        (status, json)
    }

    /// Sends a request and returns status plus JSON body.
    pub async fn send_json(&self, req: reqwest::RequestBuilder) -> (StatusCode, serde_json::Value) {
        let resp = req.send().await.expect("request");
        let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
        let text = resp.text().await.unwrap();
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text}"));
        (status, json)
    }
}

/// Waits (with a deadline) until the matcher has loaded.
async fn config_matcher_wait(server: &RunningServer) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !server.state().matcher.is_ready() {
        assert!(std::time::Instant::now() < deadline, "matcher did not load");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Polls `check` until it returns true or `timeout` passes; returns the time it took.
pub async fn wait_until<F, Fut>(
    timeout: std::time::Duration,
    mut check: F,
) -> Option<std::time::Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Asserts an error response: the status and a JSON `message` containing `needle`.
pub fn assert_error(got: &(StatusCode, serde_json::Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    let message = got.1["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {}", got.1));
    assert!(
        message.contains(needle),
        "message {message:?} does not contain {needle:?}"
    );
}

/// An origin server for downloads, on 127.0.0.1:0.
pub struct Origin {
    pub addr: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

/// Bytes the origin serves as `/image.jpg` (a photo; served with type image/jpeg).
pub fn image_bytes() -> Vec<u8> {
    checkerboard(8)
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let redirect_self = format!("http://{addr}/image.jpg");
        let router = Router::new()
            .route(
                "/image.jpg",
                get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], image_bytes()) }),
            )
            .route(
                "/lowq.jpg",
                get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], flat_image()) }),
            )
            .route(
                "/video.mp4",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "video/mp4")],
                        &b"some video bytes"[..],
                    )
                }),
            )
            .route(
                "/text.txt",
                get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "hello") }),
            )
            .route("/no-type", get(no_content_type))
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "nope") }),
            )
            .route("/big", get(|| async { vec![b'I'; 100_000] }))
            .route(
                "/image2.jpg",
                get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], checkerboard(16)) }),
            )
            .route("/big-chunked", get(big_chunked))
            .route(
                "/redirect",
                get(move || {
                    let to = redirect_self.clone();
                    async move { (StatusCode::FOUND, [(header::LOCATION, to)]) }
                }),
            )
            .route(
                "/redirect-relative",
                get(|| async {
                    (
                        StatusCode::MOVED_PERMANENTLY,
                        [(header::LOCATION, "/image.jpg")],
                    )
                }),
            )
            .route(
                "/redirect-metadata",
                get(|| async {
                    (
                        StatusCode::FOUND,
                        [(header::LOCATION, "http://169.254.169.254/latest/meta-data")],
                    )
                }),
            )
            .route(
                "/redirect-loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/redirect-loop")]) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Origin { addr, _task: task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn no_content_type() -> Response {
    let mut resp = Response::new(Body::from(image_bytes()));
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp
}

/// 100,000 bytes in 16 chunks with no Content-Length, so only the streaming check can catch it.
async fn big_chunked() -> impl IntoResponse {
    let chunks = (0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'I'; 6250])));
    let stream = futures_util::stream::iter(chunks);
    (
        [(header::CONTENT_TYPE, "image/jpeg")],
        Body::from_stream(stream),
    )
}
