//! Webhook endpoints and their delivery attempts. An attempt is claimed by inserting its row
//! (one per endpoint, event and attempt number), and finished by compare-and-set on `pending`.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::webhooks::AttemptStatus;

#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRow {
    pub id: String,
    pub account_id: String,
    pub livemode: i64,
    pub url: String,
    /// JSON array of event types, or `["*"]`.
    pub events: String,
    pub mailbox_id: Option<String>,
    pub format: String,
    pub secret: Option<String>,
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
    /// The mailbox's address, when the query joins it.
    #[serde(default)]
    pub mailbox_address: Option<String>,
}

impl EndpointRow {
    pub fn event_types(&self) -> Vec<String> {
        serde_json::from_str(&self.events).unwrap_or_default()
    }

    /// The secrets that sign now: the current one, and the previous one for a day after a rotation.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let previous = self.previous_secret.as_deref().filter(|_| self.previous_secret_expires_at.is_some_and(|t| t > now));
        self.secret.as_deref().into_iter().chain(previous).collect()
    }
}

const SELECT_ENDPOINT: &str = "SELECT w.*, m.address AS mailbox_address FROM webhook_endpoints w LEFT JOIN mailboxes m ON m.id = w.mailbox_id";

pub fn insert(db: &Db, e: &EndpointRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO webhook_endpoints (id, account_id, livemode, url, events, mailbox_id, format, secret, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        args![&e.id, &e.account_id, e.livemode, &e.url, &e.events, e.mailbox_id.as_deref(), &e.format, e.secret.as_deref(), e.created_at],
    )
}

pub async fn count_live(db: &Db, account_id: &str, livemode: bool) -> Result<i64> {
    #[derive(Deserialize)]
    struct N {
        n: i64,
    }
    let n: Option<N> = super::first(
        db,
        "SELECT COUNT(*) AS n FROM webhook_endpoints WHERE account_id = ?1 AND livemode = ?2 AND deleted_at IS NULL",
        args![account_id, livemode],
    )
    .await?;
    Ok(n.map_or(0, |n| n.n))
}

/// An endpoint of this account and mode; deleted ones too when `with_deleted`.
pub async fn get(db: &Db, account_id: &str, livemode: bool, id: &str, with_deleted: bool) -> Result<Option<EndpointRow>> {
    super::first(
        db,
        &format!("{SELECT_ENDPOINT} WHERE w.id = ?1 AND w.account_id = ?2 AND w.livemode = ?3 AND (?4 = 1 OR w.deleted_at IS NULL)"),
        args![id, account_id, livemode, with_deleted],
    )
    .await
}

/// Any endpoint by id, whatever its state (for the delivery consumer).
pub async fn by_id(db: &Db, id: &str) -> Result<Option<EndpointRow>> {
    super::first(db, &format!("{SELECT_ENDPOINT} WHERE w.id = ?1"), args![id]).await
}

/// `allowed`: a JSON array of the mailbox ids a limited key may see (`None`: all); such a key
/// sees only endpoints of those mailboxes.
pub async fn list(db: &Db, account_id: &str, livemode: bool, allowed: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<EndpointRow>> {
    super::all(
        db,
        &format!(
            "{SELECT_ENDPOINT} WHERE w.account_id = ?1 AND w.livemode = ?2 AND w.deleted_at IS NULL AND w.id > ?3
               AND (?5 IS NULL OR w.mailbox_id IN (SELECT value FROM json_each(?5))) ORDER BY w.id LIMIT ?4"
        ),
        args![account_id, livemode, after.unwrap_or(""), i64::from(limit), allowed],
    )
    .await
}

/// The endpoints events of this account and mode may go to.
pub async fn active(db: &Db, account_id: &str, livemode: bool) -> Result<Vec<EndpointRow>> {
    super::all(
        db,
        &format!("{SELECT_ENDPOINT} WHERE w.account_id = ?1 AND w.livemode = ?2 AND w.deleted_at IS NULL AND w.disabled_at IS NULL ORDER BY w.id"),
        args![account_id, livemode],
    )
    .await
}

pub async fn soft_delete(db: &Db, account_id: &str, livemode: bool, id: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE webhook_endpoints SET deleted_at = ?4 WHERE id = ?1 AND account_id = ?2 AND livemode = ?3 AND deleted_at IS NULL RETURNING id",
        args![id, account_id, livemode, now],
    )
    .await
}

/// The current secret becomes the previous one (signing until `previous_expires_at`).
pub async fn rotate_secret(db: &Db, account_id: &str, livemode: bool, id: &str, secret: &str, previous_expires_at: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_expires_at = ?5, secret = ?4
         WHERE id = ?1 AND account_id = ?2 AND livemode = ?3 AND deleted_at IS NULL AND secret IS NOT NULL RETURNING id",
        args![id, account_id, livemode, secret, previous_expires_at],
    )
    .await
}

