//! What happened, for humans to look at: `GET /console/sandbox` (every message a test key
//! "sent", as its recipient would see it), `GET /console/audit` (the chain of the live or test
//! side, newest first, with its verification), `GET /console/search` (full-text search over the
//! account's mail of the side shown) and `GET /console/webhooks` (endpoints and their recent
//! deliveries).

use worker::Request;

use super::{esc, html_frame, layout, note, opt_time, page, time};
use crate::app::{audit, Ctx};
use crate::domain::delivery::OutboundEmail;
use crate::domain::message::Direction;
use crate::domain::search;
use crate::http::{ApiResult, Reply};
use crate::store::audit::{self as store_audit, Filter};
use crate::store::messages::{self, Blob, InboxFilter};
use crate::store::search::{self as search_store, SearchFilter};
use crate::store::webhooks::{self, DeliveryFilter};

pub async fn sandbox(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let f = InboxFilter {
        account_id: &p.account_id,
        livemode: false,
        mailbox_id: None,
        allowed: None,
        direction: Some(Direction::Outbound),
        unread: false,
        tag: None,
        since: None,
        from: None,
        subject_contains: None,
        thread_id: None,
        before_id: None,
        after_id: None,
    };
    let rows = messages::inbox(&ctx.db, &f, 30).await?;
    let mut body = note(req);
    body.push_str("<p>Test keys run the whole pipeline, but their mail never leaves: here is each message as its recipient would have seen it (the newest 30).</p>");
    if rows.is_empty() {
        body.push_str("<p>No test mail yet.</p>");
    }
    for m in &rows {
        let email: Option<OutboundEmail> = messages::blob(&ctx.db, &m.msg.id, Blob::Outbound).await?.and_then(|j| serde_json::from_str(&j).ok());
        let id = esc(&m.msg.id);
        body.push_str(&format!(
            "<article aria-labelledby=\"s-{id}\"><h2 id=\"s-{id}\">{subject}</h2><dl><dt>From</dt><dd>{from}</dd><dt>To</dt><dd>{to}</dd><dt>Status</dt><dd>{status}</dd><dt>Sent</dt><dd>{sent}</dd></dl>",
            subject = esc(if m.msg.subject.is_empty() { "(no subject)" } else { &m.msg.subject }),
            from = esc(&m.msg.from_addr),
            to = esc(&serde_json::from_str::<Vec<String>>(&m.msg.to_json).unwrap_or_default().join(", ")),
            status = m.msg.status,
            sent = opt_time(m.msg.sent_at),
        ));
        if let Some(e) = email {
            if let Some(t) = &e.text {
                body.push_str(&format!("<pre>{}</pre>", esc(t)));
            }
            if let Some(h) = &e.html {
                body.push_str(&html_frame(h, &format!("HTML of {}", m.msg.subject)));
            }
        }
        body.push_str("</article>");
    }
    Ok(page(layout(ctx, "/console/sandbox", "Test-mode sandbox", &body)))
}

/// Full-text search for humans: the same index and scope as `search_emails` (the account, the
/// side shown), the best 50 matches with their highlighted snippets, each linking to its page.
pub async fn search_page(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let q = req.url()?.query_pairs().find(|(k, _)| k == "q").map(|(_, v)| v.into_owned()).unwrap_or_default();
    let mode = super::mode_query(ctx);
    let hidden = if mode.is_empty() { String::new() } else { "<input type=\"hidden\" name=\"mode\" value=\"test\">".to_string() };
    let mut body = format!(
        "<form method=\"get\" action=\"/console/search\" role=\"search\">{hidden}<label for=\"q\">Words to find in subjects, addresses and bodies</label> \
         <input id=\"q\" name=\"q\" type=\"search\" maxlength=\"{max}\" value=\"{v}\"> <button type=\"submit\">Search</button></form>",
        max = search::MAX_QUERY_CHARS,
        v = esc(&q),
    );
    if q.trim().is_empty() {
        body.push_str("<p>Every word must match; end a word with * to match its beginning. Held inbound mail is on the Pending page, not here.</p>");
        return Ok(page(layout(ctx, "/console/search", "Search mail", &body)));
    }
    let query = match search::fts_query(&q) {
        Ok(x) => x,
        Err(e) => {
            body.push_str(&format!("<p role=\"alert\">{}</p>", esc(&e.message().replace('`', ""))));
            return Ok(page(layout(ctx, "/console/search", "Search mail", &body)));
        }
    };
    let f = SearchFilter { account_id: &p.account_id, livemode: p.livemode, mailbox_id: None, allowed: None, direction: None, since: None, query: &query };
    let hits = search_store::search(&ctx.db, &f, 0, 50).await?;
    if hits.is_empty() {
        body.push_str("<p>Nothing matches.</p>");
    } else {
        body.push_str(&format!("<table><caption>{} best matches</caption><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Direction</th><th scope=\"col\">From</th><th scope=\"col\">Subject</th><th scope=\"col\">Where it matches</th></tr></thead><tbody>", hits.len()));
        for h in &hits {
            let m = &h.message.msg;
            body.push_str(&format!(
                "<tr><td>{when}</td><td>{dir}</td><td>{from}</td><td><a href=\"/console/message?id={id}{amp}\">{subject}</a></td><td>{snippet}</td></tr>",
                when = time(m.created_at),
                dir = m.direction,
                from = esc(&m.from_addr),
                id = esc(&m.id),
                amp = if mode.is_empty() { "" } else { "&amp;mode=test" },
                subject = esc(if m.subject.is_empty() { "(no subject)" } else { &m.subject }),
                // Escaped by `snippet_html`, with only <mark> added.
                snippet = search::snippet_html(&h.hit_snippet),
            ));
        }
        body.push_str("</tbody></table>");
    }
    Ok(page(layout(ctx, "/console/search", "Search mail", &body)))
}

