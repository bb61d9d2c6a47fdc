//! Mailboxes: an address of an account, its oversight mode, its oversight address and how
//! long held mail waits. Deleted mailboxes keep their row (`deleted_at`) and their history.

use super::{AccountOf, Db};
use serde::Deserialize;
use worker::{D1PreparedStatement, D1Result, Result};

use crate::args;
use crate::domain::oversight::OversightMode;
use crate::domain::disclosure::AiDisclosure;
use crate::domain::scan::ScanPolicy;

#[derive(Debug, Clone, Deserialize)]
pub struct MailboxRow {
    pub id: String,
    pub account_id: String,
    pub address: String,
    pub display_name: Option<String>,
    pub oversight_mode: OversightMode,
    pub oversight_email: Option<String>,
    pub approval_ttl_secs: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// The pre-send scan's policy (`domain::scan`).
    #[serde(default)]
    pub scan: ScanPolicy,
    /// Set while the mailbox is paused.
    #[serde(default)]
    pub paused_at: Option<i64>,
    /// In a gated mode, a send whose every recipient is allowed goes without a hold.
    #[serde(default)]
    pub allowlist_bypass: i64,
    /// What recipients are told about AI authorship (`domain::disclosure`).
    #[serde(default)]
    pub ai_disclosure: AiDisclosure,
}

pub fn insert(db: &Db, m: &MailboxRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO mailboxes (id, account_id, address, display_name, oversight_mode, oversight_email, approval_ttl_secs, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
        args![&m.id, &m.account_id, &m.address, m.display_name.as_deref(), m.oversight_mode.as_str(), m.oversight_email.as_deref(), m.approval_ttl_secs, m.created_at],
    )
}

/// A live mailbox of the account, by id or by address.
pub async fn find(db: &Db, account_id: &str, id_or_address: &str) -> Result<Option<MailboxRow>> {
    let col = if id_or_address.starts_with("mbx_") { "id" } else { "address" };
    super::first(
        db,
        &format!("SELECT * FROM mailboxes WHERE account_id = ?1 AND {col} = ?2 AND deleted_at IS NULL"),
        args![account_id, &id_or_address.to_ascii_lowercase()],
    )
    .await
}

/// `allowed`: a JSON array of the mailbox ids a limited key may see (`None`: all).
pub async fn list(db: &Db, account_id: &str, allowed: Option<&str>, after: Option<&str>, limit: u32) -> Result<Vec<MailboxRow>> {
    super::all(
        db,
        "SELECT * FROM mailboxes WHERE account_id = ?1 AND deleted_at IS NULL AND id > ?2
           AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4))) ORDER BY id LIMIT ?3",
        args![account_id, after.unwrap_or(""), i64::from(limit), allowed],
    )
    .await
}

/// Writes a mailbox's display name and approval TTL. Never its mode or its oversight address:
/// those change only through `set_mode` and `set_oversight_email`, each a decision of its own,
/// so an update built from an older read cannot undo a concurrent tightening.
pub fn update(db: &Db, m: &MailboxRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET display_name = ?3, approval_ttl_secs = ?4, updated_at = ?5
         WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![&m.account_id, &m.id, m.display_name.as_deref(), m.approval_ttl_secs, m.updated_at],
    )
}

pub async fn soft_delete(db: &Db, account_id: &str, id: &str, now: i64) -> Result<Option<MailboxRow>> {
    super::first(
        db,
        "UPDATE mailboxes SET deleted_at = ?3, updated_at = ?3 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL RETURNING *",
        args![account_id, id, now],
    )
    .await
}

/// Sets a mailbox's oversight mode (decided elsewhere: a tightening, or an approved change).
pub fn set_mode(db: &Db, id: &str, mode: OversightMode, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(db, "UPDATE mailboxes SET oversight_mode = ?2, updated_at = ?3 WHERE id = ?1", args![id, mode.as_str(), now])
}

/// Live mailboxes at any of these addresses (inbound routing), of one account when given, whose
/// domain the account still holds: its default domain, or a custom domain it has verified (a
/// deleted or lost domain's mailboxes receive nothing).
pub async fn at_addresses(db: &Db, addresses: &[String], account_id: Option<&str>) -> Result<Vec<MailboxRow>> {
    let list = serde_json::to_string(addresses).expect("strings serialize");
    super::all(
        db,
        "SELECT m.* FROM mailboxes m JOIN accounts a ON a.id = m.account_id
         WHERE m.deleted_at IS NULL AND m.address IN (SELECT value FROM json_each(?1))
           AND (?2 IS NULL OR m.account_id = ?2)
           AND (substr(m.address, instr(m.address, '@') + 1) = a.default_domain
                OR EXISTS (SELECT 1 FROM domains d WHERE d.account_id = m.account_id AND d.deleted_at IS NULL
                             AND d.status = 'verified' AND d.domain = substr(m.address, instr(m.address, '@') + 1)))
         ORDER BY m.id",
        args![&list, account_id],
    )
    .await
}

