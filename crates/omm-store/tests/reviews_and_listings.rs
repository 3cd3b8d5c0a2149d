//! Reviews with their write-back deliveries, and mark-and-sweep of full listings, on every
//! backend (see `common`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Harness;
use omm_store::*;
use serde_json::json;

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

fn batch(updates: Vec<RecordUpdate>, checkpoint: serde_json::Value) -> FetchBatch {
    FetchBatch {
        updates,
        checkpoint,
        checkpoint_ts: None,
        up_to_date: false,
        guard: CheckpointGuard::Unchecked,
    }
}

async fn exchange(s: &Store, name: &str, api: &str) {
    s.create_exchange(&NewExchange {
        name: name.into(),
        api: api.into(),
        enabled: true,
        config: json!({"privacy_group": 1}),
    })
    .await
    .unwrap();
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

fn review(opinion: ReviewOpinion, reviewer: &str) -> NewReview {
    NewReview {
        opinion,
        note: None,
        reviewer: reviewer.into(),
        signal_type: None,
        disable_matching: false,
        write_back_apis: vec!["fb_threatexchange".into(), "ncmec".into()],
    }
}

/// Keys of the exchange's stored records.
async fn keys(s: &Store, bank: &str) -> Vec<String> {
    let mut out: Vec<String> = s
        .list_content(bank, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.provenance.map(|p| p.record_key))
        .collect();
    out.sort();
    out
}

both_backends!(
    reviews_of_local_and_imported_content,
    review_validation_and_scoping,
    false_positive_can_disable_through_change_log,
    deliveries_claim_and_finish,
    reviews_outlive_content,
    listing_mark_and_sweep,
    listing_interrupted_keeps_old_records,
);

async fn reviews_of_local_and_imported_content(h: &Harness) {
    let s = &h.store;
    s.create_bank(&NewBank {
        name: "LOCAL".into(),
        enabled_ratio: 1.0,
    })
    .await
    .unwrap();
    let local = s
        .create_content(
            "LOCAL",
            &NewContent::with_signals(BTreeMap::from([("pdq".to_string(), pdq(1))])),
        )
        .await
        .unwrap();
    let r = s
        .create_review(
            "LOCAL",
            local.id,
            &review(ReviewOpinion::TruePositive, " alice "),
        )
        .await
        .unwrap();
    assert_eq!(r.content_id, local.id);
    assert_eq!(r.reviewer, "alice");
    assert_eq!(r.signal_type.as_deref(), Some("pdq"));
    assert!(
        r.deliveries.is_empty(),
        "local content has nothing to write back"
    );
    assert!(r.created_at > 0);

    exchange(s, "TE", "fb_threatexchange").await;
    exchange(s, "TAT", "tat").await;
    let meta = json!({"indicator_id": "42", "opinions": [{"descriptor_id": "7"}]});
    s.apply_fetch_batch(
        "TE",
        &batch(
            vec![record(
                "42",
                &[("pdq", &pdq(2)), ("video_md5", "ab")],
                meta.clone(),
            )],
            json!({"cp": 1}),
        ),
    )
    .await
    .unwrap();
    s.apply_fetch_batch(
        "TAT",
        &batch(
            vec![record("x", &[("pdq", &pdq(3))], json!({}))],
            json!({"cp": 1}),
        ),
    )
    .await
    .unwrap();
    let te = s.list_content("TE", 0, 10).await.unwrap().remove(0);
    let tat = s.list_content("TAT", 0, 10).await.unwrap().remove(0);

    let mut fp = review(ReviewOpinion::FalsePositive, "bob");
    fp.note = Some("a cat".into());
    fp.signal_type = Some("video_md5".into());
    let r = s.create_review("TE", te.id, &fp).await.unwrap();
    assert_eq!(r.opinion, ReviewOpinion::FalsePositive);
    assert_eq!(r.note.as_deref(), Some("a cat"));
    assert_eq!(r.deliveries.len(), 1);
    let d = &r.deliveries[0];
    assert_eq!(d.exchange_name, "TE");
    assert_eq!(d.exchange_api, "fb_threatexchange");
    assert_eq!(d.record_key, "42");
    assert_eq!(d.record_metadata, meta);
    assert_eq!(
        (d.signal_type.as_str(), d.signal_value.as_str()),
        ("video_md5", "ab")
    );
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts, 0);
    assert!(d.next_attempt_at.is_some());

    // An exchange whose API takes no reviews: stored only.
    let r = s
        .create_review("TAT", tat.id, &review(ReviewOpinion::TruePositive, "carol"))
        .await
        .unwrap();
    assert_eq!(r.deliveries[0].state, DeliveryState::Unsupported);
    assert_eq!(r.deliveries[0].next_attempt_at, None);

    // Listing: oldest first, per content.
    s.create_review("TE", te.id, &review(ReviewOpinion::TruePositive, "dave"))
        .await
        .unwrap();
    let listed = s.list_reviews("TE", te.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| r.reviewer.as_str())
            .collect::<Vec<_>>(),
        ["bob", "dave"]
    );
    assert!(listed[0].id < listed[1].id);
    assert_eq!(s.list_reviews("LOCAL", local.id).await.unwrap().len(), 1);
    // Survives a reopen (another process).
    let again = h.reopen().await;
    assert_eq!(again.list_reviews("TE", te.id).await.unwrap(), listed);
}

