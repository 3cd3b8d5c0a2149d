//! End-to-end flows of Open Media Match's own test suite (§9), on SQLite and, when
//! `OMM_TEST_DATABASE_URL` is set, on PostgreSQL.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{
    assert_error, backends, checkerboard, flat_image, image_bytes, pdq_of, wait_until, Backend,
    Origin, TestServer,
};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

const FRESHNESS: Duration = Duration::from_secs(10);

async fn create_bank(t: &TestServer, name: &str) {
    let got = t
        .send_json(
            t.client
                .post(t.url("/c/banks"))
                .json(&json!({"name": name})),
        )
        .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert_eq!(got.1, json!({"name": name, "matching_enabled_ratio": 1.0}));
}

async fn add_signal(t: &TestServer, bank: &str, body: Value) -> (StatusCode, Value) {
    t.send_json(
        t.client
            .post(t.url(&format!("/c/bank/{bank}/signal")))
            .json(&body),
    )
    .await
}

async fn lookup(t: &TestServer, pdq: &str, extra: &str) -> Value {
    let (status, body) = t
        .get_json(&format!("/m/lookup?signal_type=pdq&signal={pdq}{extra}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits until a lookup of `pdq` satisfies `pred`, panicking after the deadline.
async fn wait_lookup(
    t: &TestServer,
    pdq: &str,
    extra: &str,
    pred: impl Fn(&Value) -> bool,
) -> Duration {
    let took = wait_until(FRESHNESS, || async { pred(&lookup(t, pdq, extra).await) }).await;
    match took {
        Some(d) => d,
        None => panic!(
            "lookup of {pdq}{extra} never satisfied the condition: {}",
            lookup(t, pdq, extra).await
        ),
    }
}

fn pdq_with_bits_flipped(base: &str, bits: usize) -> String {
    let mut bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&base[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for b in 0..bits {
        bytes[b / 8] ^= 1 << (b % 8);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn bank_crud() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |_| {}).await;
        assert_eq!(t.get_json("/c/banks").await, (StatusCode::OK, json!([])));
        for bad in ["01_TEST_BANK", "my_test_bank", ""] {
            let got = t
                .send_json(t.client.post(t.url("/c/banks")).json(&json!({"name": bad})))
                .await;
            assert_error(&got, StatusCode::BAD_REQUEST, "UPPER_WITH_UNDERSCORE");
        }
        create_bank(&t, "MY_TEST_BANK_01").await;
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/banks"))
                    .json(&json!({"name": "MY_TEST_BANK_01"})),
            )
            .await;
        assert_error(&got, StatusCode::FORBIDDEN, "Bank already exists");
        let (_, list) = t.get_json("/c/banks").await;
        assert_eq!(
            list,
            json!([{"name": "MY_TEST_BANK_01", "matching_enabled_ratio": 1.0}])
        );

        // Update: bad rename, rename, enabled false, ratio.
        let put = |name: &str, body: Value| {
            t.send_json(t.client.put(t.url(&format!("/c/bank/{name}"))).json(&body))
        };
        assert_error(
            &put("MY_TEST_BANK_01", json!({"name": "bad name"})).await,
            StatusCode::BAD_REQUEST,
            "UPPER",
        );
        let got = put("MY_TEST_BANK_01", json!({"name": "MY_TEST_BANK_RENAMED"})).await;
        assert_eq!(
            got,
            (
                StatusCode::OK,
                json!({"name": "MY_TEST_BANK_RENAMED", "matching_enabled_ratio": 1.0})
            )
        );
        let got = put("MY_TEST_BANK_RENAMED", json!({"enabled": false})).await;
        assert_eq!(got.1["matching_enabled_ratio"], json!(0.0));
        let got = put("MY_TEST_BANK_RENAMED", json!({"enabled_ratio": 0.5})).await;
        assert_eq!(got.1["matching_enabled_ratio"], json!(0.5));
        assert_error(
            &put("NOPE", json!({})).await,
            StatusCode::NOT_FOUND,
            "Bank not found",
        );
        assert_error(
            &put("MY_TEST_BANK_RENAMED", json!({"enabled_ratio": 2.5})).await,
            StatusCode::BAD_REQUEST,
            "between 0 and 1",
        );
        assert_eq!(
            t.get_json("/c/bank/MY_TEST_BANK_RENAMED").await,
            (
                StatusCode::OK,
                json!({"name": "MY_TEST_BANK_RENAMED", "matching_enabled_ratio": 0.5})
            )
        );
        assert_error(
            &t.get_json("/c/bank/NOPE").await,
            StatusCode::NOT_FOUND,
            "bank 'NOPE' not found",
        );

        // enabled:false on creation is honoured (upstream ignores it).
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/banks"))
                    .json(&json!({"name": "OFF_BANK", "enabled": false})),
            )
            .await;
        assert_eq!(
            got,
            (
                StatusCode::CREATED,
                json!({"name": "OFF_BANK", "matching_enabled_ratio": 0.0})
            )
        );

        // Delete twice: 200 both times.
        for _ in 0..2 {
            let got = t
                .send_json(t.client.delete(t.url("/c/bank/OFF_BANK")))
                .await;
            assert_eq!(got, (StatusCode::OK, json!({"message": "Done"})));
        }
        // Missing name / not JSON.
        let got = t
            .send_json(t.client.post(t.url("/c/banks")).json(&json!({})))
            .await;
        assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
        let got = t
            .send_json(t.client.post(t.url("/c/banks")).body("{"))
            .await;
        assert_eq!(got.0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", got.1);
        t.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn content_by_url_upload_and_hash_with_notes_and_metadata() {
    let origin = Origin::start().await;
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| c.allow_private_targets = true).await;
        create_bank(&t, "TEST_BANK").await;
        let expected = pdq_of(&image_bytes());

        // By URL.
        let got = t
            .send_json(t.client.post(t.url(&format!(
                "/c/bank/TEST_BANK/content?url={}",
                origin.url("/image.jpg")
            ))))
            .await;
        assert_eq!(
            got,
            (
                StatusCode::OK,
                json!({"id": got.1["id"], "signals": {"pdq": expected}})
            )
        );
        let id1 = got.1["id"].as_i64().unwrap();
        let (status, content) = t
            .get_json(&format!("/c/bank/TEST_BANK/content/{id1}"))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content["id"], json!(id1));
        assert!(content.get("signals").is_none());
        assert!(content.get("note").is_none());
        assert!(content.get("metadata").is_none());
        let (_, content) = t
            .get_json(&format!(
                "/c/bank/TEST_BANK/content/{id1}?include_signals=true"
            ))
            .await;
        assert_eq!(content["signals"], json!({"pdq": expected}));

        // By upload with metadata and note as form fields.
        let form = Form::new()
            .part("photo", Part::bytes(checkerboard(16)).file_name("b.bmp"))
            .text("metadata", r#"{"content_id": "1197433091", "content_uri": "https://x/y", "json": {"asdf": {}}}"#)
            .text("note", "uploaded");
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/bank/TEST_BANK/content"))
                    .multipart(form),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        let id2 = got.1["id"].as_i64().unwrap();
        let (_, content) = t
            .get_json(&format!("/c/bank/TEST_BANK/content/{id2}"))
            .await;
        assert_eq!(content["note"], "uploaded");
        assert_eq!(
            content["metadata"],
            json!({"content_id": "1197433091", "content_uri": "https://x/y", "json": {"asdf": {}}, "collab": null})
        );
        let (_, content) = t
            .get_json(&format!(
                "/c/bank/TEST_BANK/content/{id2}?include_metadata=false"
            ))
            .await;
        assert!(content.get("metadata").is_none());

        // Metadata and note errors change nothing.
        let form = Form::new()
            .part("photo", Part::bytes(checkerboard(16)).file_name("b.bmp"))
            .text("metadata", r#"{"invalid_metadata": 5}"#);
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/bank/TEST_BANK/content"))
                    .multipart(form),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "Invalid metadata");
        let form = Form::new()
            .part("photo", Part::bytes(checkerboard(16)).file_name("b.bmp"))
            .text("metadata", "{not json");
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/bank/TEST_BANK/content"))
                    .multipart(form),
            )
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "metadata form field must be valid JSON",
        );
        let got = t
            .send_json(
                t.client
                    .post(t.url(&format!(
                        "/c/bank/TEST_BANK/content?url={}",
                        origin.url("/image.jpg")
                    )))
                    .json(&json!({"note": "n".repeat(256)})),
            )
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "note must be at most 255 characters",
        );
        let got = t
            .send_json(
                t.client
                    .post(t.url(&format!(
                        "/c/bank/TEST_BANK/content?url={}",
                        origin.url("/image.jpg")
                    )))
                    .json(&json!({"note": 5})),
            )
            .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "note should be a string");
        let got = t
            .send_json(t.client.post(t.url("/c/bank/TEST_BANK/content")))
            .await;
        assert_error(
            &got,
            StatusCode::BAD_REQUEST,
            "Neither `url` nor multipart file upload was received",
        );
        let got = t
            .send_json(t.client.post(t.url(&format!(
                "/c/bank/NO_BANK/content?url={}",
                origin.url("/image.jpg")
            ))))
            .await;
        assert_error(&got, StatusCode::NOT_FOUND, "bank 'NO_BANK' not found");
        // Low-quality photo: a clear 4xx.
        let form = Form::new().part("photo", Part::bytes(flat_image()).file_name("flat.bmp"));
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/bank/TEST_BANK/content"))
                    .multipart(form),
            )
            .await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "quality");

        // By hash, with note.
        let got = add_signal(
            &t,
            "TEST_BANK",
            json!({"pdq": "0".repeat(64), "note": "from hash"}),
        )
        .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        let id3 = got.1["id"].as_i64().unwrap();
        assert_eq!(got.1["signals"], json!({"pdq": "0".repeat(64)}));
        let (_, content) = t
            .get_json(&format!("/c/bank/TEST_BANK/content/{id3}"))
            .await;
        assert_eq!(content["note"], "from hash");
        // MD5 is normalised.
        let got = add_signal(
            &t,
            "TEST_BANK",
            json!({"video_md5": "  D41D8CD98F00B204E9800998ECF8427E "}),
        )
        .await;
        assert_eq!(
            got.1["signals"],
            json!({"video_md5": "d41d8cd98f00b204e9800998ecf8427e"})
        );
        // /signal errors.
        assert_error(
            &add_signal(&t, "TEST_BANK", json!({})).await,
            StatusCode::BAD_REQUEST,
            "No signals given",
        );
        assert_error(
            &add_signal(&t, "TEST_BANK", json!({"nope": "x"})).await,
            StatusCode::BAD_REQUEST,
            "No such signal type nope",
        );
        assert_error(
            &add_signal(&t, "TEST_BANK", json!({"pdq": "xyz"})).await,
            StatusCode::BAD_REQUEST,
            "Invalid pdq signal",
        );
        assert_error(
            &add_signal(&t, "TEST_BANK", json!(["pdq"])).await,
            StatusCode::BAD_REQUEST,
            "JSON object",
        );
        assert_error(
            &add_signal(&t, "NO_BANK", json!({"pdq": "0".repeat(64)})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        let got = t
            .send_json(t.client.post(t.url("/c/bank/TEST_BANK/signal")).body("x"))
            .await;
        assert_eq!(got.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        // Update: disable_until_ts and note.
        let put = |id: i64, body: Value| {
            t.send_json(
                t.client
                    .put(t.url(&format!("/c/bank/TEST_BANK/content/{id}")))
                    .json(&body),
            )
        };
        let next_year = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 365 * 24 * 3600;
        let got = put(id1, json!({"disable_until_ts": next_year})).await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        assert_eq!(got.1["disable_until_ts"], json!(next_year));
        assert_error(
            &put(id1, json!({"disable_until_ts": 9999999999u64})).await,
            StatusCode::BAD_REQUEST,
            "5 years",
        );
        assert_error(
            &put(id1, json!({"disable_until_ts": -1})).await,
            StatusCode::BAD_REQUEST,
            "non-negative",
        );
        assert_error(
            &put(id1, json!({"disable_until_ts": "soon"})).await,
            StatusCode::BAD_REQUEST,
            "Invalid int: 'soon'",
        );
        put(id1, json!({"note": "first"})).await;
        put(id1, json!({"note": "second"})).await;
        let (_, content) = t
            .get_json(&format!("/c/bank/TEST_BANK/content/{id1}"))
            .await;
        assert_eq!(content["note"], "second");
        put(id1, json!({"note": ""})).await;
        let (_, content) = t
            .get_json(&format!("/c/bank/TEST_BANK/content/{id1}"))
            .await;
        assert!(content.get("note").is_none());
        assert_error(
            &put(999_999, json!({"note": "x"})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );

        // Content operations are scoped to the bank in the path.
        create_bank(&t, "OTHER_BANK").await;
        assert_error(
            &t.get_json(&format!("/c/bank/OTHER_BANK/content/{id1}"))
                .await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        let got = t
            .send_json(
                t.client
                    .delete(t.url(&format!("/c/bank/OTHER_BANK/content/{id1}"))),
            )
            .await;
        assert_eq!(got, (StatusCode::OK, json!({"deleted": 0})));
        assert_error(
            &t.get_json("/c/bank/TEST_BANK/content/abc").await,
            StatusCode::NOT_FOUND,
            "Not Found",
        );

        // Delete.
        let got = t
            .send_json(
                t.client
                    .delete(t.url(&format!("/c/bank/TEST_BANK/content/{id1}"))),
            )
            .await;
        assert_eq!(got, (StatusCode::OK, json!({"deleted": 1})));
        assert_error(
            &t.get_json(&format!("/c/bank/TEST_BANK/content/{id1}"))
                .await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        t.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn add_hashes_and_find_match_then_disable_and_delete() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| c.matcher_poll_interval_ms = 50).await;
        create_bank(&t, "TEST_BANK").await;
        let base = pdq_of(&checkerboard(8));
        let mut ids = Vec::new();
        for i in 0..16 {
            let pdq = pdq_with_bits_flipped(&base, i * 40 % 256);
            let got = add_signal(&t, "TEST_BANK", json!({ "pdq": pdq })).await;
            assert_eq!(got.0, StatusCode::OK);
            ids.push((got.1["id"].as_i64().unwrap(), pdq));
        }
        let (last_id, last_pdq) = ids.last().cloned().unwrap();
        // Matchable without restarting anything.
        wait_lookup(&t, &last_pdq, "", |v| {
            v["TEST_BANK"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|x| x["bank_content_id"] == json!(last_id) && x["distance"] == "0")
            })
        })
        .await;
        let (_, status) = t.get_json("/m/index/status?signal_type=pdq").await;
        assert_eq!(status["pdq"]["present"], json!(true));
        assert_eq!(status["pdq"]["size"], json!(16));
        assert_error(
            &t.get_json("/m/index/status?signal_type=nope").await,
            StatusCode::BAD_REQUEST,
            "No such signal type 'nope'",
        );
        // A far hash matches nothing.
        assert_eq!(lookup(&t, &"5".repeat(64), "").await, json!({}));

        // raw_lookup.
        let (_, raw) = t
            .get_json(&format!("/m/raw_lookup?signal_type=pdq&signal={last_pdq}"))
            .await;
        assert!(raw["matches"].as_array().unwrap().contains(&json!(last_id)));
        let (_, raw) = t
            .get_json(&format!(
                "/m/raw_lookup?signal_type=pdq&signal={last_pdq}&include_distance=true"
            ))
            .await;
        assert!(raw["matches"]
            .as_array()
            .unwrap()
            .contains(&json!({"bank_content_id": last_id, "distance": "0"})));
        assert_error(
            &t.get_json("/m/raw_lookup?signal_type=pdq").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "Field required",
        );
        assert_error(
            &t.get_json("/m/raw_lookup?signal_type=nope&signal=x").await,
            StatusCode::BAD_REQUEST,
            "No such SignalType 'nope'",
        );
        assert_error(
            &t.get_json("/m/raw_lookup?signal_type=pdq&signal=zz").await,
            StatusCode::BAD_REQUEST,
            "invalid signal",
        );
        assert_error(
            &t.get_json(&format!(
                "/m/raw_lookup?signal_type=pdq&signal={last_pdq}&include_distance=maybe"
            ))
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "boolean",
        );
        assert_error(
            &t.get_json("/m/lookup?signal_type=pdq").await,
            StatusCode::BAD_REQUEST,
            "Either url or both signal and signal_type are required",
        );

        // Detailed mode carries note and metadata.
        let (_, detailed) = t
            .get_json(&format!(
                "/m/lookup?signal_type=pdq&signal={last_pdq}&detailed=true"
            ))
            .await;
        let m = detailed["TEST_BANK"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["bank_content_id"] == json!(last_id))
            .cloned()
            .unwrap();
        assert!(
            m.get("note").is_some() && m.get("metadata").is_some() && m.get("exchange").is_some(),
            "{m}"
        );

        // Disable: stops matching without a restart.
        let got = t
            .send_json(
                t.client
                    .put(t.url(&format!("/c/bank/TEST_BANK/content/{last_id}")))
                    .json(&json!({"disable_until_ts": 0})),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK);
        wait_lookup(&t, &last_pdq, "", |v| {
            !v["TEST_BANK"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["bank_content_id"] == json!(last_id)))
        })
        .await;
        // raw_lookup ignores enable state.
        let (_, raw) = t
            .get_json(&format!("/m/raw_lookup?signal_type=pdq&signal={last_pdq}"))
            .await;
        assert!(raw["matches"].as_array().unwrap().contains(&json!(last_id)));
        // Re-enable, then delete: deleted content never matches, raw or not.
        t.send_json(
            t.client
                .put(t.url(&format!("/c/bank/TEST_BANK/content/{last_id}")))
                .json(&json!({"disable_until_ts": 1})),
        )
        .await;
        wait_lookup(&t, &last_pdq, "", |v| {
            v["TEST_BANK"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["bank_content_id"] == json!(last_id)))
        })
        .await;
        t.send_json(
            t.client
                .delete(t.url(&format!("/c/bank/TEST_BANK/content/{last_id}"))),
        )
        .await;
        wait_lookup(&t, &last_pdq, "", |v| {
            !v["TEST_BANK"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["bank_content_id"] == json!(last_id)))
        })
        .await;
        let (_, raw) = t
            .get_json(&format!("/m/raw_lookup?signal_type=pdq&signal={last_pdq}"))
            .await;
        assert!(!raw["matches"].as_array().unwrap().contains(&json!(last_id)));

        // Bank ratio 0: matches only when the coin flip is bypassed (GET honours it too).
        let first_pdq = ids[0].1.clone();
        t.send_json(
            t.client
                .put(t.url("/c/bank/TEST_BANK"))
                .json(&json!({"enabled_ratio": 0.0})),
        )
        .await;
        wait_lookup(&t, &first_pdq, "", |v| v == &json!({})).await;
        let got = lookup(&t, &first_pdq, "&bypass_coinflip=true").await;
        assert!(got["TEST_BANK"].is_array(), "{got}");
        t.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn bank_filters_and_seeded_coin_flip() {
    let t = TestServer::start(|c| c.matcher_poll_interval_ms = 50).await;
    let pdq = pdq_of(&checkerboard(8));
    for bank in ["BANK_A", "BANK_B", "BANK_C"] {
        create_bank(&t, bank).await;
        add_signal(&t, bank, json!({ "pdq": pdq })).await;
    }
    wait_lookup(&t, &pdq, "", |v| {
        v.as_object().is_some_and(|o| o.len() == 3)
    })
    .await;
    let raw = |banks: &'static str| {
        let t = &t;
        let pdq = pdq.clone();
        async move {
            let (_, v) = t
                .get_json(&format!(
                    "/m/raw_lookup?signal_type=pdq&signal={pdq}{banks}"
                ))
                .await;
            v["matches"].as_array().unwrap().len()
        }
    };
    assert_eq!(raw("").await, 3);
    assert_eq!(raw("&banks=BANK_A").await, 1);
    assert_eq!(raw("&banks=BANK_A,BANK_B").await, 2);
    assert_eq!(raw("&banks=NOPE").await, 0);
    let got = lookup(&t, &pdq, "&banks=BANK_A,BANK_C").await;
    assert_eq!(
        got.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["BANK_A", "BANK_C"]
    );
    assert_eq!(lookup(&t, &pdq, "&banks=NOPE").await, json!({}));

    // Ratio 0.5: a seed makes the coin flip deterministic; over many seeds about half match.
    t.send_json(
        t.client
            .put(t.url("/c/bank/BANK_B"))
            .json(&json!({"enabled_ratio": 0.5})),
    )
    .await;
    wait_lookup(&t, &pdq, "&seed=x", |_| true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut hits = 0;
    for seed in 0..60 {
        let a = lookup(&t, &pdq, &format!("&seed={seed}&banks=BANK_B")).await;
        let b = lookup(&t, &pdq, &format!("&seed={seed}&banks=BANK_B")).await;
        assert_eq!(a, b, "same seed, same answer");
        if a.get("BANK_B").is_some() {
            hits += 1;
        }
    }
    assert!(
        (10..=50).contains(&hits),
        "{hits} of 60 seeds matched at ratio 0.5"
    );
}

