//! Custom sending domains: their records (JSON), status and sealed DKIM keys.

use super::Db;
use serde::Deserialize;
use worker::Result;

use crate::domain::domains::DomainStatus;

use crate::args;

#[derive(Debug, Clone, Deserialize)]
pub struct DomainRow {
    pub id: String,
    pub account_id: String,
    pub domain: String,
    pub status: DomainStatus,
    pub records: String,
    pub dkim_ed25519_public: String,
    pub dkim_ed25519_private: String,
    pub dkim_rsa_public: String,
    pub dkim_rsa_private: String,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub last_checked_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

/// Inserts a new domain; fails with a UNIQUE violation when a live row holds the domain.
pub async fn insert(db: &Db, d: &DomainRow) -> Result<()> {
    super::run(
        db,
        "INSERT INTO domains (id, account_id, domain, status, records, dkim_ed25519_public, dkim_ed25519_private,
                              dkim_rsa_public, dkim_rsa_private, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        args![&d.id, &d.account_id, &d.domain, d.status.as_str(), &d.records, &d.dkim_ed25519_public, &d.dkim_ed25519_private,
              &d.dkim_rsa_public, &d.dkim_rsa_private, d.created_at],
    )
    .await
}

/// A live domain of the account.
pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<DomainRow>> {
    super::first(db, "SELECT * FROM domains WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL", args![account_id, id]).await
}

/// The account's live domain by name, whatever its status.
pub async fn by_name(db: &Db, account_id: &str, domain: &str) -> Result<Option<DomainRow>> {
    super::first(db, "SELECT * FROM domains WHERE account_id = ?1 AND domain = ?2 AND deleted_at IS NULL", args![account_id, domain]).await
}

pub async fn list(db: &Db, account_id: &str, after: Option<&str>, limit: u32) -> Result<Vec<DomainRow>> {
    super::all(
        db,
        "SELECT * FROM domains WHERE account_id = ?1 AND deleted_at IS NULL AND id > ?2 ORDER BY id LIMIT ?3",
        args![account_id, after.unwrap_or(""), i64::from(limit)],
    )
    .await
}

/// Records the outcome of a check. `verified_at` moves only when the domain becomes verified.
pub async fn record_check(db: &Db, d: &DomainRow, became_verified: bool, now: i64) -> Result<Option<DomainRow>> {
    super::first(
        db,
        "UPDATE domains SET status = ?3, records = ?4, last_checked_at = ?5,
                verified_at = CASE WHEN ?6 = 1 THEN ?5 ELSE verified_at END
         WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL RETURNING *",
        args![&d.account_id, &d.id, d.status.as_str(), &d.records, now, became_verified],
    )
    .await
}

pub async fn soft_delete(db: &Db, account_id: &str, id: &str, now: i64) -> Result<Option<DomainRow>> {
    super::first(
        db,
        "UPDATE domains SET deleted_at = ?3 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL RETURNING *",
        args![account_id, id, now],
    )
    .await
}

/// Pending and verified domains not checked since `checked_before`, oldest check first.
pub async fn due_for_recheck(db: &Db, checked_before: i64, limit: u32) -> Result<Vec<DomainRow>> {
    super::all(
        db,
        "SELECT * FROM domains WHERE deleted_at IS NULL AND status IN ('pending', 'verified')
           AND COALESCE(last_checked_at, 0) < ?1 ORDER BY COALESCE(last_checked_at, 0) LIMIT ?2",
        args![checked_before, i64::from(limit)],
    )
    .await
}

/// Whether another account holds `domain` verified.
pub async fn verified_elsewhere(db: &Db, account_id: &str, domain: &str) -> Result<bool> {
    super::exists(
        db,
        "SELECT 1 AS ok FROM domains WHERE domain = ?1 AND account_id <> ?2 AND status = 'verified' AND deleted_at IS NULL",
        args![domain, account_id],
    )
    .await
}
