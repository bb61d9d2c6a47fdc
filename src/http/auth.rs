//! Who is calling: an API key (hashed, looked up with its account and counted for the rate
//! limit in one D1 round trip), an operator signed in to the console (a session cookie), or the
//! deployment operator's `ADMIN_TOKEN`.

use crate::store::Db;
use worker::{D1PreparedStatement, D1Result, Request};

use super::{ApiError, ApiResult};
use crate::domain::authority::{Actor, Role};
use crate::domain::keys::{secrets_equal, ApiKeySecret, Scope, Scopes};
use crate::domain::ratelimit::{self, RateDecision};
use crate::store::keys as key_store;

#[derive(Debug, Clone)]
pub struct Principal {
    pub key_id: String,
    pub account_id: String,
    pub livemode: bool,
    pub scopes: Scopes,
    /// `None`: every mailbox of the account.
    pub mailboxes: Option<Vec<String>>,
    pub default_domain: String,
    /// Set when a human signed in to the console is acting (then `key_id` is the operator's
    /// id, and `scopes` what the role allows).
    pub human: Option<Human>,
}

/// An operator acting through the console.
#[derive(Debug, Clone)]
pub struct Human {
    pub operator_id: String,
    pub email: String,
    pub role: Role,
    pub session_id: String,
    pub csrf: String,
}

impl Principal {
    /// Who this is, for the rules of `domain::authority`.
    pub fn actor(&self) -> Actor<'_> {
        match &self.human {
            Some(h) => Actor::Operator { role: h.role },
            None => Actor::Key { scopes: &self.scopes, live: self.livemode },
        }
    }

    /// What the audit trail records as the actor: the key id, or `human:<email>`.
    pub fn actor_name(&self) -> String {
        match &self.human {
            Some(h) => format!("human:{}", h.email),
            None => self.key_id.clone(),
        }
    }

    pub fn require(&self, scope: Scope) -> ApiResult<()> {
        if self.scopes.has(scope) { Ok(()) } else { Err(ApiError::forbidden_scope(scope.as_str())) }
    }

    pub fn require_any(&self, scopes: &[Scope]) -> ApiResult<()> {
        if scopes.iter().any(|s| self.scopes.has(*s)) {
            return Ok(());
        }
        let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        Err(ApiError::new(403, "insufficient_scope", format!("this call needs one of these scopes: {}", names.join(", "))))
    }

    /// Whether this key may act on that mailbox (limited keys see only theirs).
    pub fn can_use_mailbox(&self, mailbox_id: &str) -> bool {
        self.mailboxes.as_ref().is_none_or(|ids| ids.iter().any(|m| m == mailbox_id))
    }
}

fn bearer(req: &Request) -> Option<String> {
    req.headers().get("Authorization").ok().flatten()
}

/// The SHA-256 (hex) of the bearer key, and whether it claims live mode; 401 when there is
/// none or it is not one of ours.
pub fn presented_key(req: &Request) -> ApiResult<(String, bool)> {
    let header = bearer(req).ok_or_else(ApiError::unauthorized)?;
    let key = ApiKeySecret::from_bearer(&header).ok_or_else(ApiError::unauthorized)?;
    Ok((key.hash_hex(), key.livemode()))
}

/// Looks the key up with its account and counts this request against the rate windows, in one
/// D1 round trip that also runs `extra` (statements that find the account through the key's
/// hash: an idempotency reservation, what the route will read). Their results come back in
/// order, whatever the key turns out to be.
pub async fn lookup(db: &Db, hash: &str, now: i64, extra: Vec<D1PreparedStatement>) -> ApiResult<(Option<(key_store::AuthRow, i64, i64)>, Vec<D1Result>)> {
    Ok(key_store::authenticate(db, hash, ratelimit::window_start(now), extra).await?)
}

/// The principal of a looked-up key: 401 for no key or the wrong mode prefix, 429 over the
/// key's or the account's rate limit.
pub fn admit(found: Option<(key_store::AuthRow, i64, i64)>, hash: &str, livemode: bool, now: i64, default_limit: i64, account_limit: i64) -> ApiResult<Principal> {
    let (row, count, account_count) = found.ok_or_else(ApiError::unauthorized)?;
    // The lookup was by hash; compare once more in constant time, and check the mode prefix.
    if !secrets_equal(&row.key.key_hash, hash) || (row.key.livemode == 1) != livemode {
        return Err(ApiError::unauthorized());
    }
    let limit = row.key.rate_limit_per_minute.unwrap_or(default_limit);
    if let RateDecision::Limit { retry_after_secs } = ratelimit::decide(count, limit, now) {
        return Err(ApiError::new(429, "rate_limited", format!("this key may make {limit} requests a minute"))
            .with_retry_after(retry_after_secs));
    }
    // Many keys of one account share one budget too.
    if let RateDecision::Limit { retry_after_secs } = ratelimit::decide(account_count, account_limit, now) {
        return Err(ApiError::new(429, "account_rate_limited", format!("this account's keys together may make {account_limit} requests a minute"))
            .with_retry_after(retry_after_secs));
    }
    let mailboxes = row.key.mailboxes.as_deref().and_then(|j| serde_json::from_str::<Vec<String>>(j).ok());
    Ok(Principal {
        key_id: row.key.id,
        account_id: row.key.account_id,
        livemode: row.key.livemode == 1,
        scopes: Scopes::from_csv(&row.key.scopes),
        mailboxes,
        default_domain: row.default_domain,
        human: None,
    })
}

/// The operator's token (`ADMIN_TOKEN`), compared in constant time.
pub fn require_operator(req: &Request, admin_token: Option<&str>) -> ApiResult<()> {
    let presented = bearer(req).and_then(|h| h.strip_prefix("Bearer ").map(str::to_string));
    match (admin_token, presented) {
        (Some(expected), Some(given)) if !expected.is_empty() && secrets_equal(expected, &given) => Ok(()),
        _ => Err(ApiError::new(401, "invalid_admin_token", "this call needs the deployment's ADMIN_TOKEN as a bearer token")),
    }
}

/// HTTP Basic auth whose password must equal a deployment secret (the user name is ignored):
/// how Postmark's webhooks authenticate.
pub fn require_basic_secret(req: &Request, expected: &str, secret_name: &str) -> ApiResult<()> {
    use base64::{engine::general_purpose::STANDARD, Engine};
    let given = bearer(req)
        .and_then(|h| h.strip_prefix("Basic ").and_then(|b| STANDARD.decode(b.trim()).ok()))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(_, p)| p.to_string()));
    if given.is_some_and(|g| secrets_equal(&g, expected)) {
        Ok(())
    } else {
        Err(ApiError::new(401, "invalid_webhook_secret", format!("this webhook needs HTTP Basic auth with the deployment's {secret_name} as the password")))
    }
}
