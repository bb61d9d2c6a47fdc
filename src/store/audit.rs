//! Audit entries in D1: recorded entries waiting to be sealed (`audit_pending`, written by
//! anyone), sealed entries (`audit_log`, written only by the `AuditChain` Durable Object),
//! filtered pages, and the whole chain in order for verification and export.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::audit::AuditEntry;

#[derive(Deserialize)]
struct Row {
    id: String,
    seq: i64,
    at: String,
    account_id: String,
    livemode: i64,
    actor: String,
    action: String,
    mailbox: Option<String>,
    message_id: Option<String>,
    oversight_mode: Option<String>,
    outcome: String,
    status: Option<i64>,
    request_id: Option<String>,
    idempotency_key: Option<String>,
    ip: Option<String>,
    country: Option<String>,
    detail: Option<String>,
    via: Option<String>,
    prev_hash: String,
    hash: String,
}

impl From<Row> for AuditEntry {
    fn from(r: Row) -> Self {
        AuditEntry {
            id: r.id, seq: r.seq, at: r.at, account_id: r.account_id, livemode: r.livemode == 1, actor: r.actor,
            action: r.action, mailbox: r.mailbox, message_id: r.message_id, oversight_mode: r.oversight_mode,
            outcome: r.outcome, status: r.status, request_id: r.request_id, idempotency_key: r.idempotency_key,
            ip: r.ip, country: r.country, detail: r.detail, via: r.via, prev_hash: r.prev_hash, hash: r.hash,
        }
    }
}

/// Records an entry (not yet in the chain: its `seq` and hashes are set when it is sealed).
pub fn pend(db: &Db, e: &AuditEntry) -> Result<D1PreparedStatement> {
    let json = serde_json::to_string(e).map_err(|e| worker::Error::RustError(e.to_string()))?;
    super::stmt(db, "INSERT INTO audit_pending (account_id, livemode, entry) VALUES (?1, ?2, ?3)", args![&e.account_id, e.livemode, &json])
}

/// Many entries in one statement per 100, in order (`send_batch`: one entry per message).
pub fn pend_many(db: &Db, entries: &[AuditEntry]) -> Result<Vec<D1PreparedStatement>> {
    let mut out = vec![];
    for chunk in entries.chunks(100) {
        let json = serde_json::to_string(chunk).map_err(|e| worker::Error::RustError(e.to_string()))?;
        out.push(super::stmt(
            db,
            "INSERT INTO audit_pending (account_id, livemode, entry)
             SELECT value->>'$.account_id', CASE WHEN value->>'$.livemode' THEN 1 ELSE 0 END, value FROM json_each(?1) ORDER BY key",
            args![json.as_str()],
        )?);
    }
    Ok(out)
}

/// The oldest `limit` entries waiting to be sealed in one chain, with their `pid`s.
pub async fn pending(db: &Db, account_id: &str, livemode: bool, limit: u32) -> Result<Vec<(i64, AuditEntry)>> {
    #[derive(Deserialize)]
    struct P {
        pid: i64,
        entry: String,
    }
    let rows: Vec<P> = super::all(
        db,
        "SELECT pid, entry FROM audit_pending WHERE account_id = ?1 AND livemode = ?2 ORDER BY pid LIMIT ?3",
        args![account_id, livemode, i64::from(limit)],
    )
    .await?;
    rows.into_iter()
        .map(|r| serde_json::from_str(&r.entry).map(|e| (r.pid, e)).map_err(|e| worker::Error::RustError(format!("audit_pending {}: {e}", r.pid))))
        .collect()
}

/// The chains with entries waiting (for the cron).
pub async fn pending_chains(db: &Db, limit: u32) -> Result<Vec<(String, bool)>> {
    #[derive(Deserialize)]
    struct C {
        account_id: String,
        livemode: i64,
    }
    let rows: Vec<C> = super::all(db, "SELECT DISTINCT account_id, livemode FROM audit_pending LIMIT ?1", args![i64::from(limit)]).await?;
    Ok(rows.into_iter().map(|c| (c.account_id, c.livemode == 1)).collect())
}

/// Seals: the chained entries go into `audit_log` and their pending rows (up to `last_pid`)
/// go, in one batch.
pub async fn seal(db: &Db, sealed: &[AuditEntry], account_id: &str, livemode: bool, last_pid: i64, at_ms: i64) -> Result<()> {
    let mut batch = sealed.iter().map(|e| insert(db, e, at_ms)).collect::<Result<Vec<_>>>()?;
    batch.push(super::stmt(db, "DELETE FROM audit_pending WHERE account_id = ?1 AND livemode = ?2 AND pid <= ?3", args![account_id, livemode, last_pid])?);
    db.batch(batch).await.map(|_| ())
}

fn insert(db: &Db, e: &AuditEntry, at_ms: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO audit_log (account_id, livemode, seq, id, at, at_ms, actor, action, mailbox, message_id, oversight_mode,
           outcome, status, request_id, idempotency_key, ip, country, detail, prev_hash, hash, via)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
        args![
            &e.account_id, e.livemode, e.seq, &e.id, &e.at, at_ms, &e.actor, &e.action, e.mailbox.as_deref(),
            e.message_id.as_deref(), e.oversight_mode.as_deref(), &e.outcome, e.status, e.request_id.as_deref(),
            e.idempotency_key.as_deref(), e.ip.as_deref(), e.country.as_deref(), e.detail.as_deref(), &e.prev_hash, &e.hash,
            e.via.as_deref()
        ],
    )
}

/// The last entry of a chain as stored: `(seq, hash)`.
pub async fn head(db: &Db, account_id: &str, livemode: bool) -> Result<Option<(i64, String)>> {
    #[derive(Deserialize)]
    struct H {
        seq: i64,
        hash: String,
    }
    let h: Option<H> = super::first(
        db,
        "SELECT seq, hash FROM audit_log WHERE account_id = ?1 AND livemode = ?2 ORDER BY seq DESC LIMIT 1",
        args![account_id, livemode],
    )
    .await?;
    Ok(h.map(|h| (h.seq, h.hash)))
}

#[derive(Default)]
pub struct Filter<'a> {
    pub mailbox: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub action: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// A page of entries after `after_seq`, oldest first. Absent filters match everything.
pub async fn page(db: &Db, account_id: &str, livemode: bool, f: &Filter<'_>, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
    let rows: Vec<Row> = super::all(
        db,
        "SELECT * FROM audit_log WHERE account_id = ?1 AND livemode = ?2 AND seq > ?3
           AND (?4 IS NULL OR mailbox = ?4) AND (?5 IS NULL OR message_id = ?5) AND (?6 IS NULL OR action = ?6)
           AND (?7 IS NULL OR actor = ?7) AND (?8 IS NULL OR at_ms >= ?8) AND (?9 IS NULL OR at_ms < ?9)
         ORDER BY seq LIMIT ?10",
        args![account_id, livemode, after_seq, f.mailbox, f.message_id, f.action, f.actor, f.since_ms, f.until_ms, i64::from(limit)],
    )
    .await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}
