//! SQLite backend: one writer connection (serialised by a mutex), a pool of reader
//! connections, WAL mode so readers never block the writer. Every call runs on tokio's
//! blocking pool.

mod reviews;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::batch;
use crate::changes::{ChangeSubscription, ContentState, ExchangeState, RawChange, StateSnapshot};
use crate::error::{Entity, Result, StoreError};
use crate::model::*;
use crate::{now_millis, now_secs, AppliedMigration, Change};

/// How many idle reader connections to keep.
const MAX_IDLE_READERS: usize = 8;

pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    notify: watch::Sender<u64>,
    fault_before_checkpoint: AtomicBool,
    /// Wakes the background checkpointer after each write (see [`checkpointer`]).
    checkpoint: std::sync::mpsc::Sender<()>,
}

fn be(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn parse_json(s: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(StoreError::backend)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;",
    )?;
    Ok(())
}

impl SqliteStore {
    pub(crate) async fn open(path: PathBuf) -> Result<SqliteStore> {
        let inner = tokio::task::spawn_blocking(move || -> Result<Inner> {
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(StoreError::backend)?;
                }
            }
            let mut conn = Connection::open(&path).map_err(be)?;
            // WAL must be set outside a transaction; it persists in the file.
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(be)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::backend(format!(
                    "could not enable WAL (mode {mode})"
                )));
            }
            configure(&conn).map_err(be)?;
            migrate(&mut conn)?;
            // Checkpoints run on a background thread, so a commit does not wait for copying
            // WAL pages into the database file and its fsyncs. The writer still checkpoints
            // by itself if the WAL outgrows this many pages (the checkpointer fell behind).
            conn.execute_batch("PRAGMA wal_autocheckpoint = 16384;")
                .map_err(be)?;
            let (checkpoint, wake) = std::sync::mpsc::channel();
            let cp_path = path.clone();
            std::thread::Builder::new()
                .name("omm-sqlite-checkpoint".into())
                .spawn(move || checkpointer(&cp_path, &wake))
                .map_err(StoreError::backend)?;
            let (notify, _) = watch::channel(0u64);
            Ok(Inner {
                path,
                writer: Mutex::new(conn),
                readers: Mutex::new(Vec::new()),
                notify,
                fault_before_checkpoint: AtomicBool::new(false),
                checkpoint,
            })
        })
        .await
        .map_err(StoreError::backend)??;
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `f` in an IMMEDIATE transaction on the writer; commits if it returns Ok.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner
                .writer
                .lock()
                .map_err(|_| StoreError::backend("writer mutex poisoned"))?;
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(be)?;
            let out = f(&tx, &inner)?;
            tx.commit().map_err(be)?;
            drop(conn);
            inner.notify.send_modify(|v| *v = v.wrapping_add(1));
            // A send only fails once the checkpointer is gone; the writer's own
            // auto-checkpoint then keeps the WAL bounded.
            let _ = inner.checkpoint.send(());
            Ok(out)
        })
        .await
        .map_err(StoreError::backend)?
    }

    fn take_reader(inner: &Inner) -> Result<Connection> {
        if let Some(c) = inner
            .readers
            .lock()
            .map_err(|_| StoreError::backend("reader pool poisoned"))?
            .pop()
        {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(be)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(be)?;
        conn.execute_batch("PRAGMA cache_size = -32768;")
            .map_err(be)?;
        Ok(conn)
    }

    fn put_reader(inner: &Inner, conn: Connection) {
        if let Ok(mut pool) = inner.readers.lock() {
            if pool.len() < MAX_IDLE_READERS && conn.is_autocommit() {
                pool.push(conn);
            }
        }
    }

    /// Runs `f` on a reader connection inside one read transaction (one snapshot).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Self::take_reader(&inner)?;
            conn.execute_batch("BEGIN").map_err(be)?;
            let out = f(&conn);
            let end = conn.execute_batch("COMMIT").map_err(be);
            if end.is_ok() {
                Self::put_reader(&inner, conn);
            }
            let out = out?;
            end?;
            Ok(out)
        })
        .await
        .map_err(StoreError::backend)?
    }

    pub(crate) async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>> {
        self.read(|c| {
            let mut st = c
                .prepare(
                    "SELECT version, name, applied_at FROM omm_schema_migrations ORDER BY version",
                )
                .map_err(be)?;
            let rows = st
                .query_map([], |r| {
                    Ok(AppliedMigration {
                        version: r.get(0)?,
                        name: r.get(1)?,
                        applied_at: r.get(2)?,
                    })
                })
                .map_err(be)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)
        })
        .await
    }

    // ------------------------------------------------------------ banks

    pub(crate) async fn list_banks(&self) -> Result<Vec<Bank>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!("{BANK_SELECT} ORDER BY name"))
                .map_err(be)?;
            let rows = st.query_map([], bank_from_row).map_err(be)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)
        })
        .await
    }

    pub(crate) async fn get_bank(&self, name: &str) -> Result<Bank> {
        let name = name.to_string();
        self.read(move |c| bank_by_name(c, &name)).await
    }

    pub(crate) async fn get_bank_by_id(&self, id: i64) -> Result<Bank> {
        self.read(move |c| {
            c.query_row(&format!("{BANK_SELECT} WHERE id = ?1"), [id], bank_from_row)
                .optional()
                .map_err(be)?
                .ok_or_else(|| StoreError::not_found(Entity::Bank, id))
        })
        .await
    }

    pub(crate) async fn create_bank(&self, bank: &NewBank) -> Result<Bank> {
        let bank = bank.clone();
        self.write(move |tx, _| {
            tx.execute(
                "INSERT INTO bank (name, enabled_ratio, created_at) VALUES (?1, ?2, ?3)",
                params![bank.name, bank.enabled_ratio, now_secs()],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::exists(Entity::Bank, &bank.name)
                } else {
                    be(e)
                }
            })?;
            bank_by_name(tx, &bank.name)
        })
        .await
    }

    pub(crate) async fn update_bank(&self, name: &str, update: &BankUpdate) -> Result<Bank> {
        let name = name.to_string();
        let update = update.clone();
        self.write(move |tx, _| {
            let bank = bank_by_name(tx, &name)?;
            if let Some(new_name) = &update.name {
                if *new_name != bank.name {
                    tx.execute(
                        "UPDATE bank SET name = ?1 WHERE id = ?2",
                        params![new_name, bank.id],
                    )
                    .map_err(|e| {
                        if is_unique_violation(&e) {
                            StoreError::exists(Entity::Bank, new_name)
                        } else {
                            be(e)
                        }
                    })?;
                }
            }
            if let Some(r) = update.enabled_ratio {
                tx.execute(
                    "UPDATE bank SET enabled_ratio = ?1 WHERE id = ?2",
                    params![r, bank.id],
                )
                .map_err(be)?;
            }
            tx.query_row(
                &format!("{BANK_SELECT} WHERE id = ?1"),
                [bank.id],
                bank_from_row,
            )
            .map_err(be)
        })
        .await
    }

    pub(crate) async fn delete_bank(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx, _| {
            let bank = match bank_by_name(tx, &name) {
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
                .execute("DELETE FROM bank WHERE id = ?1", [bank.id])
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    // ------------------------------------------------------------ content

    pub(crate) async fn create_content(&self, bank: &str, content: &NewContent) -> Result<Content> {
        let bank = bank.to_string();
        let content = content.clone();
        self.write(move |tx, _| {
            let b = bank_by_name(tx, &bank)?;
            let now = now_secs();
            let metadata = content.metadata.as_ref().map(json_text);
            let id: i64 = tx
                .query_row(
                    "INSERT INTO bank_content (bank_id, disable_until_ts, original_media_uri, note,
                         metadata_json, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) RETURNING id",
                    params![
                        b.id,
                        content.disable_until_ts,
                        content.original_media_uri,
                        content.note,
                        metadata,
                        now
                    ],
                    |r| r.get(0),
                )
                .map_err(be)?;
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(be)?;
            for (t, v) in &content.signals {
                st.execute(params![id, t, v, b.id, now]).map_err(be)?;
            }
            load_content(tx, id)?.ok_or_else(|| StoreError::not_found(Entity::Content, id))
        })
        .await
    }

    pub(crate) async fn get_content(&self, bank: &str, id: i64) -> Result<Content> {
        let bank = bank.to_string();
        self.read(move |c| content_in_bank(c, &bank, id)).await
    }

    pub(crate) async fn get_contents(&self, ids: &[i64]) -> Result<Vec<Content>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.read(move |c| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(content) = load_content(c, id)? {
                    out.push(content);
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn update_content(
        &self,
        bank: &str,
        id: i64,
        update: &ContentUpdate,
    ) -> Result<Content> {
        let bank = bank.to_string();
        let update = update.clone();
        self.write(move |tx, _| {
            content_in_bank(tx, &bank, id)?;
            let now = now_secs();
            if let Some(ts) = update.disable_until_ts {
                tx.execute(
                    "UPDATE bank_content SET disable_until_ts = ?1, updated_at = ?2 WHERE id = ?3",
                    params![ts, now, id],
                )
                .map_err(be)?;
            }
            if let Some(note) = &update.note {
                tx.execute(
                    "UPDATE bank_content SET note = ?1, updated_at = ?2 WHERE id = ?3",
                    params![note, now, id],
                )
                .map_err(be)?;
            }
            if let Some(meta) = &update.metadata {
                tx.execute(
                    "UPDATE bank_content SET metadata_json = ?1, updated_at = ?2 WHERE id = ?3",
                    params![meta.as_ref().map(json_text), now, id],
                )
                .map_err(be)?;
            }
            load_content(tx, id)?.ok_or_else(|| StoreError::not_found(Entity::Content, id))
        })
        .await
    }

    pub(crate) async fn delete_content(&self, bank: &str, id: i64) -> Result<bool> {
        let bank = bank.to_string();
        self.write(move |tx, _| {
            let b = bank_by_name(tx, &bank)?;
            let n = tx
                .execute(
                    "DELETE FROM bank_content WHERE id = ?1 AND bank_id = ?2",
                    params![id, b.id],
                )
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn list_content(
        &self,
        bank: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Content>> {
        let bank = bank.to_string();
        self.read(move |c| {
            let b = bank_by_name(c, &bank)?;
            let ids: Vec<i64> = {
                let mut st = c
                    .prepare_cached(
                        "SELECT id FROM bank_content WHERE bank_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                    )
                    .map_err(be)?;
                let rows = st
                    .query_map(params![b.id, after_id, limit], |r| r.get(0))
                    .map_err(be)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(content) = load_content(c, id)? {
                    out.push(content);
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn count_content(&self, bank: &str) -> Result<i64> {
        let bank = bank.to_string();
        self.read(move |c| {
            let b = bank_by_name(c, &bank)?;
            c.query_row(
                "SELECT COUNT(*) FROM bank_content WHERE bank_id = ?1",
                [b.id],
                |r| r.get(0),
            )
            .map_err(be)
        })
        .await
    }

    pub(crate) async fn list_bank_signals(
        &self,
        bank: &str,
        after_content_id: i64,
        limit: u32,
    ) -> Result<Vec<SignalRow>> {
        let bank = bank.to_string();
        self.read(move |c| {
            let b = bank_by_name(c, &bank)?;
            let mut st = c
                .prepare_cached(
                    "SELECT s.content_id, s.bank_id, s.signal_type, s.signal_value
                     FROM (SELECT id FROM bank_content WHERE bank_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3) c
                     JOIN content_signal s ON s.content_id = c.id
                     ORDER BY s.content_id, s.signal_type",
                )
                .map_err(be)?;
            let rows = st
                .query_map(params![b.id, after_content_id, limit], signal_from_row)
                .map_err(be)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)
        })
        .await
    }

    pub(crate) async fn get_signals(&self, content_id: i64) -> Result<BTreeMap<String, String>> {
        self.read(move |c| signals_of(c, content_id)).await
    }

    pub(crate) async fn signal_type_stats(&self) -> Result<Vec<SignalTypeStats>> {
        self.read(|c| {
            let mut st = c
                .prepare(
                    "SELECT signal_type, COUNT(*), MAX(created_at) FROM content_signal
                     GROUP BY signal_type ORDER BY signal_type",
                )
                .map_err(be)?;
            let rows = st
                .query_map([], |r| {
                    Ok(SignalTypeStats {
                        signal_type: r.get(0)?,
                        count: r.get(1)?,
                        newest_created_at: r.get(2)?,
                    })
                })
                .map_err(be)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)
        })
        .await
    }

    // ------------------------------------------------------------ exchanges

    pub(crate) async fn create_exchange(&self, exchange: &NewExchange) -> Result<Exchange> {
        let ex = exchange.clone();
        self.write(move |tx, _| {
            let now = now_secs();
            let id: i64 = tx
                .query_row(
                    "INSERT INTO exchange (name, api, enabled, config_json, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                    params![ex.name, ex.api, ex.enabled, json_text(&ex.config), now],
                    |r| r.get(0),
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::exists(Entity::Exchange, &ex.name)
                    } else {
                        be(e)
                    }
                })?;
            tx.execute(
                "INSERT INTO bank (name, enabled_ratio, exchange_id, created_at) VALUES (?1, 1.0, ?2, ?3)",
                params![ex.name, id, now],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::exists(Entity::Bank, &ex.name)
                } else {
                    be(e)
                }
            })?;
            exchange_by_name(tx, &ex.name)
        })
        .await
    }

    pub(crate) async fn list_exchanges(&self) -> Result<Vec<Exchange>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(&format!("{EXCHANGE_SELECT} ORDER BY e.name"))
                .map_err(be)?;
            let rows = st.query_map([], exchange_from_row).map_err(be)?;
            let raw = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?;
            raw.into_iter().map(finish_exchange).collect()
        })
        .await
    }

    pub(crate) async fn get_exchange(&self, name: &str) -> Result<Exchange> {
        let name = name.to_string();
        self.read(move |c| exchange_by_name(c, &name)).await
    }

    pub(crate) async fn update_exchange(
        &self,
        name: &str,
        update: &ExchangeUpdate,
    ) -> Result<Exchange> {
        let name = name.to_string();
        let update = update.clone();
        self.write(move |tx, _| {
            let ex = exchange_by_name(tx, &name)?;
            let now = now_secs();
            if let Some(enabled) = update.enabled {
                tx.execute(
                    "UPDATE exchange SET enabled = ?1, updated_at = ?2 WHERE id = ?3",
                    params![enabled, now, ex.id],
                )
                .map_err(be)?;
            }
            if let Some(cfg) = &update.config {
                tx.execute(
                    "UPDATE exchange SET config_json = ?1, updated_at = ?2 WHERE id = ?3",
                    params![json_text(cfg), now, ex.id],
                )
                .map_err(be)?;
            }
            exchange_by_name(tx, &name)
        })
        .await
    }

    pub(crate) async fn delete_exchange(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx, _| {
            let n = tx
                .execute("DELETE FROM exchange WHERE name = ?1", [&name])
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn get_exchange_record(
        &self,
        exchange: &str,
        key: &str,
    ) -> Result<ExchangeRecord> {
        let exchange = exchange.to_string();
        let key = key.to_string();
        self.read(move |c| {
            let ex_id = exchange_id(c, &exchange)?;
            let row = c
                .query_row(
                    "SELECT r.id, r.metadata_json, r.updated_at, c.id FROM exchange_record r
                     LEFT JOIN bank_content c ON c.imported_from_id = r.id
                     WHERE r.exchange_id = ?1 AND r.fetch_key = ?2",
                    params![ex_id, key],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(be)?
                .ok_or_else(|| StoreError::not_found(Entity::ExchangeRecord, &key))?;
            let signals = match row.3 {
                Some(cid) => signals_of(c, cid)?,
                None => BTreeMap::new(),
            };
            Ok(ExchangeRecord {
                exchange_id: ex_id,
                key,
                metadata: parse_json(&row.1)?,
                content_id: row.3,
                signals,
                updated_at: row.2,
            })
        })
        .await
    }

    // ------------------------------------------------------------ credentials

    pub(crate) async fn set_api_credentials(
        &self,
        api: &str,
        credentials: Option<&Value>,
    ) -> Result<()> {
        let api = api.to_string();
        let creds = credentials.map(json_text);
        self.write(move |tx, _| {
            tx.execute(
                "INSERT INTO exchange_api_config (api, credentials_json, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (api) DO UPDATE SET credentials_json = excluded.credentials_json,
                     updated_at = excluded.updated_at",
                params![api, creds, now_secs()],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn get_api_credentials(&self, api: &str) -> Result<Option<Value>> {
        let api = api.to_string();
        self.read(move |c| {
            let s: Option<Option<String>> = c
                .query_row(
                    "SELECT credentials_json FROM exchange_api_config WHERE api = ?1",
                    [&api],
                    |r| r.get(0),
                )
                .optional()
                .map_err(be)?;
            s.flatten().map(|s| parse_json(&s)).transpose()
        })
        .await
    }

    pub(crate) async fn has_api_credentials(&self, api: &str) -> Result<bool> {
        let api = api.to_string();
        self.read(move |c| {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM exchange_api_config WHERE api = ?1 AND credentials_json IS NOT NULL",
                    [&api],
                    |r| r.get(0),
                )
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    // ------------------------------------------------------------ fetching

    pub(crate) async fn fetch_status(&self, exchange: &str) -> Result<FetchStatus> {
        let exchange = exchange.to_string();
        self.read(move |c| {
            let id = exchange_id(c, &exchange)?;
            Ok(c.query_row(
                "SELECT running_since, last_complete_ts, last_succeeded, last_success_ts, up_to_date,
                        checkpoint_ts, item_count, last_error
                 FROM exchange_fetch_status WHERE exchange_id = ?1",
                [id],
                |r| {
                    Ok(FetchStatus {
                        running_since: r.get(0)?,
                        last_complete_ts: r.get(1)?,
                        last_succeeded: r.get(2)?,
                        last_success_ts: r.get(3)?,
                        up_to_date: r.get(4)?,
                        checkpoint_ts: r.get(5)?,
                        item_count: r.get(6)?,
                        last_error: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(be)?
            .unwrap_or_default())
        })
        .await
    }

    pub(crate) async fn fetch_checkpoint(&self, exchange: &str) -> Result<Option<FetchCheckpoint>> {
        let exchange = exchange.to_string();
        self.read(move |c| {
            let id = exchange_id(c, &exchange)?;
            stored_checkpoint(c, id)
        })
        .await
    }

    pub(crate) async fn start_fetch(&self, exchange: &str) -> Result<()> {
        let exchange = exchange.to_string();
        self.write(move |tx, _| {
            let id = exchange_id(tx, &exchange)?;
            tx.execute(
                "INSERT INTO exchange_fetch_status (exchange_id, running_since) VALUES (?1, ?2)
                 ON CONFLICT (exchange_id) DO UPDATE SET running_since = excluded.running_since",
                params![id, now_secs()],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn finish_fetch(&self, exchange: &str, end: &FetchRunEnd) -> Result<()> {
        let exchange = exchange.to_string();
        let end = end.clone();
        self.write(move |tx, _| {
            let id = exchange_id(tx, &exchange)?;
            let now = now_secs();
            let up_to_date = end.succeeded && end.up_to_date;
            let error = if end.succeeded {
                None
            } else {
                end.error.clone()
            };
            tx.execute(
                "INSERT INTO exchange_fetch_status (exchange_id, running_since, last_complete_ts,
                     last_succeeded, last_success_ts, up_to_date, last_error)
                 VALUES (?1, NULL, ?2, ?3, CASE WHEN ?3 THEN ?2 END, ?4, ?5)
                 ON CONFLICT (exchange_id) DO UPDATE SET running_since = NULL,
                     last_complete_ts = excluded.last_complete_ts,
                     last_succeeded = excluded.last_succeeded,
                     last_success_ts = COALESCE(excluded.last_success_ts, last_success_ts),
                     up_to_date = excluded.up_to_date,
                     last_error = excluded.last_error",
                params![id, now, end.succeeded, up_to_date, error],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn apply_fetch_batch_marked(
        &self,
        exchange: &str,
        batch: &FetchBatch,
        listing: Option<ListingMark>,
    ) -> Result<BatchOutcome> {
        let exchange = exchange.to_string();
        let batch = batch.clone();
        self.write(move |tx, inner| apply_batch(tx, inner, &exchange, &batch, listing))
            .await
    }

    pub(crate) async fn reset_fetch_state(&self, exchange: &str) -> Result<u64> {
        let exchange = exchange.to_string();
        self.write(move |tx, _| {
            let id = exchange_id(tx, &exchange)?;
            let n = tx
                .execute("DELETE FROM exchange_record WHERE exchange_id = ?1", [id])
                .map_err(be)?;
            tx.execute(
                "UPDATE exchange_fetch_status SET checkpoint_json = NULL, checkpoint_ts = NULL,
                     item_count = 0, up_to_date = 0 WHERE exchange_id = ?1",
                [id],
            )
            .map_err(be)?;
            Ok(n as u64)
        })
        .await
    }

    pub(crate) async fn try_acquire_fetch_lease(
        &self,
        exchange: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let exchange = exchange.to_string();
        let holder = holder.to_string();
        self.write(move |tx, _| {
            let id = exchange_id(tx, &exchange)?;
            let now = now_millis();
            let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            let n = tx
                .execute(
                    "INSERT INTO fetch_lease (exchange_id, holder, expires_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (exchange_id) DO UPDATE SET holder = excluded.holder,
                         expires_at_ms = excluded.expires_at_ms
                     WHERE fetch_lease.holder = excluded.holder OR fetch_lease.expires_at_ms <= ?4",
                    params![id, holder, expires, now],
                )
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    pub(crate) async fn release_fetch_lease(&self, exchange: &str, holder: &str) -> Result<()> {
        let exchange = exchange.to_string();
        let holder = holder.to_string();
        self.write(move |tx, _| {
            let id = exchange_id(tx, &exchange)?;
            tx.execute(
                "DELETE FROM fetch_lease WHERE exchange_id = ?1 AND holder = ?2",
                params![id, holder],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    // ------------------------------------------------------------ signal types

    pub(crate) async fn list_signal_type_overrides(&self) -> Result<Vec<SignalTypeOverride>> {
        self.read(overrides).await
    }

    pub(crate) async fn set_signal_type_override(&self, name: &str, ratio: f64) -> Result<()> {
        let name = name.to_string();
        self.write(move |tx, _| {
            tx.execute(
                "INSERT INTO signal_type_override (name, enabled_ratio) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET enabled_ratio = excluded.enabled_ratio",
                params![name, ratio],
            )
            .map_err(be)?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn delete_signal_type_override(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |tx, _| {
            let n = tx
                .execute("DELETE FROM signal_type_override WHERE name = ?1", [&name])
                .map_err(be)?;
            Ok(n > 0)
        })
        .await
    }

    // ------------------------------------------------------------ change log

    pub(crate) async fn current_seq(&self) -> Result<i64> {
        self.read(current_seq).await
    }

    pub(crate) async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, kind, op, content_id, bank_id, exchange_id, signal_type, signal_value,
                            disable_until_ts, name, ratio, enabled
                     FROM change_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(be)?;
            let rows = st
                .query_map(params![after, limit], |r| {
                    Ok(RawChange {
                        seq: r.get(0)?,
                        kind: r.get(1)?,
                        op: r.get(2)?,
                        content_id: r.get(3)?,
                        bank_id: r.get(4)?,
                        exchange_id: r.get(5)?,
                        signal_type: r.get(6)?,
                        signal_value: r.get(7)?,
                        disable_until_ts: r.get(8)?,
                        name: r.get(9)?,
                        ratio: r.get(10)?,
                        enabled: r.get(11)?,
                    })
                })
                .map_err(be)?;
            let raw = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?;
            raw.into_iter().map(RawChange::decode).collect()
        })
        .await
    }

    pub(crate) async fn load_state(&self, chunk_size: usize) -> Result<StateSnapshot> {
        let inner = self.inner.clone();
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        let (sig_tx, sig_rx) = mpsc::channel::<Result<Vec<SignalRow>>>(4);
        tokio::task::spawn_blocking(move || {
            let conn = match Self::take_reader(&inner) {
                Ok(c) => c,
                Err(e) => {
                    let _ = head_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = conn.execute_batch("BEGIN") {
                let _ = head_tx.send(Err(be(e)));
                return;
            }
            let head = read_state_head(&conn);
            let ok = head.is_ok();
            if head_tx.send(head).is_err() || !ok {
                let _ = conn.execute_batch("ROLLBACK");
                return;
            }
            let streamed = stream_signals(&conn, chunk_size, &sig_tx);
            if let Err(e) = streamed {
                let _ = sig_tx.blocking_send(Err(e));
            }
            if conn.execute_batch("COMMIT").is_ok() {
                Self::put_reader(&inner, conn);
            }
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
        Ok(ChangeSubscription {
            rx: self.inner.notify.subscribe(),
        })
    }

    pub(crate) async fn prune_changes(&self, upto: i64) -> Result<u64> {
        self.write(move |tx, _| {
            // Keep the newest entry so that MAX(seq) never goes backwards.
            let n = tx
                .execute(
                    "DELETE FROM change_log WHERE seq <= ?1 AND seq < (SELECT MAX(seq) FROM change_log)",
                    [upto],
                )
                .map_err(be)?;
            Ok(n as u64)
        })
        .await
    }

    /// Test hook: make the next batches fail after writing records, before the checkpoint.
    pub(crate) fn set_fault_before_checkpoint(&self, on: bool) {
        self.inner
            .fault_before_checkpoint
            .store(on, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------- helpers

/// Background WAL checkpointer: after each batch of writes, copies committed WAL pages into
/// the database file (PASSIVE: never blocks the writer or readers). Ends when the store is
/// dropped. Durability does not depend on it: with `synchronous = NORMAL` in WAL mode a
/// commit is in the WAL (safe against a killed process) and the checkpoint only moves it.
fn checkpointer(path: &std::path::Path, wake: &std::sync::mpsc::Receiver<()>) {
    let conn = match Connection::open(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("sqlite checkpointer could not open the database: {e}");
            return;
        }
    };
    if let Err(e) = conn.busy_timeout(Duration::from_secs(5)) {
        tracing::warn!("sqlite checkpointer: {e}");
    }
    while wake.recv().is_ok() {
        while wake.try_recv().is_ok() {}
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!("sqlite background checkpoint failed: {e}");
        }
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS omm_schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .map_err(be)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(be)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM omm_schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(be)?;
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
        tx.execute_batch(sql).map_err(be)?;
        tx.execute(
            "INSERT INTO omm_schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![version, name, now_secs()],
        )
        .map_err(be)?;
    }
    tx.commit().map_err(be)
}

const BANK_SELECT: &str = "SELECT id, name, enabled_ratio, exchange_id, created_at FROM bank";

fn bank_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Bank> {
    Ok(Bank {
        id: r.get(0)?,
        name: r.get(1)?,
        enabled_ratio: r.get(2)?,
        exchange_id: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn bank_by_name(c: &Connection, name: &str) -> Result<Bank> {
    let mut st = c
        .prepare_cached(&format!("{BANK_SELECT} WHERE name = ?1"))
        .map_err(be)?;
    st.query_row([name], bank_from_row)
        .optional()
        .map_err(be)?
        .ok_or_else(|| StoreError::not_found(Entity::Bank, name))
}

fn signal_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SignalRow> {
    Ok(SignalRow {
        content_id: r.get(0)?,
        bank_id: r.get(1)?,
        signal_type: r.get(2)?,
        value: r.get(3)?,
    })
}

fn signals_of(c: &Connection, content_id: i64) -> Result<BTreeMap<String, String>> {
    let mut st = c
        .prepare_cached(
            "SELECT signal_type, signal_value FROM content_signal WHERE content_id = ?1",
        )
        .map_err(be)?;
    let rows = st
        .query_map([content_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(be)?;
    rows.collect::<rusqlite::Result<BTreeMap<_, _>>>()
        .map_err(be)
}

fn load_content(c: &Connection, id: i64) -> Result<Option<Content>> {
    let mut st = c
        .prepare_cached(
            "SELECT c.id, c.disable_until_ts, c.note, c.metadata_json, c.original_media_uri,
                    c.created_at, c.updated_at,
                    b.id, b.name, b.enabled_ratio, b.exchange_id, b.created_at,
                    r.fetch_key, r.metadata_json, e.id, e.name
             FROM bank_content c JOIN bank b ON b.id = c.bank_id
             LEFT JOIN exchange_record r ON r.id = c.imported_from_id
             LEFT JOIN exchange e ON e.id = r.exchange_id
             WHERE c.id = ?1",
        )
        .map_err(be)?;
    type Row = (
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        i64,
        Bank,
        Option<String>,
        Option<String>,
        Option<i64>,
        Option<String>,
    );
    let row: Option<Row> = st
        .query_row([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                Bank {
                    id: r.get(7)?,
                    name: r.get(8)?,
                    enabled_ratio: r.get(9)?,
                    exchange_id: r.get(10)?,
                    created_at: r.get(11)?,
                },
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
                r.get(15)?,
            ))
        })
        .optional()
        .map_err(be)?;
    let Some((id, dut, note, meta, uri, created, updated, bank, key, rmeta, eid, ename)) = row
    else {
        return Ok(None);
    };
    let provenance = match (key, rmeta, eid, ename) {
        (Some(record_key), Some(rmeta), Some(exchange_id), Some(exchange_name)) => {
            Some(Provenance {
                exchange_id,
                exchange_name,
                record_key,
                record_metadata: parse_json(&rmeta)?,
            })
        }
        _ => None,
    };
    Ok(Some(Content {
        id,
        bank,
        disable_until_ts: dut,
        note,
        metadata: meta.as_deref().map(parse_json).transpose()?,
        original_media_uri: uri,
        signals: signals_of(c, id)?,
        provenance,
        created_at: created,
        updated_at: updated,
    }))
}

fn content_in_bank(c: &Connection, bank: &str, id: i64) -> Result<Content> {
    let b = bank_by_name(c, bank)?;
    match load_content(c, id)? {
        Some(content) if content.bank.id == b.id => Ok(content),
        _ => Err(StoreError::not_found(Entity::Content, id)),
    }
}

const EXCHANGE_SELECT: &str =
    "SELECT e.id, e.name, e.api, e.enabled, e.config_json, b.id, e.created_at, e.updated_at
     FROM exchange e LEFT JOIN bank b ON b.exchange_id = e.id";

type RawExchange = (i64, String, String, bool, String, Option<i64>, i64, i64);

fn exchange_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawExchange> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn finish_exchange(raw: RawExchange) -> Result<Exchange> {
    Ok(Exchange {
        id: raw.0,
        name: raw.1,
        api: raw.2,
        enabled: raw.3,
        config: parse_json(&raw.4)?,
        bank_id: raw.5,
        created_at: raw.6,
        updated_at: raw.7,
    })
}

fn exchange_by_name(c: &Connection, name: &str) -> Result<Exchange> {
    let raw = c
        .query_row(
            &format!("{EXCHANGE_SELECT} WHERE e.name = ?1"),
            [name],
            exchange_from_row,
        )
        .optional()
        .map_err(be)?
        .ok_or_else(|| StoreError::not_found(Entity::Exchange, name))?;
    finish_exchange(raw)
}

fn exchange_id(c: &Connection, name: &str) -> Result<i64> {
    let mut st = c
        .prepare_cached("SELECT id FROM exchange WHERE name = ?1")
        .map_err(be)?;
    st.query_row([name], |r| r.get(0))
        .optional()
        .map_err(be)?
        .ok_or_else(|| StoreError::not_found(Entity::Exchange, name))
}

fn stored_checkpoint(c: &Connection, exchange_id: i64) -> Result<Option<FetchCheckpoint>> {
    let row: Option<(Option<String>, Option<i64>)> = c
        .query_row(
            "SELECT checkpoint_json, checkpoint_ts FROM exchange_fetch_status WHERE exchange_id = ?1",
            [exchange_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(be)?;
    match row {
        Some((Some(json), ts)) => Ok(Some(FetchCheckpoint {
            value: parse_json(&json)?,
            ts,
        })),
        _ => Ok(None),
    }
}

fn apply_batch(
    tx: &Transaction<'_>,
    inner: &Inner,
    exchange: &str,
    batch: &FetchBatch,
    listing: Option<ListingMark>,
) -> Result<BatchOutcome> {
    let listing_id = listing.map(|l| l.listing_id);
    let merged = batch::merge(&batch.updates)?;
    let (ex_id, bank_id): (i64, Option<i64>) = tx
        .query_row(
            "SELECT e.id, b.id FROM exchange e LEFT JOIN bank b ON b.exchange_id = e.id WHERE e.name = ?1",
            [exchange],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(be)?
        .ok_or_else(|| StoreError::not_found(Entity::Exchange, exchange))?;
    let bank_id = bank_id
        .ok_or_else(|| StoreError::Conflict(format!("exchange '{exchange}' has no bank")))?;
    batch::check_guard(&batch.guard, stored_checkpoint(tx, ex_id)?.as_ref())?;
    let now = now_secs();
    let mut out = BatchOutcome::default();
    // Arrays travel as one JSON parameter each (see `to_json`).

    if !merged.deletes.is_empty() {
        // FK cascades remove content and signals; their triggers log them.
        out.records_deleted = tx
            .execute(
                "DELETE FROM exchange_record
                 WHERE exchange_id = ?1 AND fetch_key IN (SELECT value FROM json_each(?2))",
                params![ex_id, to_json(&merged.deletes)?],
            )
            .map_err(be)? as u64;
    }

    let mut existing: HashMap<String, batch::Existing> = HashMap::new();
    if !merged.upserts.is_empty() {
        let keys: Vec<&str> = merged.upserts.iter().map(|(k, _)| *k).collect();
        let mut st = tx
            .prepare_cached(
                "SELECT r.fetch_key, r.id, c.id FROM json_each(?2) j
                 CROSS JOIN exchange_record r ON r.exchange_id = ?1 AND r.fetch_key = j.value
                 LEFT JOIN bank_content c ON c.imported_from_id = r.id",
            )
            .map_err(be)?;
        let rows = st
            .query_map(params![ex_id, to_json(&keys)?], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    batch::Existing {
                        record_id: r.get(1)?,
                        content_id: r.get(2)?,
                    },
                ))
            })
            .map_err(be)?;
        for row in rows {
            let (k, e) = row.map_err(be)?;
            existing.insert(k, e);
        }
    }

    let mut new_records: Vec<(&str, String)> = Vec::new();
    // (index into new_records, type, value)
    let mut new_signals: Vec<(usize, &str, &str)> = Vec::new();
    let mut updated: Vec<(&FetchedRecord, batch::Existing)> = Vec::new();
    for (key, rec) in &merged.upserts {
        match existing.get(*key) {
            Some(e) => updated.push((rec, *e)),
            None => {
                for (t, v) in &rec.signals {
                    new_signals.push((new_records.len(), t, v));
                }
                new_records.push((key, rec.metadata.to_string()));
            }
        }
    }
    if !new_records.is_empty() {
        // Ids are assigned here (this is the only writer, inside an IMMEDIATE transaction),
        // so content and signal rows need no lookup of the rows inserted just before.
        // bank_content keeps AUTOINCREMENT's promise: ids above any ever used.
        let (record0, content0): (i64, i64) = tx
            .query_row(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM exchange_record) + 1,
                        MAX((SELECT COALESCE(MAX(id), 0) FROM bank_content),
                            COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'bank_content'), 0)) + 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(be)?;
        tx.execute(
            "INSERT INTO exchange_record (id, exchange_id, fetch_key, metadata_json, updated_at, listing_id)
             SELECT ?4 + j.key, ?1, j.value ->> 0, j.value ->> 1, ?2, ?5 FROM json_each(?3) j",
            params![ex_id, now, to_json(&new_records)?, record0, listing_id],
        )
        .map_err(be)?;
        tx.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?5)
             INSERT INTO bank_content (id, bank_id, imported_from_id, disable_until_ts, created_at, updated_at)
             SELECT ?4 + i, ?1, ?3 + i, 1, ?2, ?2 FROM n",
            params![bank_id, now, record0, content0, new_records.len() as i64],
        )
        .map_err(be)?;
        tx.execute(
            "INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
             SELECT ?4 + (j.value ->> 0), j.value ->> 1, j.value ->> 2, ?1, ?2 FROM json_each(?3) j",
            params![bank_id, now, to_json(&new_signals)?, content0],
        )
        .map_err(be)?;
        out.records_added = new_records.len() as u64;
    }

    if !updated.is_empty() {
        out.records_updated = updated.len() as u64;
        let metas: Vec<(i64, String)> = updated
            .iter()
            .map(|(r, e)| (e.record_id, r.metadata.to_string()))
            .collect();
        tx.execute(
            "UPDATE exchange_record SET metadata_json = j.value ->> 1, updated_at = ?1,
                 listing_id = COALESCE(?3, listing_id)
             FROM json_each(?2) j WHERE exchange_record.id = j.value ->> 0",
            params![now, to_json(&metas)?, listing_id],
        )
        .map_err(be)?;
        let mut ins_content = tx
            .prepare_cached(
                "INSERT INTO bank_content (bank_id, imported_from_id, disable_until_ts, created_at, updated_at)
                 VALUES (?1, ?2, 1, ?3, ?3) RETURNING id",
            )
            .map_err(be)?;
        let mut targets: Vec<(i64, &FetchedRecord)> = Vec::with_capacity(updated.len());
        for (rec, e) in &updated {
            let cid = match e.content_id {
                Some(cid) => cid,
                // Content a curator deleted comes back.
                None => ins_content
                    .query_row(params![bank_id, e.record_id, now], |r| r.get(0))
                    .map_err(be)?,
            };
            targets.push((cid, *rec));
        }
        let cids: Vec<i64> = targets.iter().map(|(c, _)| *c).collect();
        let mut current: HashMap<i64, BTreeMap<String, String>> = HashMap::new();
        {
            let mut st = tx
                .prepare_cached(
                    "SELECT content_id, signal_type, signal_value FROM content_signal
                     WHERE content_id IN (SELECT value FROM json_each(?1))",
                )
                .map_err(be)?;
            let rows = st
                .query_map([to_json(&cids)?], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(be)?;
            for row in rows {
                let (c, t, v) = row.map_err(be)?;
                current.entry(c).or_default().insert(t, v);
            }
        }
        let diff = batch::diff_signals(&current, &targets);
        let mut del_sig = tx
            .prepare_cached("DELETE FROM content_signal WHERE content_id = ?1 AND signal_type = ?2")
            .map_err(be)?;
        for (c, t) in &diff.delete {
            del_sig.execute(params![c, t]).map_err(be)?;
        }
        let mut upd_sig = tx
            .prepare_cached(
                "UPDATE content_signal SET signal_value = ?1, created_at = ?2
                 WHERE content_id = ?3 AND signal_type = ?4",
            )
            .map_err(be)?;
        for (c, t, v) in &diff.update {
            upd_sig.execute(params![v, now, c, t]).map_err(be)?;
        }
        let mut ins_sig = tx
            .prepare_cached(
                "INSERT INTO content_signal (content_id, signal_type, signal_value, bank_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(be)?;
        for (c, t, v) in &diff.insert {
            ins_sig
                .execute(params![c, t, v, bank_id, now])
                .map_err(be)?;
        }
    }

    // The listing is complete: what it did not mark is gone upstream. The cascade removes
    // the content and signals, and their triggers log it.
    if let Some(l) = listing.filter(|l| l.complete) {
        out.records_deleted += tx
            .execute(
                "DELETE FROM exchange_record
                 WHERE exchange_id = ?1 AND (listing_id IS NULL OR listing_id <> ?2)",
                params![ex_id, l.listing_id],
            )
            .map_err(be)? as u64;
    }

    if inner.fault_before_checkpoint.load(Ordering::SeqCst) {
        return Err(StoreError::backend("injected fault before checkpoint"));
    }

    let delta = out.records_added as i64 - out.records_deleted as i64;
    out.item_count = tx
        .query_row(
            "INSERT INTO exchange_fetch_status (exchange_id, up_to_date, checkpoint_json, checkpoint_ts, item_count)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (exchange_id) DO UPDATE SET up_to_date = excluded.up_to_date,
                 checkpoint_json = excluded.checkpoint_json, checkpoint_ts = excluded.checkpoint_ts,
                 item_count = item_count + ?5
             RETURNING item_count",
            params![ex_id, batch.up_to_date, json_text(&batch.checkpoint), batch.checkpoint_ts, delta],
            |r| r.get(0),
        )
        .map_err(be)?;
    Ok(out)
}

/// Serialises a batch array to one JSON text parameter, unpacked in SQL by `json_each`, so
/// that a batch costs a handful of statements instead of several per record.
fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(StoreError::backend)
}

fn overrides(c: &Connection) -> Result<Vec<SignalTypeOverride>> {
    let mut st = c
        .prepare_cached("SELECT name, enabled_ratio FROM signal_type_override ORDER BY name")
        .map_err(be)?;
    let rows = st
        .query_map([], |r| {
            Ok(SignalTypeOverride {
                name: r.get(0)?,
                enabled_ratio: r.get(1)?,
            })
        })
        .map_err(be)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)
}

fn current_seq(c: &Connection) -> Result<i64> {
    c.query_row("SELECT COALESCE(MAX(seq), 0) FROM change_log", [], |r| {
        r.get(0)
    })
    .map_err(be)
}

struct StateHead {
    seq: i64,
    banks: Vec<Bank>,
    exchanges: Vec<ExchangeState>,
    overrides: Vec<SignalTypeOverride>,
    content_states: Vec<ContentState>,
}

fn read_state_head(c: &Connection) -> Result<StateHead> {
    let seq = current_seq(c)?;
    let banks = {
        let mut st = c
            .prepare(&format!("{BANK_SELECT} ORDER BY id"))
            .map_err(be)?;
        let rows = st.query_map([], bank_from_row).map_err(be)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?
    };
    let exchanges = {
        let mut st = c
            .prepare("SELECT id, name, enabled FROM exchange ORDER BY id")
            .map_err(be)?;
        let rows = st
            .query_map([], |r| {
                Ok(ExchangeState {
                    exchange_id: r.get(0)?,
                    name: r.get(1)?,
                    enabled: r.get(2)?,
                })
            })
            .map_err(be)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?
    };
    let content_states = {
        let mut st = c
            .prepare("SELECT id, bank_id, disable_until_ts FROM bank_content WHERE disable_until_ts <> 1")
            .map_err(be)?;
        let rows = st
            .query_map([], |r| {
                Ok(ContentState {
                    content_id: r.get(0)?,
                    bank_id: r.get(1)?,
                    disable_until_ts: r.get(2)?,
                })
            })
            .map_err(be)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(be)?
    };
    Ok(StateHead {
        seq,
        banks,
        exchanges,
        overrides: overrides(c)?,
        content_states,
    })
}

fn stream_signals(
    c: &Connection,
    chunk_size: usize,
    tx: &mpsc::Sender<Result<Vec<SignalRow>>>,
) -> Result<()> {
    let mut st = c
        .prepare("SELECT content_id, bank_id, signal_type, signal_value FROM content_signal")
        .map_err(be)?;
    let mut rows = st.query([]).map_err(be)?;
    let mut chunk = Vec::with_capacity(chunk_size);
    while let Some(r) = rows.next().map_err(be)? {
        chunk.push(signal_from_row(r).map_err(be)?);
        if chunk.len() == chunk_size {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_size));
            if tx.blocking_send(Ok(full)).is_err() {
                return Ok(()); // receiver dropped: stop reading
            }
        }
    }
    if !chunk.is_empty() {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}
