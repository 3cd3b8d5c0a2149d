//! PostgreSQL backend: a deadpool connection pool for the primary (and one for an optional
//! read replica), set-based bulk writes with `UNNEST` arrays, statement-level change-log
//! triggers, and a LISTEN connection for wake-up hints.
//!
//! Every transaction that may write change-log entries starts with
//! `pg_advisory_xact_lock(7171, hashtext(current_schema()))`: write transactions of one schema
//! run one at a time, so sequence numbers are drawn in commit order (see `crate::changes`).
//! Taking it first (rather than only in the triggers) also rules out lock-order deadlocks
//! between the advisory lock and row locks. Those transactions commit asynchronously and are
//! flushed after the lock is released (`begin_write`, `flush_commit`, `wait_durable`).

mod reviews;
mod schema;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures_util::{pin_mut, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::batch;
use crate::changes::{ChangeSubscription, ContentState, ExchangeState, RawChange, StateSnapshot};
use crate::error::{Entity, Result, StoreError};
use crate::model::*;
use crate::{now_millis, now_secs, AppliedMigration, Change, PostgresOptions};

/// Advisory lock class of the change log (second key: hash of the schema name).
const CHANGE_LOCK_CLASS: i32 = 7171;
/// Advisory lock class of migrations.
const MIGRATION_LOCK_CLASS: i32 = 7170;
const NOTIFY_CHANNEL: &str = "omm_changes";

pub(crate) struct PgStore {
    inner: Arc<PgInner>,
}

struct PgInner {
    primary: Pool,
    replica: Option<Pool>,
    /// Config and TLS connector of the primary, for the dedicated LISTEN connection.
    listen_config: (tokio_postgres::Config, MakeRustlsConnect),
    schema: Option<String>,
    notify: watch::Sender<u64>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    fault_before_checkpoint: AtomicBool,
}

impl Drop for PgInner {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock() {
            if let Some(h) = l.take() {
                h.abort();
            }
        }
    }
}

fn pe(e: tokio_postgres::Error) -> StoreError {
    StoreError::backend(e)
}

fn is_unique(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

fn parse_json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(StoreError::backend)
}

fn valid_schema_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_lowercase() || c == b'_')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && s.len() <= 63
}

fn make_pool(
    url: &str,
    schema: Option<&str>,
    max: usize,
) -> Result<(Pool, (tokio_postgres::Config, MakeRustlsConnect))> {
    let tls::ConnectSpec {
        config: mut cfg,
        tls,
        verify,
    } = tls::parse(url)?;
    tracing::debug!(ssl_mode = ?cfg.get_ssl_mode(), ?verify, "PostgreSQL connection settings");
    if let Some(s) = schema {
        cfg.options(format!("-c search_path={s}"));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name("omm");
    }
    let mgr = Manager::from_config(
        cfg.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(mgr)
        .max_size(max.max(1))
        .build()
        .map_err(StoreError::backend)?;
    Ok((pool, (cfg, tls)))
}

async fn get(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(StoreError::backend)
}

/// Starts a write transaction holding the change-log lock.
///
/// Its commit is asynchronous (`synchronous_commit = off`): the commit becomes visible and
/// releases the lock without waiting for the WAL flush, so concurrent writers share flushes
/// instead of taking turns at one fsync each. Every caller must follow the commit with
/// [`flush_commit`] before reporting success, and change-log readers wait for durability
/// ([`wait_durable`]) so that nothing read can be lost in a server crash.
async fn begin_write(client: &mut Object) -> Result<deadpool_postgres::Transaction<'_>> {
    let tx = client.transaction().await.map_err(pe)?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({CHANGE_LOCK_CLASS}, hashtext(current_schema()));
         SET LOCAL synchronous_commit = off"
    ))
    .await
    .map_err(pe)?;
    Ok(tx)
}

/// Makes this session's last commit durable: a tiny transaction that writes WAL commits with
/// the session's own `synchronous_commit` (normally `on`), and its commit flush covers every
/// WAL record before it, ours included. Runs outside the change-log lock, so the flushes of
/// concurrent writers are combined (group commit).
async fn flush_commit(c: &Client) -> Result<()> {
    c.batch_execute("SELECT pg_logical_emit_message(true, 'omm_flush', '')")
        .await
        .map_err(pe)
}

/// How [`wait_durable`] forces a WAL flush.
enum Flush<'a> {
    /// On the reading connection itself (not inside a transaction).
    Here,
    /// On a fresh connection: the reader is inside a read-only snapshot, and a pooled
    /// connection could deadlock a pool of one.
    Connect(&'a (tokio_postgres::Config, MakeRustlsConnect)),
}

