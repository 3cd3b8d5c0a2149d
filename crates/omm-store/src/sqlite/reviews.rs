//! Reviews and their write-back deliveries (SQLite).

use std::time::Duration;

use rusqlite::{params, Connection};

use super::{be, content_in_bank, parse_json, SqliteStore};
use crate::error::{Entity, Result, StoreError};
use crate::model::*;
use crate::now_secs;
use crate::reviews::{outcome_columns, pick_signal};

const DELIVERY_SELECT: &str =
    "SELECT d.id, d.review_id, d.exchange_id, e.name, e.api, d.record_key,
        d.record_metadata_json, d.signal_type, d.signal_value, d.state, d.attempts, d.last_error,
        d.last_attempt_at, d.next_attempt_at, d.delivered_at
     FROM review_delivery d JOIN exchange e ON e.id = d.exchange_id";

type RawDelivery = (
    (i64, i64, i64, String, String, String),
    (String, String, String, String, i64),
    (Option<String>, Option<i64>, Option<i64>, Option<i64>),
);

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok((
        (
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ),
        (r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?, r.get(10)?),
        (r.get(11)?, r.get(12)?, r.get(13)?, r.get(14)?),
    ))
}

fn finish_delivery(raw: RawDelivery) -> Result<ReviewDelivery> {
    let ((id, review_id, exchange_id, exchange_name, exchange_api, record_key), b, c) = raw;
    let (meta, signal_type, signal_value, state, attempts) = b;
    let (last_error, last_attempt_at, next_attempt_at, delivered_at) = c;
    Ok(ReviewDelivery {
        id,
        review_id,
        exchange_id,
        exchange_name,
        exchange_api,
        record_key,
        record_metadata: parse_json(&meta)?,
        signal_type,
        signal_value,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::backend(format!("unknown delivery state '{state}'")))?,
        attempts,
        last_error,
        last_attempt_at,
        next_attempt_at,
        delivered_at,
    })
}

fn deliveries_where(c: &Connection, clause: &str, id: i64) -> Result<Vec<ReviewDelivery>> {
    let mut st = c
        .prepare_cached(&format!("{DELIVERY_SELECT} WHERE {clause} ORDER BY d.id"))
        .map_err(be)?;
    let rows = st.query_map([id], delivery_row).map_err(be)?;
    rows.map(|r| r.map_err(be).and_then(finish_delivery))
        .collect()
}

fn reviews_of(c: &Connection, content_id: i64, only_id: Option<i64>) -> Result<Vec<Review>> {
    let mut st = c
        .prepare_cached(
            "SELECT id, content_id, bank_id, opinion, note, reviewer, signal_type,
                    disabled_matching, created_at
             FROM content_review WHERE content_id = ?1 AND (?2 IS NULL OR id = ?2) ORDER BY id",
        )
        .map_err(be)?;
    type Raw = (
        i64,
        i64,
        i64,
        String,
        Option<String>,
        String,
        Option<String>,
        bool,
        i64,
    );
    let rows = st
        .query_map(params![content_id, only_id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
            ))
        })
        .map_err(be)?;
    let raws: Vec<Raw> = rows.collect::<rusqlite::Result<_>>().map_err(be)?;
    raws.into_iter()
        .map(|(id, cid, bid, op, note, reviewer, st, dis, at)| {
            Ok(Review {
                id,
                content_id: cid,
                bank_id: bid,
                opinion: ReviewOpinion::parse(&op)
                    .ok_or_else(|| StoreError::backend(format!("unknown opinion '{op}'")))?,
                note,
                reviewer,
                signal_type: st,
                disabled_matching: dis,
                created_at: at,
                deliveries: deliveries_where(c, "d.review_id = ?1", id)?,
            })
        })
        .collect()
}

