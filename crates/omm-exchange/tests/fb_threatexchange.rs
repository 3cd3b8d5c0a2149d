//! `fb_threatexchange` against a fake Graph API: threat_updates paging, descriptors, reactions.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use common::{http, md5, pdq, serve, Consumer, Fault, Faults};
use omm_exchange::{
    api_by_name, Exchange, ExchangeError, ExchangeSetup, RecordChange, Review, Signal, Verdict,
};
use serde_json::{json, Value};

const TOKEN: &str = "123456789|abcdefghijklmnopqrstuvwxyz";
const MY_APP: u64 = 123456789;

#[derive(Clone, Debug)]
struct Upd {
    id: u64,
    kind: &'static str,
    indicator: String,
    last_updated: i64,
    should_delete: bool,
    status: &'static str,
}

/// Reactions received: (descriptor id, form fields, query parameters).
type Reactions = Arc<Mutex<Vec<(String, BTreeMap<String, String>, BTreeMap<String, String>)>>>;

#[derive(Clone)]
struct Fake {
    updates: Arc<Mutex<Vec<Upd>>>,
    faults: Faults,
    base: Arc<Mutex<String>>,
    reactions: Reactions,
}

fn descriptors(u: &Upd) -> Value {
    json!({"data": [
        {"id": (u.id * 10).to_string(), "owner": {"id": "55555555"}, "status": u.status,
         "tags": {"data": [{"id": "1", "text": "media_type_video"}, {"id": "2", "text": "csam"}]},
         "added_on": "2020-01-01T00:00:00+0000",
         "reactions": [{"key": "HELPFUL", "value": "77777777,88888888"}]},
        {"id": (u.id * 10 + 1).to_string(), "owner": {"id": MY_APP.to_string()}, "status": "UNKNOWN", "tags": []}
    ]})
}

async fn threat_updates(
    State(f): State<Fake>,
    Path(group): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if q.get("access_token").map(String::as_str) != Some(TOKEN) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"type": "OAuthException", "code": 190}})),
        )
            .into_response();
    }
    if let Some(r) = f.faults.check() {
        return r;
    }
    assert_eq!(group, "4242");
    assert!(q["fields"].contains("descriptors{"));
    let limit: usize = q["limit"].parse().unwrap();
    let start: Option<i64> = q.get("start_time").map(|s| s.parse().unwrap());
    let offset: usize = q.get("after").map_or(0, |s| s.parse().unwrap());
    let mut all: Vec<Upd> = f
        .updates
        .lock()
        .unwrap()
        .iter()
        .filter(|u| start.is_none_or(|s| u.last_updated >= s))
        .cloned()
        .collect();
    all.sort_by_key(|u| (u.last_updated, u.id));
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(|u| {
            let mut v = json!({"id": u.id.to_string(), "indicator": u.indicator, "type": u.kind,
                               "last_updated": u.last_updated.to_string(), "should_delete": u.should_delete});
            if !u.should_delete {
                v["descriptors"] = descriptors(u);
            }
            v
        })
        .collect();
    let mut body = json!({"data": page, "paging": {"cursors": {"before": "x", "after": "y"}}});
    if offset + limit < all.len() {
        let base = f.base.lock().unwrap().clone();
        let mut next = url::Url::parse(&format!("{base}/{group}/threat_updates/")).unwrap();
        for (k, v) in q.iter().filter(|(k, _)| *k != "after") {
            next.query_pairs_mut().append_pair(k, v);
        }
        next.query_pairs_mut()
            .append_pair("after", &(offset + limit).to_string());
        body["paging"]["next"] = json!(next.to_string());
    }
    Json(body).into_response()
}

async fn react(
    State(f): State<Fake>,
    Path(descriptor): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    if form.get("access_token").map(String::as_str) != Some(TOKEN) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    f.reactions.lock().unwrap().push((descriptor, form, query));
    Json(json!({"success": true})).into_response()
}

async fn start(updates: Vec<Upd>) -> (Fake, String) {
    let fake = Fake {
        updates: Arc::new(Mutex::new(updates)),
        faults: Faults::default(),
        base: Arc::default(),
        reactions: Arc::default(),
    };
    let router = Router::new()
        .route("/v21.0/{group}/threat_updates/", get(threat_updates))
        .route("/v21.0/{descriptor}/", post(react))
        .with_state(fake.clone());
    let base = format!("{}/v21.0", serve(router).await);
    *fake.base.lock().unwrap() = base.clone();
    (fake, base)
}

