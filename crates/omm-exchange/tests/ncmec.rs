//! `ncmec` against a fake NCMEC hash sharing API v2 (XML): time windows, `next` paths, deletes.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use base64::Engine;
use chrono::{DateTime, Utc};
use common::{http, md5, pdq, serve, Consumer, Fault, Faults};
use omm_exchange::{api_by_name, Exchange, ExchangeError, ExchangeSetup, Review, Signal, Verdict};
use serde_json::json;

#[derive(Clone, Debug)]
struct E {
    member: u64,
    id: String,
    video: bool,
    deleted: bool,
    ts: i64,
    /// None: only an image sha1 (no usable fingerprint).
    hash: Option<String>,
}

#[derive(Clone, Default)]
struct Fake {
    entries: Arc<Mutex<Vec<E>>>,
    faults: Faults,
    page_size: usize,
    windows: Arc<Mutex<Vec<(String, String)>>>,
    feedback: Arc<Mutex<Vec<(String, String)>>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("esp-user:pw")
    );
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn ts_str(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t).unwrap().timestamp()
}

/// A stable pseudo-random order: NCMEC does not return entries in time order.
fn scramble(e: &E) -> u64 {
    e.id.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    })
}

fn entry_xml(e: &E) -> String {
    let tag = match (e.video, e.deleted) {
        (false, false) => "image",
        (true, false) => "video",
        (false, true) => "deletedImage",
        (true, true) => "deletedVideo",
    };
    let mut x = format!(
        "<{tag}><member id=\"{}\">Member {}</member><timestamp>{}</timestamp><id>{}</id>",
        e.member,
        e.member,
        ts_str(e.ts),
        e.id
    );
    if !e.deleted {
        x.push_str("<classification>A1</classification><fingerprints>");
        match (&e.hash, e.video) {
            (Some(h), false) => x.push_str(&format!("<md5>{}</md5><pdq>{h}</pdq>", md5(9))),
            (Some(h), true) => x.push_str(&format!(
                "<md5>{h}</md5><sha1>{}</sha1><tmk-pdqf rel=\"self\" href=\"/v2/x\"/>",
                "ab".repeat(20)
            )),
            (None, _) => x.push_str(&format!("<sha1>{}</sha1>", "cd".repeat(20))),
        }
        x.push_str("</fingerprints><feedback/>");
    }
    x.push_str(&format!("</{tag}>"));
    x
}

async fn entries(
    State(f): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "<error>Unauthorized</error>").into_response();
    }
    if let Some(r) = f.faults.check() {
        return r;
    }
    let (from_s, to_s) = (q["from"].clone(), q["to"].clone());
    assert!(from_s.ends_with('Z') && to_s.ends_with('Z'));
    let (from, to) = (parse(&from_s), parse(&to_s));
    let start: usize = q.get("start").map_or(0, |s| s.parse().unwrap());
    let size: usize = q.get("size").map_or(f.page_size, |s| s.parse().unwrap());
    if start == 0 {
        f.windows
            .lock()
            .unwrap()
            .push((from_s.clone(), to_s.clone()));
    }
    let mut all: Vec<E> = f
        .entries
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.ts >= from && e.ts <= to)
        .cloned()
        .collect();
    all.sort_by_key(scramble);
    let page: Vec<&E> = all.iter().skip(start).take(size).collect();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<queryResult xmlns=\"https://hashsharing.ncmec.org/hashsharing/v2\">");
    for video in [false, true] {
        let items: Vec<&&E> = page.iter().filter(|e| e.video == video).collect();
        if items.is_empty() {
            continue;
        }
        let max = items.iter().map(|e| e.ts).max().unwrap();
        let name = if video { "videos" } else { "images" };
        xml.push_str(&format!(
            "<{name} count=\"{}\" maxTimestamp=\"{}\">",
            items.len(),
            ts_str(max)
        ));
        for e in items {
            xml.push_str(&entry_xml(e));
        }
        xml.push_str(&format!("</{name}>"));
    }
    if start + size < all.len() {
        let from_q = url::form_urlencoded::byte_serialize(from_s.as_bytes()).collect::<String>();
        let to_q = url::form_urlencoded::byte_serialize(to_s.as_bytes()).collect::<String>();
        xml.push_str(&format!(
            "<paging><next>/v2/entries?from={from_q}&amp;to={to_q}&amp;start={}&amp;size={size}&amp;max={}</next></paging>",
            start + size,
            start + 2 * size
        ));
    }
    xml.push_str("</queryResult>");
    ([("content-type", "application/xml")], xml).into_response()
}

