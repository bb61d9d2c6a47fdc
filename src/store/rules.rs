//! Recipient rules (`domain::rules`): allow and block patterns per mailbox or for the account.

use super::{AccountOf, Db};
use serde::Deserialize;
use worker::{D1PreparedStatement, D1Result, Result};

use crate::args;
use crate::domain::rules::{RuleAction, RuleDirection};

#[derive(Debug, Clone, Deserialize)]
pub struct RuleRow {
    pub id: String,
    pub account_id: String,
    /// `None`: every mailbox of the account.
    pub mailbox_id: Option<String>,
    pub direction: String,
    pub action: RuleAction,
    pub pattern: String,
    pub created_at: i64,
    pub created_by: String,
}

/// Adds a rule; an identical one already there is kept (nothing happens).
pub fn insert(db: &Db, r: &RuleRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO recipient_rules (id, account_id, mailbox_id, direction, action, pattern, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT DO NOTHING",
        args![&r.id, &r.account_id, r.mailbox_id.as_deref(), &r.direction, r.action.as_str(), &r.pattern, r.created_at, &r.created_by],
    )
}

/// The rule with this scope, action and pattern (the one `insert` kept).
pub async fn find(db: &Db, account_id: &str, mailbox_id: Option<&str>, direction: RuleDirection, action: RuleAction, pattern: &str) -> Result<Option<RuleRow>> {
    super::first(
        db,
        "SELECT * FROM recipient_rules WHERE account_id = ?1 AND IFNULL(mailbox_id, '') = IFNULL(?2, '') AND direction = ?5 AND action = ?3 AND pattern = ?4",
        args![account_id, mailbox_id, action.as_str(), pattern, direction.as_str()],
    )
    .await
}

pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<RuleRow>> {
    super::first(db, "SELECT * FROM recipient_rules WHERE account_id = ?1 AND id = ?2", args![account_id, id]).await
}

pub async fn delete(db: &Db, account_id: &str, id: &str) -> Result<bool> {
    super::changed(db, "DELETE FROM recipient_rules WHERE account_id = ?1 AND id = ?2 RETURNING id", args![account_id, id]).await
}

/// A page of the account's rules, by id: those of `mailbox` (and the account-wide ones) when
/// given; `mailboxes` limits a key to its own mailboxes' rules and the account-wide ones.
pub async fn list(db: &Db, account_id: &str, mailbox: Option<&str>, mailboxes: Option<&[String]>, after: Option<&str>, limit: u32) -> Result<Vec<RuleRow>> {
    let allowed = mailboxes.map(|m| serde_json::to_string(m).expect("strings serialize"));
    super::all(
        db,
        "SELECT * FROM recipient_rules WHERE account_id = ?1 AND id > ?2
           AND (?3 IS NULL OR mailbox_id IS NULL OR mailbox_id = ?3)
           AND (?4 IS NULL OR mailbox_id IS NULL OR mailbox_id IN (SELECT value FROM json_each(?4)))
         ORDER BY id LIMIT ?5",
        args![account_id, after.unwrap_or(""), mailbox, allowed.as_deref(), i64::from(limit)],
    )
    .await
}

/// The send rules that apply to the mailbox at `address` (its own and the account's), for the
/// send path's batch.
pub fn for_send(db: &Db, who: AccountOf<'_>, address: &str) -> Result<D1PreparedStatement> {
    let acct = who.expr();
    super::stmt(
        db,
        &format!(
            "SELECT action, pattern FROM recipient_rules WHERE account_id = {acct} AND direction = 'send'
               AND (mailbox_id IS NULL OR mailbox_id = (SELECT id FROM mailboxes WHERE account_id = {acct} AND address = ?2 AND deleted_at IS NULL))"
        ),
        args![who.value(), address],
    )
}

/// The receive rules of a mailbox (its own and the account's), for inbound mail.
pub async fn for_receive(db: &Db, account_id: &str, mailbox_id: &str) -> Result<Vec<(RuleAction, String)>> {
    #[derive(Deserialize)]
    struct R {
        action: RuleAction,
        pattern: String,
    }
    let rows: Vec<R> = super::all(
        db,
        "SELECT action, pattern FROM recipient_rules WHERE account_id = ?1 AND direction = 'receive' AND (mailbox_id IS NULL OR mailbox_id = ?2)",
        args![account_id, mailbox_id],
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.action, r.pattern)).collect())
}

/// `for_send`'s result.
pub fn of(result: &D1Result) -> Result<Vec<(RuleAction, String)>> {
    #[derive(Deserialize)]
    struct R {
        action: RuleAction,
        pattern: String,
    }
    Ok(result.results::<R>()?.into_iter().map(|r| (r.action, r.pattern)).collect())
}