fn open(base: &str, token: &str) -> Arc<dyn Exchange> {
    let api = api_by_name("fb_threatexchange").unwrap();
    let credentials = api.parse_credentials(&json!({"api_token": token})).unwrap();
    api.open(ExchangeSetup {
        name: "TE".into(),
        config: api
            .normalize_config(&json!({"privacy_group": 4242, "base_url": base, "page_size": 50}))
            .unwrap(),
        credentials: Some(credentials),
        http: http(),
    })
    .unwrap()
}

fn dataset() -> Vec<Upd> {
    (0..777u64)
        .map(|i| {
            let (kind, indicator) = match i % 8 {
                0 => ("HASH_MD5", md5(i)),
                1 => ("HASH_URL_MD5", md5(i)),
                2 => ("UNSUPPORTED_TYPE", "whatever".to_string()),
                _ => ("HASH_PDQ", pdq(i)),
            };
            Upd {
                id: 1_000_000 + i,
                kind,
                indicator,
                last_updated: 1_600_000_000 + (i / 200) as i64,
                should_delete: false,
                status: "MALICIOUS",
            }
        })
        .collect()
}

fn expected(updates: &[Upd]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = updates
        .iter()
        .filter(|u| !u.should_delete && u.kind != "UNSUPPORTED_TYPE")
        .map(|u| {
            let t = match u.kind {
                "HASH_MD5" => "video_md5",
                "HASH_URL_MD5" => "url_md5",
                _ => "pdq",
            };
            (u.id.to_string(), vec![format!("{t} {}", u.indicator)])
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn pages_opinions_updates_and_deletes() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, TOKEN);
    let mut c = Consumer::default();
    assert_eq!(c.fetch(ex.as_ref()).await.unwrap(), 16);
    assert_eq!(c.summary(), expected(&fake.updates.lock().unwrap()));
    let rec = &c.records["1000003"];
    let opinions = rec.metadata["opinions"].as_array().unwrap();
    assert_eq!(
        opinions.len(),
        4,
        "2 descriptors + 2 reaction-only apps: {opinions:?}"
    );
    assert!(opinions
        .iter()
        .any(|o| o["owner_app_id"] == MY_APP && o["is_mine"] == true));
    assert!(opinions.iter().any(|o| o["owner_app_id"] == 55555555u64
        && o["category"] == "positive_class"
        && o["descriptor_id"] == "10000030"));
    // The checkpoint never holds the token.
    assert!(!serde_json::to_string(&c.checkpoint)
        .unwrap()
        .contains("abcdefghij"));
    assert_eq!(
        c.checkpoint.as_ref().unwrap().progress_ts,
        Some(1_600_000_003)
    );

    // Incremental fetch with nothing new re-reads only the last second (start_time is
    // inclusive so records sharing it are never lost): 177 updates = 4 pages.
    let before = fake.faults.requests();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(fake.faults.requests(), before + 4);
    assert_eq!(c.summary(), expected(&fake.updates.lock().unwrap()));

    {
        let mut ups = fake.updates.lock().unwrap();
        for u in ups.iter_mut().filter(|u| u.id % 5 == 0) {
            u.should_delete = true;
            u.last_updated = 1_700_000_000;
        }
        for u in ups
            .iter_mut()
            .filter(|u| u.id % 5 == 1 && u.kind == "HASH_PDQ")
        {
            u.indicator = pdq(u.id * 3);
            u.last_updated = 1_700_000_000;
        }
    }
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&fake.updates.lock().unwrap()));
}

#[tokio::test]
async fn retry_auth_and_malformed() {
    let (fake, base) = start(dataset()).await;
    fake.faults.push(Fault::retry_after(429, "0"));
    fake.faults.push(Fault::status(500));
    let ex = open(&base, TOKEN);
    let mut c = Consumer::default();
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
    assert_eq!(fake.faults.requests(), 16 + 2);

    let err = Consumer::default()
        .fetch(open(&base, "123456789|zzzzzzzzzzzzzzzzzzzzzzzzz").as_ref())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::Auth { status: 401, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("zzzz"), "token leaked: {err}");

    let (fake, base) = start(dataset()).await;
    fake.faults.at_request(
        4,
        Fault {
            status: 200,
            retry_after: None,
            body: "{\"data\": [{\"id\": 1}]}",
        },
    );
    let ex = open(&base, TOKEN);
    let mut c = Consumer::default();
    let err = c.fetch(ex.as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::MalformedResponse { .. }),
        "{err}"
    );
    assert_eq!(c.batches, 4);
    c.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(c.summary(), expected(&dataset()));
}

