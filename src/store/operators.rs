//! Operators (the humans of an account), their single-use sign-in links and their console
//! sessions. Tokens are kept only as SHA-256 hashes.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, Result};

use crate::args;
use crate::domain::authority::Role;

#[derive(Debug, Clone, Deserialize)]
pub struct OperatorRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub role: Role,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub removed_at: Option<i64>,
}

pub fn insert(db: &Db, o: &OperatorRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO operators (id, account_id, email, role, invited_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![&o.id, &o.account_id, &o.email, o.role.as_str(), o.invited_by.as_deref(), o.created_at],
    )
}

/// The account's current operator with this address.
pub async fn by_email(db: &Db, account_id: &str, email: &str) -> Result<Option<OperatorRow>> {
    super::first(db, "SELECT * FROM operators WHERE account_id = ?1 AND email = ?2 AND removed_at IS NULL", args![account_id, email]).await
}

pub async fn list(db: &Db, account_id: &str) -> Result<Vec<OperatorRow>> {
    super::all(db, "SELECT * FROM operators WHERE account_id = ?1 AND removed_at IS NULL ORDER BY created_at LIMIT 200", args![account_id]).await
}

/// Removes an operator and ends their sessions; `true` if this call removed them.
pub async fn remove(db: &Db, account_id: &str, id: &str, now: i64) -> Result<bool> {
    let removed = super::changed(
        db,
        "UPDATE operators SET removed_at = ?3 WHERE account_id = ?1 AND id = ?2 AND removed_at IS NULL RETURNING id",
        args![account_id, id, now],
    )
    .await?;
    if removed {
        super::run(db, "UPDATE sessions SET revoked_at = ?2 WHERE operator_id = ?1 AND revoked_at IS NULL", args![id, now]).await?;
    }
    Ok(removed)
}

pub fn insert_sign_in_link(db: &Db, token_hash: &str, operator_id: &str, now: i64, expires_at: i64) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO sign_in_links (token_hash, operator_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        args![token_hash, operator_id, now, expires_at],
    )
}

/// Uses a sign-in link once: the operator it signs in, if the link is unused, unexpired and
/// the operator still there. A second use finds nothing.
pub async fn use_sign_in_link(db: &Db, token_hash: &str, now: i64) -> Result<Option<OperatorRow>> {
    #[derive(Deserialize)]
    struct Used {
        operator_id: String,
    }
    let used: Option<Used> = super::first(
        db,
        "UPDATE sign_in_links SET used_at = ?2 WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 RETURNING operator_id",
        args![token_hash, now],
    )
    .await?;
    let Some(u) = used else { return Ok(None) };
    super::first(db, "SELECT * FROM operators WHERE id = ?1 AND removed_at IS NULL", args![&u.operator_id]).await
}

/// A sign-in link's state without using it (the confirmation page).
pub async fn sign_in_link_usable(db: &Db, token_hash: &str, now: i64) -> Result<bool> {
    super::exists(db, "SELECT 1 AS ok FROM sign_in_links WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2", args![token_hash, now]).await
}

#[derive(Debug, Clone, Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub operator_id: String,
    pub account_id: String,
    pub csrf: String,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// A session with its operator, as each console request needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct SignedIn {
    #[serde(flatten)]
    pub session: SessionRow,
    pub email: String,
    pub role: Role,
    pub default_domain: String,
}

pub struct NewSession<'a> {
    pub id: &'a str,
    pub token_hash: &'a str,
    pub operator: &'a OperatorRow,
    pub csrf: &'a str,
    pub user_agent: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

pub async fn insert_session(db: &Db, s: &NewSession<'_>) -> Result<()> {
    super::run(
        db,
        "INSERT INTO sessions (id, token_hash, operator_id, account_id, csrf, user_agent, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)",
        args![s.id, s.token_hash, &s.operator.id, &s.operator.account_id, s.csrf, s.user_agent, s.now, s.expires_at],
    )
    .await
}

/// The live session behind a cookie, with its operator (still an operator) and account.
pub async fn signed_in(db: &Db, token_hash: &str, now: i64) -> Result<Option<SignedIn>> {
    super::first(
        db,
        "SELECT s.*, o.email, o.role, a.default_domain FROM sessions s
           JOIN operators o ON o.id = s.operator_id AND o.removed_at IS NULL
           JOIN accounts a ON a.id = s.account_id
         WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2",
        args![token_hash, now],
    )
    .await
}

pub async fn touch_session(db: &Db, id: &str, now: i64) -> Result<()> {
    super::run(db, "UPDATE sessions SET last_seen_at = ?2 WHERE id = ?1", args![id, now]).await
}

pub async fn sessions_of(db: &Db, operator_id: &str, now: i64) -> Result<Vec<SessionRow>> {
    super::all(
        db,
        "SELECT * FROM sessions WHERE operator_id = ?1 AND revoked_at IS NULL AND expires_at > ?2 ORDER BY created_at DESC LIMIT 50",
        args![operator_id, now],
    )
    .await
}

/// Ends one of this operator's sessions; `true` if it was live.
pub async fn revoke_session(db: &Db, operator_id: &str, id: &str, now: i64) -> Result<bool> {
    super::changed(
        db,
        "UPDATE sessions SET revoked_at = ?3 WHERE operator_id = ?1 AND id = ?2 AND revoked_at IS NULL RETURNING id",
        args![operator_id, id, now],
    )
    .await
}

/// Every current operator with this address, in any account (a person may run several).
pub async fn everywhere(db: &Db, email: &str) -> Result<Vec<OperatorRow>> {
    super::all(db, "SELECT * FROM operators WHERE email = ?1 AND removed_at IS NULL ORDER BY created_at LIMIT 20", args![email]).await
}

/// Whether an unused sign-in link for this operator was made since `since` (a new one is not
/// sent while the last minute's is still unused, so the form cannot flood someone's inbox).
pub async fn link_sent_since(db: &Db, operator_id: &str, since: i64, now: i64) -> Result<bool> {
    super::exists(
        db,
        "SELECT 1 AS ok FROM sign_in_links WHERE operator_id = ?1 AND created_at > ?2 AND used_at IS NULL AND expires_at > ?3",
        args![operator_id, since, now],
    )
    .await
}