async fn reasons(headers: HeaderMap, Path(kind): Path<String>) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(kind, "PDQ");
    "<availableFeedbackReasons xmlns=\"https://hashsharing.ncmec.org/hashsharing/v2\"><reason guid=\"0123abcd-0000-1111-2222-333344445555\" name=\"Not CSAM\" type=\"PDQ\"/></availableFeedbackReasons>".into_response()
}

async fn feedback(
    State(f): State<Fake>,
    headers: HeaderMap,
    Path((member, entry, kind)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(headers["content-type"], "application/xml; charset=utf-8");
    f.feedback.lock().unwrap().push((
        format!("{member}/{entry}/{kind}"),
        String::from_utf8(body.to_vec()).unwrap(),
    ));
    "<submissionResult/>".into_response()
}

async fn start(entries_: Vec<E>, page_size: usize) -> (Fake, String) {
    let fake = Fake {
        entries: Arc::new(Mutex::new(entries_)),
        page_size,
        ..Fake::default()
    };
    let router = Router::new()
        .route("/npo/v2/entries", get(entries))
        .route("/npo/v2/feedback/{kind}/reasons", get(reasons))
        .route(
            "/npo/v2/entries/{member}/{entry}/{kind}/feedback",
            put(feedback),
        )
        .with_state(fake.clone());
    let base = format!("{}/npo", serve(router).await);
    (fake, base)
}

fn open_with(base: &str, password: &str, only: &[u64]) -> Arc<dyn Exchange> {
    let api = api_by_name("ncmec").unwrap();
    let credentials = api
        .parse_credentials(&json!({"user": "esp-user", "password": password}))
        .unwrap();
    api.open(ExchangeSetup {
        name: "NCMEC".into(),
        config: api
            .normalize_config(&json!({"environment": "https://hashsharing-test.ncmec.org/npo", "only_esp_ids": only, "base_url": base}))
            .unwrap(),
        credentials: Some(credentials),
        http: http(),
    })
    .unwrap()
}

fn open(base: &str) -> Arc<dyn Exchange> {
    open_with(base, "pw", &[])
}

const T: i64 = 1_600_000_000;

/// 900 entries in one second (more than a page even in a 1 s window), 400 spread over days.
fn dataset() -> Vec<E> {
    (0..1300u64)
        .map(|i| {
            let ts = if i < 900 {
                T
            } else {
                T - 86_400 * 3 + (i as i64) * 517
            };
            let video = i % 4 == 0;
            let hash = match i % 13 {
                5 => None,
                _ if video => Some(md5(i)),
                _ => Some(pdq(i)),
            };
            E {
                member: 40 + i % 3,
                id: format!("e{i}"),
                video,
                deleted: i % 17 == 0,
                ts,
                hash,
            }
        })
        .collect()
}

fn expected(entries: &[E], only: &[u64]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = entries
        .iter()
        .filter(|e| !e.deleted && e.hash.is_some() && (only.is_empty() || only.contains(&e.member)))
        .map(|e| {
            let t = if e.video { "video_md5" } else { "pdq" };
            (
                format!("{}-{}", e.member, e.id),
                vec![format!("{t} {}", e.hash.as_ref().unwrap())],
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn windows_pages_shared_second_updates_and_deletes() {
    let (fake, base) = start(dataset(), 100).await;
    let ex = open(&base);
    let mut c = Consumer::default();
    let t0 = chrono::Utc::now().timestamp();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.entries.lock().unwrap(), &[]));
    let progress = c.checkpoint.as_ref().unwrap().progress_ts.unwrap();
    assert!(
        (t0 - 6..=t0).contains(&progress),
        "progress {progress} ~ now - 5"
    );
    // UTC on the wire: the first window starts at the epoch.
    let windows = fake.windows.lock().unwrap().clone();
    assert_eq!(windows[0].0, "1970-01-01T00:00:00Z");
    assert!(
        windows
            .iter()
            .any(|(f, t)| parse(t) - parse(f) <= 1 && parse(f) <= T && T <= parse(t)),
        "a window of one second around T"
    );

    // Pretend the last fetch ended 10,000 s ago; changes happened since.
    let now = chrono::Utc::now().timestamp();
    let mut cp = c.checkpoint.clone().unwrap();
    cp.state["max_ts"] = json!(now - 10_000);
    cp.progress_ts = Some(now - 10_000);
    c.checkpoint = Some(cp);
    {
        let mut es = fake.entries.lock().unwrap();
        for e in es.iter_mut().filter(|e| e.id.ends_with('1')) {
            e.deleted = true;
            e.ts = now - 5_000;
        }
        for e in es.iter_mut().filter(|e| e.id.ends_with('2') && !e.deleted) {
            e.hash = Some(if e.video {
                md5(7_000_000)
            } else {
                pdq(7_000_000)
            });
            e.ts = now - 5_000;
        }
    }
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.entries.lock().unwrap(), &[]));
}

#[tokio::test]
async fn esp_filter() {
    let (fake, base) = start(dataset(), 400).await;
    let mut c = Consumer::default();
    c.fetch(open_with(&base, "pw", &[41]).as_ref())
        .await
        .unwrap();
    assert_eq!(c.summary(), expected(&fake.entries.lock().unwrap(), &[41]));
    assert!(!c.records.is_empty());
}

#[tokio::test]
async fn retries_auth_and_malformed() {
    let (fake, base) = start(dataset(), 400).await;
    fake.faults.push(Fault::retry_after(429, "0"));
    fake.faults.push(Fault::status(503));
    let mut c = Consumer::default();
    c.fetch(open(&base).as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset(), &[]));

    let err = Consumer::default()
        .fetch(open_with(&base, "bad", &[]).as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::Auth { status: 401, .. }),
        "{err}"
    );

    let (fake, base) = start(dataset(), 100).await;
    let ex = open(&base);
    let mut whole = Consumer::default();
    whole.fetch(ex.as_ref()).await.unwrap();
    let total = fake.faults.requests();
    let (fake, base) = start(dataset(), 100).await;
    fake.faults.at_request(
        total - 3,
        Fault {
            status: 200,
            retry_after: None,
            body: "<queryResult><images><image><member>",
        },
    );
    let ex = open(&base);
    let mut c = Consumer::default();
    let err = c.fetch(ex.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::MalformedResponse { .. }),
        "{err}"
    );
    let stored = c.checkpoint.clone();
    assert!(stored.is_some());
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), whole.summary());
}

