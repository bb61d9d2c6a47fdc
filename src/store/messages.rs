//! Messages, their stored bodies (MIME and provider-ready JSON) and their timelines.
//! Status changes are compare-and-set updates, so a redelivered queue message cannot act twice.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::message::{Direction, MessageKind, MessageStatus};
use crate::domain::oversight::OversightMode;

#[derive(Debug, Clone, Deserialize)]
pub struct MessageRow {
    pub id: String,
    pub account_id: String,
    pub livemode: i64,
    pub mailbox_id: String,
    pub direction: Direction,
    pub thread_id: String,
    pub from_addr: String,
    pub to_json: String,
    pub cc_json: String,
    pub bcc_json: String,
    pub subject: String,
    pub oversight_mode: OversightMode,
    pub status: MessageStatus,
    pub metadata: String,
    pub send_at: Option<i64>,
    pub provider: Option<String>,
    pub provider_message_id: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub claimed_at: Option<i64>,
    pub idempotency_key: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub sent_at: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decided_at: Option<i64>,
    #[serde(default)]
    pub decision_reason: Option<String>,
    #[serde(default = "default_kind")]
    pub kind: MessageKind,
    #[serde(default)]
    pub message_id_header: Option<String>,
    #[serde(default)]
    pub read: i64,
    #[serde(default = "empty_list")]
    pub tags: String,
    #[serde(default)]
    pub snippet: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// An approval with edits: who edited, and what changed (JSON: `fields`,
    /// `original_sha256`, `sent_sha256`).
    #[serde(default)]
    pub edited_by: Option<String>,
    #[serde(default)]
    pub edit: Option<String>,
}

fn empty_list() -> String {
    "[]".into()
}

fn default_kind() -> MessageKind {
    MessageKind::Message
}

/// What every new message row needs; the rest starts empty and is set by the caller.
pub struct NewMessage {
    pub id: String,
    pub account_id: String,
    pub livemode: bool,
    pub mailbox_id: String,
    pub direction: Direction,
    pub kind: MessageKind,
    pub thread_id: String,
    pub from_addr: String,
    pub subject: String,
    pub oversight_mode: OversightMode,
    pub status: MessageStatus,
    pub now: i64,
}

impl MessageRow {
    pub fn new(n: NewMessage) -> MessageRow {
        MessageRow {
            id: n.id,
            account_id: n.account_id,
            livemode: i64::from(n.livemode),
            mailbox_id: n.mailbox_id,
            direction: n.direction,
            thread_id: n.thread_id,
            from_addr: n.from_addr,
            to_json: empty_list(),
            cc_json: empty_list(),
            bcc_json: empty_list(),
            subject: n.subject,
            oversight_mode: n.oversight_mode,
            status: n.status,
            metadata: "{}".into(),
            send_at: None,
            provider: None,
            provider_message_id: None,
            attempts: 0,
            last_error: None,
            claimed_at: None,
            idempotency_key: None,
            created_at: n.now,
            updated_at: n.now,
            sent_at: None,
            expires_at: None,
            decision: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            kind: n.kind,
            message_id_header: None,
            read: 0,
            tags: empty_list(),
            snippet: None,
            category: None,
            edited_by: None,
            edit: None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.livemode == 1
    }
}

/// A message with its mailbox's address, as the consumer and `get_email` need it.
#[derive(Debug, Clone, Deserialize)]
pub struct MessageWithMailbox {
    #[serde(flatten)]
    pub msg: MessageRow,
    pub mailbox_address: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimelineRow {
    pub at: i64,
    pub kind: String,
    pub detail: Option<String>,
}

pub fn insert(db: &Db, m: &MessageRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO messages (id, account_id, livemode, mailbox_id, direction, thread_id, from_addr, to_json, cc_json, bcc_json,
           subject, oversight_mode, status, metadata, send_at, idempotency_key, created_at, updated_at, expires_at, kind,
           message_id_header, snippet, category)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?17, ?18, ?19, ?20, ?21, ?22)",
        args![
            &m.id, &m.account_id, m.livemode, &m.mailbox_id, m.direction.as_str(), &m.thread_id, &m.from_addr, &m.to_json,
            &m.cc_json, &m.bcc_json, &m.subject, m.oversight_mode.as_str(), m.status.as_str(), &m.metadata, m.send_at,
            m.idempotency_key.as_deref(), m.created_at, m.expires_at, m.kind.as_str(), m.message_id_header.as_deref(), m.snippet.as_deref(),
            m.category.as_deref()
        ],
    )
}

