//! Reviews and their write-back deliveries (PostgreSQL).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{begin_write, content_in_bank, parse_json, pe, PgStore};
use crate::error::{Entity, Result, StoreError};
use crate::model::*;
use crate::now_secs;
use crate::reviews::{outcome_columns, pick_signal};

const DELIVERY_SELECT: &str =
    "SELECT d.id, d.review_id, d.exchange_id, e.name, e.api, d.record_key,
        d.record_metadata_json, d.signal_type, d.signal_value, d.state, d.attempts, d.last_error,
        d.last_attempt_at, d.next_attempt_at, d.delivered_at
     FROM review_delivery d JOIN exchange e ON e.id = d.exchange_id";

fn delivery_from_row(r: &Row) -> Result<ReviewDelivery> {
    let state: String = r.try_get(9).map_err(pe)?;
    Ok(ReviewDelivery {
        id: r.try_get(0).map_err(pe)?,
        review_id: r.try_get(1).map_err(pe)?,
        exchange_id: r.try_get(2).map_err(pe)?,
        exchange_name: r.try_get(3).map_err(pe)?,
        exchange_api: r.try_get(4).map_err(pe)?,
        record_key: r.try_get(5).map_err(pe)?,
        record_metadata: parse_json(r.try_get(6).map_err(pe)?)?,
        signal_type: r.try_get(7).map_err(pe)?,
        signal_value: r.try_get(8).map_err(pe)?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::backend(format!("unknown delivery state '{state}'")))?,
        attempts: r.try_get(10).map_err(pe)?,
        last_error: r.try_get(11).map_err(pe)?,
        last_attempt_at: r.try_get(12).map_err(pe)?,
        next_attempt_at: r.try_get(13).map_err(pe)?,
        delivered_at: r.try_get(14).map_err(pe)?,
    })
}

async fn deliveries_where<C: GenericClient>(
    c: &C,
    clause: &str,
    id: i64,
) -> Result<Vec<ReviewDelivery>> {
    let rows = c
        .query(
            &format!("{DELIVERY_SELECT} WHERE {clause} ORDER BY d.id"),
            &[&id],
        )
        .await
        .map_err(pe)?;
    rows.iter().map(delivery_from_row).collect()
}

async fn reviews_of<C: GenericClient>(
    c: &C,
    content_id: i64,
    only_id: Option<i64>,
) -> Result<Vec<Review>> {
    let rows = c
        .query(
            "SELECT id, content_id, bank_id, opinion, note, reviewer, signal_type,
                    disabled_matching, created_at
             FROM content_review WHERE content_id = $1 AND ($2::bigint IS NULL OR id = $2)
             ORDER BY id",
            &[&content_id, &only_id],
        )
        .await
        .map_err(pe)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get(0).map_err(pe)?;
        let op: String = r.try_get(3).map_err(pe)?;
        out.push(Review {
            id,
            content_id: r.try_get(1).map_err(pe)?,
            bank_id: r.try_get(2).map_err(pe)?,
            opinion: ReviewOpinion::parse(&op)
                .ok_or_else(|| StoreError::backend(format!("unknown opinion '{op}'")))?,
            note: r.try_get(4).map_err(pe)?,
            reviewer: r.try_get(5).map_err(pe)?,
            signal_type: r.try_get(6).map_err(pe)?,
            disabled_matching: r.try_get(7).map_err(pe)?,
            created_at: r.try_get(8).map_err(pe)?,
            deliveries: deliveries_where(c, "d.review_id = $1", id).await?,
        });
    }
    Ok(out)
}

