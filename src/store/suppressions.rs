//! The suppression list: addresses an account must not send to (unsubscribed, hard-bounced,
//! complained, or added by hand). One row per (account, address), lower-cased.

use super::Db;
use serde::Deserialize;
use worker::Result;

use crate::args;

#[derive(Debug, Clone, Deserialize)]
pub struct SuppressionRow {
    pub address: String,
    pub reason: String,
    pub source: Option<String>,
    pub created_at: i64,
}

/// Adds (or keeps) a suppression; the first reason recorded stays.
pub async fn add(db: &Db, account_id: &str, address: &str, reason: &str, source: Option<&str>, now: i64) -> Result<()> {
    super::run(
        db,
        "INSERT INTO suppressions (account_id, address, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, address) DO NOTHING",
        args![account_id, &address.to_ascii_lowercase(), reason, source, now],
    )
    .await
}

pub async fn get(db: &Db, account_id: &str, address: &str) -> Result<Option<SuppressionRow>> {
    super::first(db, "SELECT * FROM suppressions WHERE account_id = ?1 AND address = ?2", args![account_id, address]).await
}

/// A page in address order, after `after`, optionally of one reason.
pub async fn list(db: &Db, account_id: &str, reason: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<SuppressionRow>> {
    super::all(
        db,
        "SELECT * FROM suppressions WHERE account_id = ?1 AND address > ?2 AND (?3 IS NULL OR reason = ?3) ORDER BY address LIMIT ?4",
        args![account_id, after.unwrap_or(""), reason, i64::from(limit)],
    )
    .await
}

/// Removes one; the removed row, or `None` if it was not there.
pub async fn remove(db: &Db, account_id: &str, address: &str) -> Result<Option<SuppressionRow>> {
    super::first(db, "DELETE FROM suppressions WHERE account_id = ?1 AND address = ?2 RETURNING *", args![account_id, address]).await
}
