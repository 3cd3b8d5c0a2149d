//! End-to-end: status endpoints, OpenAPI, JSON errors, roles, hasher.

mod common;

use axum::http::StatusCode;
use common::{assert_error, flat_image, hex, image_bytes, pdq_of, Origin, TestServer};
use md5::{Digest, Md5};
use reqwest::multipart::{Form, Part};

#[tokio::test]
async fn status_endpoints() {
    let t = TestServer::start(|_| {}).await;
    for path in ["/status", "/status/live", "/livez", "/readyz"] {
        let (status, body) = t.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body, "I-AM-ALIVE", "{path}");
    }
    let resp = t.client.get(t.url("/")).send().await.unwrap();
    assert_eq!(resp.url().path(), "/status", "root redirects to /status");

    let (status, map) = t.get_json("/site-map").await;
    assert_eq!(status, StatusCode::OK);
    let rules: Vec<String> = serde_json::from_value(map).unwrap();
    let mut sorted = rules.clone();
    sorted.sort();
    assert_eq!(rules, sorted);
    for rule in [
        "/status",
        "/status/live",
        "/site-map",
        "/h/hash",
        "/openapi/openapi.json",
    ] {
        assert!(
            rules.iter().any(|r| r == rule),
            "{rule} missing in {rules:?}"
        );
    }
}

