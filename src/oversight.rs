//! Oversight glue: holding a message for a human (the `Approval` Durable Object per message),
//! sending commands to it, mirroring its decisions to D1, and the signed links in the
//! notification email. The rules themselves are `domain::oversight` and `domain::approval`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use worker::{Env, Headers, Method, Request, RequestInit};

use crate::domain::approval::{message_status_after, Approval, Command, Status};
use crate::domain::links::{self, LinkClaims};
use crate::domain::ids;
use crate::platform;
use crate::store::{self, events, messages};

/// What the Durable Object needs to know about the message it guards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    pub message_id: String,
    pub account_id: String,
    pub livemode: bool,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoRequest {
    pub hold: Hold,
    pub command: Option<Command>,
    #[serde(default)]
    pub audit_here: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoResponse {
    /// `held`, `decided`, `already_decided` or `ignored`
    pub outcome: String,
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

pub fn hold_of(m: &messages::MessageRow) -> Hold {
    Hold { message_id: m.id.clone(), account_id: m.account_id.clone(), livemode: m.livemode == 1, expires_at: m.expires_at.unwrap_or(0) }
}

/// The flat `email.decided` payload.
fn decided_payload(m: &messages::MessageWithMailbox, a: &Approval, event_id: &str, now: i64) -> Value {
    events::message_payload(&m.msg, &m.mailbox_address, "email.decided", event_id.to_string(), now, json!({
        "direction": m.msg.direction,
        "decision": a.status.as_str(),
        "decided_by": a.decided_by,
        "reason": a.reason,
    }))
}

/// Mirrors a taken decision to D1 (status, timeline, `email.decided`), enqueues delivery on
/// approval, and audits decisions that did not come through the API. Safe to repeat.
pub async fn apply_decision_effects(env: &Env, hold: &Hold, a: &Approval, enqueue: bool, audit_here: bool) -> worker::Result<()> {
    let db = store::db(env)?;
    let Some(m) = messages::get(&db, &hold.message_id).await? else { return Ok(()) };
    let now = platform::now_ms();
    let by = a.decided_by.clone().unwrap_or_default();
    let at = a.decided_at.unwrap_or(now);
    let inbound = m.msg.direction == "inbound";
    let status_after = match a.status {
        Status::Approved if inbound => "received",
        // Approved before its send_at: it waits for its time like any scheduled send.
        Status::Approved if m.msg.send_at.is_some_and(|at| at > now) => "scheduled",
        s => message_status_after(s),
    };
    let moved = messages::mirror_decision(&db, &m.msg.id, status_after, a.status.as_str(), &by, at, a.reason.as_deref()).await?;
    if moved {
        let detail = format!("{} by {by}{}", a.status.as_str(), a.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default());
        let mut batch = vec![messages::timeline(&db, &m.msg.id, now, a.status.as_str(), Some(&detail))?];
        if a.status != Status::Cancelled {
            let event_id = ids::derived_id(ids::EVENT, &format!("{}:decided", m.msg.id));
            let payload = decided_payload(&m, a, &event_id, now);
            batch.push(events::about_message(&db, &m.msg, &payload)?);
        }
        if inbound && a.status == Status::Approved {
            // Approved inbound mail becomes visible, and only now is it announced.
            let mut row = m.msg.clone();
            row.status = "received".into();
            let payload = crate::inbound::received_payload(&row, &m.mailbox_address, now);
            batch.push(events::about_message(&db, &m.msg, &payload)?);
        }
        db.batch(batch).await?;
        crate::events::kick(env).await;
        if audit_here {
            crate::audit::record(env, crate::audit::Facts {
                account_id: m.msg.account_id.clone(),
                livemode: m.msg.livemode == 1,
                actor: by.clone(),
                action: if a.status == Status::Expired { "approval.expired".into() } else { "approval.decided".into() },
                mailbox: Some(m.msg.mailbox_id.clone()),
                message_id: Some(m.msg.id.clone()),
                oversight_mode: Some(m.msg.oversight_mode.clone()),
                outcome: a.status.as_str().into(),
                detail: a.reason.clone(),
                ..Default::default()
            })
            .await;
        }
    }
    if enqueue && a.status == Status::Approved && m.msg.direction == "outbound" {
        crate::delivery::enqueue(env, &m.msg.id, m.msg.send_at, now).await?;
    }
    Ok(())
}

/// The secret approval links are signed with (derived from ADMIN_TOKEN unless set on its own).
pub fn link_secret(env: &Env) -> Option<Vec<u8>> {
    platform::secret(env, "APPROVAL_LINK_SECRET")
        .or_else(|| platform::secret(env, "ADMIN_TOKEN"))
        .map(|s| links::derive_secret(&s))
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