/// Bulk writes (`send_batch`): many rows in one statement each, the rows as one JSON array
/// parameter read with `json_each` (D1 takes at most 100 bound parameters a statement and a
/// batch of at most about a thousand statements). Each array is kept under
/// `BULK_PARAM_BYTES`; a single larger value gets a statement of its own.
pub const BULK_PARAM_BYTES: usize = 900_000;

/// The message rows, as `insert` writes them one at a time.
pub fn insert_many(db: &Db, rows: &[&MessageRow]) -> Result<Vec<D1PreparedStatement>> {
    let json_rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|m| {
            serde_json::json!([
                m.id, m.account_id, m.livemode, m.mailbox_id, m.direction.as_str(), m.thread_id, m.from_addr, m.to_json, m.cc_json,
                m.bcc_json, m.subject, m.oversight_mode.as_str(), m.status.as_str(), m.metadata, m.send_at, m.idempotency_key,
                m.created_at, m.expires_at, m.kind.as_str(), m.message_id_header, m.snippet, m.category
            ])
        })
        .collect();
    bulk(db, &json_rows, |_| {
        "INSERT INTO messages (id, account_id, livemode, mailbox_id, direction, thread_id, from_addr, to_json, cc_json, bcc_json,
           subject, oversight_mode, status, metadata, send_at, idempotency_key, created_at, updated_at, expires_at, kind,
           message_id_header, snippet, category)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8, value->>9,
           value->>10, value->>11, value->>12, value->>13, value->>14, value->>15, value->>16, value->>16, value->>17, value->>18,
           value->>19, value->>20, value->>21
         FROM json_each(?1)"
            .to_string()
    })
}

/// Blobs `(message id, kind, body)`.
pub fn insert_blobs_many(db: &Db, blobs: &[(&str, Blob, &str)]) -> Result<Vec<D1PreparedStatement>> {
    let json_rows: Vec<serde_json::Value> = blobs.iter().map(|(id, kind, body)| serde_json::json!([id, kind.as_str(), body])).collect();
    bulk(db, &json_rows, |_| "INSERT INTO message_blobs (message_id, kind, body) SELECT value->>0, value->>1, value->>2 FROM json_each(?1)".to_string())
}

/// Timeline rows `(message id, at, kind, detail)`, in order.
pub fn timeline_many(db: &Db, entries: &[(&str, i64, &str, Option<&str>)]) -> Result<Vec<D1PreparedStatement>> {
    let json_rows: Vec<serde_json::Value> = entries.iter().map(|(id, at, kind, detail)| serde_json::json!([id, at, kind, detail])).collect();
    bulk(db, &json_rows, |_| {
        "INSERT INTO message_timeline (message_id, at, kind, detail) SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(?1) ORDER BY key".to_string()
    })
}

/// JSON rows into as few statements as fit `BULK_PARAM_BYTES` each.
fn bulk(db: &Db, rows: &[serde_json::Value], sql: impl Fn(usize) -> String) -> Result<Vec<D1PreparedStatement>> {
    let texts: Vec<String> = rows.iter().map(serde_json::Value::to_string).collect();
    let sizes: Vec<usize> = texts.iter().map(String::len).collect();
    let mut out = vec![];
    for (n, range) in crate::domain::batch::chunks(&sizes, 100, BULK_PARAM_BYTES).into_iter().enumerate() {
        let param = format!("[{}]", texts[range].join(","));
        out.push(super::stmt(db, &sql(n), args![param.as_str()])?);
    }
    Ok(out)
}