#[tokio::test]
async fn abort_mid_window_resume_and_expired_paging() {
    let (_fake, base) = start(dataset(), 100).await;
    let ex = open(&base);
    let mut whole = Consumer::default();
    whole.fetch(ex.as_ref()).await.unwrap();

    // Abort inside the one-second window (its pages carry a `next` checkpoint).
    let mut parts = Consumer::default();
    let mut saw_paging = false;
    for _ in 0..40 {
        parts.fetch_at_most(ex.as_ref(), 1).await.unwrap();
        saw_paging |= parts
            .checkpoint
            .as_ref()
            .is_some_and(|c| !c.state["paging"].is_null());
    }
    assert!(saw_paging, "resumed from a server next link at least once");
    parts.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(parts.summary(), whole.summary());

    // A paging checkpoint older than 12 h restarts its window instead of using the old link.
    let mut c = Consumer::default();
    loop {
        c.fetch_at_most(ex.as_ref(), 1).await.unwrap();
        if !c.checkpoint.as_ref().unwrap().state["paging"].is_null() {
            break;
        }
    }
    let mut cp = c.checkpoint.clone().unwrap();
    cp.created_at -= 13 * 3600;
    c.checkpoint = Some(cp);
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), whole.summary());
}

#[tokio::test]
async fn reviews_are_written_back_as_feedback() {
    let (fake, base) = start(dataset(), 100).await;
    let ex = open(&base);
    let metadata = json!({"member_id": 41, "entry_id": "e1"});
    ex.report_review(Review {
        record_id: "41-e1".into(),
        signal: Signal::new("pdq", pdq(1)),
        metadata: metadata.clone(),
        verdict: Verdict::TruePositive,
    })
    .await
    .unwrap();
    ex.report_review(Review {
        record_id: "41-e1".into(),
        signal: Signal::new("pdq", pdq(1)),
        metadata,
        verdict: Verdict::FalsePositive,
    })
    .await
    .unwrap();
    let sent = fake.feedback.lock().unwrap().clone();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].0, "41/e1/PDQ");
    assert!(sent[0].1.contains("<affirmative/>"));
    assert!(sent[1]
        .1
        .contains("<guid>0123abcd-0000-1111-2222-333344445555</guid>"));
    let err = ex
        .report_review(Review {
            record_id: "x".into(),
            signal: Signal::new("url", "u"),
            metadata: json!({}),
            verdict: Verdict::TruePositive,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::InvalidReview(_)));
}
