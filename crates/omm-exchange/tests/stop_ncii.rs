//! `stop_ncii` against a fake StopNCII API: FetchHashes paging, both key headers, withdrawals.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{http, md5, pdq, serve, Consumer, Fault, Faults};
use omm_exchange::{api_by_name, Exchange, ExchangeError, ExchangeSetup, Review, Signal, Verdict};
use serde_json::{json, Value};

#[derive(Clone, Debug)]
struct Rec {
    signal_type: &'static str,
    hash: String,
    status: &'static str,
    modified: i64,
}

#[derive(Clone, Default)]
struct Fake {
    records: Arc<Mutex<Vec<Rec>>>,
    faults: Faults,
    feedback: Arc<Mutex<Vec<Value>>>,
}

fn keys_ok(headers: &HeaderMap, function_key: &str) -> bool {
    headers.get("x-functions-key").and_then(|v| v.to_str().ok()) == Some(function_key)
        && headers
            .get("ocp-apim-subscription-key")
            .and_then(|v| v.to_str().ok())
            == Some("sub-key")
}

async fn fetch_hashes(
    State(f): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !keys_ok(&headers, "fetch-key") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"message": "Access denied"})),
        )
            .into_response();
    }
    if let Some(r) = f.faults.check() {
        return r;
    }
    let start: i64 = q["startTimestamp"].parse().unwrap();
    let size: usize = q["pageSize"].parse().unwrap();
    let offset = match q.get("nextPageToken") {
        Some(t) => {
            let (tok_start, off) = t.strip_prefix("tok:").unwrap().split_once(':').unwrap();
            assert_eq!(
                tok_start.parse::<i64>().unwrap(),
                start,
                "token used with another set"
            );
            off.parse::<usize>().unwrap()
        }
        None => 0,
    };
    let mut set: Vec<Rec> = f
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.modified >= start)
        .cloned()
        .collect();
    set.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.hash.cmp(&b.hash)));
    let page: Vec<&Rec> = set.iter().skip(offset).take(size).collect();
    let more = offset + size < set.len();
    let set_max = set.iter().map(|r| r.modified).max().unwrap_or(start);
    let records: Vec<Value> = page
        .iter()
        .map(|r| {
            json!({"lastModtimestamp": r.modified, "signalType": r.signal_type, "hashValue": r.hash,
                   "hashStatus": r.status, "caseNumbers": {"c0ffee": "Active"},
                   "CSPFeedbacks": [{"source": "Facebook", "feedbackValue": "Undefined", "tags": ["Nude"]}],
                   "hashRegions": []})
        })
        .collect();
    Json(json!({
        "count": records.len(),
        // Non-final pages report a smaller value, as the upstream fixtures do.
        "nextSetTimestamp": if more { start } else { set_max },
        "nextPageToken": if more { Some(format!("tok:{start}:{}", offset + size)) } else { None },
        "hasMoreRecords": more,
        "hashRecords": records,
    }))
    .into_response()
}

async fn submit_feedback(
    State(f): State<Fake>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !keys_ok(&headers, "feedback-key") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    f.feedback.lock().unwrap().push(body);
    Json(json!({})).into_response()
}

async fn start(records: Vec<Rec>) -> (Fake, String) {
    let fake = Fake {
        records: Arc::new(Mutex::new(records)),
        ..Fake::default()
    };
    let router = Router::new()
        .route("/v1/FetchHashes", get(fetch_hashes))
        .route("/v1/SubmitFeedback", post(submit_feedback))
        .with_state(fake.clone());
    let base = serve(router).await;
    (fake, format!("{base}/v1"))
}

fn open(base: &str, fetch_key: &str, page_size: u32) -> Arc<dyn Exchange> {
    let api = api_by_name("stop_ncii").unwrap();
    // Upstream keeps the base URL in the credentials; honour that form.
    let credentials = api
        .parse_credentials(&json!({"fetch_function_key": fetch_key, "subscription_key": "sub-key",
                                   "base_url_override": base, "submit_feedback_function_key": "feedback-key"}))
        .unwrap();
    api.open(ExchangeSetup {
        name: "STOPNCII".into(),
        config: api
            .normalize_config(&json!({"page_size": page_size}))
            .unwrap(),
        credentials: Some(credentials),
        http: http(),
    })
    .unwrap()
}

fn dataset() -> Vec<Rec> {
    (0..1100u64)
        .map(|i| match i % 9 {
            0 => Rec {
                signal_type: "VideoMD5",
                hash: md5(i).to_uppercase(),
                status: "Active",
                modified: 1000 + (i / 250) as i64,
            },
            1 => Rec {
                signal_type: "VideoTMK",
                hash: format!("tmk{i}"),
                status: "Active",
                modified: 1000 + (i / 250) as i64,
            },
            _ => Rec {
                signal_type: "ImagePDQ",
                hash: pdq(i),
                status: "Active",
                modified: 1000 + (i / 250) as i64,
            },
        })
        .collect()
}