/// The stored bodies of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blob {
    /// The RFC 5322 message as built (outbound) or as received (inbound, when small enough).
    Mime,
    /// The provider-ready JSON of an outbound message (`domain::delivery::OutboundEmail`).
    Outbound,
    /// The parsed inbound message (`domain::inbound::ParsedEmail`).
    Parsed,
    /// An outbound message as the agent wrote it, when a reviewer approved it with edits (the
    /// `outbound` blob is then the version sent).
    Original,
}

impl Blob {
    fn as_str(self) -> &'static str {
        match self {
            Blob::Mime => "mime",
            Blob::Outbound => "outbound",
            Blob::Parsed => "parsed",
            Blob::Original => "original",
        }
    }
}

pub fn insert_blob(db: &Db, message_id: &str, kind: Blob, body: &str) -> Result<D1PreparedStatement> {
    super::stmt(db, "INSERT INTO message_blobs (message_id, kind, body) VALUES (?1, ?2, ?3)", args![message_id, kind.as_str(), body])
}

/// Stages a reviewer's version of a held message (its provider JSON and MIME) under the
/// version's hash, before the decision: one write.
pub fn stage_edit(db: &Db, id: &str, sha: &str, outbound_json: &str, mime: &str) -> Result<Vec<D1PreparedStatement>> {
    let put = "INSERT OR REPLACE INTO message_blobs (message_id, kind, body) VALUES (?1, ?2, ?3)";
    Ok(vec![
        super::stmt(db, put, args![id, format!("edit-outbound:{sha}").as_str(), outbound_json])?,
        super::stmt(db, put, args![id, format!("edit-mime:{sha}").as_str(), mime])?,
    ])
}

