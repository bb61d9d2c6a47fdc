//! The suppression list (per account): `list_suppressions`, `add_suppression`,
//! `remove_suppression`, the lookup every send makes, and the public unsubscribe endpoint
//! (`GET` shows a confirmation page, `POST` — the RFC 8058 one-click — suppresses).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::{D1Database, Env, Request};

use super::Ctx;
use crate::domain::address::EmailAddress;
use crate::domain::suppression::{self, REASONS};
use crate::domain::time::to_rfc3339;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store;

#[derive(Deserialize)]
struct Row {
    address: String,
    reason: String,
    source: Option<String>,
    created_at: i64,
}

fn row_json(r: &Row) -> Value {
    json!({"address": r.address, "reason": r.reason, "source": r.source, "created_at": to_rfc3339(r.created_at)})
}

/// Which of these addresses the account must not send to (lower-cased).
pub async fn suppressed_among(ctx: &Ctx, account_id: &str, addresses: Vec<String>) -> ApiResult<Vec<String>> {
    let lower: Vec<String> = addresses.iter().map(|a| a.to_ascii_lowercase()).collect();
    let list = serde_json::to_string(&lower).expect("strings serialize");
    let rows: Vec<Row> = store::all(
        &ctx.db,
        "SELECT * FROM suppressions WHERE account_id = ?1 AND address IN (SELECT value FROM json_each(?2))",
        crate::args![account_id, &list],
    )
    .await?;
    Ok(rows.into_iter().map(|r| r.address).collect())
}

/// Adds (or keeps) a suppression; the first reason recorded stays.
pub async fn suppress(db: &D1Database, account_id: &str, address: &str, reason: &str, source: Option<&str>, now: i64) -> worker::Result<()> {
    store::run(
        db,
        "INSERT INTO suppressions (account_id, address, reason, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account_id, address) DO NOTHING",
        crate::args![account_id, &address.to_ascii_lowercase(), reason, source, now],
    )
    .await
}

pub async fn list_suppressions(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["reason", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 50, 500)?;
    let reason = q.get("reason").map(String::as_str);
    if reason.is_some_and(|r| !REASONS.contains(&r)) {
        return Err(ApiError::invalid_field("reason", "`reason` is unsubscribe, hard_bounce, complaint or manual"));
    }
    let rows: Vec<Row> = store::all(
        &ctx.db,
        "SELECT * FROM suppressions WHERE account_id = ?1 AND address > ?2 AND (?3 IS NULL OR reason = ?3) ORDER BY address LIMIT ?4",
        crate::args![&p.account_id, q.get("cursor").map_or("", String::as_str), reason, i64::from(limit + 1)],
    )
    .await?;
    let (rows, next) = super::page(rows, limit, |r| r.address.clone());
    Ok(Reply::ok(json!({"suppressions": rows.iter().map(row_json).collect::<Vec<_>>(), "next_cursor": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressInput {
    address: String,
    reason: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

fn parse_address(s: &str) -> ApiResult<String> {
    EmailAddress::parse(s).map(|a| a.to_string().to_ascii_lowercase()).map_err(|e| ApiError::invalid_field("address", e.0))
}

pub async fn add_suppression(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: AddressInput = http::from_body(body)?;
    let address = parse_address(&input.address)?;
    let reason = input.reason.as_deref().unwrap_or("manual");
    if reason != "manual" {
        return Err(ApiError::invalid_field("reason", "suppressions added through the API are `manual`"));
    }
    suppress(&ctx.db, &p.account_id, &address, reason, Some(&p.key_id), ctx.now).await?;
    let row: Option<Row> = store::first(&ctx.db, "SELECT * FROM suppressions WHERE account_id = ?1 AND address = ?2", crate::args![&p.account_id, &address]).await?;
    Ok(Reply::created(row.map(|r| row_json(&r)).unwrap_or(Value::Null)))
}

pub async fn remove_suppression(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: AddressInput = http::from_body(body)?;
    if input.reason.is_some() {
        return Err(ApiError::new(400, "unknown_field", "`reason` is not a field of this call").with_field("reason"));
    }
    let address = parse_address(&input.address)?;
    let gone: Option<Row> = store::first(
        &ctx.db,
        "DELETE FROM suppressions WHERE account_id = ?1 AND address = ?2 RETURNING *",
        crate::args![&p.account_id, &address],
    )
    .await?;
    let r = gone.ok_or_else(|| ApiError::not_found("suppression").with_field("address"))?;
    let mut v = row_json(&r);
    v["removed"] = json!(true);
    Ok(Reply::ok(v))
}

/// `GET|POST /unsubscribe/{token}` (public). Answers small HTML pages.
pub async fn unsubscribe(env: &Env, path: &str, method: &str, now: i64) -> worker::Result<(u16, String)> {
    let token = path.trim_start_matches("/unsubscribe/");
    let page = |title: &str, body: &str| format!("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body style=\"font:16px system-ui;max-width:36rem;margin:2rem auto\"><h1>{title}</h1>{body}</body></html>");
    let Some(secret) = crate::oversight::link_secret(env) else { return Ok((503, page("Unavailable", "<p>Not configured.</p>"))) };
    let Some(c) = suppression::verify(&secret, token) else { return Ok((400, page("This link is not valid", "<p>The link is incomplete or was altered.</p>"))) };
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    if method == "GET" {
        return Ok((200, page("Unsubscribe?", &format!(
            "<p>Stop emails to <strong>{}</strong> from this sender?</p><form method=\"post\"><button type=\"submit\" name=\"List-Unsubscribe\" value=\"One-Click\">Unsubscribe</button></form>",
            esc(&c.address)
        ))));
    }
    let db = store::db(env)?;
    suppress(&db, &c.account, &c.address, "unsubscribe", Some(&c.message_id), now).await?;
    crate::audit::record(env, crate::audit::Facts {
        account_id: c.account.clone(),
        livemode: c.live,
        actor: format!("human:{}", c.address),
        action: "unsubscribe".into(),
        message_id: Some(c.message_id.clone()),
        outcome: "ok".into(),
        ..Default::default()
    })
    .await;
    Ok((200, page("Unsubscribed", &format!("<p>{} will get no more of these emails.</p>", esc(&c.address)))))
}
