//! Humans deciding: `decide_email` (a held message, by its Approval Durable Object, or a mode
//! change, by compare-and-set in D1), `list_pending` (what waits, oldest first), and the kill
//! switch, `pause` and `resume` (`app::pause`).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use crate::app::{access, changes, edits as app_edits, mode_changes, oversight, pause, Ctx};
use crate::domain::message::{Direction, MessageStatus};
use crate::domain::time::to_rfc3339;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::store::{changes as store_other, messages, mode_changes as store_changes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    id: Option<String>,
    message_id: Option<String>,
    decision: String,
    reason: Option<String>,
    /// Approve with edits: the reviewer's version (`domain::edits::EditsInput`).
    edits: Option<Value>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

fn parse_decision(s: &str) -> ApiResult<bool> {
    match s {
        "approve" | "approved" => Ok(true),
        "reject" | "rejected" => Ok(false),
        _ => Err(ApiError::invalid_field("decision", "`decision` is `approve` or `reject`")),
    }
}

pub async fn decide_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: Decide = http::from_body(body)?;
    let id = input.id.as_deref().or(input.message_id.as_deref()).ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let approve = parse_decision(&input.decision)?;
    if input.reason.as_ref().is_some_and(|r| r.chars().count() > 1000) {
        return Err(ApiError::invalid_field("reason", "`reason` may be at most 1000 characters"));
    }
    let edits = input.edits.as_ref().filter(|e| !e.is_null());
    if edits.is_some() && !approve {
        return Err(ApiError::invalid_field("edits", "`edits` go with `approve`: a rejected message is not sent"));
    }
    if mode_changes::is_mode_change_id(id) {
        if edits.is_some() {
            return Err(ApiError::invalid_field("edits", "a change cannot be edited, only approved or rejected"));
        }
        return Ok(Reply::ok(match changes::decide_any(ctx, id, approve).await? {
            changes::Decided::Other(c) => {
                let mut v = changes::change_json(&c);
                v["decision"] = json!(c.status);
                v["reason"] = json!(input.reason);
                v
            }
            changes::Decided::Mode(change) => json!({
                "id": change.id, "status": change.status, "decision": change.status, "decided_by": p.actor_name(),
                "decided_at": to_rfc3339(ctx.now), "reason": input.reason, "mailbox_id": change.mailbox_id,
                "from": change.from_mode, "to": change.to_mode,
            }),
        }));
    }
    let m = access::visible_message(ctx, id).await?;
    if m.msg.expires_at.is_none() {
        return Err(ApiError::conflict("not_pending", format!("{id} was not held for approval (status `{}`)", m.msg.status)));
    }
    if m.msg.status != MessageStatus::PendingApproval && edits.is_some() {
        // Decided already: the Approval object answers with the winner (nothing is staged).
        let (a, _) = oversight::decide_held(&ctx.env, &m.msg, approve, &p.actor_name(), input.reason.clone(), ctx.now, None).await?;
        return Err(oversight::already_decided(id, &a));
    }
    let edit = match edits {
        Some(e) => app_edits::prepare(ctx, &m, e).await?,
        None => None,
    };
    let (a, status) = oversight::decide_held(&ctx.env, &m.msg, approve, &p.actor_name(), input.reason.clone(), ctx.now, edit).await?;
    let reply = Reply::ok(oversight::decision_json(id, status, &a));
    if let Some(e) = a.edit.as_deref() {
        app_edits::audit(ctx, &reply, e).await?;
    }
    Ok(reply)
}

pub async fn list_pending(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["mailbox", "direction", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let mailbox_id = match q.get("mailbox") {
        Some(m) => Some(access::visible_mailbox(ctx, m).await?.id),
        None => None,
    };
    let direction = match q.get("direction").map(String::as_str) {
        None => None,
        Some(d) => Some(Direction::parse(d).ok_or_else(|| ApiError::invalid_field("direction", "`direction` is `inbound` or `outbound`"))?),
    };
    let allowed = p.mailboxes.as_ref().map(|m| serde_json::to_string(m).expect("strings serialize"));
    let rows = messages::list_pending(&ctx.db, &p.account_id, p.livemode, mailbox_id.as_deref(), direction, allowed.as_deref(), q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = super::page(rows, limit, |m| m.msg.id.clone());
    let mode_changes = store_changes::pending(&ctx.db, &p.account_id, mailbox_id.as_deref()).await?;
    let other_changes = store_other::pending(&ctx.db, &p.account_id, mailbox_id.as_deref()).await?;
    Ok(Reply::ok(json!({
        "messages": rows.iter().map(|m| json!({
            "id": m.msg.id,
            "direction": m.msg.direction,
            "mailbox": m.mailbox_address,
            "mailbox_id": m.msg.mailbox_id,
            "from": m.msg.from_addr,
            "to": serde_json::from_str::<Value>(&m.msg.to_json).unwrap_or(json!([])),
            "subject": m.msg.subject,
            "oversight_mode": m.msg.oversight_mode,
            "created_at": to_rfc3339(m.msg.created_at),
            "expires_at": m.msg.expires_at.map(to_rfc3339),
            "metadata": serde_json::from_str::<Value>(&m.msg.metadata).unwrap_or(json!({})),
        })).collect::<Vec<_>>(),
        "mode_changes": mode_changes.iter().filter(|c| p.can_use_mailbox(&c.mailbox_id)).map(|c| json!({
            "id": c.id, "mailbox_id": c.mailbox_id, "from": c.from_mode, "to": c.to_mode,
            "status": c.status, "created_at": to_rfc3339(c.created_at),
        })).collect::<Vec<_>>(),
        "changes": other_changes.iter()
            .filter(|c| c.mailbox_id.as_deref().map_or(p.mailboxes.is_none(), |m| p.can_use_mailbox(m)))
            .map(changes::change_json).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    /// A mailbox (id or address); the whole account without one.
    mailbox: Option<String>,
    reason: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// What a pause or resume is about: the named mailbox (one this key may use), or the whole
/// account (refused to a key limited to some mailboxes).
async fn pause_target(ctx: &Ctx, mailbox: Option<&str>) -> ApiResult<Option<crate::store::mailboxes::MailboxRow>> {
    match mailbox {
        Some(m) => Ok(Some(access::visible_mailbox(ctx, m).await.map_err(|e| e.with_field("mailbox"))?)),
        None if ctx.principal().mailboxes.is_some() => {
            Err(ApiError::new(403, "mailbox_limited_key", "this key is limited to some mailboxes; name one in `mailbox` (it cannot pause or resume the whole account)"))
        }
        None => Ok(None),
    }
}

pub async fn pause_sending(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: PauseBody = http::from_body(body)?;
    if input.reason.as_deref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid_field("reason", "`reason` is at most 500 characters"));
    }
    let m = pause_target(ctx, input.mailbox.as_deref()).await?;
    let target = m.as_ref().map_or(pause::Target::Account, pause::Target::Mailbox);
    Ok(Reply::ok(pause::pause(ctx, &target, input.reason.as_deref()).await?))
}

pub async fn resume_sending(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: PauseBody = http::from_body(body)?;
    let m = pause_target(ctx, input.mailbox.as_deref()).await?;
    let target = m.as_ref().map_or(pause::Target::Account, pause::Target::Mailbox);
    Ok(Reply::ok(pause::resume(ctx, &target).await?))
}
