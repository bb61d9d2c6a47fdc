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
}

pub fn insert(db: &Db, a: &AccountRow) -> Result<worker::D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO accounts (id, name, default_domain, owner_email, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        args![&a.id, &a.name, &a.default_domain, a.owner_email.as_deref(), a.created_at],
    )
}

pub async fn get(db: &Db, id: &str) -> Result<Option<AccountRow>> {
    super::first(db, "SELECT * FROM accounts WHERE id = ?1", args![id]).await
}

pub async fn domain_taken(db: &Db, domain: &str) -> Result<bool> {
    super::exists(db, "SELECT 1 AS n FROM accounts WHERE default_domain = ?1", args![domain]).await
}
