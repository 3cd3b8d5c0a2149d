//! End-to-end: the matcher's snapshots across restarts of `omm serve`, on SQLite and, when
//! `OMM_TEST_DATABASE_URL` is set, on PostgreSQL. A restart loads the snapshot written at
//! shutdown and replays what changed while the server was down; a corrupt or stale snapshot is
//! discarded and the matcher rebuilds from the store.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;
use common::{backends, TestServer};
use omm_store::{ContentUpdate, NewContent};
use serde_json::{json, Value};

/// `n` PDQ hashes far apart from each other (pseudo-random, fixed).
fn distinct_pdqs(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            (0..32)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    format!("{:02x}", (x >> 56) as u8)
                })
                .collect()
        })
        .collect()
}

/// `pdq` with its first `bits` bits flipped (still a match at distance `bits`).
fn near(pdq: &str, bits: usize) -> String {
    let mut bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&pdq[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for b in 0..bits {
        bytes[b / 8] ^= 1 << (b % 8);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn create_bank(t: &TestServer, name: &str) {
    let got = t
        .send_json(
            t.client
                .post(t.url("/c/banks"))
                .json(&json!({"name": name})),
        )
        .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

async fn add_pdq(t: &TestServer, bank: &str, pdq: &str) -> i64 {
    let got = t
        .send_json(
            t.client
                .post(t.url(&format!("/c/bank/{bank}/signal")))
                .json(&json!({ "pdq": pdq })),
        )
        .await;
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    got.1["id"].as_i64().expect("content id")
}

/// Filtered and raw lookup answers of `pdq`.
async fn answers(t: &TestServer, pdq: &str) -> (Value, Value) {
    let (s1, lookup) = t
        .get_json(&format!("/m/lookup?signal_type=pdq&signal={pdq}"))
        .await;
    assert_eq!(s1, StatusCode::OK, "{lookup}");
    let (s2, raw) = t
        .get_json(&format!(
            "/m/raw_lookup?signal_type=pdq&signal={pdq}&include_distance=true"
        ))
        .await;
    assert_eq!(s2, StatusCode::OK, "{raw}");
    (lookup, raw)
}

fn ids_of(lookup: &Value, bank: &str) -> Vec<i64> {
    lookup[bank]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["bank_content_id"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the matcher has applied every change in the store.
async fn settle(t: &TestServer) {
    let seq = t.server.state().store.current_seq().await.expect("seq");
    assert!(
        t.server
            .state()
            .matcher
            .wait_for_seq(seq, std::time::Duration::from_secs(20))
            .await,
        "matcher did not catch up"
    );
}

fn loaded_from_snapshot(t: &TestServer) -> bool {
    t.server
        .state()
        .matcher
        .status()
        .load
        .expect("loaded")
        .from_snapshot
}

fn snapshot_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("matcher-snapshot")
}

#[tokio::test]
async fn restart_loads_the_snapshot_and_replays_changes_made_while_down() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| c.matcher_poll_interval_ms = 50).await;
        create_bank(&t, "SNAP").await;
        let pdqs = distinct_pdqs(5, 7);
        let mut ids = Vec::new();
        for p in &pdqs[..4] {
            ids.push(add_pdq(&t, "SNAP", p).await);
        }
        let got = t
            .send_json(
                t.client
                    .put(t.url(&format!("/c/bank/SNAP/content/{}", ids[1])))
                    .json(&json!({"disable_until_ts": 0})),
            )
            .await;
        assert_eq!(got.0, StatusCode::OK, "{}", got.1);
        settle(&t).await;
        let queries: Vec<String> = pdqs.iter().flat_map(|p| [p.clone(), near(p, 9)]).collect();
        let mut before = BTreeMap::new();
        for q in &queries {
            before.insert(q.clone(), answers(&t, q).await);
        }
        assert_eq!(ids_of(&before[&pdqs[0]].0, "SNAP"), vec![ids[0]]);
        assert_eq!(before[&pdqs[1]].0, json!({}), "disabled content");

        let store = t.server.state().store.clone();
        let dir = t.stop().await;
        assert!(
            snapshot_dir(dir.path()).join("matcher-state.bin").is_file(),
            "{backend:?}: no snapshot written at shutdown"
        );

        // Unchanged restart: loaded from the snapshot, same answers for every query.
        let t =
            TestServer::start_with_store(store.clone(), dir, |c| c.matcher_poll_interval_ms = 50)
                .await;
        assert!(loaded_from_snapshot(&t), "{backend:?}: not from snapshot");
        for q in &queries {
            assert_eq!(answers(&t, q).await, before[q], "{backend:?}: query {q}");
        }
        let dir = t.stop().await;

        // Changes while the server is down, straight into the store.
        store.delete_content("SNAP", ids[0]).await.expect("delete");
        store
            .update_content(
                "SNAP",
                ids[1],
                &ContentUpdate {
                    disable_until_ts: Some(omm_store::CONTENT_ENABLED),
                    ..ContentUpdate::default()
                },
            )
            .await
            .expect("enable");
        let added = store
            .create_content(
                "SNAP",
                &NewContent::with_signals(BTreeMap::from([("pdq".into(), pdqs[4].clone())])),
            )
            .await
            .expect("add")
            .id;

        // The matcher is ready only once it replayed the log: no waiting needed.
        let t =
            TestServer::start_with_store(store.clone(), dir, |c| c.matcher_poll_interval_ms = 50)
                .await;
        assert!(loaded_from_snapshot(&t), "{backend:?}: not from snapshot");
        let (lookup, raw) = answers(&t, &pdqs[0]).await;
        assert_eq!(
            (lookup, raw),
            (json!({}), json!({"matches": []})),
            "deleted"
        );
        assert_eq!(ids_of(&answers(&t, &pdqs[1]).await.0, "SNAP"), vec![ids[1]]);
        assert_eq!(
            ids_of(&answers(&t, &near(&pdqs[4], 9)).await.0, "SNAP"),
            vec![added]
        );
        for q in [&pdqs[2], &pdqs[3]] {
            assert_eq!(answers(&t, q).await, before[q], "{backend:?}: query {q}");
        }
        let (_, status) = t.get_json("/m/index/status?signal_type=pdq").await;
        assert_eq!(status["pdq"]["size"], json!(4), "{status}");
        t.server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn corrupt_or_stale_snapshot_is_discarded_and_rebuilt_from_the_store() {
    for backend in backends() {
        let t = TestServer::start_on(backend, |c| c.matcher_poll_interval_ms = 50).await;
        create_bank(&t, "SNAP").await;
        let pdqs = distinct_pdqs(4, 11);
        let mut ids = Vec::new();
        for p in &pdqs[..3] {
            ids.push(add_pdq(&t, "SNAP", p).await);
        }
        settle(&t).await;
        let store = t.server.state().store.clone();
        let dir = t.stop().await;

        // Flip one byte in the middle of the PDQ index snapshot.
        let file = snapshot_dir(dir.path()).join("index-pdq.snap");
        let mut bytes = std::fs::read(&file).expect("index snapshot written");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5a;
        std::fs::write(&file, &bytes).unwrap();
        let t =
            TestServer::start_with_store(store.clone(), dir, |c| c.matcher_poll_interval_ms = 50)
                .await;
        assert!(
            !loaded_from_snapshot(&t),
            "{backend:?}: corrupt snapshot used"
        );
        assert_eq!(t.get("/status").await.0, StatusCode::OK);
        for (p, id) in pdqs.iter().zip(&ids) {
            assert_eq!(ids_of(&answers(&t, &near(p, 9)).await.0, "SNAP"), vec![*id]);
        }
        let dir = t.stop().await;

        // A state file cut short.
        let state = snapshot_dir(dir.path()).join("matcher-state.bin");
        let len = std::fs::metadata(&state).expect("state file").len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&state)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        let t =
            TestServer::start_with_store(store.clone(), dir, |c| c.matcher_poll_interval_ms = 50)
                .await;
        assert!(
            !loaded_from_snapshot(&t),
            "{backend:?}: truncated snapshot used"
        );
        assert_eq!(ids_of(&answers(&t, &pdqs[0]).await.0, "SNAP"), vec![ids[0]]);
        let dir = t.stop().await;

        // Stale: the change log was pruned past the snapshot's watermark while the server was
        // down, so replaying it would miss changes.
        let added = store
            .create_content(
                "SNAP",
                &NewContent::with_signals(BTreeMap::from([("pdq".into(), pdqs[3].clone())])),
            )
            .await
            .expect("add")
            .id;
        store.delete_content("SNAP", ids[1]).await.expect("delete");
        let seq = store.current_seq().await.unwrap();
        store.prune_changes(seq).await.expect("prune");
        let t =
            TestServer::start_with_store(store.clone(), dir, |c| c.matcher_poll_interval_ms = 50)
                .await;
        assert!(
            !loaded_from_snapshot(&t),
            "{backend:?}: stale snapshot used"
        );
        assert_eq!(ids_of(&answers(&t, &pdqs[3]).await.0, "SNAP"), vec![added]);
        assert_eq!(
            answers(&t, &pdqs[1]).await.0,
            json!({}),
            "deleted while down"
        );
        assert_eq!(ids_of(&answers(&t, &pdqs[2]).await.0, "SNAP"), vec![ids[2]]);
        t.server.shutdown().await.unwrap();
    }
}