/// The statements that put the staged version `sha` on a message still held: the agent's
/// version kept once as `original`, the staged JSON and MIME swapped in, the row's subject,
/// recipients, snippet and edit record set, and every staged version removed. The last
/// statement but one returns the row when it changed. Repeating them changes nothing.
#[allow(clippy::too_many_arguments)]
pub fn store_edit(db: &Db, id: &str, sha: &str, subject: &str, to_json: &str, cc_json: &str, snippet: &str, edited_by: &str, edit_json: &str) -> Result<Vec<D1PreparedStatement>> {
    const READY: &str = "EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND status = 'pending_approval')
        AND EXISTS (SELECT 1 FROM message_blobs WHERE message_id = ?1 AND kind = 'edit-outbound:' || ?2)
        AND EXISTS (SELECT 1 FROM message_blobs WHERE message_id = ?1 AND kind = 'edit-mime:' || ?2)";
    let swap = |kind: &str| {
        format!("UPDATE message_blobs SET body = (SELECT body FROM message_blobs WHERE message_id = ?1 AND kind = 'edit-{kind}:' || ?2)
             WHERE message_id = ?1 AND kind = '{kind}' AND {READY}")
    };
    Ok(vec![
        super::stmt(db, &format!("INSERT OR IGNORE INTO message_blobs (message_id, kind, body)
             SELECT message_id, 'original', body FROM message_blobs WHERE message_id = ?1 AND kind = 'outbound' AND {READY}"), args![id, sha])?,
        super::stmt(db, &swap("outbound"), args![id, sha])?,
        super::stmt(db, &swap("mime"), args![id, sha])?,
        super::stmt(
            db,
            &format!("UPDATE messages SET subject = ?3, to_json = ?4, cc_json = ?5, snippet = ?6, edited_by = ?7, edit = ?8
             WHERE id = ?1 AND {READY} RETURNING id"),
            args![id, sha, subject, to_json, cc_json, snippet, edited_by, edit_json],
        )?,
        super::stmt(db, "DELETE FROM message_blobs WHERE message_id = ?1 AND kind LIKE 'edit-%'", args![id])?,
    ])
}

pub async fn blob(db: &Db, message_id: &str, kind: Blob) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct B {
        body: String,
    }
    Ok(super::first::<B>(db, "SELECT body FROM message_blobs WHERE message_id = ?1 AND kind = ?2", args![message_id, kind.as_str()])
        .await?
        .map(|b| b.body))
}

pub fn timeline(db: &Db, message_id: &str, at: i64, kind: &str, detail: Option<&str>) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO message_timeline (message_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        args![message_id, at, kind, detail],
    )
}

pub async fn timeline_of(db: &Db, message_id: &str) -> Result<Vec<TimelineRow>> {
    super::all(db, "SELECT at, kind, detail FROM message_timeline WHERE message_id = ?1 ORDER BY seq", args![message_id]).await
}

/// Our own system mail (a sign-in link) has no mailbox: its sender stands in for the address.
const WITH_MAILBOX: &str =
    "SELECT m.*, COALESCE(b.address, m.from_addr) AS mailbox_address FROM messages m LEFT JOIN mailboxes b ON b.id = m.mailbox_id";

/// A message as its owner sees it: same account, same mode.
pub async fn get_scoped(db: &Db, account_id: &str, livemode: bool, id: &str) -> Result<Option<MessageWithMailbox>> {
    super::first(db, &format!("{WITH_MAILBOX} WHERE m.id = ?1 AND m.account_id = ?2 AND m.livemode = ?3"), args![id, account_id, livemode]).await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<MessageWithMailbox>> {
    super::first(db, &format!("{WITH_MAILBOX} WHERE m.id = ?1"), args![id]).await
}

/// A user's message (not our own notifications to humans) whose mailbox or account is paused.
const PAUSED: &str = "(messages.kind = 'message' AND (EXISTS (SELECT 1 FROM mailboxes b WHERE b.id = messages.mailbox_id AND b.paused_at IS NOT NULL)
     OR EXISTS (SELECT 1 FROM accounts a WHERE a.id = messages.account_id AND a.paused_at IS NOT NULL)))";

/// One delivery attempt's claim, and what the attempt needs, from one round trip.
pub struct Claim {
    /// The attempt number when this call claimed the message; `None` when it did not (someone
    /// else has it, it is done or cancelled, or it is scheduled for later).
    pub attempt: Option<i64>,
    /// The message as it is after the claim.
    pub message: Option<MessageWithMailbox>,
    /// The provider payload (`Blob::Outbound`).
    pub outbound: Option<String>,
    /// The stored MIME, when asked for.
    pub mime: Option<String>,
}

/// Claims a message for one delivery attempt and reads it with its stored bodies, in one batch.
/// A scheduled message is claimed only once it is due (`due_by`); `reclaim_before` (for test
/// and for live messages) lets a claim older than that be taken over (only used where the
/// provider deduplicates repeats).
pub async fn claim(db: &Db, id: &str, now: i64, due_by: i64, reclaim_before: [Option<i64>; 2], with_mime: bool) -> Result<Claim> {
    #[derive(Deserialize)]
    struct A {
        attempts: i64,
    }
    #[derive(Deserialize)]
    struct B {
        body: String,
    }
    // Paused: a due message waits in `paused` (with a timeline entry) instead of being claimed.
    let park = super::stmt(
        db,
        &format!(
            "UPDATE messages SET status = 'paused', updated_at = ?2
             WHERE id = ?1 AND status IN ('queued', 'scheduled') AND (status != 'scheduled' OR send_at IS NULL OR send_at <= ?3) AND {PAUSED}"
        ),
        args![id, now, due_by],
    )?;
    let parked = super::stmt(
        db,
        "INSERT INTO message_timeline (message_id, at, kind, detail)
         SELECT ?1, ?2, 'paused', 'delivery waits: the mailbox or the account is paused' WHERE changes() > 0",
        args![id, now],
    )?;
    let claim = super::stmt(
        db,
        "UPDATE messages SET status = 'sending', attempts = attempts + 1, claimed_at = ?2, updated_at = ?2
         WHERE id = ?1
           AND (status IN ('queued', 'scheduled') OR (status = 'sending' AND claimed_at < CASE WHEN livemode = 1 THEN ?5 ELSE ?3 END))
           AND (status != 'scheduled' OR send_at IS NULL OR send_at <= ?4)
         RETURNING attempts",
        args![id, now, reclaim_before[0].unwrap_or(i64::MIN), due_by, reclaim_before[1].unwrap_or(i64::MIN)],
    )?;
    let read = super::stmt(db, &format!("{WITH_MAILBOX} WHERE m.id = ?1"), args![id])?;
    let blob = |kind: Blob| super::stmt(db, "SELECT body FROM message_blobs WHERE message_id = ?1 AND kind = ?2", args![id, kind.as_str()]);
    let mut batch = vec![park, parked, claim, read, blob(Blob::Outbound)?];
    if with_mime {
        batch.push(blob(Blob::Mime)?);
    }
    let results = db.batch(batch).await?;
    let body = |i: usize| -> Result<Option<String>> { Ok(match results.get(i) { Some(r) => r.results::<B>()?.into_iter().next().map(|b| b.body), None => None }) };
    Ok(Claim {
        attempt: results[2].results::<A>()?.first().map(|a| a.attempts),
        message: results[3].results::<MessageWithMailbox>()?.into_iter().next(),
        outbound: body(4)?,
        mime: body(5)?,
    })
}

/// After a resume: the account's paused messages (of one mailbox, or all) whose mailbox and
/// account are no longer paused go back to `queued` (or `scheduled`, when their time is still
/// ahead), with a timeline entry, in one batch. Returns `(id, send_at)` oldest first, to enqueue.
pub async fn release_paused(db: &Db, account_id: &str, mailbox_id: Option<&str>, now: i64, by: &str) -> Result<Vec<(String, Option<i64>)>> {
    #[derive(Deserialize)]
    struct R {
        id: String,
        send_at: Option<i64>,
        created_at: i64,
    }
    let which = format!("account_id = ?1 AND status = 'paused' AND (?2 IS NULL OR mailbox_id = ?2) AND NOT {PAUSED}");
    let timeline = super::stmt(
        db,
        &format!("INSERT INTO message_timeline (message_id, at, kind, detail) SELECT id, ?3, 'resumed', ?4 FROM messages WHERE {which}"),
        args![account_id, mailbox_id, now, &format!("released by {by}")],
    )?;
    let release = super::stmt(
        db,
        &format!(
            "UPDATE messages SET status = CASE WHEN send_at IS NOT NULL AND send_at > ?3 THEN 'scheduled' ELSE 'queued' END, updated_at = ?3
             WHERE {which} RETURNING id, send_at, created_at"
        ),
        args![account_id, mailbox_id, now],
    )?;
    let results = db.batch(vec![timeline, release]).await?;
    let mut rows = results[1].results::<R>()?;
    rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(rows.into_iter().map(|r| (r.id, r.send_at)).collect())
}

pub fn mark_sent(db: &Db, id: &str, provider: &str, provider_message_id: &str, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE messages SET status = 'sent', provider = ?2, provider_message_id = ?3, sent_at = ?4, updated_at = ?4, last_error = NULL
         WHERE id = ?1 AND status = 'sending'",
        args![id, provider, provider_message_id, now],
    )
}

