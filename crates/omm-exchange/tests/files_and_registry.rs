//! `sample`, `local_file`, `url_file`, and the registry / schema / credential surface.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use common::{http, pdq, serve, Consumer, Fault, Faults};
use omm_exchange::{
    all_apis, api_by_name, Credentials, Exchange, ExchangeError, ExchangeSetup, Review, Signal,
    Verdict,
};
use serde_json::{json, Value};

fn open(api: &str, config: Value) -> Arc<dyn Exchange> {
    let api = api_by_name(api).unwrap();
    api.open(ExchangeSetup {
        name: "X".into(),
        config: api.normalize_config(&config).unwrap(),
        credentials: None,
        http: http(),
    })
    .unwrap()
}

#[tokio::test]
async fn sample_lists_examples_once() {
    let ex = open("sample", json!({}));
    let mut c = Consumer::default();
    c.fetch(ex.as_ref()).await.unwrap();
    let pdqs = c
        .records
        .values()
        .filter(|r| r.signals[0].signal_type == "pdq")
        .count();
    let md5s = c
        .records
        .values()
        .filter(|r| r.signals[0].signal_type == "video_md5")
        .count();
    assert_eq!((pdqs, md5s), (16, 2), "upstream's sample set");
    assert!(c
        .records
        .contains_key("pdq f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"));
    assert_eq!(c.fetch(ex.as_ref()).await.unwrap(), 0, "up to date");
    let err = ex
        .report_review(Review {
            record_id: "x".into(),
            signal: Signal::new("pdq", pdq(1)),
            metadata: json!({}),
            verdict: Verdict::TruePositive,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Unsupported { .. }));
}

#[tokio::test]
async fn local_file_lists_changes_and_deletes_removed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signals.txt");
    let mut text = String::from("# a comment\n\n");
    for i in 0..25_000u64 {
        text.push_str(&format!("pdq {}\n", pdq(i)));
    }
    text.push_str("pdq not-a-hash\nbogus_type abc\nvideo_md5 D41D8CD98F00B204E9800998ECF8427E\n");
    std::fs::write(&path, &text).unwrap();
    let ex = open("local_file", json!({"filename": path.to_str().unwrap()}));
    let mut c = Consumer::default();
    assert_eq!(c.fetch(ex.as_ref()).await.unwrap(), 3);
    assert_eq!(c.records.len(), 25_001);
    assert!(c
        .records
        .contains_key("video_md5 d41d8cd98f00b204e9800998ecf8427e"));
    assert_eq!(c.fetch(ex.as_ref()).await.unwrap(), 0, "unchanged file");

    // Remove most lines, add one: removed lines are deleted.
    std::fs::write(&path, format!("pdq {}\npdq {}\n", pdq(3), pdq(99_999))).unwrap();
    c.fetch(ex.as_ref()).await.unwrap();
    let ids: std::collections::BTreeSet<String> = c.records.keys().cloned().collect();
    assert_eq!(
        ids,
        [format!("pdq {}", pdq(3)), format!("pdq {}", pdq(99_999))].into()
    );

    // Fixed signal type: every line is a value.
    let md5_path = dir.path().join("md5.txt");
    std::fs::write(
        &md5_path,
        "d41d8cd98f00b204e9800998ecf8427e\ncab08b36195edb1a1231d2d09fa450e0\n",
    )
    .unwrap();
    let mut c = Consumer::default();
    c.fetch(
        open(
            "local_file",
            json!({"filename": md5_path.to_str().unwrap(), "signal_type": "video_md5"}),
        )
        .as_ref(),
    )
    .await
    .unwrap();
    assert_eq!(c.records.len(), 2);

    let missing = open(
        "local_file",
        json!({"filename": dir.path().join("nope").to_str().unwrap()}),
    );
    assert!(matches!(
        Consumer::default().fetch(missing.as_ref()).await,
        Err(ExchangeError::Io { .. })
    ));
}

#[derive(Clone, Default)]
struct FileServer {
    body: Arc<Mutex<String>>,
    faults: Faults,
}

async fn file(State(s): State<FileServer>) -> Response {
    if let Some(r) = s.faults.check() {
        return r;
    }
    s.body.lock().unwrap().clone().into_response()
}

