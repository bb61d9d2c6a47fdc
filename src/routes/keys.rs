//! API keys: `create_api_key` (the secret is in this answer and nowhere else, ever),
//! `list_api_keys` (prefix and last four characters), `revoke_api_key` (effective at once).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use super::page;
use crate::app::keys::{self, key_json, NewKey};
use crate::domain::authority::may_mint_key;
use crate::app::Ctx;
use crate::domain::keys::Scopes;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    scopes: Vec<String>,
    mailboxes: Option<Vec<String>>,
    livemode: Option<bool>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn create_api_key(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: CreateKey = http::from_body(body)?;
    let name = keys::parse_name(&input.name)?;
    let scopes = Scopes::parse(&input.scopes)?;
    // An agent holds keys: it may not mint one that can do more than it can, nor oversight.
    may_mint_key(p.actor(), &scopes)?;
    let livemode = input.livemode.unwrap_or(p.livemode);
    if livemode && !p.livemode {
        return Err(ApiError::new(403, "livemode_mismatch", "a test key cannot create live keys").with_field("livemode"));
    }
    let mailbox_ids = match &input.mailboxes {
        None if p.mailboxes.is_some() => {
            return Err(ApiError::new(403, "mailbox_scope_escalation", "a key limited to some mailboxes can only create keys limited to those").with_field("mailboxes"));
        }
        None => None,
        Some(list) => Some(keys::resolve_mailboxes(&ctx.db, &p.account_id, list, |id| p.can_use_mailbox(id)).await?),
    };
    keys::create(ctx, NewKey { account_id: &p.account_id, livemode, name, scopes, mailboxes: mailbox_ids }).await
}

pub async fn list_api_keys(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let rows = store::keys::list(&ctx.db, &p.account_id, !p.livemode, q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |k| k.id.clone());
    // A key limited to some mailboxes sees only keys limited to those (the ones it could make).
    let within = |k: &&store::keys::KeyRow| match &p.mailboxes {
        None => true,
        Some(mine) => k.mailboxes.as_deref().and_then(|m| serde_json::from_str::<Vec<String>>(m).ok()).is_some_and(|t| t.iter().all(|m| mine.contains(m))),
    };
    Ok(Reply::ok(json!({
        "api_keys": rows.iter().filter(within).map(|k| key_json(k, None)).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}


pub async fn revoke_api_key(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: super::ById = http::from_body(body)?;
    let target = store::keys::get(&ctx.db, &p.account_id, &input.id).await?.ok_or_else(|| ApiError::not_found("API key").with_field("id"))?;
    // A test key manages test keys only; a key limited to some mailboxes only keys within them.
    if !p.livemode && target.livemode == 1 {
        return Err(ApiError::not_found("API key").with_field("id"));
    }
    if let Some(mine) = &p.mailboxes {
        let theirs: Option<Vec<String>> = target.mailboxes.as_deref().and_then(|m| serde_json::from_str(m).ok());
        if !theirs.is_some_and(|t| t.iter().all(|m| mine.contains(m))) {
            return Err(ApiError::new(403, "mailbox_scope_escalation", "a key limited to some mailboxes can only revoke keys limited to those").with_field("id"));
        }
    }
    let row = store::keys::revoke(&ctx.db, &p.account_id, &input.id, ctx.now).await?.ok_or_else(|| ApiError::not_found("API key"))?;
    Ok(Reply::ok(key_json(&row, None)))
}
