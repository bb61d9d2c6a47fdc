//! Minting API keys (the secret exists once, in the answer; D1 keeps its SHA-256), and a key as
//! the API shows it. Who may mint which key is `domain::authority::may_mint_key`, asked by the
//! callers (`routes::keys`, `routes::admin`, the console).

use crate::store::Db;
use serde_json::{json, Value};

use crate::app::Ctx;
use crate::domain::{ids, keys::{ApiKeySecret, Scopes}, time::to_rfc3339};
use crate::http::{ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::keys::{self, KeyRow};
use crate::store::mailboxes;

pub fn mint_key(account_id: &str, livemode: bool, name: &str, scopes: &Scopes, mailboxes: Option<&[String]>, now: i64) -> (KeyRow, ApiKeySecret) {
    let secret = ApiKeySecret::generate(livemode, platform::random_bytes());
    let row = KeyRow {
        id: platform::new_id(ids::KEY),
        account_id: account_id.to_string(),
        livemode: livemode as i64,
        name: name.to_string(),
        key_hash: secret.hash_hex(),
        prefix: secret.display_prefix().to_string(),
        last4: secret.last4().to_string(),
        scopes: scopes.to_csv(),
        mailboxes: mailboxes.map(|m| serde_json::to_string(m).expect("strings serialize")),
        rate_limit_per_minute: None,
        created_at: now,
        revoked_at: None,
    };
    (row, secret)
}

pub fn key_json(k: &KeyRow, secret: Option<&str>) -> Value {
    let mailboxes: Option<Vec<String>> = k.mailboxes.as_deref().and_then(|m| serde_json::from_str(m).ok());
    let mut v = json!({
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "last4": k.last4,
        "scopes": Scopes::from_csv(&k.scopes).names(),
        "mailboxes": mailboxes,
        "livemode": k.livemode == 1,
        "created_at": to_rfc3339(k.created_at),
        "revoked_at": k.revoked_at.map(to_rfc3339),
    });
    if let Some(s) = secret {
        v["key"] = json!(s);
    }
    v
}


/// A key's name: 1 to 100 characters, no control characters.
pub fn parse_name(name: &str) -> ApiResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "`name` must be 1 to 100 characters with no control characters"));
    }
    Ok(name)
}

/// The ids of the account's mailboxes named (by id or address) in `list`, each one `visible`
/// to the creator; 404 `mailbox_not_found` names the first that is not.
pub async fn resolve_mailboxes(db: &Db, account_id: &str, list: &[String], visible: impl Fn(&str) -> bool) -> ApiResult<Vec<String>> {
    if list.is_empty() || list.len() > 100 {
        return Err(ApiError::invalid_field("mailboxes", "`mailboxes` lists 1 to 100 mailbox ids or addresses; leave it out for every mailbox"));
    }
    let mut ids = Vec::with_capacity(list.len());
    for m in list {
        let found = mailboxes::find(db, account_id, m).await?.filter(|mb| visible(&mb.id));
        let mb = found.ok_or_else(|| ApiError::new(404, "mailbox_not_found", format!("no mailbox `{m}` in this account")).with_field("mailboxes"))?;
        if !ids.contains(&mb.id) {
            ids.push(mb.id);
        }
    }
    Ok(ids)
}

/// What a new key is, once the creator's authority was checked.
pub struct NewKey<'a> {
    pub account_id: &'a str,
    pub livemode: bool,
    pub name: &'a str,
    pub scopes: Scopes,
    pub mailboxes: Option<Vec<String>>,
}

/// Stores a new key and answers 201 with its secret, the only time it is shown. The answer
/// stored for an idempotent replay does not hold the secret.
pub async fn create(ctx: &Ctx, k: NewKey<'_>) -> ApiResult<Reply> {
    // A cap on keys per account (the deployment operator's own mints are not capped).
    if ctx.has_principal() && keys::count_active(&ctx.db, k.account_id).await? >= ctx.config.max_keys_per_account {
        return Err(ApiError::new(403, "key_limit_reached", format!("this account has {} active keys, the most it may have; revoke one first", ctx.config.max_keys_per_account)));
    }
    let (row, secret) = mint_key(k.account_id, k.livemode, k.name, &k.scopes, k.mailboxes.as_deref(), ctx.now);
    let reply = Reply::created(key_json(&row, Some(secret.reveal())));
    let mut batch = vec![keys::insert(&ctx.db, &row)?];
    let mut replay = reply.clone();
    replay.body.as_object_mut().expect("object").remove("key");
    replay.body["key_redacted"] = json!(true);
    if let Some(s) = ctx.idempotency_completion(&replay)? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;
    Ok(reply)
}