/// Waits until every commit visible to statements already run on `c` is flushed to disk, so
/// a reader never acts on a change that a server crash could still undo (a lost commit could
/// also give its sequence numbers out again).
async fn wait_durable<C: deadpool_postgres::GenericClient>(c: &C, flush: Flush<'_>) -> Result<()> {
    // The insert position read now is past the commit record of everything visible so far.
    let row = c
        .query_one(
            "SELECT pg_current_wal_insert_lsn()::text,
                    pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()",
            &[],
        )
        .await
        .map_err(pe)?;
    if row.try_get::<_, bool>(1).map_err(pe)? {
        return Ok(());
    }
    let target: String = row.try_get(0).map_err(pe)?;
    // A WAL-writing transaction whose commit flushes locally (`local`: what is needed here,
    // whatever the session default); the flush covers all WAL before its commit record.
    const FORCE: &str = "BEGIN; SET LOCAL synchronous_commit = local;
         SELECT pg_logical_emit_message(true, 'omm_flush', ''); COMMIT";
    match flush {
        Flush::Here => c.batch_execute(FORCE).await.map_err(pe)?,
        Flush::Connect((cfg, tls)) => {
            let (client, conn) = cfg.connect(tls.clone()).await.map_err(pe)?;
            let conn = tokio::spawn(conn);
            let res = client.batch_execute(FORCE).await.map_err(pe);
            drop(client);
            let _ = conn.await;
            res?
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flushed: bool = c
            .query_one(
                "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                &[&target],
            )
            .await
            .map_err(pe)?
            .try_get(0)
            .map_err(pe)?;
        if flushed {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StoreError::backend("the WAL was not flushed within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl PgStore {
    pub(crate) async fn open(options: PostgresOptions) -> Result<PgStore> {
        if let Some(s) = &options.schema {
            if !valid_schema_name(s) {
                return Err(StoreError::InvalidArgument(format!(
                    "invalid schema name '{s}': use lowercase letters, digits and _"
                )));
            }
        }
        let schema = options.schema.clone();
        let (primary, listen_config) =
            make_pool(&options.url, schema.as_deref(), options.max_connections)?;
        let replica = match &options.read_replica_url {
            Some(url) => Some(make_pool(url, schema.as_deref(), options.max_connections)?.0),
            None => None,
        };
        {
            let client = get(&primary).await?;
            if let Some(s) = &schema {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))
                    .await
                    .map_err(pe)?;
            }
            migrate(&client).await?;
        }
        let (notify, _) = watch::channel(0u64);
        Ok(PgStore {
            inner: Arc::new(PgInner {
                primary,
                replica,
                listen_config,
                schema,
                notify,
                listener: Mutex::new(None),
                fault_before_checkpoint: AtomicBool::new(false),
            }),
        })
    }

    async fn primary(&self) -> Result<Object> {
        get(&self.inner.primary).await
    }

    /// A connection for read-only queries that tolerate replica lag.
    async fn reader(&self) -> Result<Object> {
        get(self.inner.replica.as_ref().unwrap_or(&self.inner.primary)).await
    }

    pub(crate) async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>> {
        let c = self.primary().await?;
        let rows = c
            .query(
                "SELECT version, name, applied_at FROM omm_schema_migrations ORDER BY version",
                &[],
            )
            .await
            .map_err(pe)?;
        rows.iter()
            .map(|r| {
                Ok(AppliedMigration {
                    version: r.try_get(0).map_err(pe)?,
                    name: r.try_get(1).map_err(pe)?,
                    applied_at: r.try_get(2).map_err(pe)?,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ banks

    pub(crate) async fn list_banks(&self) -> Result<Vec<Bank>> {
        let c = self.primary().await?;
        let rows = c
            .query(&format!("{BANK_SELECT} ORDER BY name"), &[])
            .await
            .map_err(pe)?;
        rows.iter().map(bank_from_row).collect()
    }

    pub(crate) async fn get_bank(&self, name: &str) -> Result<Bank> {
        let c = self.primary().await?;
        bank_by_name(&c, name).await
    }

    pub(crate) async fn get_bank_by_id(&self, id: i64) -> Result<Bank> {
        let c = self.primary().await?;
        let row = c
            .query_opt(&format!("{BANK_SELECT} WHERE id = $1"), &[&id])
            .await
            .map_err(pe)?
            .ok_or_else(|| StoreError::not_found(Entity::Bank, id))?;
        bank_from_row(&row)
    }

    pub(crate) async fn create_bank(&self, bank: &NewBank) -> Result<Bank> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let row = tx
            .query_one(
                "INSERT INTO bank (name, enabled_ratio, created_at) VALUES ($1, $2, $3)
                 RETURNING id, name, enabled_ratio, exchange_id, created_at",
                &[&bank.name, &bank.enabled_ratio, &now_secs()],
            )
            .await
            .map_err(|e| {
                if is_unique(&e) {
                    StoreError::exists(Entity::Bank, &bank.name)
                } else {
                    pe(e)
                }
            })?;
        let b = bank_from_row(&row)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(b)
    }

    pub(crate) async fn update_bank(&self, name: &str, update: &BankUpdate) -> Result<Bank> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let bank = bank_by_name(&tx, name).await?;
        if let Some(new_name) = &update.name {
            if *new_name != bank.name {
                tx.execute(
                    "UPDATE bank SET name = $1 WHERE id = $2",
                    &[new_name, &bank.id],
                )
                .await
                .map_err(|e| {
                    if is_unique(&e) {
                        StoreError::exists(Entity::Bank, new_name)
                    } else {
                        pe(e)
                    }
                })?;
            }
        }
        if let Some(r) = update.enabled_ratio {
            tx.execute(
                "UPDATE bank SET enabled_ratio = $1 WHERE id = $2",
                &[&r, &bank.id],
            )
            .await
            .map_err(pe)?;
        }
        let row = tx
            .query_one(&format!("{BANK_SELECT} WHERE id = $1"), &[&bank.id])
            .await
            .map_err(pe)?;
        let b = bank_from_row(&row)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(b)
    }

    pub(crate) async fn delete_bank(&self, name: &str) -> Result<bool> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let bank = match bank_by_name(&tx, name).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if bank.exchange_id.is_some() {
            return Err(StoreError::Conflict(format!(
                "bank '{name}' is fed by an exchange; delete the exchange instead"
            )));
        }
        let n = tx
            .execute("DELETE FROM bank WHERE id = $1", &[&bank.id])
            .await
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(n > 0)
    }

    // ------------------------------------------------------------ content

    pub(crate) async fn create_content(&self, bank: &str, content: &NewContent) -> Result<Content> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let b = bank_by_name(&tx, bank).await?;
        let now = now_secs();
        let metadata = content.metadata.as_ref().map(|v| v.to_string());
        let id: i64 = tx
            .query_one(
                "INSERT INTO bank_content (bank_id, disable_until_ts, original_media_uri, note,
                     metadata_json, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id",
                &[
                    &b.id,
                    &content.disable_until_ts,
                    &content.original_media_uri,
                    &content.note,
                    &metadata,
                    &now,
                ],
            )
            .await
            .map_err(pe)?
            .try_get(0)
            .map_err(pe)?;
        if !content.signals.is_empty() {
            let types: Vec<&str> = content.signals.keys().map(String::as_str).collect();
            let values: Vec<&str> = content.signals.values().map(String::as_str).collect();
            tx.execute(
                "INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
                 SELECT $1, t, v, $4, $5 FROM unnest($2::text[], $3::text[]) AS u(t, v)",
                &[&id, &types, &values, &b.id, &now],
            )
            .await
            .map_err(pe)?;
        }
        let out = load_contents(&tx, &[id]).await?.pop();
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        out.ok_or_else(|| StoreError::not_found(Entity::Content, id))
    }

    pub(crate) async fn get_content(&self, bank: &str, id: i64) -> Result<Content> {
        let c = self.primary().await?;
        content_in_bank(&c, bank, id).await
    }

    pub(crate) async fn get_contents(&self, ids: &[i64]) -> Result<Vec<Content>> {
        let c = self.reader().await?;
        load_contents(&c, ids).await
    }

    pub(crate) async fn update_content(
        &self,
        bank: &str,
        id: i64,
        update: &ContentUpdate,
    ) -> Result<Content> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        content_in_bank(&tx, bank, id).await?;
        let now = now_secs();
        if let Some(ts) = update.disable_until_ts {
            tx.execute(
                "UPDATE bank_content SET disable_until_ts = $1, updated_at = $2 WHERE id = $3",
                &[&ts, &now, &id],
            )
            .await
            .map_err(pe)?;
        }
        if let Some(note) = &update.note {
            tx.execute(
                "UPDATE bank_content SET note = $1, updated_at = $2 WHERE id = $3",
                &[note, &now, &id],
            )
            .await
            .map_err(pe)?;
        }
        if let Some(meta) = &update.metadata {
            let meta = meta.as_ref().map(|v| v.to_string());
            tx.execute(
                "UPDATE bank_content SET metadata_json = $1, updated_at = $2 WHERE id = $3",
                &[&meta, &now, &id],
            )
            .await
            .map_err(pe)?;
        }
        let out = load_contents(&tx, &[id]).await?.pop();
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        out.ok_or_else(|| StoreError::not_found(Entity::Content, id))
    }

    pub(crate) async fn delete_content(&self, bank: &str, id: i64) -> Result<bool> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let b = bank_by_name(&tx, bank).await?;
        let n = tx
            .execute(
                "DELETE FROM bank_content WHERE id = $1 AND bank_id = $2",
                &[&id, &b.id],
            )
            .await
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(n > 0)
    }

    pub(crate) async fn list_content(
        &self,
        bank: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Content>> {
        let c = self.primary().await?;
        let b = bank_by_name(&c, bank).await?;
        let rows = c
            .query(
                "SELECT id FROM bank_content WHERE bank_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                &[&b.id, &after_id, &i64::from(limit)],
            )
            .await
            .map_err(pe)?;
        let ids = rows
            .iter()
            .map(|r| r.try_get(0).map_err(pe))
            .collect::<Result<Vec<i64>>>()?;
        load_contents(&c, &ids).await
    }

    pub(crate) async fn count_content(&self, bank: &str) -> Result<i64> {
        let c = self.primary().await?;
        let b = bank_by_name(&c, bank).await?;
        c.query_one(
            "SELECT COUNT(*) FROM bank_content WHERE bank_id = $1",
            &[&b.id],
        )
        .await
        .map_err(pe)?
        .try_get(0)
        .map_err(pe)
    }

    pub(crate) async fn list_bank_signals(
        &self,
        bank: &str,
        after_content_id: i64,
        limit: u32,
    ) -> Result<Vec<SignalRow>> {
        let c = self.primary().await?;
        let b = bank_by_name(&c, bank).await?;
        let rows = c
            .query(
                "SELECT s.content_id, s.bank_id, s.signal_type, s.signal_value
                 FROM (SELECT id FROM bank_content WHERE bank_id = $1 AND id > $2 ORDER BY id LIMIT $3) c
                 JOIN content_signal s ON s.content_id = c.id
                 ORDER BY s.content_id, s.signal_type",
                &[&b.id, &after_content_id, &i64::from(limit)],
            )
            .await
            .map_err(pe)?;
        rows.iter().map(signal_from_row).collect()
    }

    pub(crate) async fn get_signals(&self, content_id: i64) -> Result<BTreeMap<String, String>> {
        let c = self.primary().await?;
        let rows = c
            .query(
                "SELECT signal_type, signal_value FROM content_signal WHERE content_id = $1",
                &[&content_id],
            )
            .await
            .map_err(pe)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(pe)?, r.try_get(1).map_err(pe)?)))
            .collect()
    }

    pub(crate) async fn signal_type_stats(&self) -> Result<Vec<SignalTypeStats>> {
        let c = self.reader().await?;
        let rows = c
            .query(
                "SELECT signal_type, COUNT(*), MAX(created_at) FROM content_signal
                 GROUP BY signal_type ORDER BY signal_type",
                &[],
            )
            .await
            .map_err(pe)?;
        rows.iter()
            .map(|r| {
                Ok(SignalTypeStats {
                    signal_type: r.try_get(0).map_err(pe)?,
                    count: r.try_get(1).map_err(pe)?,
                    newest_created_at: r.try_get::<_, Option<i64>>(2).map_err(pe)?.unwrap_or(0),
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ exchanges

    pub(crate) async fn create_exchange(&self, ex: &NewExchange) -> Result<Exchange> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let now = now_secs();
        let id: i64 = tx
            .query_one(
                "INSERT INTO exchange (name, api, enabled, config_json, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) RETURNING id",
                &[&ex.name, &ex.api, &ex.enabled, &ex.config.to_string(), &now],
            )
            .await
            .map_err(|e| {
                if is_unique(&e) {
                    StoreError::exists(Entity::Exchange, &ex.name)
                } else {
                    pe(e)
                }
            })?
            .try_get(0)
            .map_err(pe)?;
        tx.execute(
            "INSERT INTO bank (name, enabled_ratio, exchange_id, created_at) VALUES ($1, 1.0, $2, $3)",
            &[&ex.name, &id, &now],
        )
        .await
        .map_err(|e| {
            if is_unique(&e) {
                StoreError::exists(Entity::Bank, &ex.name)
            } else {
                pe(e)
            }
        })?;
        let out = exchange_by_name(&tx, &ex.name).await?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(out)
    }

    pub(crate) async fn list_exchanges(&self) -> Result<Vec<Exchange>> {
        let c = self.primary().await?;
        let rows = c
            .query(&format!("{EXCHANGE_SELECT} ORDER BY e.name"), &[])
            .await
            .map_err(pe)?;
        rows.iter().map(exchange_from_row).collect()
    }

    pub(crate) async fn get_exchange(&self, name: &str) -> Result<Exchange> {
        let c = self.primary().await?;
        exchange_by_name(&c, name).await
    }

    pub(crate) async fn update_exchange(
        &self,
        name: &str,
        update: &ExchangeUpdate,
    ) -> Result<Exchange> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let ex = exchange_by_name(&tx, name).await?;
        let now = now_secs();
        if let Some(enabled) = update.enabled {
            tx.execute(
                "UPDATE exchange SET enabled = $1, updated_at = $2 WHERE id = $3",
                &[&enabled, &now, &ex.id],
            )
            .await
            .map_err(pe)?;
        }
        if let Some(cfg) = &update.config {
            tx.execute(
                "UPDATE exchange SET config_json = $1, updated_at = $2 WHERE id = $3",
                &[&cfg.to_string(), &now, &ex.id],
            )
            .await
            .map_err(pe)?;
        }
        let out = exchange_by_name(&tx, name).await?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(out)
    }

    pub(crate) async fn delete_exchange(&self, name: &str) -> Result<bool> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let n = tx
            .execute("DELETE FROM exchange WHERE name = $1", &[&name])
            .await
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(n > 0)
    }

    pub(crate) async fn get_exchange_record(
        &self,
        exchange: &str,
        key: &str,
    ) -> Result<ExchangeRecord> {
        let c = self.primary().await?;
        let ex_id = exchange_id(&c, exchange).await?;
        let row = c
            .query_opt(
                "SELECT r.metadata_json, r.updated_at, c.id FROM exchange_record r
                 LEFT JOIN bank_content c ON c.imported_from_id = r.id
                 WHERE r.exchange_id = $1 AND r.fetch_key = $2",
                &[&ex_id, &key],
            )
            .await
            .map_err(pe)?
            .ok_or_else(|| StoreError::not_found(Entity::ExchangeRecord, key))?;
        let content_id: Option<i64> = row.try_get(2).map_err(pe)?;
        let signals = match content_id {
            Some(cid) => self.get_signals(cid).await?,
            None => BTreeMap::new(),
        };
        Ok(ExchangeRecord {
            exchange_id: ex_id,
            key: key.to_string(),
            metadata: parse_json(row.try_get(0).map_err(pe)?)?,
            content_id,
            signals,
            updated_at: row.try_get(1).map_err(pe)?,
        })
    }

    // ------------------------------------------------------------ credentials

    pub(crate) async fn set_api_credentials(
        &self,
        api: &str,
        credentials: Option<&Value>,
    ) -> Result<()> {
        let c = self.primary().await?;
        let creds = credentials.map(|v| v.to_string());
        c.execute(
            "INSERT INTO exchange_api_config (api, credentials_json, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (api) DO UPDATE SET credentials_json = excluded.credentials_json,
                 updated_at = excluded.updated_at",
            &[&api, &creds, &now_secs()],
        )
        .await
        .map_err(pe)?;
        Ok(())
    }

    pub(crate) async fn get_api_credentials(&self, api: &str) -> Result<Option<Value>> {
        let c = self.primary().await?;
        let row = c
            .query_opt(
                "SELECT credentials_json FROM exchange_api_config WHERE api = $1",
                &[&api],
            )
            .await
            .map_err(pe)?;
        match row {
            Some(r) => r
                .try_get::<_, Option<&str>>(0)
                .map_err(pe)?
                .map(parse_json)
                .transpose(),
            None => Ok(None),
        }
    }

    pub(crate) async fn has_api_credentials(&self, api: &str) -> Result<bool> {
        let c = self.primary().await?;
        c.query_one(
            "SELECT EXISTS (SELECT 1 FROM exchange_api_config WHERE api = $1 AND credentials_json IS NOT NULL)",
            &[&api],
        )
        .await
        .map_err(pe)?
        .try_get(0)
        .map_err(pe)
    }

    // ------------------------------------------------------------ fetching

    pub(crate) async fn fetch_status(&self, exchange: &str) -> Result<FetchStatus> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        let row = c
            .query_opt(
                "SELECT running_since, last_complete_ts, last_succeeded, last_success_ts, up_to_date,
                        checkpoint_ts, item_count, last_error
                 FROM exchange_fetch_status WHERE exchange_id = $1",
                &[&id],
            )
            .await
            .map_err(pe)?;
        match row {
            None => Ok(FetchStatus::default()),
            Some(r) => Ok(FetchStatus {
                running_since: r.try_get(0).map_err(pe)?,
                last_complete_ts: r.try_get(1).map_err(pe)?,
                last_succeeded: r.try_get(2).map_err(pe)?,
                last_success_ts: r.try_get(3).map_err(pe)?,
                up_to_date: r.try_get(4).map_err(pe)?,
                checkpoint_ts: r.try_get(5).map_err(pe)?,
                item_count: r.try_get(6).map_err(pe)?,
                last_error: r.try_get(7).map_err(pe)?,
            }),
        }
    }

    pub(crate) async fn fetch_checkpoint(&self, exchange: &str) -> Result<Option<FetchCheckpoint>> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        stored_checkpoint(&c, id).await
    }

    pub(crate) async fn start_fetch(&self, exchange: &str) -> Result<()> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        c.execute(
            "INSERT INTO exchange_fetch_status (exchange_id, running_since) VALUES ($1, $2)
             ON CONFLICT (exchange_id) DO UPDATE SET running_since = excluded.running_since",
            &[&id, &now_secs()],
        )
        .await
        .map_err(pe)?;
        Ok(())
    }

    pub(crate) async fn finish_fetch(&self, exchange: &str, end: &FetchRunEnd) -> Result<()> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        let now = now_secs();
        let up_to_date = end.succeeded && end.up_to_date;
        let error = if end.succeeded {
            None
        } else {
            end.error.clone()
        };
        let success_ts = end.succeeded.then_some(now);
        c.execute(
            "INSERT INTO exchange_fetch_status (exchange_id, running_since, last_complete_ts,
                 last_succeeded, last_success_ts, up_to_date, last_error)
             VALUES ($1, NULL, $2, $3, $4, $5, $6)
             ON CONFLICT (exchange_id) DO UPDATE SET running_since = NULL,
                 last_complete_ts = excluded.last_complete_ts,
                 last_succeeded = excluded.last_succeeded,
                 last_success_ts = COALESCE(excluded.last_success_ts, exchange_fetch_status.last_success_ts),
                 up_to_date = excluded.up_to_date,
                 last_error = excluded.last_error",
            &[&id, &now, &end.succeeded, &success_ts, &up_to_date, &error],
        )
        .await
        .map_err(pe)?;
        Ok(())
    }

    pub(crate) async fn apply_fetch_batch_marked(
        &self,
        exchange: &str,
        batch: &FetchBatch,
        listing: Option<ListingMark>,
    ) -> Result<BatchOutcome> {
        let listing_id = listing.map(|l| l.listing_id);
        let merged = batch::merge(&batch.updates)?;
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        // The per-key lookups below are estimated far above `jit_above_cost` while they run in
        // milliseconds; compiling them took 80-200 ms per batch.
        tx.batch_execute("SET LOCAL jit = off").await.map_err(pe)?;
        let row = tx
            .query_opt(
                "SELECT e.id, b.id FROM exchange e LEFT JOIN bank b ON b.exchange_id = e.id WHERE e.name = $1",
                &[&exchange],
            )
            .await
            .map_err(pe)?
            .ok_or_else(|| StoreError::not_found(Entity::Exchange, exchange))?;
        let ex_id: i64 = row.try_get(0).map_err(pe)?;
        let bank_id: i64 = row
            .try_get::<_, Option<i64>>(1)
            .map_err(pe)?
            .ok_or_else(|| StoreError::Conflict(format!("exchange '{exchange}' has no bank")))?;
        batch::check_guard(&batch.guard, stored_checkpoint(&tx, ex_id).await?.as_ref())?;
        let now = now_secs();
        let mut out = BatchOutcome::default();

        if !merged.deletes.is_empty() {
            // The record's delete trigger removes its content, whose trigger removes the
            // signals; all of it is logged.
            out.records_deleted = tx
                .execute(
                    "DELETE FROM exchange_record WHERE exchange_id = $1 AND fetch_key = ANY($2::text[])",
                    &[&ex_id, &merged.deletes],
                )
                .await
                .map_err(pe)?;
        }

        // Which keys exist already (and with which content)?
        let mut existing: HashMap<String, batch::Existing> = HashMap::new();
        if !merged.upserts.is_empty() {
            let keys: Vec<&str> = merged.upserts.iter().map(|(k, _)| *k).collect();
            // One unique-index probe per key, whatever the statistics say. The plain form
            // (`fetch_key = ANY($2) ... LEFT JOIN bank_content`) is planned from statistics
            // that lag behind a bank being filled: with none yet the planner scans every
            // record of the exchange (an index condition on `exchange_id` only) and hash-joins
            // all content, so each batch cost O(records stored) — about 200 ms per batch of
            // 5,000 at 1M records, more than all the inserts.
            let rows = tx
                .query(
                    "SELECT s.k, s.rid,
                            (SELECT c.id FROM bank_content c WHERE c.imported_from_id = s.rid)
                     FROM (SELECT u.k,
                                  (SELECT r.id FROM exchange_record r
                                   WHERE r.exchange_id = $1 AND r.fetch_key = u.k) AS rid
                           FROM unnest($2::text[]) AS u(k) OFFSET 0) s
                     WHERE s.rid IS NOT NULL",
                    &[&ex_id, &keys],
                )
                .await
                .map_err(pe)?;
            for r in &rows {
                existing.insert(
                    r.try_get(0).map_err(pe)?,
                    batch::Existing {
                        record_id: r.try_get(1).map_err(pe)?,
                        content_id: r.try_get(2).map_err(pe)?,
                    },
                );
            }
        }

        // New records: record, content and signals in one statement.
        let mut new_keys: Vec<&str> = Vec::new();
        let mut new_metas: Vec<String> = Vec::new();
        // Index into `new_keys` of each new signal's record.
        let mut new_sig_rec: Vec<usize> = Vec::new();
        let mut new_sig_types: Vec<&str> = Vec::new();
        let mut new_sig_values: Vec<&str> = Vec::new();
        let mut updated: Vec<(&str, &FetchedRecord, batch::Existing)> = Vec::new();
        for (key, rec) in &merged.upserts {
            match existing.get(*key) {
                Some(e) => updated.push((key, rec, *e)),
                None => {
                    for (t, v) in &rec.signals {
                        new_sig_rec.push(new_keys.len());
                        new_sig_types.push(t);
                        new_sig_values.push(v);
                    }
                    new_keys.push(key);
                    new_metas.push(rec.metadata.to_string());
                }
            }
        }
        if !new_keys.is_empty() {
            // Draw the ids first, so that the insert needs no joins to find the record and
            // content rows it has just written (two hash joins over the RETURNING rows cost
            // about a quarter of the server's time per signal).
            let ids = tx
                .query_one(
                    "WITH s AS MATERIALIZED (
                         SELECT pg_get_serial_sequence('exchange_record', 'id')::regclass AS r,
                                pg_get_serial_sequence('bank_content', 'id')::regclass AS c)
                     SELECT array_agg(nextval(s.r)), array_agg(nextval(s.c))
                     FROM s, generate_series(1, $1::bigint)",
                    &[&(new_keys.len() as i64)],
                )
                .await
                .map_err(pe)?;
            let record_ids: Vec<i64> = ids.try_get(0).map_err(pe)?;
            let content_ids: Vec<i64> = ids.try_get(1).map_err(pe)?;
            if record_ids.len() != new_keys.len() || content_ids.len() != new_keys.len() {
                return Err(StoreError::backend("drew the wrong number of ids"));
            }
            let sig_content: Vec<i64> = new_sig_rec.iter().map(|&i| content_ids[i]).collect();
            tx.execute(
                "WITH rec AS (
                     INSERT INTO exchange_record (id, exchange_id, fetch_key, metadata_json, updated_at, listing_id)
                     SELECT r, $1, k, m, $3, $9 FROM unnest($10::bigint[], $2::text[], $4::text[]) AS u(r, k, m)),
                 con AS (
                     INSERT INTO bank_content (id, bank_id, imported_from_id, disable_until_ts, created_at, updated_at)
                     SELECT c, $5, r, 1, $3, $3 FROM unnest($11::bigint[], $10::bigint[]) AS u(c, r))
                 INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
                 SELECT c, t, v, $5, $3 FROM unnest($6::bigint[], $7::text[], $8::text[]) AS s(c, t, v)",
                &[
                    &ex_id,
                    &new_keys,
                    &now,
                    &new_metas,
                    &bank_id,
                    &sig_content,
                    &new_sig_types,
                    &new_sig_values,
                    &listing_id,
                    &record_ids,
                    &content_ids,
                ],
            )
            .await
            .map_err(pe)?;
            out.records_added = new_keys.len() as u64;
        }

        if !updated.is_empty() {
            out.records_updated = updated.len() as u64;
            let rids: Vec<i64> = updated.iter().map(|(_, _, e)| e.record_id).collect();
            let metas: Vec<String> = updated
                .iter()
                .map(|(_, r, _)| r.metadata.to_string())
                .collect();
            tx.execute(
                "UPDATE exchange_record SET metadata_json = u.m, updated_at = $3,
                     listing_id = COALESCE($4, listing_id)
                 FROM unnest($1::bigint[], $2::text[]) AS u(id, m) WHERE exchange_record.id = u.id",
                &[&rids, &metas, &now, &listing_id],
            )
            .await
            .map_err(pe)?;
            // Content a curator deleted comes back.
            let orphans: Vec<i64> = updated
                .iter()
                .filter(|(_, _, e)| e.content_id.is_none())
                .map(|(_, _, e)| e.record_id)
                .collect();
            let mut recreated: HashMap<i64, i64> = HashMap::new();
            if !orphans.is_empty() {
                let rows = tx
                    .query(
                        "INSERT INTO bank_content (bank_id, imported_from_id, disable_until_ts, created_at, updated_at)
                         SELECT $1, r, 1, $3, $3 FROM unnest($2::bigint[]) AS u(r)
                         RETURNING imported_from_id, id",
                        &[&bank_id, &orphans, &now],
                    )
                    .await
                    .map_err(pe)?;
                for r in &rows {
                    recreated.insert(r.try_get(0).map_err(pe)?, r.try_get(1).map_err(pe)?);
                }
            }
            let mut targets: Vec<(i64, &FetchedRecord)> = Vec::with_capacity(updated.len());
            for (_, rec, e) in &updated {
                let cid = match e.content_id {
                    Some(cid) => cid,
                    None => *recreated
                        .get(&e.record_id)
                        .ok_or_else(|| StoreError::backend("recreated content missing"))?,
                };
                targets.push((cid, *rec));
            }
            let cids: Vec<i64> = targets.iter().map(|(c, _)| *c).collect();
            let rows = tx
                .query(
                    "SELECT content_id, signal_type, signal_value FROM content_signal
                     WHERE content_id = ANY($1::bigint[])",
                    &[&cids],
                )
                .await
                .map_err(pe)?;
            let mut current: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
            for r in &rows {
                current
                    .entry(r.try_get(0).map_err(pe)?)
                    .or_default()
                    .insert(r.try_get(1).map_err(pe)?, r.try_get(2).map_err(pe)?);
            }
            let diff = batch::diff_signals(&current, &targets);
            if !diff.delete.is_empty() {
                let c: Vec<i64> = diff.delete.iter().map(|d| d.0).collect();
                let t: Vec<&str> = diff.delete.iter().map(|d| d.1.as_str()).collect();
                tx.execute(
                    "DELETE FROM content_signal s USING unnest($1::bigint[], $2::text[]) AS d(c, t)
                     WHERE s.content_id = d.c AND s.signal_type = d.t",
                    &[&c, &t],
                )
                .await
                .map_err(pe)?;
            }
            if !diff.update.is_empty() {
                let c: Vec<i64> = diff.update.iter().map(|d| d.0).collect();
                let t: Vec<&str> = diff.update.iter().map(|d| d.1).collect();
                let v: Vec<&str> = diff.update.iter().map(|d| d.2).collect();
                tx.execute(
                    "UPDATE content_signal s SET signal_value = u.v, created_at = $4
                     FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(c, t, v)
                     WHERE s.content_id = u.c AND s.signal_type = u.t",
                    &[&c, &t, &v, &now],
                )
                .await
                .map_err(pe)?;
            }
            if !diff.insert.is_empty() {
                let c: Vec<i64> = diff.insert.iter().map(|d| d.0).collect();
                let t: Vec<&str> = diff.insert.iter().map(|d| d.1).collect();
                let v: Vec<&str> = diff.insert.iter().map(|d| d.2).collect();
                tx.execute(
                    "INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
                     SELECT c, t, v, $4, $5 FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(c, t, v)",
                    &[&c, &t, &v, &bank_id, &now],
                )
                .await
                .map_err(pe)?;
            }
        }

        // The listing is complete: what it did not mark is gone upstream. The record delete
        // trigger removes the content and signals, and their triggers log it.
        if let Some(l) = listing.filter(|l| l.complete) {
            out.records_deleted += tx
                .execute(
                    "DELETE FROM exchange_record
                     WHERE exchange_id = $1 AND listing_id IS DISTINCT FROM $2",
                    &[&ex_id, &l.listing_id],
                )
                .await
                .map_err(pe)?;
        }

        if self.inner.fault_before_checkpoint.load(Ordering::SeqCst) {
            return Err(StoreError::backend("injected fault before checkpoint"));
        }

        let delta = out.records_added as i64 - out.records_deleted as i64;
        out.item_count = tx
            .query_one(
                "INSERT INTO exchange_fetch_status (exchange_id, up_to_date, checkpoint_json, checkpoint_ts, item_count)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (exchange_id) DO UPDATE SET up_to_date = excluded.up_to_date,
                     checkpoint_json = excluded.checkpoint_json, checkpoint_ts = excluded.checkpoint_ts,
                     item_count = exchange_fetch_status.item_count + $5
                 RETURNING item_count",
                &[&ex_id, &batch.up_to_date, &batch.checkpoint.to_string(), &batch.checkpoint_ts, &delta],
            )
            .await
            .map_err(pe)?
            .try_get(0)
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(out)
    }

    pub(crate) async fn reset_fetch_state(&self, exchange: &str) -> Result<u64> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let id = exchange_id(&tx, exchange).await?;
        let n = tx
            .execute("DELETE FROM exchange_record WHERE exchange_id = $1", &[&id])
            .await
            .map_err(pe)?;
        tx.execute(
            "UPDATE exchange_fetch_status SET checkpoint_json = NULL, checkpoint_ts = NULL,
                 item_count = 0, up_to_date = FALSE WHERE exchange_id = $1",
            &[&id],
        )
        .await
        .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(n)
    }

    pub(crate) async fn try_acquire_fetch_lease(
        &self,
        exchange: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        let now = now_millis();
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let row = c
            .query_opt(
                "INSERT INTO fetch_lease (exchange_id, holder, expires_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (exchange_id) DO UPDATE SET holder = excluded.holder,
                     expires_at_ms = excluded.expires_at_ms
                 WHERE fetch_lease.holder = excluded.holder OR fetch_lease.expires_at_ms <= $4
                 RETURNING holder",
                &[&id, &holder, &expires, &now],
            )
            .await
            .map_err(pe)?;
        Ok(row.is_some())
    }

    pub(crate) async fn release_fetch_lease(&self, exchange: &str, holder: &str) -> Result<()> {
        let c = self.primary().await?;
        let id = exchange_id(&c, exchange).await?;
        c.execute(
            "DELETE FROM fetch_lease WHERE exchange_id = $1 AND holder = $2",
            &[&id, &holder],
        )
        .await
        .map_err(pe)?;
        Ok(())
    }

    // ------------------------------------------------------------ signal types

    pub(crate) async fn list_signal_type_overrides(&self) -> Result<Vec<SignalTypeOverride>> {
        let c = self.primary().await?;
        overrides(&c).await
    }

    pub(crate) async fn set_signal_type_override(&self, name: &str, ratio: f64) -> Result<()> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        tx.execute(
            "INSERT INTO signal_type_override (name, enabled_ratio) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET enabled_ratio = excluded.enabled_ratio",
            &[&name, &ratio],
        )
        .await
        .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await
    }

    pub(crate) async fn delete_signal_type_override(&self, name: &str) -> Result<bool> {
        let mut c = self.primary().await?;
        let tx = begin_write(&mut c).await?;
        let n = tx
            .execute("DELETE FROM signal_type_override WHERE name = $1", &[&name])
            .await
            .map_err(pe)?;
        tx.commit().await.map_err(pe)?;
        flush_commit(&c).await?;
        Ok(n > 0)
    }

    // ------------------------------------------------------------ change log

    pub(crate) async fn current_seq(&self) -> Result<i64> {
        let c = self.reader().await?;
        let seq = current_seq(&c).await?;
        self.durable_on_primary(&c).await?;
        Ok(seq)
    }

    /// After reading change-log state from the primary, waits until it is durable (see
    /// [`wait_durable`]). A replica needs no wait: it only ever receives flushed WAL.
    async fn durable_on_primary<C: deadpool_postgres::GenericClient>(&self, c: &C) -> Result<()> {
        if self.inner.replica.is_some() {
            return Ok(());
        }
        wait_durable(c, Flush::Here).await
    }

    pub(crate) async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        let c = self.reader().await?;
        let rows = c
            .query(
                "SELECT seq, kind, op, content_id, bank_id, exchange_id, signal_type, signal_value,
                        disable_until_ts, name, ratio, enabled
                 FROM change_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &i64::from(limit)],
            )
            .await
            .map_err(pe)?;
        if !rows.is_empty() {
            self.durable_on_primary(&c).await?;
        }
        rows.iter()
            .map(|r| {
                RawChange {
                    seq: r.try_get(0).map_err(pe)?,
                    kind: i64::from(r.try_get::<_, i16>(1).map_err(pe)?),
                    op: i64::from(r.try_get::<_, i16>(2).map_err(pe)?),
                    content_id: r.try_get(3).map_err(pe)?,
                    bank_id: r.try_get(4).map_err(pe)?,
                    exchange_id: r.try_get(5).map_err(pe)?,
                    signal_type: r.try_get(6).map_err(pe)?,
                    signal_value: r.try_get(7).map_err(pe)?,
                    disable_until_ts: r.try_get(8).map_err(pe)?,
                    name: r.try_get(9).map_err(pe)?,
                    ratio: r.try_get(10).map_err(pe)?,
                    enabled: r.try_get(11).map_err(pe)?,
                }
                .decode()
            })
            .collect()
    }

    pub(crate) async fn load_state(&self, chunk_size: usize) -> Result<StateSnapshot> {
        let mut client = self.reader().await?;
        let flush_config = match self.inner.replica {
            Some(_) => None,
            None => Some(self.inner.listen_config.clone()),
        };
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (sig_tx, sig_rx) = mpsc::channel::<Result<Vec<SignalRow>>>(4);
        tokio::spawn(async move {
            let tx = match client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
            {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = head_tx.send(Err(pe(e)));
                    return;
                }
            };
            let mut head = read_state_head(&tx).await;
            if let (Ok(_), Some(cfg)) = (&head, &flush_config) {
                if let Err(e) = wait_durable(&tx, Flush::Connect(cfg)).await {
                    head = Err(e);
                }
            }
            let ok = head.is_ok();
            if head_tx.send(head).is_err() || !ok {
                return;
            }
            if let Err(e) = stream_signals(&tx, chunk_size, &sig_tx).await {
                let _ = sig_tx.send(Err(e)).await;
            }
            let _ = tx.commit().await;
        });
        let head = head_rx
            .await
            .map_err(|_| StoreError::backend("state reader ended early"))??;
        Ok(StateSnapshot {
            seq: head.seq,
            banks: head.banks,
            exchanges: head.exchanges,
            signal_type_overrides: head.overrides,
            content_states: head.content_states,
            signals: sig_rx,
        })
    }

    pub(crate) async fn subscribe(&self) -> Result<ChangeSubscription> {
        let mut guard = self
            .inner
            .listener
            .lock()
            .map_err(|_| StoreError::backend("listener mutex poisoned"))?;
        if guard.as_ref().is_none_or(|h| h.is_finished()) {
            let cfg = self.inner.listen_config.clone();
            let schema = self.inner.schema.clone();
            let notify = self.inner.notify.clone();
            *guard = Some(tokio::spawn(listen_loop(cfg, schema, notify)));
        }
        Ok(ChangeSubscription {
            rx: self.inner.notify.subscribe(),
        })
    }

    pub(crate) async fn prune_changes(&self, upto: i64) -> Result<u64> {
        let c = self.primary().await?;
        c.execute(
            "DELETE FROM change_log WHERE seq <= $1 AND seq < (SELECT MAX(seq) FROM change_log)",
            &[&upto],
        )
        .await
        .map_err(pe)
    }

    pub(crate) fn set_fault_before_checkpoint(&self, on: bool) {
        self.inner
            .fault_before_checkpoint
            .store(on, Ordering::SeqCst);
    }
}

