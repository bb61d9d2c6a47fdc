//! The page behind an approval link: `GET /review?token=…` shows the held message and asks for
//! confirmation; only `POST /review` (the page's form) decides, so link scanners and previews
//! cannot approve anything. The token is signed, names one message and one decision, expires
//! with the message, and works once (the decision can be taken once).

use worker::{Env, Request};

use crate::domain::approval::Command;
use crate::domain::delivery::OutboundEmail;
use crate::domain::links::{self, LinkError};
use crate::domain::time::to_rfc3339;
use crate::oversight::{self, DoRequest};
use crate::store::{self, messages};

pub struct Page {
    pub status: u16,
    pub html: String,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
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
        esc(&m.status),
        m.decided_by.as_deref().map(|b| format!(" (decided by {})", esc(b))).unwrap_or_default()
    ))
}

pub async fn handle(req: &mut Request, env: &Env, method: &str, now: i64) -> worker::Result<Page> {
    let (token, reason) = if method == "POST" {
        let form = req.text().await.unwrap_or_default();
        let mut token = None;
        let mut reason = None;
        for (k, v) in worker::url::form_urlencoded::parse(form.as_bytes()) {
            match k.as_ref() {
                "token" => token = Some(v.to_string()),
                "reason" if !v.trim().is_empty() => reason = Some(v.chars().take(1000).collect::<String>()),
                _ => {}
            }
        }
        (token, reason)
    } else {
        let url = req.url()?;
        (url.query_pairs().find(|(k, _)| k == "token").map(|(_, v)| v.to_string()), None)
    };
    let Some(token) = token else { return Ok(page(400, "This link is not valid", "<p>No token.</p>")) };
    let c = match claims(env, &token, now) {
        Ok(c) => c,
        Err(p) => return Ok(p),
    };
    let db = store::db(env)?;
    let Some(m) = messages::get(&db, &c.id).await? else { return Ok(page(404, "Not found", "<p>No such message.</p>")) };
    let verb = if c.decision == "approve" { "Approve" } else { "Reject" };
    if method == "GET" {
        if m.msg.status != "pending_approval" {
            return Ok(already(&m.msg));
        }
        let email: Option<OutboundEmail> = messages::blob(&db, &m.msg.id, "outbound").await?.and_then(|j| serde_json::from_str(&j).ok());
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
    let cmd = Command::Decide { approve: c.decision == "approve", by: format!("human:{}", c.to), at: now, reason };
    let out = oversight::call(env, &DoRequest { hold: oversight::hold_of(&m.msg), command: Some(cmd), audit_here: true }).await?;
    if out.outcome != "decided" || out.approval.status.as_str() == "expired" {
        let fresh = messages::get(&db, &c.id).await?.map(|m| m.msg).unwrap_or(m.msg);
        return Ok(already(&fresh));
    }
    let done = if c.decision == "approve" { "Approved: the message is on its way." } else { "Rejected: the message will not be sent." };
    Ok(page(200, done, &format!("<p>Message {} — decided by {}.</p>", esc(&c.id), esc(&format!("human:{}", c.to)))))
}