async fn review_validation_and_scoping(h: &Harness) {
    let s = &h.store;
    s.create_bank(&NewBank {
        name: "B".into(),
        enabled_ratio: 1.0,
    })
    .await
    .unwrap();
    s.create_bank(&NewBank {
        name: "OTHER".into(),
        enabled_ratio: 1.0,
    })
    .await
    .unwrap();
    let c = s
        .create_content(
            "B",
            &NewContent::with_signals(BTreeMap::from([("pdq".to_string(), pdq(1))])),
        )
        .await
        .unwrap();
    let ok = review(ReviewOpinion::TruePositive, "alice");
    let invalid = |e: Result<Review>| matches!(e, Err(StoreError::InvalidArgument(_)));
    let mut r = ok.clone();
    r.reviewer = "  ".into();
    assert!(invalid(s.create_review("B", c.id, &r).await));
    let mut r = ok.clone();
    r.reviewer = "x".repeat(256);
    assert!(invalid(s.create_review("B", c.id, &r).await));
    let mut r = ok.clone();
    r.note = Some("n".repeat(MAX_REVIEW_NOTE_CHARS + 1));
    assert!(invalid(s.create_review("B", c.id, &r).await));
    let mut r = ok.clone();
    r.disable_matching = true;
    assert!(invalid(s.create_review("B", c.id, &r).await));
    let mut r = ok.clone();
    r.signal_type = Some("video_md5".into());
    assert!(invalid(s.create_review("B", c.id, &r).await));
    let not_found = |e: Result<Review>| matches!(e, Err(StoreError::NotFound { .. }));
    assert!(not_found(s.create_review("NOPE", c.id, &ok).await));
    assert!(not_found(s.create_review("OTHER", c.id, &ok).await));
    assert!(not_found(s.create_review("B", c.id + 1000, &ok).await));
    assert!(matches!(
        s.list_reviews("OTHER", c.id).await,
        Err(StoreError::NotFound { .. })
    ));
    // Nothing was stored by the refused calls.
    assert!(s.list_reviews("B", c.id).await.unwrap().is_empty());
    assert_eq!(s.get_content("B", c.id).await.unwrap().disable_until_ts, 1);
}

async fn false_positive_can_disable_through_change_log(h: &Harness) {
    let s = &h.store;
    exchange(s, "NC", "ncmec").await;
    s.apply_fetch_batch(
        "NC",
        &batch(
            vec![record("7-a", &[("pdq", &pdq(9))], json!({}))],
            json!({}),
        ),
    )
    .await
    .unwrap();
    let c = s.list_content("NC", 0, 10).await.unwrap().remove(0);
    let head = s.current_seq().await.unwrap();
    // An opinion alone changes nothing that matchers see.
    s.create_review("NC", c.id, &review(ReviewOpinion::FalsePositive, "a"))
        .await
        .unwrap();
    assert_eq!(s.current_seq().await.unwrap(), head);
    assert_eq!(s.get_content("NC", c.id).await.unwrap().disable_until_ts, 1);
    // With disable_matching, the content is disabled for good and the change is logged.
    let mut r = review(ReviewOpinion::FalsePositive, "b");
    r.disable_matching = true;
    let stored = s.create_review("NC", c.id, &r).await.unwrap();
    assert!(stored.disabled_matching);
    assert_eq!(s.get_content("NC", c.id).await.unwrap().disable_until_ts, 0);
    let changes = all_changes(s, head).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(
        changes[0].event,
        ChangeEvent::ContentUpserted {
            content_id: c.id,
            bank_id: c.bank.id,
            disable_until_ts: 0
        }
    );
}