/// Back to `queued` after a failed attempt that will be retried.
pub fn release_for_retry(db: &Db, id: &str, reason: &str, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE messages SET status = 'queued', last_error = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'sending'",
        args![id, reason, now],
    )
}

/// Marks a message failed unless it already reached an end state. `true` if this call did it.
pub async fn mark_failed(db: &Db, id: &str, reason: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE messages SET status = 'failed', last_error = ?2, updated_at = ?3
         WHERE id = ?1 AND status IN ('queued', 'scheduled', 'sending') RETURNING id",
        args![id, reason, now],
    )
    .await
}

/// Fails a delivery still claimed since before `claimed_before` (interrupted). False when it
/// moved on meanwhile.
pub async fn fail_stale_sending(db: &Db, id: &str, claimed_before: i64, reason: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE messages SET status = 'failed', last_error = ?3, updated_at = ?4
         WHERE id = ?1 AND status = 'sending' AND claimed_at < ?2 RETURNING id",
        args![id, claimed_before, reason, now],
    )
    .await
}

/// Deliveries claimed before `claimed_before` and never finished: the sweep settles them.
pub async fn stale_sending(db: &Db, claimed_before: i64) -> Result<Vec<MessageWithMailbox>> {
    super::all(db, &format!("{WITH_MAILBOX} WHERE m.status = 'sending' AND m.claimed_at < ?1 LIMIT 500"), args![claimed_before]).await
}

