//! The audit trail through the API (admin scope): `get_audit_log` (filtered pages),
//! `verify_audit_log` (walks the chain), `export_audit_log` (JSON Lines for offline checking).

use serde_json::json;
use worker::Request;

use crate::app::access::visible_mailbox;
use crate::app::{audit, Ctx};
use crate::domain::time::parse_rfc3339;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store::audit::{self as store_audit, Filter};

use audit::CHUNK;

fn time_param(q: &std::collections::HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    q.get(name)
        .map(|s| parse_rfc3339(s).ok_or_else(|| ApiError::invalid_field(name, format!("`{name}` must be an RFC 3339 time"))))
        .transpose()
}

pub async fn get_audit_log(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["mailbox", "message_id", "action", "actor", "since", "until", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 50, 500)?;
    let after = match q.get("cursor") {
        None => 0,
        Some(c) => c.parse::<i64>().map_err(|_| ApiError::invalid_field("cursor", "`cursor` is the next_cursor of a previous page"))?,
    };
    let mailbox_id = match q.get("mailbox") {
        Some(m) => Some(visible_mailbox(ctx, m).await?.id),
        None => None,
    };
    let filter = Filter {
        mailbox: mailbox_id.as_deref(),
        message_id: q.get("message_id").map(String::as_str),
        action: q.get("action").map(String::as_str),
        actor: q.get("actor").map(String::as_str),
        since_ms: time_param(&q, "since")?,
        until_ms: time_param(&q, "until")?,
    };
    // What was recorded and not yet sealed joins the chain first.
    audit::seal(&ctx.env, &p.account_id, p.livemode).await?;
    let mut rows = store_audit::page(&ctx.db, &p.account_id, p.livemode, &filter, after, limit + 1).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|e| e.seq.to_string())
    } else {
        None
    };
    Ok(Reply::ok(json!({"entries": rows, "next_cursor": next})))
}

pub async fn verify_audit_log(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    // No parameters: an unknown one is refused like everywhere else.
    http::query_params(req, &[])?;
    let p = ctx.principal();
    Ok(Reply::ok(audit::verify(ctx, &p.account_id, p.livemode).await?))
}

pub async fn export_audit_log(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    http::query_params(req, &[])?;
    let p = ctx.principal();
    audit::seal(&ctx.env, &p.account_id, p.livemode).await?;
    let mut out = String::new();
    let mut after = 0;
    loop {
        let rows = store_audit::page(&ctx.db, &p.account_id, p.livemode, &Filter::default(), after, CHUNK).await?;
        for e in &rows {
            out.push_str(&serde_json::to_string(e).map_err(|_| ApiError::internal())?);
            out.push('\n');
        }
        match rows.last() {
            Some(last) if rows.len() == CHUNK as usize => after = last.seq,
            _ => break,
        }
    }
    let mut reply = Reply::ok(json!(null));
    reply.raw = Some(out);
    reply.headers.push(("Content-Type".into(), "application/x-ndjson; charset=utf-8".into()));
    Ok(reply)
}