#[tokio::test]
async fn url_file_fetches_retries_and_reports_errors() {
    let server = FileServer::default();
    *server.body.lock().unwrap() = (0..100).map(|i| format!("pdq {}\n", pdq(i))).collect();
    let base = serve(
        Router::new()
            .route("/lists/hashes.txt", get(file))
            .with_state(server.clone()),
    )
    .await;
    let ex = open(
        "url_file",
        json!({"url": format!("{base}/lists/hashes.txt?v=1")}),
    );
    server.faults.push(Fault::status(503));
    server.faults.push(Fault::retry_after(429, "0"));
    let mut c = Consumer::default();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.records.len(), 100);
    assert_eq!(server.faults.requests(), 3);
    server.faults.push(Fault::status(401));
    assert!(matches!(
        c.fetch(ex.as_ref()).await,
        Err(ExchangeError::Auth { status: 401, .. })
    ));
    server.faults.push(Fault::status(404));
    assert!(matches!(
        c.fetch(ex.as_ref()).await,
        Err(ExchangeError::Http { status: 404, .. })
    ));
    assert_eq!(c.records.len(), 100, "failed fetches change nothing");

    for bad in [
        "ftp://x/y",
        "file:///etc/passwd",
        "http://u:p@x/y",
        "not a url",
    ] {
        assert!(
            api_by_name("url_file")
                .unwrap()
                .normalize_config(&json!({"url": bad}))
                .is_err(),
            "{bad}"
        );
    }
}

#[test]
fn registry_schemas_and_credentials() {
    let names: Vec<&str> = all_apis().iter().map(|a| a.name()).collect();
    assert_eq!(
        names,
        [
            "sample",
            "local_file",
            "url_file",
            "fb_threatexchange",
            "ncmec",
            "stop_ncii",
            "tat"
        ]
    );
    assert!(api_by_name("nope").is_none());

    let te = api_by_name("fb_threatexchange").unwrap();
    let schema = serde_json::to_value(te.config_schema()).unwrap();
    assert_eq!(
        schema["fields"][0],
        json!({"name": "privacy_group", "type": "number", "required": true, "default": null, "help": "ThreatExchange privacy group id", "choices": null})
    );
    let ncmec = serde_json::to_value(api_by_name("ncmec").unwrap().config_schema()).unwrap();
    assert_eq!(ncmec["fields"][0]["type"], "enum");
    assert_eq!(ncmec["fields"][0]["choices"].as_array().unwrap().len(), 14);
    assert_eq!(ncmec["fields"][1]["type"], "set_of_number");
    assert!(api_by_name("sample")
        .unwrap()
        .credentials_schema()
        .is_none());
    let stop = serde_json::to_value(
        api_by_name("stop_ncii")
            .unwrap()
            .credentials_schema()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stop["fields"][0]["secret"], true);

    // Credentials: validated, never printed, status reports only set / not set.
    assert!(te
        .parse_credentials(&json!({"api_token": "garbage"}))
        .is_err());
    assert!(te
        .parse_credentials(&json!({"api_token": "12345678|abcdefghijklmnopqrstuvwxyz", "x": 1}))
        .is_err());
    let creds = te
        .parse_credentials(&json!({"api_token": "12345678|abcdefghijklmnopqrstuvwxyz"}))
        .unwrap();
    assert!(!format!("{creds:?}").contains("abcdefghij"));
    let status = serde_json::to_value(te.credential_status(Some(&creds))).unwrap();
    assert_eq!(
        status,
        json!({"supports_authentification": true, "has_set_authentification": true})
    );
    assert!(!te.credential_status(None).has_set_authentification);
    let sample = api_by_name("sample").unwrap();
    assert!(!sample.credential_status(None).supports_authentification);
    assert!(sample.parse_credentials(&json!({"a": 1})).is_err());
    assert_eq!(
        te.parse_credentials(&creds.to_storage_json()).unwrap(),
        creds
    );
    let ncmec_api = api_by_name("ncmec").unwrap();
    assert!(ncmec_api
        .parse_credentials(&json!({"user": "u", "password": ""}))
        .is_err());
    assert!(matches!(
        ncmec_api.parse_credentials(&json!({"user": "u", "password": "p"})),
        Ok(Credentials::Ncmec { .. })
    ));

    // Opening without credentials is a typed error; wrong API credentials too.
    let err = te
        .open(ExchangeSetup {
            name: "T".into(),
            config: json!({"privacy_group": 1}),
            credentials: None,
            http: http(),
        })
        .err()
        .unwrap();
    assert!(matches!(
        err,
        ExchangeError::MissingCredentials("fb_threatexchange")
    ));

    // Configs: unknown keys rejected, generic keys ignored, base URLs validated.
    assert!(te
        .normalize_config(&json!({"privacy_group": "abc"}))
        .is_err());
    assert!(te
        .normalize_config(&json!({"privacy_group": 1, "typo": 2}))
        .is_err());
    assert!(te
        .normalize_config(&json!({"privacy_group": 1, "base_url": "gopher://x"}))
        .is_err());
    assert_eq!(
        te.normalize_config(&json!({"name": "TE", "api": "fb_threatexchange", "enabled": true, "privacy_group": 7, "base_url": "https://proxy.example/graph/"})).unwrap(),
        json!({"privacy_group": 7, "base_url": "https://proxy.example/graph"})
    );
    assert!(te.normalize_config(&json!([1])).is_err());
    assert!(api_by_name("stop_ncii").unwrap().accepts_reviews());
    assert!(!api_by_name("tat").unwrap().accepts_reviews());
}
