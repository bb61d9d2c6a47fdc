//! One message: `get_email` (status and timeline; both versions of one a reviewer edited) and `cancel_email` (before sending starts).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use crate::app::access::visible_message;
use crate::app::{oversight, Ctx};
use crate::domain::approval::Command;
use crate::domain::delivery::OutboundEmail;
use crate::domain::message::{Direction, MessageStatus};
use crate::domain::time::to_rfc3339;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store::messages::{self, Blob, MessageWithMailbox};

fn json_list(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!([]))
}

fn message_json(m: &MessageWithMailbox) -> Value {
    let r = &m.msg;
    json!({
        "id": r.id,
        "mailbox": m.mailbox_address,
        "mailbox_id": r.mailbox_id,
        "direction": r.direction,
        "thread_id": r.thread_id,
        "from": r.from_addr,
        "to": json_list(&r.to_json),
        "cc": json_list(&r.cc_json),
        "subject": r.subject,
        "status": r.status,
        "oversight_mode": r.oversight_mode,
        "metadata": serde_json::from_str::<Value>(&r.metadata).unwrap_or_else(|_| json!({})),
        "created_at": to_rfc3339(r.created_at),
        "send_at": r.send_at.map(to_rfc3339),
        "sent_at": r.sent_at.map(to_rfc3339),
        "provider": r.provider,
        "provider_message_id": r.provider_message_id,
        "attempts": r.attempts,
        "last_error": r.last_error,
        "livemode": r.is_live(),
        "expires_at": r.expires_at.map(to_rfc3339),
        "decision": r.decision,
        "decided_by": r.decided_by,
        "decided_at": r.decided_at.map(to_rfc3339),
        "decision_reason": r.decision_reason,
        "kind": r.kind,
        "edited": r.edit.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()),
    })
}

/// Both versions of a message a reviewer edited before approving: the agent's and the one sent.
async fn versions(ctx: &Ctx, id: &str) -> ApiResult<Value> {
    let version = |j: Option<String>| {
        j.and_then(|j| serde_json::from_str::<OutboundEmail>(&j).ok())
            .map(|e| json!({"subject": e.subject, "to": e.to, "cc": e.cc, "text": e.text, "html": e.html}))
    };
    let original = version(messages::blob(&ctx.db, id, Blob::Original).await?);
    let sent = version(messages::blob(&ctx.db, id, Blob::Outbound).await?);
    Ok(json!({"original": original, "sent": sent}))
}

pub async fn get_email(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let q = http::query_params(req, &["id", "message_id"])?;
    let id = q.get("id").or(q.get("message_id")).ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let m = visible_message(ctx, id).await?;
    let timeline = messages::timeline_of(&ctx.db, id).await?;
    let mut v = message_json(&m);
    v["bcc"] = json_list(&m.msg.bcc_json);
    if m.msg.edit.is_some() {
        v["versions"] = versions(ctx, id).await?;
    }
    v["timeline"] = json!(timeline
        .iter()
        .map(|t| json!({"at": to_rfc3339(t.at), "event": t.kind, "detail": t.detail}))
        .collect::<Vec<_>>());
    Ok(Reply::ok(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cancel {
    id: Option<String>,
    message_id: Option<String>,
    reason: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub async fn cancel_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: Cancel = http::from_body(body)?;
    let id = input.id.as_deref().or(input.message_id.as_deref()).ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    if input.reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::invalid_field("reason", "`reason` may be at most 1000 characters"));
    }
    let current = visible_message(ctx, id).await?;
    if current.msg.direction == Direction::Inbound {
        return Err(ApiError::conflict("not_cancellable", "inbound mail is not the sender's to cancel; a human decides held inbound mail")
            .with_extra(json!({"status": current.msg.status})));
    }
    if current.msg.status == MessageStatus::PendingApproval {
        // A held message is cancelled through its Approval object, like a decision.
        let cmd = Command::Cancel { by: p.key_id.clone(), at: ctx.now, reason: input.reason.clone() };
        oversight::command_held(&ctx.env, &current.msg, cmd, false).await.map_err(|e| {
            if e.code == "already_decided" { ApiError::conflict("not_cancellable", e.message).with_extra(e.extra.unwrap_or_default()) } else { e }
        })?;
        let m = visible_message(ctx, id).await?;
        return Ok(Reply::ok(message_json(&m)));
    }
    let Some(_) = messages::cancel(&ctx.db, &p.account_id, p.livemode, id, ctx.now).await? else {
        return Err(ApiError::conflict(
            "not_cancellable",
            format!("the message is `{}`; only queued, scheduled or pending messages can be cancelled", current.msg.status),
        )
        .with_extra(json!({"status": current.msg.status})));
    };
    let detail = format!("by {}{}", p.key_id, input.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default());
    ctx.db.exec(messages::timeline(&ctx.db, id, ctx.now, "cancelled", Some(&detail))?).await?;
    let mut m = visible_message(ctx, id).await?;
    m.msg.status = MessageStatus::Cancelled;
    Ok(Reply::ok(message_json(&m)))
}
