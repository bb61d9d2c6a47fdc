//! Webhook endpoints: `create_webhook` (the `whsec_` secret is in this answer and nowhere else),
//! `list_webhooks`, `delete_webhook`, `rotate_webhook_secret` (old and new sign for 24 h) and
//! `list_webhook_deliveries` (every attempt). All of an account and mode; a key limited to some
//! mailboxes manages only endpoints of those mailboxes.

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use crate::app::access::visible_mailbox;
use super::page;
use crate::app::{webhook_secrets, Ctx};
use crate::domain::time::to_rfc3339;
use crate::domain::webhooks::{self as rules, AttemptStatus, Format, WebhookSecret};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::webhooks::{self as store_wh, DeliveryFilter, DeliveryRow, EndpointRow};

/// Endpoints per account and mode.
pub const MAX_ENDPOINTS: i64 = 25;
/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

pub fn endpoint_json(e: &EndpointRow) -> Value {
    let format = Format::parse(Some(&e.format)).unwrap_or(Format::Standard);
    json!({
        "id": e.id,
        "url": rules::masked_url(&e.url, format),
        "events": e.event_types(),
        "format": e.format,
        "mailbox": e.mailbox_address,
        "mailbox_id": e.mailbox_id,
        "livemode": e.livemode == 1,
        "disabled_at": e.disabled_at.map(to_rfc3339),
        "disabled_reason": e.disabled_reason,
        "previous_secret_expires_at": e.previous_secret_expires_at.map(to_rfc3339),
        "created_at": to_rfc3339(e.created_at),
    })
}