pub async fn audit_log(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let verdict = audit::verify(ctx, &p.account_id, p.livemode).await?;
    let ok = verdict.get("ok").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let mut rows = store_audit::page(&ctx.db, &p.account_id, p.livemode, &Filter::default(), 0, audit::CHUNK).await?;
    rows.reverse();
    let mut body = note(req);
    body.push_str(&if ok {
        format!("<p class=\"notice\" role=\"status\">The chain verifies: every entry links to the one before it ({} checked).</p>", verdict.get("entries_checked").cloned().unwrap_or_default())
    } else {
        format!("<p class=\"notice\" role=\"alert\">The chain does NOT verify: <code>{}</code></p>", esc(&verdict.to_string()))
    });
    body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">#</th><th scope=\"col\">When</th><th scope=\"col\">Actor</th><th scope=\"col\">Action</th><th scope=\"col\">Outcome</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
    for e in rows.iter().take(200) {
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.seq, esc(&e.at), esc(&e.actor), esc(&e.action), esc(&e.outcome),
            esc(&[e.message_id.clone(), e.mailbox.clone(), e.detail.clone()].into_iter().flatten().collect::<Vec<_>>().join(" · ")),
        ));
    }
    body.push_str("</tbody></table></div>");
    Ok(page(layout(ctx, "/console/audit", "Audit log", &body)))
}

pub async fn webhooks_page(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let endpoints = webhooks::list(&ctx.db, &p.account_id, p.livemode, None, None, 100)
        .await?
        .into_iter()
        .map(|e| crate::app::webhook_secrets::opened(&ctx.env, e))
        .collect::<worker::Result<Vec<_>>>()?;
    let f = DeliveryFilter { account_id: &p.account_id, livemode: p.livemode, endpoint_id: None, event_id: None, status: None, allowed: None };
    let deliveries = webhooks::list_deliveries(&ctx.db, &f, None, 50).await?;
    let mut body = note(req);
    body.push_str("<h2>Endpoints</h2>");
    if endpoints.is_empty() {
        body.push_str("<p>No endpoints.</p>");
    } else {
        body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">URL</th><th scope=\"col\">Events</th><th scope=\"col\">Format</th><th scope=\"col\">State</th></tr></thead><tbody>");
        for e in &endpoints {
            let state = match (e.deleted_at, e.disabled_at) {
                (Some(_), _) => "deleted".to_string(),
                (None, Some(_)) => format!("disabled: {}", esc(e.disabled_reason.as_deref().unwrap_or(""))),
                _ => "active".into(),
            };
            let format = crate::domain::webhooks::Format::parse(Some(&e.format)).unwrap_or(crate::domain::webhooks::Format::Standard);
            let url = crate::domain::webhooks::masked_url(&e.url, format);
            body.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{}</td><td>{state}</td></tr>", esc(&url), esc(&e.event_types().join(", ")), esc(&e.format)));
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<h2>Recent deliveries</h2>");
    if deliveries.is_empty() {
        body.push_str("<p>No deliveries yet.</p>");
    } else {
        body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">When</th><th scope=\"col\">Event</th><th scope=\"col\">Attempt</th><th scope=\"col\">Status</th><th scope=\"col\">Answer</th></tr></thead><tbody>");
        for d in &deliveries {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time(d.created_at), esc(d.event_type.as_deref().unwrap_or(&d.event_id)), d.attempt, d.status,
                esc(&d.response_code.map(|c| c.to_string()).or(d.error.clone()).unwrap_or_default()),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    Ok(page(layout(ctx, "/console/webhooks", "Webhooks", &body)))
}