/// Keeps a LISTEN connection open (reconnecting with back-off) and bumps `notify` on every
/// notification for our schema, and once after each (re)connect since hints may have been
/// missed meanwhile.
async fn listen_loop(
    (cfg, tls): (tokio_postgres::Config, MakeRustlsConnect),
    schema: Option<String>,
    notify: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match cfg.connect(tls.clone()).await {
            Ok((client, mut conn)) => {
                let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    pin_mut!(stream);
                    while let Some(m) = stream.next().await {
                        match m {
                            Ok(m) => {
                                if msg_tx.send(m).is_err() {
                                    break;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    notify.send_modify(|v| *v = v.wrapping_add(1));
                    let own_schema = current_schema_name(&client, schema.as_deref()).await;
                    while let Some(m) = msg_rx.recv().await {
                        if let AsyncMessage::Notification(n) = m {
                            if own_schema.as_deref().is_none_or(|s| s == n.payload()) {
                                notify.send_modify(|v| *v = v.wrapping_add(1));
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "change log LISTEN connection failed"),
        }
        if notify.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn current_schema_name(client: &Client, configured: Option<&str>) -> Option<String> {
    if let Some(s) = configured {
        return Some(s.to_string());
    }
    client
        .query_one("SELECT current_schema()", &[])
        .await
        .ok()
        .and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
}

// ---------------------------------------------------------------- helpers

async fn migrate(client: &Client) -> Result<()> {
    client
        .execute(
            "SELECT pg_advisory_lock($1, hashtext(current_schema()))",
            &[&MIGRATION_LOCK_CLASS],
        )
        .await
        .map_err(pe)?;
    let result = migrate_locked(client).await;
    let unlock = client
        .execute(
            "SELECT pg_advisory_unlock($1, hashtext(current_schema()))",
            &[&MIGRATION_LOCK_CLASS],
        )
        .await
        .map_err(pe);
    result?;
    unlock.map(|_| ())
}

async fn migrate_locked(client: &Client) -> Result<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS omm_schema_migrations (
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await
        .map_err(pe)?;
    let current: i64 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM omm_schema_migrations",
            &[],
        )
        .await
        .map_err(pe)?
        .try_get(0)
        .map_err(pe)?;
    let latest = schema::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > latest {
        return Err(StoreError::Conflict(format!(
            "database schema version {current} is newer than this binary supports ({latest})"
        )));
    }
    for (version, name, sql) in schema::MIGRATIONS {
        if *version <= current {
            continue;
        }
        client.batch_execute("BEGIN").await.map_err(pe)?;
        let applied = async {
            client.batch_execute(sql).await.map_err(pe)?;
            client
                .execute(
                    "INSERT INTO omm_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    &[version, name, &now_secs()],
                )
                .await
                .map_err(pe)?;
            client.batch_execute("COMMIT").await.map_err(pe)
        }
        .await;
        if let Err(e) = applied {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    Ok(())
}

const BANK_SELECT: &str = "SELECT id, name, enabled_ratio, exchange_id, created_at FROM bank";

fn bank_from_row(r: &Row) -> Result<Bank> {
    Ok(Bank {
        id: r.try_get(0).map_err(pe)?,
        name: r.try_get(1).map_err(pe)?,
        enabled_ratio: r.try_get(2).map_err(pe)?,
        exchange_id: r.try_get(3).map_err(pe)?,
        created_at: r.try_get(4).map_err(pe)?,
    })
}

async fn bank_by_name<C: deadpool_postgres::GenericClient>(c: &C, name: &str) -> Result<Bank> {
    let row = c
        .query_opt(&format!("{BANK_SELECT} WHERE name = $1"), &[&name])
        .await
        .map_err(pe)?
        .ok_or_else(|| StoreError::not_found(Entity::Bank, name))?;
    bank_from_row(&row)
}

fn signal_from_row(r: &Row) -> Result<SignalRow> {
    Ok(SignalRow {
        content_id: r.try_get(0).map_err(pe)?,
        bank_id: r.try_get(1).map_err(pe)?,
        signal_type: r.try_get(2).map_err(pe)?,
        value: r.try_get(3).map_err(pe)?,
    })
}

async fn load_contents<C: deadpool_postgres::GenericClient>(
    c: &C,
    ids: &[i64],
) -> Result<Vec<Content>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query(
            "SELECT c.id, c.disable_until_ts, c.note, c.metadata_json, c.original_media_uri,
                    c.created_at, c.updated_at,
                    b.id, b.name, b.enabled_ratio, b.exchange_id, b.created_at,
                    r.fetch_key, r.metadata_json, e.id, e.name
             FROM bank_content c JOIN bank b ON b.id = c.bank_id
             LEFT JOIN exchange_record r ON r.id = c.imported_from_id
             LEFT JOIN exchange e ON e.id = r.exchange_id
             WHERE c.id = ANY($1::bigint[]) ORDER BY c.id",
            &[&ids],
        )
        .await
        .map_err(pe)?;
    let sig_rows = c
        .query(
            "SELECT content_id, signal_type, signal_value FROM content_signal
             WHERE content_id = ANY($1::bigint[])",
            &[&ids],
        )
        .await
        .map_err(pe)?;
    let mut signals: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
    for r in &sig_rows {
        signals
            .entry(r.try_get(0).map_err(pe)?)
            .or_default()
            .insert(r.try_get(1).map_err(pe)?, r.try_get(2).map_err(pe)?);
    }
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.try_get(0).map_err(pe)?;
        let meta: Option<&str> = r.try_get(3).map_err(pe)?;
        let key: Option<String> = r.try_get(12).map_err(pe)?;
        let rmeta: Option<&str> = r.try_get(13).map_err(pe)?;
        let eid: Option<i64> = r.try_get(14).map_err(pe)?;
        let ename: Option<String> = r.try_get(15).map_err(pe)?;
        let provenance = match (key, rmeta, eid, ename) {
            (Some(record_key), Some(rmeta), Some(exchange_id), Some(exchange_name)) => {
                Some(Provenance {
                    exchange_id,
                    exchange_name,
                    record_key,
                    record_metadata: parse_json(rmeta)?,
                })
            }
            _ => None,
        };
        out.push(Content {
            id,
            bank: Bank {
                id: r.try_get(7).map_err(pe)?,
                name: r.try_get(8).map_err(pe)?,
                enabled_ratio: r.try_get(9).map_err(pe)?,
                exchange_id: r.try_get(10).map_err(pe)?,
                created_at: r.try_get(11).map_err(pe)?,
            },
            disable_until_ts: r.try_get(1).map_err(pe)?,
            note: r.try_get(2).map_err(pe)?,
            metadata: meta.map(parse_json).transpose()?,
            original_media_uri: r.try_get(4).map_err(pe)?,
            signals: signals.remove(&id).unwrap_or_default(),
            provenance,
            created_at: r.try_get(5).map_err(pe)?,
            updated_at: r.try_get(6).map_err(pe)?,
        });
    }
    Ok(out)
}

async fn content_in_bank<C: deadpool_postgres::GenericClient>(
    c: &C,
    bank: &str,
    id: i64,
) -> Result<Content> {
    let b = bank_by_name(c, bank).await?;
    match load_contents(c, &[id]).await?.pop() {
        Some(content) if content.bank.id == b.id => Ok(content),
        _ => Err(StoreError::not_found(Entity::Content, id)),
    }
}

const EXCHANGE_SELECT: &str =
    "SELECT e.id, e.name, e.api, e.enabled, e.config_json, b.id, e.created_at, e.updated_at
     FROM exchange e LEFT JOIN bank b ON b.exchange_id = e.id";

fn exchange_from_row(r: &Row) -> Result<Exchange> {
    Ok(Exchange {
        id: r.try_get(0).map_err(pe)?,
        name: r.try_get(1).map_err(pe)?,
        api: r.try_get(2).map_err(pe)?,
        enabled: r.try_get(3).map_err(pe)?,
        config: parse_json(r.try_get(4).map_err(pe)?)?,
        bank_id: r.try_get(5).map_err(pe)?,
        created_at: r.try_get(6).map_err(pe)?,
        updated_at: r.try_get(7).map_err(pe)?,
    })
}

async fn exchange_by_name<C: deadpool_postgres::GenericClient>(
    c: &C,
    name: &str,
) -> Result<Exchange> {
    let row = c
        .query_opt(&format!("{EXCHANGE_SELECT} WHERE e.name = $1"), &[&name])
        .await
        .map_err(pe)?
        .ok_or_else(|| StoreError::not_found(Entity::Exchange, name))?;
    exchange_from_row(&row)
}

async fn exchange_id<C: deadpool_postgres::GenericClient>(c: &C, name: &str) -> Result<i64> {
    c.query_opt("SELECT id FROM exchange WHERE name = $1", &[&name])
        .await
        .map_err(pe)?
        .ok_or_else(|| StoreError::not_found(Entity::Exchange, name))?
        .try_get(0)
        .map_err(pe)
}

async fn stored_checkpoint<C: deadpool_postgres::GenericClient>(
    c: &C,
    exchange_id: i64,
) -> Result<Option<FetchCheckpoint>> {
    let row = c
        .query_opt(
            "SELECT checkpoint_json, checkpoint_ts FROM exchange_fetch_status WHERE exchange_id = $1",
            &[&exchange_id],
        )
        .await
        .map_err(pe)?;
    match row {
        Some(r) => match r.try_get::<_, Option<&str>>(0).map_err(pe)? {
            Some(json) => Ok(Some(FetchCheckpoint {
                value: parse_json(json)?,
                ts: r.try_get(1).map_err(pe)?,
            })),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

async fn overrides<C: deadpool_postgres::GenericClient>(c: &C) -> Result<Vec<SignalTypeOverride>> {
    let rows = c
        .query(
            "SELECT name, enabled_ratio FROM signal_type_override ORDER BY name",
            &[],
        )
        .await
        .map_err(pe)?;
    rows.iter()
        .map(|r| {
            Ok(SignalTypeOverride {
                name: r.try_get(0).map_err(pe)?,
                enabled_ratio: r.try_get(1).map_err(pe)?,
            })
        })
        .collect()
}

async fn current_seq<C: deadpool_postgres::GenericClient>(c: &C) -> Result<i64> {
    c.query_one("SELECT COALESCE(MAX(seq), 0)::bigint FROM change_log", &[])
        .await
        .map_err(pe)?
        .try_get(0)
        .map_err(pe)
}

struct StateHead {
    seq: i64,
    banks: Vec<Bank>,
    exchanges: Vec<ExchangeState>,
    overrides: Vec<SignalTypeOverride>,
    content_states: Vec<ContentState>,
}

async fn read_state_head<C: deadpool_postgres::GenericClient>(c: &C) -> Result<StateHead> {
    let seq = current_seq(c).await?;
    let banks = c
        .query(&format!("{BANK_SELECT} ORDER BY id"), &[])
        .await
        .map_err(pe)?
        .iter()
        .map(bank_from_row)
        .collect::<Result<Vec<_>>>()?;
    let exchanges = c
        .query("SELECT id, name, enabled FROM exchange ORDER BY id", &[])
        .await
        .map_err(pe)?
        .iter()
        .map(|r| {
            Ok(ExchangeState {
                exchange_id: r.try_get(0).map_err(pe)?,
                name: r.try_get(1).map_err(pe)?,
                enabled: r.try_get(2).map_err(pe)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let content_states = c
        .query(
            "SELECT id, bank_id, disable_until_ts FROM bank_content WHERE disable_until_ts <> 1",
            &[],
        )
        .await
        .map_err(pe)?
        .iter()
        .map(|r| {
            Ok(ContentState {
                content_id: r.try_get(0).map_err(pe)?,
                bank_id: r.try_get(1).map_err(pe)?,
                disable_until_ts: r.try_get(2).map_err(pe)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StateHead {
        seq,
        banks,
        exchanges,
        overrides: overrides(c).await?,
        content_states,
    })
}

async fn stream_signals<C: deadpool_postgres::GenericClient>(
    c: &C,
    chunk_size: usize,
    tx: &mpsc::Sender<Result<Vec<SignalRow>>>,
) -> Result<()> {
    let params: [&(dyn ToSql + Sync); 0] = [];
    let stream = c
        .query_raw(
            "SELECT content_id, bank_id, signal_type, signal_value FROM content_signal",
            params,
        )
        .await
        .map_err(pe)?;
    pin_mut!(stream);
    let mut chunk = Vec::with_capacity(chunk_size);
    while let Some(row) = stream.next().await {
        let row = row.map_err(pe)?;
        chunk.push(signal_from_row(&row)?);
        if chunk.len() == chunk_size {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_size));
            if tx.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk)).await;
    }
    Ok(())
}
