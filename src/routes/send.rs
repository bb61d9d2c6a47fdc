//! `POST /send_email`: validate, check the sender and the oversight mode, build the MIME once,
//! store message + bodies + timeline (+ the idempotent answer) in one D1 batch, then either put
//! the id on the delivery queue or hold it for a human (its Approval Durable Object, an
//! `email.pending` event and a notification to the oversight address). Answers 202.

use serde_json::{json, Value};
use worker::D1PreparedStatement;

use super::Ctx;
use crate::delivery::enqueue;
use crate::domain::address::{EmailAddress, Recipient};
use crate::domain::delivery::OutboundEmail;
use crate::domain::send::{SendEmailRequest, ValidatedSend};
use crate::domain::{ids, mime, oversight::OversightMode, time::to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::oversight;
use crate::platform;
use crate::store::mailboxes::MailboxRow;
use crate::store::{events, messages::{self, MessageRow}};

/// The mode a send runs under: the request's, which may only be as strict as the mailbox's or
/// stricter.
pub fn effective_mode(mailbox: OversightMode, requested: Option<OversightMode>) -> ApiResult<OversightMode> {
    let mode = match requested {
        None => mailbox,
        Some(r) if r.is_at_least_as_strict_as(mailbox) => r,
        Some(r) => {
            return Err(ApiError::new(
                403,
                "oversight_escalation",
                format!("this mailbox is `{}`; a request may ask for that or stricter, not `{}`", mailbox.as_str(), r.as_str()),
            )
            .with_field("oversight_mode"))
        }
    };
    if mode == OversightMode::ReadOnly {
        return Err(ApiError::new(403, "mailbox_read_only", "this mailbox is read_only: it cannot send"));
    }
    Ok(mode)
}

fn addresses(rs: &[Recipient]) -> String {
    serde_json::to_string(&rs.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("strings serialize")
}

/// A message ready to store: its row and the statements that store it with its bodies.
pub struct Staged {
    pub row: MessageRow,
    pub statements: Vec<D1PreparedStatement>,
}

/// Builds the MIME once and stages the message row, its two bodies and its first timeline entry.
/// `monitor_copy` is added as an envelope-only Bcc (the `monitored` mode's copy).
#[allow(clippy::too_many_arguments)]
pub fn stage_outbound(ctx: &Ctx, id: String, v: &ValidatedSend, mailbox: &MailboxRow, mode: OversightMode, status: &str, kind: &str, thread_id: &str, monitor_copy: Option<&str>) -> ApiResult<Staged> {
    let p = ctx.principal();
    let mime_bytes = mime::build(v, &id, ctx.now)?;
    let mime_text = String::from_utf8(mime_bytes).map_err(|_| ApiError::internal())?;
    let mut outbound = OutboundEmail::from_validated(v, &id, &mime::message_id_header(&id, v.from.address.domain()));
    if let Some(copy) = monitor_copy {
        outbound.bcc.push(copy.to_string());
    }
    let expires_at = (status == "pending_approval")
        .then(|| ctx.now + 1000 * v.approval_ttl_secs.unwrap_or(mailbox.approval_ttl_secs));
    let row = MessageRow {
        id: id.clone(),
        account_id: p.account_id.clone(),
        livemode: p.livemode as i64,
        mailbox_id: mailbox.id.clone(),
        direction: "outbound".into(),
        thread_id: thread_id.to_string(),
        from_addr: v.from.to_string(),
        to_json: addresses(&v.to),
        cc_json: addresses(&v.cc),
        bcc_json: addresses(&v.bcc),
        subject: v.subject.clone(),
        oversight_mode: mode.as_str().into(),
        status: status.into(),
        metadata: v.metadata.to_string(),
        send_at: v.send_at,
        provider: None,
        provider_message_id: None,
        attempts: 0,
        last_error: None,
        claimed_at: None,
        idempotency_key: if kind == "message" { ctx.idempotency_key().map(str::to_string) } else { None },
        created_at: ctx.now,
        updated_at: ctx.now,
        sent_at: None,
        expires_at,
        decision: None,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        kind: kind.into(),
        message_id_header: Some(mime::message_id_header(&id, v.from.address.domain())),
        read: 1,
        tags: "[]".into(),
        snippet: Some(v.text.as_deref().or(v.html.as_deref()).unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect()),
        category: v.marketing.then(|| "marketing".to_string()),
    };
    let mut statements = vec![
        messages::insert(&ctx.db, &row)?,
        messages::insert_blob(&ctx.db, &id, "mime", &mime_text)?,
        messages::insert_blob(&ctx.db, &id, "outbound", &serde_json::to_string(&outbound).map_err(|_| ApiError::internal())?)?,
        messages::timeline(&ctx.db, &id, ctx.now, "created", Some(&format!("oversight_mode {}", mode.as_str())))?,
    ];
    if let Some(at) = v.send_at {
        statements.push(messages::timeline(&ctx.db, &id, ctx.now, "scheduled", Some(&to_rfc3339(at)))?);
    }
    if let Some(exp) = expires_at {
        statements.push(messages::timeline(&ctx.db, &id, ctx.now, "held", Some(&format!("pending_approval until {}", to_rfc3339(exp))))?);
    }
    Ok(Staged { row, statements })
}

/// The email that asks the oversight address to decide, with signed approve/reject links.
fn notification(ctx: &Ctx, held: &MessageRow, v: &ValidatedSend, mailbox: &MailboxRow, to: &str) -> ApiResult<Option<Staged>> {
    let exp = held.expires_at.unwrap_or(ctx.now);
    let Some((approve, reject)) = oversight::review_links(&ctx.env, &ctx.origin, &held.id, to, exp) else {
        worker::console_warn!("no link secret: no approval request email is sent for {}", held.id);
        return Ok(None);
    };
    let preview: String = v.text.as_deref().or(v.html.as_deref()).unwrap_or("").chars().take(2000).collect();
    let text = format!(
        "A message from {from} is waiting for your approval.\n\nTo: {to_list}\nSubject: {subject}\nExpires: {exp}\n\n---\n{preview}\n---\n\nApprove: {approve}\nReject:  {reject}\n\nEach link opens a page that asks you to confirm. Message id: {id}\n",
        from = held.from_addr,
        to_list = v.to.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        subject = v.subject,
        exp = to_rfc3339(exp),
        id = held.id,
    );
    let mut subject: String = format!("Approval needed: {}", v.subject).chars().take(990).collect();
    subject.retain(|c| !c.is_control());
    let note = ValidatedSend {
        from: Recipient { name: Some("MultiMail oversight".into()), address: EmailAddress::parse(&mailbox.address).map_err(|_| ApiError::internal())? },
        to: vec![Recipient::parse(to).map_err(|_| ApiError::internal())?],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject,
        text: Some(text),
        html: None,
        headers: vec![("Auto-Submitted".into(), "auto-generated".into())],
        attachments: vec![],
        oversight_mode: None,
        metadata: json!({"approval_for": held.id}),
        send_at: None,
        approval_ttl_secs: None,
        marketing: false,
    };
    let thread = platform::new_id(ids::THREAD);
    stage_outbound(ctx, platform::new_id(ids::MESSAGE), &note, mailbox, OversightMode::Autonomous, "queued", "notification", &thread, None).map(Some)
}

pub fn pending_payload(row: &MessageRow, mailbox_address: &str, v_to: &[String], now: i64) -> Value {
    events::message_payload(row, mailbox_address, "email.pending", platform::new_id(ids::EVENT), now, json!({
        "direction": row.direction,
        "from": row.from_addr,
        "to": v_to,
        "subject": row.subject,
        "expires_at": row.expires_at.map(to_rfc3339),
    }))
}

/// The key's mailbox for this address (404 on `from` otherwise), and the recipients on the
/// account's suppression list.
async fn sender_and_suppressions(ctx: &Ctx, address: &str, recipients: &[String]) -> ApiResult<(MailboxRow, Vec<String>)> {
    #[derive(serde::Deserialize)]
    struct Row {
        #[serde(flatten)]
        mailbox: MailboxRow,
        suppressed_json: String,
    }
    let p = ctx.principal();
    let list = serde_json::to_string(recipients).expect("strings serialize");
    let row: Option<Row> = crate::store::first(
        &ctx.db,
        "SELECT m.*, (SELECT json_group_array(s.address) FROM suppressions s
                       WHERE s.account_id = ?1 AND s.address IN (SELECT value FROM json_each(?3))) AS suppressed_json
         FROM mailboxes m WHERE m.account_id = ?1 AND m.address = ?2 AND m.deleted_at IS NULL",
        crate::args![&p.account_id, address, &list],
    )
    .await?;
    let row = row
        .filter(|r| p.can_use_mailbox(&r.mailbox.id))
        .ok_or_else(|| ApiError::new(404, "mailbox_not_found", format!("no mailbox `{address}` in this account")).with_field("from"))?;
    let suppressed = serde_json::from_str(&row.suppressed_json).unwrap_or_default();
    Ok((row.mailbox, suppressed))
}

pub async fn send_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let input: SendEmailRequest = http::from_body(body)?;
    let v = input.validate(ctx.now)?;
    send_validated(ctx, &v, None).await
}

