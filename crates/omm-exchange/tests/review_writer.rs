//! The review writer on a real store (SQLite, and PostgreSQL when OMM_TEST_DATABASE_URL is
//! set) against fake ThreatExchange, NCMEC and StopNCII servers: each accepting exchange gets
//! the review in its wire format, nothing is lost while an exchange is down, and exchanges that
//! take no reviews are marked unsupported.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use common::{pdq, serve};
use omm_exchange::review_writer::{ReviewWriter, ReviewWriterSettings, WritePassReport};
use omm_exchange::{all_apis, api_by_name, HttpSettings};
use omm_store::{
    CheckpointGuard, DeliveryState, FetchBatch, FetchedRecord, NewExchange, NewReview,
    RecordUpdate, ReviewOpinion, Store,
};
use serde_json::{json, Value};

const TOKEN: &str = "123456789|abcdefghijklmnopqrstuvwxyz";
const REASON: &str = "0123abcd-0000-1111-2222-333344445555";

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Fake {
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn record(
    State(f): State<Fake>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if f.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    let path = uri.path().to_string();
    f.seen.lock().unwrap().push(Seen {
        method,
        path: path.clone(),
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if path.starts_with("/te/") {
        axum::Json(json!({"success": true})).into_response()
    } else if path.starts_with("/sncii/") {
        axum::Json(json!({"count": 1})).into_response()
    } else {
        "<?xml version=\"1.0\"?><feedbackSubmissionResult/>".into_response()
    }
}

async fn reasons(State(f): State<Fake>, Path(kind): Path<String>) -> Response {
    if f.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    format!(
        r#"<?xml version="1.0"?><availableFeedbackReasons xmlns="https://hashsharing.ncmec.org/hashsharing/v2"><reason guid="{REASON}" name="Not CSAM" type="{kind}"/></availableFeedbackReasons>"#
    )
    .into_response()
}

async fn start_fake() -> (Fake, String) {
    let fake = Fake::default();
    let router = Router::new()
        .route("/te/{descriptor}/", post(record))
        .route("/ncmec/v2/feedback/{kind}/reasons", get(reasons))
        .route("/ncmec/v2/entries/{m}/{e}/{t}/feedback", put(record))
        .route("/sncii/SubmitFeedback", post(record))
        .with_state(fake.clone());
    let base = serve(router).await;
    (fake, base)
}

async fn create(store: &Store, name: &str, api: &str, config: Value) {
    let config = api_by_name(api).unwrap().normalize_config(&config).unwrap();
    store
        .create_exchange(&NewExchange {
            name: name.into(),
            api: api.into(),
            enabled: true,
            config,
        })
        .await
        .unwrap();
}

/// Stores one fetched record and returns its content id.
async fn fetched(store: &Store, exchange: &str, key: &str, value: &str, metadata: Value) -> i64 {
    store
        .apply_fetch_batch(
            exchange,
            &FetchBatch {
                updates: vec![RecordUpdate {
                    key: key.into(),
                    record: Some(FetchedRecord {
                        signals: vec![("pdq".into(), value.into())],
                        metadata,
                    }),
                }],
                checkpoint: json!({"n": 1}),
                checkpoint_ts: None,
                up_to_date: true,
                guard: CheckpointGuard::Unchecked,
            },
        )
        .await
        .unwrap();
    store.list_content(exchange, 0, 1).await.unwrap()[0].id
}

fn new_review(opinion: ReviewOpinion) -> NewReview {
    NewReview {
        opinion,
        note: Some("checked by hand".into()),
        reviewer: "reviewer-1".into(),
        signal_type: None,
        disable_matching: false,
        write_back_apis: all_apis()
            .iter()
            .filter(|a| a.accepts_reviews())
            .map(|a| a.name().to_string())
            .collect(),
    }
}

fn writer(store: &Store) -> ReviewWriter {
    ReviewWriter::new(
        store.clone(),
        ReviewWriterSettings {
            http: HttpSettings::for_tests(),
            // Due again at once, so the test does not wait for backoff.
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..ReviewWriterSettings::default()
        },
    )
}

async fn state_of(store: &Store, bank: &str, content: i64) -> (DeliveryState, i64, Option<String>) {
    let reviews = store.list_reviews(bank, content).await.unwrap();
    let d = &reviews.last().unwrap().deliveries[0];
    (d.state, d.attempts, d.last_error.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_reach_each_exchange_in_its_wire_format_and_survive_an_outage() {
    for ts in common::stores("omm_rw").await {
        let store = &ts.store;
        let (fake, base) = start_fake().await;
        store
            .set_api_credentials("fb_threatexchange", Some(&json!({"api_token": TOKEN})))
            .await
            .unwrap();
        store
            .set_api_credentials("ncmec", Some(&json!({"user": "esp", "password": "pw"})))
            .await
            .unwrap();
        store
            .set_api_credentials(
                "stop_ncii",
                Some(
                    &json!({"fetch_function_key": "fetch-key", "subscription_key": "sub-key",
                             "base_url_override": format!("{base}/sncii"),
                             "submit_feedback_function_key": "feedback-key"}),
                ),
            )
            .await
            .unwrap();
        create(
            store,
            "TE",
            "fb_threatexchange",
            json!({"privacy_group": 4242, "base_url": format!("{base}/te")}),
        )
        .await;
        create(store, "NC", "ncmec", json!({"environment": "https://hashsharing-test.ncmec.org/npo", "base_url": format!("{base}/ncmec")})).await;
        create(store, "SN", "stop_ncii", json!({})).await;
        create(store, "TAT", "tat", json!({})).await;

        let te = fetched(store, "TE", "1001", &pdq(1), json!({"indicator_id": "1001", "opinions": [
            {"owner_app_id": 55555555, "is_mine": false, "category": "positive_class", "tags": [], "descriptor_id": "9001"},
            {"owner_app_id": 123456789, "is_mine": true, "category": "investigation_seed", "tags": [], "descriptor_id": "9002"}]})).await;
        let nc = fetched(
            store,
            "NC",
            "41-e1",
            &pdq(2),
            json!({"member_id": 41, "entry_id": "e1", "entry_type": "image"}),
        )
        .await;
        let sn_hash = pdq(3);
        let sn = fetched(
            store,
            "SN",
            &format!("ImagePDQ {sn_hash}"),
            &sn_hash,
            json!({"hash_status": "Active"}),
        )
        .await;
        let tat = fetched(store, "TAT", "t1", &pdq(4), json!({})).await;

        store
            .create_review("TE", te, &new_review(ReviewOpinion::FalsePositive))
            .await
            .unwrap();
        store
            .create_review("NC", nc, &new_review(ReviewOpinion::TruePositive))
            .await
            .unwrap();
        store
            .create_review("NC", nc, &new_review(ReviewOpinion::FalsePositive))
            .await
            .unwrap();
        store
            .create_review("SN", sn, &new_review(ReviewOpinion::FalsePositive))
            .await
            .unwrap();
        let r = store
            .create_review("TAT", tat, &new_review(ReviewOpinion::TruePositive))
            .await
            .unwrap();
        assert_eq!(
            r.deliveries[0].state,
            DeliveryState::Unsupported,
            "tat takes no reviews"
        );

        // Every exchange is down: nothing is lost, each delivery is failed with the reason.
        fake.down.store(true, Ordering::SeqCst);
        let w = writer(store);
        let report = w.run_pass().await.unwrap();
        assert_eq!(
            report,
            WritePassReport {
                attempted: 4,
                delivered: 0,
                failed: 4,
                unsupported: 0
            }
        );
        for (bank, id) in [("TE", te), ("NC", nc), ("SN", sn)] {
            let (state, attempts, error) = state_of(store, bank, id).await;
            assert_eq!((state, attempts), (DeliveryState::Failed, 1), "{bank}");
            assert!(
                error.as_deref().unwrap().contains("503"),
                "{bank}: {error:?}"
            );
        }
        assert!(fake.seen.lock().unwrap().is_empty());

        // Back up: the retry delivers each one exactly once.
        fake.down.store(false, Ordering::SeqCst);
        let report = w.run_pass().await.unwrap();
        assert_eq!(
            report,
            WritePassReport {
                attempted: 4,
                delivered: 4,
                failed: 0,
                unsupported: 0
            }
        );
        for (bank, id) in [("TE", te), ("NC", nc), ("SN", sn)] {
            assert_eq!(
                state_of(store, bank, id).await.0,
                DeliveryState::Delivered,
                "{bank}"
            );
        }
        assert_eq!(
            w.run_pass().await.unwrap(),
            WritePassReport::default(),
            "nothing left due"
        );
        assert_eq!(
            state_of(store, "TAT", tat).await.0,
            DeliveryState::Unsupported
        );

        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 4, "{seen:?}");
        // ThreatExchange: a reaction on the other app's descriptor only, parameters in the
        // query string and in the form body.
        let te_req = seen.iter().find(|s| s.path.starts_with("/te/")).unwrap();
        assert_eq!(
            (te_req.method.clone(), te_req.path.as_str()),
            (Method::POST, "/te/9001/")
        );
        let params = BTreeMap::from([
            ("access_token".to_string(), TOKEN.to_string()),
            ("reactions".to_string(), "DISAGREE_WITH_TAGS".to_string()),
        ]);
        assert_eq!(te_req.query, params);
        let form: BTreeMap<String, String> = url::form_urlencoded::parse(te_req.body.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(form, params);
        assert_eq!(
            te_req.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        // NCMEC: PUT feedback XML with Basic auth, affirmative then negative with the reason.
        let nc_reqs: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.path.starts_with("/ncmec/"))
            .collect();
        assert_eq!(nc_reqs.len(), 2);
        for r in &nc_reqs {
            assert_eq!(r.method, Method::PUT);
            assert_eq!(r.path, "/ncmec/v2/entries/41/e1/PDQ/feedback");
            assert_eq!(r.headers["content-type"], "application/xml; charset=utf-8");
            assert_eq!(r.headers["authorization"], "Basic ZXNwOnB3"); // esp:pw
            assert!(r.body.contains(
                r#"<feedbackSubmission xmlns="https://hashsharing.ncmec.org/hashsharing/v2">"#
            ));
        }
        let bodies: Vec<&str> = nc_reqs.iter().map(|r| r.body.as_str()).collect();
        assert!(bodies.iter().any(|b| b.contains("<affirmative/>")));
        assert!(bodies.iter().any(|b| b.contains(&format!(
            "<negative><reasonIds><guid>{REASON}</guid></reasonIds></negative>"
        ))));
        // StopNCII: SubmitFeedback JSON with the feedback function key and subscription key.
        let sn_req = seen.iter().find(|s| s.path.starts_with("/sncii/")).unwrap();
        assert_eq!(sn_req.method, Method::POST);
        assert_eq!(sn_req.headers["x-functions-key"], "feedback-key");
        assert_eq!(sn_req.headers["ocp-apim-subscription-key"], "sub-key");
        assert_eq!(
            serde_json::from_str::<Value>(&sn_req.body).unwrap(),
            json!({"count": 1, "hashFeedbacks": [{"hashValue": sn_hash, "feedbackValue": "NotBlocked", "tags": []}]})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_the_exchange_cannot_take_fails_without_retry() {
    for ts in common::stores("omm_rw").await {
        let store = &ts.store;
        let (fake, base) = start_fake().await;
        store
            .set_api_credentials("fb_threatexchange", Some(&json!({"api_token": TOKEN})))
            .await
            .unwrap();
        create(
            store,
            "TE",
            "fb_threatexchange",
            json!({"privacy_group": 4242, "base_url": format!("{base}/te")}),
        )
        .await;
        // Only our own descriptor: there is nothing of another app to react to.
        let te = fetched(store, "TE", "1", &pdq(1), json!({"opinions": [
            {"owner_app_id": 123456789, "is_mine": true, "category": "positive_class", "tags": [], "descriptor_id": "5"}]})).await;
        store
            .create_review("TE", te, &new_review(ReviewOpinion::TruePositive))
            .await
            .unwrap();
        let w = writer(store);
        assert_eq!(w.run_pass().await.unwrap().failed, 1);
        let d = store.list_reviews("TE", te).await.unwrap()[0].deliveries[0].clone();
        assert_eq!(d.state, DeliveryState::Failed);
        assert_eq!(d.next_attempt_at, None, "permanent: not retried");
        assert!(d.last_error.unwrap().contains("descriptor"));
        assert_eq!(w.run_pass().await.unwrap(), WritePassReport::default());
        assert!(fake.seen.lock().unwrap().is_empty());

        // Missing credentials heal when the operator sets them: retried, then delivered.
        let te2 = {
            create(
                store,
                "TE2",
                "fb_threatexchange",
                json!({"privacy_group": 1, "base_url": format!("{base}/te")}),
            )
            .await;
            fetched(store, "TE2", "2", &pdq(2), json!({"opinions": [
                {"owner_app_id": 7, "is_mine": false, "category": "positive_class", "tags": [], "descriptor_id": "77"}]})).await
        };
        store
            .set_api_credentials("fb_threatexchange", None)
            .await
            .unwrap();
        store
            .create_review("TE2", te2, &new_review(ReviewOpinion::TruePositive))
            .await
            .unwrap();
        assert_eq!(w.run_pass().await.unwrap().failed, 1);
        let d = store.list_reviews("TE2", te2).await.unwrap()[0].deliveries[0].clone();
        assert_eq!(d.state, DeliveryState::Failed);
        assert!(
            d.next_attempt_at.is_some(),
            "credentials can be fixed: retried"
        );
        store
            .set_api_credentials("fb_threatexchange", Some(&json!({"api_token": TOKEN})))
            .await
            .unwrap();
        assert_eq!(w.run_pass().await.unwrap().delivered, 1);
        let seen = fake.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/te/77/");
        assert_eq!(seen[0].query["reactions"], "HELPFUL");
    }
}