#[tokio::test]
async fn lookup_by_upload_and_url_and_role_checks() {
    let origin = Origin::start().await;
    let t = TestServer::start(|c| {
        c.allow_private_targets = true;
        c.matcher_poll_interval_ms = 50;
    })
    .await;
    create_bank(&t, "TEST_BANK").await;
    let form = Form::new().part("photo", Part::bytes(image_bytes()).file_name("a.bmp"));
    let got = t
        .send_json(
            t.client
                .post(t.url("/c/bank/TEST_BANK/content"))
                .multipart(form),
        )
        .await;
    let id = got.1["id"].as_i64().unwrap();
    let pdq = pdq_of(&image_bytes());
    wait_lookup(&t, &pdq, "", |v| v.get("TEST_BANK").is_some()).await;

    let form = Form::new().part("photo", Part::bytes(image_bytes()).file_name("a.bmp"));
    let got = t
        .send_json(t.client.post(t.url("/m/lookup")).multipart(form))
        .await;
    assert_eq!(
        got,
        (
            StatusCode::OK,
            json!({"pdq": {"TEST_BANK": [{"bank_content_id": id, "distance": "0"}]}})
        )
    );
    let form = Form::new().part("video", Part::bytes(image_bytes()).file_name("a.mp4"));
    let got = t
        .send_json(t.client.post(t.url("/m/lookup")).multipart(form))
        .await;
    assert_eq!(got, (StatusCode::OK, json!({"video_md5": {}})));
    let (status, got) = t
        .get_json(&format!("/m/lookup?url={}", origin.url("/image.jpg")))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        got,
        json!({"pdq": {"TEST_BANK": [{"bank_content_id": id, "distance": "0"}]}})
    );
    let (_, got) = t
        .get_json(&format!(
            "/m/lookup?url={}&signal_type=pdq",
            origin.url("/image.jpg")
        ))
        .await;
    assert_eq!(
        got,
        json!({"TEST_BANK": [{"bank_content_id": id, "distance": "0"}]})
    );
    let (_, got) = t
        .get_json(&format!(
            "/m/lookup?url={}&signal_type=video_md5",
            origin.url("/image.jpg")
        ))
        .await;
    assert_eq!(got, json!({}));

    let no_hasher = TestServer::start(|c| c.role_hasher = false).await;
    let got = no_hasher
        .get_json("/m/lookup?url=http://example.com/a.jpg")
        .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "Hashing is disabled, missing role",
    );
    let form = Form::new().part("file", Part::bytes(image_bytes()).file_name("a.bmp"));
    let got = no_hasher
        .send_json(
            no_hasher
                .client
                .post(no_hasher.url("/m/lookup"))
                .multipart(form),
        )
        .await;
    assert_error(
        &got,
        StatusCode::FORBIDDEN,
        "Hashing is disabled, missing role",
    );
}