/// The path every outbound message takes (`send_email`, `reply_email`): sender and oversight
/// checks, one D1 batch, then the queue or a hold. `thread_id`: the thread a reply joins.
pub async fn send_validated(ctx: &Ctx, v: &ValidatedSend, thread_id: Option<&str>) -> ApiResult<Reply> {
    let p = ctx.principal();

    if !super::domains::is_sending_domain(ctx, v.from.address.domain()).await? {
        return Err(ApiError::unprocessable(
            "domain_not_verified",
            format!("`{}` is not a verified sending domain of this account; use {}", v.from.address.domain(), p.default_domain),
        )
        .with_field("from"));
    }
    // The sending mailbox and which recipients are suppressed, in one round trip.
    let recipients: Vec<String> = v.all_recipients().map(|r| r.address.to_string().to_ascii_lowercase()).collect();
    let (mailbox, suppressed) = sender_and_suppressions(ctx, &v.from.address.to_string().to_ascii_lowercase(), &recipients).await?;
    let mailbox_mode = OversightMode::parse(&mailbox.oversight_mode).unwrap_or(OversightMode::GatedAll);
    let mode = effective_mode(mailbox_mode, v.oversight_mode)?;

    // Suppressed recipients are skipped; with none left there is nothing to send.
    let mut v = v.clone();
    if !suppressed.is_empty() {
        let keep = |r: &Recipient| !suppressed.contains(&r.address.to_string().to_ascii_lowercase());
        v.to.retain(keep);
        v.cc.retain(keep);
        v.bcc.retain(keep);
        if v.to.is_empty() && v.cc.is_empty() && v.bcc.is_empty() {
            return Err(ApiError::unprocessable("recipient_suppressed", format!("every recipient is on this account's suppression list: {}", suppressed.join(", ")))
                .with_field("to")
                .with_extra(json!({"suppressed": suppressed})));
        }
        if v.to.is_empty() {
            // Keep a To header: promote the first remaining recipient.
            let first = if v.cc.is_empty() { v.bcc.remove(0) } else { v.cc.remove(0) };
            v.to.push(first);
        }
    }
    let v = &v;
    let id = platform::new_id(ids::MESSAGE);
    let mut v_owned;
    let v = if v.marketing {
        v_owned = v.clone();
        let secret = oversight::link_secret(&ctx.env).ok_or_else(ApiError::internal)?;
        let rcpt = v.all_recipients().next().map(|r| r.address.to_string().to_ascii_lowercase()).unwrap_or_default();
        let tok = crate::domain::suppression::token(&secret, &crate::domain::suppression::UnsubscribeClaims { account: p.account_id.clone(), address: rcpt, message_id: id.clone(), live: p.livemode });
        v_owned.headers.extend(crate::domain::suppression::list_unsubscribe_headers(&ctx.origin, v.from.address.domain(), &tok));
        &v_owned
    } else {
        v
    };
    let held = mode.holds_outbound();
    let status = if held { "pending_approval" } else if v.send_at.is_some() { "scheduled" } else { "queued" };
    let monitor_copy = (mode == OversightMode::Monitored).then_some(mailbox.oversight_email.as_deref()).flatten();
    let thread_id = thread_id.map_or_else(|| platform::new_id(ids::THREAD), str::to_string);
    let Staged { row, mut statements } = stage_outbound(ctx, id, v, &mailbox, mode, status, "message", &thread_id, monitor_copy)?;
    let to_list: Vec<String> = v.to.iter().map(ToString::to_string).collect();

    let mut note = None;
    if held {
        let payload = pending_payload(&row, &mailbox.address, &to_list, ctx.now);
        statements.push(events::about_message(&ctx.db, &row, &payload)?);
        if let Some(to) = mailbox.oversight_email.as_deref() {
            if let Some(n) = notification(ctx, &row, v, &mailbox, to)? {
                statements.extend(n.statements);
                note = Some(n.row);
            }
        }
    }

    let reply = Reply::accepted(json!({
        "id": row.id,
        "status": status,
        "oversight_mode": mode.as_str(),
        "mailbox": mailbox.address,
        "mailbox_id": mailbox.id,
        "from": row.from_addr,
        "to": to_list,
        "cc": v.cc.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "subject": v.subject,
        "thread_id": thread_id,
        "created_at": to_rfc3339(ctx.now),
        "send_at": v.send_at.map(to_rfc3339),
        "expires_at": row.expires_at.map(to_rfc3339),
        "metadata": v.metadata,
        "category": row.category,
        "suppressed": suppressed,
    }));
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        statements.push(s);
    }
    ctx.db.batch(statements).await?;
    if held { crate::events::kick(&ctx.env).await; }

    // Stored: from here on a failure is repaired by the hourly sweep, so the caller gets its 202.
    if held {
        let req = oversight::DoRequest { hold: oversight::hold_of(&row), command: None, audit_here: false };
        if let Err(e) = oversight::call(&ctx.env, &req).await {
            worker::console_error!("{}: holding {} failed (the sweep expires it on time): {e}", ctx.request_id, row.id);
        }
        if let Some(n) = note {
            if let Err(e) = enqueue(&ctx.env, &n.id, None, ctx.now).await {
                worker::console_error!("{}: enqueue of notification {} failed, the sweep will retry: {e}", ctx.request_id, n.id);
            }
        }
    } else if let Err(e) = enqueue(&ctx.env, &row.id, v.send_at, ctx.now).await {
        worker::console_error!("{}: enqueue of {} failed, the sweep will retry: {e}", ctx.request_id, row.id);
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::effective_mode;
    use crate::domain::oversight::OversightMode::*;

    #[test]
    fn rejects_send_looser_than_mailbox_mode() {
        let e = effective_mode(GatedSend, Some(Autonomous)).unwrap_err();
        assert_eq!((e.status, e.code), (403, "oversight_escalation"));
    }

    #[test]
    fn allows_the_mailbox_mode_or_stricter() {
        assert_eq!(effective_mode(Autonomous, Some(GatedAll)).unwrap(), GatedAll);
        assert_eq!(effective_mode(Monitored, None).unwrap(), Monitored);
    }

    #[test]
    fn read_only_refuses_sends() {
        assert_eq!(effective_mode(ReadOnly, None).unwrap_err().code, "mailbox_read_only");
        assert_eq!(effective_mode(Autonomous, Some(ReadOnly)).unwrap_err().code, "mailbox_read_only");
    }
}
