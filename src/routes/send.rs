//! `POST /send_email`: validate, check the sender and the oversight mode, build the MIME once,
//! store message + bodies + timeline (+ the idempotent answer) in one D1 batch, put the id on
//! the delivery queue, answer 202.

use serde_json::{json, Value};

use super::mailboxes::visible_mailbox;
use super::Ctx;
use crate::delivery::enqueue;
use crate::domain::delivery::OutboundEmail;
use crate::domain::send::SendEmailRequest;
use crate::domain::{ids, mime, oversight::OversightMode, time::to_rfc3339};
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::platform;
use crate::store::messages::{self, MessageRow};

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

fn addresses(rs: &[crate::domain::address::Recipient]) -> String {
    serde_json::to_string(&rs.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("strings serialize")
}

pub async fn send_email(ctx: &Ctx, body: &Value) -> ApiResult<Reply> {
    let p = ctx.principal();
    let input: SendEmailRequest = http::from_body(body)?;
    let v = input.validate(ctx.now)?;

    let mailbox = visible_mailbox(ctx, &v.from.address.to_string())
        .await
        .map_err(|e| if e.status == 404 { e.with_field("from") } else { e })?;
    let mailbox_mode = OversightMode::parse(&mailbox.oversight_mode).unwrap_or(OversightMode::GatedAll);
    let mode = effective_mode(mailbox_mode, v.oversight_mode)?;

    let id = platform::new_id(ids::MESSAGE);
    let thread_id = platform::new_id(ids::THREAD);
    let mime_bytes = mime::build(&v, &id, ctx.now)?;
    let mime_text = String::from_utf8(mime_bytes).map_err(|_| ApiError::internal())?;
    let outbound = OutboundEmail::from_validated(&v, &id, &mime::message_id_header(&id, v.from.address.domain()));
    let status = if v.send_at.is_some() { "scheduled" } else { "queued" };

    let row = MessageRow {
        id: id.clone(),
        account_id: p.account_id.clone(),
        livemode: p.livemode as i64,
        mailbox_id: mailbox.id.clone(),
        direction: "outbound".into(),
        thread_id: thread_id.clone(),
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
        idempotency_key: ctx.idempotency_key().map(str::to_string),
        created_at: ctx.now,
        updated_at: ctx.now,
        sent_at: None,
    };
    let reply = Reply::accepted(json!({
        "id": id,
        "status": status,
        "oversight_mode": mode.as_str(),
        "mailbox": mailbox.address,
        "mailbox_id": mailbox.id,
        "from": row.from_addr,
        "to": v.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "cc": v.cc.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "subject": v.subject,
        "thread_id": thread_id,
        "created_at": to_rfc3339(ctx.now),
        "send_at": v.send_at.map(to_rfc3339),
        "metadata": v.metadata,
    }));

    let mut batch = vec![
        messages::insert(&ctx.db, &row)?,
        messages::insert_blob(&ctx.db, &id, "mime", &mime_text)?,
        messages::insert_blob(&ctx.db, &id, "outbound", &serde_json::to_string(&outbound).map_err(|_| ApiError::internal())?)?,
        messages::timeline(&ctx.db, &id, ctx.now, "created", Some(&format!("oversight_mode {}", mode.as_str())))?,
    ];
    if let Some(at) = v.send_at {
        batch.push(messages::timeline(&ctx.db, &id, ctx.now, "scheduled", Some(&to_rfc3339(at)))?);
    }
    if let Some(s) = ctx.idempotency_completion(&reply)? {
        batch.push(s);
    }
    ctx.db.batch(batch).await?;

    // The message is stored; a failed enqueue is picked up by the hourly sweep, so the caller
    // still gets its 202.
    if let Err(e) = enqueue(&ctx.env, &id, v.send_at, ctx.now).await {
        worker::console_error!("{}: enqueue of {id} failed, the sweep will retry: {e}", ctx.request_id);
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