/// The stored idempotent replay of an answer that shows a secret holds it no more.
fn redacted(reply: &Reply) -> Reply {
    let mut r = reply.clone();
    if r.body.get("secret").is_some_and(|s| !s.is_null()) {
        r.body["secret"] = Value::Null;
        r.body["secret_redacted"] = json!(true);
    }
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Vec<String>,
    mailbox: Option<String>,
    format: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn create_webhook(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: CreateWebhook = http::from_body(body)?;
    let format = Format::parse(input.format.as_deref())?;
    let url = rules::validate_url(&input.url, format, ctx.config.allow_http_loopback_webhooks)?;
    let events = rules::parse_event_types(&input.events)?;
    let mailbox = match input.mailbox.as_deref() {
        Some(m) => Some(visible_mailbox(ctx, m).await.map_err(|e| e.with_field("mailbox"))?),
        None if p.mailboxes.is_some() => {
            return Err(ApiError::new(403, "mailbox_scope_escalation", "a key limited to some mailboxes can only create webhooks for one of them: name it in `mailbox`")
                .with_field("mailbox"));
        }
        None => None,
    };
    if store_wh::count_live(&ctx.db, &p.account_id, p.livemode).await? >= MAX_ENDPOINTS {
        return Err(ApiError::unprocessable("too_many_webhooks", format!("an account may have {MAX_ENDPOINTS} webhook endpoints per mode; delete one first")));
    }
    if !crate::app::domains::configured(&ctx.env) {
        return Err(ApiError::new(503, "not_configured", "DOMAIN_KEY_SECRET is not set on this deployment: webhook secrets cannot be sealed"));
    }
    let secret = (format == Format::Standard).then(|| WebhookSecret::generate(platform::random_bytes()));
    let row = EndpointRow {
        id: platform::new_id("whk"),
        account_id: p.account_id.clone(),
        livemode: i64::from(p.livemode),
        url,
        events: serde_json::to_string(&events).expect("strings serialize"),
        mailbox_id: mailbox.as_ref().map(|m| m.id.clone()),
        format: format.as_str().into(),
        secret: secret.as_ref().map(|s| s.reveal().to_string()),
        previous_secret: None,
        previous_secret_expires_at: None,
        disabled_at: None,
        disabled_reason: None,
        created_at: ctx.now,
        deleted_at: None,
        mailbox_address: mailbox.as_ref().map(|m| m.address.clone()),
    };
    let mut body = endpoint_json(&row);
    // The whole URL (an Inngest event key is in it) and the secret: in this answer only.
    body["url"] = json!(row.url);
    body["secret"] = json!(row.secret);
    let reply = Reply::created(body);
    // Stored sealed: the URL (an Inngest event key is in it) and the signing secret.
    let mut stored = row.clone();
    stored.url = webhook_secrets::seal(&ctx.env, &row.id, "url", &row.url)?;
    stored.secret = row.secret.as_deref().map(|s| webhook_secrets::seal(&ctx.env, &row.id, "secret", s)).transpose()?;
    let mut batch = vec![store_wh::insert(&ctx.db, &stored)?];
    if let Some(s) = ctx.idempotency_completion(&redacted(&reply))? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;
    Ok(reply)
}

fn allowed_mailboxes(ctx: &Ctx) -> Option<String> {
    ctx.principal().mailboxes.as_ref().map(|m| serde_json::to_string(m).expect("strings serialize"))
}

/// An endpoint this key may manage; anything else (another account's, the other mode's, another
/// mailbox's for a limited key) is 404 on `field`.
async fn visible_endpoint(ctx: &Ctx, id: &str, field: &str, with_deleted: bool) -> ApiResult<EndpointRow> {
    let p = ctx.principal();
    let e = store_wh::get(&ctx.db, &p.account_id, p.livemode, id, with_deleted)
        .await?
        .filter(|e| p.mailboxes.is_none() || e.mailbox_id.as_deref().is_some_and(|m| p.can_use_mailbox(m)))
        .ok_or_else(|| ApiError::not_found("webhook").with_field(field))?;
    Ok(webhook_secrets::opened(&ctx.env, e)?)
}

pub async fn list_webhooks(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let allowed = allowed_mailboxes(ctx);
    let rows = store_wh::list(&ctx.db, &p.account_id, p.livemode, allowed.as_deref(), q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |e| e.id.clone());
    let rows = rows.into_iter().map(|e| webhook_secrets::opened(&ctx.env, e)).collect::<worker::Result<Vec<_>>>()?;
    Ok(Reply::ok(json!({
        "webhooks": rows.iter().map(endpoint_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}


pub async fn delete_webhook(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: super::ById = http::from_body(body)?;
    let e = visible_endpoint(ctx, &input.id, "id", false).await?;
    if !store_wh::soft_delete(&ctx.db, &p.account_id, p.livemode, &e.id, ctx.now).await? {
        return Err(ApiError::not_found("webhook").with_field("id"));
    }
    Ok(Reply::ok(json!({"id": e.id, "deleted": true, "deleted_at": to_rfc3339(ctx.now)})))
}

pub async fn rotate_webhook_secret(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: super::ById = http::from_body(body)?;
    let e = visible_endpoint(ctx, &input.id, "id", false).await?;
    if e.secret.is_none() {
        return Err(ApiError::unprocessable("webhook_has_no_secret", "an `inngest` endpoint is not signed: its Inngest event key is in its URL")
            .with_field("id"));
    }
    let secret = WebhookSecret::generate(platform::random_bytes());
    let until = ctx.now + ROTATION_OVERLAP_MS;
    let sealed = webhook_secrets::seal(&ctx.env, &e.id, "secret", secret.reveal())?;
    if !store_wh::rotate_secret(&ctx.db, &p.account_id, p.livemode, &e.id, &sealed, until).await? {
        return Err(ApiError::not_found("webhook").with_field("id"));
    }
    let reply = Reply::ok(json!({
        "id": e.id,
        "secret": secret.reveal(),
        "previous_secret_expires_at": to_rfc3339(until),
    }));
    // The router stores the replay after this returns; it must not hold the new secret.
    if let Some(s) = ctx.idempotency_completion(&redacted(&reply))? {
        ctx.db.exec(s).await?;
    }
    Ok(reply)
}

fn delivery_json(d: &DeliveryRow) -> Value {
    json!({
        "id": d.id,
        "endpoint_id": d.endpoint_id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "attempt": d.attempt,
        "status": d.status,
        "response_code": d.response_code,
        "latency_ms": d.latency_ms,
        "error": d.error,
        "next_retry_at": d.next_retry_at.map(to_rfc3339),
        "created_at": to_rfc3339(d.created_at),
    })
}

pub async fn list_webhook_deliveries(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["webhook", "id", "event_id", "status", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let (field, webhook) = match (q.get("webhook"), q.get("id")) {
        // `id` is an alias; `webhook` wins when both are given (as `id` wins over `message_id`).
        (Some(w), _) => ("webhook", Some(w)),
        (None, Some(i)) => ("id", Some(i)),
        (None, None) => ("webhook", None),
    };
    let endpoint_id = match webhook {
        Some(w) => Some(visible_endpoint(ctx, w, field, true).await?.id),
        None => None,
    };
    let status = match q.get("status").map(String::as_str) {
        None => None,
        Some(s) => Some(AttemptStatus::parse(s).ok_or_else(|| ApiError::invalid_field("status", "`status` is `pending`, `succeeded`, `retrying` or `failed`"))?),
    };
    let allowed = allowed_mailboxes(ctx);
    let filter = DeliveryFilter {
        account_id: &p.account_id,
        livemode: p.livemode,
        endpoint_id: endpoint_id.as_deref(),
        event_id: q.get("event_id").map(String::as_str),
        status,
        allowed: allowed.as_deref(),
    };
    let rows = store_wh::list_deliveries(&ctx.db, &filter, q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = page(rows, limit, |d| d.id.clone());
    Ok(Reply::ok(json!({
        "deliveries": rows.iter().map(delivery_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}
