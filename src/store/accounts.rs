//! Accounts: created by the deployment's operator, each with a default sending domain.

use super::Db;
use serde::Deserialize;
use worker::Result;

use crate::args;

#[derive(Debug, Clone, Deserialize)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    pub default_domain: String,
    /// The first operator's address: where approval requests go when a mailbox names none.
    #[serde(default)]
    pub owner_email: Option<String>,
    pub created_at: i64,
    /// Set while the whole account's sending is paused.
    #[serde(default)]
    pub paused_at: Option<i64>,
}

pub fn insert(db: &Db, a: &AccountRow) -> Result<worker::D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO accounts (id, name, default_domain, owner_email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![&a.id, &a.name, &a.default_domain, a.owner_email.as_deref(), a.created_at],
    )
}

/// Pauses (`Some(now)`, keeping an earlier pause's time) or resumes (`None`) the account.
pub fn set_paused_stmt(db: &Db, id: &str, at: Option<i64>) -> Result<worker::D1PreparedStatement> {
    super::stmt(db, "UPDATE accounts SET paused_at = CASE WHEN ?2 IS NULL THEN NULL ELSE COALESCE(paused_at, ?2) END WHERE id = ?1", args![id, at])
}

pub async fn get(db: &Db, id: &str) -> Result<Option<AccountRow>> {
    super::first(db, "SELECT * FROM accounts WHERE id = ?1", args![id]).await
}

pub async fn domain_taken(db: &Db, domain: &str) -> Result<bool> {
    super::exists(db, "SELECT 1 AS n FROM accounts WHERE default_domain = ?1", args![domain]).await
}
