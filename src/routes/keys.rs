//! API keys: `create_api_key` (the secret is in this answer and nowhere else, ever),
//! `list_api_keys` (prefix and last four characters), `revoke_api_key` (effective at once).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use super::page;
use crate::app::keys::{key_json, mint_key};
use crate::app::Ctx;
use crate::domain::keys::Scopes;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store::{self, mailboxes};

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
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field("name", "`name` must be 1 to 100 characters with no control characters"));
    }
    let scopes = Scopes::parse(&input.scopes)?;
    let livemode = input.livemode.unwrap_or(p.livemode);
    if livemode && !p.livemode {
        return Err(ApiError::new(403, "livemode_mismatch", "a test key cannot create live keys").with_field("livemode"));
    }
    let mailbox_ids = match &input.mailboxes {
        None => {
            if p.mailboxes.is_some() {
                return Err(ApiError::new(403, "mailbox_scope_escalation", "a key limited to some mailboxes can only create keys limited to those").with_field("mailboxes"));
            }
            None
        }
        Some(list) => {
            if list.is_empty() || list.len() > 100 {
                return Err(ApiError::invalid_field("mailboxes", "`mailboxes` lists 1 to 100 mailbox ids or addresses; leave it out for every mailbox"));
            }
            let mut ids = Vec::with_capacity(list.len());
            for m in list {
                let found = mailboxes::find(&ctx.db, &p.account_id, m).await?.filter(|mb| p.can_use_mailbox(&mb.id));
                let mb = found.ok_or_else(|| ApiError::new(404, "mailbox_not_found", format!("no mailbox `{m}` in this account")).with_field("mailboxes"))?;
                if !ids.contains(&mb.id) {
                    ids.push(mb.id);
                }
            }
            Some(ids)
        }
    };
    let (row, secret) = mint_key(&p.account_id, livemode, name, &scopes, mailbox_ids.as_deref(), ctx.now);
    let reply = Reply::created(key_json(&row, Some(secret.reveal())));
    // The stored idempotent replay must not hold the secret: a replay gets the key without it.
    let mut batch = vec![store::keys::insert(&ctx.db, &row)?];
    let mut replay = reply.clone();
    replay.body.as_object_mut().expect("object").remove("key");
    replay.body["key_redacted"] = json!(true);
    if let Some(s) = ctx.idempotency_completion(&replay)? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;
    Ok(reply)
}

pub async fn list_api_keys(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let rows = store::keys::list(&ctx.db, &p.account_id, !p.livemode, q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |k| k.id.clone());
    Ok(Reply::ok(json!({
        "api_keys": rows.iter().map(|k| key_json(k, None)).collect::<Vec<_>>(),
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
