//! What providers report back: `POST /provider_events/postmark` (HTTP Basic auth with the
//! deployment's `POSTMARK_WEBHOOK_SECRET`) and `POST /provider_events/resend` (Svix-signed with
//! `RESEND_WEBHOOK_SECRET`). Each updates the message, emits `email.delivered|bounced|complained`,
//! and suppresses the recipient on a hard bounce or a complaint.

use serde_json::json;
use worker::{Env, Request};

use crate::domain::feedback::{self, Feedback};
use crate::domain::ids;
use crate::http::{ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::{self, events, messages};

const MAX_BODY: usize = 256 * 1024;

async fn body(req: &mut Request) -> ApiResult<Vec<u8>> {
    let b = req.bytes().await.map_err(|_| ApiError::bad_request("invalid_request", "the body could not be read"))?;
    if b.len() > MAX_BODY {
        return Err(ApiError::new(413, "payload_too_large", format!("provider events are at most {MAX_BODY} bytes")));
    }
    Ok(b)
}

fn secret(env: &Env, name: &str) -> ApiResult<String> {
    platform::secret(env, name).ok_or_else(|| ApiError::new(503, "not_configured", format!("{name} is not set on this deployment")))
}

pub async fn postmark(req: &mut Request, env: &Env) -> ApiResult<Reply> {
    crate::http::auth::require_basic_secret(req, &secret(env, "POSTMARK_WEBHOOK_SECRET")?, "POSTMARK_WEBHOOK_SECRET")?;
    let v = crate::http::parse_json_object(&body(req).await?)?;
    match feedback::from_postmark(&v) {
        Some(f) => apply(env, "postmark", f).await,
        None => Ok(Reply::ok(json!({"ignored": true, "reason": "record type not handled"}))),
    }
}

pub async fn resend(req: &mut Request, env: &Env) -> ApiResult<Reply> {
    let secret = secret(env, "RESEND_WEBHOOK_SECRET")?;
    let h = |n: &str| req.headers().get(n).ok().flatten().unwrap_or_default();
    let (id, ts, sig) = (h("svix-id"), h("svix-timestamp"), h("svix-signature"));
    let raw = body(req).await?;
    if !feedback::verify_svix(&secret, &id, &ts, &sig, &raw, platform::now_ms() / 1000) {
        return Err(ApiError::new(401, "invalid_signature", "the svix-signature does not verify (or the timestamp is more than five minutes off)"));
    }
    let v = crate::http::parse_json_object(&raw)?;
    match feedback::from_resend(&v) {
        Some(f) => apply(env, "resend", f).await,
        None => Ok(Reply::ok(json!({"ignored": true, "reason": "event type not handled"}))),
    }
}

async fn apply(env: &Env, provider: &str, f: Feedback) -> ApiResult<Reply> {
    let db = store::db(env)?;
    let found = match (&f.message_id, &f.provider_message_id) {
        (Some(id), _) => messages::get(&db, id).await?,
        (None, Some(pid)) => {
            let row: Option<messages::MessageWithMailbox> = store::first(
                &db,
                "SELECT m.*, b.address AS mailbox_address FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
                 WHERE m.provider = ?1 AND m.provider_message_id = ?2",
                crate::args![provider, pid.as_str()],
            )
            .await?;
            row
        }
        _ => None,
    };
    // Unknown messages are acknowledged (so the provider stops retrying) and ignored.
    let Some(m) = found.filter(|m| m.msg.direction == "outbound") else {
        return Ok(Reply::ok(json!({"ignored": true, "reason": "no such message"})));
    };
    let now = platform::now_ms();
    let payload = events::message_payload(&m.msg, &m.mailbox_address, f.kind.event_type(), platform::new_id(ids::EVENT), now, json!({
        "provider": provider,
        "recipient": f.recipient,
        "details": f.detail,
    }));
    let detail = format!("{}{}{}", provider, f.recipient.as_deref().map(|r| format!(" {r}")).unwrap_or_default(), f.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default());
    db.batch(vec![
        // A later `delivered` never overwrites a bounce or a complaint.
        store::stmt(
            &db,
            "UPDATE messages SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status IN ('sent', 'delivered') AND NOT (status = 'delivered' AND ?2 = 'delivered')",
            crate::args![m.msg.id.as_str(), f.kind.status(), now],
        )?,
        messages::timeline(&db, &m.msg.id, now, f.kind.status(), Some(&detail))?,
        events::about_message(&db, &m.msg, &payload)?,
    ])
    .await?;
    crate::events::kick(env).await;
    let mut suppressed = None;
    if let (Some(reason), Some(rcpt)) = (f.kind.suppression_reason(), f.recipient.as_deref()) {
        if let Ok(r) = crate::domain::address::Recipient::parse(rcpt) {
            let addr = r.address.to_string().to_ascii_lowercase();
            super::suppressions::suppress(&db, &m.msg.account_id, &addr, reason, Some(&m.msg.id), now).await?;
            suppressed = Some(addr);
        }
    }
    crate::audit::record(env, crate::audit::Facts {
        account_id: m.msg.account_id.clone(),
        livemode: m.msg.livemode == 1,
        actor: format!("provider:{provider}"),
        action: format!("delivery.{}", f.kind.status()),
        mailbox: Some(m.msg.mailbox_id.clone()),
        message_id: Some(m.msg.id.clone()),
        oversight_mode: Some(m.msg.oversight_mode.clone()),
        outcome: f.kind.status().into(),
        detail: Some(detail),
        ..Default::default()
    })
    .await;
    Ok(Reply::ok(json!({"message_id": m.msg.id, "status": f.kind.status(), "suppressed": suppressed})))
}
