//! The events outbox: an event is written in the same batch as the change it reports.

use super::Db;
use serde_json::Value;
use worker::{D1PreparedStatement, Result};

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

pub fn insert(db: &Db, e: &NewEvent<'_>) -> Result<D1PreparedStatement> {
    let ty = e.payload.get("type").and_then(Value::as_str).unwrap_or("");
    super::stmt(
        db,
        "INSERT OR IGNORE INTO events (id, account_id, livemode, type, mailbox_id, message_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![e.id, e.account_id, e.livemode, ty, e.mailbox_id, e.message_id, &e.payload.to_string(), e.created_at],
    )
}

/// Outbox rows for events about messages (`send_batch`), as `about_message` writes them.
pub fn about_messages(db: &Db, items: &[(&super::messages::MessageRow, &Value)]) -> Result<Vec<D1PreparedStatement>> {
    let rows: Vec<Value> = items
        .iter()
        .map(|(m, payload)| {
            serde_json::json!([
                payload.get("event_id").and_then(Value::as_str).unwrap_or_default(), m.account_id, m.livemode, payload.get("type").and_then(Value::as_str).unwrap_or(""),
                m.mailbox_id, m.id, payload.to_string(),
                payload.get("created_at").and_then(Value::as_str).and_then(crate::domain::time::parse_rfc3339).unwrap_or(m.updated_at)
            ])
        })
        .collect();
    let mut out = vec![];
    for chunk in rows.chunks(100) {
        let param = Value::Array(chunk.to_vec()).to_string();
        out.push(super::stmt(
            db,
            "INSERT OR IGNORE INTO events (id, account_id, livemode, type, mailbox_id, message_id, payload, created_at)
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 FROM json_each(?1)",
            args![param.as_str()],
        )?);
    }
    Ok(out)
}

/// The outbox row for an event about one message (its account, mode and mailbox); the payload
/// carries its own `event_id`.
pub fn about_message(db: &Db, m: &super::messages::MessageRow, payload: &Value) -> Result<D1PreparedStatement> {
    insert(db, &NewEvent {
        id: payload.get("event_id").and_then(Value::as_str).unwrap_or_default(),
        account_id: &m.account_id,
        livemode: m.livemode == 1,
        mailbox_id: Some(&m.mailbox_id),
        message_id: Some(&m.id),
        payload,
        created_at: payload.get("created_at").and_then(Value::as_str).and_then(crate::domain::time::parse_rfc3339).unwrap_or(m.updated_at),
    })
}

/// An outbox row as fan-out and delivery read it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EventRow {
    pub id: String,
    pub account_id: String,
    pub livemode: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub mailbox_id: Option<String>,
    pub payload: String,
    pub created_at: i64,
}

/// Takes up to `limit` undispatched events, oldest first, under a lease until `now + lease_ms`
/// (one statement: two drains never take the same event; a drain that dies loses its lease).
pub async fn claim_undispatched(db: &Db, now: i64, lease_ms: i64, limit: u32) -> Result<Vec<EventRow>> {
    super::all(
        db,
        "UPDATE events SET claimed_at = ?1
         WHERE id IN (SELECT id FROM events WHERE dispatched_at IS NULL AND (claimed_at IS NULL OR claimed_at < ?2)
                      ORDER BY created_at LIMIT ?3)
         RETURNING id, account_id, livemode, type, mailbox_id, payload, created_at",
        args![now, now - lease_ms, i64::from(limit)],
    )
    .await
}

/// Marks events handed to the delivery stage (`ids`: a JSON array).
pub async fn mark_dispatched(db: &Db, ids: &str, now: i64) -> Result<()> {
    super::run(db, "UPDATE events SET dispatched_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))", args![now, ids]).await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<EventRow>> {
    super::first(db, "SELECT id, account_id, livemode, type, mailbox_id, payload, created_at FROM events WHERE id = ?1", args![id]).await
}

/// Deletes up to `limit` events created before `before` that were fanned out, with their
/// webhook delivery attempts (the outbox's retention; the retry schedule ends within two days).
/// Returns how many events went.
pub async fn prune(db: &Db, before: i64, limit: u32) -> Result<usize> {
    let old = "SELECT id FROM events WHERE dispatched_at IS NOT NULL AND created_at < ?1 ORDER BY created_at LIMIT ?2";
    let statements = vec![
        super::stmt(db, &format!("DELETE FROM webhook_deliveries WHERE event_id IN ({old})"), args![before, i64::from(limit)])?,
        super::stmt(db, &format!("DELETE FROM events WHERE id IN ({old}) RETURNING id"), args![before, i64::from(limit)])?,
    ];
    let results = db.batch(statements).await?;
    match results.last() {
        Some(r) => Ok(r.results::<Value>()?.len()),
        None => Ok(0),
    }
}
