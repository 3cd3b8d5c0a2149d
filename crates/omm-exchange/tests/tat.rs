//! `tat` against a fake TCAP server: token auth, keyset paging with `after` cursors.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::{http, md5, pdq, serve, Consumer, Fault, Faults};
use omm_exchange::{api_by_name, Checkpoint, Exchange, ExchangeError, ExchangeSetup};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
struct Entry {
    id: u64,
    hash: String,
    algorithm: &'static str,
    file_type: &'static str,
    deleted: bool,
    updated_on: f64,
}

#[derive(Clone, Default)]
struct Fake {
    entries: Arc<Mutex<Vec<Entry>>>,
    tokens: Arc<Mutex<BTreeSet<String>>>,
    token_requests: Arc<AtomicUsize>,
    faults: Faults,
    page_size: usize,
}

#[derive(serde::Deserialize)]
struct Login {
    username: String,
    password: String,
    resend: String,
}

async fn token(State(f): State<Fake>, Form(login): Form<Login>) -> Response {
    let n = f.token_requests.fetch_add(1, Ordering::SeqCst);
    assert_eq!(login.resend, "False");
    if login.username != "analyst" || login.password != "s3cret" {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"non_field_errors": ["bad credentials"]})),
        )
            .into_response();
    }
    let token = format!("jwt-{n}");
    f.tokens.lock().unwrap().insert(token.clone());
    Json(json!({"token": token, "user": {"username": "analyst"}})).into_response()
}

fn cursor(e: &Entry) -> String {
    format!("{:.6},{}", e.updated_on, e.id)
}

async fn list(
    State(f): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = auth
        .strip_prefix("Bearer ")
        .is_some_and(|t| f.tokens.lock().unwrap().contains(t));
    if !valid {
        return (StatusCode::UNAUTHORIZED, "invalid token").into_response();
    }
    if let Some(r) = f.faults.check() {
        return r;
    }
    assert!(q.iter().any(|(k, v)| k == "order" && v == "asc"));
    let after = q.iter().find(|(k, _)| k == "after").map(|(_, v)| {
        let (ts, id) = v.split_once(',').expect("cursor");
        (ts.parse::<f64>().unwrap(), id.parse::<u64>().unwrap())
    });
    let mut entries = f.entries.lock().unwrap().clone();
    entries.sort_by(|a, b| a.updated_on.total_cmp(&b.updated_on).then(a.id.cmp(&b.id)));
    let rest: Vec<Entry> = entries
        .into_iter()
        .filter(|e| after.is_none_or(|(ts, id)| (e.updated_on, e.id) > (ts, id)))
        .collect();
    let page: Vec<&Entry> = rest.iter().take(f.page_size).collect();
    let more = rest.len() > f.page_size;
    let results: Vec<Value> = page
        .iter()
        .map(|e| {
            json!({"id": e.id, "hash_digest": e.hash, "algorithm": e.algorithm, "ideology": "islamist",
                   "file_type": e.file_type, "deleted": e.deleted, "updated_on": e.updated_on,
                   "created_on": 1700000000.0, "extra_field": "tolerated"})
        })
        .collect();
    Json(json!({
        "count": rest.len(),
        "next": if more { Some("https://app.example/api/hash-list/v2/all?page=2") } else { None },
        "previous": null,
        "checkpoint": page.last().map(|e| cursor(e)),
        "results": results,
    }))
    .into_response()
}

async fn start(entries: Vec<Entry>, page_size: usize) -> (Fake, String) {
    let fake = Fake {
        entries: Arc::new(Mutex::new(entries)),
        page_size,
        ..Fake::default()
    };
    let router = Router::new()
        .route("/token-auth/tcap/", post(token))
        .route("/api/hash-list/v2/all", get(list))
        .with_state(fake.clone());
    (fake, serve(router).await)
}

fn open(base: &str, password: &str) -> Arc<dyn Exchange> {
    let api = api_by_name("tat").unwrap();
    let credentials = api
        .parse_credentials(&json!({"username": "analyst", "password": password}))
        .unwrap();
    api.open(ExchangeSetup {
        name: "TAT".into(),
        config: api.normalize_config(&json!({"base_url": base})).unwrap(),
        credentials: Some(credentials),
        http: http(),
    })
    .unwrap()
}

/// 1,234 entries; groups of 300 share one `updated_on`; some carry no usable signal.
fn dataset() -> Vec<Entry> {
    (0..1234u64)
        .map(|i| {
            let (algorithm, file_type, hash) = match i % 10 {
                0 => ("MD5", "mp4", md5(i)),
                1 => ("MD5", "jpg", md5(i)),
                _ => ("PDQ", "png", pdq(i)),
            };
            Entry {
                id: 5000 + i,
                hash,
                algorithm,
                file_type,
                deleted: false,
                updated_on: 1_700_000_000.25 + (i / 300) as f64,
            }
        })
        .collect()
}

