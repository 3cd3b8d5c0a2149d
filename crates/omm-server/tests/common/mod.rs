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
use md5::{Digest, Md5};
use omm_server::hashing::{HashError, MediaHasher};
use omm_server::{RunningServer, ServerConfig, Services};

/// A hasher for tests of the HTTP plumbing: `video_md5` is the real MD5; `test_photo` is a
/// stand-in photo signal (hex of the first bytes) that refuses bytes not starting with
/// `IMG` (undecodable) and `IMG-LOWQ` (low quality).
pub struct TestHasher;

impl MediaHasher for TestHasher {
    fn content_types(&self) -> Vec<String> {
        vec!["photo".into(), "video".into()]
    }

    fn signal_types_for(&self, content_type: &str) -> Vec<String> {
        match content_type {
            "photo" => vec!["test_photo".into()],
            "video" => vec!["video_md5".into()],
            _ => vec![],
        }
    }

    fn hash(&self, _ct: &str, signal_type: &str, bytes: &[u8]) -> Result<String, HashError> {
        match signal_type {
            "video_md5" => Ok(hex(&Md5::digest(bytes))),
            "test_photo" => {
                if bytes.starts_with(b"IMG-LOWQ") {
                    Err(HashError::LowQuality {
                        signal_type: "test_photo".into(),
                        quality: 10,
                        minimum: 50,
                    })
                } else if bytes.starts_with(b"IMG") {
                    Ok(hex(&bytes[..bytes.len().min(16)]))
                } else {
                    Err(HashError::Undecodable("not an image".into()))
                }
            }
            other => Err(HashError::Unavailable(format!("no hasher for {other}"))),
        }
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running server and a client for it.
pub struct TestServer {
    pub server: RunningServer,
    pub base: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server with the default test configuration changed by `adjust`.
    pub async fn start(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            ..ServerConfig::default()
        };
        adjust(&mut config);
        let server = omm_server::start(
            config,
            Services {
                hasher: Arc::new(TestHasher),
            },
        )
        .await
        .expect("server starts");
        let base = format!("http://{}", server.addr());
        TestServer {
            server,
            base,
            client: reqwest::Client::new(),
            _dir: dir,
        }
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

/// Bytes the origin serves as `/image.jpg`.
pub const IMAGE_BYTES: &[u8] = b"IMG-test-image-bytes-0123456789";

impl Origin {
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let redirect_self = format!("http://{addr}/image.jpg");
        let router = Router::new()
            .route(
                "/image.jpg",
                get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], IMAGE_BYTES) }),
            )
            .route(
                "/lowq.jpg",
                get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], &b"IMG-LOWQ"[..]) }),
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
            .route("/big", get(|| async { vec![b'I'; 4096] }))
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
    let mut resp = Response::new(Body::from(IMAGE_BYTES));
    resp.headers_mut().remove(header::CONTENT_TYPE);
    resp
}

/// 4 KiB in 16 chunks with no Content-Length, so only the streaming check can catch it.
async fn big_chunked() -> impl IntoResponse {
    let chunks = (0..16).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'I'; 256])));
    let stream = futures_util::stream::iter(chunks);
    (
        [(header::CONTENT_TYPE, "image/jpeg")],
        Body::from_stream(stream),
    )
}
