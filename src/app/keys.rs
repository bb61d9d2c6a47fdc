//! Minting API keys (the secret exists once, in the answer; D1 keeps its SHA-256), and a key as
//! the API shows it. Who may mint which key is decided by the callers (`routes::keys`,
//! `routes::admin`) with `domain::keys`.

use serde_json::{json, Value};

use crate::domain::{ids, keys::{ApiKeySecret, Scopes}, time::to_rfc3339};
use crate::platform;
use crate::store::keys::KeyRow;

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

