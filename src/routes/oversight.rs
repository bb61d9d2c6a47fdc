//! Humans deciding: `decide_email` (a held message, by its Approval Durable Object, or a mode
//! change, by compare-and-set in D1) and `list_pending` (what waits, oldest first).

use serde::Deserialize;
use serde_json::{json, Value};
use worker::Request;

use super::mailboxes::{visible_mailbox, MODE_CHANGE_PREFIX};
use super::Ctx;
use crate::domain::approval::{message_status_after, Approval, Command, Status};
use crate::domain::time::to_rfc3339;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::oversight::{self, DoRequest};
use crate::platform;
use crate::store::{self, events, mailboxes as store_mb, messages};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decide {
    id: Option<String>,
    message_id: Option<String>,
    decision: String,
    reason: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

pub fn parse_decision(s: &str) -> ApiResult<bool> {
    match s {
        "approve" | "approved" => Ok(true),
        "reject" | "rejected" => Ok(false),
        _ => Err(ApiError::invalid_field("decision", "`decision` is `approve` or `reject`")),
    }
}

fn decision_json(id: &str, status: &str, a: &Approval) -> Value {
    json!({
        "id": id,
        "status": status,
        "decision": a.status.as_str(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.map(to_rfc3339),
        "reason": a.reason,
    })
}

pub fn already_decided(id: &str, a: &Approval) -> ApiError {
    ApiError::conflict("already_decided", format!("{id} was already decided: {}", a.status.as_str()))
        .with_extra(json!({"winner": decision_json(id, message_status_after(a.status), a)}))
}

/// Sends a decision, cancel or expiry to a held message's Approval object and maps the answer.
pub async fn command_held(ctx: &Ctx, m: &messages::MessageRow, cmd: Command, audit_here: bool) -> ApiResult<Approval> {
    let req = DoRequest { hold: oversight::hold_of(m), command: Some(cmd), audit_here };
    let out = oversight::call(&ctx.env, &req).await?;
    match out.outcome.as_str() {
        "decided" => Ok(out.approval),
        _ => Err(already_decided(&m.id, &out.approval)),
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
    if id.starts_with(&format!("{MODE_CHANGE_PREFIX}_")) {
        return decide_mode_change(ctx, id, approve, &p.key_id, input.reason.as_deref()).await;
    }
    let m = messages::get_scoped(&ctx.db, &p.account_id, p.livemode, id)
        .await?
        .filter(|m| p.can_use_mailbox(&m.msg.mailbox_id))
        .ok_or_else(|| ApiError::not_found("email").with_field("id"))?;
    if m.msg.expires_at.is_none() {
        return Err(ApiError::conflict("not_pending", format!("{id} was not held for approval (status `{}`)", m.msg.status)));
    }
    let cmd = Command::Decide { approve, by: p.key_id.clone(), at: ctx.now, reason: input.reason.clone() };
    let a = command_held(ctx, &m.msg, cmd, false).await?;
    if a.status == Status::Expired {
        return Err(already_decided(id, &a));
    }
    let status = match a.status {
        Status::Approved if m.msg.direction == "inbound" => "received",
        Status::Approved if m.msg.send_at.is_some_and(|at| at > ctx.now) => "scheduled",
        s => message_status_after(s),
    };
    Ok(Reply::ok(decision_json(id, status, &a)))
}

/// A mode change is decided by compare-and-set on its D1 row: one winner.
pub async fn decide_mode_change(ctx: &Ctx, id: &str, approve: bool, by: &str, reason: Option<&str>) -> ApiResult<Reply> {
    let p = ctx.principal();
    let status = if approve { "approved" } else { "rejected" };
    // Visibility first: a key limited to some mailboxes sees no other mailbox's changes.
    let existing: Option<store_mb::ModeChangeRow> =
        store::first(&ctx.db, "SELECT * FROM mode_changes WHERE id = ?1 AND account_id = ?2", crate::args![id, &p.account_id]).await?;
    if !existing.as_ref().is_some_and(|c| p.can_use_mailbox(&c.mailbox_id)) {
        return Err(ApiError::not_found("mode change").with_field("id"));
    }
    let won: Option<store_mb::ModeChangeRow> = store::first(
        &ctx.db,
        "UPDATE mode_changes SET status = ?3, decided_at = ?4, decided_by = ?5
         WHERE id = ?1 AND account_id = ?2 AND status = 'pending' RETURNING *",
        crate::args![id, &p.account_id, status, ctx.now, by],
    )
    .await?;
    let Some(change) = won else {
        let c = store::first::<store_mb::ModeChangeRow>(&ctx.db, "SELECT * FROM mode_changes WHERE id = ?1", crate::args![id])
            .await?
            .ok_or_else(|| ApiError::not_found("mode change").with_field("id"))?;
        return Err(ApiError::conflict("already_decided", format!("{id} was already decided: {}", c.status))
            .with_extra(json!({"winner": {"id": c.id, "decision": c.status, "decided_by": c.decided_by, "decided_at": c.decided_at.map(to_rfc3339)}})));
    };
    if approve {
        apply_mode(ctx, &change.mailbox_id, &change.to_mode, by).await?;
    }
    Ok(Reply::ok(json!({
        "id": change.id, "status": status, "decision": status, "decided_by": by,
        "decided_at": to_rfc3339(ctx.now), "reason": reason, "mailbox_id": change.mailbox_id,
        "from": change.from_mode, "to": change.to_mode,
    })))
}

/// Sets a mailbox's mode and emits `mailbox.mode_changed` (from whatever mode it has now).
pub async fn apply_mode(ctx: &Ctx, mailbox_id: &str, new: &str, approved_by: &str) -> ApiResult<()> {
    let p = ctx.principal();
    let Some(mb) = store_mb::find(&ctx.db, &p.account_id, mailbox_id).await? else { return Ok(()) };
    let old = mb.oversight_mode.as_str();
    let payload = json!({
        "type": "mailbox.mode_changed",
        "event_id": platform::new_id(crate::domain::ids::EVENT),
        "created_at": to_rfc3339(ctx.now),
        "mailbox": mb.address,
        "livemode": p.livemode,
        "metadata": {},
        "old_mode": old,
        "new_mode": new,
        "approved_by": approved_by,
    });
    ctx.db
        .batch(vec![
            store::stmt(&ctx.db, "UPDATE mailboxes SET oversight_mode = ?2, updated_at = ?3 WHERE id = ?1", crate::args![mailbox_id, new, ctx.now])?,
            events::insert(&ctx.db, &events::NewEvent {
                id: payload["event_id"].as_str().unwrap_or_default(),
                account_id: &p.account_id,
                livemode: p.livemode,
                mailbox_id: Some(mailbox_id),
                message_id: None,
                payload: &payload,
                created_at: ctx.now,
            })?,
        ])
        .await?;
    crate::events::kick(&ctx.env).await;
    Ok(())
}

pub async fn list_pending(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = http::query_params(req, &["mailbox", "direction", "limit", "cursor"])?;
    let limit = http::parse_limit(&q, 20, 100)?;
    let mailbox_id = match q.get("mailbox") {
        Some(m) => Some(visible_mailbox(ctx, m).await?.id),
        None => None,
    };
    let direction = match q.get("direction").map(String::as_str) {
        None => None,
        Some(d @ ("inbound" | "outbound")) => Some(d),
        Some(_) => return Err(ApiError::invalid_field("direction", "`direction` is `inbound` or `outbound`")),
    };
    let allowed = p.mailboxes.as_ref().map(|m| serde_json::to_string(m).expect("strings serialize"));
    let rows = messages::list_pending(&ctx.db, &p.account_id, p.livemode, mailbox_id.as_deref(), direction, allowed.as_deref(), q.get("cursor").map(String::as_str), limit + 1).await?;
    let (rows, next) = super::page(rows, limit, |m| m.msg.id.clone());
    let changes: Vec<store_mb::ModeChangeRow> = store::all(
        &ctx.db,
        "SELECT * FROM mode_changes WHERE account_id = ?1 AND status = 'pending' AND (?2 IS NULL OR mailbox_id = ?2) ORDER BY id LIMIT 100",
        crate::args![&p.account_id, mailbox_id.as_deref()],
    )
    .await?;
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
        "mode_changes": changes.iter().filter(|c| p.can_use_mailbox(&c.mailbox_id)).map(|c| json!({
            "id": c.id, "mailbox_id": c.mailbox_id, "from": c.from_mode, "to": c.to_mode,
            "status": c.status, "created_at": to_rfc3339(c.created_at),
        })).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}