/// Cancels a message that has not started sending. `None` if it was not cancellable.
pub async fn cancel(db: &Db, account_id: &str, livemode: bool, id: &str, now: i64) -> Result<Option<MessageRow>> {
    super::first(
        db,
        "UPDATE messages SET status = 'cancelled', updated_at = ?4
         WHERE id = ?1 AND account_id = ?2 AND livemode = ?3 AND status IN ('queued', 'scheduled') RETURNING *",
        args![id, account_id, livemode, now],
    )
    .await
}

/// Messages whose queue message may have been lost: queued but untouched for a while, or
/// scheduled and due soon.
pub async fn needing_enqueue(db: &Db, stale_before: i64, due_before: i64) -> Result<Vec<(String, Option<i64>)>> {
    #[derive(Deserialize)]
    struct R {
        id: String,
        send_at: Option<i64>,
    }
    let rows: Vec<R> = super::all(
        db,
        "SELECT id, send_at FROM messages WHERE (status = 'queued' AND updated_at < ?1)
            OR (status = 'scheduled' AND send_at < ?2) LIMIT 500",
        args![stale_before, due_before],
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.send_at)).collect())
}

/// Mirrors a decision taken by the Approval Durable Object. `true` if this call moved the
/// message out of `pending_approval` (a repeat is a no-op).
pub async fn mirror_decision(db: &Db, id: &str, status: MessageStatus, decision: &str, by: &str, at: i64, reason: Option<&str>) -> Result<bool> {
    super::changed(
        db,
        "UPDATE messages SET status = ?2, decision = ?3, decided_by = ?4, decided_at = ?5, decision_reason = ?6, updated_at = ?5
         WHERE id = ?1 AND status = 'pending_approval' RETURNING id",
        args![id, status.as_str(), decision, by, at, reason],
    )
    .await
}

