//! Idempotency records: a reservation row that concurrent requests cannot both win (the
//! primary key), completed with the answer to replay.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, D1Result, Result};

use crate::args;
use crate::domain::idempotency::StoredRecord;

#[derive(Deserialize)]
struct Row {
    fingerprint: String,
    status_code: Option<i64>,
    body: Option<String>,
    created_at: i64,
}

pub struct Scope<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub key: &'a str,
}

/// `true` when this request now owns the key.
pub async fn reserve(db: &Db, s: &Scope<'_>, fingerprint: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "INSERT INTO idempotency (account_id, livemode, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, livemode, key) DO NOTHING RETURNING key",
        args![s.account_id, s.livemode, s.key, fingerprint, now],
    )
    .await
}

/// The key's account and mode, found through the API key's hash (for statements that run in the
/// authentication batch, before the account is known).
const KEY_SCOPE: &str = "SELECT account_id, livemode FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL";

/// `reserve` for the caller whose API key hashes to `key_hash`: its result has a row when this
/// request now owns the idempotency key.
pub fn reserve_for_key(db: &Db, key_hash: &str, key: &str, fingerprint: &str, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        &format!(
            "INSERT INTO idempotency (account_id, livemode, key, fingerprint, created_at)
             SELECT account_id, livemode, ?2, ?3, ?4 FROM ({KEY_SCOPE}) WHERE 1
             ON CONFLICT (account_id, livemode, key) DO NOTHING RETURNING key"
        ),
        args![key_hash, key, fingerprint, now],
    )
}

/// `load` for the caller whose API key hashes to `key_hash` (run after `reserve_for_key`).
pub fn load_for_key(db: &Db, key_hash: &str, key: &str) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        &format!(
            "SELECT i.fingerprint, i.status_code, i.body, i.created_at FROM idempotency i JOIN ({KEY_SCOPE}) k
               ON i.account_id = k.account_id AND i.livemode = k.livemode WHERE i.key = ?2"
        ),
        args![key_hash, key],
    )
}

/// Whether `reserve_for_key`'s result says the request owns the key.
pub fn reserved(result: &D1Result) -> Result<bool> {
    Ok(!result.results::<serde_json::Value>()?.is_empty())
}

/// `load_for_key`'s result.
pub fn loaded(result: &D1Result) -> Result<Option<StoredRecord>> {
    Ok(result.results::<Row>()?.into_iter().next().map(Row::into_record))
}

pub async fn load(db: &Db, s: &Scope<'_>) -> Result<Option<StoredRecord>> {
    let row: Option<Row> = super::first(
        db,
        "SELECT fingerprint, status_code, body, created_at FROM idempotency WHERE account_id = ?1 AND livemode = ?2 AND key = ?3",
        args![s.account_id, s.livemode, s.key],
    )
    .await?;
    Ok(row.map(Row::into_record))
}

/// The records under `keys` (a batch's item keys), by key.
pub async fn load_many(db: &Db, account_id: &str, livemode: bool, keys: &[&str]) -> Result<Vec<(String, StoredRecord)>> {
    #[derive(serde::Deserialize)]
    struct Keyed {
        key: String,
        #[serde(flatten)]
        row: Row,
    }
    let list = serde_json::to_string(keys).expect("strings serialize");
    let rows: Vec<Keyed> = super::all(
        db,
        "SELECT key, fingerprint, status_code, body, created_at FROM idempotency
         WHERE account_id = ?1 AND livemode = ?2 AND key IN (SELECT value FROM json_each(?3))",
        args![account_id, livemode, list.as_str()],
    )
    .await?;
    Ok(rows.into_iter().map(|k| (k.key, k.row.into_record())).collect())
}

/// Completed records for a batch's new items `(key, fingerprint, status, body)`: records of the
/// same keys older than `expired_before` are replaced; a live record of the same key (a
/// concurrent request) makes the insert fail, and with it the whole write batch.
pub fn insert_completed_many(db: &Db, account_id: &str, livemode: bool, records: &[(&str, &str, u16, &str)], now: i64, expired_before: i64) -> Result<Vec<D1PreparedStatement>> {
    let mut out = vec![];
    for chunk in records.chunks(100) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.0).collect();
        let rows: Vec<serde_json::Value> = chunk.iter().map(|(k, f, st, b)| serde_json::json!([k, f, st, b])).collect();
        let keys = serde_json::to_string(&keys).expect("strings serialize");
        let rows = serde_json::Value::Array(rows).to_string();
        out.push(super::stmt(
            db,
            "DELETE FROM idempotency WHERE account_id = ?1 AND livemode = ?2 AND created_at < ?4 AND key IN (SELECT value FROM json_each(?3))",
            args![account_id, livemode, keys.as_str(), expired_before],
        )?);
        out.push(super::stmt(
            db,
            "INSERT INTO idempotency (account_id, livemode, key, fingerprint, status_code, body, created_at)
             SELECT ?1, ?2, value->>0, value->>1, value->>2, value->>3, ?4 FROM json_each(?3)",
            args![account_id, livemode, rows.as_str(), now],
        )?);
    }
    Ok(out)
}

impl Row {
    fn into_record(self) -> StoredRecord {
        StoredRecord { fingerprint: self.fingerprint, created_at: self.created_at, response: self.status_code.map(|c| (c as u16, self.body.unwrap_or_default())) }
    }
}

/// Takes over an abandoned or expired record; only one contender's compare-and-set succeeds.
pub async fn take_over(db: &Db, s: &Scope<'_>, seen_created_at: i64, fingerprint: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE idempotency SET fingerprint = ?5, created_at = ?6, status_code = NULL, body = NULL
         WHERE account_id = ?1 AND livemode = ?2 AND key = ?3 AND created_at = ?4 RETURNING key",
        args![s.account_id, s.livemode, s.key, seen_created_at, fingerprint, now],
    )
    .await
}

pub fn complete(db: &Db, s: &Scope<'_>, status: u16, body: &str) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE idempotency SET status_code = ?4, body = ?5 WHERE account_id = ?1 AND livemode = ?2 AND key = ?3",
        args![s.account_id, s.livemode, s.key, i64::from(status), body],
    )
}

pub async fn release(db: &Db, s: &Scope<'_>) -> Result<()> {
    super::run(
        db,
        "DELETE FROM idempotency WHERE account_id = ?1 AND livemode = ?2 AND key = ?3 AND status_code IS NULL",
        args![s.account_id, s.livemode, s.key],
    )
    .await
}

pub async fn prune(db: &Db, before: i64) -> Result<()> {
    super::run(db, "DELETE FROM idempotency WHERE created_at < ?1", args![before]).await
}