/// True when this call disabled it (it was enabled).
pub async fn disable(db: &Db, id: &str, reason: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE webhook_endpoints SET disabled_at = ?2, disabled_reason = ?3 WHERE id = ?1 AND disabled_at IS NULL RETURNING id",
        args![id, now, reason],
    )
    .await
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub attempt: i64,
    pub status: AttemptStatus,
    pub response_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub next_retry_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default)]
    pub event_type: Option<String>,
}

/// Claims one attempt by creating its `pending` row; `false` when that attempt already has one.
pub async fn claim_attempt(db: &Db, id: &str, endpoint_id: &str, event_id: &str, attempt: u32, now: i64) -> Result<bool> {
    super::changed(
        db,
        "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, attempt, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5) ON CONFLICT DO NOTHING RETURNING id",
        args![id, endpoint_id, event_id, i64::from(attempt), now],
    )
    .await
}

pub async fn attempt(db: &Db, endpoint_id: &str, event_id: &str, attempt: u32) -> Result<Option<DeliveryRow>> {
    super::first(
        db,
        "SELECT * FROM webhook_deliveries WHERE endpoint_id = ?1 AND event_id = ?2 AND attempt = ?3",
        args![endpoint_id, event_id, i64::from(attempt)],
    )
    .await
}

/// Takes over a `pending` attempt whose worker went quiet before `stale_before` (it died mid-call).
pub async fn take_over(db: &Db, id: &str, stale_before: i64, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE webhook_deliveries SET updated_at = ?3 WHERE id = ?1 AND status = 'pending' AND updated_at < ?2 RETURNING id",
        args![id, stale_before, now],
    )
    .await
}

pub async fn has_succeeded(db: &Db, endpoint_id: &str, event_id: &str) -> Result<bool> {
    super::exists(
        db,
        "SELECT id FROM webhook_deliveries WHERE endpoint_id = ?1 AND event_id = ?2 AND status = 'succeeded'",
        args![endpoint_id, event_id],
    )
    .await
}

pub struct Finish<'a> {
    pub status: AttemptStatus,
    pub response_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<&'a str>,
    pub next_retry_at: Option<i64>,
}

/// Records how a claimed attempt ended. Fails with a UNIQUE violation if another attempt of the
/// same delivery already succeeded.
pub async fn finish(db: &Db, id: &str, f: &Finish<'_>, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE webhook_deliveries SET status = ?2, response_code = ?3, latency_ms = ?4, error = ?5, next_retry_at = ?6, updated_at = ?7
         WHERE id = ?1 AND status = 'pending' RETURNING id",
        args![id, f.status.as_str(), f.response_code, f.latency_ms, f.error, f.next_retry_at, now],
    )
    .await
}

pub struct DeliveryFilter<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub endpoint_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub status: Option<AttemptStatus>,
    /// JSON array of the mailbox ids a limited key may see.
    pub allowed: Option<&'a str>,
}

pub async fn list_deliveries(db: &Db, f: &DeliveryFilter<'_>, after: Option<&str>, limit: u32) -> Result<Vec<DeliveryRow>> {
    super::all(
        db,
        "SELECT d.*, e.type AS event_type FROM webhook_deliveries d
           JOIN webhook_endpoints w ON w.id = d.endpoint_id
           LEFT JOIN events e ON e.id = d.event_id
         WHERE w.account_id = ?1 AND w.livemode = ?2
           AND (?3 IS NULL OR d.endpoint_id = ?3) AND (?4 IS NULL OR d.event_id = ?4) AND (?5 IS NULL OR d.status = ?5)
           AND (?6 IS NULL OR w.mailbox_id IN (SELECT value FROM json_each(?6)))
           AND d.id > ?7
         ORDER BY d.id LIMIT ?8",
        args![f.account_id, f.livemode, f.endpoint_id, f.event_id, f.status.map(AttemptStatus::as_str), f.allowed, after.unwrap_or(""), i64::from(limit)],
    )
    .await
}

/// Attempts whose next step was lost: a retry that is overdue with no later attempt, or an
/// attempt left `pending` by a worker that died.
pub async fn stalled(db: &Db, before: i64, limit: u32) -> Result<Vec<DeliveryRow>> {
    super::all(
        db,
        "SELECT d.* FROM webhook_deliveries d
         WHERE ((d.status = 'retrying' AND d.next_retry_at < ?1) OR (d.status = 'pending' AND d.updated_at < ?1))
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries n WHERE n.endpoint_id = d.endpoint_id AND n.event_id = d.event_id AND n.attempt > d.attempt)
         LIMIT ?2",
        args![before, i64::from(limit)],
    )
    .await
}
