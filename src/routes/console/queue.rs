//! What waits for a human: `GET /console` (held messages, mode changes and other changes, of
//! the live or test side), `GET /console/message?id=…` (one message in full: text, the HTML in
//! a sandboxed frame that cannot run script, headers, attachments, the identity claims it will
//! carry, its timeline) and `POST /console/decide` (approve or reject, with a reason).

use worker::Request;

use serde_json::{json, Value};

use super::{decide_forms, esc, hidden, html_frame, human, layout, mode_query, note, opt_time, page, see_other, time};
use crate::app::{access, changes, edits, identity, mode_changes, oversight, Ctx};
use crate::domain::authority;
use crate::domain::delivery::OutboundEmail;
use crate::domain::inbound::ParsedEmail;
use crate::domain::message::{Direction, MessageStatus};
use crate::domain::attachments::attachment_id;
use crate::http::{self, ApiError, ApiResult, Reply};
use crate::routes::Input;
use crate::store::messages::{self, Blob};
use crate::store::{changes as store_changes, mode_changes as store_modes};

fn list(json: &str) -> String {
    serde_json::from_str::<Vec<String>>(json).unwrap_or_default().join(", ")
}

pub async fn pending(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let p = ctx.principal();
    let can_decide = authority::may_decide_message(p.actor()).is_ok();
    let rows = messages::list_pending(&ctx.db, &p.account_id, p.livemode, None, None, None, None, 100).await?;
    let q = mode_query(ctx);
    let mut body = note(req);
    body.push_str("<h2>Held messages</h2>");
    if rows.is_empty() {
        body.push_str("<p>Nothing is waiting.</p>");
    } else {
        body.push_str("<div class=\"table\" tabindex=\"0\"><table><caption class=\"skip\">Held messages</caption><thead><tr><th scope=\"col\">Message</th><th scope=\"col\">Mailbox</th><th scope=\"col\">Expires</th><th scope=\"col\">Decision</th></tr></thead><tbody>");
        for m in &rows {
            let sep = if q.is_empty() { "?" } else { "&" };
            body.push_str(&format!(
                "<tr><td><a href=\"/console/message{q}{sep}id={id}\">{subject}</a><br>{dir} from {from} to {to}</td><td>{mb}</td><td>{exp}</td><td>{forms}</td></tr>",
                id = esc(&m.msg.id),
                subject = esc(if m.msg.subject.is_empty() { "(no subject)" } else { &m.msg.subject }),
                dir = m.msg.direction,
                from = esc(&m.msg.from_addr),
                to = esc(&list(&m.msg.to_json)),
                mb = esc(&m.mailbox_address),
                exp = opt_time(m.msg.expires_at),
                forms = if can_decide { decide_forms(ctx, &m.msg.id, "/console") } else { "(viewers cannot decide)".into() },
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    // Changes serve both modes: they are listed on either side and need a live decision.
    let modes = store_modes::pending(&ctx.db, &p.account_id, None).await?;
    let others = store_changes::pending(&ctx.db, &p.account_id, None).await?;
    body.push_str("<h2>Changes that loosen oversight</h2>");
    if modes.is_empty() && others.is_empty() {
        body.push_str("<p>No change is waiting.</p>");
    } else {
        body.push_str("<div class=\"table\" tabindex=\"0\"><table><caption class=\"skip\">Changes waiting for a decision</caption><thead><tr><th scope=\"col\">Change</th><th scope=\"col\">Asked by</th><th scope=\"col\">Decision</th></tr></thead><tbody>");
        let can_decide_change = authority::may_decide_change(p.actor()).is_ok();
        let forms = |id: &str| if can_decide_change { decide_forms(ctx, id, "/console") } else { "(viewers cannot decide)".into() };
        for c in &modes {
            body.push_str(&format!(
                "<tr><td>Mailbox {mb}: mode {from} → <strong>{to}</strong><br>{at}</td><td>{by}</td><td>{f}</td></tr>",
                mb = esc(&c.mailbox_id), from = c.from_mode, to = c.to_mode, at = time(c.created_at), by = esc(&c.requested_by), f = forms(&c.id),
            ));
        }
        for c in &others {
            body.push_str(&format!(
                "<tr><td>{what}<br>{at}</td><td>{by}</td><td>{f}</td></tr>",
                what = esc(&c.kind.describe(&c.subject, c.value.as_deref())), at = time(c.created_at), by = esc(&c.requested_by), f = forms(&c.id),
            ));
        }
        body.push_str("</tbody></table></div>");
    }
    Ok(page(layout(ctx, "/console", "Pending", &body)))
}

/// `GET /console/attachment?id=…&attachment=…`: an attachment of a message the operator can
/// see, held mail included (a reviewer opens what they decide on), as a download.
pub async fn attachment(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let q = http::query_params(req, &["id", "attachment", "mode"])?;
    let id = q.get("id").ok_or_else(|| ApiError::invalid_field("id", "`id` is required"))?;
    let name = crate::domain::attachments::selector(q.get("attachment").map(String::as_str))?;
    let m = access::visible_message(ctx, id).await?;
    crate::app::attachments::download_named(ctx, &m, name).await
}

pub async fn message(ctx: &Ctx, req: &Request) -> ApiResult<Reply> {
    let id = req.url()?.query_pairs().find(|(k, _)| k == "id").map(|(_, v)| v.into_owned()).unwrap_or_default();
    let m = access::visible_message(ctx, &id).await?;
    let r = &m.msg;
    let mut body = note(req);
    body.push_str(&format!(
        "<dl><dt>From</dt><dd>{from}</dd><dt>To</dt><dd>{to}</dd><dt>Cc</dt><dd>{cc}</dd><dt>Subject</dt><dd>{subject}</dd>\
         <dt>Mailbox</dt><dd>{mb}</dd><dt>Direction</dt><dd>{dir}</dd><dt>Status</dt><dd>{status}</dd><dt>Oversight mode</dt><dd>{mode}</dd>\
         <dt>Created</dt><dd>{created}</dd><dt>Expires</dt><dd>{exp}</dd></dl>",
        from = esc(&r.from_addr), to = esc(&list(&r.to_json)), cc = esc(&list(&r.cc_json)), subject = esc(&r.subject),
        mb = esc(&m.mailbox_address), dir = r.direction, status = r.status, mode = r.oversight_mode,
        created = time(r.created_at), exp = opt_time(r.expires_at),
    ));
    let can_decide = authority::may_decide_message(ctx.principal().actor()).is_ok();
    let deciding = r.status == MessageStatus::PendingApproval && r.expires_at.is_some() && can_decide;
    if deciding {
        body.push_str("<h2>Decide</h2>");
        body.push_str(&decide_forms(ctx, &r.id, "/console"));
    }
    if let Some(e) = r.edit.as_deref().and_then(|e| serde_json::from_str::<Value>(e).ok()) {
        body.push_str(&format!(
            "<h2>Edited before approval</h2><p>By {by}: {fields}. The agent's version had SHA-256 <code>{o}</code>; the version sent, <code>{n}</code>.</p>",
            by = esc(r.edited_by.as_deref().unwrap_or("")),
            fields = esc(&e["fields"].as_array().map(|f| f.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default()),
            o = esc(e["original_sha256"].as_str().unwrap_or("")), n = esc(e["sent_sha256"].as_str().unwrap_or("")),
        ));
    }
    let mut edit_form = None;
    let (text, html, headers, attachments): (Option<String>, Option<String>, Vec<(String, String)>, Vec<(String, String, usize)>) = match r.direction {
        Direction::Outbound => {
            let o: Option<OutboundEmail> = messages::blob(&ctx.db, &r.id, Blob::Outbound).await?.and_then(|j| serde_json::from_str(&j).ok());
            match o {
                Some(o) => {
                    if r.status == MessageStatus::PendingApproval || r.status == MessageStatus::Queued {
                        let mut claims = identity::claims_for(&ctx.env, &m, &o, ctx.now);
                        if r.status == MessageStatus::PendingApproval {
                            claims.decision = "approved".into();
                            claims.approved_by = Some(format!("human:{}", human(ctx).email));
                        }
                        let pretty = serde_json::to_string_pretty(&claims).unwrap_or_default();
                        body.push_str(&format!("<h2>Identity it will carry</h2><p>The signed <code>MultiMail-Identity</code> header, if approved by you now:</p><pre>{}</pre>", esc(&pretty)));
                    }
                    let atts = o.attachments.iter().map(|a| (a.filename.clone(), a.content_type.clone(), a.size())).collect();
                    if deciding {
                        edit_form = Some(edit_and_approve_form(ctx, &r.id, &o));
                    }
                    (o.text, o.html, o.headers, atts)
                }
                None => (None, None, vec![], vec![]),
            }
        }
        Direction::Inbound => {
            let p: Option<ParsedEmail> = messages::blob(&ctx.db, &r.id, Blob::Parsed).await?.and_then(|j| serde_json::from_str(&j).ok());
            match p {
                Some(p) => {
                    let atts = p.attachments.iter().map(|a| (a.filename.clone().unwrap_or_else(|| "(unnamed)".into()), a.content_type.clone(), a.size)).collect();
                    (p.text, p.html, p.headers, atts)
                }
                None => (None, None, vec![], vec![]),
            }
        }
    };
    body.push_str("<h2>Text</h2>");
    body.push_str(&match text {
        Some(t) => format!("<pre>{}</pre>", esc(&t)),
        None => "<p>No text part.</p>".into(),
    });
    body.push_str("<h2>HTML</h2>");
    body.push_str(&match html {
        Some(h) => format!("<p>Shown without running anything it contains.</p>{}", html_frame(&h, "The message's HTML, with scripts disabled")),
        None => "<p>No HTML part.</p>".into(),
    });
    if let Some(f) = edit_form {
        body.push_str(&f);
    }
    body.push_str("<h2>Headers</h2>");
    if headers.is_empty() {
        body.push_str("<p>No extra headers.</p>");
    } else {
        body.push_str("<div class=\"table\" tabindex=\"0\"><table><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">Value</th></tr></thead><tbody>");
        for (k, v) in headers.iter().take(200) {
            body.push_str(&format!("<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v)));
        }
        body.push_str("</tbody></table></div>");
    }
    body.push_str("<h2>Attachments</h2>");
    if attachments.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        // Each opens as a download, never as a page (`app::attachments::download`).
        let mode = if ctx.principal().livemode { "" } else { "&amp;mode=test" };
        body.push_str("<ul>");
        for (i, (name, ct, size)) in attachments.iter().enumerate() {
            body.push_str(&format!(
                "<li><a href=\"/console/attachment?id={id}&amp;attachment={att}{mode}\" download>{name}</a> ({ct}, {size} bytes)</li>",
                id = esc(&r.id), att = attachment_id(i), name = esc(name), ct = esc(ct),
            ));
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>Timeline</h2><ol>");
    for t in messages::timeline_of(&ctx.db, &r.id).await? {
        body.push_str(&format!("<li>{} {}{}</li>", time(t.at), esc(&t.kind), t.detail.map(|d| format!(": {}", esc(&d))).unwrap_or_default()));
    }
    body.push_str("</ol>");
    let title = if r.subject.is_empty() { "(no subject)".to_string() } else { r.subject.clone() };
    Ok(page(layout(ctx, "/console", &title, &body)))
}

/// A held outbound message's editable fields, to approve the reviewer's version instead.
fn edit_and_approve_form(ctx: &Ctx, id: &str, o: &OutboundEmail) -> String {
    let body_field = |name: &str, label: &str, v: &Option<String>| match v {
        Some(v) => format!("<p><label for=\"edit-{name}\">{label}</label><br><textarea id=\"edit-{name}\" name=\"edit_{name}\" rows=\"12\" cols=\"72\">{}</textarea></p>", esc(v)),
        None => String::new(),
    };
    format!(
        "<h2>Edit, then approve</h2><p>Your version is what is sent; the agent can read both. You may remove recipients; only an owner may add one.</p>\
         <form method=\"post\" action=\"/console/decide\">{hid}<input type=\"hidden\" name=\"id\" value=\"{id}\"><input type=\"hidden\" name=\"edit\" value=\"1\">\
         <input type=\"hidden\" name=\"return_to\" value=\"/console\">\
         <p><label for=\"edit-subject\">Subject</label><br><input id=\"edit-subject\" name=\"edit_subject\" size=\"72\" maxlength=\"998\" value=\"{subject}\"></p>\
         <p><label for=\"edit-to\">To (comma-separated)</label><br><input id=\"edit-to\" name=\"edit_to\" size=\"72\" value=\"{to}\"></p>\
         <p><label for=\"edit-cc\">Cc (comma-separated)</label><br><input id=\"edit-cc\" name=\"edit_cc\" size=\"72\" value=\"{cc}\"></p>\
         {text}{html}<p><label for=\"edit-reason\">Reason (optional)</label><br><input id=\"edit-reason\" name=\"reason\" maxlength=\"1000\" size=\"72\"></p>\
         <button type=\"submit\" name=\"decision\" value=\"approve\">Send my version</button></form>",
        hid = hidden(ctx), id = esc(id), subject = esc(&o.subject), to = esc(&o.to.join(", ")), cc = esc(&o.cc.join(", ")),
        text = body_field("text", "Text", &if o.text.is_none() && o.html.is_none() { Some(String::new()) } else { o.text.clone() }),
        html = body_field("html", "HTML", &o.html),
    )
}

/// Splits a comma-separated address list, keeping commas inside quoted display names.
fn split_addresses(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (vec![], String::new(), false);
    for c in s.chars() {
        match c {
            '"' => { quoted = !quoted; cur.push(c) }
            ',' | '\n' | ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect()
}

/// The console's edit form as `decide_email`'s `edits` (browsers send textarea lines as CRLF).
fn edits_of(input: &Input) -> Value {
    let mut e = serde_json::Map::new();
    for f in ["subject", "text", "html"] {
        if let Some(v) = input.form_value(&format!("edit_{f}")) {
            e.insert(f.into(), json!(v.replace("\r\n", "\n")));
        }
    }
    for f in ["to", "cc"] {
        if let Some(v) = input.form_value(&format!("edit_{f}")) {
            e.insert(f.into(), json!(split_addresses(v)));
        }
    }
    Value::Object(e)
}

/// Approve or reject a held message, a mode change or another change.
pub async fn decide(ctx: &Ctx, input: &Input) -> ApiResult<Reply> {
    let p = ctx.principal();
    let id = input.form_value("id").unwrap_or("").to_string();
    let approve = match input.form_value("decision") {
        Some("approve") => true,
        Some("reject") => false,
        _ => return Err(ApiError::invalid_field("decision", "choose approve or reject")),
    };
    let reason = input.form_value("reason").map(str::trim).filter(|r| !r.is_empty()).map(|r| r.chars().take(1000).collect::<String>());
    let verb = if approve { "Approved" } else { "Rejected" };
    let back = match input.form_value("return_to") {
        Some(r) if r.starts_with("/console") && !r.starts_with("//") => r.to_string(),
        _ => "/console".to_string(),
    };
    if mode_changes::is_mode_change_id(&id) {
        changes::decide_any(ctx, &id, approve).await?;
        return Ok(see_other(ctx, &back, &format!("{verb} {id}.")));
    }
    authority::may_decide_message(p.actor())?;
    let m = access::visible_message(ctx, &id).await?;
    if m.msg.expires_at.is_none() {
        return Err(ApiError::conflict("not_pending", format!("{id} was not held for approval")));
    }
    let edit = if input.form_value("edit") == Some("1") && approve && m.msg.status == MessageStatus::PendingApproval {
        edits::prepare(ctx, &m, &edits_of(input)).await?
    } else {
        None
    };
    let (a, status) = oversight::decide_held(&ctx.env, &m.msg, approve, &p.actor_name(), reason, ctx.now, edit).await?;
    if let Some(e) = a.edit.as_deref() {
        let reply = Reply::ok(oversight::decision_json(&id, status, &a));
        edits::audit(ctx, &reply, e).await?;
        return Ok(see_other(ctx, &back, &format!("{verb} with your edits ({}): {} is now {status}.", e.fields.join(", "), e.subject)));
    }
    Ok(see_other(ctx, &back, &format!("{verb}: {} is now {status}.", m.msg.subject)))
}
