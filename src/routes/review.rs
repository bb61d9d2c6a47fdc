//! The page behind an approval link: `GET /review?token=…` shows the held message and asks for
//! confirmation; only `POST /review` (the page's form) decides, so link scanners and previews
//! cannot approve anything. The token is signed, names one message and one decision, expires
//! with the message, and works once (the decision can be taken once).

use worker::{Env, Request};

use super::Input;
use crate::app::oversight::{self, HoldOutcome};
use crate::app::Ctx;
use crate::domain::approval::{Command, Status};
use crate::domain::delivery::OutboundEmail;
use crate::domain::links::{self, LinkError};
use crate::domain::message::MessageStatus;
use crate::domain::time::to_rfc3339;
use crate::http::{esc, ApiResult, Reply};
use crate::store::messages::{self, Blob};

pub struct Page {
    pub status: u16,
    pub html: String,
}

impl From<Page> for Reply {
    fn from(p: Page) -> Reply {
        Reply::raw(p.status, p.html, vec![])
    }
}


fn page(status: u16, title: &str, body: &str) -> Page {
    Page {
        status,
        html: format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
             <title>{t}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}\
             pre{{white-space:pre-wrap;background:#f4f4f4;padding:1rem}}button{{font-size:1rem;padding:.5rem 1.5rem}}</style></head>\
             <body><h1>{t}</h1>{body}</body></html>",
            t = esc(title)
        ),
    }
}

fn claims(env: &Env, token: &str, now: i64) -> Result<links::LinkClaims, Page> {
    let secret = oversight::link_secret(env).ok_or_else(|| page(503, "Links are not configured", "<p>This deployment has no link secret.</p>"))?;
    links::verify(&secret, token, now).map_err(|e| match e {
        LinkError::Expired => page(410, "This link has expired", "<p>The message expired before a decision, or the link is too old.</p>"),
        _ => page(400, "This link is not valid", "<p>The link is incomplete or was altered.</p>"),
    })
}

fn already(m: &messages::MessageRow) -> Page {
    page(409, "Already decided", &format!(
        "<p>This message is <strong>{}</strong>{}.</p>",
        esc(m.status.as_str()),
        m.decided_by.as_deref().map(|b| format!(" (decided by {})", esc(b))).unwrap_or_default()
    ))
}

/// `GET /review?token=…`: the held message and a form that asks for confirmation.
pub async fn show(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let url = req.url()?;
    let token = url.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.to_string());
    Ok(page_for(ctx, token, None, false).await?.into())
}

/// `POST /review` (the page's form): the decision.
pub async fn decide(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    let token = input.form_value("token").map(str::to_string);
    let reason = input.form_value("reason").filter(|v| !v.trim().is_empty()).map(|v| v.chars().take(1000).collect::<String>());
    Ok(page_for(ctx, token, reason, true).await?.into())
}

async fn page_for(ctx: &Ctx, token: Option<String>, reason: Option<String>, deciding: bool) -> worker::Result<Page> {
    let (env, db, now) = (&ctx.env, &ctx.db, ctx.now);
    let Some(token) = token else { return Ok(page(400, "This link is not valid", "<p>No token.</p>")) };
    let c = match claims(env, &token, now) {
        Ok(c) => c,
        Err(p) => return Ok(p),
    };
    let Some(m) = messages::get(db, &c.id).await? else { return Ok(page(404, "Not found", "<p>No such message.</p>")) };
    let verb = if c.decision == "approve" { "Approve" } else { "Reject" };
    if !deciding {
        if m.msg.status != MessageStatus::PendingApproval {
            return Ok(already(&m.msg));
        }
        let email: Option<OutboundEmail> = messages::blob(db, &m.msg.id, Blob::Outbound).await?.and_then(|j| serde_json::from_str(&j).ok());
        let preview: String = email.as_ref().and_then(|e| e.text.clone().or(e.html.clone())).unwrap_or_default().chars().take(5000).collect();
        let to = email.map(|e| e.to.join(", ")).unwrap_or_default();
        return Ok(page(200, &format!("{verb} this message?"), &format!(
            "<p><strong>From:</strong> {from}<br><strong>To:</strong> {to}<br><strong>Subject:</strong> {subject}<br>\
             <strong>Expires:</strong> {exp}</p><pre>{preview}</pre>\
             <form method=\"post\" action=\"/review\"><input type=\"hidden\" name=\"token\" value=\"{token}\">\
             <p><label>Reason (optional)<br><textarea name=\"reason\" rows=\"3\" cols=\"50\"></textarea></label></p>\
             <button type=\"submit\">{verb}</button></form>",
            from = esc(&m.msg.from_addr), to = esc(&to), subject = esc(&m.msg.subject),
            exp = m.msg.expires_at.map(to_rfc3339).unwrap_or_default(), preview = esc(&preview), token = esc(&token),
        )));
    }
    let by = format!("human:{}", c.to);
    let cmd = Command::Decide { approve: c.decision == "approve", by: by.clone(), at: now, reason, edit: None };
    let out = oversight::command(env, &m.msg, cmd, true).await?;
    if out.outcome != HoldOutcome::Decided || out.approval.status == Status::Expired {
        let fresh = messages::get(db, &c.id).await?.map(|m| m.msg).unwrap_or(m.msg);
        return Ok(already(&fresh));
    }
    let done = if c.decision == "approve" { "Approved: the message is on its way." } else { "Rejected: the message will not be sent." };
    Ok(page(200, done, &format!("<p>Message {} — decided by {}.</p>", esc(&c.id), esc(&by))))
}