impl PgStore {
    pub(crate) async fn create_review(
        &self,
        bank: &str,
        content_id: i64,
        review: &NewReview,
    ) -> Result<Review> {
        let mut c = self.primary().await?;
        // The change-log lock: a review may disable the content (a logged change).
        let tx = begin_write(&mut c).await?;
        let content = content_in_bank(&tx, bank, content_id).await?;
        let signal = pick_signal(&content, review.signal_type.as_deref())?;
        let now = now_secs();
        let review_id: i64 = tx
            .query_one(
                "INSERT INTO content_review (content_id, bank_id, opinion, note, reviewer,
                     signal_type, disabled_matching, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                &[
                    &content.id,
                    &content.bank.id,
                    &review.opinion.as_str(),
                    &review.note,
                    &review.reviewer,
                    &signal.as_ref().map(|s| s.0.as_str()),
                    &review.disable_matching,
                    &now,
                ],
            )
            .await
            .map_err(pe)?
            .try_get(0)
            .map_err(pe)?;
        if let (Some(p), Some((st, sv))) = (&content.provenance, &signal) {
            let api: String = tx
                .query_one("SELECT api FROM exchange WHERE id = $1", &[&p.exchange_id])
                .await
                .map_err(pe)?
                .try_get(0)
                .map_err(pe)?;
            let pending = review.write_back_apis.contains(&api);
            let (state, next) = if pending {
                (DeliveryState::Pending, Some(now))
            } else {
                (DeliveryState::Unsupported, None)
            };
            tx.execute(
                "INSERT INTO review_delivery (review_id, exchange_id, record_key,
                     record_metadata_json, signal_type, signal_value, state, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &review_id,
                    &p.exchange_id,
                    &p.record_key,
                    &p.record_metadata.to_string(),
                    st,
                    sv,
                    &state.as_str(),
                    &next,
                ],
            )
            .await
            .map_err(pe)?;
        }
        if review.disable_matching {
            // The content trigger logs the change: matchers stop matching it.
            tx.execute(
                "UPDATE bank_content SET disable_until_ts = $1, updated_at = $2 WHERE id = $3",
                &[&CONTENT_DISABLED_FOREVER, &now, &content.id],
            )
            .await
            .map_err(pe)?;
        }
        let out = reviews_of(&tx, content.id, Some(review_id))
            .await?
            .pop()
            .ok_or_else(|| StoreError::backend("stored review missing"))?;
        tx.commit().await.map_err(pe)?;
        Ok(out)
    }

    pub(crate) async fn list_reviews(&self, bank: &str, content_id: i64) -> Result<Vec<Review>> {
        let c = self.primary().await?;
        let content = content_in_bank(&c, bank, content_id).await?;
        reviews_of(&c, content.id, None).await
    }

    pub(crate) async fn claim_review_deliveries(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<DeliveryJob>> {
        let mut c = self.primary().await?;
        let tx = c.transaction().await.map_err(pe)?;
        let now = now_secs();
        let until = now.saturating_add(lease.as_secs().max(1) as i64);
        // SKIP LOCKED: concurrent claimers (other processes) take disjoint rows.
        let rows = tx
            .query(
                "UPDATE review_delivery d SET next_attempt_at = $2
                 FROM (SELECT id FROM review_delivery
                       WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1
                         AND state IN ('pending', 'failed')
                       ORDER BY next_attempt_at, id LIMIT $3
                       FOR UPDATE SKIP LOCKED) s
                 WHERE d.id = s.id RETURNING d.id",
                &[&now, &until, &i64::from(limit)],
            )
            .await
            .map_err(pe)?;
        let mut ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get(0).map_err(pe))
            .collect::<Result<_>>()?;
        ids.sort_unstable();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let delivery = deliveries_where(&tx, "d.id = $1", id)
                .await?
                .pop()
                .ok_or_else(|| StoreError::backend("claimed delivery missing"))?;
            let row = tx
                .query_one(
                    "SELECT r.opinion, e.config_json FROM review_delivery d
                     JOIN content_review r ON r.id = d.review_id
                     JOIN exchange e ON e.id = d.exchange_id WHERE d.id = $1",
                    &[&id],
                )
                .await
                .map_err(pe)?;
            let opinion: String = row.try_get(0).map_err(pe)?;
            jobs.push(DeliveryJob {
                delivery,
                opinion: ReviewOpinion::parse(&opinion)
                    .ok_or_else(|| StoreError::backend(format!("unknown opinion '{opinion}'")))?,
                exchange_config: parse_json(row.try_get(1).map_err(pe)?)?,
            });
        }
        tx.commit().await.map_err(pe)?;
        Ok(jobs)
    }

    pub(crate) async fn finish_review_delivery(
        &self,
        delivery_id: i64,
        outcome: &DeliveryOutcome,
    ) -> Result<()> {
        let c = self.primary().await?;
        let now = now_secs();
        let (state, error, next, delivered) = outcome_columns(outcome, now);
        let n = c
            .execute(
                "UPDATE review_delivery SET state = $1, last_error = $2, next_attempt_at = $3,
                     delivered_at = $4, last_attempt_at = $5, attempts = attempts + 1
                 WHERE id = $6",
                &[
                    &state.as_str(),
                    &error,
                    &next,
                    &delivered,
                    &now,
                    &delivery_id,
                ],
            )
            .await
            .map_err(pe)?;
        if n == 0 {
            return Err(StoreError::not_found(Entity::ReviewDelivery, delivery_id));
        }
        Ok(())
    }
}
