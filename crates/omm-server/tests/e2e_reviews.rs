//! Review results over HTTP, on the real server (SQLite and, when `OMM_TEST_DATABASE_URL` is
//! set, PostgreSQL): stored with who and when, listed with their write-back state, written
//! back to ThreatExchange by the background review writer, and optionally disabling content.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use common::{assert_error, backends, wait_until, TestServer};
use serde_json::{json, Value};

const TOKEN: &str = "123456789|abcdefghijklmnopqrstuvwxyz";
const PDQ: &str = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";

async fn post_review(t: &TestServer, bank: &str, id: i64, body: Value) -> (StatusCode, Value) {
    t.send_json(
        t.client
            .post(t.url(&format!("/c/bank/{bank}/content/{id}/review")))
            .json(&body),
    )
    .await
}

async fn lookup(t: &TestServer, pdq: &str) -> Value {
    let (status, body) = t
        .get_json(&format!(
            "/m/lookup?signal_type=pdq&signal={pdq}&bypass_coinflip=true"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_are_stored_listed_validated_and_can_disable_matching() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| c.matcher_poll_interval_ms = 50).await;
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/banks"))
                    .json(&json!({"name": "LOCAL"})),
            )
            .await;
        assert_eq!(got.0, StatusCode::CREATED);
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/bank/LOCAL/signal"))
                    .json(&json!({"pdq": PDQ})),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        let id = got.1["id"].as_i64().unwrap();

        let (status, r) = post_review(
            &t,
            "LOCAL",
            id,
            json!({"opinion": "true_positive", "reviewer": "alice", "note": "confirmed"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{backend:?}: {r}");
        assert_eq!(r["bank"], "LOCAL");
        assert_eq!(r["content_id"], id);
        assert_eq!(r["opinion"], "true_positive");
        assert_eq!(r["reviewer"], "alice");
        assert_eq!(r["note"], "confirmed");
        assert_eq!(r["signal_type"], "pdq");
        assert_eq!(r["disable_matching"], false);
        assert_eq!(r["write_back"], json!([]), "local content: stored only");
        assert!(r["created_ts"].as_i64().unwrap() > 1_700_000_000);

        // Bad input: 4xx with a message, nothing stored.
        let cases = [
            (
                json!({"opinion": "maybe", "reviewer": "a"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "opinion",
            ),
            (
                json!({"opinion": "true_positive"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "reviewer",
            ),
            (
                json!({"opinion": "true_positive", "reviewer": "a", "opnion": 1}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "opnion",
            ),
            (
                json!({"opinion": "true_positive", "reviewer": " "}),
                StatusCode::BAD_REQUEST,
                "reviewer",
            ),
            (
                json!({"opinion": "true_positive", "reviewer": "a", "disable_matching": true}),
                StatusCode::BAD_REQUEST,
                "false_positive",
            ),
            (
                json!({"opinion": "false_positive", "reviewer": "a", "signal_type": "video_md5"}),
                StatusCode::BAD_REQUEST,
                "no 'video_md5' signal",
            ),
            (
                json!({"opinion": "false_positive", "reviewer": "a", "signal_type": "nope"}),
                StatusCode::BAD_REQUEST,
                "nope",
            ),
            (
                json!({"opinion": "false_positive", "reviewer": "a", "note": "n".repeat(5000)}),
                StatusCode::BAD_REQUEST,
                "note",
            ),
        ];
        for (body, status, needle) in cases {
            assert_error(&post_review(&t, "LOCAL", id, body).await, status, needle);
        }
        let ok = json!({"opinion": "true_positive", "reviewer": "a"});
        assert_error(
            &post_review(&t, "NOPE", id, ok.clone()).await,
            StatusCode::NOT_FOUND,
            "bank 'NOPE' not found",
        );
        assert_error(
            &post_review(&t, "LOCAL", id + 100, ok.clone()).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        assert_error(
            &t.send_json(
                t.client
                    .post(t.url(&format!("/c/bank/LOCAL/content/{id}/review")))
                    .body("{}"),
            )
            .await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        );
        assert_error(
            &t.send_json(
                t.client
                    .post(t.url(&format!("/c/bank/LOCAL/content/{id}/review")))
                    .header("content-type", "application/json")
                    .body("{"),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        );
        assert_error(
            &t.get_json("/c/bank/LOCAL/content/x/review").await,
            StatusCode::NOT_FOUND,
            "",
        );
        assert_error(
            &t.get_json(&format!("/c/bank/NOPE/content/{id}/review"))
                .await,
            StatusCode::NOT_FOUND,
            "NOPE",
        );
        let (status, list) = t
            .get_json(&format!("/c/bank/LOCAL/content/{id}/review"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            list.as_array().unwrap().len(),
            1,
            "refused reviews are not stored: {list}"
        );

        // A false positive alone keeps matching; with disable_matching it stops.
        let (status, _) = post_review(
            &t,
            "LOCAL",
            id,
            json!({"opinion": "false_positive", "reviewer": "bob"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert!(lookup(&t, PDQ).await.get("LOCAL").is_some());
        let (status, r) = post_review(
            &t,
            "LOCAL",
            id,
            json!({"opinion": "false_positive", "reviewer": "carol", "disable_matching": true}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(r["disable_matching"], true);
        let stopped = wait_until(Duration::from_secs(10), || async {
            lookup(&t, PDQ).await.get("LOCAL").is_none()
        })
        .await;
        assert!(
            stopped.is_some(),
            "{backend:?}: still matching after disable_matching"
        );
        let (_, content) = t.get_json(&format!("/c/bank/LOCAL/content/{id}")).await;
        assert_eq!(content["disable_until_ts"], 0, "{content}");
        let (_, list) = t
            .get_json(&format!("/c/bank/LOCAL/content/{id}/review"))
            .await;
        let reviewers: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reviewer"].as_str().unwrap())
            .collect();
        assert_eq!(reviewers, ["alice", "bob", "carol"]);
        t.server.shutdown().await.unwrap();
    }
}

/// Reactions the fake ThreatExchange received: (descriptor, query).
type Reactions = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

async fn fake_threatexchange() -> (String, Reactions) {
    let reactions: Reactions = Arc::default();
    let seen = reactions.clone();
    let router = Router::new()
        .route(
            "/v21.0/{group}/threat_updates/",
            get(|| async {
                Json(json!({"data": [{
                    "id": "1001", "indicator": PDQ, "type": "HASH_PDQ", "last_updated": "1700000000",
                    "should_delete": false,
                    "descriptors": {"data": [{"id": "9001", "owner": {"id": "55555555"},
                        "status": "MALICIOUS", "tags": {"data": []}, "reactions": []}]}
                }], "paging": {}}))
            }),
        )
        .route(
            "/v21.0/{descriptor}/",
            post(
                move |Path(d): Path<String>, Query(q): Query<BTreeMap<String, String>>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push((d, q));
                        Json(json!({"success": true}))
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/v21.0"), reactions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_of_fetched_content_is_written_back_by_the_background_task() {
    for backend in backends() {
        let (te_base, reactions) = fake_threatexchange().await;
        let t = TestServer::start_on(backend, |c| {
            c.task_fetcher = true;
            c.task_fetcher_interval_seconds = 1;
            c.matcher_poll_interval_ms = 50;
        })
        .await;
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/exchanges/api/fb_threatexchange"))
                    .json(&json!({"credential_json": {"api_token": TOKEN}})),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        for body in [
            json!({"bank": "TE_FEED", "api": "fb_threatexchange", "api_json": {"privacy_group": 4242, "base_url": te_base}}),
            json!({"bank": "SAMPLE_FEED", "api": "sample"}),
        ] {
            let got = t
                .send_json(t.client.post(t.url("/c/exchanges")).json(&body))
                .await;
            assert_eq!(got.0, StatusCode::CREATED, "{backend:?}: {}", got.1);
        }
        // Both exchanges carry PDQ; wait until the fetcher imported it into both banks.
        let imported = wait_until(Duration::from_secs(30), || async {
            let hits = lookup(&t, PDQ).await;
            hits["TE_FEED"][0].is_object() && hits["SAMPLE_FEED"][0].is_object()
        })
        .await;
        assert!(
            imported.is_some(),
            "{backend:?}: not fetched: {}",
            lookup(&t, PDQ).await
        );
        let hits = lookup(&t, PDQ).await;
        let ids: BTreeMap<&str, i64> = ["TE_FEED", "SAMPLE_FEED"]
            .into_iter()
            .map(|b| (b, hits[b][0]["bank_content_id"].as_i64().unwrap()))
            .collect();

        let (status, r) = post_review(
            &t,
            "TE_FEED",
            ids["TE_FEED"],
            json!({"opinion": "false_positive", "reviewer": "alice"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        let wb = &r["write_back"][0];
        assert_eq!(wb["exchange"], "TE_FEED");
        assert_eq!(wb["api"], "fb_threatexchange");
        assert_eq!(wb["record_key"], "1001");
        assert_eq!(wb["state"], "pending");

        let (status, r) = post_review(
            &t,
            "SAMPLE_FEED",
            ids["SAMPLE_FEED"],
            json!({"opinion": "true_positive", "reviewer": "bob"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        assert_eq!(r["write_back"][0]["state"], "unsupported", "{r}");

        let path = format!("/c/bank/TE_FEED/content/{}/review", ids["TE_FEED"]);
        let delivered = wait_until(Duration::from_secs(30), || async {
            t.get_json(&path).await.1[0]["write_back"][0]["state"] == "delivered"
        })
        .await;
        assert!(
            delivered.is_some(),
            "{backend:?}: {}",
            t.get_json(&path).await.1
        );
        let (_, list) = t.get_json(&path).await;
        let wb = &list[0]["write_back"][0];
        assert_eq!(wb["attempts"], 1);
        assert!(wb["delivered_ts"].as_i64().is_some());
        assert_eq!(wb["next_attempt_ts"], Value::Null);
        let sent = reactions.lock().unwrap().clone();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, "9001");
        assert_eq!(sent[0].1["reactions"], "DISAGREE_WITH_TAGS");
        t.server.shutdown().await.unwrap();
    }
}