impl SqliteStore {
    pub(crate) async fn create_review(
        &self,
        bank: &str,
        content_id: i64,
        review: &NewReview,
    ) -> Result<Review> {
        let bank = bank.to_string();
        let review = review.clone();
        self.write(move |tx, _| {
            let content = content_in_bank(tx, &bank, content_id)?;
            let signal = pick_signal(&content, review.signal_type.as_deref())?;
            let now = now_secs();
            let review_id: i64 = tx
                .query_row(
                    "INSERT INTO content_review (content_id, bank_id, opinion, note, reviewer,
                         signal_type, disabled_matching, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                    params![
                        content.id,
                        content.bank.id,
                        review.opinion.as_str(),
                        review.note,
                        review.reviewer,
                        signal.as_ref().map(|s| s.0.as_str()),
                        review.disable_matching,
                        now
                    ],
                    |r| r.get(0),
                )
                .map_err(be)?;
            if let (Some(p), Some((st, sv))) = (&content.provenance, &signal) {
                let api: String = tx
                    .query_row(
                        "SELECT api FROM exchange WHERE id = ?1",
                        [p.exchange_id],
                        |r| r.get(0),
                    )
                    .map_err(be)?;
                let pending = review.write_back_apis.contains(&api);
                let (state, next) = if pending {
                    (DeliveryState::Pending, Some(now))
                } else {
                    (DeliveryState::Unsupported, None)
                };
                tx.execute(
                    "INSERT INTO review_delivery (review_id, exchange_id, record_key,
                         record_metadata_json, signal_type, signal_value, state, next_attempt_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        review_id,
                        p.exchange_id,
                        p.record_key,
                        p.record_metadata.to_string(),
                        st,
                        sv,
                        state.as_str(),
                        next
                    ],
                )
                .map_err(be)?;
            }
            if review.disable_matching {
                // The content trigger logs the change: matchers stop matching it.
                tx.execute(
                    "UPDATE bank_content SET disable_until_ts = ?1, updated_at = ?2 WHERE id = ?3",
                    params![CONTENT_DISABLED_FOREVER, now, content.id],
                )
                .map_err(be)?;
            }
            reviews_of(tx, content.id, Some(review_id))?
                .pop()
                .ok_or_else(|| StoreError::backend("stored review missing"))
        })
        .await
    }

    pub(crate) async fn list_reviews(&self, bank: &str, content_id: i64) -> Result<Vec<Review>> {
        let bank = bank.to_string();
        self.read(move |c| {
            let content = content_in_bank(c, &bank, content_id)?;
            reviews_of(c, content.id, None)
        })
        .await
    }

    pub(crate) async fn claim_review_deliveries(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DeliveryJob>> {
        self.write(move |tx, _| {
            let now = now_secs();
            let until = now.saturating_add(lease.as_secs().max(1) as i64);
            let ids: Vec<i64> = {
                let mut st = tx
                    .prepare_cached(
                        "SELECT id FROM review_delivery
                         WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= ?1
                           AND state IN ('pending', 'failed')
                         ORDER BY next_attempt_at, id LIMIT ?2",
                    )
                    .map_err(be)?;
                let rows = st
                    .query_map(params![now, limit], |r| r.get(0))
                    .map_err(be)?;
                rows.collect::<rusqlite::Result<_>>().map_err(be)?
            };
            let mut jobs = Vec::with_capacity(ids.len());
            for id in ids {
                tx.execute(
                    "UPDATE review_delivery SET next_attempt_at = ?1 WHERE id = ?2",
                    params![until, id],
                )
                .map_err(be)?;
                let delivery = deliveries_where(tx, "d.id = ?1", id)?
                    .pop()
                    .ok_or_else(|| StoreError::backend("claimed delivery missing"))?;
                let (opinion, config): (String, String) = tx
                    .query_row(
                        "SELECT r.opinion, e.config_json FROM review_delivery d
                         JOIN content_review r ON r.id = d.review_id
                         JOIN exchange e ON e.id = d.exchange_id WHERE d.id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(be)?;
                jobs.push(DeliveryJob {
                    delivery,
                    opinion: ReviewOpinion::parse(&opinion).ok_or_else(|| {
                        StoreError::backend(format!("unknown opinion '{opinion}'"))
                    })?,
                    exchange_config: parse_json(&config)?,
                });
            }
            Ok(jobs)
        })
        .await
    }

    pub(crate) async fn finish_review_delivery(
        &self,
        delivery_id: i64,
        outcome: &DeliveryOutcome,
    ) -> Result<()> {
        let outcome = outcome.clone();
        self.write(move |tx, _| {
            let now = now_secs();
            let (state, error, next, delivered) = outcome_columns(&outcome, now);
            let n = tx
                .execute(
                    "UPDATE review_delivery SET state = ?1, last_error = ?2, next_attempt_at = ?3,
                         delivered_at = ?4, last_attempt_at = ?5, attempts = attempts + 1
                     WHERE id = ?6",
                    params![state.as_str(), error, next, delivered, now, delivery_id],
                )
                .map_err(be)?;
            if n == 0 {
                return Err(StoreError::not_found(Entity::ReviewDelivery, delivery_id));
            }
            Ok(())
        })
        .await
    }
}