fn expected(entries: &[Entry]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = entries
        .iter()
        .filter(|e| !(e.deleted || e.algorithm == "MD5" && e.file_type == "jpg"))
        .map(|e| {
            let t = if e.algorithm == "PDQ" {
                "pdq"
            } else {
                "video_md5"
            };
            (e.id.to_string(), vec![format!("{t} {}", e.hash)])
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn pages_shared_timestamps_updates_and_deletes() {
    let (fake, base) = start(dataset(), 50).await;
    let ex = open(&base, "s3cret");
    let mut c = Consumer::default();
    let batches = c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(batches, 25);
    assert_eq!(c.summary(), expected(&fake.entries.lock().unwrap()));
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "one token per fetch"
    );
    assert_eq!(
        c.checkpoint.as_ref().unwrap().progress_ts,
        Some(1_700_000_004)
    );

    // Nothing new: one request, no changes.
    let before = fake.faults.requests();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(fake.faults.requests(), before + 1);

    // Updates, deletes and additions, all sharing one new timestamp across page boundaries.
    {
        let mut entries = fake.entries.lock().unwrap();
        for e in entries.iter_mut().filter(|e| e.id % 7 == 0) {
            e.hash = pdq(e.id + 1_000_000);
            e.algorithm = "PDQ";
            e.updated_on = 1_800_000_000.5;
        }
        for e in entries.iter_mut().filter(|e| e.id % 11 == 3) {
            e.deleted = true;
            e.updated_on = 1_800_000_000.5;
        }
        for i in 0..120 {
            entries.push(Entry {
                id: 9000 + i,
                hash: pdq(9000 + i),
                algorithm: "PDQ",
                file_type: "png",
                deleted: false,
                updated_on: 1_800_000_000.5,
            });
        }
    }
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.entries.lock().unwrap()));
    assert_eq!(
        c.checkpoint.as_ref().unwrap().progress_ts,
        Some(1_800_000_000)
    );
}

#[tokio::test]
async fn retries_429_and_5xx_then_succeeds() {
    let (fake, base) = start(dataset(), 400).await;
    fake.faults.push(Fault::retry_after(429, "0"));
    fake.faults.push(Fault::status(503));
    fake.faults.push(Fault::status(500));
    let mut c = Consumer::default();
    c.fetch(open(&base, "s3cret").as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
    assert_eq!(fake.faults.requests(), 4 + 3);
}

#[tokio::test]
async fn too_many_failures_or_long_retry_after_fail_the_fetch() {
    let (fake, base) = start(dataset(), 400).await;
    for _ in 0..10 {
        fake.faults.push(Fault::status(502));
    }
    let err = Consumer::default()
        .fetch(open(&base, "s3cret").as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::Http { status: 502, .. }),
        "{err}"
    );
    assert_eq!(fake.faults.requests(), 4, "1 attempt + 3 retries");

    let (fake, base) = start(dataset(), 400).await;
    fake.faults.push(Fault::retry_after(429, "3600"));
    let t = std::time::Instant::now();
    let err = Consumer::default()
        .fetch(open(&base, "s3cret").as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::Http { status: 429, .. }),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn bad_password_and_revoked_token_are_auth_errors() {
    let (fake, base) = start(dataset(), 400).await;
    let err = Consumer::default()
        .fetch(open(&base, "wrong").as_ref())
        .await
        .unwrap_err();
    assert!(err.is_auth(), "{err}");
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
    assert_eq!(
        fake.token_requests.load(Ordering::SeqCst),
        1,
        "auth failures are not retried"
    );

    // A 401 on a page re-authenticates once, then gives up.
    let (fake, base) = start(dataset(), 400).await;
    fake.faults.push(Fault::status(401));
    let mut c = Consumer::default();
    c.fetch(open(&base, "s3cret").as_ref()).await.unwrap();
    assert_eq!(fake.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(c.summary(), expected(&dataset()));
    fake.faults.push(Fault::status(401));
    fake.faults.push(Fault::status(401));
    fake.entries.lock().unwrap().push(Entry {
        id: 1,
        hash: pdq(1),
        algorithm: "PDQ",
        file_type: "png",
        deleted: false,
        updated_on: 2e9,
    });
    let cp_before = c.checkpoint.clone();
    let err = c.fetch(open(&base, "s3cret").as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::Auth { status: 401, .. }),
        "{err}"
    );
    assert_eq!(c.checkpoint, cp_before);
}

#[tokio::test]
async fn malformed_page_stops_without_advancing_then_resumes() {
    let (fake, base) = start(dataset(), 100).await;
    fake.faults.at_request(
        5,
        Fault {
            status: 200,
            retry_after: None,
            body: "{\"results\": 12",
        },
    );
    let ex = open(&base, "s3cret");
    let mut c = Consumer::default();
    let err = c.fetch(ex.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::MalformedResponse { .. }),
        "{err}"
    );
    assert_eq!(c.batches, 5);
    let after: String =
        serde_json::from_value(c.checkpoint.as_ref().unwrap().state["after"].clone()).unwrap();
    let mut sorted = dataset();
    sorted.sort_by(|a, b| a.updated_on.total_cmp(&b.updated_on).then(a.id.cmp(&b.id)));
    assert_eq!(
        after,
        cursor(&sorted[499]),
        "checkpoint = last stored record"
    );
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
}

#[tokio::test]
async fn abort_between_batches_then_resume_equals_uninterrupted() {
    let (_fake, base) = start(dataset(), 60).await;
    let ex = open(&base, "s3cret");
    let mut whole = Consumer::default();
    whole.fetch(ex.as_ref()).await.unwrap();
    let mut parts = Consumer::default();
    for _ in 0..4 {
        parts.fetch_at_most(ex.as_ref(), 3).await.unwrap();
    }
    parts.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(parts.summary(), whole.summary());
}

#[tokio::test]
async fn unusable_checkpoint_refetches_and_purges_vanished_records() {
    let (_fake, base) = start(dataset(), 400).await;
    let ex = open(&base, "s3cret");
    let mut c = Consumer::default();
    c.fetch(ex.as_ref()).await.unwrap();
    // A record that vanished upstream while our checkpoint became unusable.
    let ghost = c.records.values().next().unwrap().clone();
    c.records.insert("424242".into(), ghost);
    let mut cp: Checkpoint = c.checkpoint.clone().unwrap();
    cp.version = 99;
    c.checkpoint = Some(cp);
    c.fetch(ex.as_ref()).await.unwrap();
    assert!(!c.records.contains_key("424242"));
    assert_eq!(c.summary(), expected(&dataset()));
}