fn expected(records: &[Rec]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = records
        .iter()
        .filter(|r| r.status == "Active" && r.signal_type != "VideoTMK")
        .map(|r| {
            let t = if r.signal_type == "ImagePDQ" {
                "pdq"
            } else {
                "video_md5"
            };
            let v = r.hash.to_lowercase();
            (format!("{} {v}", r.signal_type), vec![format!("{t} {v}")])
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn pages_updates_and_withdrawn_hashes_are_removed() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, "fetch-key", 100);
    let mut c = Consumer::default();
    assert_eq!(c.fetch(ex.as_ref()).await.unwrap(), 11);
    assert_eq!(c.summary(), expected(&fake.records.lock().unwrap()));
    let any = c.records.values().next().unwrap();
    assert_eq!(
        any.metadata["feedbacks"][0]["feedback_value"], "Undefined",
        "unknown enums keep the record"
    );
    assert_eq!(c.checkpoint.as_ref().unwrap().progress_ts, Some(1004));

    {
        let mut recs = fake.records.lock().unwrap();
        for r in recs
            .iter_mut()
            .filter(|r| r.signal_type == "ImagePDQ")
            .take(40)
        {
            r.status = if r.modified % 2 == 0 {
                "Withdrawn"
            } else {
                "Deleted"
            };
            r.modified = 2000;
        }
        for i in 0..150 {
            recs.push(Rec {
                signal_type: "ImagePDQ",
                hash: pdq(50_000 + i),
                status: "Active",
                modified: 2000,
            });
        }
    }
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.records.lock().unwrap()));
    assert_eq!(c.checkpoint.as_ref().unwrap().progress_ts, Some(2000));
}

#[tokio::test]
async fn retries_then_auth_error_without_retry() {
    let (fake, base) = start(dataset()).await;
    fake.faults.push(Fault::retry_after(429, "0"));
    fake.faults.push(Fault::status(504));
    let mut c = Consumer::default();
    c.fetch(open(&base, "fetch-key", 500).as_ref())
        .await
        .unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
    assert_eq!(fake.faults.requests(), 3 + 2);

    let err = Consumer::default()
        .fetch(open(&base, "wrong-key", 500).as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::Auth { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("wrong-key"));
}

#[tokio::test]
async fn malformed_page_keeps_last_checkpoint_and_resume_completes() {
    let (fake, base) = start(dataset()).await;
    fake.faults.at_request(
        3,
        Fault {
            status: 200,
            retry_after: None,
            body: "<html>gateway</html>",
        },
    );
    let ex = open(&base, "fetch-key", 100);
    let mut c = Consumer::default();
    let err = c.fetch(ex.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::MalformedResponse { .. }),
        "{err}"
    );
    assert_eq!(c.batches, 3);
    assert_eq!(
        c.checkpoint.as_ref().unwrap().state["next_page_token"],
        "tok:10:300"
    );
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
}

#[tokio::test]
async fn stale_checkpoint_and_expired_page_token() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, "fetch-key", 100);
    // Mid-set checkpoint whose page token has expired: the set restarts from its start.
    let mut c = Consumer::default();
    c.fetch_at_most(ex.as_ref(), 4).await.unwrap();
    let mut cp = c.checkpoint.clone().unwrap();
    cp.created_at -= 3600;
    c.checkpoint = Some(cp);
    let before = fake.faults.requests();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(fake.faults.requests() - before, 11, "whole set refetched");
    assert_eq!(c.summary(), expected(&dataset()));

    // A checkpoint unused for 31 days is stale: full refetch, vanished records purged.
    fake.records.lock().unwrap().truncate(500);
    let mut cp = c.checkpoint.clone().unwrap();
    cp.created_at -= 31 * 24 * 3600;
    c.checkpoint = Some(cp);
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.records.lock().unwrap()));
}

#[tokio::test]
async fn abort_then_resume_equals_uninterrupted() {
    let (_fake, base) = start(dataset()).await;
    let ex = open(&base, "fetch-key", 70);
    let mut whole = Consumer::default();
    whole.fetch(ex.as_ref()).await.unwrap();
    let mut parts = Consumer::default();
    parts.fetch_at_most(ex.as_ref(), 5).await.unwrap();
    parts.fetch_at_most(ex.as_ref(), 5).await.unwrap();
    parts.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(parts.summary(), whole.summary());
}

#[tokio::test]
async fn review_write_back_submits_feedback() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, "fetch-key", 100);
    let hash = pdq(2);
    ex.report_review(Review {
        record_id: format!("ImagePDQ {hash}"),
        signal: Signal::new("pdq", hash.clone()),
        metadata: json!({}),
        verdict: Verdict::FalsePositive,
    })
    .await
    .unwrap();
    let sent = fake.feedback.lock().unwrap().clone();
    assert_eq!(
        sent,
        vec![
            json!({"count": 1, "hashFeedbacks": [{"hashValue": hash, "feedbackValue": "NotBlocked", "tags": []}]})
        ]
    );
}
