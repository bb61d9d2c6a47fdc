//! Changes that weaken oversight other than a mode (a mailbox's oversight address, removing a
//! suppression, deleting a verified domain): requested by a key, decided by a human, one winner
//! by compare-and-set. Mode changes keep their own table (`mode_changes`).

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::changes::ChangeKind;
use crate::domain::oversight::ChangeStatus;

#[derive(Debug, Clone, Deserialize)]
pub struct ChangeRow {
    pub id: String,
    pub account_id: String,
    pub kind: ChangeKind,
    pub mailbox_id: Option<String>,
    pub subject: String,
    pub value: Option<String>,
    pub status: ChangeStatus,
    pub requested_by: String,
    pub requested_livemode: i64,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

pub fn insert(db: &Db, c: &ChangeRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO changes (id, account_id, kind, mailbox_id, subject, value, status, requested_by, requested_livemode, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        args![
            &c.id, &c.account_id, c.kind.as_str(), c.mailbox_id.as_deref(), &c.subject, c.value.as_deref(), c.status.as_str(),
            &c.requested_by, c.requested_livemode, c.created_at
        ],
    )
}

/// A newer request for the same thing replaces one still waiting.
pub fn supersede_pending(db: &Db, account_id: &str, kind: &str, subject: &str, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE changes SET status = 'superseded', decided_at = ?4 WHERE account_id = ?1 AND kind = ?2 AND subject = ?3 AND status = 'pending'",
        args![account_id, kind, subject, now],
    )
}

pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<ChangeRow>> {
    super::first(db, "SELECT * FROM changes WHERE id = ?1 AND account_id = ?2", args![id, account_id]).await
}

/// Decides a waiting change: the row if this call won, `None` if it was no longer pending.
pub async fn decide(db: &Db, account_id: &str, id: &str, status: ChangeStatus, now: i64, by: &str) -> Result<Option<ChangeRow>> {
    super::first(
        db,
        "UPDATE changes SET status = ?3, decided_at = ?4, decided_by = ?5 WHERE id = ?1 AND account_id = ?2 AND status = 'pending' RETURNING *",
        args![id, account_id, status.as_str(), now, by],
    )
    .await
}

/// The account's waiting changes, oldest first (at most 100).
pub async fn pending(db: &Db, account_id: &str, mailbox_id: Option<&str>) -> Result<Vec<ChangeRow>> {
    super::all(
        db,
        "SELECT * FROM changes WHERE account_id = ?1 AND status = 'pending' AND (?2 IS NULL OR mailbox_id = ?2) ORDER BY id LIMIT 100",
        args![account_id, mailbox_id],
    )
    .await
}

/// The newest waiting change of this kind about `subject`.
pub async fn pending_for(db: &Db, account_id: &str, kind: ChangeKind, subject: &str) -> Result<Option<ChangeRow>> {
    super::first(
        db,
        "SELECT * FROM changes WHERE account_id = ?1 AND kind = ?2 AND subject = ?3 AND status = 'pending' ORDER BY id DESC LIMIT 1",
        args![account_id, kind.as_str(), subject],
    )
    .await
}
