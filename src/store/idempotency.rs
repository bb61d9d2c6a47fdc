//! Idempotency records: a reservation row that concurrent requests cannot both win (the
//! primary key), completed with the answer to replay.

use serde::Deserialize;
use worker::{D1Database, D1PreparedStatement, Result};

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
pub async fn reserve(db: &D1Database, s: &Scope<'_>, fingerprint: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "INSERT INTO idempotency (account_id, livemode, key, fingerprint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, livemode, key) DO NOTHING RETURNING key",
        args![s.account_id, s.livemode, s.key, fingerprint, now],
    )
    .await
}

pub async fn load(db: &D1Database, s: &Scope<'_>) -> Result<Option<StoredRecord>> {
    let row: Option<Row> = super::first(
        db,
        "SELECT fingerprint, status_code, body, created_at FROM idempotency WHERE account_id = ?1 AND livemode = ?2 AND key = ?3",
        args![s.account_id, s.livemode, s.key],
    )
    .await?;
    Ok(row.map(|r| StoredRecord {
        fingerprint: r.fingerprint,
        created_at: r.created_at,
        response: r.status_code.map(|c| (c as u16, r.body.unwrap_or_default())),
    }))
}

/// Takes over an abandoned or expired record; only one contender's compare-and-set succeeds.
pub async fn take_over(db: &D1Database, s: &Scope<'_>, seen_created_at: i64, fingerprint: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE idempotency SET fingerprint = ?5, created_at = ?6, status_code = NULL, body = NULL
         WHERE account_id = ?1 AND livemode = ?2 AND key = ?3 AND created_at = ?4 RETURNING key",
        args![s.account_id, s.livemode, s.key, seen_created_at, fingerprint, now],
    )
    .await
}

pub fn complete(db: &D1Database, s: &Scope<'_>, status: u16, body: &str) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE idempotency SET status_code = ?4, body = ?5 WHERE account_id = ?1 AND livemode = ?2 AND key = ?3",
        args![s.account_id, s.livemode, s.key, i64::from(status), body],
    )
}

pub async fn release(db: &D1Database, s: &Scope<'_>) -> Result<()> {
    super::run(
        db,
        "DELETE FROM idempotency WHERE account_id = ?1 AND livemode = ?2 AND key = ?3 AND status_code IS NULL",
        args![s.account_id, s.livemode, s.key],
    )
    .await
}

pub async fn prune(db: &D1Database, before: i64) -> Result<()> {
    super::run(db, "DELETE FROM idempotency WHERE created_at < ?1", args![before]).await
}