/// Held messages of an account and mode, oldest first.
/// `allowed`: a JSON array of the mailbox ids a limited key may see.
#[allow(clippy::too_many_arguments)]
pub async fn list_pending(db: &Db, account_id: &str, livemode: bool, mailbox_id: Option<&str>, direction: Option<Direction>, allowed: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<MessageWithMailbox>> {
    super::all(
        db,
        &format!("{WITH_MAILBOX} WHERE m.account_id = ?1 AND m.livemode = ?2 AND m.status = 'pending_approval'
           AND (?3 IS NULL OR m.mailbox_id = ?3) AND (?4 IS NULL OR m.direction = ?4)
           AND (?5 IS NULL OR m.mailbox_id IN (SELECT value FROM json_each(?5))) AND m.id > ?6
         ORDER BY m.id LIMIT ?7"),
        args![account_id, livemode, mailbox_id, direction.map(Direction::as_str), allowed, after.unwrap_or(""), i64::from(limit)],
    )
    .await
}

/// Held messages past their expiry (an alarm may have been lost): for the cron.
pub async fn overdue_pending(db: &Db, now: i64) -> Result<Vec<MessageRow>> {
    super::all(db, "SELECT * FROM messages WHERE status = 'pending_approval' AND expires_at < ?1 LIMIT 200", args![now]).await
}

/// The thread of the nearest message (same account and mode) whose Message-ID is among `ids`.
pub async fn thread_of_any(db: &Db, account_id: &str, livemode: bool, ids: &[String]) -> Result<Option<String>> {
    #[derive(Deserialize)]
    struct T {
        thread_id: String,
    }
    for id in ids.iter().take(20) {
        let t: Option<T> = super::first(
            db,
            "SELECT thread_id FROM messages WHERE account_id = ?1 AND livemode = ?2 AND message_id_header = ?3 ORDER BY id LIMIT 1",
            args![account_id, livemode, id.as_str()],
        )
        .await?;
        if let Some(t) = t {
            return Ok(Some(t.thread_id));
        }
    }
    Ok(None)
}

pub struct InboxFilter<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub mailbox_id: Option<&'a str>,
    /// JSON array of the mailbox ids a limited key may see.
    pub allowed: Option<&'a str>,
    pub direction: Option<Direction>,
    pub unread: bool,
    pub tag: Option<&'a str>,
    pub since: Option<i64>,
    pub from: Option<&'a str>,
    pub subject_contains: Option<&'a str>,
    pub thread_id: Option<&'a str>,
    pub before_id: Option<&'a str>,
    pub after_id: Option<&'a str>,
}

/// Visible mail (inbound held for approval is not), newest first (or oldest first for a thread).
pub async fn inbox(db: &Db, f: &InboxFilter<'_>, limit: u32) -> Result<Vec<MessageWithMailbox>> {
    let order = if f.thread_id.is_some() { "ASC" } else { "DESC" };
    super::all(
        db,
        &format!("{WITH_MAILBOX} WHERE m.account_id = ?1 AND m.livemode = ?2 AND m.kind = 'message'
           AND NOT (m.direction = 'inbound' AND m.status <> 'received')
           AND (?3 IS NULL OR m.mailbox_id = ?3)
           AND (?4 IS NULL OR m.mailbox_id IN (SELECT value FROM json_each(?4)))
           AND (?5 IS NULL OR m.direction = ?5)
           AND (?6 = 0 OR m.read = 0)
           AND (?7 IS NULL OR EXISTS (SELECT 1 FROM json_each(m.tags) WHERE value = ?7))
           AND (?8 IS NULL OR m.created_at >= ?8)
           AND (?9 IS NULL OR instr(lower(m.from_addr), lower(?9)) > 0)
           AND (?10 IS NULL OR instr(lower(m.subject), lower(?10)) > 0)
           AND (?11 IS NULL OR m.thread_id = ?11)
           AND (?12 IS NULL OR m.id < ?12)
           AND (?13 IS NULL OR m.id > ?13)
         ORDER BY m.id {order} LIMIT ?14"),
        args![
            f.account_id, f.livemode, f.mailbox_id, f.allowed, f.direction.map(Direction::as_str), f.unread, f.tag, f.since, f.from,
            f.subject_contains, f.thread_id, f.before_id, f.after_id, i64::from(limit)
        ],
    )
    .await
}

/// The message a provider knows by its own id.
pub async fn by_provider_id(db: &Db, provider: &str, provider_message_id: &str) -> Result<Option<MessageWithMailbox>> {
    super::first(db, &format!("{WITH_MAILBOX} WHERE m.provider = ?1 AND m.provider_message_id = ?2"), args![provider, provider_message_id]).await
}

/// What a provider reported after sending (`delivered`, `bounced`, `complained`). A later
/// `delivered` never overwrites a bounce or a complaint.
pub fn record_feedback(db: &Db, id: &str, status: MessageStatus, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE messages SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status IN ('sent', 'delivered') AND NOT (status = 'delivered' AND ?2 = 'delivered')",
        args![id, status.as_str(), now],
    )
}

pub async fn mark_read(db: &Db, id: &str) -> Result<()> {
    super::run(db, "UPDATE messages SET read = 1 WHERE id = ?1", args![id]).await
}

/// Replaces the tags (a JSON array of strings).
pub async fn set_tags(db: &Db, id: &str, tags_json: &str) -> Result<()> {
    super::run(db, "UPDATE messages SET tags = ?2 WHERE id = ?1", args![id, tags_json]).await
}