async fn deliveries_claim_and_finish(h: &Harness) {
    let s = &h.store;
    exchange(s, "TE", "fb_threatexchange").await;
    s.apply_fetch_batch(
        "TE",
        &batch(
            vec![
                record("1", &[("pdq", &pdq(1))], json!({"n": 1})),
                record("2", &[("pdq", &pdq(2))], json!({"n": 2})),
            ],
            json!({}),
        ),
    )
    .await
    .unwrap();
    let contents = s.list_content("TE", 0, 10).await.unwrap();
    for c in &contents {
        s.create_review("TE", c.id, &review(ReviewOpinion::TruePositive, "r"))
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(300);
    let jobs = s.claim_review_deliveries(10, lease).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].opinion, ReviewOpinion::TruePositive);
    assert_eq!(jobs[0].exchange_config, json!({"privacy_group": 1}));
    // Claimed: a second claimer (another process) gets nothing.
    let other = h.reopen().await;
    assert!(other
        .claim_review_deliveries(10, lease)
        .await
        .unwrap()
        .is_empty());

    s.finish_review_delivery(jobs[0].delivery.id, &DeliveryOutcome::Delivered)
        .await
        .unwrap();
    let past = 1; // due long ago
    s.finish_review_delivery(
        jobs[1].delivery.id,
        &DeliveryOutcome::Failed {
            message: "HTTP 503".into(),
            retry_at: Some(past),
        },
    )
    .await
    .unwrap();
    let d0 = &s.list_reviews("TE", contents[0].id).await.unwrap()[0].deliveries[0];
    assert_eq!(d0.state, DeliveryState::Delivered);
    assert_eq!(d0.attempts, 1);
    assert!(d0.delivered_at.is_some() && d0.next_attempt_at.is_none());
    let d1 = &s.list_reviews("TE", contents[1].id).await.unwrap()[0].deliveries[0];
    assert_eq!(d1.state, DeliveryState::Failed);
    assert_eq!(d1.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(d1.attempts, 1);
    assert!(d1.last_attempt_at.is_some());

    // The failed one is due again; the delivered one never.
    let again = other.claim_review_deliveries(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.id, jobs[1].delivery.id);
    assert_eq!(again[0].delivery.attempts, 1);
    // A permanent failure is not retried; unsupported neither.
    other
        .finish_review_delivery(
            again[0].delivery.id,
            &DeliveryOutcome::Failed {
                message: "no descriptor".into(),
                retry_at: None,
            },
        )
        .await
        .unwrap();
    assert!(s
        .claim_review_deliveries(10, lease)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.finish_review_delivery(999_999, &DeliveryOutcome::Delivered)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn reviews_outlive_content(h: &Harness) {
    let s = &h.store;
    exchange(s, "TE", "fb_threatexchange").await;
    s.apply_fetch_batch(
        "TE",
        &batch(vec![record("1", &[("pdq", &pdq(1))], json!({}))], json!({})),
    )
    .await
    .unwrap();
    let c = s.list_content("TE", 0, 10).await.unwrap().remove(0);
    s.create_review("TE", c.id, &review(ReviewOpinion::FalsePositive, "r"))
        .await
        .unwrap();
    // The record goes upstream: the pending write-back is still delivered.
    s.apply_fetch_batch(
        "TE",
        &batch(
            vec![RecordUpdate {
                key: "1".into(),
                record: None,
            }],
            json!({}),
        ),
    )
    .await
    .unwrap();
    let jobs = s
        .claim_review_deliveries(10, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].delivery.record_key, "1");
    // Deleting the exchange drops its deliveries (nothing left to deliver to).
    s.delete_exchange("TE").await.unwrap();
    assert!(matches!(
        s.finish_review_delivery(jobs[0].delivery.id, &DeliveryOutcome::Delivered)
            .await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn listing_mark_and_sweep(h: &Harness) {
    let s = &h.store;
    exchange(s, "EX", "sample").await;
    let mark = |id, complete| ListingMark {
        listing_id: id,
        complete,
    };
    // First listing: a, b, c.
    s.apply_listing_batch(
        "EX",
        &batch(
            vec![
                record("a", &[("pdq", &pdq(1))], json!({})),
                record("b", &[("pdq", &pdq(2))], json!({})),
            ],
            json!({"l": 1}),
        ),
        &mark(1, false),
    )
    .await
    .unwrap();
    let out = s
        .apply_listing_batch(
            "EX",
            &batch(
                vec![record("c", &[("pdq", &pdq(3))], json!({}))],
                json!({"l": 1, "done": true}),
            ),
            &mark(1, true),
        )
        .await
        .unwrap();
    assert_eq!((out.records_deleted, out.item_count), (0, 3));
    // An incremental update in between (not part of any listing).
    s.apply_fetch_batch(
        "EX",
        &batch(
            vec![record("d", &[("pdq", &pdq(4))], json!({}))],
            json!({"inc": 1}),
        ),
    )
    .await
    .unwrap();
    let c_content = s.list_content("EX", 0, 10).await.unwrap()[2].clone();
    assert_eq!(c_content.provenance.as_ref().unwrap().record_key, "c");

    // Second listing: a (unchanged), c (new value), e (new). b and d vanished upstream.
    let head = s.current_seq().await.unwrap();
    s.apply_listing_batch(
        "EX",
        &batch(
            vec![
                record("a", &[("pdq", &pdq(1))], json!({})),
                record("c", &[("pdq", &pdq(33))], json!({})),
            ],
            json!({"l": 2}),
        ),
        &mark(2, false),
    )
    .await
    .unwrap();
    // Midway nothing is removed: every old record still matches.
    assert_eq!(keys(s, "EX").await, ["a", "b", "c", "d"]);
    let midway = all_changes(s, head).await;
    // Only the changed signal of c is logged (delete old + upsert new), not a.
    assert_eq!(midway.len(), 2, "{midway:?}");
    assert!(midway.iter().all(|c| matches!(
        &c.event,
        ChangeEvent::SignalDeleted { content_id, .. } | ChangeEvent::SignalUpserted { content_id, .. }
            if *content_id == c_content.id
    )));
    let mid = all_changes(s, 0).await.last().unwrap().seq;
    let out = s
        .apply_listing_batch(
            "EX",
            &batch(
                vec![record("e", &[("pdq", &pdq(5))], json!({}))],
                json!({"l": 2, "done": true}),
            ),
            &mark(2, true),
        )
        .await
        .unwrap();
    assert_eq!(out.records_deleted, 2);
    assert_eq!(out.item_count, 3);
    assert_eq!(s.fetch_status("EX").await.unwrap().item_count, 3);
    assert_eq!(keys(s, "EX").await, ["a", "c", "e"]);
    // The sweep went through the change log: signals and content of b and d deleted.
    let swept = all_changes(s, mid).await;
    let deleted_contents = swept
        .iter()
        .filter(|c| matches!(c.event, ChangeEvent::ContentDeleted { .. }))
        .count();
    let deleted_signals: Vec<String> = swept
        .iter()
        .filter_map(|c| match &c.event {
            ChangeEvent::SignalDeleted { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(deleted_contents, 2);
    let mut deleted_signals = deleted_signals;
    deleted_signals.sort();
    assert_eq!(deleted_signals, [pdq(2), pdq(4)]);
}

async fn listing_interrupted_keeps_old_records(h: &Harness) {
    let s = &h.store;
    exchange(s, "EX", "sample").await;
    let mark = |id, complete| ListingMark {
        listing_id: id,
        complete,
    };
    s.apply_listing_batch(
        "EX",
        &batch(
            vec![
                record("a", &[("pdq", &pdq(1))], json!({})),
                record("b", &[("pdq", &pdq(2))], json!({})),
            ],
            json!({"l": 1}),
        ),
        &mark(1, true),
    )
    .await
    .unwrap();
    // A new listing starts and the process dies after its first batch ...
    s.apply_listing_batch(
        "EX",
        &batch(
            vec![record("b", &[("pdq", &pdq(2))], json!({}))],
            json!({"l": 2}),
        ),
        &mark(2, false),
    )
    .await
    .unwrap();
    // ... a fault in the completing batch rolls it back, sweep included ...
    s.inject_fault_before_checkpoint(true);
    assert!(s
        .apply_listing_batch(
            "EX",
            &batch(
                vec![record("c", &[("pdq", &pdq(3))], json!({}))],
                json!({"l": 2, "done": 1})
            ),
            &mark(2, true),
        )
        .await
        .is_err());
    s.inject_fault_before_checkpoint(false);
    let reopened = h.reopen().await;
    assert_eq!(keys(&reopened, "EX").await, ["a", "b"]);
    assert_eq!(
        reopened
            .fetch_checkpoint("EX")
            .await
            .unwrap()
            .unwrap()
            .value,
        json!({"l": 2})
    );
    // ... and the resumed listing completes: only now does a go.
    let out = reopened
        .apply_listing_batch(
            "EX",
            &batch(
                vec![record("c", &[("pdq", &pdq(3))], json!({}))],
                json!({"l": 2, "done": 1}),
            ),
            &mark(2, true),
        )
        .await
        .unwrap();
    assert_eq!((out.records_deleted, out.item_count), (1, 2));
    assert_eq!(keys(&reopened, "EX").await, ["b", "c"]);
}
