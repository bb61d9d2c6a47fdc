//! Mode changes that wait for a human: a mailbox asked for a looser oversight mode. Decided by
//! compare-and-set on the row (one winner); a newer request or a tightening supersedes it.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::oversight::{ChangeStatus, OversightMode};

#[derive(Debug, Clone, Deserialize)]
pub struct ModeChangeRow {
    pub id: String,
    pub account_id: String,
    pub mailbox_id: String,
    pub from_mode: OversightMode,
    pub to_mode: OversightMode,
    pub status: ChangeStatus,
    pub requested_by: String,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
}

pub fn insert(db: &Db, c: &ModeChangeRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO mode_changes (id, account_id, mailbox_id, from_mode, to_mode, status, requested_by, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![&c.id, &c.account_id, &c.mailbox_id, c.from_mode.as_str(), c.to_mode.as_str(), c.status.as_str(), &c.requested_by, c.created_at],
    )
}

/// The newest change still waiting for this mailbox.
pub async fn pending_for(db: &Db, mailbox_id: &str) -> Result<Option<ModeChangeRow>> {
    super::first(
        db,
        "SELECT * FROM mode_changes WHERE mailbox_id = ?1 AND status = 'pending' ORDER BY created_at DESC LIMIT 1",
        args![mailbox_id],
    )
    .await
}

/// Retires whatever still waits for this mailbox (a newer request, or a tightening).
pub fn supersede_pending(db: &Db, mailbox_id: &str, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mode_changes SET status = 'superseded', decided_at = ?2 WHERE mailbox_id = ?1 AND status = 'pending'",
        args![mailbox_id, now],
    )
}

pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<ModeChangeRow>> {
    super::first(db, "SELECT * FROM mode_changes WHERE id = ?1 AND account_id = ?2", args![id, account_id]).await
}

/// Decides a waiting change: the row if this call won, `None` if it was no longer pending.
pub async fn decide(db: &Db, account_id: &str, id: &str, status: ChangeStatus, now: i64, by: &str) -> Result<Option<ModeChangeRow>> {
    super::first(
        db,
        "UPDATE mode_changes SET status = ?3, decided_at = ?4, decided_by = ?5
         WHERE id = ?1 AND account_id = ?2 AND status = 'pending' RETURNING *",
        args![id, account_id, status.as_str(), now, by],
    )
    .await
}

/// The account's waiting changes, optionally of one mailbox, oldest first (at most 100).
pub async fn pending(db: &Db, account_id: &str, mailbox_id: Option<&str>) -> Result<Vec<ModeChangeRow>> {
    super::all(
        db,
        "SELECT * FROM mode_changes WHERE account_id = ?1 AND status = 'pending' AND (?2 IS NULL OR mailbox_id = ?2) ORDER BY id LIMIT 100",
        args![account_id, mailbox_id],
    )
    .await
}
