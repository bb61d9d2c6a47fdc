//! Mailboxes and the mode changes that wait for a human.

use serde::Deserialize;
use worker::{D1Database, D1PreparedStatement, Result};

use crate::args;

#[derive(Debug, Clone, Deserialize)]
pub struct MailboxRow {
    pub id: String,
    pub account_id: String,
    pub address: String,
    pub display_name: Option<String>,
    pub oversight_mode: String,
    pub oversight_email: Option<String>,
    pub approval_ttl_secs: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModeChangeRow {
    pub id: String,
    pub account_id: String,
    pub mailbox_id: String,
    pub from_mode: String,
    pub to_mode: String,
    pub status: String,
    pub requested_by: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

pub fn insert(db: &D1Database, m: &MailboxRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO mailboxes (id, account_id, address, display_name, oversight_mode, oversight_email, approval_ttl_secs, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        args![&m.id, &m.account_id, &m.address, m.display_name.as_deref(), &m.oversight_mode, m.oversight_email.as_deref(), m.approval_ttl_secs, m.created_at],
    )
}

pub fn insert_mode_change(db: &D1Database, c: &ModeChangeRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO mode_changes (id, account_id, mailbox_id, from_mode, to_mode, status, requested_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![&c.id, &c.account_id, &c.mailbox_id, &c.from_mode, &c.to_mode, &c.status, &c.requested_by, c.created_at],
    )
}

pub async fn pending_mode_change(db: &D1Database, mailbox_id: &str) -> Result<Option<ModeChangeRow>> {
    super::first(
        db,
        "SELECT * FROM mode_changes WHERE mailbox_id = ?1 AND status = 'pending' ORDER BY created_at DESC LIMIT 1",
        args![mailbox_id],
    )
    .await
}

/// A live mailbox of the account, by id or by address.
pub async fn find(db: &D1Database, account_id: &str, id_or_address: &str) -> Result<Option<MailboxRow>> {
    let col = if id_or_address.starts_with("mbx_") { "id" } else { "address" };
    super::first(
        db,
        &format!("SELECT * FROM mailboxes WHERE account_id = ?1 AND {col} = ?2 AND deleted_at IS NULL"),
        args![account_id, &id_or_address.to_ascii_lowercase()],
    )
    .await
}

/// `allowed`: a JSON array of the mailbox ids a limited key may see (`None`: all).
pub async fn list(db: &D1Database, account_id: &str, allowed: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<MailboxRow>> {
    super::all(
        db,
        "SELECT * FROM mailboxes WHERE account_id = ?1 AND deleted_at IS NULL AND id > ?2
           AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4))) ORDER BY id LIMIT ?3",
        args![account_id, after.unwrap_or(""), i64::from(limit), allowed],
    )
    .await
}

pub fn update(db: &D1Database, m: &MailboxRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET display_name = ?3, oversight_mode = ?4, oversight_email = ?5, approval_ttl_secs = ?6, updated_at = ?7
         WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![&m.account_id, &m.id, m.display_name.as_deref(), &m.oversight_mode, m.oversight_email.as_deref(), m.approval_ttl_secs, m.updated_at],
    )
}

pub async fn soft_delete(db: &D1Database, account_id: &str, id: &str, now: i64) -> Result<Option<MailboxRow>> {
    super::first(
        db,
        "UPDATE mailboxes SET deleted_at = ?3, updated_at = ?3 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL RETURNING *",
        args![account_id, id, now],
    )
    .await
}
