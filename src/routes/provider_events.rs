//! What providers report back: `POST /provider_events/postmark` (HTTP Basic auth with the
//! deployment's `POSTMARK_WEBHOOK_SECRET`) and `POST /provider_events/resend` (Svix-signed with
//! `RESEND_WEBHOOK_SECRET`). Each updates the message, emits `email.delivered|bounced|complained`,
//! and suppresses the recipient on a hard bounce or a complaint.

use serde_json::json;
use worker::{Env, Request};

use crate::app::{audit, payloads, queues, Ctx};
use crate::domain::address::Recipient;
use crate::domain::feedback::{self, Feedback};
use crate::domain::message::Direction;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{events, messages, provider_events, suppressions};

const MAX_BODY: usize = 256 * 1024;

async fn body(req: &mut Request) -> ApiResult<Vec<u8>> {
    let too_large = || ApiError::new(413, "payload_too_large", format!("provider events are at most {MAX_BODY} bytes"));
    http::read_capped(req, MAX_BODY, too_large, "invalid_request").await
}

fn secret(env: &Env, name: &str) -> ApiResult<String> {
    platform::secret(env, name).ok_or_else(|| ApiError::new(503, "not_configured", format!("{name} is not set on this deployment")))
}

pub async fn postmark(ctx: &Ctx, req: &mut Request) -> ApiResult<Reply> {
    let env = &ctx.env;
    http::auth::require_basic_secret(req, &secret(env, "POSTMARK_WEBHOOK_SECRET")?, "POSTMARK_WEBHOOK_SECRET")?;
    let v = http::parse_json_object(&body(req).await?)?;
    match feedback::from_postmark(&v) {
        Some(f) => {
            if let Some(id) = feedback::postmark_event_id(&v) {
                if !provider_events::first_time(&ctx.db, "postmark", &id, ctx.now).await? {
                    return Ok(Reply::ok(json!({"ignored": true, "reason": "already applied", "duplicate": true})));
                }
                return once(ctx, "postmark", &id, apply(env, "postmark", f).await).await;
            }
            apply(env, "postmark", f).await
        }
        None => Ok(Reply::ok(json!({"ignored": true, "reason": "record type not handled"}))),
    }
}

pub async fn resend(ctx: &Ctx, req: &mut Request) -> ApiResult<Reply> {
    let env = &ctx.env;
    let secret = secret(env, "RESEND_WEBHOOK_SECRET")?;
    let h = |n: &str| req.headers().get(n).ok().flatten().unwrap_or_default();
    let (id, ts, sig) = (h("svix-id"), h("svix-timestamp"), h("svix-signature"));
    let raw = body(req).await?;
    if !feedback::verify_svix(&secret, &id, &ts, &sig, &raw, platform::now_ms() / 1000) {
        return Err(ApiError::new(401, "invalid_signature", "the svix-signature does not verify (or the timestamp is more than five minutes off)"));
    }
    let v = http::parse_json_object(&raw)?;
    match feedback::from_resend(&v) {
        Some(f) => {
            // Svix retries and replays carry the same svix-id (and it is signed).
            if !provider_events::first_time(&ctx.db, "resend", &id, ctx.now).await? {
                return Ok(Reply::ok(json!({"ignored": true, "reason": "already applied", "duplicate": true})));
            }
            once(ctx, "resend", &id, apply(env, "resend", f).await).await
        }
        None => Ok(Reply::ok(json!({"ignored": true, "reason": "event type not handled"}))),
    }
}

/// An event applied under its id: if applying failed, the id is forgotten so that the
/// provider's retry applies it.
async fn once(ctx: &Ctx, provider: &str, id: &str, applied: ApiResult<Reply>) -> ApiResult<Reply> {
    if applied.is_err() {
        let _ = provider_events::forget(&ctx.db, provider, id).await;
    }
    applied
}

async fn apply(env: &Env, provider: &str, f: Feedback) -> ApiResult<Reply> {
    let db = crate::store::db(env)?;
    let found = match (&f.message_id, &f.provider_message_id) {
        (Some(id), _) => messages::get(&db, id).await?,
        (None, Some(pid)) => messages::by_provider_id(&db, provider, pid).await?,
        _ => None,
    };
    // Unknown messages are acknowledged (so the provider stops retrying) and ignored.
    let Some(m) = found.filter(|m| m.msg.direction == Direction::Outbound) else {
        return Ok(Reply::ok(json!({"ignored": true, "reason": "no such message"})));
    };
    let now = platform::now_ms();
    let status = f.kind.status();
    let payload = payloads::feedback(&m.msg, &m.mailbox_address, f.kind.event_type(), provider, f.recipient.as_deref(), f.detail.as_deref(), now);
    let detail = format!("{}{}{}", provider, f.recipient.as_deref().map(|r| format!(" {r}")).unwrap_or_default(), f.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
    db.batch(vec![
        messages::record_feedback(&db, &m.msg.id, status, now)?,
        messages::timeline(&db, &m.msg.id, now, status.as_str(), Some(&detail))?,
        events::about_message(&db, &m.msg, &payload)?,
    ])
    .await?;
    queues::kick_events(env).await;
    let mut suppressed = None;
    if let (Some(reason), Some(rcpt)) = (f.kind.suppression_reason(), f.recipient.as_deref()) {
        if let Ok(r) = Recipient::parse(rcpt) {
            let addr = r.address.to_string().to_ascii_lowercase();
            suppressions::add(&db, &m.msg.account_id, &addr, reason, Some(&m.msg.id), now).await?;
            suppressed = Some(addr);
        }
    }
    let facts = audit::about_message(&m.msg, format!("provider:{provider}"), format!("delivery.{status}"), status.as_str(), Some(detail));
    audit::record(env, facts).await;
    Ok(Reply::ok(json!({"message_id": m.msg.id, "status": status, "suppressed": suppressed})))
}
