//! The behaviour suite, run against every backend (see `common`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::Harness;
use omm_store::*;
use serde_json::json;

fn bank(name: &str) -> NewBank {
    NewBank {
        name: name.into(),
        enabled_ratio: 1.0,
    }
}

fn sigs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect()
}

fn pdq(n: u64) -> String {
    format!("{:064x}", n)
}

fn record(key: &str, signals: &[(&str, &str)], meta: serde_json::Value) -> RecordUpdate {
    RecordUpdate {
        key: key.into(),
        record: Some(FetchedRecord {
            signals: signals
                .iter()
                .map(|(t, v)| (t.to_string(), v.to_string()))
                .collect(),
            metadata: meta,
        }),
    }
}

fn delete(key: &str) -> RecordUpdate {
    RecordUpdate {
        key: key.into(),
        record: None,
    }
}

fn batch(updates: Vec<RecordUpdate>, checkpoint: serde_json::Value) -> FetchBatch {
    FetchBatch {
        updates,
        checkpoint,
        checkpoint_ts: Some(100),
        up_to_date: false,
        guard: CheckpointGuard::Unchecked,
    }
}

fn new_exchange(name: &str) -> NewExchange {
    NewExchange {
        name: name.into(),
        api: "sample".into(),
        enabled: true,
        config: json!({"name": name, "api": "sample", "enabled": true}),
    }
}

