//! Holds and decisions: holding a message for a human (the `Approval` Durable Object per
//! message), sending commands to it, mirroring its decisions to D1, and the signed links in the
//! notification email. The rules are `domain::oversight` (which mode a send runs under) and
//! `domain::approval` (the state machine); the object itself is `crate::durable::approval`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{Env, Headers, Method, Request, RequestInit};

use crate::app::{audit, edits, payloads, queues};
use crate::domain::approval::{message_status_after, status_after_decision, Approval, Command, Status};
use crate::domain::links::{self, LinkClaims};
use crate::domain::message::{Direction, MessageStatus};
use crate::domain::time::to_rfc3339;
use crate::http::{ApiError, ApiResult};
use crate::platform;
use crate::store::{self, events, messages::{self, MessageRow}};

/// What the Durable Object needs to know about the message it guards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub message_id: String,
    pub account_id: String,
    pub livemode: bool,
    pub expires_at: i64,
}

impl Hold {
    pub fn of(m: &MessageRow) -> Hold {
        Hold { message_id: m.id.clone(), account_id: m.account_id.clone(), livemode: m.is_live(), expires_at: m.expires_at.unwrap_or(0) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoRequest {
    pub hold: Hold,
    pub command: Option<Command>,
    /// Audit the decision from the object (link and expiry decisions; API decisions are audited
    /// by the router).
    #[serde(default)]
    pub audit_here: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldOutcome {
    /// The hold exists (first contact creates it, with its expiry alarm).
    Held,
    /// This command decided it.
    Decided,
    /// Someone decided first.
    AlreadyDecided,
    /// An expiry not yet due, or after a decision: nothing changed.
    Ignored,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoResponse {
    pub outcome: HoldOutcome,
    pub approval: Approval,
}

/// Sends a request to the message's Approval object (creating it, with its expiry alarm, on
/// first contact).
pub async fn call(env: &Env, req: &DoRequest) -> worker::Result<DoResponse> {
    let stub = env.durable_object("APPROVALS")?.id_from_name(&req.hold.message_id)?.get_stub()?;
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    let mut init = RequestInit::new();
    let body = serde_json::to_string(req).map_err(|e| e.to_string())?;
    init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
    let mut resp = stub.fetch_with_request(Request::new_with_init("https://approval/", &init)?).await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!("approval object answered {}: {}", resp.status_code(), resp.text().await.unwrap_or_default())));
    }
    resp.json().await
}

/// Creates the hold of a message just stored as `pending_approval`.
pub async fn hold(env: &Env, m: &MessageRow) -> worker::Result<DoResponse> {
    call(env, &DoRequest { hold: Hold::of(m), command: None, audit_here: false }).await
}

/// Sends a command (decide, cancel, expire) to a held message's object.
pub async fn command(env: &Env, m: &MessageRow, cmd: Command, audit_here: bool) -> worker::Result<DoResponse> {
    call(env, &DoRequest { hold: Hold::of(m), command: Some(cmd), audit_here }).await
}

/// A decision as the API shows it.
pub fn decision_json(id: &str, status: MessageStatus, a: &Approval) -> Value {
    json!({
        "id": id,
        "status": status,
        "decision": a.status.as_str(),
        "decided_by": a.decided_by,
        "decided_at": a.decided_at.map(to_rfc3339),
        "reason": a.reason,
        "edited": a.edit.is_some(),
        "edits": a.edit.as_deref().map(|e| edits::record_json(e, a.decided_by.as_deref().unwrap_or_default())),
    })
}

/// 409 `already_decided`, with the winning decision.
pub fn already_decided(id: &str, a: &Approval) -> ApiError {
    ApiError::conflict("already_decided", format!("{id} was already decided: {}", a.status.as_str()))
        .with_extra(json!({"winner": decision_json(id, message_status_after(a.status), a)}))
}

/// A command that must decide now (an API decision or cancel): the decision, or 409 with the
/// one that won.
pub async fn command_held(env: &Env, m: &MessageRow, cmd: Command, audit_here: bool) -> ApiResult<Approval> {
    let out = command(env, m, cmd, audit_here).await?;
    match out.outcome {
        HoldOutcome::Decided => Ok(out.approval),
        _ => Err(already_decided(&m.id, &out.approval)),
    }
}

/// A human decides a held message through the API: the decision and the message's status
/// after it. A decision that arrives after the deadline is an expiry, and says so (409).
/// `edit`: the reviewer's version (`app::edits::prepare`), sent instead if this approval wins.
#[allow(clippy::too_many_arguments)]
pub async fn decide_held(env: &Env, m: &MessageRow, approve: bool, by: &str, reason: Option<String>, now: i64, edit: Option<crate::domain::edits::Edit>) -> ApiResult<(Approval, MessageStatus)> {
    let cmd = Command::Decide { approve, by: by.to_string(), at: now, reason, edit: edit.map(Box::new) };
    let a = command_held(env, m, cmd, false).await?;
    if a.status == Status::Expired {
        return Err(already_decided(&m.id, &a));
    }
    let status = status_after_decision(a.status, m.direction, m.send_at, now);
    Ok((a, status))
}

/// Mirrors a taken decision to D1 (status, timeline, `email.decided`), enqueues delivery on
/// approval, and audits decisions that did not come through the API. Safe to repeat.
pub async fn apply_decision_effects(env: &Env, hold: &Hold, a: &Approval, enqueue: bool, audit_here: bool) -> worker::Result<()> {
    let db = store::db(env)?;
    let Some(m) = messages::get(&db, &hold.message_id).await? else { return Ok(()) };
    let now = platform::now_ms();
    let by = a.decided_by.clone().unwrap_or_default();
    let at = a.decided_at.unwrap_or(now);
    let inbound = m.msg.direction == Direction::Inbound;
    let status_after = status_after_decision(a.status, m.msg.direction, m.msg.send_at, now);
    // An approval with edits: the reviewer's version goes on the message before it can leave.
    if let (Status::Approved, Some(edit), None) = (a.status, a.edit.as_deref(), m.msg.edit.as_ref()) {
        if m.msg.status == MessageStatus::PendingApproval {
            let results = db.batch(edits::statements(&db, &m.msg.id, edit, &by)?).await?;
            if results.get(3).map_or(true, |r| r.results::<serde_json::Value>().map_or(true, |v| v.is_empty())) {
                return Err(worker::Error::RustError(format!("{}: the approved edit is not staged; the message stays held", m.msg.id)));
            }
        }
    }
    let moved = messages::mirror_decision(&db, &m.msg.id, status_after, a.status.as_str(), &by, at, a.reason.as_deref()).await?;
    if moved {
        let detail = format!("{} by {by}{}", a.status.as_str(), a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default());
        let mut batch = vec![messages::timeline(&db, &m.msg.id, now, a.status.as_str(), Some(&detail))?];
        if a.status != Status::Cancelled {
            batch.push(events::about_message(&db, &m.msg, &payloads::decided(&m.msg, &m.mailbox_address, a, now))?);
        }
        if inbound && a.status == Status::Approved {
            // Approved inbound mail becomes visible, and only now is it announced.
            let mut row = m.msg.clone();
            row.status = MessageStatus::Received;
            batch.push(events::about_message(&db, &m.msg, &payloads::received(&row, &m.mailbox_address, now))?);
        }
        db.batch(batch).await?;
        queues::kick_events(env).await;
        if audit_here {
            let action = if a.status == Status::Expired { "approval.expired" } else { "approval.decided" };
            audit::record(env, audit::about_message(&m.msg, by.clone(), action, a.status.as_str(), a.reason.clone())).await;
        }
    }
    if enqueue && a.status == Status::Approved && m.msg.direction == Direction::Outbound {
        queues::enqueue_delivery(env, &m.msg.id, m.msg.send_at, now).await?;
    }
    Ok(())
}

/// The secret approval and unsubscribe links are signed with: `APPROVAL_LINK_SECRET`, never
/// derived from another secret. Unset: no approval email is sent and the link pages answer 503.
pub fn link_secret(env: &Env) -> Option<Vec<u8>> {
    platform::secret(env, "APPROVAL_LINK_SECRET").map(|s| links::derive_secret(&s))
}

/// Approve and reject links for a held message or mode change, valid until `exp`.
pub fn review_links(env: &Env, base_url: &str, id: &str, to: &str, exp: i64) -> Option<(String, String)> {
    let secret = link_secret(env)?;
    let link = |decision: &str| {
        let token = links::sign(&secret, &LinkClaims { id: id.to_string(), decision: decision.into(), exp, to: to.to_string() });
        format!("{}/review?token={token}", base_url.trim_end_matches('/'))
    };
    Some((link("approve"), link("reject")))
}