/// The store as a change source whose initial load waits for a gate: a matcher on it stays
/// "not loaded" until the test opens the gate.
struct GatedStore {
    store: omm_store::Store,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl omm_matcher::ChangeSource for GatedStore {
    type Initial = <omm_store::Store as omm_matcher::ChangeSource>::Initial;
    type Wake = <omm_store::Store as omm_matcher::ChangeSource>::Wake;

    async fn current_seq(&self) -> Result<i64, omm_matcher::SourceError> {
        omm_matcher::ChangeSource::current_seq(&self.store).await
    }

    async fn changes_since(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<omm_matcher::SeqEvent>, omm_matcher::SourceError> {
        omm_matcher::ChangeSource::changes_since(&self.store, after, limit).await
    }

    async fn load_state(&self, chunk: usize) -> Result<Self::Initial, omm_matcher::SourceError> {
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        omm_matcher::ChangeSource::load_state(&self.store, chunk).await
    }

    async fn subscribe(&self) -> Result<Option<Self::Wake>, omm_matcher::SourceError> {
        omm_matcher::ChangeSource::subscribe(&self.store).await
    }
}

#[tokio::test]
async fn status_is_503_until_the_matcher_has_loaded() {
    let t = TestServer::start(|_| {}).await;
    // The same server state with a matcher whose first load waits for a gate.
    let state = t.server.state().clone();
    let (open, gate) = tokio::sync::watch::channel(false);
    let source = GatedStore {
        store: state.store.clone(),
        gate,
    };
    let matcher = omm_matcher::Matcher::start(
        source,
        omm_matcher::MatcherConfig {
            signal_types: vec![omm_server::server::indexed_type(
                omm_signals::SignalType::Pdq,
            )],
            ..omm_matcher::MatcherConfig::default()
        },
    )
    .unwrap();
    let app = omm_server::app::build_router(omm_server::state::AppState {
        matcher: matcher.clone(),
        ..state
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |p: &str| {
        let c = t.client.clone();
        let url = format!("http://{addr}{p}");
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/status").await, (503, "INDEX-NOT-LOADED".into()));
    assert_eq!(get("/readyz").await, (503, "INDEX-NOT-LOADED".into()));
    assert_eq!(get("/status/live").await, (200, "I-AM-ALIVE".into()));
    let pdq = "f".repeat(64);
    let (status, body) = get(&format!("/m/raw_lookup?signal_type=pdq&signal={pdq}")).await;
    assert_eq!(status, 503, "{body}");
    let (_, index) = get("/m/index/status?signal_type=pdq").await;
    assert!(index.contains("\"present\":false"), "{index}");
    open.send_replace(true);
    assert!(matcher.wait_ready(std::time::Duration::from_secs(20)).await);
    assert_eq!(get("/status").await, (200, "I-AM-ALIVE".into()));
}

#[tokio::test]
async fn openapi_document_and_swagger_ui() {
    let t = TestServer::start(|_| {}).await;
    let (status, doc) = t.get_json("/openapi/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["info"]["title"], "Open Media Match API");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/h/hash"]["get"].is_object());
    assert!(doc["paths"]["/h/hash"]["post"].is_object());

    let resp = t
        .client
        .get(t.url("/openapi/swagger/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("swagger"), "{html}");
    // Assets come from the binary, not a CDN.
    assert!(!html.contains("cdn"), "{html}");
    let resp = t
        .client
        .get(t.url("/openapi/swagger/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().len() > 10_000);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let t = TestServer::start(|_| {}).await;
    let got = t.get_json("/h/nothing-here").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not found");
    let got = t.send_json(t.client.delete(t.url("/h/hash"))).await;
    assert_error(
        &got,
        StatusCode::METHOD_NOT_ALLOWED,
        "method is not allowed",
    );
}

#[tokio::test]
async fn a_role_that_is_off_answers_404() {
    let t = TestServer::start(|c| c.role_hasher = false).await;
    let got = t.get_json("/h/hash?url=http://example.com/").await;
    assert_error(&got, StatusCode::NOT_FOUND, "not found");
    let (_, doc) = t.get_json("/openapi/openapi.json").await;
    assert!(doc["paths"]["/h/hash"].is_null());
}

#[tokio::test]
async fn hash_by_url() {
    let origin = Origin::start().await;
    let t = TestServer::start(|c| c.allow_private_targets = true).await;
    let url = origin.url("/image.jpg");
    let (status, body) = t.get_json(&format!("/h/hash?url={url}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"pdq": pdq_of(&image_bytes())}));

    // Forced content type.
    let (status, body) = t
        .get_json(&format!("/h/hash?url={url}&content_type=video"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["video_md5"], hex(&Md5::digest(image_bytes())));
    // Video inferred from the response.
    let (status, body) = t
        .get_json(&format!("/h/hash?url={}", origin.url("/video.mp4")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["video_md5"], hex(&Md5::digest(b"some video bytes")));
}

#[tokio::test]
async fn hash_by_url_errors() {
    let origin = Origin::start().await;
    let t = TestServer::start(|c| {
        c.allow_private_targets = true;
        c.max_remote_file_size = 60_000;
    })
    .await;
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("/h/hash".into(), StatusCode::UNPROCESSABLE_ENTITY, "url"),
        (
            "/h/hash?url=ftp://x/".into(),
            StatusCode::BAD_REQUEST,
            "Invalid or unsafe URL provided",
        ),
        (
            "/h/hash?url=not%20a%20url".into(),
            StatusCode::BAD_REQUEST,
            "Invalid or unsafe URL provided",
        ),
        (
            format!("/h/hash?url={}", origin.url("/missing")),
            StatusCode::BAD_REQUEST,
            "Failed to fetch URL: 404",
        ),
        (
            format!("/h/hash?url={}", origin.url("/big")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content too large",
        ),
        (
            format!("/h/hash?url={}", origin.url("/big-chunked")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "Content too large",
        ),
        (
            format!("/h/hash?url={}", origin.url("/text.txt")),
            StatusCode::BAD_REQUEST,
            "unsupported url ContentType: 'text/plain'",
        ),
        (
            format!("/h/hash?url={}", origin.url("/no-type")),
            StatusCode::BAD_REQUEST,
            "unsupported url ContentType",
        ),
        (
            format!(
                "/h/hash?url={}&content_type=audio",
                origin.url("/image.jpg")
            ),
            StatusCode::BAD_REQUEST,
            "no such content_type: 'audio'",
        ),
        (
            format!("/h/hash?url={}&types=video_md5", origin.url("/image.jpg")),
            StatusCode::BAD_REQUEST,
            "signal type 'video_md5' doesn't exist or is disabled",
        ),
        (
            format!("/h/hash?url={}&types=", origin.url("/image.jpg")),
            StatusCode::BAD_REQUEST,
            "empty signal type selection",
        ),
        (
            format!("/h/hash?url={}&content_type=photo", origin.url("/text.txt")),
            StatusCode::BAD_REQUEST,
            "cannot decode",
        ),
        (
            format!("/h/hash?url={}", origin.url("/lowq.jpg")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "quality",
        ),
    ];
    for (path, status, needle) in cases {
        let got = t.get_json(&path).await;
        assert_error(&got, status, needle);
    }
    // `types=a,` works: empty parts are skipped.
    let (status, _) = t
        .get_json(&format!(
            "/h/hash?url={}&types=pdq,",
            origin.url("/image.jpg")
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hash_by_url_refuses_private_targets_by_default() {
    let origin = Origin::start().await;
    let t = TestServer::start(|_| {}).await;
    for url in [
        origin.url("/image.jpg"),
        format!("http://localhost:{}/image.jpg", origin.addr.port()),
        "http://169.254.169.254/latest/meta-data".into(),
        "http://[::ffff:127.0.0.1]/".into(),
    ] {
        let got = t.get_json(&format!("/h/hash?url={url}")).await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "Invalid or unsafe URL provided",
        );
    }
}

#[tokio::test]
async fn hash_by_url_allow_list() {
    let origin = Origin::start().await;
    let t = TestServer::start(|c| {
        c.allow_private_targets = true;
        c.allowed_hostnames = vec!["localhost".into()];
    })
    .await;
    let got = t
        .get_json(&format!("/h/hash?url={}", origin.url("/image.jpg")))
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "not in the allowed hostnames",
    );
    let (status, _) = t
        .get_json(&format!(
            "/h/hash?url=http://localhost:{}/image.jpg",
            origin.addr.port()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hash_by_upload() {
    let t = TestServer::start(|_| {}).await;
    let form = Form::new().part("photo", Part::bytes(image_bytes()).file_name("a.jpg"));
    let (status, body) = t
        .send_json(t.client.post(t.url("/h/hash")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, serde_json::json!({"pdq": pdq_of(&image_bytes())}));

    // The same bytes as video give the MD5 of the bytes.
    let form = Form::new().part("video", Part::bytes(image_bytes()).file_name("a.mp4"));
    let (status, body) = t
        .send_json(t.client.post(t.url("/h/hash")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        serde_json::json!({"video_md5": hex(&Md5::digest(image_bytes()))})
    );
}

#[tokio::test]
async fn hash_by_upload_errors() {
    let t = TestServer::start(|c| c.max_content_length = 64 * 1024).await;
    let post = |form: Form| t.send_json(t.client.post(t.url("/h/hash")).multipart(form));

    let got = post(Form::new().text("note", "x")).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "Missing multipart/form-data file upload",
    );
    let got = post(Form::new().part("file", Part::bytes(image_bytes()).file_name("a"))).await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "no such content_type: 'file'",
    );
    let got = post(
        Form::new()
            .part("photo", Part::bytes(image_bytes()).file_name("a"))
            .part("photo", Part::bytes(image_bytes()).file_name("b")),
    )
    .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "Only one file allowed per request",
    );
    let got =
        post(Form::new().part("photo", Part::bytes(b"garbage".to_vec()).file_name("a"))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "cannot decode");
    let got = post(Form::new().part("photo", Part::bytes(flat_image()).file_name("a"))).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "quality");
    let got =
        post(Form::new().part("photo", Part::bytes(vec![b'I'; 200 * 1024]).file_name("a"))).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "too large");

    // Not multipart at all.
    let got = t
        .send_json(t.client.post(t.url("/h/hash")).body("plain"))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "multipart");
    // Corrupt multipart body.
    let got = t
        .send_json(
            t.client
                .post(t.url("/h/hash"))
                .header("content-type", "multipart/form-data; boundary=XYZ")
                .body("--XYZ\r\nContent-Disposition: form-data; name=\"photo\"\r\n\r\nXX"),
        )
        .await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
}
