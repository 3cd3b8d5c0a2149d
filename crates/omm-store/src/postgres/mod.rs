//! PostgreSQL backend (work in progress).
#![allow(dead_code, unused_variables)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::changes::{ChangeSubscription, StateSnapshot};
use crate::error::{Result, StoreError};
use crate::model::*;
use crate::{AppliedMigration, Change, PostgresOptions};

pub(crate) struct PgStore;

fn todo<T>() -> Result<T> {
    Err(StoreError::backend("postgres backend not implemented yet"))
}

impl PgStore {
    pub(crate) async fn open(options: PostgresOptions) -> Result<PgStore> {
        todo()
    }
    pub(crate) async fn applied_migrations(&self) -> Result<Vec<AppliedMigration>> {
        todo()
    }
    pub(crate) async fn list_banks(&self) -> Result<Vec<Bank>> {
        todo()
    }
    pub(crate) async fn get_bank(&self, name: &str) -> Result<Bank> {
        todo()
    }
    pub(crate) async fn get_bank_by_id(&self, id: i64) -> Result<Bank> {
        todo()
    }
    pub(crate) async fn create_bank(&self, bank: &NewBank) -> Result<Bank> {
        todo()
    }
    pub(crate) async fn update_bank(&self, name: &str, update: &BankUpdate) -> Result<Bank> {
        todo()
    }
    pub(crate) async fn delete_bank(&self, name: &str) -> Result<bool> {
        todo()
    }
    pub(crate) async fn create_content(&self, bank: &str, content: &NewContent) -> Result<Content> {
        todo()
    }
    pub(crate) async fn get_content(&self, bank: &str, id: i64) -> Result<Content> {
        todo()
    }
    pub(crate) async fn get_contents(&self, ids: &[i64]) -> Result<Vec<Content>> {
        todo()
    }
    pub(crate) async fn update_content(
        &self,
        bank: &str,
        id: i64,
        update: &ContentUpdate,
    ) -> Result<Content> {
        todo()
    }
    pub(crate) async fn delete_content(&self, bank: &str, id: i64) -> Result<bool> {
        todo()
    }
    pub(crate) async fn list_content(
        &self,
        bank: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<Content>> {
        todo()
    }
    pub(crate) async fn count_content(&self, bank: &str) -> Result<i64> {
        todo()
    }
    pub(crate) async fn list_bank_signals(
        &self,
        bank: &str,
        after_content_id: i64,
        limit: u32,
    ) -> Result<Vec<SignalRow>> {
        todo()
    }
    pub(crate) async fn get_signals(&self, content_id: i64) -> Result<BTreeMap<String, String>> {
        todo()
    }
    pub(crate) async fn signal_type_stats(&self) -> Result<Vec<SignalTypeStats>> {
        todo()
    }
    pub(crate) async fn create_exchange(&self, exchange: &NewExchange) -> Result<Exchange> {
        todo()
    }
    pub(crate) async fn list_exchanges(&self) -> Result<Vec<Exchange>> {
        todo()
    }
    pub(crate) async fn get_exchange(&self, name: &str) -> Result<Exchange> {
        todo()
    }
    pub(crate) async fn update_exchange(
        &self,
        name: &str,
        update: &ExchangeUpdate,
    ) -> Result<Exchange> {
        todo()
    }
    pub(crate) async fn delete_exchange(&self, name: &str) -> Result<bool> {
        todo()
    }
    pub(crate) async fn get_exchange_record(
        &self,
        exchange: &str,
        key: &str,
    ) -> Result<ExchangeRecord> {
        todo()
    }
    pub(crate) async fn set_api_credentials(
        &self,
        api: &str,
        credentials: Option<&Value>,
    ) -> Result<()> {
        todo()
    }
    pub(crate) async fn get_api_credentials(&self, api: &str) -> Result<Option<Value>> {
        todo()
    }
    pub(crate) async fn has_api_credentials(&self, api: &str) -> Result<bool> {
        todo()
    }
    pub(crate) async fn fetch_status(&self, exchange: &str) -> Result<FetchStatus> {
        todo()
    }
    pub(crate) async fn fetch_checkpoint(&self, exchange: &str) -> Result<Option<FetchCheckpoint>> {
        todo()
    }
    pub(crate) async fn start_fetch(&self, exchange: &str) -> Result<()> {
        todo()
    }
    pub(crate) async fn finish_fetch(&self, exchange: &str, end: &FetchRunEnd) -> Result<()> {
        todo()
    }
    pub(crate) async fn apply_fetch_batch(
        &self,
        exchange: &str,
        batch: &FetchBatch,
    ) -> Result<BatchOutcome> {
        todo()
    }
    pub(crate) async fn reset_fetch_state(&self, exchange: &str) -> Result<u64> {
        todo()
    }
    pub(crate) async fn try_acquire_fetch_lease(
        &self,
        exchange: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        todo()
    }
    pub(crate) async fn release_fetch_lease(&self, exchange: &str, holder: &str) -> Result<()> {
        todo()
    }
    pub(crate) async fn list_signal_type_overrides(&self) -> Result<Vec<SignalTypeOverride>> {
        todo()
    }
    pub(crate) async fn set_signal_type_override(&self, name: &str, ratio: f64) -> Result<()> {
        todo()
    }
    pub(crate) async fn delete_signal_type_override(&self, name: &str) -> Result<bool> {
        todo()
    }
    pub(crate) async fn current_seq(&self) -> Result<i64> {
        todo()
    }
    pub(crate) async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        todo()
    }
    pub(crate) async fn load_state(&self, chunk_size: usize) -> Result<StateSnapshot> {
        todo()
    }
    pub(crate) async fn subscribe(&self) -> Result<ChangeSubscription> {
        todo()
    }
    pub(crate) async fn prune_changes(&self, upto: i64) -> Result<u64> {
        todo()
    }
    pub(crate) fn set_fault_before_checkpoint(&self, on: bool) {}
}
