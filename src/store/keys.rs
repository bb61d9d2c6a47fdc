//! API keys (stored as SHA-256 only) and the per-key request counter behind rate limits.

use super::Db;
use serde::Deserialize;
use worker::{D1PreparedStatement, D1Result, Result};

use crate::args;

#[derive(Debug, Clone, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub account_id: String,
    pub livemode: i64,
    pub name: String,
    pub key_hash: String,
    pub prefix: String,
    pub last4: String,
    pub scopes: String,
    pub mailboxes: Option<String>,
    pub rate_limit_per_minute: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthRow {
    #[serde(flatten)]
    pub key: KeyRow,
    pub default_domain: String,
}

#[derive(Deserialize)]
struct CountRow {
    count: i64,
}

/// One round trip: the key with its account, and this minute's request counts for the key and
/// for its whole account (the counters only move for a live, unrevoked key, so garbage keys
/// cannot fill the table). The account's counter is the row `acct:<account id>`.
/// `extra` statements run in the same batch, after these; their results are returned in order.
pub async fn authenticate(db: &Db, key_hash: &str, window_start: i64, extra: Vec<D1PreparedStatement>) -> Result<(Option<(AuthRow, i64, i64)>, Vec<D1Result>)> {
    let count = super::stmt(
        db,
        "INSERT INTO rate_windows (key_id, window_start, count)
         SELECT id, ?2, 1 FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL
         ON CONFLICT (key_id, window_start) DO UPDATE SET count = count + 1
         RETURNING count",
        args![key_hash, window_start],
    )?;
    let account_count = super::stmt(
        db,
        "INSERT INTO rate_windows (key_id, window_start, count)
         SELECT 'acct:' || account_id, ?2, 1 FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL
         ON CONFLICT (key_id, window_start) DO UPDATE SET count = count + 1
         RETURNING count",
        args![key_hash, window_start],
    )?;
    let key = super::stmt(
        db,
        "SELECT k.*, a.default_domain FROM api_keys k JOIN accounts a ON a.id = k.account_id
         WHERE k.key_hash = ?1 AND k.revoked_at IS NULL",
        args![key_hash],
    )?;
    let mut statements = vec![count, account_count, key];
    statements.extend(extra);
    let mut results = db.batch(statements).await?;
    let rest = results.split_off(3);
    let count = results[0].results::<CountRow>()?.first().map_or(0, |c| c.count);
    let account = results[1].results::<CountRow>()?.first().map_or(0, |c| c.count);
    let row = results[2].results::<AuthRow>()?.into_iter().next();
    Ok((row.map(|r| (r, count, account)), rest))
}

pub fn insert(db: &Db, k: &KeyRow) -> Result<D1PreparedStatement> {
    super::stmt(
        db,
        "INSERT INTO api_keys (id, account_id, livemode, name, key_hash, prefix, last4, scopes, mailboxes, rate_limit_per_minute, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        args![
            &k.id, &k.account_id, k.livemode, &k.name, &k.key_hash, &k.prefix, &k.last4, &k.scopes,
            k.mailboxes.as_deref(), k.rate_limit_per_minute, k.created_at
        ],
    )
}

/// `test_only`: a test key manages only test keys.
pub async fn list(db: &Db, account_id: &str, test_only: bool, after: Option<&str>, limit: u32) -> Result<Vec<KeyRow>> {
    super::all(
        db,
        "SELECT * FROM api_keys WHERE account_id = ?1 AND id > ?2 AND (?4 = 0 OR livemode = 0) ORDER BY id LIMIT ?3",
        args![account_id, after.unwrap_or(""), i64::from(limit), test_only],
    )
    .await
}

pub async fn get(db: &Db, account_id: &str, id: &str) -> Result<Option<KeyRow>> {
    super::first(db, "SELECT * FROM api_keys WHERE account_id = ?1 AND id = ?2", args![account_id, id]).await
}

pub async fn revoke(db: &Db, account_id: &str, id: &str, now: i64) -> Result<Option<KeyRow>> {
    super::first(
        db,
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) WHERE account_id = ?1 AND id = ?2 RETURNING *",
        args![account_id, id, now],
    )
    .await
}

pub async fn prune_rate_windows(db: &Db, before: i64) -> Result<()> {
    super::run(db, "DELETE FROM rate_windows WHERE window_start < ?1", args![before]).await
}

/// How many unrevoked keys the account has (both modes).
pub async fn count_active(db: &Db, account_id: &str) -> Result<i64> {
    #[derive(Deserialize)]
    struct N {
        n: i64,
    }
    let n: Option<N> = super::first(db, "SELECT COUNT(*) AS n FROM api_keys WHERE account_id = ?1 AND revoked_at IS NULL", args![account_id]).await?;
    Ok(n.map_or(0, |n| n.n))
}
