//! The suppression list (per account): `list_suppressions`, `add_suppression`,
//! `remove_suppression`, and the public unsubscribe endpoint (`GET` shows a confirmation page,
//! `POST` — the RFC 8058 one-click — suppresses).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use crate::app::changes::{self, Asked};
use crate::app::{audit, oversight, Ctx};
use crate::domain::changes::ChangeKind;
use crate::domain::address::EmailAddress;
use crate::domain::suppression::{self, REASONS};
use crate::domain::time::to_rfc3339;
use crate::http::{esc, self, ApiError, ApiResult, Reply};
use crate::store::suppressions::{self as store_supp, SuppressionRow};

fn row_json(r: &SuppressionRow) -> Value {
    json!({"address": r.address, "reason": r.reason, "source": r.source, "created_at": to_rfc3339(r.created_at)})
}

pub async fn list_suppressions(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["reason", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 50, 500)?;
    let reason = q.get("reason").map(String::as_str);
    if reason.is_some_and(|r| !REASONS.contains(&r)) {
        return Err(ApiError::invalid_field("reason", "`reason` is unsubscribe, hard_bounce, complaint or manual"));
    }
    let rows = store_supp::list(&ctx.db, &p.account_id, reason, q.get("cursor").map(String::as_str), limit + 1).await?;
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
    store_supp::add(&ctx.db, &p.account_id, &address, reason, Some(&p.key_id), ctx.now).await?;
    let row = store_supp::get(&ctx.db, &p.account_id, &address).await?;
    Ok(Reply::created(row.map(|r| row_json(&r)).unwrap_or(Value::Null)))
}

pub async fn remove_suppression(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: AddressInput = http::from_body(body)?;
    if input.reason.is_some() {
        return Err(ApiError::new(400, "unknown_field", "`reason` is not a field of this call").with_field("reason"));
    }
    let address = parse_address(&input.address)?;
    let r = store_supp::get(&ctx.db, &p.account_id, &address).await?.ok_or_else(|| ApiError::not_found("suppression").with_field("address"))?;
    // Sending to a suppressed address again weakens a protection: a key's request waits for
    // a human (202 with the change); a human's applies at once.
    let mut v = row_json(&r);
    match changes::ask(ctx, ChangeKind::RemoveSuppression, None, &address, None).await? {
        Asked::Applied => {
            v["removed"] = json!(true);
            Ok(Reply::ok(v))
        }
        Asked::Waiting(c) => {
            v["removed"] = json!(false);
            v["change"] = changes::change_json(&c);
            Ok(Reply::accepted(v))
        }
    }
}

fn unsubscribe_html(status: u16, title: &str, body: &str) -> Reply {
    let html = format!("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head><body style=\"font:16px system-ui;max-width:36rem;margin:2rem auto\"><h1>{title}</h1>{body}</body></html>");
    Reply::raw(status, html, vec![])
}


/// The token of `/unsubscribe/{token}`, verified; or the page that says why not.
fn claims(ctx: &Ctx, req: &Request) -> Result<suppression::UnsubscribeClaims, Reply> {
    let path = req.path();
    let token = path.trim_start_matches("/unsubscribe/");
    let Some(secret) = oversight::link_secret(&ctx.env) else { return Err(unsubscribe_html(503, "Unavailable", "<p>Not configured.</p>")) };
    suppression::verify(&secret, token).ok_or_else(|| unsubscribe_html(400, "This link is not valid", "<p>The link is incomplete or was altered.</p>"))
}

/// `GET /unsubscribe/{token}` (public): a page that asks for confirmation.
pub async fn unsubscribe_page(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let c = match claims(ctx, req) {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    Ok(unsubscribe_html(200, "Unsubscribe?", &format!(
        "<p>Stop emails to <strong>{}</strong> from this sender?</p><form method=\"post\"><button type=\"submit\" name=\"List-Unsubscribe\" value=\"One-Click\">Unsubscribe</button></form>",
        esc(&c.address)
    )))
}

/// `POST /unsubscribe/{token}` (public; the RFC 8058 one-click): suppresses the address.
pub async fn unsubscribe(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let c = match claims(ctx, req) {
        Ok(c) => c,
        Err(page) => return Ok(page),
    };
    store_supp::add(&ctx.db, &c.account, &c.address, "unsubscribe", Some(&c.message_id), ctx.now).await?;
    audit::record(&ctx.env, audit::Facts {
        account_id: c.account.clone(),
        livemode: c.live,
        actor: format!("human:{}", c.address),
        action: "unsubscribe".into(),
        message_id: Some(c.message_id.clone()),
        outcome: "ok".into(),
        ..Default::default()
    })
    .await;
    Ok(unsubscribe_html(200, "Unsubscribed", &format!("<p>{} will get no more of these emails.</p>", esc(&c.address))))
}