#[tokio::test]
async fn abort_resume_and_stale_checkpoint() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, TOKEN);
    let mut whole = Consumer::default();
    whole.fetch(ex.as_ref()).await.unwrap();
    let mut parts = Consumer::default();
    parts.fetch_at_most(ex.as_ref(), 6).await.unwrap();
    parts.fetch_at_most(ex.as_ref(), 6).await.unwrap();
    parts.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(parts.summary(), whole.summary());

    // After 86 days without a fetch the checkpoint is stale: full refetch purges what vanished
    // (ThreatExchange forgets deletes after 90 days).
    fake.updates.lock().unwrap().retain(|u| u.id % 3 != 0);
    let mut cp = parts.checkpoint.clone().unwrap();
    cp.created_at -= 86 * 24 * 3600;
    parts.checkpoint = Some(cp);
    parts.fetch(ex.as_ref()).await.unwrap();
    assert_eq!(parts.summary(), expected(&fake.updates.lock().unwrap()));
}

#[tokio::test]
async fn next_link_to_another_host_is_refused() {
    let (fake, base) = start(dataset()).await;
    *fake.base.lock().unwrap() = "http://evil.example/v21.0".into();
    let mut c = Consumer::default();
    let err = c.fetch(open(&base, TOKEN).as_ref()).await.unwrap_err();
    assert!(
        matches!(err, ExchangeError::MalformedResponse { .. }),
        "{err}"
    );
    assert_eq!(
        c.batches, 0,
        "the page with the foreign link is not applied"
    );
}

#[tokio::test]
async fn reviews_become_reactions_on_other_apps_descriptors() {
    let (fake, base) = start(dataset()).await;
    let ex = open(&base, TOKEN);
    let mut stream = ex.fetch(None);
    let batch = futures_util::StreamExt::next(&mut stream)
        .await
        .unwrap()
        .unwrap();
    let (id, record) = batch
        .changes
        .iter()
        .find_map(|c| match c {
            RecordChange::Upsert { id, record } if record.signals[0].signal_type == "pdq" => {
                Some((id.clone(), record.clone()))
            }
            _ => None,
        })
        .unwrap();
    ex.report_review(Review {
        record_id: id.clone(),
        signal: record.signals[0].clone(),
        metadata: record.metadata.clone(),
        verdict: Verdict::FalsePositive,
    })
    .await
    .unwrap();
    let sent = fake.reactions.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "only the other app's descriptor: {sent:?}");
    let expected_descriptor = (id.parse::<u64>().unwrap() * 10).to_string();
    assert_eq!(sent[0].0, expected_descriptor);
    // The reference client's wire format: the parameters in the body and the query string.
    let params = BTreeMap::from([
        ("access_token".to_string(), TOKEN.to_string()),
        ("reactions".to_string(), "DISAGREE_WITH_TAGS".to_string()),
    ]);
    assert_eq!(sent[0].1, params);
    assert_eq!(sent[0].2, params);

    // Our app reacted HELPFUL before (read back as our implicit opinion): withdrawn first.
    fake.reactions.lock().unwrap().clear();
    let mut metadata = record.metadata.clone();
    metadata["opinions"].as_array_mut().unwrap().push(
        json!({"owner_app_id": MY_APP, "is_mine": true, "category": "positive_class",
                     "tags": [], "descriptor_id": null}),
    );
    ex.report_review(Review {
        record_id: id.clone(),
        signal: record.signals[0].clone(),
        metadata,
        verdict: Verdict::FalsePositive,
    })
    .await
    .unwrap();
    let sent = fake.reactions.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].0, expected_descriptor);
    assert_eq!(sent[0].2["reactions_to_remove"], "HELPFUL");
    assert!(!sent[0].2.contains_key("reactions"));
    assert_eq!(sent[1].2["reactions"], "DISAGREE_WITH_TAGS");

    let err = ex
        .report_review(Review {
            record_id: "x".into(),
            signal: Signal::new("pdq", pdq(1)),
            metadata: json!({}),
            verdict: Verdict::TruePositive,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::InvalidReview(_)));
}
