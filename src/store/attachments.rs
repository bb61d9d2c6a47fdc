//! Where each inbound attachment lives in the attachments bucket (`attachments`).

use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use super::Db;
use crate::args;

/// The rows of one message's attachments `(index, key, size)`, for its write batch.
pub fn insert_for(db: &Db, message_id: &str, items: &[(usize, String, usize)], now: i64) -> Result<D1PreparedStatement> {
    let rows: Vec<serde_json::Value> = items.iter().map(|(i, k, n)| serde_json::json!([i, k, n])).collect();
    let rows = serde_json::Value::Array(rows).to_string();
    super::stmt(
        db,
        "INSERT INTO attachments (message_id, idx, r2_key, size, created_at)
         SELECT ?1, value->>0, value->>1, value->>2, ?3 FROM json_each(?2)",
        args![message_id, rows.as_str(), now],
    )
}

#[derive(Debug, Deserialize)]
pub struct Stored {
    pub message_id: String,
    pub idx: i64,
    pub r2_key: String,
}

/// Up to `limit` attachments of mail in mailboxes deleted before `deleted_before`.
pub async fn of_deleted_mailboxes(db: &Db, deleted_before: i64, limit: u32) -> Result<Vec<Stored>> {
    super::all(
        db,
        "SELECT a.message_id, a.idx, a.r2_key FROM attachments a
           JOIN messages m ON m.id = a.message_id
           JOIN mailboxes b ON b.id = m.mailbox_id
         WHERE b.deleted_at IS NOT NULL AND b.deleted_at < ?1
         LIMIT ?2",
        args![deleted_before, i64::from(limit)],
    )
    .await
}

/// Forgets the rows of objects that were deleted (`keys`).
pub async fn forget(db: &Db, keys: &[&str]) -> Result<()> {
    let list = serde_json::to_string(keys).expect("strings serialize");
    super::run(db, "DELETE FROM attachments WHERE r2_key IN (SELECT value FROM json_each(?1))", args![list.as_str()]).await
}
