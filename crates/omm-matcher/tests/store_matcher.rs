//! The matcher against a real store (SQLite always, PostgreSQL when `OMM_TEST_DATABASE_URL` is
//! set): freshness of every kind of change, snapshots, and a property test against a
//! brute-force evaluation of the store's current state.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use omm_matcher::{Coin, LookupError, LookupOptions, Matcher, MatcherConfig, RawLookupOptions};
use omm_store::{BankUpdate, ContentUpdate, ExchangeUpdate, NewContent, NewExchange, Store};
use proptest::prelude::*;
use rand::Rng;

const DEADLINE: Duration = Duration::from_secs(20);

fn bypass() -> LookupOptions {
    LookupOptions {
        bypass_coinflip: true,
        ..Default::default()
    }
}

fn matched_ids(m: &Matcher, pdq: &str) -> Vec<i64> {
    m.lookup("pdq", pdq, &bypass())
        .map(|v| v.into_iter().map(|x| x.content_id).collect())
        .unwrap_or_default()
}

async fn freshness_scenario(store: Store) {
    let mut r = rng(1);
    bank(&store, "A", 1.0).await;
    let h1 = random_pdq(&mut r);
    let c1 = add(&store, "A", &h1).await;

    let m = Matcher::start(store.clone(), config()).expect("start");
    assert!(m.wait_ready(DEADLINE).await, "matcher never became ready");
    let near = flip_bits(&h1, 10, &mut r);
    let hits = m.lookup("pdq", &near, &bypass()).expect("lookup");
    assert_eq!(hits.len(), 1);
    assert_eq!(
        (hits[0].content_id, hits[0].distance, &*hits[0].bank_name),
        (c1, 10, "A")
    );
    // Beyond the threshold: nothing.
    assert!(matched_ids(&m, &flip_bits(&h1, 32, &mut r)).is_empty());

    // A new signal becomes matchable without restarting anything.
    let h2 = random_pdq(&mut r);
    let c2 = add(&store, "A", &h2).await;
    assert!(
        eventually(DEADLINE, || matched_ids(&m, &h2) == vec![c2]).await,
        "new hash not matched"
    );

    // Disable forever, then until a future time, then re-enable.
    for (ts, on) in [(0, false), (4_000_000_000, false), (1, true)] {
        store
            .update_content(
                "A",
                c2,
                &ContentUpdate {
                    disable_until_ts: Some(ts),
                    ..Default::default()
                },
            )
            .await
            .expect("update content");
        let want = if on { vec![c2] } else { vec![] };
        assert!(
            eventually(DEADLINE, || matched_ids(&m, &h2) == want).await,
            "disable_until_ts {ts}"
        );
        // raw_lookup ignores enable state.
        let raw = m
            .raw_lookup("pdq", &h2, &RawLookupOptions::default())
            .expect("raw");
        assert_eq!(
            raw.iter().map(|h| h.content_id).collect::<Vec<_>>(),
            vec![c2]
        );
    }

    // Ratio 0 matches only with the coin flip bypassed (as upstream); 1 always matches.
    let ratio = |r: f64| BankUpdate {
        enabled_ratio: Some(r),
        ..Default::default()
    };
    store.update_bank("A", &ratio(0.0)).await.expect("ratio");
    let seeded = |s: &str| LookupOptions {
        seed: Some(s.to_string()),
        ..Default::default()
    };
    assert!(
        eventually(DEADLINE, || ["abc", "42", "x"].iter().all(|s| m
            .lookup("pdq", &h2, &seeded(s))
            .is_ok_and(|v| v.is_empty())))
        .await,
        "ratio 0"
    );
    assert_eq!(matched_ids(&m, &h2), vec![c2], "ratio 0, bypassed");
    store.update_bank("A", &ratio(1.0)).await.expect("ratio");
    assert!(
        eventually(DEADLINE, || matched_ids(&m, &h2) == vec![c2]).await,
        "ratio 1"
    );
    // A partial ratio follows the seeded coin exactly.
    store.update_bank("A", &ratio(0.5)).await.expect("ratio");
    assert!(
        eventually(DEADLINE, || (m.status().applied_seq >= 0) && {
            let seeds = ["abc", "42", "seed-7", ""];
            seeds.iter().all(|s| {
                let opts = LookupOptions {
                    seed: Some(s.to_string()),
                    ..Default::default()
                };
                let want = Coin::draw(Some(s), false).keeps(0.5);
                m.lookup("pdq", &h2, &opts)
                    .map(|v| !v.is_empty())
                    .unwrap_or(false)
                    == want
            })
        })
        .await
    );
    store.update_bank("A", &ratio(1.0)).await.expect("ratio");

    // Banks filter and renames.
    store
        .update_bank(
            "A",
            &BankUpdate {
                name: Some("RENAMED".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rename");
    assert!(
        eventually(DEADLINE, || {
            m.lookup("pdq", &h2, &bypass())
                .map(|v| v.len() == 1 && &*v[0].bank_name == "RENAMED")
                .unwrap_or(false)
        })
        .await
    );
    let only = |b: &str| RawLookupOptions {
        banks: Some(vec![b.to_string()]),
        ..Default::default()
    };
    assert_eq!(
        m.raw_lookup("pdq", &h2, &only("RENAMED"))
            .expect("raw")
            .len(),
        1
    );
    assert!(m
        .raw_lookup("pdq", &h2, &only("A"))
        .expect("raw")
        .is_empty());

    // Exchange banks: disabling the exchange stops matching, enabling restores it.
    let ex = store
        .create_exchange(&NewExchange {
            name: "EX".into(),
            api: "sample".into(),
            enabled: true,
            config: serde_json::json!({}),
        })
        .await
        .expect("exchange");
    let h3 = random_pdq(&mut r);
    let c3 = add(&store, "EX", &h3).await;
    assert!(
        eventually(DEADLINE, || {
            m.lookup("pdq", &h3, &bypass())
                .map(|v| {
                    v.len() == 1 && v[0].exchange.as_deref() == Some("EX") && v[0].content_id == c3
                })
                .unwrap_or(false)
        })
        .await,
        "exchange content not matched"
    );
    let enable = |on: bool| ExchangeUpdate {
        enabled: Some(on),
        ..Default::default()
    };
    store
        .update_exchange(&ex.name, &enable(false))
        .await
        .expect("disable exchange");
    assert!(
        eventually(DEADLINE, || matched_ids(&m, &h3).is_empty()).await,
        "disabled exchange"
    );
    store
        .update_exchange(&ex.name, &enable(true))
        .await
        .expect("enable exchange");
    assert!(eventually(DEADLINE, || matched_ids(&m, &h3) == vec![c3]).await);
    store
        .delete_exchange(&ex.name)
        .await
        .expect("delete exchange");
    assert!(
        eventually(DEADLINE, || {
            m.raw_lookup("pdq", &h3, &RawLookupOptions::default())
                .map(|v| v.is_empty())
                .unwrap_or(false)
        })
        .await,
        "deleted exchange content still in raw lookup"
    );

    // Signal type ratio 0 disables the type.
    store
        .set_signal_type_override("pdq", 0.0)
        .await
        .expect("override");
    assert!(
        eventually(DEADLINE, || {
            m.lookup("pdq", &h2, &bypass()) == Err(LookupError::SignalTypeDisabled("pdq".into()))
        })
        .await
    );
    store
        .delete_signal_type_override("pdq")
        .await
        .expect("override");
    assert!(eventually(DEADLINE, || matched_ids(&m, &h2) == vec![c2]).await);

    // Deleted content never matches, raw or filtered; a deleted bank takes its content along.
    store
        .delete_content("RENAMED", c2)
        .await
        .expect("delete content");
    assert!(
        eventually(DEADLINE, || {
            m.raw_lookup("pdq", &h2, &RawLookupOptions::default())
                .map(|v| v.is_empty())
                .unwrap_or(false)
        })
        .await
    );
    store.delete_bank("RENAMED").await.expect("delete bank");
    assert!(
        eventually(DEADLINE, || {
            m.raw_lookup("pdq", &h1, &RawLookupOptions::default())
                .map(|v| v.is_empty())
                .unwrap_or(false)
                && m.index_len("pdq") == Some(0)
        })
        .await,
        "deleted bank still matches"
    );

    // Errors.
    assert_eq!(
        m.lookup("nope", &h1, &bypass()),
        Err(LookupError::UnknownSignalType("nope".into()))
    );
    assert!(matches!(
        m.lookup("pdq", "xyz", &bypass()),
        Err(LookupError::InvalidSignal(_))
    ));
    assert!(matches!(
        m.lookup("video_md5", "00", &bypass()),
        Err(LookupError::InvalidSignal(_))
    ));

    // The conditions above can hold before the bank deletion's own log entry is applied.
    let seq = store.current_seq().await.expect("seq");
    assert!(m.wait_for_seq(seq, DEADLINE).await);
    let status = m.status();
    assert!(status.ready);
    assert_eq!(status.applied_seq, seq);
    m.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_of_every_change_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    freshness_scenario(sqlite_store(dir.path()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_of_every_change_postgres() {
    if let Some((store, schema)) = postgres_store("freshness").await {
        freshness_scenario(store.clone()).await;
        drop(store);
        drop_postgres_schema(&schema).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_types_match_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(dir.path()).await;
    bank(&store, "V", 1.0).await;
    let md5 = "0123456789ABCDEF0123456789abcdef";
    let mut s = BTreeMap::new();
    s.insert("video_md5".to_string(), md5.to_string());
    let c = store
        .create_content("V", &NewContent::with_signals(s))
        .await
        .expect("content")
        .id;
    let m = Matcher::start(store.clone(), config()).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    let hits = m
        .lookup("video_md5", &md5.to_lowercase(), &bypass())
        .expect("lookup");
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].content_id, hits[0].distance), (c, 0));
    assert!(m
        .lookup("video_md5", "0123456789abcdef0123456789abcdee", &bypass())
        .expect("lookup")
        .is_empty());
    m.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_snapshot_equals_rebuild_and_corruption_rebuilds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    let store = sqlite_store(dir.path()).await;
    let mut r = rng(7);
    bank(&store, "A", 1.0).await;
    bank(&store, "B", 0.25).await;
    let mut hashes = Vec::new();
    for i in 0..300 {
        let h = random_pdq(&mut r);
        add(&store, if i % 3 == 0 { "B" } else { "A" }, &h).await;
        hashes.push(h);
    }
    let cfg = MatcherConfig {
        snapshot_dir: Some(snaps.clone()),
        ..config()
    };
    let m1 = Matcher::start(store.clone(), cfg.clone()).expect("start");
    assert!(m1.wait_ready(DEADLINE).await);
    assert!(!m1.status().load.expect("load info").from_snapshot);
    m1.shutdown().await.expect("shutdown writes a snapshot");

    // Changes after the snapshot: tailed from its watermark on restart.
    for i in 0..50 {
        let h = random_pdq(&mut r);
        add(&store, "A", &h).await;
        hashes.push(h);
        if i % 10 == 0 {
            let id = store.list_content("A", 0, 1).await.expect("list")[0].id;
            store.delete_content("A", id).await.expect("delete");
        }
    }
    store
        .update_content(
            "B",
            store.list_content("B", 0, 1).await.expect("list")[0].id,
            &ContentUpdate {
                disable_until_ts: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("disable");

    let from_snapshot = Matcher::start(store.clone(), cfg.clone()).expect("start");
    let rebuilt = Matcher::start(store.clone(), config()).expect("start");
    assert!(from_snapshot.wait_ready(DEADLINE).await && rebuilt.wait_ready(DEADLINE).await);
    assert!(from_snapshot.status().load.expect("load").from_snapshot);
    let seq = store.current_seq().await.expect("seq");
    assert!(
        from_snapshot.wait_for_seq(seq, DEADLINE).await
            && rebuilt.wait_for_seq(seq, DEADLINE).await
    );
    assert_eq!(from_snapshot.canonical_state(), rebuilt.canonical_state());
    assert_eq!(from_snapshot.index_len("pdq"), rebuilt.index_len("pdq"));
    for h in &hashes {
        let q = flip_bits(h, 5, &mut r);
        assert_eq!(
            from_snapshot.raw_lookup("pdq", &q, &Default::default()),
            rebuilt.raw_lookup("pdq", &q, &Default::default())
        );
        assert_eq!(
            from_snapshot.lookup("pdq", &q, &bypass()),
            rebuilt.lookup("pdq", &q, &bypass())
        );
    }
    from_snapshot.shutdown().await.expect("shutdown");
    rebuilt.shutdown().await.expect("shutdown");

    // Corrupt the state file and an index file in turn: each restart rebuilds from the store.
    for victim in [
        omm_matcher::snapshot::state_path(&snaps),
        omm_matcher::snapshot::index_path(&snaps, "pdq"),
    ] {
        let mut bytes = std::fs::read(&victim).expect("read snapshot");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&victim, bytes).expect("corrupt");
        let m = Matcher::start(store.clone(), cfg.clone()).expect("start");
        assert!(m.wait_ready(DEADLINE).await);
        assert!(
            !m.status().load.expect("load").from_snapshot,
            "{victim:?} accepted"
        );
        assert_eq!(m.canonical_state(), {
            let fresh = Matcher::start(store.clone(), config()).expect("start");
            assert!(fresh.wait_ready(DEADLINE).await);
            let s = fresh.canonical_state();
            fresh.shutdown().await.expect("shutdown");
            s
        });
        m.shutdown().await.expect("shutdown rewrites the snapshot");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_older_than_the_pruned_log_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = MatcherConfig {
        snapshot_dir: Some(dir.path().join("snapshots")),
        ..config()
    };
    let store = sqlite_store(dir.path()).await;
    bank(&store, "A", 1.0).await;
    let mut r = rng(5);
    for _ in 0..20 {
        add(&store, "A", &random_pdq(&mut r)).await;
    }
    let m = Matcher::start(store.clone(), cfg.clone()).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    m.shutdown().await.expect("shutdown");
    // Changes after the snapshot, then the log is pruned past them.
    let late = random_pdq(&mut r);
    let late_id = add(&store, "A", &late).await;
    let seq = store.current_seq().await.expect("seq");
    store.prune_changes(seq).await.expect("prune");
    let m = Matcher::start(store.clone(), cfg).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    assert!(!m.status().load.expect("load").from_snapshot);
    assert_eq!(matched_ids(&m, &late), vec![late_id]);
    m.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_are_written_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    let cfg = MatcherConfig {
        snapshot_dir: Some(snaps.clone()),
        snapshot_interval: Some(Duration::from_millis(100)),
        poll_interval: Duration::from_millis(20),
        ..config()
    };
    let store = sqlite_store(dir.path()).await;
    bank(&store, "A", 1.0).await;
    let mut r = rng(9);
    add(&store, "A", &random_pdq(&mut r)).await;
    let m = Matcher::start(store.clone(), cfg.clone()).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    let state = omm_matcher::snapshot::state_path(&snaps);
    assert!(
        eventually(DEADLINE, || state.exists()).await,
        "no periodic snapshot"
    );
    // A later change is picked up by a later snapshot, and a restart loads it.
    let h = random_pdq(&mut r);
    let id = add(&store, "A", &h).await;
    let seq = store.current_seq().await.expect("seq");
    assert!(m.wait_for_seq(seq, DEADLINE).await);
    let written_at = std::fs::metadata(&state)
        .and_then(|m| m.modified())
        .expect("mtime");
    assert!(
        eventually(DEADLINE, || {
            std::fs::metadata(&state)
                .and_then(|m| m.modified())
                .map(|t| t > written_at)
                .unwrap_or(false)
        })
        .await
    );
    // Shutdown waits for an in-flight periodic snapshot and, nothing having changed since,
    // writes no other.
    m.shutdown().await.expect("shutdown");
    let m = Matcher::start(store.clone(), cfg).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    assert!(m.status().load.expect("load").from_snapshot);
    assert_eq!(matched_ids(&m, &h), vec![id]);
    m.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_another_database_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snapshots");
    let cfg = MatcherConfig {
        snapshot_dir: Some(snaps.clone()),
        ..config()
    };
    let store = sqlite_store(&dir.path().join("one")).await;
    bank(&store, "A", 1.0).await;
    let mut r = rng(3);
    for _ in 0..20 {
        add(&store, "A", &random_pdq(&mut r)).await;
    }
    let m = Matcher::start(store.clone(), cfg.clone()).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    m.shutdown().await.expect("shutdown");
    // A new, smaller database: the snapshot's watermark is ahead of its log.
    let other = sqlite_store(&dir.path().join("two")).await;
    bank(&other, "A", 1.0).await;
    let m = Matcher::start(other.clone(), cfg).expect("start");
    assert!(m.wait_ready(DEADLINE).await);
    assert!(!m.status().load.expect("load").from_snapshot);
    assert_eq!(m.index_len("pdq"), Some(0));
    m.shutdown().await.expect("shutdown");
}

// ------------------------------------------------------------------ property test

#[derive(Debug, Clone)]
enum Op {
    CreateBank(u8, u8),
    AddContent {
        bank: u8,
        base: u8,
        flips: u8,
        ts: u8,
        md5: bool,
    },
    SetContentTs(u8, u8),
    DeleteContent(u8),
    SetBankRatio(u8, u8),
    DeleteBank(u8),
    CreateExchange(u8),
    SetExchangeEnabled(u8, bool),
    DeleteExchange(u8),
    SetTypeRatio(Option<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..3u8, 0..3u8).prop_map(|(b, r)| Op::CreateBank(b, r)),
        4 => (0..5u8, 0..6u8, 0..40u8, 0..4u8, any::<bool>())
            .prop_map(|(bank, base, flips, ts, md5)| Op::AddContent { bank, base, flips, ts, md5 }),
        1 => (any::<u8>(), 0..4u8).prop_map(|(c, t)| Op::SetContentTs(c, t)),
        1 => any::<u8>().prop_map(Op::DeleteContent),
        1 => (0..5u8, 0..3u8).prop_map(|(b, r)| Op::SetBankRatio(b, r)),
        1 => (0..3u8).prop_map(Op::DeleteBank),
        2 => (0..2u8).prop_map(Op::CreateExchange),
        2 => (0..2u8, any::<bool>()).prop_map(|(e, on)| Op::SetExchangeEnabled(e, on)),
        1 => (0..2u8).prop_map(Op::DeleteExchange),
        1 => prop::option::of(0..3u8).prop_map(Op::SetTypeRatio),
    ]
}

const RATIOS: [f64; 3] = [0.0, 0.5, 1.0];

fn bank_name(i: u8) -> String {
    // Banks 0..3 are plain, 3..5 are the exchanges' banks.
    if i < 3 {
        format!("B{i}")
    } else {
        format!("EX{}", i - 3)
    }
}

fn ts_of(t: u8, now: i64) -> i64 {
    [1, 0, now - 3600, now + 3600][t as usize % 4]
}

async fn run_ops(store: &Store, ops: &[Op], bases: &[String], seed: u64) {
    let mut r = rng(seed);
    let now = omm_matcher_now();
    let mut contents: Vec<(String, i64)> = Vec::new();
    for op in ops {
        // Errors (unknown bank, duplicate name, ...) are part of the game: they change nothing.
        match op {
            Op::CreateBank(b, ratio) => {
                let _ = store
                    .create_bank(&omm_store::NewBank {
                        name: bank_name(*b),
                        enabled_ratio: RATIOS[*ratio as usize],
                    })
                    .await;
            }
            Op::AddContent {
                bank,
                base,
                flips,
                ts,
                md5,
            } => {
                let mut s = BTreeMap::new();
                s.insert(
                    "pdq".to_string(),
                    flip_bits(
                        &bases[*base as usize % bases.len()],
                        u32::from(*flips),
                        &mut r,
                    ),
                );
                if *md5 {
                    s.insert("video_md5".to_string(), format!("{:032x}", r.gen::<u128>()));
                }
                let mut c = NewContent::with_signals(s);
                c.disable_until_ts = ts_of(*ts, now);
                if let Ok(c) = store.create_content(&bank_name(*bank), &c).await {
                    contents.push((c.bank.name, c.id));
                }
            }
            Op::SetContentTs(i, t) => {
                if let Some((b, id)) = pick(&contents, *i) {
                    let _ = store
                        .update_content(
                            &b,
                            id,
                            &ContentUpdate {
                                disable_until_ts: Some(ts_of(*t, now)),
                                ..Default::default()
                            },
                        )
                        .await;
                }
            }
            Op::DeleteContent(i) => {
                if let Some((b, id)) = pick(&contents, *i) {
                    let _ = store.delete_content(&b, id).await;
                }
            }
            Op::SetBankRatio(b, ratio) => {
                let _ = store
                    .update_bank(
                        &bank_name(*b),
                        &BankUpdate {
                            enabled_ratio: Some(RATIOS[*ratio as usize]),
                            ..Default::default()
                        },
                    )
                    .await;
            }
            Op::DeleteBank(b) => {
                let _ = store.delete_bank(&bank_name(*b)).await;
            }
            Op::CreateExchange(e) => {
                let _ = store
                    .create_exchange(&NewExchange {
                        name: bank_name(3 + e),
                        api: "sample".into(),
                        enabled: true,
                        config: serde_json::json!({}),
                    })
                    .await;
            }
            Op::SetExchangeEnabled(e, on) => {
                let _ = store
                    .update_exchange(
                        &bank_name(3 + e),
                        &ExchangeUpdate {
                            enabled: Some(*on),
                            ..Default::default()
                        },
                    )
                    .await;
            }
            Op::DeleteExchange(e) => {
                let _ = store.delete_exchange(&bank_name(3 + e)).await;
            }
            Op::SetTypeRatio(ratio) => {
                let _ = match ratio {
                    Some(x) => {
                        store
                            .set_signal_type_override("pdq", RATIOS[*x as usize])
                            .await
                    }
                    None => store.delete_signal_type_override("pdq").await.map(|_| ()),
                };
            }
        }
    }
}

fn pick(contents: &[(String, i64)], i: u8) -> Option<(String, i64)> {
    (!contents.is_empty()).then(|| contents[i as usize % contents.len()].clone())
}

fn omm_matcher_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn check_against_oracle(m: &Matcher, store: &Store, queries: &[String]) {
    let (contents, ratios) = oracle(store).await;
    let type_ratio = ratios.get("pdq").copied().unwrap_or(1.0);
    let now = omm_matcher_now();
    for q in queries {
        let raw: Vec<(i64, u32)> = match m.raw_lookup("pdq", q, &Default::default()) {
            Ok(v) => v.into_iter().map(|h| (h.content_id, h.distance)).collect(),
            Err(LookupError::SignalTypeDisabled(_)) => {
                assert!(type_ratio <= 0.0);
                continue;
            }
            Err(e) => panic!("raw lookup: {e}"),
        };
        assert_eq!(raw, brute_raw(&contents, q), "raw lookup of {q}");
        for (seed, bypass) in [
            (None, true),
            (Some("abc"), false),
            (Some("42"), false),
            (Some("x"), false),
        ] {
            let opts = LookupOptions {
                seed: seed.map(str::to_string),
                bypass_coinflip: bypass,
                ..Default::default()
            };
            let got: Vec<(String, i64, u32)> = m
                .lookup("pdq", q, &opts)
                .expect("lookup")
                .into_iter()
                .map(|x| (x.bank_name.to_string(), x.content_id, x.distance))
                .collect();
            let coin = Coin::draw(seed, bypass);
            assert_eq!(
                got,
                brute_filtered(&contents, type_ratio, q, coin, now),
                "lookup of {q} ({seed:?})"
            );
        }
    }
}

/// One property case on `store`: a live-tailing matcher and a bulk-loaded one both equal the
/// brute-force evaluation of the store's final state.
async fn property_case(store: Store, ops: &[Op], seed: u64) {
    let mut r = rng(seed);
    let bases: Vec<String> = (0..6).map(|_| random_pdq(&mut r)).collect();
    // A matcher that tails every operation live ...
    let live = Matcher::start(store.clone(), config()).expect("start");
    assert!(live.wait_ready(DEADLINE).await);
    run_ops(&store, ops, &bases, seed).await;
    // ... and one that loads the final state in bulk.
    let fresh = Matcher::start(store.clone(), config()).expect("start");
    let seq = store.current_seq().await.expect("seq");
    assert!(live.wait_for_seq(seq, DEADLINE).await);
    assert!(fresh.wait_for_seq(seq, DEADLINE).await);
    let mut queries: Vec<String> = bases.clone();
    queries.extend(bases.iter().map(|b| flip_bits(b, 20, &mut r)));
    queries.push(random_pdq(&mut r));
    check_against_oracle(&live, &store, &queries).await;
    check_against_oracle(&fresh, &store, &queries).await;
    assert_eq!(live.canonical_state(), fresh.canonical_state());
    live.shutdown().await.expect("shutdown");
    fresh.shutdown().await.expect("shutdown");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn matcher_equals_brute_force_over_the_store(ops in prop::collection::vec(op(), 10..80), seed in any::<u64>()) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().expect("tempdir");
            property_case(sqlite_store(dir.path()).await, &ops, seed).await;
        });
    }
}

proptest! {
    // Each Postgres case creates and drops a schema: fewer cases.
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn matcher_equals_brute_force_over_the_store_postgres(ops in prop::collection::vec(op(), 10..80), seed in any::<u64>()) {
        runtime().block_on(async {
            if let Some((store, schema)) = postgres_store("property").await {
                property_case(store.clone(), &ops, seed).await;
                drop(store);
                drop_postgres_schema(&schema).await;
            }
        });
    }
}