#[tokio::test]
async fn compare_every_signal_type() {
    let t = TestServer::start(|_| {}).await;
    let a = pdq_of(&checkerboard(8));
    let b9 = pdq_with_bits_flipped(&a, 9);
    let b31 = pdq_with_bits_flipped(&a, 31);
    let b32 = pdq_with_bits_flipped(&a, 32);
    let post = |body: Value| t.send_json(t.client.post(t.url("/m/compare")).json(&body));
    assert_eq!(
        post(json!({"pdq": [a, b9]})).await,
        (StatusCode::OK, json!({"pdq": [true, {"distance": 9}]}))
    );
    assert_eq!(
        post(json!({"pdq": [a, b31]})).await.1,
        json!({"pdq": [true, {"distance": 31}]})
    );
    assert_eq!(
        post(json!({"pdq": [a, b32]})).await.1,
        json!({"pdq": [false, {"distance": 32}]})
    );
    let md5 = "d41d8cd98f00b204e9800998ecf8427e";
    assert_eq!(
        post(json!({"video_md5": [md5, md5.to_uppercase()]})).await,
        (
            StatusCode::OK,
            json!({"video_md5": [true, {"distance": 0}]})
        )
    );
    assert_eq!(
        post(json!({"video_md5": [md5, "0".repeat(32)]})).await.1,
        json!({"video_md5": [false, {"distance": 1}]})
    );
    assert_eq!(post(json!({})).await, (StatusCode::OK, json!({})));
    assert_error(
        &post(json!(["pdq"])).await,
        StatusCode::BAD_REQUEST,
        "Request input was not a dict",
    );
    assert_error(
        &post(json!({"pdq": "x"})).await,
        StatusCode::BAD_REQUEST,
        "was not a list",
    );
    assert_error(
        &post(json!({"pdq": []})).await,
        StatusCode::BAD_REQUEST,
        "exactly 2",
    );
    assert_error(
        &post(json!({"pdq": [a, a, a]})).await,
        StatusCode::BAD_REQUEST,
        "exactly 2",
    );
    assert_error(
        &post(json!({"pdq": ["x", a]})).await,
        StatusCode::BAD_REQUEST,
        "Invalid pdq hash",
    );
    assert_error(
        &post(json!({"nope": [a, a]})).await,
        StatusCode::BAD_REQUEST,
        "No such SignalType",
    );
    let got = t
        .send_json(t.client.post(t.url("/m/compare")).body("x"))
        .await;
    assert_eq!(got.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn signal_and_content_types() {
    let t = TestServer::start(|c| c.matcher_poll_interval_ms = 50).await;
    assert_eq!(
        t.get_json("/c/signal_type").await,
        (
            StatusCode::OK,
            json!([{"name": "pdq", "enabled_ratio": 1.0}, {"name": "video_md5", "enabled_ratio": 1.0}])
        )
    );
    assert_eq!(
        t.get_json("/c/content_type").await,
        (
            StatusCode::OK,
            json!([{"name": "photo", "enabled": true}, {"name": "video", "enabled": true}])
        )
    );
    let put = |name: &str, body: Value| {
        t.client
            .put(t.url(&format!("/c/signal_type/{name}")))
            .json(&body)
            .send()
    };
    assert_eq!(
        put("pdq", json!({"enabled_ratio": "0.5"}))
            .await
            .unwrap()
            .status(),
        204
    );
    let (_, list) = t.get_json("/c/signal_type").await;
    assert_eq!(list[0], json!({"name": "pdq", "enabled_ratio": 0.5}));
    for (body, needle) in [
        (json!({}), "enabled_ratio is required"),
        (json!({"enabled_ratio": "lots"}), "Invalid float: 'lots'"),
        (json!({"enabled_ratio": 1.5}), "between 0 and 1"),
    ] {
        let resp = put("pdq", body).await.unwrap();
        assert_eq!(resp.status(), 400);
        assert!(resp.text().await.unwrap().contains(needle));
    }
    assert_eq!(
        put("nope", json!({"enabled_ratio": 1}))
            .await
            .unwrap()
            .status(),
        404
    );

    // Ratio 0 really disables the type: hashing and lookups refuse it.
    assert_eq!(
        put("pdq", json!({"enabled_ratio": 0}))
            .await
            .unwrap()
            .status(),
        204
    );
    let pdq = pdq_of(&checkerboard(8));
    let took = wait_until(FRESHNESS, || async {
        t.get_json(&format!("/m/raw_lookup?signal_type=pdq&signal={pdq}"))
            .await
            .0
            == StatusCode::BAD_REQUEST
    })
    .await;
    assert!(took.is_some());
    let got = t
        .get_json(&format!("/m/raw_lookup?signal_type=pdq&signal={pdq}"))
        .await;
    assert_error(
        &got,
        StatusCode::BAD_REQUEST,
        "SignalType 'pdq' is not enabled",
    );
    let form = Form::new().part("photo", Part::bytes(checkerboard(8)).file_name("a.bmp"));
    let got = t
        .send_json(t.client.post(t.url("/h/hash")).multipart(form))
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "no enabled signal type");

    let (status, idx) = t.get_json("/c/signal_type/index").await;
    assert_eq!(status, StatusCode::OK);
    for key in [
        "db_size",
        "index_size",
        "index_out_of_date",
        "newest_db_item",
        "index_built_to",
    ] {
        assert!(idx["pdq"].get(key).is_some(), "{key} in {idx}");
    }
    assert_error(
        &t.get_json("/c/signal_type/index?signal_type=nope").await,
        StatusCode::BAD_REQUEST,
        "No such signal type 'nope'",
    );
}

#[tokio::test]
async fn exchanges_with_the_sample_api() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |_| {}).await;
        let (_, apis) = t.get_json("/c/exchanges/apis").await;
        let apis: Vec<String> = serde_json::from_value(apis).unwrap();
        assert!(
            apis.contains(&"sample".to_owned()) && apis.contains(&"fb_threatexchange".to_owned())
        );

        let tr = &t;
        let auth = |api: &str| {
            let path = format!("/c/exchanges/api/{api}");
            async move { tr.get_json(&path).await }
        };
        assert_eq!(
            auth("sample").await.1,
            json!({"supports_authentification": false, "has_set_authentification": false})
        );
        assert_eq!(
            auth("fb_threatexchange").await.1,
            json!({"supports_authentification": true, "has_set_authentification": false})
        );
        let set = |api: &str, body: Value| {
            t.send_json(
                t.client
                    .post(t.url(&format!("/c/exchanges/api/{api}")))
                    .json(&body),
            )
        };
        let got = set("fb_threatexchange", json!({"credential_json": {"api_token": "1234567890|0123456789abcdef0123456789abcdef"}})).await;
        assert_eq!(
            got,
            (
                StatusCode::OK,
                json!({"supports_authentification": true, "has_set_authentification": true})
            )
        );
        assert_eq!(
            auth("fb_threatexchange").await.1["has_set_authentification"],
            json!(true)
        );
        let got = set("fb_threatexchange", json!({"credential_json": {}})).await;
        assert_eq!(got.1["has_set_authentification"], json!(false));
        assert_error(
            &set("sample", json!({"credential_json": {"x": 1}})).await,
            StatusCode::BAD_REQUEST,
            "does not take credentials",
        );
        assert_error(
            &set(
                "fb_threatexchange",
                json!({"credential_json": {"wrong": 1}}),
            )
            .await,
            StatusCode::BAD_REQUEST,
            "Invalid credentials",
        );
        assert_error(
            &set("nope", json!({})).await,
            StatusCode::BAD_REQUEST,
            "no such Exchange API 'nope'",
        );
        assert_error(
            &t.send_json(t.client.post(t.url("/c/exchanges/api/sample")).body("[1]"))
                .await,
            StatusCode::BAD_REQUEST,
            "json object payload",
        );

        let (status, schema) = t.get_json("/c/exchanges/api/sample/schema").await;
        assert_eq!(status, StatusCode::OK);
        assert!(schema["config_schema"]["fields"].is_array());
        assert!(schema["credentials_schema"].is_null());
        let (_, schema) = t
            .get_json("/c/exchanges/api/fb_threatexchange/schema")
            .await;
        let fields = schema["config_schema"]["fields"].as_array().unwrap();
        let pg = fields
            .iter()
            .find(|f| f["name"] == "privacy_group")
            .unwrap();
        assert_eq!(pg["type"], "number");
        assert_eq!(pg["required"], true);
        assert_eq!(
            schema["credentials_schema"]["fields"][0]["name"],
            "api_token"
        );
        assert_error(
            &t.get_json("/c/exchanges/api/nope/schema").await,
            StatusCode::NOT_FOUND,
            "Exchange API 'nope' not found",
        );

        // Create, list, get, put, status, delete.
        let got = t
            .send_json(t.client.delete(t.url("/c/exchange/UNKNOWN")))
            .await;
        assert_eq!(
            got,
            (StatusCode::OK, json!({"message": "Exchange deleted"}))
        );
        let create = |body: Value| t.send_json(t.client.post(t.url("/c/exchanges")).json(&body));
        let got = create(json!({"bank": "FOO_EXCHANGE", "api": "sample"})).await;
        assert_eq!(
            got,
            (
                StatusCode::CREATED,
                json!({"message": "Created successfully"})
            )
        );
        assert_eq!(
            create(json!({"bank": "FOO_EXCHANGE", "api": "sample"}))
                .await
                .0,
            StatusCode::CONFLICT
        );
        assert_error(
            &create(json!({"api": "sample"})).await,
            StatusCode::BAD_REQUEST,
            "bank is required",
        );
        assert_error(
            &create(json!({"bank": "1ABC", "api": "sample"})).await,
            StatusCode::BAD_REQUEST,
            "must match",
        );
        assert_error(
            &create(json!({"bank": "X_Y"})).await,
            StatusCode::BAD_REQUEST,
            "api_type",
        );
        assert_error(
            &create(json!({"bank": "X_Y", "api": "nope"})).await,
            StatusCode::BAD_REQUEST,
            "No such exchange type 'nope'",
        );
        assert_error(
            &create(json!({"bank": "X_Y", "api": "sample", "api_json": 3})).await,
            StatusCode::BAD_REQUEST,
            "must be object",
        );
        assert_error(
            &create(json!({"bank": "X_Y", "api": "fb_threatexchange", "api_json": {}})).await,
            StatusCode::BAD_REQUEST,
            "Failed to parse `api_json`",
        );

        assert_eq!(t.get_json("/c/exchanges").await.1, json!(["FOO_EXCHANGE"]));
        let (_, banks) = t.get_json("/c/banks").await;
        assert_eq!(
            banks,
            json!([{"name": "FOO_EXCHANGE", "matching_enabled_ratio": 1.0}])
        );
        let (status, x) = t.get_json("/c/exchange/FOO_EXCHANGE").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            (x["name"].clone(), x["api"].clone(), x["enabled"].clone()),
            (json!("FOO_EXCHANGE"), json!("sample"), json!(true))
        );
        assert_error(
            &t.get_json("/c/exchange/NOPE").await,
            StatusCode::NOT_FOUND,
            "Exchange 'NOPE' not found",
        );
        let got = t
            .send_json(
                t.client
                    .put(t.url("/c/exchange/FOO_EXCHANGE"))
                    .json(&json!({"enabled": false})),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK);
        assert_eq!(got.1["enabled"], json!(false), "PUT returns the config");
        assert_eq!(got.1["name"], json!("FOO_EXCHANGE"));
        let got = t
            .send_json(
                t.client
                    .put(t.url("/c/exchange/FOO_EXCHANGE"))
                    .json(&json!({"enabled": "no"})),
            )
            .await;
        assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, st) = t.get_json("/c/exchange/FOO_EXCHANGE/status").await;
        assert_eq!(status, StatusCode::OK);
        for key in [
            "checkpoint_ts",
            "running_fetch_start_ts",
            "last_fetch_complete_ts",
            "last_fetch_succeeded",
            "up_to_date",
            "fetched_items",
        ] {
            assert!(st.get(key).is_some(), "{key} in {st}");
        }
        assert_error(
            &t.get_json("/c/exchange/NOPE/status").await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        // The exchange's bank cannot be deleted on its own.
        let got = t
            .send_json(t.client.delete(t.url("/c/bank/FOO_EXCHANGE")))
            .await;
        assert_eq!(got.0, StatusCode::CONFLICT, "{}", got.1);
        let got = t
            .send_json(t.client.delete(t.url("/c/exchange/FOO_EXCHANGE")))
            .await;
        assert_eq!(
            got,
            (StatusCode::OK, json!({"message": "Exchange deleted"}))
        );
        assert_eq!(t.get_json("/c/banks").await.1, json!([]));

        // Bank-name clash is a 409, not a 500.
        create_bank(&t, "TAKEN").await;
        assert_eq!(
            create(json!({"bank": "TAKEN", "api": "sample"})).await.0,
            StatusCode::CONFLICT
        );
        t.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn dev_endpoints_only_outside_production() {
    let t = TestServer::start(|_| {}).await;
    let got = t
        .send_json(t.client.post(t.url("/dev/setup_sample_example")))
        .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    let got = t
        .send_json(t.client.post(t.url("/dev/setup_sample_example")))
        .await;
    assert_eq!(got.0, StatusCode::CONFLICT);
    assert_eq!(
        t.get_json("/dev/setup_sample_example").await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let prod = TestServer::start(|c| c.production = true).await;
    let got = prod
        .send_json(prod.client.post(prod.url("/dev/setup_sample_example")))
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn two_servers_on_one_postgres() {
    if std::env::var("OMM_TEST_DATABASE_URL").is_err() {
        eprintln!("OMM_TEST_DATABASE_URL not set: skipped");
        return;
    }
    let schema = common::unique_schema();
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let store_a = common::open_store(Backend::Postgres, dir_a.path(), &schema).await;
    let store_b = common::open_store(Backend::Postgres, dir_b.path(), &schema).await;
    let dir_a = common::TestDir::new(dir_a, Some(schema));
    let a =
        TestServer::start_with_store(store_a, dir_a, |c| c.matcher_poll_interval_ms = 100).await;
    let b =
        TestServer::start_with_store(store_b, dir_b, |c| c.matcher_poll_interval_ms = 100).await;
    create_bank(&a, "SHARED").await;
    let pdq = pdq_of(&checkerboard(8));
    let got = add_signal(&a, "SHARED", json!({ "pdq": pdq })).await;
    let id = got.1["id"].clone();
    wait_lookup(&b, &pdq, "", |v| v["SHARED"][0]["bank_content_id"] == id).await;
}

/// `task_fetcher`: an exchange created through the API is fetched by the server's background
/// task (no `omm fetch`, no restart), its status says so, and its hashes match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_fetcher_imports_a_sample_exchange() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| {
            c.task_fetcher = true;
            c.task_fetcher_interval_seconds = 1;
            c.matcher_poll_interval_ms = 50;
        })
        .await;
        let got = t
            .send_json(
                t.client
                    .post(t.url("/c/exchanges"))
                    .json(&json!({"bank": "SAMPLE_FEED", "api": "sample"})),
            )
            .await;
        assert_eq!(got.0, StatusCode::CREATED, "{backend:?}: {}", got.1);

        // One of the sample exchange's PDQ examples (bridge-mods/aaa-orig.jpg).
        let pdq = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22";
        let waited = wait_until(Duration::from_secs(30), || async {
            lookup(&t, pdq, "&bypass_coinflip=true")
                .await
                .get("SAMPLE_FEED")
                .is_some_and(|hits| hits.as_array().is_some_and(|a| !a.is_empty()))
        })
        .await;
        assert!(
            waited.is_some(),
            "{backend:?}: the background fetcher did not import the sample exchange"
        );

        let (status, st) = t.get_json("/c/exchange/SAMPLE_FEED/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(st["last_fetch_succeeded"], json!(true), "{backend:?}: {st}");
        assert!(
            st["fetched_items"].as_i64().is_some_and(|n| n > 0),
            "{backend:?}: {st}"
        );
        t.server.shutdown().await.unwrap();
    }
}