/// The sender of a send: its mailbox, which recipients are suppressed, and where approval
/// requests go (the mailbox's oversight address, else the account owner's).
pub struct Sender {
    pub mailbox: MailboxRow,
    pub suppressed: Vec<String>,
    pub oversight_email: Option<String>,
    /// The mailbox or its whole account is paused.
    pub paused: bool,
}

/// The send path's reads, for one batch: the account's mailbox at `address` with which of
/// `recipients` are on the account's suppression list and the owner's address (`sender_of`),
/// whether `domain` is a verified domain of the account (`verified_of`), and the recipient
/// rules that apply (`store::rules::of`).
pub fn sender_statements(db: &Db, who: AccountOf<'_>, address: &str, domain: &str, recipients: &[String]) -> Result<[D1PreparedStatement; 3]> {
    let acct = who.expr();
    let list = serde_json::to_string(recipients).expect("strings serialize");
    let sender = super::stmt(
        db,
        &format!(
            "SELECT m.*, (SELECT json_group_array(s.address) FROM suppressions s
                           WHERE s.account_id = m.account_id AND s.address IN (SELECT value FROM json_each(?3))) AS suppressed_json,
                    (SELECT a.owner_email FROM accounts a WHERE a.id = m.account_id) AS owner_email,
                    (SELECT a.paused_at FROM accounts a WHERE a.id = m.account_id) AS account_paused_at
             FROM mailboxes m WHERE m.account_id = {acct} AND m.address = ?2 AND m.deleted_at IS NULL"
        ),
        args![who.value(), address, &list],
    )?;
    let verified = super::stmt(
        db,
        &format!("SELECT EXISTS (SELECT 1 FROM domains WHERE account_id = {acct} AND domain = ?2 AND deleted_at IS NULL AND status = 'verified') AS verified"),
        args![who.value(), domain],
    )?;
    Ok([sender, verified, super::rules::for_send(db, who, address)?])
}

/// `sender_statements`' first result.
pub fn sender_of(result: &D1Result) -> Result<Option<Sender>> {
    #[derive(Deserialize)]
    struct Row {
        #[serde(flatten)]
        mailbox: MailboxRow,
        suppressed_json: String,
        owner_email: Option<String>,
        account_paused_at: Option<i64>,
    }
    let row: Option<Row> = result.results::<Row>()?.into_iter().next();
    Ok(row.map(|r| Sender {
        paused: r.mailbox.paused_at.is_some() || r.account_paused_at.is_some(),
        oversight_email: r.mailbox.oversight_email.clone().or(r.owner_email),
        suppressed: serde_json::from_str(&r.suppressed_json).unwrap_or_default(),
        mailbox: r.mailbox,
    }))
}

/// `sender_statements`' second result.
pub fn verified_of(result: &D1Result) -> Result<bool> {
    #[derive(Deserialize)]
    struct V {
        verified: i64,
    }
    Ok(result.results::<V>()?.first().is_some_and(|v| v.verified == 1))
}

/// Pauses (`Some(now)`, keeping an earlier pause's time) or resumes (`None`) a mailbox.
pub fn set_paused_stmt(db: &Db, account_id: &str, id: &str, at: Option<i64>, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET paused_at = CASE WHEN ?3 IS NULL THEN NULL ELSE COALESCE(paused_at, ?3) END, updated_at = ?4
         WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![account_id, id, at, now],
    )
}

/// Turns a mailbox's allow-list bypass on or off.
pub fn set_allowlist_bypass_stmt(db: &Db, account_id: &str, id: &str, on: bool, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET allowlist_bypass = ?3, updated_at = ?4 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![account_id, id, on, now],
    )
}

/// Sets a mailbox's AI disclosure.
pub fn set_ai_disclosure_stmt(db: &Db, account_id: &str, id: &str, d: AiDisclosure, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET ai_disclosure = ?3, updated_at = ?4 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![account_id, id, d.as_str(), now],
    )
}

/// Sets a mailbox's pre-send scan policy.
pub fn set_scan_stmt(db: &Db, account_id: &str, id: &str, scan: ScanPolicy, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET scan = ?3, updated_at = ?4 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![account_id, id, scan.as_str(), now],
    )
}

/// Sets (or clears: the owner's address then applies) a mailbox's oversight address.
pub fn set_oversight_email_stmt(db: &Db, account_id: &str, id: &str, email: Option<&str>, now: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "UPDATE mailboxes SET oversight_email = ?3, updated_at = ?4 WHERE account_id = ?1 AND id = ?2 AND deleted_at IS NULL",
        args![account_id, id, email, now],
    )
}

pub async fn set_oversight_email(db: &Db, account_id: &str, id: &str, email: Option<&str>, now: i64) -> Result<()> {
    db.exec(set_oversight_email_stmt(db, account_id, id, email, now)?).await
}