async fn all_changes(s: &Store, after: i64) -> Vec<Change> {
    let mut out = Vec::new();
    let mut last = after;
    loop {
        let page = s.changes_since(last, 1000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        last = page.last().unwrap().seq;
        out.extend(page);
    }
}

both_backends!(
    banks_crud,
    bank_names,
    content_crud,
    content_scoped_to_bank,
    bank_delete_cascades,
    exchanges_crud_and_cascade,
    credentials,
    fetch_batch_semantics,
    bulk_batch_log_matches_rows,
    mixed_batch_new_and_existing_keys,
    checkpoint_atomicity,
    fetch_status_lifecycle,
    fetch_leases,
    signal_type_overrides,
    change_log_events,
    change_log_concurrent_writers,
    load_state_matches_replay,
    migrations_idempotent,
    subscribe_wakes,
    prune_keeps_tail,
);

async fn banks_crud(h: &Harness) {
    let s = &h.store;
    let a = s.create_bank(&bank("BANK_A")).await.unwrap();
    assert_eq!(a.name, "BANK_A");
    assert_eq!(a.enabled_ratio, 1.0);
    assert_eq!(a.exchange_id, None);
    let b = s
        .create_bank(&NewBank {
            name: "BANK_B".into(),
            enabled_ratio: 0.0,
        })
        .await
        .unwrap();
    assert_eq!(b.enabled_ratio, 0.0, "enabled=false at creation is kept");
    assert!(matches!(
        s.create_bank(&bank("BANK_A")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::Bank,
            ..
        })
    ));
    assert!(matches!(
        s.create_bank(&NewBank {
            name: "X".into(),
            enabled_ratio: f64::NAN
        })
        .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let names: Vec<_> = s
        .list_banks()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["BANK_A", "BANK_B"]);
    assert_eq!(s.get_bank("BANK_A").await.unwrap(), a);
    assert_eq!(s.get_bank_by_id(a.id).await.unwrap(), a);
    assert!(matches!(
        s.get_bank("NOPE").await,
        Err(StoreError::NotFound {
            entity: Entity::Bank,
            ..
        })
    ));

    let renamed = s
        .update_bank(
            "BANK_A",
            &BankUpdate {
                name: Some("BANK_C".into()),
                enabled_ratio: Some(0.25),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (renamed.id, renamed.name.as_str(), renamed.enabled_ratio),
        (a.id, "BANK_C", 0.25)
    );
    assert!(matches!(
        s.update_bank(
            "BANK_C",
            &BankUpdate {
                name: Some("BANK_B".into()),
                enabled_ratio: None
            }
        )
        .await,
        Err(StoreError::AlreadyExists {
            entity: Entity::Bank,
            ..
        })
    ));
    assert!(matches!(
        s.update_bank(
            "BANK_C",
            &BankUpdate {
                name: Some("bad".into()),
                enabled_ratio: None
            }
        )
        .await,
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        s.update_bank("BANK_A", &BankUpdate::default()).await,
        Err(StoreError::NotFound { .. })
    ));
    // Empty update is a no-op returning the state.
    assert_eq!(
        s.update_bank("BANK_C", &BankUpdate::default())
            .await
            .unwrap(),
        renamed
    );
    assert!(s.delete_bank("BANK_C").await.unwrap());
    assert!(!s.delete_bank("BANK_C").await.unwrap());
    assert_eq!(s.list_banks().await.unwrap().len(), 1);
}

async fn bank_names(h: &Harness) {
    let s = &h.store;
    for ok in ["_BANK", "A", "A1_B2", "_", "Z9"] {
        s.create_bank(&bank(ok))
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let long = "A".repeat(256);
    for bad in [
        "",
        "01_X",
        "lower",
        "A-B",
        "A B",
        "Ä",
        "BANK\n",
        long.as_str(),
    ] {
        assert!(
            matches!(
                s.create_bank(&bank(bad)).await,
                Err(StoreError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            s.create_exchange(&new_exchange(bad)).await,
            Err(StoreError::InvalidName(_))
        ));
    }
    s.create_bank(&bank(&"A".repeat(255))).await.unwrap();
}

async fn content_crud(h: &Harness) {
    let s = &h.store;
    let b = s.create_bank(&bank("BANK")).await.unwrap();
    let c = s
        .create_content(
            "BANK",
            &NewContent {
                signals: sigs(&[
                    ("pdq", &pdq(1)),
                    ("video_md5", "d41d8cd98f00b204e9800998ecf8427e"),
                ]),
                disable_until_ts: CONTENT_ENABLED,
                note: Some("hello".into()),
                metadata: Some(json!({"content_id": "x1", "json": {"k": [1, 2]}})),
                original_media_uri: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(c.bank, b);
    assert_eq!(c.signals.len(), 2);
    assert_eq!(c.note.as_deref(), Some("hello"));
    assert_eq!(
        c.metadata,
        Some(json!({"content_id": "x1", "json": {"k": [1, 2]}}))
    );
    assert_eq!(c.provenance, None);
    assert_eq!(s.get_content("BANK", c.id).await.unwrap(), c);
    assert_eq!(s.get_signals(c.id).await.unwrap(), c.signals);
    assert!(s.get_signals(999_999).await.unwrap().is_empty());

    // 64-bit disable_until_ts (upstream's 32-bit column breaks in 2038).
    let far = 4_102_444_800i64; // 2100-01-01
    let u = s
        .update_content(
            "BANK",
            c.id,
            &ContentUpdate {
                disable_until_ts: Some(far),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(u.disable_until_ts, far);
    assert_eq!(u.note.as_deref(), Some("hello"), "absent fields untouched");
    let u = s
        .update_content(
            "BANK",
            c.id,
            &ContentUpdate {
                note: Some(None),
                metadata: Some(None),
                disable_until_ts: Some(0),
            },
        )
        .await
        .unwrap();
    assert_eq!((u.note, u.metadata, u.disable_until_ts), (None, None, 0));

    // Note length counts characters, not bytes.
    let note255: String = "é".repeat(255);
    s.update_content(
        "BANK",
        c.id,
        &ContentUpdate {
            note: Some(Some(note255.clone())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(matches!(
        s.update_content(
            "BANK",
            c.id,
            &ContentUpdate {
                note: Some(Some("x".repeat(256))),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.update_content(
            "BANK",
            c.id,
            &ContentUpdate {
                disable_until_ts: Some(-1),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::InvalidArgument(_))
    ));
    let mut long = NewContent::with_signals(sigs(&[("pdq", &pdq(2))]));
    long.note = Some("x".repeat(256));
    assert!(matches!(
        s.create_content("BANK", &long).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        s.create_content("NOPE", &NewContent::with_signals(sigs(&[])))
            .await,
        Err(StoreError::NotFound {
            entity: Entity::Bank,
            ..
        })
    ));
    assert_eq!(
        s.get_content("BANK", c.id).await.unwrap().note,
        Some(note255)
    );

    // Paging and listings.
    let mut ids = vec![c.id];
    for i in 0..5 {
        ids.push(
            s.create_content(
                "BANK",
                &NewContent::with_signals(sigs(&[("pdq", &pdq(10 + i))])),
            )
            .await
            .unwrap()
            .id,
        );
    }
    assert_eq!(s.count_content("BANK").await.unwrap(), 6);
    let page1 = s.list_content("BANK", 0, 4).await.unwrap();
    let page2 = s
        .list_content("BANK", page1.last().unwrap().id, 4)
        .await
        .unwrap();
    let listed: Vec<i64> = page1.iter().chain(page2.iter()).map(|c| c.id).collect();
    assert_eq!(listed, ids);
    let signals = s.list_bank_signals("BANK", 0, 100).await.unwrap();
    assert_eq!(signals.len(), 7);
    assert!(signals.iter().all(|r| r.bank_id == b.id));
    let got = s.get_contents(&[ids[2], 424242, ids[1]]).await.unwrap();
    assert_eq!(
        got.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![ids[1], ids[2]]
    );
    let stats = s.signal_type_stats().await.unwrap();
    assert_eq!(
        stats
            .iter()
            .map(|s| (s.signal_type.as_str(), s.count))
            .collect::<Vec<_>>(),
        [("pdq", 6), ("video_md5", 1)]
    );

    assert!(s.delete_content("BANK", c.id).await.unwrap());
    assert!(!s.delete_content("BANK", c.id).await.unwrap());
    assert!(matches!(
        s.get_content("BANK", c.id).await,
        Err(StoreError::NotFound {
            entity: Entity::Content,
            ..
        })
    ));
    assert!(s.get_signals(c.id).await.unwrap().is_empty());
}

async fn content_scoped_to_bank(h: &Harness) {
    let s = &h.store;
    s.create_bank(&bank("A")).await.unwrap();
    s.create_bank(&bank("B")).await.unwrap();
    let c = s
        .create_content("A", &NewContent::with_signals(sigs(&[("pdq", &pdq(1))])))
        .await
        .unwrap();
    assert!(matches!(
        s.get_content("B", c.id).await,
        Err(StoreError::NotFound {
            entity: Entity::Content,
            ..
        })
    ));
    assert!(matches!(
        s.update_content(
            "B",
            c.id,
            &ContentUpdate {
                disable_until_ts: Some(0),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::NotFound {
            entity: Entity::Content,
            ..
        })
    ));
    assert!(!s.delete_content("B", c.id).await.unwrap());
    assert!(matches!(
        s.delete_content("C", c.id).await,
        Err(StoreError::NotFound {
            entity: Entity::Bank,
            ..
        })
    ));
    assert_eq!(s.get_content("A", c.id).await.unwrap().disable_until_ts, 1);
}

async fn bank_delete_cascades(h: &Harness) {
    let s = &h.store;
    let b = s.create_bank(&bank("DOOMED")).await.unwrap();
    s.create_bank(&bank("KEPT")).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            s.create_content(
                "DOOMED",
                &NewContent::with_signals(sigs(&[("pdq", &pdq(i))])),
            )
            .await
            .unwrap()
            .id,
        );
    }
    let kept = s
        .create_content("KEPT", &NewContent::with_signals(sigs(&[("pdq", &pdq(9))])))
        .await
        .unwrap();
    let before = s.current_seq().await.unwrap();
    assert!(s.delete_bank("DOOMED").await.unwrap());
    assert!(s.get_contents(&ids).await.unwrap().is_empty());
    for id in &ids {
        assert!(s.get_signals(*id).await.unwrap().is_empty());
    }
    assert_eq!(s.get_content("KEPT", kept.id).await.unwrap(), kept);
    // The cascade is in the change log: the bank, every content and every signal.
    let changes = all_changes(s, before).await;
    let mut deleted_contents = HashSet::new();
    let mut deleted_signals = HashSet::new();
    let mut bank_deleted = false;
    for c in &changes {
        match &c.event {
            ChangeEvent::BankDeleted { bank_id } => bank_deleted |= *bank_id == b.id,
            ChangeEvent::ContentDeleted {
                content_id,
                bank_id,
            } => {
                assert_eq!(*bank_id, b.id);
                deleted_contents.insert(*content_id);
            }
            ChangeEvent::SignalDeleted { content_id, .. } => {
                deleted_signals.insert(*content_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(bank_deleted);
    assert_eq!(deleted_contents, ids.iter().copied().collect());
    assert_eq!(deleted_signals, ids.iter().copied().collect());
}

async fn exchanges_crud_and_cascade(h: &Harness) {
    let s = &h.store;
    let ex = s.create_exchange(&new_exchange("EXCH")).await.unwrap();
    assert_eq!(
        (ex.name.as_str(), ex.api.as_str(), ex.enabled),
        ("EXCH", "sample", true)
    );
    let eb = s.get_bank("EXCH").await.unwrap();
    assert_eq!(
        (eb.exchange_id, eb.enabled_ratio, ex.bank_id),
        (Some(ex.id), 1.0, Some(eb.id))
    );
    assert!(matches!(
        s.create_exchange(&new_exchange("EXCH")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::Exchange,
            ..
        })
    ));
    s.create_bank(&bank("TAKEN")).await.unwrap();
    assert!(matches!(
        s.create_exchange(&new_exchange("TAKEN")).await,
        Err(StoreError::AlreadyExists {
            entity: Entity::Bank,
            ..
        })
    ));
    assert!(
        matches!(
            s.get_exchange("TAKEN").await,
            Err(StoreError::NotFound { .. })
        ),
        "failed create left nothing"
    );
    assert_eq!(s.list_exchanges().await.unwrap(), vec![ex.clone()]);
    assert_eq!(s.get_exchange("EXCH").await.unwrap(), ex);

    let cfg = json!({"name": "EXCH", "api": "sample", "enabled": false, "privacy_group": 123});
    let up = s
        .update_exchange(
            "EXCH",
            &ExchangeUpdate {
                enabled: Some(false),
                config: Some(cfg.clone()),
            },
        )
        .await
        .unwrap();
    assert!(!up.enabled);
    assert_eq!(up.config, cfg);
    assert!(matches!(
        s.update_exchange("NOPE", &ExchangeUpdate::default()).await,
        Err(StoreError::NotFound {
            entity: Entity::Exchange,
            ..
        })
    ));

    // The exchange's bank can be renamed (linked by id) but not deleted on its own.
    assert!(matches!(
        s.delete_bank("EXCH").await,
        Err(StoreError::Conflict(_))
    ));

    let out = s
        .apply_fetch_batch(
            "EXCH",
            &batch(
                vec![
                    record("k1", &[("pdq", &pdq(1))], json!({"o": 1})),
                    record("k2", &[("pdq", &pdq(2))], json!({})),
                ],
                json!({"cp": 1}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.records_added, 2);
    let rec = s.get_exchange_record("EXCH", "k1").await.unwrap();
    assert_eq!(rec.metadata, json!({"o": 1}));
    assert_eq!(rec.signals, sigs(&[("pdq", &pdq(1))]));
    let cid = rec.content_id.unwrap();
    let content = s.get_content("EXCH", cid).await.unwrap();
    let prov = content.provenance.unwrap();
    assert_eq!(
        (
            prov.exchange_name.as_str(),
            prov.record_key.as_str(),
            prov.record_metadata
        ),
        ("EXCH", "k1", json!({"o": 1}))
    );
    assert!(matches!(
        s.get_exchange_record("EXCH", "nope").await,
        Err(StoreError::NotFound {
            entity: Entity::ExchangeRecord,
            ..
        })
    ));

    let renamed = s
        .update_bank(
            "EXCH",
            &BankUpdate {
                name: Some("EXCH_RENAMED".into()),
                enabled_ratio: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.exchange_id, Some(ex.id));

    let before = s.current_seq().await.unwrap();
    assert!(s.delete_exchange("EXCH").await.unwrap());
    assert!(!s.delete_exchange("EXCH").await.unwrap());
    assert!(matches!(
        s.get_bank("EXCH_RENAMED").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(s.get_contents(&[cid]).await.unwrap().is_empty());
    assert!(s.get_signals(cid).await.unwrap().is_empty());
    let kinds: HashSet<&'static str> = all_changes(s, before)
        .await
        .iter()
        .map(|c| match c.event {
            ChangeEvent::ExchangeDeleted { .. } => "exchange",
            ChangeEvent::BankDeleted { .. } => "bank",
            ChangeEvent::ContentDeleted { .. } => "content",
            ChangeEvent::SignalDeleted { .. } => "signal",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["exchange", "bank", "content", "signal"]
            .into_iter()
            .collect()
    );
    // A new exchange of the same name starts from scratch.
    s.create_exchange(&new_exchange("EXCH")).await.unwrap();
    assert_eq!(
        s.fetch_status("EXCH").await.unwrap(),
        FetchStatus::default()
    );
    assert!(matches!(
        s.get_exchange_record("EXCH", "k1").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn credentials(h: &Harness) {
    let s = &h.store;
    assert!(!s.has_api_credentials("fb_threatexchange").await.unwrap());
    assert_eq!(
        s.get_api_credentials("fb_threatexchange").await.unwrap(),
        None
    );
    let creds = json!({"api_token": "123456789|abcdefghijklmnopqrstuvwxyz"});
    s.set_api_credentials("fb_threatexchange", Some(&creds))
        .await
        .unwrap();
    assert!(s.has_api_credentials("fb_threatexchange").await.unwrap());
    assert!(!s.has_api_credentials("ncmec").await.unwrap());
    assert_eq!(
        s.get_api_credentials("fb_threatexchange").await.unwrap(),
        Some(creds)
    );
    s.set_api_credentials("fb_threatexchange", Some(&json!({})))
        .await
        .unwrap();
    assert!(!s.has_api_credentials("fb_threatexchange").await.unwrap());
    s.set_api_credentials("ncmec", Some(&json!({"user": "u", "password": "p"})))
        .await
        .unwrap();
    s.set_api_credentials("ncmec", None).await.unwrap();
    assert!(!s.has_api_credentials("ncmec").await.unwrap());
}

async fn fetch_batch_semantics(h: &Harness) {
    let s = &h.store;
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    assert_eq!(s.fetch_checkpoint("EX").await.unwrap(), None);
    let mut b1 = batch(
        vec![
            record("a", &[("pdq", &pdq(1))], json!({"v": 1})),
            record(
                "b",
                &[("pdq", &pdq(2)), ("video_md5", "aa")],
                json!({"v": 1}),
            ),
            record("c", &[("pdq", &pdq(3))], json!({"v": 1})),
            delete("never-seen"),
            // Later update of the same key wins.
            record("a", &[("pdq", &pdq(11))], json!({"v": 2})),
        ],
        json!({"page": 1}),
    );
    b1.guard = CheckpointGuard::Absent;
    let out = s.apply_fetch_batch("EX", &b1).await.unwrap();
    assert_eq!(
        (
            out.records_added,
            out.records_updated,
            out.records_deleted,
            out.item_count
        ),
        (3, 0, 0, 3)
    );
    assert_eq!(
        s.get_exchange_record("EX", "a").await.unwrap().signals,
        sigs(&[("pdq", &pdq(11))])
    );
    assert_eq!(
        s.fetch_checkpoint("EX").await.unwrap(),
        Some(FetchCheckpoint {
            value: json!({"page": 1}),
            ts: Some(100)
        })
    );
    assert_eq!(s.fetch_status("EX").await.unwrap().item_count, 3);

    // A fetcher that started from another checkpoint is refused and changes nothing.
    let mut stale = batch(vec![delete("a")], json!({"page": 9}));
    stale.guard = CheckpointGuard::Equals(json!({"page": 0}));
    assert!(matches!(
        s.apply_fetch_batch("EX", &stale).await,
        Err(StoreError::Conflict(_))
    ));
    stale.guard = CheckpointGuard::Absent;
    assert!(matches!(
        s.apply_fetch_batch("EX", &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(s.get_exchange_record("EX", "a").await.is_ok());

    // A curator deletes imported content; the next update of its record brings it back.
    let c_content = s
        .get_exchange_record("EX", "c")
        .await
        .unwrap()
        .content_id
        .unwrap();
    assert!(s.delete_content("EX", c_content).await.unwrap());
    assert_eq!(
        s.get_exchange_record("EX", "c").await.unwrap().content_id,
        None
    );

    let seq_before = s.current_seq().await.unwrap();
    let b_content = s
        .get_exchange_record("EX", "b")
        .await
        .unwrap()
        .content_id
        .unwrap();
    let mut b2 = batch(
        vec![
            // b: pdq changes, video_md5 removed, new type added.
            record(
                "b",
                &[("pdq", &pdq(22)), ("url", "https://x")],
                json!({"v": 2}),
            ),
            // a: unchanged signal, new metadata.
            record("a", &[("pdq", &pdq(11))], json!({"v": 3})),
            record("c", &[("pdq", &pdq(3))], json!({"v": 2})),
            delete("never-seen-either"),
            // An empty signal list means "nothing usable": a delete.
            record("d", &[], json!({})),
        ],
        json!({"page": 2}),
    );
    b2.guard = CheckpointGuard::Equals(json!({"page": 1}));
    b2.up_to_date = true;
    let out = s.apply_fetch_batch("EX", &b2).await.unwrap();
    assert_eq!(
        (
            out.records_added,
            out.records_updated,
            out.records_deleted,
            out.item_count
        ),
        (0, 3, 0, 3)
    );
    let rb = s.get_exchange_record("EX", "b").await.unwrap();
    assert_eq!(
        rb.content_id,
        Some(b_content),
        "content id is stable across updates"
    );
    assert_eq!(rb.signals, sigs(&[("pdq", &pdq(22)), ("url", "https://x")]));
    assert_eq!(
        s.get_exchange_record("EX", "a").await.unwrap().metadata,
        json!({"v": 3})
    );
    let rc = s.get_exchange_record("EX", "c").await.unwrap();
    assert!(rc.content_id.is_some() && rc.content_id != Some(c_content));
    assert_eq!(rc.signals, sigs(&[("pdq", &pdq(3))]));
    assert!(s.fetch_status("EX").await.unwrap().up_to_date);

    // Exactly the signal changes are logged: b's pdq (delete old + upsert new), b's md5
    // delete, b's url upsert, c's new content signal. a's unchanged signal is not.
    let mut events: Vec<(String, i64, String, String)> = all_changes(s, seq_before)
        .await
        .into_iter()
        .filter_map(|c| match c.event {
            ChangeEvent::SignalUpserted {
                content_id,
                signal_type,
                value,
                ..
            } => Some(("up".into(), content_id, signal_type, value)),
            ChangeEvent::SignalDeleted {
                content_id,
                signal_type,
                value,
                ..
            } => Some(("del".into(), content_id, signal_type, value)),
            _ => None,
        })
        .collect();
    events.sort();
    let c_new = rc.content_id.unwrap();
    let mut expected = vec![
        ("del".to_string(), b_content, "pdq".to_string(), pdq(2)),
        (
            "del".to_string(),
            b_content,
            "video_md5".to_string(),
            "aa".to_string(),
        ),
        ("up".to_string(), b_content, "pdq".to_string(), pdq(22)),
        (
            "up".to_string(),
            b_content,
            "url".to_string(),
            "https://x".to_string(),
        ),
        ("up".to_string(), c_new, "pdq".to_string(), pdq(3)),
    ];
    expected.sort();
    assert_eq!(events, expected);

    // Deletes remove record, content and signals.
    let out = s
        .apply_fetch_batch(
            "EX",
            &batch(vec![delete("b"), delete("a")], json!({"page": 3})),
        )
        .await
        .unwrap();
    assert_eq!((out.records_deleted, out.item_count), (2, 1));
    assert!(s.get_contents(&[b_content]).await.unwrap().is_empty());
    assert!(matches!(
        s.get_exchange_record("EX", "b").await,
        Err(StoreError::NotFound { .. })
    ));

    // Two signals of one type in one record are refused before anything is written.
    let bad = batch(
        vec![record(
            "e",
            &[("pdq", &pdq(5)), ("pdq", &pdq(6))],
            json!({}),
        )],
        json!({"page": 4}),
    );
    assert!(matches!(
        s.apply_fetch_batch("EX", &bad).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert_eq!(
        s.fetch_checkpoint("EX").await.unwrap().unwrap().value,
        json!({"page": 3})
    );
    assert!(matches!(
        s.apply_fetch_batch("NOPE", &batch(vec![], json!({}))).await,
        Err(StoreError::NotFound { .. })
    ));

    // Reset for a refetch from scratch.
    assert_eq!(s.reset_fetch_state("EX").await.unwrap(), 1);
    assert_eq!(s.fetch_checkpoint("EX").await.unwrap(), None);
    assert_eq!(s.fetch_status("EX").await.unwrap().item_count, 0);
    assert_eq!(s.count_content("EX").await.unwrap(), 0);
}

/// The bulk path of a fetch batch logs exactly what per-row writes would: one upsert per
/// stored signal, with the content id and bank of the row it belongs to; and batch content
/// never reuses the id of deleted content (ids are assigned by the bulk path on SQLite).
async fn bulk_batch_log_matches_rows(h: &Harness) {
    let s = &h.store;
    s.create_bank(&bank("CURATED")).await.unwrap();
    let gone = s
        .create_content(
            "CURATED",
            &NewContent::with_signals(sigs(&[("pdq", &pdq(999))])),
        )
        .await
        .unwrap();
    // The highest content id so far now belongs to deleted content.
    s.delete_content("CURATED", gone.id).await.unwrap();
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    let bank_id = s.get_bank("EX").await.unwrap().id;
    let seq = s.current_seq().await.unwrap();
    let md5s: Vec<String> = (0..60u64).map(|i| format!("{i:032x}")).collect();
    let updates: Vec<RecordUpdate> = (0..60u64)
        .map(|i| {
            let key = format!("k{i}");
            let p = pdq(i);
            if i % 7 == 0 {
                record(
                    &key,
                    &[("pdq", &p), ("md5", &md5s[i as usize])],
                    json!({"i": i}),
                )
            } else {
                record(&key, &[("pdq", &p)], json!({"i": i}))
            }
        })
        .collect();
    let out = s
        .apply_fetch_batch("EX", &batch(updates.clone(), json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(out.records_added, 60);

    let mut expected = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for u in &updates {
        let r = s.get_exchange_record("EX", &u.key).await.unwrap();
        let rec = u.record.as_ref().unwrap();
        assert_eq!(r.metadata, rec.metadata);
        let want: BTreeMap<String, String> = rec.signals.iter().cloned().collect();
        assert_eq!(r.signals, want);
        let cid = r.content_id.unwrap();
        assert!(
            cid > gone.id,
            "content id {cid} reuses ids up to {}",
            gone.id
        );
        assert!(ids.insert(cid), "content id {cid} given twice");
        let content = s.get_content("EX", cid).await.unwrap();
        assert_eq!(content.signals, want);
        for (t, v) in &rec.signals {
            expected.push(format!("{cid} {bank_id} {t} {v}"));
        }
    }
    let mut logged: Vec<String> = all_changes(s, seq)
        .await
        .into_iter()
        .map(|c| match c.event {
            ChangeEvent::SignalUpserted {
                content_id,
                bank_id,
                signal_type,
                value,
            } => format!("{content_id} {bank_id} {signal_type} {value}"),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    logged.sort();
    expected.sort();
    assert_eq!(logged, expected);

    // Content created afterwards (by a curator or another batch) gets fresh ids too.
    let later = s
        .create_content(
            "CURATED",
            &NewContent::with_signals(sigs(&[("pdq", &pdq(998))])),
        )
        .await
        .unwrap();
    assert!(later.id > *ids.last().unwrap());
    s.apply_fetch_batch(
        "EX",
        &batch(
            vec![record("late", &[("pdq", &pdq(997))], json!({}))],
            json!({"n": 2}),
        ),
    )
    .await
    .unwrap();
    let late = s.get_exchange_record("EX", "late").await.unwrap();
    assert!(late.content_id.unwrap() > later.id);
}

/// New keys interleaved with existing ones (some changed, one whose content a curator deleted,
/// one deleted by the batch) and records with one or two signals: every new signal lands on its
/// own record's content, and replaying the log from before the batch gives the stored state.
async fn mixed_batch_new_and_existing_keys(h: &Harness) {
    let s = &h.store;
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    let first: Vec<RecordUpdate> = (0..10u64)
        .map(|i| record(&format!("e{i}"), &[("pdq", &pdq(i))], json!({"e": i})))
        .collect();
    s.apply_fetch_batch("EX", &batch(first, json!({"n": 1})))
        .await
        .unwrap();
    let orphan = s.get_exchange_record("EX", "e3").await.unwrap();
    assert!(s
        .delete_content("EX", orphan.content_id.unwrap())
        .await
        .unwrap());
    let (mut view, seq) = View::load(s).await;

    let md5 = |i: u64| format!("{i:032x}");
    let mut updates = Vec::new();
    let mut want: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in 0..30u64 {
        let (key, signals) = if i % 3 == 0 {
            // Existing key e{i/3}: every other one gets a new value.
            let e = i / 3;
            let v = if e % 2 == 0 { pdq(100 + e) } else { pdq(e) };
            (format!("e{e}"), vec![("pdq".to_string(), v)])
        } else if i % 2 == 0 {
            (
                format!("n{i}"),
                vec![
                    ("pdq".to_string(), pdq(1000 + i)),
                    ("md5".to_string(), md5(i)),
                ],
            )
        } else {
            (format!("n{i}"), vec![("pdq".to_string(), pdq(1000 + i))])
        };
        let pairs: Vec<(&str, &str)> = signals
            .iter()
            .map(|(t, v)| (t.as_str(), v.as_str()))
            .collect();
        updates.push(record(&key, &pairs, json!({"i": i})));
        want.insert(key, signals.into_iter().collect());
    }
    updates.push(delete("e9"));
    want.remove("e9");
    let out = s
        .apply_fetch_batch("EX", &batch(updates, json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(
        (out.records_added, out.records_updated, out.records_deleted),
        (20, 9, 1)
    );

    let mut contents = HashSet::new();
    for (key, signals) in &want {
        let r = s.get_exchange_record("EX", key).await.unwrap();
        assert_eq!(&r.signals, signals, "record {key}");
        let cid = r.content_id.unwrap();
        assert!(contents.insert(cid), "content {cid} shared by two records");
        assert_eq!(&s.get_content("EX", cid).await.unwrap().signals, signals);
    }
    for c in all_changes(s, seq).await {
        view.apply(&c.event);
    }
    assert_eq!(view, View::load(s).await.0);
    assert_eq!(
        view.signals.len(),
        want.values().map(|m| m.len()).sum::<usize>()
    );
}

async fn checkpoint_atomicity(h: &Harness) {
    let s = &h.store;
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    s.apply_fetch_batch(
        "EX",
        &batch(
            vec![record("keep", &[("pdq", &pdq(1))], json!({}))],
            json!({"n": 1}),
        ),
    )
    .await
    .unwrap();
    let status = s.fetch_status("EX").await.unwrap();
    let seq = s.current_seq().await.unwrap();
    s.inject_fault_before_checkpoint(true);
    let crashing = batch(
        vec![
            record("new", &[("pdq", &pdq(2))], json!({})),
            record("keep", &[("pdq", &pdq(3))], json!({"changed": true})),
            delete("keep2"),
        ],
        json!({"n": 2}),
    );
    assert!(matches!(
        s.apply_fetch_batch("EX", &crashing).await,
        Err(StoreError::Backend(_))
    ));
    s.inject_fault_before_checkpoint(false);
    // Nothing of the failed batch is visible: records, content, checkpoint, status, change log.
    assert!(matches!(
        s.get_exchange_record("EX", "new").await,
        Err(StoreError::NotFound { .. })
    ));
    let keep = s.get_exchange_record("EX", "keep").await.unwrap();
    assert_eq!(
        (keep.metadata, keep.signals),
        (json!({}), sigs(&[("pdq", &pdq(1))]))
    );
    assert_eq!(
        s.fetch_checkpoint("EX").await.unwrap().unwrap().value,
        json!({"n": 1})
    );
    assert_eq!(s.fetch_status("EX").await.unwrap(), status);
    assert_eq!(s.count_content("EX").await.unwrap(), 1);
    assert!(all_changes(s, seq).await.is_empty());
    // Retrying the same batch works.
    let out = s.apply_fetch_batch("EX", &crashing).await.unwrap();
    assert_eq!(
        (out.records_added, out.records_updated, out.item_count),
        (1, 1, 2)
    );
}

async fn fetch_status_lifecycle(h: &Harness) {
    let s = &h.store;
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    assert!(matches!(
        s.fetch_status("NOPE").await,
        Err(StoreError::NotFound { .. })
    ));
    s.start_fetch("EX").await.unwrap();
    let st = s.fetch_status("EX").await.unwrap();
    assert!(st.running_since.is_some());
    assert_eq!(st.last_succeeded, None);
    s.finish_fetch(
        "EX",
        &FetchRunEnd {
            succeeded: false,
            up_to_date: true,
            error: Some("HTTP 500 from API".into()),
        },
    )
    .await
    .unwrap();
    let st = s.fetch_status("EX").await.unwrap();
    assert_eq!(
        (
            st.running_since,
            st.last_succeeded,
            st.up_to_date,
            st.last_success_ts
        ),
        (None, Some(false), false, None)
    );
    assert_eq!(st.last_error.as_deref(), Some("HTTP 500 from API"));
    assert!(st.last_complete_ts.is_some());
    s.start_fetch("EX").await.unwrap();
    s.finish_fetch(
        "EX",
        &FetchRunEnd {
            succeeded: true,
            up_to_date: true,
            error: None,
        },
    )
    .await
    .unwrap();
    let st = s.fetch_status("EX").await.unwrap();
    assert_eq!(
        (
            st.running_since,
            st.last_succeeded,
            st.up_to_date,
            st.last_error
        ),
        (None, Some(true), true, None)
    );
    assert!(st.last_success_ts.is_some());
    s.finish_fetch(
        "EX",
        &FetchRunEnd {
            succeeded: false,
            up_to_date: false,
            error: Some("x".into()),
        },
    )
    .await
    .unwrap();
    assert!(
        s.fetch_status("EX")
            .await
            .unwrap()
            .last_success_ts
            .is_some(),
        "last success kept"
    );
}

async fn fetch_leases(h: &Harness) {
    let s = &h.store;
    let other = h.reopen().await; // another "process"
    s.create_exchange(&new_exchange("EX")).await.unwrap();
    s.create_exchange(&new_exchange("EY")).await.unwrap();
    let ttl = Duration::from_secs(60);
    assert!(s.try_acquire_fetch_lease("EX", "p1", ttl).await.unwrap());
    assert!(!other
        .try_acquire_fetch_lease("EX", "p2", ttl)
        .await
        .unwrap());
    assert!(
        other
            .try_acquire_fetch_lease("EY", "p2", ttl)
            .await
            .unwrap(),
        "leases are per exchange"
    );
    assert!(
        s.try_acquire_fetch_lease("EX", "p1", ttl).await.unwrap(),
        "renewal"
    );
    other.release_fetch_lease("EX", "p2").await.unwrap(); // not the holder: no effect
    assert!(!other
        .try_acquire_fetch_lease("EX", "p2", ttl)
        .await
        .unwrap());
    s.release_fetch_lease("EX", "p1").await.unwrap();
    assert!(other
        .try_acquire_fetch_lease("EX", "p2", Duration::ZERO)
        .await
        .unwrap());
    // An expired lease can be taken over.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(s.try_acquire_fetch_lease("EX", "p1", ttl).await.unwrap());
    assert!(matches!(
        s.try_acquire_fetch_lease("NOPE", "p1", ttl).await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn signal_type_overrides(h: &Harness) {
    let s = &h.store;
    assert!(s.list_signal_type_overrides().await.unwrap().is_empty());
    s.set_signal_type_override("pdq", 0.5).await.unwrap();
    s.set_signal_type_override("video_md5", 1.0).await.unwrap();
    s.set_signal_type_override("pdq", 0.0).await.unwrap();
    assert_eq!(
        s.list_signal_type_overrides().await.unwrap(),
        vec![
            SignalTypeOverride {
                name: "pdq".into(),
                enabled_ratio: 0.0
            },
            SignalTypeOverride {
                name: "video_md5".into(),
                enabled_ratio: 1.0
            }
        ]
    );
    assert!(matches!(
        s.set_signal_type_override("pdq", f64::INFINITY).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(s.delete_signal_type_override("pdq").await.unwrap());
    assert!(!s.delete_signal_type_override("pdq").await.unwrap());
    let events: Vec<ChangeEvent> = all_changes(s, 0)
        .await
        .into_iter()
        .map(|c| c.event)
        .collect();
    assert_eq!(
        events,
        vec![
            ChangeEvent::SignalTypeUpserted {
                signal_type: "pdq".into(),
                enabled_ratio: 0.5
            },
            ChangeEvent::SignalTypeUpserted {
                signal_type: "video_md5".into(),
                enabled_ratio: 1.0
            },
            ChangeEvent::SignalTypeUpserted {
                signal_type: "pdq".into(),
                enabled_ratio: 0.0
            },
            ChangeEvent::SignalTypeDeleted {
                signal_type: "pdq".into()
            },
        ]
    );
}

async fn change_log_events(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.current_seq().await.unwrap(), 0);
    let b = s.create_bank(&bank("B")).await.unwrap();
    let c = s
        .create_content("B", &NewContent::with_signals(sigs(&[("pdq", &pdq(7))])))
        .await
        .unwrap();
    let mut disabled = NewContent::with_signals(sigs(&[]));
    disabled.disable_until_ts = 0;
    let d = s.create_content("B", &disabled).await.unwrap();
    s.update_content(
        "B",
        c.id,
        &ContentUpdate {
            disable_until_ts: Some(5_000_000_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Note-only and same-value updates are not matcher-relevant: no entries.
    s.update_content(
        "B",
        c.id,
        &ContentUpdate {
            note: Some(Some("n".into())),
            disable_until_ts: Some(5_000_000_000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.update_bank(
        "B",
        &BankUpdate {
            name: None,
            enabled_ratio: Some(0.0),
        },
    )
    .await
    .unwrap();
    let ex = s.create_exchange(&new_exchange("EX")).await.unwrap();
    s.update_exchange(
        "EX",
        &ExchangeUpdate {
            enabled: Some(false),
            config: None,
        },
    )
    .await
    .unwrap();
    s.delete_content("B", c.id).await.unwrap();
    let changes = all_changes(s, 0).await;
    let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {seqs:?}"
    );
    assert_eq!(*seqs.last().unwrap(), s.current_seq().await.unwrap());
    let events: Vec<ChangeEvent> = changes.into_iter().map(|c| c.event).collect();
    let eb = s.get_bank("EX").await.unwrap();
    let mut expected = vec![
        ChangeEvent::BankUpserted {
            bank_id: b.id,
            name: "B".into(),
            enabled_ratio: 1.0,
            exchange_id: None,
        },
        ChangeEvent::SignalUpserted {
            content_id: c.id,
            bank_id: b.id,
            signal_type: "pdq".into(),
            value: pdq(7),
        },
        ChangeEvent::ContentUpserted {
            content_id: d.id,
            bank_id: b.id,
            disable_until_ts: 0,
        },
        ChangeEvent::ContentUpserted {
            content_id: c.id,
            bank_id: b.id,
            disable_until_ts: 5_000_000_000,
        },
        ChangeEvent::BankUpserted {
            bank_id: b.id,
            name: "B".into(),
            enabled_ratio: 0.0,
            exchange_id: None,
        },
        ChangeEvent::ExchangeUpserted {
            exchange_id: ex.id,
            name: "EX".into(),
            enabled: true,
        },
        ChangeEvent::BankUpserted {
            bank_id: eb.id,
            name: "EX".into(),
            enabled_ratio: 1.0,
            exchange_id: Some(ex.id),
        },
        ChangeEvent::ExchangeUpserted {
            exchange_id: ex.id,
            name: "EX".into(),
            enabled: false,
        },
    ];
    // The cascaded signal delete and the content delete, in either order.
    let tail = &events[expected.len()..];
    let mut tail_sorted: Vec<String> = tail.iter().map(|e| format!("{e:?}")).collect();
    tail_sorted.sort();
    let mut want_tail = vec![
        format!(
            "{:?}",
            ChangeEvent::ContentDeleted {
                content_id: c.id,
                bank_id: b.id
            }
        ),
        format!(
            "{:?}",
            ChangeEvent::SignalDeleted {
                content_id: c.id,
                bank_id: b.id,
                signal_type: "pdq".into(),
                value: pdq(7)
            }
        ),
    ];
    want_tail.sort();
    assert_eq!(tail_sorted, want_tail);
    expected.truncate(events.len() - 2);
    assert_eq!(&events[..events.len() - 2], &expected[..]);
    // Paging.
    let first = s.changes_since(0, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let next = s.changes_since(first[2].seq, 3).await.unwrap();
    assert_eq!(next[0].seq, seqs[3]);
}

/// Matcher-side view of the store, rebuilt from a snapshot plus changes.
#[derive(Debug, Default, PartialEq)]
struct View {
    signals: BTreeMap<(i64, String), (i64, String)>,
    content_state: BTreeMap<i64, i64>,
    banks: BTreeMap<i64, (String, u64)>,
}

impl View {
    fn apply(&mut self, e: &ChangeEvent) {
        match e {
            ChangeEvent::SignalUpserted {
                content_id,
                bank_id,
                signal_type,
                value,
            } => {
                self.signals.insert(
                    (*content_id, signal_type.clone()),
                    (*bank_id, value.clone()),
                );
            }
            ChangeEvent::SignalDeleted {
                content_id,
                signal_type,
                ..
            } => {
                self.signals.remove(&(*content_id, signal_type.clone()));
            }
            ChangeEvent::ContentUpserted {
                content_id,
                disable_until_ts,
                ..
            } => {
                if *disable_until_ts == 1 {
                    self.content_state.remove(content_id);
                } else {
                    self.content_state.insert(*content_id, *disable_until_ts);
                }
            }
            ChangeEvent::ContentDeleted { content_id, .. } => {
                self.content_state.remove(content_id);
                self.signals.retain(|(c, _), _| c != content_id);
            }
            ChangeEvent::BankUpserted {
                bank_id,
                name,
                enabled_ratio,
                ..
            } => {
                self.banks
                    .insert(*bank_id, (name.clone(), enabled_ratio.to_bits()));
            }
            ChangeEvent::BankDeleted { bank_id } => {
                self.banks.remove(bank_id);
            }
            _ => {}
        }
    }

    async fn load(s: &Store) -> (View, i64) {
        let mut snap = s.load_state(7).await.unwrap();
        let mut v = View::default();
        for b in &snap.banks {
            v.banks
                .insert(b.id, (b.name.clone(), b.enabled_ratio.to_bits()));
        }
        for c in &snap.content_states {
            v.content_state.insert(c.content_id, c.disable_until_ts);
        }
        while let Some(chunk) = snap.next_signals().await.unwrap() {
            assert!(chunk.len() <= 7);
            for r in chunk {
                v.signals
                    .insert((r.content_id, r.signal_type), (r.bank_id, r.value));
            }
        }
        (v, snap.seq)
    }
}

/// Several writers and a concurrent tailer: the tailer must see every change exactly once,
/// in strictly increasing seq order, and end with the same state as a fresh snapshot.
async fn change_log_concurrent_writers(h: &Harness) {
    const WRITERS: usize = 4;
    const ITEMS: u64 = 25;
    let s = h.store.clone();
    for w in 0..WRITERS {
        s.create_bank(&bank(&format!("W{w}"))).await.unwrap();
    }
    s.create_exchange(&new_exchange("FEED")).await.unwrap();
    let start_seq = s.current_seq().await.unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let tailer = {
        let s = h.reopen().await;
        let done = done.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = start_seq;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let page = s.changes_since(last, 50).await.unwrap();
                if page.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for c in page {
                    assert!(c.seq > last, "seq {} after {}", c.seq, last);
                    last = c.seq;
                    seen.push(c);
                }
            }
        })
    };

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            let name = format!("W{w}");
            let mut expected = Vec::new();
            for i in 0..ITEMS {
                let v = pdq(((w as u64) << 32) | i);
                let c = s
                    .create_content(&name, &NewContent::with_signals(sigs(&[("pdq", &v)])))
                    .await
                    .unwrap();
                expected.push(format!("up {} {v}", c.id));
                if i % 3 == 0 {
                    s.update_content(
                        &name,
                        c.id,
                        &ContentUpdate {
                            disable_until_ts: Some(0),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                    expected.push(format!("state {} 0", c.id));
                }
                if i % 5 == 0 {
                    s.delete_content(&name, c.id).await.unwrap();
                    expected.push(format!("del {} {v}", c.id));
                    expected.push(format!("cdel {}", c.id));
                }
            }
            expected
        }));
    }
    // One more writer: exchange batches.
    let feeder = {
        let s = s.clone();
        tokio::spawn(async move {
            for n in 0..10u64 {
                let recs = (0..5)
                    .map(|k| {
                        record(
                            &format!("r{n}-{k}"),
                            &[("pdq", &pdq((1 << 40) | (n * 10 + k)))],
                            json!({}),
                        )
                    })
                    .collect();
                s.apply_fetch_batch("FEED", &batch(recs, json!({"n": n})))
                    .await
                    .unwrap();
            }
        })
    };
    let mut expected: Vec<String> = Vec::new();
    for w in writers {
        expected.extend(w.await.unwrap());
    }
    feeder.await.unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tailer.await.unwrap();

    // Exactly once: the tailer saw precisely the committed log.
    let direct = all_changes(&s, start_seq).await;
    assert_eq!(seen, direct);
    let mut got: Vec<String> = Vec::new();
    let mut feed_signals = 0;
    let feed_bank = s.get_bank("FEED").await.unwrap().id;
    for c in &seen {
        match &c.event {
            ChangeEvent::SignalUpserted { bank_id, .. } if *bank_id == feed_bank => {
                feed_signals += 1
            }
            ChangeEvent::SignalUpserted {
                content_id, value, ..
            } => got.push(format!("up {content_id} {value}")),
            ChangeEvent::SignalDeleted {
                content_id, value, ..
            } => got.push(format!("del {content_id} {value}")),
            ChangeEvent::ContentUpserted {
                content_id,
                disable_until_ts,
                ..
            } => got.push(format!("state {content_id} {disable_until_ts}")),
            ChangeEvent::ContentDeleted { content_id, .. } => {
                got.push(format!("cdel {content_id}"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(feed_signals, 50);
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut exp_sorted = expected.clone();
    exp_sorted.sort();
    assert_eq!(got_sorted, exp_sorted);
    // Per content, creation precedes state change precedes deletion.
    let pos: HashMap<&String, usize> = got.iter().enumerate().map(|(i, e)| (e, i)).collect();
    for e in &expected {
        if let Some(rest) = e.strip_prefix("state ") {
            let id = rest.split(' ').next().unwrap();
            let up = got
                .iter()
                .position(|g| g.starts_with(&format!("up {id} ")))
                .unwrap();
            assert!(up < pos[e]);
        }
    }
    // Snapshot + tail == fresh snapshot.
    let (fresh, _) = View::load(&s).await;
    let mut replayed = View::default();
    for b in s.list_banks().await.unwrap() {
        replayed
            .banks
            .insert(b.id, (b.name, b.enabled_ratio.to_bits()));
    }
    for c in all_changes(&s, 0).await {
        replayed.apply(&c.event);
    }
    assert_eq!(replayed.signals, fresh.signals);
    assert_eq!(replayed.content_state, fresh.content_state);
}

/// A snapshot taken while writers run, plus the changes after its seq, equals the final state.
async fn load_state_matches_replay(h: &Harness) {
    let s = h.store.clone();
    s.create_bank(&bank("B")).await.unwrap();
    for i in 0..30 {
        s.create_content("B", &NewContent::with_signals(sigs(&[("pdq", &pdq(i))])))
            .await
            .unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 100..160u64 {
                let c = s
                    .create_content(
                        "B",
                        &NewContent::with_signals(sigs(&[
                            ("pdq", &pdq(i)),
                            ("md5", &format!("{i}")),
                        ])),
                    )
                    .await
                    .unwrap();
                if i % 2 == 0 {
                    s.update_content(
                        "B",
                        c.id,
                        &ContentUpdate {
                            disable_until_ts: Some(7),
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap();
                }
                if i % 7 == 0 {
                    s.delete_content("B", c.id).await.unwrap();
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut view, seq) = View::load(&s).await;
    writer.await.unwrap();
    for c in all_changes(&s, seq).await {
        view.apply(&c.event);
    }
    let (fresh, fresh_seq) = View::load(&s).await;
    assert_eq!(fresh_seq, s.current_seq().await.unwrap());
    assert_eq!(view.signals, fresh.signals);
    assert_eq!(view.content_state, fresh.content_state);
    assert_eq!(view.banks, fresh.banks);
    assert_eq!(fresh.signals.len(), 30 + 2 * (60 - 8)); // 8 multiples of 7 in 100..160
}

async fn migrations_idempotent(h: &Harness) {
    let s = &h.store;
    let applied = s.applied_migrations().await.unwrap();
    assert!(!applied.is_empty());
    assert_eq!(
        applied.iter().map(|m| m.version).collect::<Vec<_>>(),
        (1..=applied.len() as i64).collect::<Vec<_>>()
    );
    s.create_bank(&bank("SURVIVES")).await.unwrap();
    let again = h.reopen().await;
    let third = h.reopen().await;
    assert_eq!(again.applied_migrations().await.unwrap(), applied);
    assert_eq!(third.applied_migrations().await.unwrap(), applied);
    assert_eq!(again.get_bank("SURVIVES").await.unwrap().name, "SURVIVES");
    // A database from a newer binary is refused rather than misused.
    if let Some(path) = h.sqlite_path() {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO omm_schema_migrations VALUES (9999, 'future', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        assert!(matches!(
            Store::open_sqlite(&path).await,
            Err(StoreError::Conflict(_))
        ));
    }
}

async fn subscribe_wakes(h: &Harness) {
    let s = &h.store;
    let mut sub = s.subscribe().await.unwrap();
    // Give a LISTEN connection time to start; the first hint after connecting is allowed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = tokio::time::timeout(Duration::from_millis(50), sub.changed()).await;
    s.create_bank(&bank("WAKE")).await.unwrap();
    let woke = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await;
    assert_eq!(woke.ok(), Some(true));
}

async fn prune_keeps_tail(h: &Harness) {
    let s = &h.store;
    for i in 0..5 {
        s.create_bank(&bank(&format!("B{i}"))).await.unwrap();
    }
    let seq = s.current_seq().await.unwrap();
    assert_eq!(s.prune_changes(seq).await.unwrap(), 4);
    assert_eq!(s.current_seq().await.unwrap(), seq);
    assert_eq!(s.changes_since(0, 10).await.unwrap().len(), 1);
}

/// With a read-replica URL (here: the primary itself, as a stand-in), reads that tolerate lag
/// go through the replica pool and see committed writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_replica_pool() {
    let Some(h) = common::postgres().await else {
        return;
    };
    let common::Target::Postgres { url, schema } = &h.target else {
        unreachable!()
    };
    let mut o = PostgresOptions::new(url.clone());
    o.schema = Some(schema.clone());
    o.read_replica_url = Some(url.clone());
    o.max_connections = 2;
    let s = Store::open_postgres(o).await.unwrap();
    s.create_bank(&bank("R")).await.unwrap();
    let c = s
        .create_content("R", &NewContent::with_signals(sigs(&[("pdq", &pdq(1))])))
        .await
        .unwrap();
    assert_eq!(s.get_contents(&[c.id]).await.unwrap().len(), 1);
    assert_eq!(all_changes(&s, 0).await.len(), 2);
    let (view, seq) = View::load(&s).await;
    assert_eq!(seq, s.current_seq().await.unwrap());
    assert_eq!(view.signals.len(), 1);
}

#[tokio::test]
async fn invalid_postgres_options_are_typed_errors() {
    let mut o = PostgresOptions::new("postgres://postgres@127.0.0.1:5432/test");
    o.schema = Some("Robert'); DROP TABLE students;--".into());
    assert!(matches!(
        Store::open_postgres(o).await,
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        Store::open("postgres://[bad").await,
        Err(StoreError::InvalidArgument(_))
    ));
}
