//! The events outbox: an event is written in the same batch as the change it reports.

use serde_json::Value;
use worker::{D1Database, D1PreparedStatement, Result};

use crate::args;

pub struct NewEvent<'a> {
    pub id: &'a str,
    pub account_id: &'a str,
    pub livemode: bool,
    pub mailbox_id: Option<&'a str>,
    pub message_id: Option<&'a str>,
    /// The flat payload, `type` and `event_id` included.
    pub payload: &'a Value,
    pub created_at: i64,
}

pub fn insert(db: &D1Database, e: &NewEvent<'_>) -> Result<D1PreparedStatement> {
    let ty = e.payload.get("type").and_then(Value::as_str).unwrap_or("");
    super::stmt(
        db,
        "INSERT OR IGNORE INTO events (id, account_id, livemode, type, mailbox_id, message_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![e.id, e.account_id, e.livemode, ty, e.mailbox_id, e.message_id, &e.payload.to_string(), e.created_at],
    )
}
